#!/bin/sh
# Makes the debian:bookworm-slim base image for a private dockerd that can
# reach no registry: debootstrap --variant=minbase, slimmed like the real
# slim image, cached as a tarball so later runs only `docker import` it.
# Usage: base-image.sh CACHE_DIR   (DOCKER_HOST must point at the daemon)
set -eu
CACHE=${1:?usage: base-image.sh CACHE_DIR}
DOCKER=${DOCKER:-/usr/bin/docker}
TARBALL="$CACHE/bookworm-slim.tar"

if "$DOCKER" image inspect debian:bookworm-slim >/dev/null 2>&1; then
    exit 0
fi
mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    root="$CACHE/rootfs.$$"
    rm -rf "$root"
    echo "base-image: debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$CACHE/debootstrap.log" 2>&1 || {
        tail -n 20 "$CACHE/debootstrap.log" >&2
        rm -rf "$root"
        exit 1
    }
    # As the official slim image: no docs, man pages, locales or apt lists.
    rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
           "$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
           "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
    printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" >"$root/etc/apt/sources.list.d/debian.sources"
    : >"$root/etc/apt/sources.list"
    # The official image's apt settings: no package caches left in layers.
    printf '%s\n' 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";' >"$root/etc/apt/apt.conf.d/docker-clean"
    tar -C "$root" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$root"
fi
"$DOCKER" import "$TARBALL" debian:bookworm-slim >/dev/null
echo "base-image: debian:bookworm-slim imported from $TARBALL"
