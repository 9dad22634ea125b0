package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
)

// DHCP timing. The whole of it, waiting for the link included, is
// bounded by dhcpDeadline, so a card with no DHCP server behind it (a
// TAP the host configures by hand) delays the boot by that much at most;
// vmm.dhcp=off on the kernel command line skips DHCP altogether. Each
// exchange waits dhcpAttemptTimeout for an answer before sending again.
// A user-mode network answers in milliseconds, but under nested
// emulation the guest's own link-up and Go code take seconds.
const (
	dhcpDeadline       = 20 * time.Second
	dhcpAttemptTimeout = 2 * time.Second
	dhcpRetries        = 8
)

// dhcpOff on the kernel command line turns DHCP off.
const dhcpOff = "vmm.dhcp=off"

// virtioNetDriver is the driver name under /sys/class/net/IF/device.
const virtioNetDriver = "virtio_net"

// startLoopback brings lo up on a goroutine of its own and closes the
// channel it returns once that is done. It needs nothing of the rest of
// the set-up, and the kernel takes its time over it (110-185 ms of
// vmm-init's phase, traced in a nested L1), so the modules load
// meanwhile: vmm-init's phase fell by a median of 37 ms, so some of
// that time is waiting, most of it not.
func startLoopback() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if lo, err := netlink.LinkByName("lo"); err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: lo: %v\n", err)
		} else if err := netlink.LinkSetUp(lo); err != nil {
			fmt.Fprintf(os.Stderr, "vmm-init: lo up: %v\n", err)
		}
	}()
	return done
}

// setUpNetwork waits for lo (loDone, from startLoopback) and configures
// every virtio-net card by DHCP: address, default route and
// /etc/resolv.conf from the lease (with several cards, each writes
// resolv.conf; the last lease wins). A card that gets no lease is
// reported in one line and left up without an address; the boot goes
// on.
func setUpNetwork(loDone <-chan struct{}) {
	<-loDone
	cards := virtioNetCards("/sys/class/net")
	if len(cards) == 0 || dhcpDisabled("/proc/cmdline") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), dhcpDeadline)
	defer cancel()
	var wg sync.WaitGroup
	for _, name := range cards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := dhcp(ctx, name); err != nil {
				fmt.Fprintf(os.Stderr, "vmm-init: %s: no address by DHCP: %v; going on without one\n", name, err)
			}
		}()
	}
	wg.Wait()
}

// virtioNetCards lists the network interfaces in dir (sysfs's class
// directory) that virtio-net drives, in name order.
func virtioNetCards(dir string) []string {
	links, _ := filepath.Glob(filepath.Join(dir, "*", "device", "driver"))
	var names []string
	for _, l := range links {
		target, err := os.Readlink(l)
		if err == nil && filepath.Base(target) == virtioNetDriver {
			names = append(names, filepath.Base(filepath.Dir(filepath.Dir(l))))
		}
	}
	return names
}

// dhcpDisabled says whether the kernel command line in file has
// vmm.dhcp=off.
func dhcpDisabled(file string) bool {
	b, err := os.ReadFile(file)
	return err == nil && slices.Contains(strings.Fields(string(b)), dhcpOff)
}

// dhcp brings the card up and configures it from a DHCPv4 lease.
func dhcp(ctx context.Context, name string) error {
	deadline, _ := ctx.Deadline()
	link, err := dhclient.IfUp(name, time.Until(deadline))
	if err != nil {
		return err
	}
	c, err := nclient4.New(name, nclient4.WithTimeout(dhcpAttemptTimeout), nclient4.WithRetry(dhcpRetries))
	if err != nil {
		return err
	}
	defer c.Close()
	lease, err := c.Request(ctx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dhclient.ResolvConfPath), 0o755); err != nil {
		return err
	}
	return dhclient.Configure4(link, lease.ACK)
}
