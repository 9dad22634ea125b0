#!/bin/sh
# Builds vmm's minimal microVM kernel from Debian's linux-source-6.1 with
# the fragment tools/kernel/microvm.config merged onto `make tinyconfig`, and
# prints the bzImage's path on the last line of its output.
#
# The result is cached in $VMM_CACHE/kernels/microvm-HASH/bzImage (default
# cache ~/.cache/vmm), HASH covering the fragment, this script and the
# kernel source version, so a change to any of them builds a new kernel
# and an unchanged one is reused at once. Missing Debian packages (the
# source and the build tools) are installed with apt-get.
#
#   tools/kernel/build.sh            build (or reuse) and print the path
#   tools/kernel/build.sh --path     print the path a build would have, no build
#   tools/kernel/build.sh --cached   print the path of a kernel already built from
#                                    this fragment and script (any source version),
#                                    installing nothing; exit 1 if there is none
set -eu

here=$(cd "$(dirname "$0")" && pwd)
fragment=$here/microvm.config
cache=${VMM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmm}
kernels=$cache/kernels
jobs=$(nproc 2>/dev/null || echo 1)

log() { echo "kernel: $*" >&2; }

# inputs identifies the fragment and this script without the source
# version, which --cached cannot know without installing linux-source.
inputs=$(cat "$fragment" "$0" | sha256sum | cut -c1-64)
if [ "${1:-}" = "--cached" ]; then
	for d in "$kernels"/microvm-*; do
		if [ -f "$d/bzImage" ] && [ "$(cat "$d/inputs" 2>/dev/null)" = "$inputs" ]; then
			echo "$d/bzImage"
			exit 0
		fi
	done
	exit 1
fi

need=""
[ -f /usr/src/linux-source-6.1.tar.xz ] || need="$need linux-source-6.1"
for tool in make:make gcc:gcc bc:bc flex:flex bison:bison lz4:lz4 xz:xz-utils perl:perl; do
	command -v "${tool%%:*}" >/dev/null 2>&1 || need="$need ${tool#*:}"
done
# objtool and the host tools link libelf and libcrypto.
[ -f /usr/include/libelf.h ] || need="$need libelf-dev"
[ -f /usr/include/openssl/ssl.h ] || need="$need libssl-dev"
if [ -n "$need" ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	log "installing$need"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $need >&2
fi

srcver=$(dpkg-query -W -f '${Version}' linux-source-6.1)
hash=$( (cat "$fragment" "$0"; echo "$srcver") | sha256sum | cut -c1-12)
out=$kernels/microvm-$hash
if [ "${1:-}" = "--path" ]; then
	echo "$out/bzImage"
	exit 0
fi
if [ -f "$out/bzImage" ]; then
	echo "$out/bzImage"
	exit 0
fi

mkdir -p "$kernels"
exec 9>"$kernels/microvm.lock"
flock 9
if [ -f "$out/bzImage" ]; then # built by someone else while we waited
	echo "$out/bzImage"
	exit 0
fi

src=$kernels/src/linux-source-$srcver
if [ ! -f "$src/.unpacked" ]; then
	log "unpacking linux-source-6.1 $srcver"
	rm -rf "$src"
	mkdir -p "$src"
	tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$src" --strip-components=1
	touch "$src/.unpacked"
fi

build=$out.build
rm -rf "$build"
mkdir -p "$build"
mk() { nice -n 19 make -s -C "$src" O="$build" ARCH=x86_64 "$@" >&2; }
mk tinyconfig
"$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$fragment" >/dev/null
mk olddefconfig

# Kconfig silently drops options whose dependencies are missing: insist
# that every line of the fragment made it into the final configuration.
missing=""
while IFS= read -r line; do
	case $line in
	CONFIG_*=*) grep -qxF "$line" "$build/.config" || missing="$missing $line" ;;
	esac
done <"$fragment"
if [ -n "$missing" ]; then
	log "options that did not survive olddefconfig (missing dependencies?):$missing"
	exit 1
fi

log "building bzImage with $jobs jobs (linux-source $srcver, config $hash)"
mk -j"$jobs" bzImage
mkdir -p "$out.tmp"
cp "$build/arch/x86/boot/bzImage" "$out.tmp/bzImage"
cp "$build/.config" "$out.tmp/config"
echo "$inputs" >"$out.tmp/inputs"
rm -rf "$out"
mv "$out.tmp" "$out"
rm -rf "$build"
log "built $out/bzImage"
echo "$out/bzImage"
