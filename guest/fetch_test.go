package guest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeApt puts apt-get and apt-cache scripts first in PATH. apt-get
// downloads only the packages in debs (copying the file into the current
// directory, as the real one does) and logs its arguments; apt-cache
// depends prints depends.
func fakeApt(t *testing.T, debs map[string]string, depends string) (log string) {
	t.Helper()
	bin := t.TempDir()
	log = filepath.Join(bin, "apt.log")
	var cases strings.Builder
	for pkg, deb := range debs {
		cases.WriteString("  " + pkg + ") cp '" + deb + "' . ;;\n")
	}
	aptGet := "#!/bin/sh\necho \"$*\" >> '" + log + "'\n" +
		"for a; do last=$a; done\n" +
		"case \"$*\" in *update*) exit 0;; esac\n" +
		"case \"$last\" in\n" + cases.String() + "  *) echo \"E: Can't find $last\" >&2; exit 100;;\nesac\n"
	aptCache := "#!/bin/sh\necho \"apt-cache $*\" >> '" + log + "'\nprintf '%s' '" + depends + "'\n"
	writeFile(t, filepath.Join(bin, "apt-get"), []byte(aptGet))
	writeFile(t, filepath.Join(bin, "apt-cache"), []byte(aptCache))
	for _, f := range []string{"apt-get", "apt-cache"} {
		if err := os.Chmod(filepath.Join(bin, f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return log
}

// fakeKernelDeb builds a tiny kernel package with dpkg-deb.
func fakeKernelDeb(t *testing.T, release, version string) string {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed")
	}
	root := t.TempDir()
	pkg := "linux-image-" + release
	writeFile(t, filepath.Join(root, "DEBIAN", "control"), []byte("Package: "+pkg+"\nVersion: "+version+
		"\nArchitecture: amd64\nMaintainer: test <test@example.invalid>\nDescription: fake kernel\n"))
	writeFile(t, filepath.Join(root, "boot", "vmlinuz-"+release), []byte("bzImage"))
	writeFile(t, filepath.Join(root, "lib", "modules", release, "modules.builtin"), nil)
	deb := filepath.Join(t.TempDir(), pkg+"_"+version+"_amd64.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, out)
	}
	return deb
}

func TestFetchKernelFallsBackAndCaches(t *testing.T) {
	ctx := context.Background()
	const release = "6.1.0-99-cloud-amd64"
	deb := fakeKernelDeb(t, release, "6.1.999-1")
	log := fakeApt(t, map[string]string{"linux-image-" + release: deb},
		"linux-image-cloud-amd64\n  Depends: linux-image-"+release+"\n")
	cache := t.TempDir()

	k, err := FetchKernel(ctx, FlavorCloud, cache)
	if err != nil {
		t.Fatal(err)
	}
	if k.Version != release || k.Package != "linux-image-"+release+"_6.1.999-1" {
		t.Errorf("got %+v", k)
	}
	if b, err := os.ReadFile(k.BzImage); err != nil || string(b) != "bzImage" {
		t.Errorf("bzImage: %q, %v", b, err)
	}
	if filepath.Dir(filepath.Dir(filepath.Dir(k.ModulesDir))) != filepath.Join(cache, k.Package) {
		t.Errorf("ModulesDir %s not under %s", k.ModulesDir, filepath.Join(cache, k.Package))
	}
	calls, _ := os.ReadFile(log)
	// Pinned download, update, pinned again, then the meta package's pick.
	for _, want := range []string{"download linux-image-" + PinnedABI + "-cloud-amd64", "update", "apt-cache depends linux-image-cloud-amd64", "download linux-image-" + release} {
		if !strings.Contains(string(calls), want) {
			t.Errorf("apt calls %q lack %q", calls, want)
		}
	}
	if tmps, _ := filepath.Glob(filepath.Join(cache, tempPrefix+"*")); len(tmps) != 0 {
		t.Errorf("temporary directories left behind: %v", tmps)
	}

	// A second run must not need apt at all.
	fakeApt(t, nil, "")
	k2, err := FetchKernel(ctx, FlavorCloud, cache)
	if err != nil {
		t.Fatal(err)
	}
	if *k2 != *k {
		t.Errorf("second fetch = %+v, want %+v", k2, k)
	}
}

func TestFetchKernelUsesCacheWithoutApt(t *testing.T) {
	cache := t.TempDir()
	release := PinnedABI + "-amd64"
	dir := filepath.Join(cache, "linux-image-"+release+"_6.1.1-1")
	writeFile(t, filepath.Join(dir, "boot", "vmlinuz-"+release), []byte("bz"))
	writeFile(t, filepath.Join(dir, "lib", "modules", release, "modules.builtin"), nil)
	// A half-unpacked leftover of a killed run is never taken for a kernel.
	writeFile(t, filepath.Join(cache, tempPrefix+"1-x", "boot", "vmlinuz-"+release), []byte("half"))
	log := fakeApt(t, nil, "")

	k, err := FetchKernel(context.Background(), FlavorGeneric, cache)
	if err != nil {
		t.Fatal(err)
	}
	if k.Version != release || k.BzImage != filepath.Join(dir, "boot", "vmlinuz-"+release) {
		t.Errorf("got %+v", k)
	}
	if _, err := os.Stat(log); err == nil {
		t.Error("apt was called despite a warm cache")
	}
	if _, err := os.Stat(filepath.Join(cache, tempPrefix+"1-x")); err == nil {
		t.Error("stale temporary directory was not removed")
	}
}

func TestFetchKernelNoFallback(t *testing.T) {
	fakeApt(t, nil, "nothing useful\n")
	if _, err := FetchKernel(context.Background(), FlavorCloud, t.TempDir()); err == nil {
		t.Error("FetchKernel succeeded without any package")
	}
}

// TestFetchKernelRefetchesCutDeb: a .deb cut short in the cache (an
// interrupted download by an older vmm, which apt-get wrote in place) is
// removed and downloaded again, not failed on at every run.
func TestFetchKernelRefetchesCutDeb(t *testing.T) {
	release := PinnedABI + "-cloud-amd64"
	deb := fakeKernelDeb(t, release, "6.1.999-1")
	cache := t.TempDir()
	whole, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(cache, filepath.Base(deb)), whole[:len(whole)/2])
	log := fakeApt(t, map[string]string{"linux-image-" + release: deb}, "")
	k, err := FetchKernel(context.Background(), FlavorCloud, cache)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(k.BzImage); err != nil || string(b) != "bzImage" {
		t.Errorf("bzImage: %q, %v", b, err)
	}
	if calls, _ := os.ReadFile(log); !strings.Contains(string(calls), "download linux-image-"+release) {
		t.Errorf("apt calls %q: the cut .deb was not downloaded again", calls)
	}
	if tmps, _ := filepath.Glob(filepath.Join(cache, tempPrefix+"*")); len(tmps) != 0 {
		t.Errorf("temporary directories left behind: %v", tmps)
	}
}

// TestFetchKernelNotDebian: where apt knows neither the pinned kernel nor
// its meta package (Ubuntu's archive), the error says what is missing.
func TestFetchKernelNotDebian(t *testing.T) {
	fakeApt(t, nil, "")
	// apt-cache failing, as Ubuntu's does for linux-image-cloud-amd64.
	bin := filepath.Dir(mustLookPath(t, "apt-cache"))
	writeFile(t, filepath.Join(bin, "apt-cache"), []byte("#!/bin/sh\necho 'E: No packages found' >&2\nexit 100\n"))
	_, err := FetchKernel(context.Background(), FlavorCloud, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "not in this host's apt sources: vmm's guest kernels are Debian 12's") {
		t.Errorf("FetchKernel: %v, want it to say the packages are not in apt's sources", err)
	}
}

func mustLookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
