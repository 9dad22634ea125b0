package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// InitrdHas reports whether the newc archive at path holds file name
// (without the leading slash). The benchmark checks for vmm-iotool up
// front: a guest image built before the tool existed would otherwise fail
// only after L1 and the first guest have booted.
func InitrdHas(path, name string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	rr := cpio.Newc.Reader(f)
	name = strings.TrimPrefix(name, "/")
	for {
		rec, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read %s: %w", path, err)
		}
		if strings.TrimPrefix(rec.Name, "./") == name {
			return true, nil
		}
	}
}
