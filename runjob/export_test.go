package runjob

import "time"

// SetWait shortens how long c waits for its helper (collectWait), for
// the tests of a helper that will not stop.
func SetWait(c *Collector, d time.Duration) { c.wait = d }
