package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// oneLine is s made fit for a one-line message on a terminal: each
// control character (a newline in a path the user gave, an escape
// sequence in a file name or in what a guest sent) and each byte that is
// not UTF-8 written as Go writes it in a quoted string (\n, \x1b, \xff).
// Paths reach vmm's messages as they were given, unquoted, so that the
// usual ones read plainly; this keeps every message one line, and keeps
// a name from moving the cursor or recolouring the terminal.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, isControl) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case isControl(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// isControl reports the C0 and C1 control characters and DEL: what a
// terminal acts on rather than shows.
func isControl(r rune) bool { return r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 }

// errLine is oneLine of err's text.
func errLine(err error) string { return oneLine(err.Error()) }
