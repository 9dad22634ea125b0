// Package iotool measures and checks disk and network I/O from inside a
// guest and from the machine it talks to. The guest's vmm-iotool and
// `l1tool io` in the nested harness's L1 are both front ends to Main, so
// the two ends of a transfer are the same code and print the same result
// lines ("iotool: OP key=value ..."), which tests and the benchmark read
// back with ParseLast.
//
// Data sent over TCP or written to a disk is a Stream: deterministic, so
// whoever checks it (the receiver, the host reading a disk image after the
// VM is gone) can compute the expected SHA-256 with StreamSHA256 instead
// of shipping the data around.
package iotool

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// usageLines are the subcommands' synopses, printed after the tool's name.
var usageLines = []string{
	"tcp-recv -port P [-timeout D]",
	"tcp-send -addr HOST:PORT -bytes N [-connect-timeout D] [-timeout D]",
	"ping -addr IP [-count N] [-timeout D] [-interval D]",
	"blk-seq-write -dev PATH -bytes N [-bs SIZE] [-sha256] [-timeout D]",
	"blk-seq-read -dev PATH -bytes N [-bs SIZE] [-sha256] [-timeout D]",
	"blk-rand-read -dev PATH [-bs SIZE] [-seconds N]",
	"sum -file PATH [-bytes N]",
	"fs-files -dir DIR -count N [-size SIZE] [-drop-caches]",
	"fs-seq-read -file PATH -bytes N [-bs SIZE] [-drop-caches]",
	"netup -dev NAME -addr A.B.C.D/N",
	"netdown -dev NAME",
	"http-serve -addr HOST:PORT -bytes N [-count K] [-timeout D]",
	"http-get -url URL [-connect-timeout D] [-timeout D]",
	"dns-serve -addr HOST:PORT -name NAME -ip A.B.C.D [-timeout D]",
	"resolve -name NAME [-timeout D]",
}

