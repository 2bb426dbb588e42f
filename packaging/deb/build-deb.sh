#!/bin/sh
# Builds the Debian package of XenPvUsb from what `make publish` made, with dpkg-deb alone (no
# debhelper): make deb runs
#   packaging/deb/build-deb.sh PUBLISH_DIR OUT_DIR VERSION
# and leaves OUT_DIR/xenpvusb_<version>_amd64.deb (and the tree it was built from in OUT_DIR/root).
# The package version is VERSION (Directory.Build.props), followed in a git checkout by
# +git<commits>.<commit> (and .dirty for uncommitted changes to tracked files), so that every
# build of a later commit upgrades an earlier one, then the Debian revision -DEB_REVISION (1);
# DEB_VERSION overrides the whole. Depends comes from dpkg-shlibdeps, run on the three binaries.
set -eu

[ $# -eq 3 ] || { echo "usage: $0 PUBLISH_DIR OUT_DIR VERSION" >&2; exit 2; }
pub=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
upstream=$3
here=$(cd "$(dirname "$0")" && pwd)
pkg=$(cd "$here/.." && pwd)
top=$(cd "$pkg/.." && pwd)
maintainer=${DEB_MAINTAINER:-XenPvUsb developers <xenpvusb@xenpvusb.invalid>}
umask 022

for f in xenpvusbd xenpvusb libxenpvusb-shim.so.1; do
    [ -f "$pub/$f" ] || { echo "build-deb: $pub/$f is missing (make publish)" >&2; exit 1; }
done

# --- version, and the commit time that every file and the changelog get --------------------------
commit= count= dirty=
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
    commit=$(git -C "$top" rev-parse --short=7 HEAD)
    count=$(git -C "$top" rev-list --count HEAD)
    # Uncommitted changes: not the commit's package, so not the commit's time either.
    if git -C "$top" diff --quiet HEAD -- 2>/dev/null; then
        SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct HEAD)}
    else
        dirty=.dirty
    fi
fi
release=$upstream-${DEB_REVISION:-1}
if [ -n "${DEB_VERSION:-}" ]; then
    version=$DEB_VERSION
elif [ -n "$commit" ]; then
    version=$upstream+git$count.$commit$dirty-${DEB_REVISION:-1}
else
    version=$release
fi
printf '%s\n' "$version" | grep -Eq '^[0-9][A-Za-z0-9.+~]*-[A-Za-z0-9.+~]+$' \
    || { echo "build-deb: '$version' is not a Debian version with a revision (upstream-revision)" >&2; exit 1; }
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)}
# A snapshot's changelog entry must be newer than the release entry below it.
released=$(date -d "$(sed -n 's/^ -- .*  //p' "$here/changelog" | head -n1)" +%s)
[ "$SOURCE_DATE_EPOCH" -gt "$released" ] || SOURCE_DATE_EPOCH=$((released + 1))
export SOURCE_DATE_EPOCH

# --- the tree ----------------------------------------------------------------------------------
root=$out/root
rm -rf "$root" "$out"/xenpvusb_*.deb
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/xenpvusb" "$root/lib/systemd/system" \
    "$root/etc/default" "$root/etc/xenpvusb" "$root/usr/share/doc/xenpvusb" \
    "$root/usr/share/man/man1" "$root/usr/share/man/man5" "$root/usr/share/man/man8" \
    "$root/usr/share/bash-completion/completions" "$root/usr/share/xenpvusb"

install -m 0755 "$pub/xenpvusbd" "$pub/xenpvusb" "$root/usr/lib/xenpvusb/"
# The compilers' version strings (.comment) go, as dh_strip removes them; the section is not loaded,
# so the program as mapped stays byte for byte what make publish built (the SDK stripped it already).
objcopy --remove-section=.comment "$root/usr/lib/xenpvusb/xenpvusbd"
objcopy --remove-section=.comment "$root/usr/lib/xenpvusb/xenpvusb"
# A shared library: mode 0644 and stripped, as dh_fixperms and dh_strip leave one.
install -m 0644 "$pub/libxenpvusb-shim.so.1" "$root/usr/lib/xenpvusb/"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/lib/xenpvusb/libxenpvusb-shim.so.1"
# NativeAOT resolves AppContext.BaseDirectory through /proc/self/exe, so the CLI run through this
# link is at home in /usr/lib/xenpvusb.
ln -s ../lib/xenpvusb/xenpvusb "$root/usr/bin/xenpvusb"

