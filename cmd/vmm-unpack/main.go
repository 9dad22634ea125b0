// Command vmm-unpack is the helper in which vmm unpacks what it did not
// make, in a process of its own. It is not meant to be run by hand.
//
//   - A kernel for vmm's kernel cache: vmm starts it when the cache lacks
//     the vmlinux of a bzImage, with the bzImage's compressed payload on
//     its standard input and the cache's new entry file as its standard
//     output (package kernelimage/unpack decodes; package kernelcache
//     runs it).
//   - As `vmm-unpack out`, a `vmm run` job's -out archive: vmm starts it
//     during setup and it waits until the job is done (package
//     runjob/outtar unpacks; runjob.Collector runs it).
//
// It lives apart so that a vmm whose kernel is already cached, or that
// boots the bzImage as it is, and that has no -out, neither links nor
// maps the decoders and the tar reader, and so that decoding input vmm
// did not make happens in a process that holds no guest memory and no
// KVM descriptor.
package main

import (
	"os"

	"github.com/vmm-dev/vmm/kernelimage/unpack"
	"github.com/vmm-dev/vmm/runjob"
	"github.com/vmm-dev/vmm/runjob/outtar"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == runjob.OutMode {
		os.Exit(outtar.HelperMain(os.Args[2:], os.Stdin, os.Stdout, os.NewFile(3, "control"), outtar.Confine))
	}
	os.Exit(unpack.HelperMainCapped(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, unpack.CapData))
}
