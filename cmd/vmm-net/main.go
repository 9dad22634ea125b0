// Command vmm-net is the user network of vmm's -nic user, in a process of
// its own: vmm starts it with two sockets (package usernet/remote says
// what travels on them) and it runs gVisor's netstack with DHCP, DNS and
// the host ports the command line forwards (package usernet) for one
// card, until vmm closes its end. It is not meant to be run by hand.
//
// It lives apart so that a vmm without -nic user neither links nor maps
// the stack, and so that the stack's host sockets live in a process
// that holds no guest memory and no KVM descriptor: it confines itself
// with vmm's seccomp filter for a user network (package sandbox) once
// its listeners are open, unless vmm was told -sandbox=off.
package main

import (
	"os"

	"github.com/vmm-dev/vmm/usernet"
)

func main() { os.Exit(usernet.HelperMain(os.Args[1:])) }