// Main runs the subcommand args[0] with the rest of args as its flags,
// prints its result line on stdout and problems on stderr, and returns
// the exit status: 0 on success, 1 on failure, 2 for a bad command line.
// prog is the tool's name as the user typed it, for messages.
func Main(ctx context.Context, prog string, args []string, stdout, stderr io.Writer) int {
	usage := func() {
		for _, l := range usageLines {
			fmt.Fprintf(stderr, "usage: %s %s\n", prog, l)
		}
		fmt.Fprintln(stderr, "sizes (N, SIZE) take K, M and G suffixes (powers of 1024)")
	}
	if len(args) == 0 {
		usage()
		return 2
	}
	op, args := args[0], args[1:]
	fs := flag.NewFlagSet(prog+" "+op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := 10 * time.Minute
	var run func(ctx context.Context) (Result, error)

	switch op {
	case "tcp-recv":
		port := fs.Int("port", 0, "TCP port to listen on (all addresses)")
		fs.DurationVar(&timeout, "timeout", timeout, "give up after this long, waiting for the sender included")
		run = func(ctx context.Context) (Result, error) {
			if *port <= 0 || *port > 65535 {
				return Result{}, usageError("tcp-recv: -port must be 1-65535")
			}
			ln, err := net.Listen("tcp", ":"+strconv.Itoa(*port))
			if err != nil {
				return Result{}, fmt.Errorf("tcp-recv: %w", err)
			}
			// On stderr: tests wait for it before starting the sender.
			fmt.Fprintf(stderr, "%s: tcp-recv: listening on %s\n", prog, ln.Addr())
			return TCPRecv(ctx, ln)
		}
	case "tcp-send":
		var o TCPSendOptions
		fs.StringVar(&o.Addr, "addr", "", "receiver's HOST:PORT")
		bytes := sizeFlag(fs, "bytes", 0, "bytes to send")
		fs.DurationVar(&o.ConnectTimeout, "connect-timeout", 30*time.Second, "keep retrying a refused connection for this long")
		fs.DurationVar(&timeout, "timeout", timeout, "give up after this long")
		run = func(ctx context.Context) (Result, error) {
			if o.Addr == "" {
				return Result{}, usageError("tcp-send: -addr is required")
			}
			o.Bytes = *bytes
			return TCPSend(ctx, o)
		}
	case "ping":
		var o PingOptions
		fs.StringVar(&o.Addr, "addr", "", "IPv4 address to ping")
		fs.IntVar(&o.Count, "count", 3, "echo requests to send")
		fs.DurationVar(&o.Timeout, "timeout", 2*time.Second, "wait this long for each reply")
		fs.DurationVar(&o.Interval, "interval", 200*time.Millisecond, "least time between requests")
		run = func(ctx context.Context) (Result, error) {
			if o.Addr == "" {
				return Result{}, usageError("ping: -addr is required")
			}
			if o.Count <= 0 || o.Timeout <= 0 || o.Interval <= 0 {
				return Result{}, usageError("ping: -count, -timeout and -interval must be positive")
			}
			return Ping(ctx, o)
		}
	case "blk-seq-write", "blk-seq-read":
		var o BlkOptions
		fs.StringVar(&o.Dev, "dev", "", "block device or file")
		bytes := sizeFlag(fs, "bytes", 0, "bytes to transfer from the start, a multiple of 4096")
		bs := sizeFlag(fs, "bs", 1<<20, "bytes per request, a multiple of 4096")
		fs.BoolVar(&o.SHA256, "sha256", false, "also report the SHA-256 of the data (costs CPU)")
		fs.DurationVar(&timeout, "timeout", timeout, "give up after this long")
		run = func(ctx context.Context) (Result, error) {
			if o.Dev == "" {
				return Result{}, usageError(op + ": -dev is required")
			}
			if *bs > 1<<30 {
				return Result{}, usageError(op + ": -bs is larger than 1G")
			}
			o.Bytes, o.BlockSize = *bytes, int(*bs)
			if op == "blk-seq-write" {
				return BlkSeqWrite(ctx, o)
			}
			return BlkSeqRead(ctx, o)
		}
	case "blk-rand-read":
		var o BlkRandOptions
		fs.StringVar(&o.Dev, "dev", "", "block device or file")
		bs := sizeFlag(fs, "bs", 4096, "bytes per read, a multiple of 4096")
		secs := fs.Float64("seconds", 5, "how long to run")
		run = func(ctx context.Context) (Result, error) {
			if o.Dev == "" {
				return Result{}, usageError("blk-rand-read: -dev is required")
			}
			if *bs > 1<<30 {
				return Result{}, usageError("blk-rand-read: -bs is larger than 1G")
			}
			if !(*secs > 0 && *secs <= 24*3600) {
				return Result{}, usageError("blk-rand-read: -seconds must be more than 0 and at most a day")
			}
			o.BlockSize, o.Duration = int(*bs), time.Duration(*secs*float64(time.Second))
			return BlkRandRead(ctx, o)
		}
	case "sum":
		var o SumOptions
		fs.StringVar(&o.Path, "file", "", "file or device to hash")
		bytes := sizeFlag(fs, "bytes", 0, "hash only this many bytes from the start (0: all)")
		run = func(ctx context.Context) (Result, error) {
			if o.Path == "" {
				return Result{}, usageError("sum: -file is required")
			}
			o.Bytes = *bytes
			return Sum(ctx, o)
		}
	case "fs-files":
		var o FSFilesOptions
		fs.StringVar(&o.Dir, "dir", "", "directory to create the files in")
		fs.IntVar(&o.Count, "count", 10000, "files")
		size := sizeFlag(fs, "size", 1024, "bytes in each file, up to 1M")
		fs.BoolVar(&o.DropCaches, "drop-caches", false, "empty the page, dentry and inode caches before the stat and read phases")
		fs.DurationVar(&timeout, "timeout", timeout, "give up after this long")
		run = func(ctx context.Context) (Result, error) {
			if *size > 1<<20 {
				return Result{}, usageError("fs-files: -size is larger than 1M")
			}
			o.Size = int(*size)
			return FSFiles(ctx, o)
		}
	case "fs-seq-read":
		var o FSSeqReadOptions
		fs.StringVar(&o.Path, "file", "", "file to read")
		bytes := sizeFlag(fs, "bytes", 0, "bytes to read from the start")
		bs := sizeFlag(fs, "bs", 1<<20, "bytes per read, up to 1G")
		fs.BoolVar(&o.DropCaches, "drop-caches", false, "empty the page cache first")
		fs.DurationVar(&timeout, "timeout", timeout, "give up after this long")
		run = func(ctx context.Context) (Result, error) {
			if *bs > 1<<30 {
				return Result{}, usageError("fs-seq-read: -bs is larger than 1G")
			}
			o.Bytes, o.BlockSize = *bytes, int(*bs)
			return FSSeqRead(ctx, o)
		}
	case "netup":
		var o NetUpOptions
		fs.StringVar(&o.Dev, "dev", "", "interface name (a TAP is created if it does not exist)")
		fs.StringVar(&o.Addr, "addr", "", "IPv4 address/prefix length")
		run = func(ctx context.Context) (Result, error) {
			if o.Dev == "" || o.Addr == "" {
				return Result{}, usageError("netup: -dev and -addr are required")
			}
			return NetUp(o)
		}
	case "netdown":
		dev := fs.String("dev", "", "persistent TAP to remove")
		run = func(ctx context.Context) (Result, error) {
			if *dev == "" {
				return Result{}, usageError("netdown: -dev is required")
			}
			if err := NetDown(*dev); err != nil {
				return Result{}, err
			}
			r := Result{Op: "netdown"}
			r.add("dev", "%s", *dev)
			return r, nil
		}
	case "http-serve":
		addr := fs.String("addr", "", "HOST:PORT to listen on")
		var o HTTPServeOptions
		bytes := sizeFlag(fs, "bytes", 0, "bytes every GET returns")
		fs.IntVar(&o.Count, "count", 1, "stop after this many complete responses")
		fs.DurationVar(&timeout, "timeout", timeout, "give up after this long")
		run = func(ctx context.Context) (Result, error) {
			if *addr == "" || o.Count < 1 {
				return Result{}, usageError("http-serve: -addr is required and -count must be at least 1")
			}
			ln, err := net.Listen("tcp", *addr)
			if err != nil {
				return Result{}, fmt.Errorf("http-serve: %w", err)
			}
			fmt.Fprintf(stderr, "%s: http-serve: listening on %s\n", prog, ln.Addr())
			o.Bytes = *bytes
			return HTTPServe(ctx, ln, o)
		}
	case "http-get":
		url := fs.String("url", "", "http:// URL to download")
		connect := fs.Duration("connect-timeout", 60*time.Second, "keep retrying a refused connection for this long")
		fs.DurationVar(&timeout, "timeout", timeout, "give up after this long")
		run = func(ctx context.Context) (Result, error) {
			if *url == "" {
				return Result{}, usageError("http-get: -url is required")
			}
			return HTTPGet(ctx, *url, *connect)
		}
	case "dns-serve":
		addr := fs.String("addr", "127.0.0.1:53", "UDP HOST:PORT to answer on")
		name := fs.String("name", "", "the one name answered")
		ip := fs.String("ip", "", "its IPv4 address")
		fs.DurationVar(&timeout, "timeout", timeout, "serve for this long")
		run = func(ctx context.Context) (Result, error) {
			a, err := netip.ParseAddr(*ip)
			if *name == "" || err != nil || !a.Is4() {
				return Result{}, usageError("dns-serve: -name and an IPv4 -ip are required")
			}
			pc, err := net.ListenPacket("udp", *addr)
			if err != nil {
				return Result{}, fmt.Errorf("dns-serve: %w", err)
			}
			fmt.Fprintf(stderr, "%s: dns-serve: answering on %s\n", prog, pc.LocalAddr())
			return DNSServe(ctx, pc, *name, a)
		}
	case "resolve":
		name := fs.String("name", "", "name to look up")
		fs.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
		run = func(ctx context.Context) (Result, error) {
			if *name == "" {
				return Result{}, usageError("resolve: -name is required")
			}
			return Resolve(ctx, *name)
		}
	case "-h", "-help", "--help", "help":
		usage()
		return 0
	default:
		fmt.Fprintf(stderr, "%s: unknown subcommand %q\n", prog, op)
		usage()
		return 2
	}

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "%s %s: unexpected arguments %q\n", prog, op, fs.Args())
		return 2
	}
	if timeout <= 0 {
		fmt.Fprintf(stderr, "%s %s: -timeout must be positive\n", prog, op)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := run(ctx)
	if r.Op != "" {
		// Printed even on failure when there is something to say
		// (ping's count of replies).
		fmt.Fprintln(stdout, r.String())
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

type usageError string

func (e usageError) Error() string { return string(e) }

// sizeValue is a flag holding a byte count such as 4096, 64M or 1G.
type sizeValue int64

func sizeFlag(fs *flag.FlagSet, name string, def int64, usage string) *int64 {
	v := def
	fs.Var((*sizeValue)(&v), name, usage)
	return &v
}

func (s *sizeValue) String() string { return strconv.FormatInt(int64(*s), 10) }

func (s *sizeValue) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = sizeValue(n)
	return nil
}

// ParseSize reads a non-negative byte count: digits with an optional K, M
// or G suffix (powers of 1024, case-insensitive, an optional trailing
// "iB" or "B").
func ParseSize(s string) (int64, error) {
	num := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(s), "B"), "I")
	shift := 0
	if num != "" {
		switch num[len(num)-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		}
		if shift != 0 {
			num = num[:len(num)-1]
		} else if num != strings.ToUpper(s) {
			// "B" or "iB" without K, M or G: not a size we know.
			return 0, fmt.Errorf("size %q: want digits with an optional K, M or G suffix", s)
		}
	}
	n, err := strconv.ParseUint(num, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("size %q: want digits with an optional K, M or G suffix", s)
	}
	if n > (1<<63-1)>>shift {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(n << shift), nil
}
