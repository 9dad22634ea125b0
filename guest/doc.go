// Package guest builds the default vmm guest: a Debian 12 kernel (fetched
// with apt and cached) and a u-root initramfs whose init, vmm-init, loads
// the virtio drivers and then prints [ReadyMarker] on the console.
//
// The pieces are separate so that tests can reuse a cached kernel with a
// freshly built initramfs: [FetchKernel] gives a [KernelFiles], and
// [BuildInitramfs] turns that (or nothing) into a cpio archive. The command
// tools/cmd/mkguest wires both together with a stamp so that repeated builds are
// cheap.
package guest

// ReadyMarker is the exact line vmm-init prints on the console once the
// devices' drivers are loaded and just before u-root's shell starts. Tests wait for
// it instead of guessing how long a boot takes.
const ReadyMarker = "vmm-guest: ready"