install -m 0644 "$pkg/systemd/xenpvusbd.service" "$root/lib/systemd/system/"
install -m 0644 "$pkg/etc/default/xenpvusbd" "$root/etc/default/"
install -m 0644 "$pkg/etc/xenpvusb/assignments.conf" "$pkg/etc/xenpvusb/usb-policy.conf" "$root/etc/xenpvusb/"
install -m 0644 "$pkg/bash-completion/xenpvusb" "$root/usr/share/bash-completion/completions/"
install -m 0755 "$pkg/libvirt/libxl" "$root/usr/share/xenpvusb/libvirt-hook-libxl"

for page in "$pkg"/man/*.[0-9]; do
    name=${page##*/}
    gzip -9n <"$page" >"$root/usr/share/man/man${name##*.}/$name.gz"
done

# copyright: the stanzas of copyright.in, and the license and its holder from LICENSE.
holder=$(sed -n 's/^Copyright (c) //p' "$top/LICENSE" | head -n1)
[ -n "$holder" ] || { echo "build-deb: no 'Copyright (c)' line in LICENSE" >&2; exit 1; }
{
    sed "s/@COPYRIGHT@/$holder/" "$here/copyright.in"
    echo
    echo "License: MIT"
    sed -n '/^Permission is hereby granted/,$p' "$top/LICENSE" | sed 's/^$/./; s/^/ /'
} >"$root/usr/share/doc/xenpvusb/copyright"

# The .NET runtime's third-party notices, from the ILCompiler package the binaries were built with.
assets=$top/src/XenPvUsb.Daemon/obj/project.assets.json
ilc=$(grep -o '"runtime\.linux-x64\.Microsoft\.DotNet\.ILCompiler/[^"]*"' "$assets" 2>/dev/null | head -n1 | tr -d '"')
folder=$(sed -n '/"packageFolders"/,/}/{s/^ *"\([^"]*\)": {}.*/\1/p}' "$assets" 2>/dev/null | head -n1)
notices=$folder/$(printf '%s' "$ilc" | tr '[:upper:]' '[:lower:]')/THIRD-PARTY-NOTICES.TXT
[ -n "$ilc" ] && [ -f "$notices" ] || { echo "build-deb: cannot find the .NET runtime's THIRD-PARTY-NOTICES.TXT (via $assets)" >&2; exit 1; }
gzip -9n <"$notices" >"$root/usr/share/doc/xenpvusb/THIRD-PARTY-NOTICES.dotnet.gz"

# changelog.Debian: packaging/deb/changelog, after an entry for this snapshot if it is one.
{
    if [ "$version" != "$release" ]; then
        printf 'xenpvusb (%s) unstable; urgency=medium\n\n' "$version"
        printf '  * Snapshot of commit %s%s.\n\n' "${commit:-?}" "${dirty:+, with uncommitted changes}"
        printf ' -- %s  %s\n\n' "$maintainer" "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
    fi
    sed "s/@MAINTAINER@/$maintainer/" "$here/changelog"
} | gzip -9n >"$root/usr/share/doc/xenpvusb/changelog.Debian.gz"

if [ -f "$here/lintian-overrides" ]; then
    install -d "$root/usr/share/lintian/overrides"
    install -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/xenpvusb"
fi

# --- control -------------------------------------------------------------------------------------
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"
install -m 0644 "$here/conffiles" "$root/DEBIAN/"

# Depends: dpkg-shlibdeps wants a debian/control naming the package; a scratch one will do.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/debian"
printf 'Source: xenpvusb\n\nPackage: xenpvusb\nArchitecture: amd64\n' >"$scratch/debian/control"
depends=$(cd "$scratch" && dpkg-shlibdeps -O \
    -e"$root/usr/lib/xenpvusb/xenpvusbd" -e"$root/usr/lib/xenpvusb/xenpvusb" \
    -e"$root/usr/lib/xenpvusb/libxenpvusb-shim.so.1" | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "build-deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

# Installed-Size as dpkg-gencontrol counts it: KiB per file rounded up, 1 per directory or link.
size=$(cd "$root" && find . -mindepth 1 -path ./DEBIAN -prune -o -printf '%y %s\n' \
    | awk '$1 == "f" { kib += int(($2 + 1023) / 1024); next } { kib += 1 } END { print kib }')

sed -e "s/@VERSION@/$version/" -e "s/@MAINTAINER@/$maintainer/" -e "s/@INSTALLED_SIZE@/$size/" \
    -e "s/@DEPENDS@/$depends/" "$here/control.in" >"$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

# Every file as old as the commit, so that the same commit builds the same package.
find "$root" -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

deb=$out/xenpvusb_${version}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "built $deb"
dpkg-deb --field "$deb" Version Installed-Size Depends
