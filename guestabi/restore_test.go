package guestabi

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vmm-dev/vmm/internal/pack/packtest"
)

func goodMessage() JobMessage {
	return JobMessage{Spec: Spec{Args: []string{"sh", "-c", "echo hi"}, Env: []string{"A=b"}, Out: true, StdoutPort: true, StderrPipe: true, StdinPort: true},
		Entropy: bytes.Repeat([]byte{7}, EntropySize), UnixNano: 1700000000123456789}
}

func TestJobMessageRoundTrip(t *testing.T) {
	b, err := EncodeJobMessage(goodMessage())
	if err != nil {
		t.Fatal(err)
	}
	// Followed by the job's stdin, which must stay unread.
	r := bytes.NewReader(append(b, "stdin"...))
	got, err := ReadJobMessage(r)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, goodMessage()) {
		t.Errorf("got %+v, want %+v", got, goodMessage())
	}
	if r.Len() != len("stdin") {
		t.Errorf("%d bytes left after the message, want the 5 of stdin", r.Len())
	}
}

func TestReadJobMessageRefuses(t *testing.T) {
	good, _ := EncodeJobMessage(goodMessage())
	short := goodMessage()
	short.Entropy = short.Entropy[:4]
	noEntropy, err := EncodeJobMessage(short)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "EOF"},
		{"magic", append([]byte("XXXXXXXX"), good[8:]...), "magic"},
		{"huge", append(append([]byte(nil), good[:8]...), 0xff, 0xff, 0xff, 0xff), "at most"},
		{"truncated", good[:len(good)-3], "EOF"},
		{"entropy", noEntropy, "entropy"},
	} {
		if _, err := ReadJobMessage(bytes.NewReader(tc.b)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if _, err := EncodeJobMessage(JobMessage{}); err == nil {
		t.Error("encoded a message without a command")
	}
}

func FuzzReadJobMessage(f *testing.F) {
	good, _ := EncodeJobMessage(goodMessage())
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ReadJobMessage(bytes.NewReader(b))
		if err != nil {
			return
		}
		again, err := EncodeJobMessage(m)
		if err != nil {
			t.Fatalf("re-encode of an accepted message: %v", err)
		}
		if _, err := ReadJobMessage(bytes.NewReader(again)); err != nil {
			t.Fatalf("re-read: %v", err)
		}
	})
}

func TestWriteJobSeeds(t *testing.T) {
	if os.Getenv("VMM_WRITE_SEEDS") == "" {
		t.Skip("set VMM_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzReadJobMessage")
	}
	good, _ := EncodeJobMessage(goodMessage())
	for name, b := range map[string][]byte{"good": good, "truncated": good[:20]} {
		p := filepath.Join("testdata/fuzz/FuzzReadJobMessage", name)
		os.WriteFile(p, []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644)
	}
}

// TestJobMessageLayout: a change to JobMessage's layout (Spec's
// included) changes what a restored init reads: bump jobMagic's version
// and record the new layout here.
func TestJobMessageLayout(t *testing.T) {
	const layout, version = "56d1ee052ac2f674", '5'
	if got := packtest.Layout(JobMessage{}); got != layout || jobMagic[6] != version {
		t.Errorf("JobMessage's layout is %s (magic %q); recorded: %s for version %c", got, jobMagic[:7], layout, version)
	}
}
