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

// TCGETS reads a terminal's mode, TCSETS sets it at once, TIOCGPGRP reads
// its foreground process group (include/uapi/asm-generic/ioctls.h).
// TCGETS writes the kernel's struct termios: four tcflag_t, c_line and
// NCCS (19) c_cc, 36 bytes (include/uapi/asm-generic/termbits.h), the
// first 36 of x/sys's Termios.
#define TCGETS			0x5401
#define TCSETS			0x5402
#define TIOCGPGRP		0x540F

// Scratch for the handler's ioctls, below SP: the handler calls nothing
// and every signal is blocked while it runs, so nothing else uses that
// part of its (signal) stack.
#define fgAt			-8
#define modeAt			-64

// sigsys is SIGSYS's handler once the sandbox is on. The kernel calls it
// with the System V ABI (SA_SIGINFO): DI the signal, SI the siginfo, DX
// the ucontext; Go never calls it. It runs no Go code, takes no lock
// (the denied call may have been made with a runtime lock held) and
// writes no memory of the program's: it gives the terminal in
// endTerminal its mode back, picks the message for the call from
// denyMessages, writes it to stderr and exits the whole process. The
// mode goes back where vmm is the terminal's foreground (TIOCGPGRP), or
// the terminal is not its controlling one (the call fails), or the
// terminal still has vmm's raw mode (TCGETS): in the background, a
// shell that set a mode of its own has the terminal, and with every
// signal blocked a TCSETS would not stop the process (SIGTTOU) but undo
// the shell's mode. The filter allows the three requests. In siginfo,
// si_code is at offset 8 and the _sigsys fields _syscall and _arch at 24
// and 28 (the union starts at 16 on 64-bit). SYSCALL keeps every
// register but AX, CX and R11, so R12 keeps the siginfo across the
// ioctls.
TEXT ·sigsys(SB),NOSPLIT|NOFRAME,$0-0
	MOVQ	·endTerminal+sigsysTerminal_fd(SB), DI
	CMPQ	DI, $0
	JLT	pick
	MOVQ	SI, R12
	MOVQ	$TIOCGPGRP, SI
	LEAQ	fgAt(SP), DX
	MOVL	$SYS_ioctl, AX
	SYSCALL
	TESTQ	AX, AX
	JNE	setmode	// not the controlling terminal: no shell to leave it to
	MOVL	fgAt(SP), AX
	CMPL	AX, ·endTerminal+sigsysTerminal_pgrp(SB)
	JEQ	setmode	// the foreground
	MOVQ	·endTerminal+sigsysTerminal_fd(SB), DI
	MOVQ	$TCGETS, SI
	LEAQ	modeAt(SP), DX
	MOVL	$SYS_ioctl, AX
	SYSCALL
	TESTQ	AX, AX
	JNE	restored
	LEAQ	·endTerminal+sigsysTerminal_raw(SB), BX
	MOVQ	modeAt(SP), AX
	CMPQ	AX, 0(BX)
	JNE	restored	// the shell's mode
	MOVQ	(modeAt+8)(SP), AX
	CMPQ	AX, 8(BX)
	JNE	restored
	MOVQ	(modeAt+16)(SP), AX
	CMPQ	AX, 16(BX)
	JNE	restored
	MOVQ	(modeAt+24)(SP), AX
	CMPQ	AX, 24(BX)
	JNE	restored
	MOVL	(modeAt+32)(SP), AX
	CMPL	AX, 32(BX)
	JNE	restored
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
