package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// DevicePath is where the kernel exposes KVM.
const DevicePath = "/dev/kvm"

// System is an open /dev/kvm. It keeps the *os.File (not just the fd) so
// the file's finalizer cannot close the descriptor under us.
type System struct {
	f *os.File
}

// Open opens /dev/kvm and checks the API version.
func Open() (*System, error) {
	f, err := os.OpenFile(DevicePath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	s := &System{f: f}
	v, err := ioctlVal(s.fd(), kvmGetAPIVersion, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("KVM_GET_API_VERSION: %w", err)
	}
	if v != APIVersion {
		f.Close()
		return nil, fmt.Errorf("KVM_GET_API_VERSION: kernel reports %d, vmm speaks %d", v, APIVersion)
	}
	return s, nil
}

func (s *System) fd() uintptr { return s.f.Fd() }

// Close closes /dev/kvm. VMs created from it stay valid.
func (s *System) Close() error { return s.f.Close() }

// CheckExtension returns KVM_CHECK_EXTENSION's answer: 0 for absent, else
// a capability-specific value (e.g. a vCPU limit).
func (s *System) CheckExtension(c Cap) (int, error) {
	r, err := ioctlVal(s.fd(), kvmCheckExtension, uintptr(c))
	if err != nil {
		return 0, fmt.Errorf("KVM_CHECK_EXTENSION %d: %w", c, err)
	}
	return int(r), nil
}

// VCPUMmapSize is the size of each vCPU's shared kvm_run area.
func (s *System) VCPUMmapSize() (int, error) {
	r, err := ioctlVal(s.fd(), kvmGetVCPUMmapSize, 0)
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	return int(r), nil
}

// maxCPUIDEntries bounds the E2BIG retry loop; the kernel's own limit
// (KVM_MAX_CPUID_ENTRIES) is 256.
const maxCPUIDEntries = 4096

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID. The kernel does not say
// how many entries it has, so start small and double on E2BIG.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	for n := 64; n <= maxCPUIDEntries; n *= 2 {
		buf := make([]byte, sizeofCPUID2Header+n*sizeofCPUIDEntry)
		binary.LittleEndian.PutUint32(buf, uint32(n))
		_, err := ioctlBuf(s.fd(), kvmGetSupportedCPUID, buf)
		if errors.Is(err, unix.E2BIG) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
		}
		return decodeCPUID2(buf)
	}
	return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: more than %d entries", maxCPUIDEntries)
}

// CreateVM makes a new, empty VM.
func (s *System) CreateVM() (*VM, error) {
	r, err := ioctlVal(s.fd(), kvmCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	mmapSize, err := s.VCPUMmapSize()
	if err != nil {
		unix.Close(int(r))
		return nil, err
	}
	return &VM{f: os.NewFile(r, "kvm-vm"), mmapSize: mmapSize}, nil
}

// encodeCPUID2 lays entries out as struct kvm_cpuid2.
func encodeCPUID2(entries []CPUIDEntry) []byte {
	buf := make([]byte, sizeofCPUID2Header+len(entries)*sizeofCPUIDEntry)
	binary.LittleEndian.PutUint32(buf, uint32(len(entries)))
	for i, e := range entries {
		b := buf[sizeofCPUID2Header+i*sizeofCPUIDEntry:]
		for j, v := range []uint32{e.Function, e.Index, e.Flags, e.EAX, e.EBX, e.ECX, e.EDX} {
			binary.LittleEndian.PutUint32(b[4*j:], v)
		}
	}
	return buf
}

// decodeCPUID2 reads struct kvm_cpuid2, trusting nent only as far as the
// buffer goes.
func decodeCPUID2(buf []byte) ([]CPUIDEntry, error) {
	if len(buf) < sizeofCPUID2Header {
		return nil, fmt.Errorf("kvm_cpuid2: %d bytes, need %d", len(buf), sizeofCPUID2Header)
	}
	n := int(binary.LittleEndian.Uint32(buf))
	if n > (len(buf)-sizeofCPUID2Header)/sizeofCPUIDEntry {
		return nil, fmt.Errorf("kvm_cpuid2: nent %d beyond buffer", n)
	}
	out := make([]CPUIDEntry, n)
	for i := range out {
		b := buf[sizeofCPUID2Header+i*sizeofCPUIDEntry:]
		le := binary.LittleEndian
		out[i] = CPUIDEntry{
			Function: le.Uint32(b[0:]), Index: le.Uint32(b[4:]), Flags: le.Uint32(b[8:]),
			EAX: le.Uint32(b[12:]), EBX: le.Uint32(b[16:]), ECX: le.Uint32(b[20:]), EDX: le.Uint32(b[24:]),
		}
	}
	return out, nil
}

// encodeMSRs lays entries out as struct kvm_msrs.
func encodeMSRs(entries []MSREntry) []byte {
	buf := make([]byte, sizeofMSRsHeader+len(entries)*sizeofMSREntry)
	binary.LittleEndian.PutUint32(buf, uint32(len(entries)))
	for i, e := range entries {
		b := buf[sizeofMSRsHeader+i*sizeofMSREntry:]
		binary.LittleEndian.PutUint32(b, e.Index)
		binary.LittleEndian.PutUint64(b[8:], e.Data)
	}
	return buf
}
