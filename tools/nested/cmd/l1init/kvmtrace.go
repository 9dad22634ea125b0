package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// L1's kernel prints every shutdown intercept of its KVM on its console:
// the host's retry judge (package nested, L1Signature) tells the
// emulator's guest crashes from vmm's by what the intercept shows, and
// KVM itself logs nothing when a guest shuts down. The host boots L1
// with tp_printk, which sends enabled tracepoints to printk; the filter
// keeps the kvm_exit tracepoint to shutdowns, so it prints nothing else.
const (
	tracefsDir = "/sys/kernel/tracing"
	// shutdownFilter: SVM_EXIT_SHUTDOWN is 0x07f
	// (arch/x86/include/uapi/asm/svm.h); L1's CPU is AMD's.
	shutdownFilter = "exit_reason == 127"
)

// traceShutdowns enables the filtered kvm_exit tracepoint. It must run
// after the kvm module has loaded: the event appears with it.
func traceShutdowns() error {
	if err := os.MkdirAll(tracefsDir, 0o755); err != nil {
		return fmt.Errorf("trace shutdowns: %w", err)
	}
	if err := unix.Mount("tracefs", tracefsDir, "tracefs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("trace shutdowns: mount tracefs: %w", err)
	}
	event := tracefsDir + "/events/kvm/kvm_exit/"
	// The filter first: enabled without it, the event would print
	// every exit.
	if err := os.WriteFile(event+"filter", []byte(shutdownFilter), 0); err != nil {
		return fmt.Errorf("trace shutdowns: %w", err)
	}
	if err := os.WriteFile(event+"enable", []byte("1"), 0); err != nil {
		return fmt.Errorf("trace shutdowns: %w", err)
	}
	return nil
}
