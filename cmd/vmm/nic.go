package main

import (
	"fmt"
	"strings"

	"github.com/vmm-dev/vmm/machine"
	"github.com/vmm-dev/vmm/usernet/hostfwd"
)

// nicArg is one -tap or -nic value, kept with its flag so that both
// flags land in one list in command-line order: the guest names its
// cards eth0, eth1, ... in that order.
type nicArg struct{ flag, value string }

// nicFlag is the pflag.Value of -tap and -nic.
type nicFlag struct {
	list *[]nicArg
	flag string
}

func (f nicFlag) String() string { return "" }
func (f nicFlag) Type() string   { return "string" }

func (f nicFlag) Set(v string) error {
	*f.list = append(*f.list, nicArg{f.flag, v})
	return nil
}

// parseNICArg turns a -tap or -nic value into a card.
func parseNICArg(a nicArg) (machine.NIC, error) {
	if a.flag == "tap" {
		return parseTap(a.value)
	}
	return parseNIC(a.value)
}

// virtioModels are the model= values QEMU users write for a virtio-net
// card; every card of vmm is one.
var virtioModels = map[string]bool{"virtio": true, "virtio-net": true, "virtio-net-pci": true, "virtio-net-device": true}

// parseNIC reads QEMU's -nic, for the two back ends vmm has:
//
//	user[,hostfwd=[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT]...[,mac=MAC]
//	tap,ifname=NAME[,mac=MAC]
//
// model= may name virtio-net in any of QEMU's spellings, and a tap's
// script=no and downscript=no are accepted (vmm runs no scripts).
func parseNIC(v string) (machine.NIC, error) {
	parts := splitOpts(v)
	var n machine.NIC
	usage := "user[,hostfwd=RULE]...[,mac=MAC] or tap,ifname=NAME[,mac=MAC]"
	switch parts[0] {
	case "user":
		n.User = true
		usage = "user[,hostfwd=[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT]...[,mac=MAC]"
	case "tap":
		usage = "tap,ifname=NAME[,mac=MAC]"
	case "":
		return n, fmt.Errorf("-nic %q: no type (want %s)", v, usage)
	default:
		return n, fmt.Errorf("-nic %q: unsupported type %q (want %s)", v, parts[0], usage)
	}
	seen := map[string]bool{}
	for _, o := range parts[1:] {
		key, val, _ := strings.Cut(o, "=")
		// Each option but hostfwd is one setting: a second one is a
		// mistake to name, not a value to take over the first.
		if key != "hostfwd" && seen[key] {
			return n, fmt.Errorf("-nic %q: %s given twice", v, key)
		}
		seen[key] = true
		switch {
		case key == "mac":
			var err error
			if n.MAC, err = parseMAC(val); err != nil {
				return n, fmt.Errorf("-nic %q: %w", v, err)
			}
		case key == "model":
			if !virtioModels[val] {
				return n, fmt.Errorf("-nic %q: model %q: vmm's cards are virtio-net", v, val)
			}
		case key == "hostfwd" && n.User:
			f, err := hostfwd.Parse(val)
			if err != nil {
				return n, fmt.Errorf("-nic %q: %w", v, err)
			}
			n.HostFwd = append(n.HostFwd, f)
		case key == "ifname" && !n.User:
			if val == "" {
				return n, fmt.Errorf("-nic %q: empty ifname", v)
			}
			n.Tap = val
		case (o == "script=no" || o == "downscript=no") && !n.User:
		default:
			return n, fmt.Errorf("-nic %q: unsupported option %q (want %s)", v, o, usage)
		}
	}
	if !n.User && n.Tap == "" {
		return n, fmt.Errorf("-nic %q: no ifname (want %s)", v, usage)
	}
	return n, nil
}
