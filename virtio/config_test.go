package virtio

import (
	"bytes"
	"testing"
)

func TestReadFixedConfig(t *testing.T) {
	config := []byte{1, 2, 3, 4}
	for _, tc := range []struct {
		off  uint64
		n    int
		want []byte
	}{
		{0, 4, []byte{1, 2, 3, 4}},
		{2, 4, []byte{3, 4, 0, 0}},
		{4, 2, []byte{0, 0}},
		{1 << 63, 1, []byte{0}},
		{1, 0, []byte{}},
	} {
		data := bytes.Repeat([]byte{0xff}, tc.n)
		ReadFixedConfig(config, tc.off, data)
		if !bytes.Equal(data, tc.want) {
			t.Errorf("off %d, %d bytes: %v, want %v", tc.off, tc.n, data, tc.want)
		}
	}
}
