//go:build race

package sandbox

// raceEnabled says the race detector is on: its runtime (ThreadSanitizer)
// makes system calls of its own that vmm's filter denies.
const raceEnabled = true
