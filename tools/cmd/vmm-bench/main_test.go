package main

import (
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		check   func(o options) bool
		wantErr string
	}{
		{args: nil, check: func(o options) bool {
			return o.params.Rounds == 5 && o.params.SeqBytes == 256<<20 && o.params.TCPBytes == 16<<20 && o.mode == "auto"
		}},
		{args: []string{"-rounds", "3", "-seq-mib", "64", "-tcp-mib=8", "--json", "x.json", "-systems", "vmm,QEMU"}, check: func(o options) bool {
			return o.params.Rounds == 3 && o.params.SeqBytes == 64<<20 && o.params.TCPBytes == 8<<20 && o.jsonOut == "x.json" && len(o.only) == 2
		}},
		{args: []string{"-mode", "direct", "-smoke"}, check: func(o options) bool { return o.mode == "direct" && o.smoke }},
		// The shared-directory workload: 10,000 files unless given
		// (a nested run lowers the default), 0 leaves it out.
		{args: nil, check: func(o options) bool {
			return o.params.FSFiles == 10000 && o.fsFilesAuto && o.params.FSSeqBytes == 256<<20 && o.params.FSFileSize == 1024
		}},
		{args: []string{"-fs-files", "300", "-fs-file-size", "4096", "-fs-seq-mib", "32"}, check: func(o options) bool {
			return o.params.FSFiles == 300 && !o.fsFilesAuto && o.params.FSFileSize == 4096 && o.params.FSSeqBytes == 32<<20
		}},
		{args: []string{"-fs-files", "0"}, check: func(o options) bool { return o.params.FSFiles == 0 && !o.fsFilesAuto }},
		{args: []string{"-fs-file-size", "2000000"}, wantErr: "shared-directory file size"},
		{args: []string{"-mode", "fast"}, wantErr: "want auto, nested or direct"},
		{args: []string{"-rounds", "0"}, wantErr: "rounds"},
		{args: []string{"-seq-mib", "512"}, wantErr: "smaller than the sequential size"},
		{args: []string{"extra"}, wantErr: "unexpected arguments"},
		{args: []string{"-nope"}, wantErr: "unknown"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o, err := parseFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(o) {
				t.Errorf("options %+v", o)
			}
		})
	}
}
