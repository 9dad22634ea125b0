// Package proto is the control-channel protocol between the host side of
// the nested harness and the agent (l1init) running as L1's /init.
//
// It lives in its own package so that the agent, a static binary that is
// copied into every L1 image, does not link the host-side code.
//
// Messages are single-line JSON objects terminated by '\n'. The channel is
// a serial port in raw mode, so it is 8-bit clean, but JSON keeps it
// debuggable and lets either side skip stray non-JSON lines.
package proto

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Ops sent by the host.
const (
	OpRun  = "run"  // start a job on the job console
	OpExec = "exec" // run a command, reply with its combined output
	// OpExecAside is OpExec for a diagnostic: the command starts where
	// the agent runs, not on the jobs' CPU with their policy, so it
	// runs even while a job holds that CPU (or the emulator does).
	OpExecAside = "execaside"
	OpEOF       = "eof"      // close a pipe job's stdin
	OpPoweroff  = "poweroff" // power L1 off
	OpSysrq     = "sysrq"    // write Args[0]'s keys to /proc/sysrq-trigger, reply with result
	OpCPUTimes  = "cputimes" // reply with /proc/stat's CPU lines twice, CPUTimesGap apart
	OpReadFile  = "readfile" // reply with the file Args[0], at most ReadFileMax bytes of it
)

// ReadFileMax bounds OpReadFile's reply. The op is for small files a
// command in L1 rewrites to show its progress (tools/e2e/cmd/redirect's
// -progress), which the host reads while the command runs; the agent
// reads them itself, so the read starts no process on the jobs' CPU.
const ReadFileMax = 64 << 10

// CPUTimesGap is how far apart OpCPUTimes reads /proc/stat, and
// CPUTimesSep what separates the two readings in its reply.
const (
	CPUTimesGap = 2 * time.Second
	CPUTimesSep = "--\n"
)

// Ops sent by the agent.
const (
	OpHello   = "hello"   // agent is ready (or failed to get ready: Error set)
	OpStarted = "started" // reply to run: the job's process exists
	OpExit    = "exit"    // a job ended; its console output has drained
	OpResult  = "result"  // reply to exec
	OpError   = "error"   // a request failed
	OpBeat    = "beat"    // heartbeat, so the host can tell a quiet job from a frozen L1
)

// Stdin modes for OpRun.
const (
	StdinTTY  = "tty"  // the job console is the job's controlling terminal
	StdinPipe = "pipe" // console bytes are piped into stdin; the console is raw
	StdinNull = "null" // stdin is /dev/null; the console is raw
)

// MaxLine bounds one message; exec output is carried inline, so it is large.
const MaxLine = 64 << 20

// Msg is every message in both directions; unused fields are omitted.
type Msg struct {
	Op    string   `json:"op"`
	ID    uint64   `json:"id,omitempty"`
	Args  []string `json:"args,omitempty"`
	Env   []string `json:"env,omitempty"`
	Stdin string   `json:"stdin,omitempty"`
	Rows  uint16   `json:"rows,omitempty"`
	Cols  uint16   `json:"cols,omitempty"`

	// Code is an exit status: the process's own, or 128+signal.
	Code   int    `json:"code"`
	PID    int    `json:"pid,omitempty"`
	Output []byte `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`

	// Hello details, for the host's log and for diagnosing a bad L1.
	Kernel  string   `json:"kernel,omitempty"`
	KVM     bool     `json:"kvm,omitempty"`
	Modules []string `json:"modules,omitempty"`
	UptimeS float64  `json:"uptime_s,omitempty"`
}

// Encode renders m as one protocol line.
func Encode(m Msg) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %q message: %w", m.Op, err)
	}
	return append(b, '\n'), nil
}

// Decode parses one protocol line (with or without its newline).
func Decode(line []byte) (Msg, error) {
	var m Msg
	if err := json.Unmarshal(line, &m); err != nil {
		return Msg{}, fmt.Errorf("decode control line %.80q: %w", line, err)
	}
	if m.Op == "" {
		return Msg{}, fmt.Errorf("decode control line %.80q: no op", line)
	}
	return m, nil
}

// Reader yields messages from a stream, skipping lines that are not
// messages: a serial line may carry noise from before the agent set it up.
type Reader struct {
	sc *bufio.Scanner
	// Skipped receives lines that did not decode; may be nil.
	Skipped func(line []byte, err error)
}

// NewReader reads messages from r.
func NewReader(r io.Reader) *Reader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	return &Reader{sc: sc}
}

// Next returns the next message, or the stream's error (io.EOF at its end).
func (r *Reader) Next() (Msg, error) {
	for r.sc.Scan() {
		line := r.sc.Bytes()
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if len(line) == 0 {
			continue
		}
		m, err := Decode(line)
		if err != nil {
			if r.Skipped != nil {
				r.Skipped(append([]byte(nil), line...), err)
			}
			continue
		}
		return m, nil
	}
	if err := r.sc.Err(); err != nil {
		return Msg{}, fmt.Errorf("read control channel: %w", err)
	}
	return Msg{}, io.EOF
}

// InitConfigPath is where the host puts InitConfig in L1's initramfs.
const InitConfigPath = "/etc/l1init.json"

// InitConfig tells the agent what the host packed into the image, so the
// agent needs no knowledge of kernel versions or module layouts.
type InitConfig struct {
	// Modules are L1 paths of kernel modules, dependencies first.
	Modules []string `json:"modules"`
	// Devices are device nodes (disks) the agent waits for after
	// loading the modules: a test must not start before its disks exist.
	Devices []string `json:"devices,omitempty"`
}

// JobSchedParam is the L1 kernel command-line parameter that tells the
// agent which scheduling policy to start jobs with: JobSchedRR or
// JobSchedCFS. It travels on the command line rather than in InitConfig
// so that one cached initramfs serves both.
const JobSchedParam = "l1init.jobsched"

// Values of JobSchedParam.
const (
	JobSchedRR  = "rr"  // SCHED_RR at the lowest real-time priority
	JobSchedCFS = "cfs" // Linux's fair scheduler (SCHED_OTHER)
)

// JobSched returns JobSchedParam's value on a kernel command line, or ""
// when it is not there. The last occurrence wins, as for the kernel's own
// parameters.
func JobSched(cmdline string) string {
	v := ""
	for _, f := range strings.Fields(cmdline) {
		if val, ok := strings.CutPrefix(f, JobSchedParam+"="); ok {
			v = val
		}
	}
	return v
}

// StillCPUs compares two readings of /proc/stat (proc(5): a line
// "cpuN user nice system ..." per CPU) and returns the CPUs whose
// counters did not change, in order, and whether any CPU's did. Every
// CPU accounts each timer tick to one of its counters, idle ones
// included (a tickless idle CPU's idle time is brought up to date when
// read), so a CPU that stood still took no tick in between.
func StillCPUs(first, second string) (still []string, advanced bool) {
	before, after := cpuLines(first), cpuLines(second)
	for cpu, a := range after {
		switch b, ok := before[cpu]; {
		case !ok:
		case a == b:
			still = append(still, cpu)
		default:
			advanced = true
		}
	}
	sort.Strings(still)
	return still, advanced
}

// cpuLines maps each CPU's number to the counters of its line.
func cpuLines(stat string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(stat, "\n") {
		name, counters, ok := strings.Cut(line, " ")
		if n, isCPU := strings.CutPrefix(name, "cpu"); ok && isCPU && n != "" {
			out[n] = strings.TrimSpace(counters)
		}
	}
	return out
}
