#!/usr/bin/env bash
# Tests the bash completion of xenpvusb against the real CLI on xenpvusbd's simulated Xen host:
#   packaging/bash-completion/test-completion.sh [DIR]
# DIR holds xenpvusbd and xenpvusb (default out/publish, from `make publish`). No root, no Xen.
# `xl` is a stand-in script listing Domain-0 and the simulated guest1. Prints one line per check
# and "N passed, N failed".
set -u
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "${1:-$here/../../out/publish}" && pwd) || exit 1
[ -x "$bin/xenpvusbd" ] && [ -x "$bin/xenpvusb" ] || { echo "no xenpvusbd/xenpvusb in $bin (make publish)" >&2; exit 1; }

tmp=$(mktemp -d)
sim_pid=
cleanup() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

"$bin/xenpvusbd" --simulate --run-dir "$tmp/sim" >"$tmp/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 100); do
    grep -q 'XENSTORED_PATH=' "$tmp/sim.log" && break
    sleep 0.2
done
line=$(grep -o 'XENSTORED_PATH=[^ ]* XENPVUSB_SYSFS=[^ ]*' "$tmp/sim.log") || { cat "$tmp/sim.log" >&2; exit 1; }
export "${line%% *}" "${line##* }"

mkdir -p "$tmp/path"
ln -s "$bin/xenpvusb" "$tmp/path/xenpvusb"
cat >"$tmp/path/xl" <<'EOF'
#!/bin/sh
[ "$1" = list ] || exit 1
printf 'Name                                        ID   Mem VCPUs\tState\tTime(s)\n'
printf 'Domain-0                                     0  2048     2     r-----      10.0\n'
printf 'guest1                                       1   256     1     -b----       1.0\n'
EOF
chmod +x "$tmp/path/xl"
export PATH="$tmp/path:$PATH"
export XENPVUSB_ASSIGNMENTS="$tmp/assignments.conf"

# A controller with the stick on port 1: free ports are 2-8, the stick is no longer assignable.
xenpvusb usb-hc-create guest1 2 8 >/dev/null && xenpvusb usb-attach guest1 0 1 1-1 >/dev/null \
    || { echo "could not set up the simulated guest" >&2; exit 1; }
xenpvusb assign guest1 id=1209:5a02 port=3 >/dev/null

# shellcheck source=xenpvusb
. "$here/xenpvusb"

passed=0 failed=0
# check "<command line as typed, ending where the cursor is>" "<expected replies, sorted, space separated>"
check() {
    COMP_LINE=$1
    COMP_POINT=${#COMP_LINE}
    COMP_WORDBREAKS=${COMP_WORDBREAKS:-$' \t\n"\'><=;|&(:'}
    COMPREPLY=()
    _xenpvusb
    local got
    got=$(printf '%s\n' "${COMPREPLY[@]}" | sed '/^$/d' | sort | tr '\n' ' ' | sed 's/ $//')
    if [ "$got" = "$2" ]; then
        passed=$((passed + 1)); echo "ok    '$1' -> $got"
    else
        failed=$((failed + 1)); echo "FAIL  '$1' -> '$got', expected '$2'"
    fi
}

spec=$(complete -p xenpvusb)
if [ "$spec" = "complete -F _xenpvusb xenpvusb" ]; then
    passed=$((passed + 1)); echo "ok    complete -p xenpvusb: $spec"
else
    failed=$((failed + 1)); echo "FAIL  complete -p xenpvusb: '$spec'"
fi

check "xenpvusb usb-l" "usb-list usb-list-assignable-devices"
check "xenpvusb usbc" "usbctrl-attach usbctrl-detach"
check "xenpvusb a" "apply assign assignments"
check "xenpvusb --v" "--version"
check "xenpvusb usb-hc-create " "guest1"
check "xenpvusb usb-hc-create --" "--grant-mode --help --no-merge"
check "xenpvusb usb-hc-create --grant-mode " "copy map"
check "xenpvusb usb-hc-create --grant-mode map guest1 " "1 2"
check "xenpvusb usb-attach " "guest1"
check "xenpvusb usb-attach guest1 " "0"
check "xenpvusb usb-attach guest1 0 " "2 3 4 5 6 7 8"
check "xenpvusb usb-attach guest1 0 2 " "1-2 1-4 1-5"
check "xenpvusb usb-detach guest1 0 " "1"
check "xenpvusb usbdev-detach guest1 0 " "1"
check "xenpvusb usb-hc-destroy guest1 " "0"
check "xenpvusb usb-list --" "--help --json"
check "xenpvusb usbctrl-attach guest1 gr" "grant-mode=copy grant-mode=map"
check "xenpvusb usbctrl-attach guest1 grant-mode=" "copy map"
check "xenpvusb usbdev-attach guest1 hostb" "hostbus="
check "xenpvusb usbdev-attach guest1 hostbus=" "1"
check "xenpvusb usbdev-attach guest1 hostbus=1 hostaddr=" "2 3 5 6"
check "xenpvusb usbdev-attach guest1 controller=" "0"
check "xenpvusb assign guest1 " "class= controller= force id= path= port= serial="
check "xenpvusb assign guest1 path=" "1-1 1-2 1-4 1-5"
check "xenpvusb unassign " "guest1"
check "xenpvusb unassign guest1 " "id=1209:5a02"
check "xenpvusb unassign guest1 id=1209:" "5a02"
check "xenpvusb apply " "guest1"
check "xenpvusb libvirt-hook guest1 st" "start started stopped"

# Without xl, domains complete to nothing, and nothing fails.
PATH=${PATH#"$tmp/path:"}
ln -s "$bin/xenpvusb" "$tmp/xenpvusb"
check "$tmp/xenpvusb usb-list " ""
check "$tmp/xenpvusb usb-attach guest1 0 2 " "1-2 1-4 1-5"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
