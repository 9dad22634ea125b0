package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmm-dev/vmm/tools/iotool"
	"github.com/vmm-dev/vmm/tools/nested"
	"github.com/vmm-dev/vmm/usernet"
)

// The user-mode network's tests: vmm runs as uid 1000 in an L1 with no
// TAP driver, /dev/kvm opened up to everyone (as a CI runner's is), and
// the guest's network is -nic user. L1's own servers listen on its
// loopback only.
const (
	unprivUID    = "1000"
	httpPort     = "8080" // L1's HTTP server, 127.0.0.1
	fwdHostPort  = "8022" // the hostfwd's host side, 127.0.0.1
	fwdGuestPort = "8022" // and its guest side
	dnsName      = "usernet.vmm.test"
	dnsAddr      = "192.0.2.7" // TEST-NET-1: only ever an answer, never dialled
	downloadSize = 16 << 20
	// maxDownloadFrames is a quarter of the frames downloadSize takes at
	// the MTU: the download must come in larger segments (usernet's
	// receive offloads).
	maxDownloadFrames = downloadSize / (usernet.MTU - 40) / 4
	hostfwdBytes      = 4 << 20
	// serverTimeout bounds L1's HTTP and DNS servers, which the tests
	// start before the guest.
	serverTimeout = 10 * time.Minute
)

// userNetConfig is iotoolConfig with L1's resolver on its loopback, where
// dns-serve answers. No tun module: L1 cannot make a TAP.
func userNetConfig(t *testing.T) nested.Config {
	c := iotoolConfig(t)
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.1\noptions timeout:2 attempts:3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Files["/etc/resolv.conf"] = rc
	return c
}

// startL1Servers opens /dev/kvm to every user, brings L1's lo up and
// starts L1's HTTP server
// (httpCount downloads of downloadSize bytes of the Stream) and DNS
// server (dnsName A dnsAddr) in the background, each bounded by
// serverTimeout.
func startL1Servers(t *testing.T, l *nested.L1, httpCount int) error {
	ctx, cancel := context.WithTimeout(t.Context(), cmdTimeout)
	defer cancel()
	if out, code, err := l.Exec(ctx, "/bin/l1tool", "chmod", "0666", "/dev/kvm"); err != nil || code != 0 {
		return failure(l, "chmod 0666 /dev/kvm in L1: status %d, %v: %s", code, err, out)
	}
	// L1's init leaves lo down; its servers listen there.
	if _, err := l1io(t, l, cmdTimeout, "netup", "-dev", "lo", "-addr", "127.0.0.1/8"); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"http-serve", "-addr", "127.0.0.1:" + httpPort, "-bytes", fmt.Sprint(downloadSize), "-count", fmt.Sprint(httpCount), "-timeout", serverTimeout.String()},
		{"dns-serve", "-addr", "127.0.0.1:53", "-name", dnsName, "-ip", dnsAddr, "-timeout", serverTimeout.String()},
	} {
		go l1io(t, l, serverTimeout+time.Minute, args...)
	}
	return nil
}

// asUser is args run as the unprivileged user.
func asUser(args []string) []string {
	return append([]string{"/bin/l1tool", "asuser", unprivUID}, args...)
}

// userNetFlags is the -nic the tests give vmm: the hostfwd on L1's
// loopback only.
func userNetFlags() []string {
	return []string{"-nic", fmt.Sprintf("user,hostfwd=tcp:127.0.0.1:%s-:%s", fwdHostPort, fwdGuestPort)}
}

// checkDownload checks the guest's http-get result line in out.
func checkDownload(l *nested.L1, out string) (iotool.Result, error) {
	r, err := result(l, out, "http-get")
	if err != nil {
		return r, err
	}
	if want := iotool.StreamSHA256(iotool.DefaultSeed, downloadSize); field(r, "bytes") != fmt.Sprint(downloadSize) || field(r, "sha256") != want {
		return r, failure(l, "download from L1's loopback: %s, want bytes=%d sha256=%s", r, downloadSize, want)
	}
	return r, nil
}

// checkResolve checks the guest's resolve result line in out.
func checkResolve(l *nested.L1, out string) error {
	r, err := result(l, out, "resolve")
	if err != nil {
		return err
	}
	if field(r, "addrs") != dnsAddr {
		return failure(l, "%s resolved through L1's resolver: %s, want addrs=%s", dnsName, r, dnsAddr)
	}
	return nil
}

// defaultRouteRE matches /proc/net/route's line for eth0's default
// route through the gateway: destination 0, gateway in the kernel's
// byte order (the address's bytes read as a little-endian word, in hex).
func defaultRouteRE() *regexp.Regexp {
	a := netip.MustParseAddr(usernet.GatewayAddr).As4()
	return regexp.MustCompile(fmt.Sprintf(`(?m)^eth0\s+00000000\s+%08X\s`, binary.LittleEndian.Uint32(a[:])))
}

