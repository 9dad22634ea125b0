// Command benchtool does what the benchmark needs on its host that l1tool
// does not: L1 has no shell or coreutils.
//
//	benchtool mkdisk PATH BYTES
//	benchtool meminfo
//	benchtool rm PATH
//	benchtool vmstat COMM
//	benchtool daemon-exec SOCKET LOG DAEMON [ARG...] -- VMM [ARG...]
//	benchtool tail PATH
//
// mkdisk writes a raw image of BYTES filled with a non-zero pattern, so
// that every block is allocated: a sparse file would let reads of holes
// skip the memory copy a real disk's data costs, differently for each VMM;
// it also makes the shared directory's sequential file (and the
// directory). meminfo prints MemTotal and MemAvailable, to check that L1
// has room. rm removes the image, or a directory with what is in it,
// afterwards. vmstat prints one JSON line (a kvmstats.Sample) with the
// KVM counters of the VM of the one process named COMM and that
// process's CPU time, to difference around a workload phase. daemon-exec
// starts a VMM's back-end daemon (QEMU's virtiofsd), waits for its
// socket and then becomes the VMM, so the daemon is the VMM's child and
// its CPU time is the VMM's, as vmm's own helpers' is; tail prints the
// end of its log when the VMM failed.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vmm-dev/vmm/tools/kvmstats"
)

func main() {
	var err error
	switch a := os.Args[1:]; {
	case len(a) == 1 && a[0] == "meminfo":
		err = meminfo()
	case len(a) == 2 && a[0] == "rm":
		err = remove(a[1])
	case len(a) >= 1 && a[0] == "daemon-exec":
		err = daemonExec(a[1:])
	case len(a) == 2 && a[0] == "tail":
		err = tail(a[1], 2000, os.Stdout)
	case len(a) == 2 && a[0] == "vmstat":
		err = vmstat(kvmstats.DefaultPaths(), a[1], os.Stdout)
	case len(a) == 3 && a[0] == "mkdisk":
		n, perr := strconv.ParseInt(a[2], 10, 64)
		if perr != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "benchtool: bad size %q\n", a[2])
			os.Exit(2)
		}
		err = mkdisk(a[1], n)
	default:
		fmt.Fprintln(os.Stderr, "usage: benchtool mkdisk PATH BYTES | benchtool meminfo | benchtool rm PATH | benchtool vmstat COMM | benchtool daemon-exec SOCKET LOG DAEMON [ARG...] -- VMM [ARG...] | benchtool tail PATH")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchtool: %v\n", err)
		os.Exit(1)
	}
}

// tail writes the last n bytes of the file at path to w.
func tail(path string, n int64, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() > n {
		if _, err := f.Seek(st.Size()-n, io.SeekStart); err != nil {
			return err
		}
	}
	_, err = io.Copy(w, f)
	return err
}

// remove deletes path, a file or a directory with what is in it.
func remove(path string) error { return os.RemoveAll(path) }

func mkdisk(path string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i%255 + 1)
	}
	for off := int64(0); off < size; {
		chunk := buf
		if rest := size - off; rest < int64(len(chunk)) {
			chunk = chunk[:rest]
		}
		if _, err := f.Write(chunk); err != nil {
			f.Close()
			return fmt.Errorf("mkdisk %s at %d: %w", path, off, err)
		}
		off += int64(len(chunk))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("mkdisk %s: %w", path, err)
	}
	fmt.Printf("benchtool: mkdisk %s bytes=%d\n", path, size)
	return nil
}

func meminfo() error {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return err
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "MemTotal:") || strings.HasPrefix(l, "MemAvailable:") || strings.HasPrefix(l, "Shmem:") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	fmt.Println(strings.Join(out, ", "))
	return nil
}

// vmstat samples the VM of the one process named comm. The benchmark
// runs one VMM at a time, so two of them mean something was left
// running, and neither is guessed at.
func vmstat(p kvmstats.Paths, comm string, w io.Writer) error {
	if err := p.MountDebugfs(); err != nil {
		return err
	}
	pids, err := p.FindComm(comm)
	if err != nil {
		return err
	}
	if len(pids) != 1 {
		return fmt.Errorf("vmstat: %d processes named %q (%v), want one", len(pids), comm, pids)
	}
	s, err := p.Take(pids[0])
	if err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
