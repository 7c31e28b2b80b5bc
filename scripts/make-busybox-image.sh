#!/usr/bin/env bash
# Builds a small base image from Debian's static busybox (/bin/busybox plus its applet links),
# with no network, and imports it into corral's store.
#
#   scripts/make-busybox-image.sh [NAME:TAG]      (default busybox:latest)
#
# Uses $CORRAL (default: corral on PATH) and honours CORRAL_ROOT like corral does.
set -euo pipefail

tag=${1:-busybox:latest}
corral=${CORRAL:-corral}
busybox=${BUSYBOX:-/bin/busybox}

if ! "$busybox" --list-full >/dev/null 2>&1; then
    echo "make-busybox-image: $busybox is missing or not busybox: apt-get install busybox-static" >&2
    exit 1
fi
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked' && ldd "$busybox" >/dev/null 2>&1; then
    echo "make-busybox-image: $busybox is dynamically linked: install busybox-static" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,var/tmp,proc,sys,dev,tmp}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root"
install -m 0755 "$busybox" "$root/bin/busybox"
"$busybox" --list-full | while read -r applet; do
    [ "$applet" = "bin/busybox" ] && continue
    mkdir -p "$root/$(dirname "$applet")"
    ln -sf /bin/busybox "$root/$applet"
done
cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
echo "hosts: files dns" > "$root/etc/nsswitch.conf"

"$corral" image import "$root" "$tag"
