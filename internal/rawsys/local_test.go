package rawsys

import (
	"os"
	"testing"
)

// mounts is a mount table as a Debian host with an NFS home and a FUSE
// mount below a build directory would show it.
const mounts = `21 26 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
27 26 0:25 / /tmp rw,nosuid,nodev shared:12 - tmpfs tmpfs rw
30 26 0:40 / /home rw,relatime shared:20 - nfs4 server:/home rw,vers=4.2
31 26 254:2 / /srv/build rw,relatime shared:21 - xfs /dev/vdb rw
32 31 0:50 / /srv/build/remote rw,nosuid,nodev,relatime shared:22 - fuse.sshfs host:/x rw
33 26 254:3 / /srv/with\040space rw,relatime shared:23 - ext4 /dev/vdc rw
34 27 0:41 / /tmp/stacked rw - tmpfs tmpfs rw
35 27 0:42 / /tmp/stacked rw - nfs server:/s rw
`

func TestLocalIn(t *testing.T) {
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/", false},                       // NFS and sshfs mounted below it
		{"/var/lib/vmm", true},             // on the ext4 root
		{"/tmp/share", true},               // tmpfs
		{"/home/user/src", false},          // on NFS
		{"/home", false},                   // the NFS mount point itself
		{"/homework", true},                // not below /home
		{"/srv/build", false},              // sshfs below it
		{"/srv/build/out", true},           // xfs, nothing below
		{"/srv/build/remote/a", false},     // on sshfs
		{"/srv/with space/disk.img", true}, // unescaped \040
		{"/tmp/stacked/x", false},          // the last of two mounts on one point is the one seen
		{"/tmp/../home/x", false},          // cleaned first
		{"relative/path", false},
		{"", false},
	} {
		if got := localIn([]byte(mounts), tc.path); got != tc.want {
			t.Errorf("localIn(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
}

func TestLocalInMalformed(t *testing.T) {
	for _, table := range []string{
		"",                               // no mounts: nothing is known to be local
		"26 1 254:1 / / rw - \n",         // no type
		"26 1 254:1 / / rw shared:1\n",   // no separator
		"26 1 254:1 / rel rw - ext4 x\n", // relative mount point
		`26 1 254:1 / /a\04 rw - ext4 x` + "\n",
		`26 1 254:1 / /a\999 rw - ext4 x` + "\n",
		"26 1 254:1 / / rw - ext4 /dev/vda1 rw\ngarbage\n",
	} {
		if localIn([]byte(table), "/a") {
			t.Errorf("localIn(%q, /a) = true, want false", table)
		}
	}
}

// TestLocalHere runs Local on this machine's table: a temporary
// directory is on some file system the table lists.
func TestLocalHere(t *testing.T) {
	if _, err := os.Stat("/proc/self/mountinfo"); err != nil {
		t.Skip("no /proc/self/mountinfo")
	}
	if _, err := Local(t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

func FuzzLocalIn(f *testing.F) {
	f.Add([]byte(mounts), "/srv/build/out")
	f.Add([]byte(`1 0 0:1 / /a\134b\040c rw - ext4 x`+"\n"), `/a\b c`)
	f.Fuzz(func(t *testing.T, info []byte, path string) {
		localIn(info, path)
	})
}
