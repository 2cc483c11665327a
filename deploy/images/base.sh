#!/usr/bin/env bash
# Builds (once) and caches a Debian root filesystem for the images: debootstrap --variant=minbase plus the given
# packages, stripped of what a read-only container never reads (apt lists and caches, docs, man pages, locales),
# with the non-root user 10001 the images run as. Runs on the host: no container, no RUN step.
#
# Usage: deploy/images/base.sh <suite> [package...]   prints the path of the cached rootfs tarball
#
# The cache key hashes this script, the suite, the mirror and the sorted package set, so a changed recipe or
# package set builds a new base and an unchanged one is reused (a warm image build never runs debootstrap).
# Beside each <key>.tar: <key>.dpkg (the pinned package list, dpkg-query -W of the rootfs).
set -euo pipefail

suite=$1; shift
pkgs=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
mirror=${LLMHUB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache="${LLMHUB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmhub}/images/base"
key="$suite-$( { cat "${BASH_SOURCE[0]}"; echo "$suite|$mirror|$pkgs"; } | sha256sum | cut -c1-16)"
out="$cache/$key.tar"

[ -f "$out.complete" ] && { echo "$out"; exit 0; }
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # a second builder waits, then finds the cache
[ -f "$out.complete" ] && { echo "$out"; exit 0; }

[ "$(id -u)" = 0 ] || { echo "base.sh: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || {
  echo "base.sh: installing debootstrap (apt-get)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

root=$(mktemp -d "$cache/.root.XXXXXX")
trap 'umount -R "$root/proc" "$root/sys" 2>/dev/null || true; rm -rf "$root"' EXIT
start=$(date +%s)
echo "base.sh: debootstrap $suite (minbase${pkgs:+ + $pkgs}) from $mirror" >&2
debootstrap --variant=minbase ${pkgs:+--include="$pkgs"} "$suite" "$root" "$mirror" >"$root.log" 2>&1 ||
  { tail -30 "$root.log" >&2; exit 1; }
rm -f "$root.log"

# Nothing here is read at run time; the package database (var/lib/dpkg) stays, for the package list.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old "$root"/var/log/* \
  "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian "$root"/usr/share/locale/* \
  "$root"/tmp/* "$root"/root/.??*
# Of the docs, a distributed image keeps the licences (usr/share/doc/*/copyright).
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete

# The images' user: uid/gid 10001, home /tmp (the one writable place of a read-only root filesystem).
echo 'llmhub:x:10001:10001:LLMHub:/tmp:/usr/sbin/nologin' >>"$root/etc/passwd"
echo 'llmhub:x:10001:' >>"$root/etc/group"
echo 'llmhub:*:20000:0:99999:7:::' >>"$root/etc/shadow"

dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Package}=${Version} ${Architecture}\n' >"$cache/$key.dpkg"
tar -C "$root" --numeric-owner -cf "$out.tmp" .
mv "$out.tmp" "$out" && touch "$out.complete"
echo "base.sh: $key built in $(($(date +%s) - start)) s ($(du -sh "$root" | cut -f1) unpacked)" >&2
echo "$out"
