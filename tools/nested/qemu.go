package nested

import (
	"fmt"
	"strings"

	"github.com/vmm-dev/vmm/tools/nested/proto"
)

// Child file descriptors of QEMU's two socket-backed serial ports. They are
// one end of socketpairs created by the host, so nothing is on the file
// system, nothing can connect in between, and path length limits of unix
// sockets do not apply.
const (
	qemuConsoleFD = 3 // ExtraFiles[0]
	qemuControlFD = 4 // ExtraFiles[1]
)

// qemuSpec is what qemuArgs needs beyond the Config.
type qemuSpec struct {
	Initrd    string
	KernelLog string // file receiving L1's ttyS2
}

// qemuOptValue escapes a value for QEMU's "key=value,..." option syntax.
func qemuOptValue(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// kernelCmdline is L1's command line. The kernel logs to ttyS2 so that
// ttyS0 carries only the job's bytes; panic=-1 with -no-reboot turns a
// crashed L1 into an exited QEMU instead of a hang. tp_printk puts the
// tracepoints the agent enables (KVM's shutdown intercepts, see
// L1Signature) in that log too. The agent reads its job policy from
// proto.JobSchedParam.
func kernelCmdline(c Config) string {
	parts := []string{"console=ttyS2", "rdinit=/init", "panic=-1", "mitigations=off", "nokaslr", "tp_printk"}
	if c.JobSched != "" {
		parts = append(parts, proto.JobSchedParam+"="+c.JobSched)
	}
	if c.Append != "" {
		parts = append(parts, c.Append)
	}
	return strings.Join(parts, " ")
}

// qemuArgs builds QEMU's argument list (without argv[0]).
//
// Serial ports, in guest order: ttyS0 job console, ttyS1 control channel,
// ttyS2 L1 kernel log. TCG with an emulated AMD-V CPU is the whole point:
// it gives L1 a /dev/kvm on hosts that have none.
func qemuArgs(c Config, s qemuSpec) []string {
	args := []string{
		"-accel", "tcg",
		"-cpu", "EPYC,+svm",
		"-smp", fmt.Sprint(c.CPUs),
		"-m", fmt.Sprint(c.MemoryMiB),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-no-reboot",
		"-kernel", c.Kernel,
		"-initrd", s.Initrd,
		"-append", kernelCmdline(c),
		"-chardev", fmt.Sprintf("socket,id=con,fd=%d", qemuConsoleFD),
		"-serial", "chardev:con",
		"-chardev", fmt.Sprintf("socket,id=ctl,fd=%d", qemuControlFD),
		"-serial", "chardev:ctl",
		"-chardev", "file,id=klog,path=" + qemuOptValue(s.KernelLog),
		"-serial", "chardev:klog",
		// The watchdog's window on a freeze (see monitor.go).
		"-chardev", fmt.Sprintf("socket,id=mon,fd=%d", qemuMonitorFD),
		"-mon", "chardev=mon,mode=readline",
	}
	// Disks in slot order, which is the order L1 names them in. Each is
	// a plain raw file behind QEMU's default writeback cache: what L1
	// writes lands in the host's page cache, where the host reads it
	// back once L1 is gone.
	for i, d := range c.Disks {
		ro := ""
		if d.ReadOnly {
			ro = ",readonly=on"
		}
		args = append(args,
			"-drive", fmt.Sprintf("file=%s,if=none,id=disk%d,format=raw,cache=writeback%s", qemuOptValue(d.Path), i, ro),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=disk%d,serial=nested-disk%d", i, i))
	}
	return args
}
