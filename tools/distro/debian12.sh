#!/bin/sh
# Builds a Debian 12 (bookworm) system the way a user would install one:
# debootstrap's minbase with systemd as init, Debian's cloud kernel
# installed through apt (so its initrd is initramfs-tools' own, with
# udev), and a unit that prints a marker on the console once
# multi-user.target is reached and then powers the machine off, so each
# boot ends by itself.
#
# Usage: debian12.sh OUTDIR
# Writes OUTDIR/vmlinuz, OUTDIR/initrd.img and OUTDIR/rootfs.ext4 (ext4,
# root on the whole device: boot with root=/dev/vda). Needs root,
# debootstrap, mkfs.ext4 and Debian's package mirror; DEBIAN_MIRROR
# overrides debootstrap's default mirror. The package tools/distro runs it
# and caches the result by this file's hash: any change here is a new image.
set -eu
out=$1
mkdir -p "$out"
work=$(mktemp -d "$out/build.XXXXXX")
root=$work/root
trap 'umount "$root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT

# kmod for modprobe in the initrd and udev; e2fsprogs for the fsck that
# systemd runs on the root.
debootstrap --variant=minbase \
	--include=systemd-sysv,udev,kmod,e2fsprogs,initramfs-tools,linux-image-cloud-amd64 \
	bookworm "$root" ${DEBIAN_MIRROR:-}

echo vmm-debian12 >"$root/etc/hostname"
printf '/dev/vda / ext4 defaults 0 1\n' >"$root/etc/fstab"
# No password: log in as root on the serial console.
chroot "$root" passwd -d root >/dev/null
# A fixed machine ID: every boot of the image is the same machine, and
# systemd skips its first-boot setup.
printf '766d6d2d64656269616e31322d303031\n' >"$root/etc/machine-id"

cat >"$root/etc/systemd/system/vmm-distro-done.service" <<'UNIT'
[Unit]
Description=Report multi-user.target to the console and power off
After=multi-user.target

[Service]
Type=oneshot
StandardOutput=tty
TTYPath=/dev/console
ExecStart=/bin/echo vmm-distro: multi-user.target reached
ExecStart=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable vmm-distro-done.service
chroot "$root" systemctl set-default multi-user.target

# The package's hooks normally make the initrd; make sure one exists
# whatever order debootstrap configured the packages in.
mount -t proc proc "$root/proc"
kver=$(ls "$root/lib/modules" | head -n1)
[ -n "$kver" ] || { echo "debian12.sh: no kernel installed" >&2; exit 1; }
[ -f "$root/boot/initrd.img-$kver" ] || chroot "$root" update-initramfs -c -k "$kver"
umount "$root/proc"
chroot "$root" apt-get clean

cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/initrd.img"
rm -f "$work/rootfs.ext4"
mkfs.ext4 -q -L vmm-debian12 -d "$root" "$work/rootfs.ext4" 1G
mv "$work/vmlinuz" "$work/initrd.img" "$work/rootfs.ext4" "$out/"
