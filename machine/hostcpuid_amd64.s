#include "textflag.h"

// func hostCPUID(leaf uint32) (eax, ebx, ecx, edx uint32)
//
// ECX is zeroed: no leaf read through this is indexed by it.
TEXT ·hostCPUID(SB),NOSPLIT,$0-24
	MOVL	leaf+0(FP), AX
	XORL	CX, CX
	CPUID
	MOVL	AX, eax+8(FP)
	MOVL	BX, ebx+12(FP)
	MOVL	CX, ecx+16(FP)
	MOVL	DX, edx+20(FP)
	RET
