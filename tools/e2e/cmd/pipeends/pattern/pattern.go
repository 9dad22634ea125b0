// Package pattern is the input pipeends feeds a command, shared with the
// tests that check what came out: numbered 64-byte lines of printable
// ASCII, so a lost, repeated or reordered byte shows at its line number
// and the text survives the JSON report tools/e2e/cmd/redirect prints
// (which would mangle bytes that are not UTF-8).
package pattern

import "fmt"

// LineSize is the length of one line, newline included.
const LineSize = 64

// Bytes returns the first n bytes of the pattern.
func Bytes(n int) []byte {
	const tail = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123\n"
	b := make([]byte, 0, n+LineSize)
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, "%06d %s", i%1000000, tail)
	}
	return b[:n]
}
