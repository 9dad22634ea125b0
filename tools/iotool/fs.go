package iotool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// FSFilesOptions configures FSFiles.
type FSFilesOptions struct {
	Dir   string // created; must not exist or be empty
	Count int    // files
	Size  int    // bytes in each
	// DropCaches empties the guest's page, dentry and inode caches
	// before the stat and read phases, so both go to the file server
	// instead of being answered from what the create phase left
	// behind; every shared file system is then measured on its
	// transport, not on its cache policy.
	DropCaches bool
}

// dropCachesPath takes "3": free the page cache, dentries and inodes
// (Documentation/admin-guide/sysctl/vm.rst).
const dropCachesPath = "/proc/sys/vm/drop_caches"

// syncAll writes every file system's dirty data back (sync(2)).
func syncAll() { unix.Sync() }

// dropCaches writes back dirty data and empties the caches.
func dropCaches() error {
	syncAll()
	if err := os.WriteFile(dropCachesPath, []byte("3"), 0); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// FSFiles is a file-heavy workload on a (shared) file system: it creates
// Count files of Size bytes in Dir, in directories of 1,000, then stats
// each, then reads each back and checks its content. The result holds
// each phase's seconds (create_s, stat_s, read_s) and their sum
// (seconds). The create phase includes writing the data back (sync), so
// that a client caching writes pays for them here.
func FSFiles(ctx context.Context, o FSFilesOptions) (Result, error) {
	r := Result{Op: "fs-files"}
	if o.Dir == "" || o.Count < 1 || o.Size < 0 || o.Size > 1<<20 {
		return r, usageError("fs-files: want -dir, -count of at least 1 and -size up to 1M")
	}
	name := func(i int) string { return filepath.Join(o.Dir, fmt.Sprintf("d%03d", i/1000), fmt.Sprintf("f%05d", i)) }
	data := make([]byte, o.Size)
	for i := range data {
		data[i] = byte(i%251 + 1)
	}
	phase := func(what string, fn func(i int) error) (float64, error) {
		if o.DropCaches && what != "create" {
			if err := dropCaches(); err != nil {
				return 0, err
			}
		}
		start := time.Now()
		for i := 0; i < o.Count; i++ {
			if i%256 == 0 && ctx.Err() != nil {
				return 0, fmt.Errorf("fs-files: %s: %w", what, ctx.Err())
			}
			if err := fn(i); err != nil {
				return 0, fmt.Errorf("fs-files: %s: %w", what, err)
			}
		}
		if what == "create" {
			syncAll()
		}
		return time.Since(start).Seconds(), nil
	}
	create, err := phase("create", func(i int) error {
		p := name(i)
		if i%1000 == 0 {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		return r, err
	}
	stat, err := phase("stat", func(i int) error {
		st, err := os.Lstat(name(i))
		if err == nil && st.Size() != int64(o.Size) {
			err = fmt.Errorf("%s: %d bytes, want %d", name(i), st.Size(), o.Size)
		}
		return err
	})
	if err != nil {
		return r, err
	}
	buf := make([]byte, o.Size+1)
	read, err := phase("read", func(i int) error {
		f, err := os.Open(name(i))
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.ReadFull(f, buf)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return err
		}
		if n != o.Size || string(buf[:n]) != string(data) {
			return fmt.Errorf("%s: read back %d bytes that differ from the %d written", name(i), n, o.Size)
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	r.add("files", "%d", o.Count)
	r.add("size", "%d", o.Size)
	r.add("create_s", "%.3f", create)
	r.add("stat_s", "%.3f", stat)
	r.add("read_s", "%.3f", read)
	r.add("seconds", "%.3f", create+stat+read)
	return r, nil
}

// FSSeqReadOptions configures FSSeqRead.
type FSSeqReadOptions struct {
	Path       string
	Bytes      int64 // to read from the start; the file must hold them
	BlockSize  int   // bytes per read; 0 means 1 MiB
	DropCaches bool  // start from an empty page cache
}

// FSSeqRead reads a file sequentially through the page cache, as a
// program reading a shared file would (O_DIRECT is not what shared file
// systems are used with), and reports seconds and MiB/s.
func FSSeqRead(ctx context.Context, o FSSeqReadOptions) (Result, error) {
	r := Result{Op: "fs-seq-read"}
	if o.BlockSize == 0 {
		o.BlockSize = 1 << 20
	}
	if o.Path == "" || o.Bytes <= 0 || o.BlockSize < 0 || o.BlockSize > 1<<30 {
		return r, usageError("fs-seq-read: want -file, a positive -bytes and -bs up to 1G")
	}
	if o.DropCaches {
		if err := dropCaches(); err != nil {
			return r, err
		}
	}
	f, err := os.Open(o.Path)
	if err != nil {
		return r, fmt.Errorf("fs-seq-read: %w", err)
	}
	defer f.Close()
	buf := make([]byte, o.BlockSize)
	start := time.Now()
	var done int64
	for done < o.Bytes {
		if ctx.Err() != nil {
			return r, fmt.Errorf("fs-seq-read: %w", ctx.Err())
		}
		n, err := f.Read(buf[:min(int64(len(buf)), o.Bytes-done)])
		done += int64(n)
		if err == io.EOF || (err == nil && n == 0) {
			return r, fmt.Errorf("fs-seq-read: %s ends after %d bytes, want %d", o.Path, done, o.Bytes)
		}
		if err != nil {
			return r, fmt.Errorf("fs-seq-read: %w", err)
		}
	}
	secs := time.Since(start).Seconds()
	r.add("bytes", "%d", done)
	r.add("seconds", "%.3f", secs)
	r.add("mibps", "%.1f", float64(done)/(1<<20)/secs)
	return r, nil
}
