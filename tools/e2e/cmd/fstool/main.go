// Command fstool is both ends of the virtio-fs end-to-end tests
// (tools/e2e/virtiofs_test.go): it runs in the nested suite's L1, which
// has no userland of its own, and in the L2 guest, from a share. One
// static binary, so both ends agree on what a file should hold and on
// how a tree is summed.
//
//	fstool write [-files N] [-big BYTES] [-seed S] [-j N] DIR  deterministic files, N at a time; prints their manifest
//	fstool hash [-j N] DIR           the manifest of the regular files under DIR, read N at a time
//	fstool tree DIR                  a digest of all under DIR: types, modes, owners, sizes, mtimes, contents, link targets
//	fstool populate DIR SECRETDIR    the read-only share's tree and, outside it, a secret
//	fstool readonly MNT TAG          mount TAG at MNT read-write; every change must fail with EROFS (it stays mounted)
//	fstool escape DIR...             try to read outside each DIR through symlinks and ..
//	fstool race [-for D] [-mount TAG] MNT   look MNT/d/token up over and over, dropping the guest's caches
//	fstool exec [-C DIR] [-swap DIR:A:B] -- CMD   run CMD, exchanging A and B in DIR while it runs
//	fstool cp SRC DST                copy a file (L1 has no cp)
//	fstool stat PATH...              "PATH absent" or "PATH TYPE SIZE"
//	fstool cwd                       the working directory
//	fstool ls DIR...                 a directory's device, inode and names (for debugging)
//	fstool lat [-n N] DIR            latency of lookups, creates and 1 MiB writes in DIR (for debugging)
//	fstool seq CMD ARGS , CMD ARGS ...   several of these in turn (for a root without a shell)
//
// Results are lines on stdout, "KEY: ..." with numbers the test parses;
// errors go to stderr with status 1 (2 for usage).
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmds := map[string]func([]string) error{
		"write": cmdWrite, "hash": cmdHash, "tree": cmdTree, "populate": cmdPopulate,
		"readonly": cmdReadOnly, "escape": cmdEscape, "race": cmdRace, "exec": cmdExec,
		"cp": cmdCp, "stat": cmdStat, "cwd": cmdCwd, "lat": cmdLat, "ls": cmdLs,
	}
	cmds["seq"] = func(args []string) error {
		// Commands separated by ",": for a root without a shell.
		for len(args) > 0 {
			i := slices.Index(args, ",")
			if i < 0 {
				i = len(args)
			}
			fn, ok := cmds[args[0]]
			if !ok || args[0] == "seq" {
				return exitError(2)
			}
			if err := fn(args[1:i]); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			args = args[min(i+1, len(args)):]
		}
		return nil
	}
	fn, ok := cmds[os.Args[1]]
	if !ok {
		usage()
	}
	if err := fn(os.Args[2:]); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		fmt.Fprintf(os.Stderr, "fstool %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: fstool write|hash|tree|populate|readonly|escape|race|exec|cp|stat ARGS (see the package comment)")
	os.Exit(2)
}

// exitError passes a child's status through exec.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("status %d", int(e)) }

// content is file i's bytes under seed: a ChaCha8 stream keyed by both,
// so the writer and every reader agree without storing anything.
func content(seed uint64, i int, size int64, w io.Writer) error {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(i))
	r := rand.NewChaCha8(key)
	_, err := io.CopyN(w, r, size)
	return err
}

// smallSize is file i's size: 0 to 16 KiB - 1, spread so that empty,
// sub-page and multi-page files all occur.
func smallSize(i int) int64 { return int64(i*7919) % (16 << 10) }

// smallName is file i's path: 20 directories of files.
func smallName(i int) string { return fmt.Sprintf("d%02d/f%04d", i%20, i) }

type manifest []string

func (m *manifest) add(rel string, size int64, sum []byte) {
	*m = append(*m, fmt.Sprintf("%s %d %x\n", filepath.ToSlash(rel), size, sum))
}

