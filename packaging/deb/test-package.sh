#!/usr/bin/env bash
# Installs, checks, removes and purges the package on this machine (as root; it must not be installed
# already), and checks that the purge leaves nothing behind:
#   packaging/deb/test-package.sh out/deb/xenpvusb_<version>_amd64.deb [--no-demo]
# Installation runs twice over: as dpkg runs it here (where no systemd runs, as in a chroot or image
# build, the unit must still end up enabled), and in a mount namespace whose /run says systemd runs,
# with a stand-in systemctl that records what the maintainer scripts ask of it (start on install,
# restart on upgrade, stop on removal, daemon-reload). Unless --no-demo, the installed daemon also
# runs its demo against the installed CLI (a minute or so). Prints "N passed, N failed".
set -u
deb=$(readlink -f "${1:?usage: $0 PACKAGE.deb [--no-demo]}")
demo=yes
[ "${2:-}" = --no-demo ] && demo=no
[ "$(id -u)" = 0 ] || { echo "test-package: needs root (it installs the package)" >&2; exit 1; }
if dpkg-query -W -f '${Status}' xenpvusb 2>/dev/null | grep -q 'ok installed\|config-files'; then
    echo "test-package: xenpvusb is installed already; purge it first" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok    $*"; }
fail() { failed=$((failed + 1)); echo "FAIL  $*"; }
check() { # check "<what>" command...
    local what=$1; shift
    if "$@" >"$tmp/out" 2>&1; then ok "$what"; else fail "$what"; sed 's/^/      /' "$tmp/out" | head -20; fi
}
unit=/lib/systemd/system/xenpvusbd.service
wants=/etc/systemd/system/multi-user.target.wants/xenpvusbd.service
state=/var/lib/systemd/deb-systemd-helper-enabled/xenpvusbd.service.dsh-also

snapshot() {
    find /etc /lib/systemd /usr/bin /usr/lib/xenpvusb /usr/share/doc /usr/share/man /usr/share/xenpvusb \
        /usr/share/bash-completion /usr/share/lintian/overrides /var/lib/systemd -xdev 2>/dev/null \
        | grep -v '^/etc/ld.so.cache$' | LC_ALL=C sort
}
snapshot >"$tmp/before"

# A mount namespace where /run/systemd/system exists, and systemctl records what it is asked: what
# needs a running systemd (daemon-reload, start, stop, restart) succeeds, is-active says inactive,
# is-enabled is answered from the files (the real systemctl --root=/), the rest (preset) goes to the
# real systemctl.
real_systemctl=$(command -v systemctl)
mkdir -p "$tmp/bin"
cat >"$tmp/bin/systemctl" <<EOF
#!/bin/sh
echo "systemctl \$*" >>"$tmp/systemctl.log"
case " \$* " in
    *" daemon-reload "* | *" start "* | *" stop "* | *" restart "* | *" try-restart "*) exit 0 ;;
    *" is-active "*) exit 3 ;;
    *" is-enabled "*) exec $real_systemctl --root=/ "\$@" ;;
esac
exec $real_systemctl "\$@"
EOF
chmod +x "$tmp/bin/systemctl"
# /usr/sbin/policy-rc.d (invoke-rc.d(8)) decides whether maintainer scripts may start services: 101
# (deny, as in image builds and containers) or 0 (allow). In the namespace the test brings its own.
printf '#!/bin/sh\nexit 0\n' >"$tmp/policy-allow"
printf '#!/bin/sh\nexit 101\n' >"$tmp/policy-deny"
chmod +x "$tmp/policy-allow" "$tmp/policy-deny"
with_systemd() { # with_systemd allow|deny dpkg-args...: dpkg where systemd seems to run
    local policy=$tmp/policy-$1; shift
    : >"$tmp/systemctl.log"
    unshare --mount --propagation private sh -c '
        mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system || exit 1
        if [ -e /usr/sbin/policy-rc.d ]; then mount --bind "$1" /usr/sbin/policy-rc.d || exit 1
        elif [ "${1##*-}" = deny ]; then echo "no /usr/sbin/policy-rc.d to deny with"; exit 1; fi
        shift; PATH="$0:$PATH" exec dpkg "$@"' \
        "$tmp/bin" "$policy" "$@" >"$tmp/dpkg.log" 2>&1
}
logged() { grep -qx "$1" "$tmp/systemctl.log"; }

