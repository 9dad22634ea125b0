package rawsys

import (
	"os"
	"path/filepath"
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
36 26 0:43 / /ctr rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
37 26 43:0 / /data rw - ext4 /dev/nbd0 rw
`

func anyDevice(mount) bool { return true }

func TestLocalIn(t *testing.T) {
	for _, tc := range []struct {
		path string
		id   int
		want bool
	}{
		{"/", -1, false},                       // NFS and sshfs mounted below it
		{"/var/lib/vmm", -1, true},             // on the ext4 root
		{"/tmp/share", -1, true},               // tmpfs
		{"/home/user/src", -1, false},          // on NFS
		{"/home", -1, false},                   // the NFS mount point itself
		{"/homework", -1, true},                // not below /home
		{"/srv/build", -1, false},              // sshfs below it
		{"/srv/build/out", -1, true},           // xfs, nothing below
		{"/srv/build/remote/a", -1, false},     // on sshfs
		{"/srv/with space/disk.img", -1, true}, // unescaped \040
		{"/tmp/stacked/x", -1, false},          // without an ID, the last of two mounts on one point
		{"/tmp/stacked/x", 34, true},           // the ID says which one the file is on
		{"/tmp/stacked/x", 35, false},
		{"/tmp/x", 99, false}, // an ID not in the table
		{"/ctr/a", -1, false}, // overlay: its layers could be anywhere
		{"/tmp/../home/x", -1, false},
		{"relative/path", -1, false},
		{"", -1, false},
	} {
		if got := localIn([]byte(mounts), tc.path, tc.id, anyDevice); got != tc.want {
			t.Errorf("localIn(%q, %d) = %v, want %v", tc.path, tc.id, got, tc.want)
		}
	}
	// The device check applies to the file's mount and those below.
	noNBD := func(m mount) bool { return m.source != "/dev/nbd0" }
	if localIn([]byte(mounts), "/data/disk.img", -1, noNBD) {
		t.Error("ext4 on an NBD device taken as local")
	}
	if !localIn([]byte(mounts), "/srv/build/out", -1, noNBD) {
		t.Error("xfs on a local disk not taken as local")
	}
}

func TestLocalInMalformed(t *testing.T) {
	for _, table := range []string{
		"",                                  // no mounts: nothing is known to be local
		"26 1 254:1 / / rw - ext4\n",        // no source
		"26 1 254:1 / / rw shared:1 x y\n",  // no separator
		"26 1 254:1 / rel rw - ext4 x rw\n", // relative mount point
		`26 1 254:1 / /a\04 rw - ext4 x rw` + "\n",
		`26 1 254:1 / /a\999 rw - ext4 x rw` + "\n",
		"x 1 254:1 / / rw - ext4 x rw\n", // no ID
		"26 1 254:1 / / rw - ext4 /dev/vda1 rw\ngarbage\n",
	} {
		if localIn([]byte(table), "/a", -1, anyDevice) {
			t.Errorf("localIn(%q, /a) = true, want false", table)
		}
	}
}

// fakeSys builds a /sys/dev/block of the devices a host may mount file
// systems from.
func fakeSys(t *testing.T) sysfs {
	root := t.TempDir()
	dev := func(majmin, target string, files map[string]string) {
		t.Helper()
		full := filepath.Join(root, "devices", target)
		if err := os.MkdirAll(full, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range files {
			p := filepath.Join(full, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		link := filepath.Join(root, "dev", "block", majmin)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(full, link); err != nil {
			t.Fatal(err)
		}
	}
	dev("8:0", "pci0000:00/0000:00:05.0/virtio2/host0/target0:0:0/0:0:0:0/block/sda", nil)
	dev("8:16", "platform/host3/session1/target3:0:0/3:0:0:0/block/sdb", nil) // iSCSI
	dev("43:0", "virtual/block/nbd0", nil)
	dev("252:0", "virtual/block/rbd0", nil)
	dev("253:0", "virtual/block/dm-0", map[string]string{"dm/uuid": "LVM-abc\n", "slaves/sda/dev": "8:0\n"})
	dev("253:1", "virtual/block/dm-1", map[string]string{"dm/uuid": "mpath-3600\n"})
	dev("253:2", "virtual/block/dm-2", map[string]string{"dm/uuid": "CRYPT-x\n", "slaves/sdb/dev": "8:16\n"})
	dev("7:0", "virtual/block/loop0", map[string]string{"loop/backing_file": "/srv/img/disk.img\n"})
	dev("7:1", "virtual/block/loop1", map[string]string{"loop/backing_file": "/home/u/disk.img\n"})
	dev("7:2", "virtual/block/loop2", map[string]string{"loop/backing_file": "/srv/img/loop.img\n"})
	info := `26 1 8:0 / / rw - ext4 /dev/sda rw
30 26 0:40 / /home rw - nfs4 server:/home rw
31 26 253:0 / /srv/img rw - ext4 /dev/mapper/vg-img rw
`
	return sysfs{root: root, info: []byte(info)}
}

func TestSysfsDevices(t *testing.T) {
	s := fakeSys(t)
	for _, tc := range []struct {
		majmin string
		want   bool
	}{
		{"8:0", true},    // a virtio-scsi disk
		{"8:16", false},  // a disk on an iSCSI session
		{"43:0", false},  // NBD
		{"252:0", false}, // RBD
		{"253:0", true},  // LVM on a local disk
		{"253:1", false}, // multipath
		{"253:2", false}, // dm-crypt on iSCSI
		{"7:0", true},    // a loop file on LVM on a local disk
		{"7:1", false},   // a loop file on NFS
		{"9:9", false},   // unknown to sysfs
	} {
		if got := s.local(mount{majmin: tc.majmin, source: "/dev/x"}); got != tc.want {
			t.Errorf("local(%s) = %v, want %v", tc.majmin, got, tc.want)
		}
	}
	// Memory file systems have no device; a source that is no block
	// device (zfs's dataset, tmpfs) says nothing either.
	for _, m := range []mount{{majmin: "0:25", source: "tmpfs"}, {majmin: "0:30", source: "pool/data"}} {
		if !s.local(m) {
			t.Errorf("local(%+v) = false", m)
		}
	}
}

// TestSysfsLoopCycle: a loop device backed by a file on itself (or any
// chain too deep) ends, not local.
func TestSysfsLoopCycle(t *testing.T) {
	s := fakeSys(t)
	s.info = []byte("26 1 7:2 / /srv/img rw - ext4 /dev/loop2 rw\n")
	if s.local(mount{majmin: "7:2", source: "/dev/loop2"}) {
		t.Error("a loop device backed by itself taken as local")
	}
}

// TestLocalHere runs LocalFD on this machine: a temporary directory is on
// some file system the table lists.
func TestLocalHere(t *testing.T) {
	f, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := LocalFD(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	if id := mountID(int(f.Fd())); id < 0 {
		t.Errorf("no mnt_id in /proc/self/fdinfo")
	}
}

func FuzzLocalIn(f *testing.F) {
	f.Add([]byte(mounts), "/srv/build/out", -1)
	f.Add([]byte(mounts), "/tmp/stacked/x", 35)
	f.Add([]byte(`1 0 0:1 / /a\134b\040c rw - ext4 x rw`+"\n"), `/a\b c`, 1)
	f.Fuzz(func(t *testing.T, info []byte, path string, id int) {
		localIn(info, path, id, anyDevice)
	})
}