// hostfwdSend sends hostfwdBytes from L1 to the guest's listener through
// the hostfwd and returns the sender's result. The caller waits for the
// guest to listen first: vmm's host port accepts as soon as vmm starts,
// so the sender's connect retries cannot tell whether the guest listens.
func hostfwdSend(t *testing.T, l *nested.L1) (iotool.Result, error) {
	out, err := l1io(t, l, transferTimeout, "tcp-send", "-addr", "127.0.0.1:"+fwdHostPort,
		"-bytes", fmt.Sprint(hostfwdBytes), "-connect-timeout", "4m")
	if err != nil {
		return iotool.Result{}, err
	}
	return result(l, out, "tcp-send")
}

// As uid 1000 with no TAP: the guest gets its address by DHCP on -nic
// user, downloads 16 MiB from an HTTP server on L1's loopback through
// 10.0.2.2 intact, resolves a name through L1's resolver, and a hostfwd
// port on L1 reaches a server in the guest.
func TestUserNetUnprivileged(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	c := userNetConfig(t)
	start := time.Now()
	nested.Retry(t, c, func(l *nested.L1) error {
		t.Logf("L1 boot: %.1fs", l.BootTime.Seconds())
		if err := startL1Servers(t, l, 1); err != nil {
			return err
		}
		t0 := time.Now()
		j, err := l.Run(t.Context(), asUser(vmmArgs(append([]string{"-append", "quiet"}, userNetFlags()...)...)), nested.StdinTTY)
		if err != nil {
			return err
		}
		if _, err := j.Expect(readyMarker, bootTimeout); err != nil {
			return err
		}
		t.Logf("guest ready %.1fs after starting vmm as uid %s", time.Since(t0).Seconds(), unprivUID)

		// DHCP's lease: the address, the default route, the name server.
		// The route is read from /proc/net/route: u-root's ip prints a
		// default route as "0.0.0.0/0 dev eth0 ..." without its gateway.
		out, err := mustRun(l, j, "ip addr show dev eth0; cat /proc/net/route; cat /etc/resolv.conf", cmdTimeout)
		if err != nil {
			return err
		}
		for _, want := range []string{usernet.GuestAddr + "/24", "nameserver " + usernet.DNSAddr} {
			if !strings.Contains(out, want) {
				return failure(l, "the guest's network after DHCP has no %q:\n%s", want, out)
			}
		}
		if !defaultRouteRE().MatchString(out) {
			return failure(l, "the guest's network after DHCP has no default route via %s (%s in /proc/net/route):\n%s", usernet.GatewayAddr, defaultRouteRE(), out)
		}

		t1 := time.Now()
		out, err = mustRun(l, j, fmt.Sprintf("vmm-iotool http-get -url http://%s:%s/file -timeout %v", usernet.GatewayAddr, httpPort, transferTimeout), transferTimeout)
		if err != nil {
			return err
		}
		r, err := checkDownload(l, out)
		if err != nil {
			return err
		}
		t.Logf("16 MiB from L1's loopback in %.1fs: %s", time.Since(t1).Seconds(), r)
		// The download came in segments larger than the MTU: the
		// driver took the receive offloads and the stack sent them.
		// In full-size frames it would be over 11,000.
		out, err = mustRun(l, j, "cat /sys/class/net/eth0/statistics/rx_packets", cmdTimeout)
		if err != nil {
			return err
		}
		m := regexp.MustCompile(`(?m)^(?:\$ )*(\d+)\r?$`).FindStringSubmatch(out) // the prompt may come first
		rx := 0
		if m != nil {
			rx, _ = strconv.Atoi(m[1])
		}
		if rx <= 0 || rx > maxDownloadFrames {
			return failure(l, "the guest's eth0 rx_packets after the 16 MiB download: %q, want 1 to %d (segments larger than the MTU)", out, maxDownloadFrames)
		}
		t.Logf("the guest's eth0 received %d frames in all", rx)

		out, err = mustRun(l, j, "vmm-iotool resolve -name "+dnsName, cmdTimeout)
		if err != nil {
			return err
		}
		if err := checkResolve(l, out); err != nil {
			return err
		}

		if err := j.Send(fmt.Sprintf("vmm-iotool tcp-recv -port %s -timeout %v; echo vmm-status=$?=\n", fwdGuestPort, transferTimeout)); err != nil {
			return err
		}
		if _, err := j.Expect(regexp.MustCompile(`tcp-recv: listening on`), cmdTimeout); err != nil {
			return err
		}
		sent, err := hostfwdSend(t, l)
		if err != nil {
			return err
		}
		gout, err := j.Expect(statusRE, cmdTimeout)
		if err != nil {
			return err
		}
		got, err := result(l, gout, "tcp-recv")
		if err != nil {
			return err
		}
		want := iotool.StreamSHA256(iotool.DefaultSeed, hostfwdBytes)
		for _, r := range []iotool.Result{sent, got} {
			if field(r, "bytes") != fmt.Sprint(hostfwdBytes) || field(r, "sha256") != want {
				return failure(l, "hostfwd 127.0.0.1:%s -> guest:%s: L1 sent %s, guest got %s; want bytes=%d sha256=%s", fwdHostPort, fwdGuestPort, sent, got, hostfwdBytes, want)
			}
		}
		t.Logf("hostfwd: L1 %s; guest %s", sent, got)
		return powerOff(l, j)
	})
	t.Logf("L1 and guest, boot to poweroff: %.1fs", time.Since(start).Seconds())
}

