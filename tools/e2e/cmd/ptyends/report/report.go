// Package report is what tools/e2e/cmd/ptyends prints and the end-to-end
// tests read: one type for both sides, so neither parses a copy of it.
package report

// Report is ptyends' one line of JSON.
type Report struct {
	// Steps are the steps that ran, each with how long it took; Failed
	// names the one that failed, with why, and no step after it ran.
	Steps  []Step `json:"steps"`
	Failed string `json:"failed,omitempty"`
	// Raw has one entry per mode step: whether the terminal was in raw
	// mode (no ICANON, ECHO or ISIG) at that moment.
	Raw []bool `json:"raw"`
	// Exit is CMD's status (128+N if signal N ended it), -1 if it had
	// not exited -exit-timeout after the steps and was killed.
	Exit int `json:"exit"`
	// Restored says the terminal's whole termios after CMD exited equals
	// what it was before CMD started; Before and After are the local
	// mode flags (c_lflag), for the failure message.
	Restored bool   `json:"restored"`
	Before   uint32 `json:"lflag_before"`
	After    uint32 `json:"lflag_after"`
	// Output is the end of what CMD wrote to the terminal.
	Output string `json:"output"`
	// Error is ptyends' own failure (no pty, CMD not started).
	Error string `json:"error,omitempty"`
}

// Step is one step that ran.
type Step struct {
	Step string  `json:"step"`
	MS   float64 `json:"ms"`
}
