package flagspell

import (
	"reflect"
	"testing"

	"github.com/spf13/pflag"
)

func TestSingleDashLong(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.Int("runs", 0, "")
	fs.BoolP("force", "f", false, "")
	got := SingleDashLong(fs, []string{"-runs", "3", "-runs=4", "-f", "-x", "--runs", "5", "--", "-runs"})
	want := []string{"--runs", "3", "--runs=4", "-f", "-x", "--runs", "5", "--", "-runs"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