// userOutDir and outLine are TestUserNetRunJob's -out: a directory in
// L1's /tmp, which the unprivileged user may create, and the line the
// job leaves there.
const (
	userOutDir = "/tmp/user-out"
	outLine    = "made-by-the-job"
)

// The same as a job: `vmm run -nic user -- ...` as uid 1000 downloads,
// resolves and serves the hostfwd, its status is the job's, and its
// -out comes back.
func TestUserNetRunJob(t *testing.T) {
	t.Parallel() // its own L1: see "Parallel tests" in e2e_test.go
	c := userNetConfig(t)
	start := time.Now()
	nested.Retry(t, c, func(l *nested.L1) error {
		if err := startL1Servers(t, l, 1); err != nil {
			return err
		}
		script := strings.Join([]string{
			fmt.Sprintf("vmm-iotool http-get -url http://%s:%s/job -timeout %v", usernet.GatewayAddr, httpPort, transferTimeout),
			"vmm-iotool resolve -name " + dnsName,
			fmt.Sprintf("vmm-iotool tcp-recv -port %s -timeout %v", fwdGuestPort, transferTimeout),
			"echo " + outLine + " > /out/result",
		}, " && ")
		ctx, cancel := context.WithTimeout(t.Context(), runTimeout+2*transferTimeout)
		defer cancel()
		// -out too: its helper (vmm-unpack out) runs as the same user,
		// confined, and writes into the directory vmm made as that user.
		flags := append(userNetFlags(), "-out", userOutDir)
		j, err := l.Run(ctx, asUser(runArgs(flags, "sh", "-c", script)), nested.StdinNull)
		if err != nil {
			return err
		}
		// Download and lookup first: a job that failed there has
		// exited, and Expect says so at once.
		out, err := j.Expect(regexp.MustCompile(`iotool: resolve [^\n]*\n`), runTimeout+transferTimeout)
		if err != nil {
			return failure(l, "vmm run -nic user as uid %s: %v", unprivUID, err)
		}
		r, err := checkDownload(l, out)
		if err != nil {
			return err
		}
		if err := checkResolve(l, out); err != nil {
			return err
		}
		// The job listens last. L1's sender must wait for it: the
		// hostfwd's host port accepts from the start, and a connection
		// made before the guest listens is closed once the guest
		// refuses it (as QEMU's slirp does), after the sender has
		// written what the socket buffers hold: "broken pipe" after
		// 512 KiB in an earlier run, as in usernet's
		// TestHostForwardBeforeListen.
		if _, err := j.Expect(regexp.MustCompile(`tcp-recv: listening on`), cmdTimeout); err != nil {
			return failure(l, "the job's hostfwd listener: %v", err)
		}
		sent, err := hostfwdSend(t, l)
		if err != nil {
			return err
		}
		out, err = j.Expect(regexp.MustCompile(`iotool: tcp-recv [^\n]*\n`), cmdTimeout)
		if err != nil {
			return failure(l, "the job's hostfwd listener: %v", err)
		}
		got, err := result(l, out, "tcp-recv")
		if err != nil {
			return err
		}
		code, err := j.Wait(exitTimeout)
		if err != nil {
			return err
		}
		if code != 0 {
			return failure(l, "vmm run -nic user as uid %s: status %d, want 0", unprivUID, code)
		}
		want := iotool.StreamSHA256(iotool.DefaultSeed, hostfwdBytes)
		if field(got, "sha256") != want || field(sent, "sha256") != want {
			return failure(l, "hostfwd in a job: L1 sent %s, guest got %s; want sha256=%s", sent, got, want)
		}
		out, code, err = l.Exec(ctx, "/bin/l1tool", "stat", userOutDir+"/result")
		if err != nil {
			return err
		}
		if want := fmt.Sprintf("%s/result: -rw-r--r-- %d\n", userOutDir, len(outLine)+1); code != 0 || out != want {
			return failure(l, "-out of a job run as uid %s: %q (status %d), want %q", unprivUID, out, code, want)
		}
		t.Logf("job: download %s; hostfwd %s; -out unpacked", r, got)
		return nil
	})
	t.Logf("L1 and job: %.1fs", time.Since(start).Seconds())
}
