package runjob

import (
	"os"
	"time"
)

// SetWait shortens or lengthens how long c waits for its helper
// (collectWait), for the tests of a helper that will not stop.
func SetWait(c *Collector, d time.Duration) { c.wait = d }

// ExitState is how c's helper ended, once it has.
func ExitState(c *Collector) *os.ProcessState {
	<-c.proc.Exited()
	st, _ := c.proc.State()
	return st
}
