//go:build vmm_urootdeps

// Package urootdeps exists only for `go mod tidy`. The guest's u-root
// commands are compiled from the module cache by import path, so no package
// of vmm imports them and tidy would drop the requirements they need
// (golang.org/x/term for gosh, github.com/rck/unit for dd, ...). Tidy looks at
// files of every build tag, so this never-built file keeps them.
//
// It lists the non-standard imports of guest.UrootCommands() built with the
// goshsmall tag; TestURootDepsAnchored in package guest checks that it is
// complete.
package urootdeps

import (
	_ "github.com/dustin/go-humanize"
	_ "github.com/rck/unit"
	_ "github.com/u-root/u-root/pkg/cmdline"
	_ "github.com/u-root/u-root/pkg/core/cat"
	_ "github.com/u-root/u-root/pkg/core/chmod"
	_ "github.com/u-root/u-root/pkg/core/cp"
	_ "github.com/u-root/u-root/pkg/core/find"
	_ "github.com/u-root/u-root/pkg/core/ls"
	_ "github.com/u-root/u-root/pkg/core/mkdir"
	_ "github.com/u-root/u-root/pkg/core/mv"
	_ "github.com/u-root/u-root/pkg/core/rm"
	_ "github.com/u-root/u-root/pkg/core/touch"
	_ "github.com/u-root/u-root/pkg/core/xargs"
	_ "github.com/u-root/u-root/pkg/kmodule"
	_ "github.com/u-root/u-root/pkg/libinit"
	_ "github.com/u-root/u-root/pkg/mount"
	_ "github.com/u-root/u-root/pkg/mount/loop"
	_ "github.com/u-root/u-root/pkg/pci"
	_ "github.com/u-root/u-root/pkg/progress"
	_ "github.com/u-root/u-root/pkg/uflag"
	_ "github.com/u-root/u-root/pkg/ulog"
	_ "github.com/u-root/u-root/pkg/uroot/unixflag"
	_ "github.com/u-root/u-root/pkg/uroot/util"
	_ "github.com/vishvananda/netlink"
	_ "github.com/vishvananda/netlink/nl"
	_ "github.com/vishvananda/netns"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
	_ "mvdan.cc/sh/v3/interp"
	_ "mvdan.cc/sh/v3/syntax"
)
