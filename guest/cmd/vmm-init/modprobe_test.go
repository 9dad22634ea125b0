package main

import "testing"

func TestModprobeArgs(t *testing.T) {
	for _, tt := range []struct {
		args  []string
		name  string
		quiet bool
		err   bool
	}{
		{[]string{"-q", "--", "fs-overlay"}, "fs-overlay", true, false}, // as the kernel runs it
		{[]string{"overlay"}, "overlay", false, false},
		{[]string{"-v", "virtio_blk"}, "", false, true},
		{[]string{"-r", "virtio_blk"}, "", false, true},
		{[]string{"loop", "max_loop=8"}, "", false, true},
		{[]string{"--quiet", "--", "-odd-"}, "-odd-", true, false},
		{[]string{"-q", "--"}, "", true, true},
		{nil, "", false, true},
	} {
		name, quiet, err := modprobeArgs(tt.args)
		if name != tt.name || quiet != tt.quiet || (err != nil) != tt.err {
			t.Errorf("modprobeArgs(%q) = %q, %v, %v; want %q, %v, error %v", tt.args, name, quiet, err, tt.name, tt.quiet, tt.err)
		}
	}
}
