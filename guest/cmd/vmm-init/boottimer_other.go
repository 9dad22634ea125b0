//go:build !amd64

package main

import "vmm/boottimer"

// stampBoot does nothing off x86: the boot timer is an I/O port.
func stampBoot(boottimer.Phase) {}
