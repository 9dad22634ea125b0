#include "textflag.h"

// Port I/O (needs ioperm on the calling thread) and MMIO accesses of an
// exact width: the width of each access is what the attack is about, so
// it is spelled out here rather than left to the compiler.

// func outb(port uint16, v uint8)
TEXT ·outb(SB), NOSPLIT, $0-3
	MOVW port+0(FP), DX
	MOVB v+2(FP), AX
	OUTB
	RET

// func outw(port uint16, v uint16)
TEXT ·outw(SB), NOSPLIT, $0-4
	MOVW port+0(FP), DX
	MOVW v+2(FP), AX
	OUTW
	RET

// func outl(port uint16, v uint32)
TEXT ·outl(SB), NOSPLIT, $0-8
	MOVW port+0(FP), DX
	MOVL v+4(FP), AX
	OUTL
	RET

// func inb(port uint16) uint8
TEXT ·inb(SB), NOSPLIT, $0-9
	MOVW port+0(FP), DX
	INB
	MOVB AX, ret+8(FP)
	RET

// func inw(port uint16) uint16
TEXT ·inw(SB), NOSPLIT, $0-10
	MOVW port+0(FP), DX
	INW
	MOVW AX, ret+8(FP)
	RET

// func inl(port uint16) uint32
TEXT ·inl(SB), NOSPLIT, $0-12
	MOVW port+0(FP), DX
	INL
	MOVL AX, ret+8(FP)
	RET

// func store8(b []byte, off uintptr, v uint8)
TEXT ·store8(SB), NOSPLIT, $0-33
	MOVQ b_base+0(FP), AX
	ADDQ off+24(FP), AX
	MOVB v+32(FP), BX
	MOVB BX, (AX)
	RET

// func store16(b []byte, off uintptr, v uint16)
TEXT ·store16(SB), NOSPLIT, $0-34
	MOVQ b_base+0(FP), AX
	ADDQ off+24(FP), AX
	MOVW v+32(FP), BX
	MOVW BX, (AX)
	RET

// func store32(b []byte, off uintptr, v uint32)
TEXT ·store32(SB), NOSPLIT, $0-36
	MOVQ b_base+0(FP), AX
	ADDQ off+24(FP), AX
	MOVL v+32(FP), BX
	MOVL BX, (AX)
	RET

// func store64(b []byte, off uintptr, v uint64)
TEXT ·store64(SB), NOSPLIT, $0-40
	MOVQ b_base+0(FP), AX
	ADDQ off+24(FP), AX
	MOVQ v+32(FP), BX
	MOVQ BX, (AX)
	RET

// func load8(b []byte, off uintptr) uint8
TEXT ·load8(SB), NOSPLIT, $0-33
	MOVQ b_base+0(FP), AX
	ADDQ off+24(FP), AX
	MOVB (AX), BX
	MOVB BX, ret+32(FP)
	RET

// func load16(b []byte, off uintptr) uint16
TEXT ·load16(SB), NOSPLIT, $0-34
	MOVQ b_base+0(FP), AX
	ADDQ off+24(FP), AX
	MOVW (AX), BX
	MOVW BX, ret+32(FP)
	RET

// func load32(b []byte, off uintptr) uint32
TEXT ·load32(SB), NOSPLIT, $0-36
	MOVQ b_base+0(FP), AX
	ADDQ off+24(FP), AX
	MOVL (AX), BX
	MOVL BX, ret+32(FP)
	RET

// func load64(b []byte, off uintptr) uint64
TEXT ·load64(SB), NOSPLIT, $0-40
	MOVQ b_base+0(FP), AX
	ADDQ off+24(FP), AX
	MOVQ (AX), BX
	MOVQ BX, ret+32(FP)
	RET
