//go:build race

package unpack

// raceEnabled says the tests run under the race detector.
const raceEnabled = true
