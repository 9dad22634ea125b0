// Command pipeends runs a command with the two pipe ends the end-to-end
// tests of vmm's standard streams need, which L1 has no shell to build:
//
//	pipeends [-stdin-bytes N] [-head N | -digest] -- CMD ARGS...
//
// -stdin-bytes feeds CMD's stdin N bytes of Pattern, written from the
// moment CMD starts (as `generate | vmm run ...` does), then closes it;
// without it CMD's stdin is /dev/null. -head reads only N bytes of CMD's
// stdout and then closes the pipe, as `vmm ... | head -c N` does; without
// it all of CMD's stdout is read. -digest reads all of it and prints only
// "bytes=N sha256=HEX", for output too large to carry back whole. What
// was read goes to pipeends' stdout,
// CMD's stderr passes through, and pipeends exits with CMD's status
// (128+N if signal N killed it), so tools/e2e/cmd/redirect can report on
// it as on CMD itself.
package main

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"github.com/vmm-dev/vmm/tools/e2e/cmd/pipeends/pattern"
)

func main() {
	stdinBytes := flag.Int("stdin-bytes", 0, "feed CMD's stdin this many bytes of the test pattern, then close it")
	head := flag.Int("head", 0, "read only this many bytes of CMD's stdout, then close it")
	digest := flag.Bool("digest", false, "print only the length and SHA-256 of CMD's stdout")
	flag.Parse()
	if flag.NArg() == 0 || (*digest && *head > 0) {
		fmt.Fprintln(os.Stderr, "usage: pipeends [-stdin-bytes N] [-head N | -digest] -- CMD ARGS...")
		os.Exit(2)
	}
	os.Exit(run(flag.Args(), *stdinBytes, *head, *digest))
}

func run(args []string, stdinBytes, head int, digest bool) int {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	var in io.WriteCloser
	var err error
	if stdinBytes > 0 {
		if in, err = cmd.StdinPipe(); err != nil {
			return fail(err)
		}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	if in != nil {
		go func() {
			// A write error means CMD stopped reading: what it read is
			// what the test checks.
			_, _ = in.Write(pattern.Bytes(stdinBytes))
			in.Close()
		}()
	}
	var r io.Reader = out
	if head > 0 {
		r = io.LimitReader(out, int64(head))
	}
	var w io.Writer = os.Stdout
	h := sha256.New()
	if digest {
		w = h
	}
	n, err := io.Copy(w, r)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pipeends: reading CMD's stdout: %v\n", err)
	}
	if digest {
		fmt.Printf("bytes=%d sha256=%x\n", n, h.Sum(nil))
	}
	if head > 0 {
		out.Close() // the reader is gone: CMD's next write gets EPIPE
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return fail(err)
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "pipeends: %v\n", err)
	return 1
}
