package iotool

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Result is what one run measured. It is printed as a single line,
// "iotool: OP key=value key=value ...", that a program reading a serial
// console can find among prompts and echoed command lines: the echo of
// "vmm-iotool OP ..." has no colon after the tool's name.
type Result struct {
	Op     string
	Fields []Field // in print order
}

// Field is one key=value pair of a Result. Keys are [a-z0-9_]+ and values
// contain no white space.
type Field struct {
	Key, Value string
}

func (r *Result) add(key, format string, args ...any) {
	r.Fields = append(r.Fields, Field{key, fmt.Sprintf(format, args...)})
}

// String is the result line, without a newline.
func (r Result) String() string {
	var b strings.Builder
	b.WriteString("iotool: ")
	b.WriteString(r.Op)
	for _, f := range r.Fields {
		fmt.Fprintf(&b, " %s=%s", f.Key, f.Value)
	}
	return b.String()
}

// Get returns a field's value.
func (r Result) Get(key string) (string, bool) {
	for _, f := range r.Fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// Int returns an integer field.
func (r Result) Int(key string) (int64, error) {
	v, ok := r.Get(key)
	if !ok {
		return 0, fmt.Errorf("iotool %s: no %s= field in %q", r.Op, key, r.String())
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("iotool %s: %s=%q: %w", r.Op, key, v, err)
	}
	return n, nil
}

// Float returns a numeric field.
func (r Result) Float(key string) (float64, error) {
	v, ok := r.Get(key)
	if !ok {
		return 0, fmt.Errorf("iotool %s: no %s= field in %q", r.Op, key, r.String())
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("iotool %s: %s=%q: %w", r.Op, key, v, err)
	}
	return f, nil
}

// resultRE finds result lines in console output. A serial console may
// end lines with "\r\n" and put a prompt right before the line, hence no
// anchor at the start.
var resultRE = regexp.MustCompile(`(?m)iotool: ([a-z0-9-]+)((?: [a-z0-9_]+=[^\s]*)*)[ \t\r]*$`)

// ParseLast returns the last result line for op in out, which may be a
// whole console transcript.
func ParseLast(out, op string) (Result, error) {
	ms := resultRE.FindAllStringSubmatch(out, -1)
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i][1] != op {
			continue
		}
		r := Result{Op: op}
		for _, kv := range strings.Fields(ms[i][2]) {
			k, v, _ := strings.Cut(kv, "=")
			r.Fields = append(r.Fields, Field{k, v})
		}
		return r, nil
	}
	return Result{}, fmt.Errorf("no %q result line in %q", "iotool: "+op, tail(out, 600))
}

// tail is the end of s, for error messages about long console output.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