echo "== dpkg -i, no systemd running (as in a chroot or an image)"
check "dpkg -i $(basename "$deb")" dpkg -i "$deb"
check "Status: install ok installed" sh -c "dpkg-query -W -f '\${Status}' xenpvusb | grep -qx 'install ok installed'"
for f in /usr/lib/xenpvusb/xenpvusbd /usr/lib/xenpvusb/xenpvusb; do check "$f is executable" test -x "$f"; done
check "the shim is 0644" sh -c "[ \$(stat -c %a /usr/lib/xenpvusb/libxenpvusb-shim.so.1) = 644 ]"
check "/usr/bin/xenpvusb -> ../lib/xenpvusb/xenpvusb" sh -c '[ "$(readlink /usr/bin/xenpvusb)" = ../lib/xenpvusb/xenpvusb ]'
check "$unit, ExecStart=/usr/lib/xenpvusb/xenpvusbd" grep -q '^ExecStart=/usr/lib/xenpvusb/xenpvusbd ' "$unit"
for f in /etc/default/xenpvusbd /etc/xenpvusb/assignments.conf /etc/xenpvusb/usb-policy.conf; do
    check "conffile $f" sh -c "dpkg-query -W -f '\${Conffiles}' xenpvusb | grep -q ' $f '"
done
check "enabled: $wants -> $unit" sh -c "[ \"\$(readlink $wants)\" = $unit ]"
check "deb-systemd-helper remembers it ($state)" test -f "$state"
check "systemctl is-enabled xenpvusbd: enabled" sh -c 'systemctl is-enabled xenpvusbd 2>/dev/null | grep -qx enabled'
check "xenpvusb --help from the PATH" sh -c 'cd / && xenpvusb --help | grep -q usb-list-assignable-devices'
check "xenpvusb --version: $(dpkg-query -W -f '${Version}' xenpvusb | sed 's/[+-].*//')" \
    sh -c "xenpvusb --version | grep -q '^$(dpkg-query -W -f '${Version}' xenpvusb | sed 's/[+-].*//')'"
check "xenpvusb usb-list with no xenstore: one line, status 1" sh -c '
    out=$(XENSTORED_PATH=/nonexistent xenpvusb usb-list web1 2>&1); rc=$?; echo "$out"
    [ $rc -eq 1 ] && [ "$(printf "%s\n" "$out" | wc -l)" -eq 1 ] && printf "%s" "$out" | grep -q "cannot reach xenstore"'
if ! grep -qs control_d /proc/xen/capabilities; then
    check "xenpvusbd refuses a host that is not a Xen dom0 (status 1)" sh -c '
        out=$(/usr/lib/xenpvusb/xenpvusbd 2>&1); rc=$?; echo "$out"; [ $rc -eq 1 ] && printf "%s" "$out" | grep -q "not a Xen dom0"'
fi
check "xenpvusbd --help (status 0)" sh -c '/usr/lib/xenpvusb/xenpvusbd --help 2>"$0"; [ $? -eq 0 ] && grep -q -- --grant-mode "$0"' "$tmp/help"
for page in xenpvusb:1 xenpvusbd:8 xenpvusb-assignments:5 xenpvusb-usb-policy:5; do
    check "man ${page#*:} ${page%:*}" sh -c "MANPAGER=cat MANWIDTH=80 man ${page#*:} ${page%:*} 2>&1 | grep -q '^NAME'"
done
check "man -k xenpvusb (the whatis database, updated by man-db's trigger)" sh -c 'man -k xenpvusb | grep -q "xenpvusb-usb-policy (5)"'
check "libvirt hook is executable" test -x /usr/share/xenpvusb/libvirt-hook-libxl
check "xenpvusb assign edits the installed conffile in place" sh -c '
    xenpvusb assign web1 id=0781:5567 port=2 && grep -qx "web1 id=0781:5567 port=2" /etc/xenpvusb/assignments.conf &&
    grep -q "^# xenpvusb persistent assignments" /etc/xenpvusb/assignments.conf &&
    xenpvusb assignments | grep -q "^web1 .*id=0781:5567"'
