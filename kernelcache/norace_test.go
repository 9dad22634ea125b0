//go:build !race

package kernelcache

// raceEnabled says the tests run under the race detector, whose own
// memory counts against RLIMIT_DATA.
const raceEnabled = false
