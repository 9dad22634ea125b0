//go:build linux && amd64

package main

import "fmt"

// Implemented in io_amd64.s.
func outb(port uint16, v uint8)
func outw(port uint16, v uint16)
func outl(port uint16, v uint32)
func inb(port uint16) uint8
func inw(port uint16) uint16
func inl(port uint16) uint32

// Unchecked exact-width accesses to b[off:]; use write and read.
func store8(b []byte, off uintptr, v uint8)
func store16(b []byte, off uintptr, v uint16)
func store32(b []byte, off uintptr, v uint32)
func store64(b []byte, off uintptr, v uint64)
func load8(b []byte, off uintptr) uint8
func load16(b []byte, off uintptr) uint16
func load32(b []byte, off uintptr) uint32
func load64(b []byte, off uintptr) uint64

// out writes the low width bytes of v to port with one instruction.
func out(port uint16, width int, v uint64) {
	switch width {
	case 1:
		outb(port, uint8(v))
	case 2:
		outw(port, uint16(v))
	case 4:
		outl(port, uint32(v))
	default:
		panic(fmt.Sprintf("out: width %d", width)) // a bug in this program
	}
}

// in reads width bytes from port with one instruction.
func in(port uint16, width int) uint64 {
	switch width {
	case 1:
		return uint64(inb(port))
	case 2:
		return uint64(inw(port))
	case 4:
		return uint64(inl(port))
	}
	panic(fmt.Sprintf("in: width %d", width)) // a bug in this program
}

// write stores the low width bytes of v at b[off:] with one instruction
// of that width, so an MMIO window sees exactly that access.
func write(b []byte, off uintptr, width int, v uint64) {
	if off > uintptr(len(b)) || uintptr(width) > uintptr(len(b))-off {
		panic(fmt.Sprintf("write: %d bytes at %#x of %#x", width, off, len(b))) // a bug in this program
	}
	switch width {
	case 1:
		store8(b, off, uint8(v))
	case 2:
		store16(b, off, uint16(v))
	case 4:
		store32(b, off, uint32(v))
	case 8:
		store64(b, off, v)
	default:
		panic(fmt.Sprintf("write: width %d", width))
	}
}

// read loads width bytes at b[off:] with one instruction of that width.
func read(b []byte, off uintptr, width int) uint64 {
	if off > uintptr(len(b)) || uintptr(width) > uintptr(len(b))-off {
		panic(fmt.Sprintf("read: %d bytes at %#x of %#x", width, off, len(b))) // a bug in this program
	}
	switch width {
	case 1:
		return uint64(load8(b, off))
	case 2:
		return uint64(load16(b, off))
	case 4:
		return uint64(load32(b, off))
	case 8:
		return load64(b, off)
	}
	panic(fmt.Sprintf("read: width %d", width))
}
