package runjob

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// Extract unpacks the tar stream the guest wrote to the out disk into
// dir. The stream is guest data, so it is treated as hostile: only
// directories and regular files are created, every name must stay inside
// dir (os.Root enforces it even against symlinks already there), existing
// files are replaced, never followed, and at most limit bytes of file
// data are written. It returns how many files it wrote.
func Extract(r io.Reader, dir string, limit int64) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("-out %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, fmt.Errorf("-out %s: %w", dir, err)
	}
	defer root.Close()
	tr := tar.NewReader(r)
	files := 0
	var written int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return files, fmt.Errorf("-out: guest output archive: %w", err)
		}
		name, ok := cleanName(h.Name)
		if !ok {
			return files, fmt.Errorf("-out: guest output archive: unsafe name %q", h.Name)
		}
		if name == "." {
			continue
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return files, fmt.Errorf("-out: %w", err)
			}
		case tar.TypeReg:
			if h.Size < 0 || h.Size > limit-written {
				return files, fmt.Errorf("-out: guest output exceeds %d bytes", limit)
			}
			if d := path.Dir(name); d != "." {
				if err := root.MkdirAll(d, 0o755); err != nil {
					return files, fmt.Errorf("-out: %w", err)
				}
			}
			// Remove first, so an existing symlink is replaced, not
			// written through.
			if err := root.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
				return files, fmt.Errorf("-out: %w", err)
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, os.FileMode(h.Mode).Perm()|0o600)
			if err != nil {
				return files, fmt.Errorf("-out: %w", err)
			}
			n, err := io.Copy(f, io.LimitReader(tr, h.Size))
			written += n
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return files, fmt.Errorf("-out %s: %w", name, err)
			}
			files++
		default:
			// Links, devices and FIFOs from a guest have no business on
			// the host: skip them.
		}
	}
}

// cleanName turns a tar name into a slash path relative to the output
// directory, refusing absolute names and any ".." that climbs out.
func cleanName(n string) (string, bool) {
	if n == "" || strings.HasPrefix(n, "/") || strings.ContainsRune(n, 0) {
		return "", false
	}
	c := path.Clean(n)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", false
	}
	return c, true
}
