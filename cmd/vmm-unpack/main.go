// Command vmm-unpack decompresses a kernel for vmm's kernel cache, in a
// process of its own: vmm starts it when the cache lacks the vmlinux of a
// bzImage, with the bzImage's compressed payload on its standard input
// and the cache's new entry file as its standard output (package
// kernelimage/unpack decodes; package kernelcache runs it). It is not
// meant to be run by hand.
//
// It lives apart so that a vmm whose kernel is already cached, or that
// boots the bzImage as it is, neither links nor maps the decoders, and so
// that decoding a kernel file vmm did not make happens in a process that
// holds no guest memory and no KVM descriptor.
package main

import (
	"os"

	"github.com/vmm-dev/vmm/kernelimage/unpack"
)

func main() {
	os.Exit(unpack.HelperMainCapped(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, unpack.CapData))
}
