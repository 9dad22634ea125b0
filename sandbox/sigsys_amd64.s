//go:build linux

#include "go_asm.h"
#include "textflag.h"

// System call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
#define SYS_write		1
#define SYS_ioctl		16
#define SYS_rt_sigreturn	15
#define SYS_exit_group		231

// AUDIT_ARCH_X86_64 (include/uapi/linux/audit.h) and SYS_SECCOMP, the
// si_code of a seccomp SIGSYS (include/uapi/asm-generic/siginfo.h).
#define AUDIT_ARCH_X86_64	0xc000003e
#define SYS_SECCOMP		1

// TCSETS sets a terminal's mode at once, TIOCGPGRP reads its foreground
// process group (include/uapi/asm-generic/ioctls.h).
#define TCSETS			0x5402
#define TIOCGPGRP		0x540F

// sigsys is SIGSYS's handler once the sandbox is on. The kernel calls it
// with the System V ABI (SA_SIGINFO): DI the signal, SI the siginfo, DX
// the ucontext; Go never calls it. It runs no Go code and takes no lock
// (the denied call may have been made with a runtime lock held): it
// gives the terminal in endTerminal its mode back if the process is its
// foreground (TIOCGPGRP and TCSETS, which the filter allows; with every
// signal blocked, a TCSETS in the background would not stop the process
// but change the mode the shell set), picks the message for the call
// from denyMessages,
// writes it to stderr and exits the whole process. In siginfo, si_code
// is at offset 8 and the _sigsys fields _syscall and _arch at 24 and 28
// (the union starts at 16 on 64-bit). SYSCALL keeps every register but
// AX, CX and R11, so R12 keeps the siginfo across the ioctl.
TEXT ·sigsys(SB),NOSPLIT|NOFRAME,$0-0
	MOVQ	·endTerminal+sigsysTerminal_fd(SB), DI
	CMPQ	DI, $0
	JLT	pick
	MOVQ	SI, R12
	MOVQ	$TIOCGPGRP, SI
	LEAQ	·endTerminal+sigsysTerminal_fg(SB), DX
	MOVL	$SYS_ioctl, AX
	SYSCALL
	TESTQ	AX, AX
	JNE	setmode	// not the controlling terminal: no shell to leave it to
	MOVL	·endTerminal+sigsysTerminal_fg(SB), AX
	CMPL	AX, ·endTerminal+sigsysTerminal_pgrp(SB)
	JNE	restored	// in the background
setmode:
	MOVQ	·endTerminal+sigsysTerminal_fd(SB), DI
	MOVQ	$TCSETS, SI
	LEAQ	·endTerminal+sigsysTerminal_mode(SB), DX
	MOVL	$SYS_ioctl, AX
	SYSCALL
restored:
	MOVQ	R12, SI
pick:
	MOVQ	$const_denyNotSeccomp, CX
	CMPL	8(SI), $SYS_SECCOMP
	JNE	write
	MOVQ	$const_denyOtherArch, CX
	CMPL	28(SI), $AUDIT_ARCH_X86_64
	JNE	write
	MOVL	24(SI), AX	// zero-extended: a negative number is above the table
	MOVQ	$const_denyBeyond, CX
	CMPQ	AX, CX
	JAE	write
	MOVQ	AX, CX
write:
	SHLQ	$4, CX	// a string header is 16 bytes: data, then length
	LEAQ	·denyMessages(SB), SI
	ADDQ	CX, SI
	MOVQ	8(SI), DX
	MOVQ	0(SI), SI
	MOVQ	$2, DI
	MOVL	$SYS_write, AX
	SYSCALL
	MOVQ	$const_exitDenied, DI
	MOVL	$SYS_exit_group, AX
	SYSCALL
	INT	$3	// not reached

// sigreturn is the handler's sa_restorer, which x86-64 requires. sigsys
// never returns, so it is never used.
TEXT ·sigreturn(SB),NOSPLIT|NOFRAME,$0-0
	MOVL	$SYS_rt_sigreturn, AX
	SYSCALL
	INT	$3

// func handlerAddrs() (handler, restorer uintptr)
TEXT ·handlerAddrs(SB),NOSPLIT,$0-16
	LEAQ	·sigsys(SB), AX
	MOVQ	AX, handler+0(FP)
	LEAQ	·sigreturn(SB), AX
	MOVQ	AX, restorer+8(FP)
	RET
