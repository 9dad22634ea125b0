//go:build race

package share

// raceEnabled says the race detector is on: its runtime makes system
// calls of its own that vmm's seccomp filter denies.
const raceEnabled = true
