package main

import (
	"errors"
	"io"
	"testing"

	"github.com/vmm-dev/vmm/guestabi"
	"github.com/vmm-dev/vmm/machine"
	"github.com/vmm-dev/vmm/sandbox"
)

// -sandbox is on unless turned off, takes nothing else, and the sandbox
// widens only for a job's scratch disk (-out, restored snapshots) and
// -fs: -nic user's sockets are its helper's, never vmm's.
func TestSandboxFlag(t *testing.T) {
	for _, tt := range []struct {
		args []string
		mode string // "" for a usage error
		want sandbox.Options
	}{
		{[]string{"-kernel", "bz"}, "on", sandbox.Options{}},
		{[]string{"-kernel", "bz", "-sandbox=off"}, "off", sandbox.Options{}},
		{[]string{"-kernel", "bz", "--sandbox", "on"}, "on", sandbox.Options{}},
		{[]string{"-kernel", "bz", "-sandbox", "maybe"}, "", sandbox.Options{}},
		{[]string{"-kernel", "bz", "-nic", "user"}, "on", sandbox.Options{}},
		{[]string{"-kernel", "bz", "-tap", "tap0"}, "on", sandbox.Options{}},
		{[]string{"-kernel", "bz", "-fs", "/tmp"}, "on", sandbox.Options{Files: true}},
	} {
		cfg, o, err := parseArgs(tt.args, io.Discard)
		if tt.mode == "" {
			var ue usageError
			if !errors.As(err, &ue) {
				t.Errorf("%q: %v, want a usage error", tt.args, err)
			}
			continue
		}
		if err != nil || o.sandbox != tt.mode {
			t.Errorf("%q: sandbox %q, %v; want %q", tt.args, o.sandbox, err, tt.mode)
			continue
		}
		if got := sandboxOptions(cfg); got != tt.want {
			t.Errorf("%q: %+v, want %+v", tt.args, got, tt.want)
		}
	}
	// prepareJob and prepareRestore add the scratch disk after parsing.
	cfg, _, err := parseMode(true, []string{"-kernel", "bz", "-out", "/tmp/o", "--", "true"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Disks = append(cfg.Disks, machine.Disk{Path: "/tmp/vmm-out-1.img", Serial: guestabi.OutSerial})
	if got := sandboxOptions(cfg); got != (sandbox.Options{Scratch: true}) {
		t.Errorf("a job with a scratch disk: %+v, want Scratch", got)
	}
}