// digest is the SHA-256 of the sorted lines: equal manifests, equal
// digests.
func (m manifest) digest() string {
	s := append([]string(nil), m...)
	sort.Strings(s)
	h := sha256.New()
	for _, l := range s {
		io.WriteString(h, l)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func cmdWrite(args []string) error {
	fl := flag.NewFlagSet("write", flag.ContinueOnError)
	files := fl.Int("files", 1000, "small files")
	big := fl.Int64("big", 64<<20, "bytes of the one big file")
	seed := fl.Uint64("seed", 1, "content seed")
	jobs := fl.Int("j", 1, "files written at once")
	if err := parse(fl, args, 1); err != nil {
		return err
	}
	dir := fl.Arg(0)
	start := time.Now()
	var mu sync.Mutex
	var m manifest
	var total int64
	write := func(rel string, i int, size int64) error {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		h := sha256.New()
		// 1 MiB writes: the guest sends FUSE WRITEs of up to max_write.
		bw := &chunkWriter{f: f, buf: make([]byte, 0, 1<<20)}
		err = content(*seed, i, size, io.MultiWriter(h, bw))
		if err == nil {
			err = bw.flush()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		mu.Lock()
		m.add(rel, size, h.Sum(nil))
		total += size
		mu.Unlock()
		return nil
	}
	// The big file first, beside the small ones: -j of them at a time
	// keep several requests in flight, as a parallel build does.
	err := parallel(*jobs, *files+1, func(i int) error {
		if i == 0 {
			if *big <= 0 {
				return nil
			}
			return write("big", -1, *big)
		}
		return write(smallName(i-1), i-1, smallSize(i-1))
	})
	if err != nil {
		return err
	}
	fmt.Printf("write: files %d bytes %d manifest %s in %.2fs\n", len(m), total, m.digest(), time.Since(start).Seconds())
	return nil
}

// parallel runs fn(0) ... fn(n-1) on jobs goroutines and returns the
// first error; after one, the rest are not started.
func parallel(jobs, n int, fn func(i int) error) error {
	next := make(chan int)
	errs := make(chan error, max(jobs, 1))
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range max(jobs, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					failed.Store(true)
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := 0; i < n && !failed.Load(); i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// chunkWriter writes in buffer-sized pieces.
type chunkWriter struct {
	f   *os.File
	buf []byte
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), cap(w.buf)-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	_, err := w.f.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}

// parse reads fl's flags, which come before the nargs arguments.
func parse(fl *flag.FlagSet, args []string, nargs int) error {
	if err := fl.Parse(args); err != nil {
		return exitError(2)
	}
	if fl.NArg() != nargs {
		return fmt.Errorf("want %d arguments after the flags, got %q", nargs, fl.Args())
	}
	return nil
}

func cmdHash(args []string) error {
	fl := flag.NewFlagSet("hash", flag.ContinueOnError)
	jobs := fl.Int("j", 1, "files read at once")
	if err := parse(fl, args, 1); err != nil {
		return err
	}
	dir := fl.Arg(0)
	start := time.Now()
	var files []string
	other := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir():
		case d.Type().IsRegular():
			files = append(files, p)
		default:
			other++
		}
		return nil
	})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var m manifest
	var total int64
	err = parallel(*jobs, len(files), func(i int) error {
		sum, size, err := fileSum(files[i])
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, files[i])
		mu.Lock()
		m.add(rel, size, sum)
		total += size
		mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("hash: files %d bytes %d manifest %s other %d in %.2fs\n", len(m), total, m.digest(), other, time.Since(start).Seconds())
	return nil
}

func fileSum(p string) ([]byte, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, make([]byte, 1<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", p, err)
	}
	return h.Sum(nil), n, nil
}

// cmdTree sums everything about a tree that a change to it would
// change: names, types, permissions, owners, sizes, modification times,
// contents and link targets (not access times, which reading changes).
func cmdTree(args []string) error {
	if len(args) != 1 {
		return exitError(2)
	}
	h := sha256.New()
	n := 0
	err := filepath.WalkDir(args[0], func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		rel, _ := filepath.Rel(args[0], p)
		line := fmt.Sprintf("%s %o %d:%d", filepath.ToSlash(rel), st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			sum, _, err := fileSum(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %d %d.%09d %x", st.Size, st.Mtim.Sec, st.Mtim.Nsec, sum)
		case unix.S_IFLNK:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + t
		}
		io.WriteString(h, line+"\n")
		n++
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("tree: entries %d digest %x\n", n, h.Sum(nil))
	return nil
}

// Names cmdPopulate creates, which the guest-side commands know.
const (
	raceDir   = "d"     // a directory holding raceFile
	raceLink  = "l"     // a symlink to SECRETDIR, swapped with raceDir
	raceFile  = "token" // in raceDir and in SECRETDIR
	insideTok = "inside\n"
)

// cmdPopulate makes the read-only share's tree in DIR and a secret in
// SECRETDIR (outside DIR), and prints the secret. DIR holds a file, a
// subdirectory, and symlinks that, resolved on the host, would lead to
// the secret: abs -> /, up -> .., leak -> SECRETDIR/token as a relative
// path, and the pair d (a directory) and l (-> SECRETDIR) that exec
// -swap exchanges.
func cmdPopulate(args []string) error {
	if len(args) != 2 {
		return exitError(2)
	}
	dir, err := filepath.Abs(args[0])
	if err != nil {
		return err
	}
	secretDir, err := filepath.Abs(args[1])
	if err != nil {
		return err
	}
	var tok [16]byte
	if _, err := io.ReadFull(cryptoRand(), tok[:]); err != nil {
		return err
	}
	secret := "secret-" + hex.EncodeToString(tok[:]) + "\n"
	// The relative way from dir to the secret: what a host-side walk
	// of leak or sub/deep would reach.
	rel, err := filepath.Rel(dir, secretDir)
	if err != nil {
		return err
	}
	for _, err := range []error{
		os.MkdirAll(secretDir, 0o755),
		os.WriteFile(filepath.Join(secretDir, raceFile), []byte(secret), 0o644),
		os.MkdirAll(filepath.Join(dir, "sub", raceDir), 0o755),
		os.WriteFile(filepath.Join(dir, "f"), []byte("hello from the share\n"), 0o644),
		os.WriteFile(filepath.Join(dir, "sub", "g"), []byte("inner\n"), 0o600),
		os.MkdirAll(filepath.Join(dir, raceDir), 0o755),
		os.WriteFile(filepath.Join(dir, raceDir, raceFile), []byte(insideTok), 0o644),
		os.Symlink(secretDir, filepath.Join(dir, raceLink)),
		os.Symlink("/", filepath.Join(dir, "abs")),
		os.Symlink("..", filepath.Join(dir, "up")),
		os.Symlink(filepath.Join(rel, raceFile), filepath.Join(dir, "leak")),
		os.Symlink(filepath.Join("..", rel), filepath.Join(dir, "sub", "deep")),
	} {
		if err != nil {
			return err
		}
	}
	fmt.Printf("secret: %s", secret)
	return nil
}

func cryptoRand() io.Reader {
	f, err := os.Open("/dev/urandom")
	if err != nil {
		return errReader{err}
	}
	return f
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// cmdReadOnly mounts the share read-write, so that only the host side
// (vmm's server) can refuse, and tries every kind of change. Each must
// fail with EROFS; it prints one line per attempt and fails if any did
// not. Reads must still work.
func cmdReadOnly(args []string) error {
	if len(args) != 2 {
		return exitError(2)
	}
	mnt, tag := args[0], args[1]
	if err := mount(tag, mnt); err != nil {
		return err
	}
	p := func(name string) string { return filepath.Join(mnt, name) }
	b, err := os.ReadFile(p("f"))
	if err != nil || string(b) != "hello from the share\n" {
		return fmt.Errorf("read %s: %q, %v", p("f"), b, err)
	}
	attempts := []struct {
		what string
		fn   func() error
	}{
		{"create", func() error { return closeErr(os.OpenFile(p("new"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)) }},
		{"open for writing", func() error { return closeErr(os.OpenFile(p("f"), os.O_WRONLY, 0)) }},
		{"open for appending", func() error { return closeErr(os.OpenFile(p("f"), os.O_WRONLY|os.O_APPEND, 0)) }},
		{"truncate on open", func() error { return closeErr(os.OpenFile(p("f"), os.O_RDONLY|os.O_TRUNC, 0)) }},
		{"truncate", func() error { return os.Truncate(p("f"), 0) }},
		{"mkdir", func() error { return os.Mkdir(p("newdir"), 0o755) }},
		{"rmdir", func() error { return os.Remove(p("sub/d")) }},
		{"unlink", func() error { return os.Remove(p("f")) }},
		{"rename", func() error { return os.Rename(p("f"), p("f2")) }},
		{"exchange", func() error {
			return unix.Renameat2(unix.AT_FDCWD, p("f"), unix.AT_FDCWD, p("sub"), unix.RENAME_EXCHANGE)
		}},
		{"symlink", func() error { return os.Symlink("/", p("x")) }},
		{"link", func() error { return os.Link(p("f"), p("f3")) }},
		{"mknod", func() error { return unix.Mknod(p("fifo"), unix.S_IFIFO|0o644, 0) }},
		{"chmod", func() error { return os.Chmod(p("f"), 0o777) }},
		{"chown", func() error { return os.Lchown(p("f"), 1, 1) }},
		{"utimes", func() error { return os.Chtimes(p("f"), time.Unix(1, 0), time.Unix(1, 0)) }},
	}
	bad := 0
	for _, a := range attempts {
		err := a.fn()
		verdict := "EROFS"
		if !errors.Is(err, unix.EROFS) {
			verdict = fmt.Sprintf("NOT EROFS: %v", err)
			bad++
		}
		fmt.Printf("readonly: %s: %s\n", a.what, verdict)
	}
	if bad > 0 {
		return fmt.Errorf("%d changes were not refused with EROFS", bad)
	}
	fmt.Printf("readonly: all %d refused\n", len(attempts))
	return nil
}

// mount mounts virtio-fs share tag at mnt, read-write: whatever is
// refused is refused by the host side.
func mount(tag, mnt string) error {
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(tag, mnt, "virtiofs", 0, ""); err != nil {
		return fmt.Errorf("mount virtio-fs %q at %s: %w", tag, mnt, err)
	}
	return nil
}

// closeErr closes what an open returned and passes its error on.
func closeErr(f *os.File, err error) error {
	if f != nil {
		f.Close()
	}
	return err
}

// cmdEscape tries to read the secret through every way out of each
// share directory given: the symlinks populate made (followed by the
// guest, which resolves them in its own file system), .. walks, a
// symlink to / made from the guest (`ln -s / x; cat x/...`) where the
// share is writable, and the same through *at calls on a directory
// descriptor. It prints what each attempt got; the test looks for the
// secret in the output.
func cmdEscape(args []string) error {
	if len(args) == 0 {
		return exitError(2)
	}
	for _, dir := range args {
		// The guest-made symlink, if the share takes it.
		x := filepath.Join(dir, "x")
		if err := os.Symlink("/", x); err == nil {
			fmt.Printf("escape: made %s -> /\n", x)
		} else {
			fmt.Printf("escape: ln -s / %s: %v\n", x, err)
		}
		for _, rel := range []string{
			"x/etc/shadow", "x/secret/" + raceFile, "abs/secret/" + raceFile, "up/secret/" + raceFile,
			"leak", "sub/deep/" + raceFile, "l/" + raceFile, "../secret/" + raceFile,
			"sub/../../secret/" + raceFile, "../../../../secret/" + raceFile,
		} {
			b, err := os.ReadFile(filepath.Join(dir, rel))
			report(dir+"/"+rel, b, err)
		}
		// The same without the guest's path walk in front: *at calls
		// relative to a descriptor of the share's root.
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		for _, rel := range []string{"..", "../secret", "up", "abs"} {
			sfd, err := unix.Openat(fd, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				report("openat "+dir+" "+rel, nil, err)
				continue
			}
			names, err := readNames(sfd)
			unix.Close(sfd)
			report("openat "+dir+" "+rel, []byte(strings.Join(names, ",")), err)
		}
		unix.Close(fd)
		if err := os.Remove(x); err == nil {
			fmt.Printf("escape: removed %s\n", x)
		}
	}
	return nil
}

func readNames(fd int) ([]string, error) {
	f := os.NewFile(uintptr(fd), "dir")
	names, err := f.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

func report(what string, b []byte, err error) {
	if err != nil {
		fmt.Printf("escape: %s: %v\n", what, err)
		return
	}
	fmt.Printf("escape: %s: read %q\n", what, b)
}

// cmdRace looks up MNT/d/token for D, dropping the guest's dentry and
// inode caches every few reads so that each round sends fresh LOOKUPs
// while the host swaps d with a symlink to the secret. Every read must
// give the inside token or fail; it prints the counts and anything else
// it read. Past D it goes on, up to -max, until it has seen both sides
// of the swap (a read of the token and a read that failed): how the
// lookups fall against the swaps depends on the scheduling of two
// nested machines, and a run that saw d only as the symlink would have
// tested nothing.
func cmdRace(args []string) error {
	fl := flag.NewFlagSet("race", flag.ContinueOnError)
	dur := fl.Duration("for", 20*time.Second, "how long at least")
	most := fl.Duration("max", 0, "how long at most, until both sides of the swap are seen (default: -for)")
	tag := fl.String("mount", "", "mount this virtio-fs tag at MNT first")
	if err := parse(fl, args, 1); err != nil {
		return err
	}
	mnt := fl.Arg(0)
	if *tag != "" {
		if err := mount(*tag, mnt); err != nil {
			return err
		}
	}
	p := filepath.Join(mnt, raceDir, raceFile)
	start := time.Now()
	deadline, last := start.Add(*dur), start.Add(max(*dur, *most))
	var reads, inside, drops int
	errs := map[string]int{}
	leaked := 0
	for now := time.Now(); now.Before(deadline) || (now.Before(last) && (inside == 0 || inside == reads)); now = time.Now() {
		for range 8 {
			b, err := os.ReadFile(p)
			reads++
			switch {
			case err != nil:
				errs[errnoName(err)]++
			case string(b) == insideTok:
				inside++
			default:
				leaked++
				fmt.Printf("race: read %q\n", b)
			}
		}
		// 2: free dentries and inodes, which sends FORGETs and makes
		// the next open LOOKUP again.
		if os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0) == nil {
			drops++
		}
	}
	var es []string
	for k, v := range errs {
		es = append(es, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(es)
	fmt.Printf("race: reads %d inside %d other %d drops %d errors [%s] seconds %.1f\n", reads, inside, leaked, drops, strings.Join(es, " "), time.Since(start).Seconds())
	return nil
}

func errnoName(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		return unix.ErrnoName(en)
	}
	return err.Error()
}

// cmdExec runs CMD in DIR (-C) with stdin, stdout and stderr passed
// through, and with -swap DIR:A:B exchanges entries A and B of DIR as
// fast as it can (with a pause of -pause between) until CMD exits, then
// puts them back. It exits with CMD's status (128+N for signal N),
// having printed the number of swaps on stderr.
func cmdExec(args []string) error {
	fl := flag.NewFlagSet("exec", flag.ContinueOnError)
	dir := fl.String("C", "", "run CMD in this directory")
	swap := fl.String("swap", "", "DIR:A:B to exchange while CMD runs")
	pause := fl.Duration("pause", time.Millisecond, "pause between swaps")
	if err := fl.Parse(args); err != nil || fl.NArg() == 0 {
		return exitError(2)
	}
	cmd := exec.Command(fl.Arg(0), fl.Args()[1:]...)
	cmd.Dir = *dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Signals for CMD (redirect's -timeout SIGQUIT) go to it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGQUIT, unix.SIGINT)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	swaps := make(chan int, 1)
	if *swap != "" {
		parts := strings.Split(*swap, ":")
		if len(parts) != 3 {
			return exitError(2)
		}
		go func() {
			swaps <- swapLoop(parts[0], parts[1], parts[2], *pause, done)
		}()
	} else {
		swaps <- 0
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var err error
wait:
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s)
		case err = <-waited:
			break wait
		}
	}
	close(done)
	n := <-swaps
	fmt.Fprintf(os.Stderr, "fstool exec: %d swaps\n", n)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitError(128 + int(ws.Signal()))
		}
		return exitError(ee.ExitCode())
	}
	return err
}

// swapLoop exchanges a and b in dir until done, leaving them as they
// were, and returns how many exchanges it made.
func swapLoop(dir, a, b string, pause time.Duration, done <-chan struct{}) int {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fstool exec: -swap: %v\n", err)
		return 0
	}
	defer unix.Close(fd)
	n := 0
	for {
		select {
		case <-done:
			if n%2 == 1 {
				if unix.Renameat2(fd, a, fd, b, unix.RENAME_EXCHANGE) == nil {
					n++
				}
			}
			return n
		default:
		}
		if err := unix.Renameat2(fd, a, fd, b, unix.RENAME_EXCHANGE); err != nil {
			fmt.Fprintf(os.Stderr, "fstool exec: -swap: %v\n", err)
			<-done
			return n
		}
		n++
		if pause > 0 {
			time.Sleep(pause)
		}
	}
}

func cmdCp(args []string) error {
	if len(args) != 2 {
		return exitError(2)
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	st, err := os.Stat(args[0])
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(args[1]), 0o755); err != nil {
		return err
	}
	return os.WriteFile(args[1], b, st.Mode().Perm())
}

func cmdStat(args []string) error {
	for _, p := range args {
		st, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			fmt.Printf("stat: %s absent\n", p)
		case err != nil:
			return err
		default:
			fmt.Printf("stat: %s %s %d\n", p, st.Mode().Type(), st.Size())
		}
	}
	return nil
}

func cmdCwd(args []string) error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	fmt.Printf("cwd: %s\n", wd)
	return nil
}

// cmdLat times single operations, to tell a slow transport from a slow
// operation when debugging.
func cmdLat(args []string) error {
	fl := flag.NewFlagSet("lat", flag.ContinueOnError)
	n := fl.Int("n", 50, "operations per kind")
	if err := parse(fl, args, 1); err != nil {
		return err
	}
	dir := fl.Arg(0)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for _, k := range []struct {
		name string
		fn   func(i int) error
	}{
		{"lookup-missing", func(i int) error {
			if _, err := os.Lstat(filepath.Join(dir, fmt.Sprintf("nx%d", i))); !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("lstat: %v", err)
			}
			return nil
		}},
		{"create", func(i int) error {
			return closeErr(os.OpenFile(filepath.Join(dir, fmt.Sprintf("c%d", i)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644))
		}},
		{"write-1MiB", func(i int) error {
			f, err := os.OpenFile(filepath.Join(dir, "w"), os.O_WRONLY|os.O_CREATE, 0o644)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt(buf, int64(i)<<20)
			return err
		}},
	} {
		start := time.Now()
		for i := range *n {
			if err := k.fn(i); err != nil {
				return fmt.Errorf("%s: %w", k.name, err)
			}
		}
		d := time.Since(start)
		fmt.Printf("lat: %s n %d total %.3fs each %.2fms\n", k.name, *n, d.Seconds(), float64(d.Microseconds())/1000/float64(*n))
	}
	return nil
}

func cmdLs(args []string) error {
	for _, d := range args {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err != nil {
			return err
		}
		ents, err := os.ReadDir(d)
		if err != nil {
			return err
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		fmt.Printf("ls: %s dev %d ino %d: %s\n", d, st.Dev, st.Ino, strings.Join(names, " "))
	}
	return nil
}