if [ -f /usr/share/bash-completion/bash_completion ]; then
    check "bash-completion loads the completion on demand" bash -c '
        . /usr/share/bash-completion/bash_completion
        __load_completion xenpvusb
        [ "$(complete -p xenpvusb)" = "complete -F _xenpvusb xenpvusb" ]'
else
    echo "--    (bash-completion is not installed: on-demand loading not checked)"
fi
if [ "$demo" = yes ]; then
    check "installed xenpvusbd --demo drives the installed CLI" sh -c 'cd /tmp && timeout 600 /usr/lib/xenpvusb/xenpvusbd --demo'
fi

echo "== dpkg -i again, where systemd runs (an upgrade: restart)"
check "dpkg -i (reinstall)" with_systemd allow -i "$deb"
sed 's/^/      /' "$tmp/systemctl.log"
check "postinst: systemctl --system daemon-reload" logged "systemctl --system daemon-reload"
check "postinst: systemctl --quiet --system restart xenpvusbd.service" logged "systemctl --quiet --system restart xenpvusbd.service"
check "still enabled" test -L "$wants"

echo "== dpkg -r, where systemd runs"
check "dpkg -r xenpvusb" with_systemd allow -r xenpvusb
sed 's/^/      /' "$tmp/systemctl.log"
check "prerm: systemctl stop xenpvusbd.service" logged "systemctl stop xenpvusbd.service"
check "postrm: systemctl --system daemon-reload" logged "systemctl --system daemon-reload"
check "Status: deinstall ok config-files" sh -c "dpkg-query -W -f '\${Status}' xenpvusb | grep -qx 'deinstall ok config-files'"
check "unit file gone" test ! -e "$unit"
check "programs gone" test ! -e /usr/lib/xenpvusb -a ! -L /usr/bin/xenpvusb
check "conffiles kept" test -f /etc/default/xenpvusbd -a -f /etc/xenpvusb/assignments.conf -a -f /etc/xenpvusb/usb-policy.conf
[ -L "$wants" ] && echo "--    the wants symlink stays until purge (enablement is configuration, as dh_installsystemd does it)"

echo "== dpkg -P"
check "dpkg -P xenpvusb" dpkg -P xenpvusb
check "no package left" sh -c "! dpkg-query -W xenpvusb >/dev/null 2>&1"
check "no wants symlink" test ! -L "$wants"
check "no deb-systemd-helper state" test ! -e "$state"
check "conffiles gone" test ! -e /etc/default/xenpvusbd -a ! -e /etc/xenpvusb

echo "== dpkg -i and -P, where systemd runs (a fresh install: start)"
check "dpkg -i" with_systemd allow -i "$deb"
sed 's/^/      /' "$tmp/systemctl.log"
check "postinst: systemctl --quiet --system start xenpvusbd.service" logged "systemctl --quiet --system start xenpvusbd.service"
check "enabled" test -L "$wants"
check "dpkg -P" with_systemd allow -P xenpvusb
sed 's/^/      /' "$tmp/systemctl.log"
check "prerm: systemctl stop xenpvusbd.service" logged "systemctl stop xenpvusbd.service"

if [ -e /usr/sbin/policy-rc.d ]; then
    echo "== dpkg -i and -P, where systemd runs but policy-rc.d says 101 (an image build)"
    check "dpkg -i" with_systemd deny -i "$deb"
    sed 's/^/      /' "$tmp/systemctl.log"
    check "postinst: nothing started" sh -c "! grep -q ' start ' $tmp/systemctl.log"
    check "enabled for the next boot" test -L "$wants"
    check "dpkg -P" with_systemd deny -P xenpvusb
fi

snapshot >"$tmp/after"
if diff "$tmp/before" "$tmp/after" >"$tmp/diff"; then
    ok "nothing left behind (/etc, /lib/systemd, /usr, /var/lib/systemd as before)"
else
    fail "left behind or lost:"; sed 's/^/      /' "$tmp/diff"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
