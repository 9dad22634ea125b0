// Package rawsys makes the few system calls a device answers a guest's
// request with (opening, stating, reading and writing regular files;
// reading and writing eventfds, TAPs and the user network's socket,
// through File) without telling Go's scheduler.
//
// It is a package of its own because it is a bargain with the Go
// runtime, not part of any device: which calls may skip the scheduler,
// and why that pays, is the same question for every device.
//
// Why. A Go system call (syscall.Syscall, and so everything in os and
// golang.org/x/sys/unix) enters the runtime's syscall state, and the
// first one after all of the program's Ps were idle wakes the runtime's
// monitor thread (sysmon) from its deep sleep (runtime/proc.go,
// entersyscallWakeSysmon in Go 1.26). Once awake, sysmon polls every 20
// µs until it finds all Ps idle again, and takes the P from a call that
// outlasts one of its polls, which starts another thread for it. A
// device answering one request per guest kick, with the guest idle in
// between, pays that on every request: measured with a model on the
// host (one thread pinned to one CPU waiting for an eventfd kick through
// the netpoller, doing four 256 KiB reads of /dev/zero and signalling
// another eventfd back), 4.4 context switches per request with os and
// unix calls, 2.7 of them the monitor's, and 2.0 with the same calls
// made here. Nested (make bench's small files on a share), where every
// switch is the emulated CPU's work, vmm's threads other than the vCPU's
// took 28 switches per file, QEMU's virtiofsd 12; with the calls made
// here, about 10.
//
// The price. A raw call keeps its P while it runs: the goroutines queued
// behind it wait, and so does the garbage collector's stop-the-world,
// which needs every P. A raw call that never returned would stop the
// whole program. So only calls that end in bounded time are raw: file
// calls on a local file system on local devices (Calls, decided per
// share and per disk image by LocalFD: a network or FUSE file system can
// leave a call waiting for its server for ever, and so can a disk on
// NBD, RBD, iSCSI or multipath), reads and writes of non-blocking
// descriptors (eventfds, TAPs, sockets: File waits for them in the
// netpoller, never in a call), and transfers no larger than MaxIO.
// fsync, fdatasync and fallocate go through the scheduler as before.
// Bounded is not short: a close may do an unlinked file's final
// release, a write to a file the guest opened O_SYNC flushes it, an
// open with O_TRUNC truncates, and a write may wait in the kernel's
// dirty-page throttling; the program waits that long. What LocalFD
// cannot see is not covered: a file system mounted inside a share after
// vmm started is served with raw calls.
package rawsys
