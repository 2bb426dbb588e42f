# guest-lib.sh -- shared functions for lab scenarios. Sourced in dom0 by /payload/scenario.sh.
#
# Output protocol (read by the host driver tests/lab/run-lab from the serial console):
#   STAGE <scenario>/<name> PASS|FAIL|SKIP <seconds>s <reason>
#   FIGURE <name> <value> <unit>
#   LAB-REQUEST <id> <verb> <args>   ask the host to act on QEMU (verbs: unplug ID, replug ID, hmp CMD,
#                                    sendkey KEY... = one HMP sendkey per key, in one monitor session,
#                                    sendkeys HOLD_MS KEY... = the same with a hold time)
#   GUESTLOG <guest>| <line>         a guest's console log, copied live (guest_follow)
# Scenario scripts: scenarios/<name>.sh, sourced in a subshell with LAB_SCENARIO=<name>.

LAB_TMP=${LAB_TMP:-/tmp/lab}
LAB_GUESTS=$LAB_TMP/guests
LAB_CONSOLE_DIR=/var/log/xen/console
mkdir -p "$LAB_TMP" "$LAB_GUESTS"

# Process creation is very expensive in a PV dom0 under TCG (a fork+exec costs about 0.5 s of CPU),
# so these helpers avoid forks while waiting: bash builtins, $EPOCHREALTIME, blocking waits.

# lab_now: microseconds since the epoch (no fork). lab_elapsed T0: seconds since T0, one decimal.
lab_now() { local t=${EPOCHREALTIME/[.,]/}; echo "$t"; }
lab_elapsed() {
  local t=${EPOCHREALTIME/[.,]/}
  local d=$(( (t - $1 + 50000) / 100000 ))
  echo "$((d / 10)).$((d % 10))"
}

# reason TEXT: the reason printed on the current stage's line.
reason() { printf '%s' "$*" > "$LAB_TMP/reason"; }

# killtree PID: kill a process and all its descendants.
killtree() {
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do killtree "$c"; done
  kill -9 "$1" 2>/dev/null || true
}

# stage NAME [-t TIMEOUT_S] CMD...: run CMD (a command or function) and print its STAGE line.
# Exit 0 = PASS, 77 = SKIP, anything else (or the timeout, default 300 s) = FAIL.
# Returns 0 only on PASS, so `stage a ... && stage b ...` chains dependent stages.
# While CMD runs, a watchdog enforces the timeout and a heartbeat prints "STAGE-WAIT" every 60 s
# (the host's idle watchdog needs console output); neither polls.
stage() {
  local name=$1 timeout=300 t0 pid wd hb rc res why
  shift
  if [ "$1" = -t ]; then timeout=$2; shift 2; fi
  name=${LAB_SCENARIO:-lab}/$name
  rm -f "$LAB_TMP/reason" "$LAB_TMP/timedout"
  echo "STAGE-BEGIN $name"
  t0=$(lab_now)
  ( "$@" ) &
  pid=$!
  # "&&": if the watchdog is killed first (its sleep dies), it must not declare a timeout.
  ( sleep "$timeout" && { : > "$LAB_TMP/timedout"; killtree "$pid"; } ) &
  wd=$!
  ( b=60; while sleep 60; do echo "STAGE-WAIT $name ${b}s"; b=$((b + 60)); done ) &
  hb=$!
  wait "$pid"; rc=$?
  killtree "$wd"; killtree "$hb"
  wait "$wd" "$hb" 2>/dev/null
  why=
  [ -f "$LAB_TMP/reason" ] && read -r why < "$LAB_TMP/reason"
  [ -f "$LAB_TMP/timedout" ] && { rc=124; why="timeout after ${timeout}s${why:+ ($why)}"; }
  case $rc in
    0) res=PASS;;
    77) res=SKIP;;
    *) res=FAIL; [ -n "$why" ] || why="exit $rc";;
  esac
  [ -n "$why" ] || why=ok
  echo "STAGE $name $res $(lab_elapsed "$t0")s $why"
  [ $res = PASS ]
}

# skip NAME REASON: print a SKIP line for a stage that cannot run.
skip() { echo "STAGE ${LAB_SCENARIO:-lab}/$1 SKIP 0.0s $2"; }

figure() { echo "FIGURE $1 $2 $3"; }

# lab_request VERB ARGS...: ask the host driver to act on QEMU's monitor (asynchronous: wait for the effect).
LAB_REQ_N=0
lab_request() { LAB_REQ_N=$((LAB_REQ_N + 1)); echo "LAB-REQUEST r$$-$LAB_REQ_N $*"; }

# lab_sleep SECONDS: sleep without a fork (read -t on a FIFO nobody writes; fractions work).
lab_sleep() {
  if [ -z "${LAB_SLEEP_FD:-}" ]; then
    [ -p "$LAB_TMP/sleep.fifo" ] || mkfifo "$LAB_TMP/sleep.fifo"
    exec {LAB_SLEEP_FD}<> "$LAB_TMP/sleep.fifo"
  fi
  read -r -t "$1" -u "$LAB_SLEEP_FD" _ || true
}

# usb_drivers BUSID: the drivers bound to the device's interfaces, space-separated ("" if none; builtins only).
usb_drivers() {
  local f out=
  for f in /sys/bus/usb/drivers/*/"$1":*; do [ -e "$f" ] || continue; f=${f%/*}; out="$out${out:+ }${f##*/}"; done
  echo "$out"
}
# usb_bound_to BUSID DRIVER: an interface of the device is bound to DRIVER (builtins only, no output).
# lab_xhci_kbd: the bus id of QEMU's usb-kbd (0627:0001 "QEMU USB Keyboard") on the xHCI controller.
lab_xhci_kbd() {
  local d v p n bn drv
  for d in /sys/bus/usb/devices/*; do
    [ -f $d/idVendor ] && [ -f $d/product ] || continue
    read -r v < $d/idVendor; read -r p < $d/idProduct; read -r n < $d/product
    [ "$v:$p" = 0627:0001 ] && [ "$n" = "QEMU USB Keyboard" ] || continue
    read -r bn < $d/busnum
    drv=$(readlink -f /sys/bus/usb/devices/usb$bn/../driver)
    [ "${drv##*/}" = xhci_hcd ] && { echo ${d##*/}; return 0; }
  done
  return 1
}

usb_bound_to() { local f; for f in /sys/bus/usb/drivers/"$2"/"$1":*; do [ -e "$f" ] && return 0; done; return 1; }

# wait_for TIMEOUT_S CMD...: run CMD every second (keep CMD cheap: builtins) until it succeeds.
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -ge $end ] && return 1; sleep 1; done
}

# --- USB devices in dom0 ---------------------------------------------------------------------------
# usb_dev_by_serial SERIAL: the sysfs USB device directory whose iSerial is SERIAL (builtins only).
usb_dev_by_serial() {
  local d v
  for d in /sys/bus/usb/devices/*; do
    [ -f "$d/serial" ] || continue
    read -r v < "$d/serial" 2>/dev/null && [ "$v" = "$1" ] && { echo "$d"; return 0; }
  done
  return 1
}
# usb_has_serial SERIAL / usb_has_disk SERIAL: tests without output (no command substitution).
usb_has_serial() {
  local d v
  for d in /sys/bus/usb/devices/*; do
    [ -f "$d/serial" ] && read -r v < "$d/serial" 2>/dev/null && [ "$v" = "$1" ] && return 0
  done
  return 1
}
usb_has_disk() {
  local d v b
  for d in /sys/bus/usb/devices/*; do
    [ -f "$d/serial" ] && read -r v < "$d/serial" 2>/dev/null && [ "$v" = "$1" ] || continue
    for b in "$d"/*/host*/target*/*/block/*; do [ -e "$b" ] && return 0; done
  done
  return 1
}
# usb_disk_by_serial SERIAL: the block device name (sdX) of a USB stick.
usb_disk_by_serial() {
  local d b
  d=$(usb_dev_by_serial "$1") || return 1
  for b in "$d"/*/host*/target*/*/block/*; do [ -e "$b" ] && { echo "${b##*/}"; return 0; }; done
  return 1
}
# lab_stick_id SERIAL: the QEMU device id of a stick (for lab_request unplug|replug).
lab_stick_id() {
  case $1 in
    "$LAB_STICK_EHCI_SERIAL") echo stick;;
    "$LAB_STICK_EHCI3_SERIAL") echo stick3;;
    "$LAB_STICK_XHCI_SERIAL") echo ssstick;;
  esac
}
# lab_recover_stick SERIAL: for cleanups, after the checks: if dom0 has no block device for the stick
# (a daemon that did not hand it back), QEMU unplugs and replugs it, so that a fresh enumeration binds
# usb-storage and the next scenarios find dom0 as they expect. Says so loudly; 0 if the stick is back.
lab_recover_stick() {
  local s=$1 id
  usb_has_disk $s && return 0
  id=$(lab_stick_id $s)
  echo "LAB-RECOVERY: dom0 has no block device for $s ($(d=$(usb_dev_by_serial $s) && echo "${d##*/}, drivers: $(usb_drivers ${d##*/})" || echo "not in sysfs")); QEMU unplugs and replugs $id"
  if usb_has_serial $s; then
    lab_request unplug $id
    wait_for 60 eval "! usb_has_serial $s"
  fi
  lab_request replug $id
  wait_for 90 usb_has_disk $s
}

# usb_busdev SERIAL: "BUS DEV" numbers (decimal) of a USB device, for xl usbdev-attach.
usb_busdev() {
  local d b n
  d=$(usb_dev_by_serial "$1") || return 1
  read -r b < "$d/busnum"; read -r n < "$d/devnum"
  echo "$b $n"
}

# read_disk DEV [MIB]: O_DIRECT 1 MiB reads of the whole disk (or its first MIB MiB) into tmpfs
# (timed), then sha256. Prints "bytes secs mbps sha256".
read_disk() {
  local t0 t1 bytes f=/dev/shm/lab-read.bin
  t0=${EPOCHREALTIME/[.,]/}
  dd if="/dev/$1" of=$f bs=1M ${2:+count=$2} iflag=direct status=none || return 1
  t1=${EPOCHREALTIME/[.,]/}
  bytes=$(stat -c %s $f)
  echo "$bytes $(awk -v us=$((t1 - t0)) -v n="$bytes" 'BEGIN { printf "%.2f %.2f", us / 1e6, n / us }') $(sha256sum $f | cut -d' ' -f1)"
  rm -f $f
}

# --- PV guests -------------------------------------------------------------------------------------
# guest_create NAME SCRIPT [XL-CONFIG-LINE...]: start a PV guest (dom0 kernel + lab initramfs) whose
# init sources SCRIPT (a file in dom0; it may use the helpers of tests/lab/guest/init).
# Environment: GUEST_SKIP_MODULES (modules of the load order not to load, e.g. xen_hcd),
# GUEST_EXTRA_MODULES (optional modules to load: xen_gntalloc xen_evtchn), GUEST_MEMORY (MiB, default 512).
guest_create() {
  local name=$1 script=$2 d=$LAB_GUESTS/$1
  shift 2
  rm -rf "$d"; mkdir -p "$d/root/lab"
  cp "$script" "$d/root/lab/script.sh"
  [ -n "${GUEST_SKIP_MODULES:-}" ] && printf '%s\n' $GUEST_SKIP_MODULES > "$d/root/lab/modules.skip"
  [ -n "${GUEST_EXTRA_MODULES:-}" ] && printf '%s\n' $GUEST_EXTRA_MODULES > "$d/root/lab/modules.extra"
  { cat /payload/guest/initrd.gz
    (cd "$d/root" && find . | cpio -o -H newc --quiet -R 0:0 | gzip -1)
  } > "$d/initrd.gz"
  {
    echo "name = \"$name\""
    echo 'type = "pv"'
    echo 'kernel = "/lab/guest-vmlinuz"'
    echo "ramdisk = \"$d/initrd.gz\""
    echo 'extra = "console=hvc0"'
    echo "memory = ${GUEST_MEMORY:-512}"
    echo 'vcpus = 1'
    echo 'on_poweroff = "destroy"'
    echo 'on_crash = "destroy"'
    local l; for l in "$@"; do echo "$l"; done
  } > "$d/$name.cfg"
  rm -f "$LAB_CONSOLE_DIR/guest-$name.log"
  xl create "$d/$name.cfg" || return 1
  guest_follow "$name"
}

# guest_follow NAME: copy the guest's console log, live, to dom0's console as "GUESTLOG NAME| line"
# (the host keeps them in out/guest-NAME.log and scans them for crashes). Stopped by guest_destroy.
guest_follow() {
  local name=$1
  guest_unfollow "$name"
  ( exec tail -n +1 -F "$LAB_CONSOLE_DIR/guest-$name.log" 2>/dev/null | sed -u "s/\r\$//; s/^/GUESTLOG $name| /" ) &
  echo $! > "$LAB_GUESTS/$name.follow"
}
guest_unfollow() {
  local f=$LAB_GUESTS/$1.follow
  [ -f "$f" ] || return 0
  sleep 1
  killtree "$(cat "$f")"; rm -f "$f"
}

guest_log() { tr -d '\r' < "$LAB_CONSOLE_DIR/guest-$1.log" 2>/dev/null; }

# guest_wait NAME REGEX TIMEOUT_S: wait until the guest's console log has a line matching REGEX
# (a blocking tail -F | grep, no polling).
guest_wait() {
  local f=$LAB_CONSOLE_DIR/guest-$1.log fd tp rc
  exec {fd}< <(exec tail -n +1 -F "$f" 2>/dev/null)
  tp=$!
  timeout "$3" grep -qE -m1 "$2" <&$fd; rc=$?
  exec {fd}<&-
  kill "$tp" 2>/dev/null
  return $rc
}

# guest_result NAME WORD KEY: the value of KEY= on the last "GUEST-RESULT WORD ..." line.
guest_result() {
  guest_log "$1" | grep "GUEST-RESULT $2 " | tail -n1 | tr ' ' '\n' | sed -n "s/^$3=//p"
}

guest_destroy() { xl destroy "$1" 2>&1 || true; guest_unfollow "$1"; }

# --- whole-run helpers (called by scenario.sh) -----------------------------------------------------
# lab_stop_followers: stop the live copies of all guest console logs.
lab_stop_followers() {
  local f
  for f in "$LAB_GUESTS"/*.follow; do [ -f "$f" ] && guest_unfollow "$(basename "$f" .follow)"; done
}

# lab_crash_scan: print dom0 kernel-log and hypervisor-log lines that show a crash (the host fails the run on them).
lab_crash_scan() {
  local re='segf''ault at|general prot''ection|tr''aps:|Kernel pan''ic|BU''G:|Oo''ps'
  dmesg 2>/dev/null | grep -E "$re" | sed 's/^/DOM0-DMESG /'
  xl dmesg 2>/dev/null | grep -E "$re" | sed 's/^/XEN-DMESG /'
}

# --- xenpvusbd, the systemd service -----------------------------------------------------------------
# Installed from the Debian package (make deb): run-lab installs this run's .deb into dom0's image
# before the boot (so systemd starts the enabled unit at boot, as on a machine where it was installed
# earlier) and carries the same file in the payload (/payload/$LAB_DEB). Files: the NativeAOT binaries
# and the shim in /usr/lib/xenpvusb (the daemon loads the shim from beside itself), /usr/bin/xenpvusb,
# the unit, the conffiles /etc/default/xenpvusbd and /etc/xenpvusb/*.conf. No .NET.
PV_PKG=xenpvusb
PV_LIBDIR=/usr/lib/xenpvusb
PV_UNIT=/lib/systemd/system/xenpvusbd.service
PV_DEFAULTS=/etc/default/xenpvusbd
PV_FILES="$PV_LIBDIR/xenpvusbd $PV_LIBDIR/xenpvusb $PV_LIBDIR/libxenpvusb-shim.so.1 /usr/bin/xenpvusb $PV_UNIT $PV_DEFAULTS /etc/xenpvusb/assignments.conf /etc/xenpvusb/usb-policy.conf"

# has_all "K=V K=V ..." K=V...: every one of the given words is in the first list.
has_all() { local l=" $1 " w; shift; for w; do case $l in *" $w "*) ;; *) return 1;; esac; done; }

# pv_show PROPS: `systemctl show -p PROPS xenpvusbd` as "A=x B=y" on one line.
pv_show() { local l out=; while IFS= read -r l; do out="$out${out:+ }$l"; done < <(systemctl show -p "$1" xenpvusbd); echo "$out"; }
# pv_prop NAME: one property's value.
pv_prop() { systemctl show -p "$1" --value xenpvusbd; }
# pv_pid: the service's MainPID (0 if not running).
pv_pid() { pv_prop MainPID; }

# pv_log [N]: the last N (default 40) lines of the daemon's journal (for failure output).
pv_log() { echo "--- journalctl -u xenpvusbd (last ${1:-40})"; journalctl -u xenpvusbd -o short-monotonic --no-pager -n "${1:-40}" 2>&1; }

# pv_journal [T0]: the messages of the running instance (MainPID), all or since T0 (lab_now microseconds).
pv_journal() { journalctl -u xenpvusbd _PID="$(pv_pid)" ${1:+--since "@$(($1 / 1000000))"} -o cat --no-pager 2>/dev/null; }
# pv_journal_has REGEX [T0]: pv_journal has a line matching REGEX.
pv_journal_has() { pv_journal "$2" | grep -qE "$1"; }

# pv_pkg_check: the package is installed, it is this run's .deb (its md5sums are the installed ones),
# and its files are there (dpkg --verify: no file differs from the package, conffiles aside). Sets
# PV_PKG_STATE ("xenpvusb <version>, <n> files verified"); the reason on failure.
PV_PKG_STATE=
pv_pkg_check() {
  local st deb=/payload/${LAB_DEB:-none} v bad f
  st=$(dpkg-query -W -f '${Status} ${Version}' $PV_PKG 2>&1)
  case $st in "install ok installed "*) ;; *) reason "dpkg: $PV_PKG is not installed: $st"; return 1;; esac
  v=${st#install ok installed }
  if [ -f "$deb" ]; then
    [ "$(dpkg-deb -f "$deb" Version)" = "$v" ] || { reason "installed $PV_PKG $v is not the payload's $(basename "$deb")"; return 1; }
    cmp -s <(dpkg-deb -I "$deb" md5sums) /var/lib/dpkg/info/$PV_PKG.md5sums \
      || { reason "installed $PV_PKG $v: its md5sums differ from the payload's $(basename "$deb")"; return 1; }
  fi
  for f in $PV_FILES; do [ -e "$f" ] || { reason "$PV_PKG $v: no $f"; return 1; }; done
  # dpkg --verify: one line per file that differs from the package ("??5?????? c /etc/..." for a
  # conffile the lab edited, e.g. /etc/default/xenpvusbd when LAB_XENPVUSBD_ARGS is given)
  bad=$(dpkg --verify $PV_PKG 2>&1 | grep -v '^??5?????? c ')
  [ -z "$bad" ] || { reason "dpkg --verify $PV_PKG: $(echo "$bad" | head -n 2 | tr '\n' ' ')"; return 1; }
  PV_PKG_STATE="$PV_PKG $v, $(wc -l < /var/lib/dpkg/info/$PV_PKG.md5sums) files verified (dpkg --verify)"
}

# pv_install: the package is installed (run-lab put it into dom0's image; if not, e.g. with LAB_IMAGES,
# `dpkg -i` of the payload's .deb here), and LAB_XENPVUSBD_ARGS (the host's environment), if given, is
# in the conffile /etc/default/xenpvusbd, the unit's EnvironmentFile: written, and the running daemon
# restarted to take it (once per boot).
pv_install() {
  if ! pv_pkg_check; then
    [ -f "/payload/${LAB_DEB:-none}" ] || return 1
    echo "pv_install: $(cat "$LAB_TMP/reason" 2>/dev/null); dpkg -i /payload/$LAB_DEB"
    dpkg -i "/payload/$LAB_DEB" || { reason "dpkg -i $LAB_DEB failed"; return 1; }
    pv_pkg_check || return 1
    PV_PKG_STATE="$PV_PKG_STATE; installed by dpkg -i in this boot"
  fi
  if [ -n "${LAB_XENPVUSBD_ARGS:-}" ] && [ ! -f $LAB_TMP/pv-args-set ]; then
    echo "XENPVUSBD_OPTS=\"$LAB_XENPVUSBD_ARGS\"" > $PV_DEFAULTS
    : > $LAB_TMP/pv-args-set
    if [ "$(pv_prop ActiveState)" = active ]; then
      systemctl restart xenpvusbd || { pv_log; reason "systemctl restart xenpvusbd (for XENPVUSBD_OPTS=\"$LAB_XENPVUSBD_ARGS\") failed"; return 1; }
    fi
    PV_PKG_STATE="$PV_PKG_STATE; XENPVUSBD_OPTS=\"$LAB_XENPVUSBD_ARGS\" in $PV_DEFAULTS"
  fi
  return 0
}

# pv_ensure: install if needed and start the service unless it runs. `systemctl start` of a Type=notify
# unit returns only after the daemon's READY=1, which it sends once it watches backend/vusb. Checks the
# unit's state and the journal's readiness line; sets the stage reason. Figure xenpvusbd-start-s.
pv_ensure() {
  local t0 st pid
  pv_install || return 1
  if [ "$(pv_prop ActiveState)" != active ]; then
    t0=$(lab_now)
    systemctl start xenpvusbd || { pv_log; reason "systemctl start xenpvusbd failed: $(pv_show ActiveState,SubState,Result)"; return 1; }
    figure xenpvusbd-start-s "$(lab_elapsed "$t0")" s
  fi
  st=$(pv_show ActiveState,SubState,Type,MainPID)
  pid=$(pv_pid)
  has_all "$st" ActiveState=active SubState=running Type=notify || { pv_log; reason "unit not active/running as Type=notify: $st"; return 1; }
  [ "${pid:-0}" -gt 0 ] || { reason "no MainPID: $st"; return 1; }
  [ "$(readlink /proc/$pid/exe)" = $PV_LIBDIR/xenpvusbd ] || { reason "MainPID $pid is not $PV_LIBDIR/xenpvusbd"; return 1; }
  # journald may take a moment to store the line the daemon wrote before READY=1
  wait_for 20 pv_journal_has "serving backend/vusb" || { pv_log; reason "no 'serving backend/vusb' line in the journal of pid $pid"; return 1; }
  ! command -v dotnet > /dev/null || { reason "dom0 has a dotnet ($(command -v dotnet)): the NativeAOT binaries must run without"; return 1; }
  if [ -n "${LAB_XENPVUSBD_ARGS:-}" ]; then
    tr '\0' ' ' < /proc/$pid/cmdline | grep -qF -- "$LAB_XENPVUSBD_ARGS" \
      || { reason "MainPID $pid runs without XENPVUSBD_OPTS \"$LAB_XENPVUSBD_ARGS\": $(tr '\0' ' ' < /proc/$pid/cmdline)"; return 1; }
  fi
  reason "$PV_PKG_STATE; systemd: $st; journal: serving backend/vusb; no .NET in dom0"
}

# pv_stop: `systemctl stop`, which must be clean: the unit inactive with Result=success, systemd's
# "Deactivated successfully" (exit status 0), the daemon's "stopped" line and no error in the journal.
# Figure xenpvusbd-stop-s.
pv_stop() {
  local t0 dt pid st log errs stopped
  pid=$(pv_pid)
  [ "${pid:-0}" -gt 0 ] || { reason "xenpvusbd is not running"; return 1; }
  t0=$(lab_now)
  systemctl stop xenpvusbd || { pv_log; reason "systemctl stop failed"; return 1; }
  dt=$(lab_elapsed "$t0")
  figure xenpvusbd-stop-s "$dt" s
  # (ExecMainStatus is no use here: systemd unloads the inactive unit and forgets it.)
  st=$(pv_show ActiveState,Result)
  has_all "$st" ActiveState=inactive Result=success || { pv_log; reason "not a clean stop: $st"; return 1; }
  log=$(journalctl -u xenpvusbd --since "@$((t0 / 1000000))" -o cat --no-pager 2>&1)
  # systemd says "Deactivated successfully" only if the main process exited with status 0 by itself
  echo "$log" | grep -q "Deactivated successfully" || { pv_log; reason "systemd did not report a successful exit"; return 1; }
  # "stopped: every controller and device released", or (controllers still connected) "stopped:
  # controllers left connected for the next xenpvusbd, their devices kept from dom0's drivers"
  echo "$log" | grep -q "stopped: " || { pv_log; reason "no 'stopped' line from pid $pid"; return 1; }
  stopped=$(echo "$log" | grep -m1 -o "stopped: .*")
  errs=$(journalctl -u xenpvusbd _PID="$pid" -p err --since "@$((t0 / 1000000))" -o cat --no-pager 2>&1 | grep -v '^-- ')
  [ -z "$errs" ] || { echo "$errs"; reason "errors while stopping: $(echo "$errs" | head -n1)"; return 1; }
  reason "pid $pid stopped in $dt s: $st, journal: $stopped; Deactivated successfully"
}

# pv_boot_check (stage boot/package, run by scenario.sh before any scenario): a dom0 that booted with
# the package installed has the daemon up and serving before the first guest is created. Nothing is
# started here: the package is installed (this run's .deb, files verified), the unit enabled (so
# multi-user.target wants it), systemd started it at boot (ExecMainStartTimestampMonotonic before this
# shell, scenario.sh, started: LAB_T0_UPTIME; no restart since), READY=1 reached (Type=notify,
# active/running; ActiveEnterTimestampMonotonic), no domain but dom0 exists, and backend/vusb is
# watched: nothing is under it yet, and a controller written there for a domain that does not exist
# (32000: backend/vusb/32000/0/state = 1) is answered at once: the daemon logs it as stale and removes
# it. (An InitWait answer needs a domain: `xenpvusb usb-hc-create` refuses dom0 as the frontend, and
# the first guest is what this must come before.)
# (lab-payload.service, which runs this, is not ordered after xenpvusbd: both start in the same boot
# transaction, so READY=1 may come after the payload started; the stage waits for it, starting nothing.)
# Figures: xenpvusbd-boot-start-s, xenpvusbd-boot-ready-s, lab-scenarios-start-s (seconds since the
# kernel started), xenpvusbd-stale-answer-s.
pv_boot_check() {
  local en st d_start d_ready sc_start wants doms t0 s n
  pv_pkg_check || return 1
  en=$(systemctl is-enabled xenpvusbd 2>&1)
  [ "$en" = enabled ] || { reason "$PV_PKG_STATE; systemctl is-enabled xenpvusbd: $en"; return 1; }
  wants=$(systemctl show -p Wants --value multi-user.target)
  case " $wants " in *" xenpvusbd.service "*) ;; *) reason "multi-user.target does not want xenpvusbd.service: $wants"; return 1;; esac
  doms=$(xl list 2>&1 | awk 'NR > 1 && $1 != "Domain-0" { print $1 }')
  [ -z "$doms" ] || { reason "domains other than dom0 exist already: $doms"; return 1; }
  wait_for 120 eval '[ "$(pv_prop ActiveState)" != activating ]'
  st=$(pv_show ActiveState,SubState,Type,NRestarts)
  has_all "$st" ActiveState=active SubState=running Type=notify NRestarts=0 \
    || { pv_log 30; reason "$PV_PKG_STATE; enabled; but the unit is not active/running as Type=notify (READY=1) with no restart: $st"; return 1; }
  d_start=$(pv_prop ExecMainStartTimestampMonotonic); d_ready=$(pv_prop ActiveEnterTimestampMonotonic)
  sc_start=$(awk -v t="${LAB_T0_UPTIME:-0}" 'BEGIN { printf "%d", t * 1e6 }')
  [ "${d_start:-0}" -gt 0 ] && [ "$sc_start" -gt 0 ] && [ "$d_start" -lt "$sc_start" ] \
    || { reason "xenpvusbd's start (+$d_start us) is not before the scenarios' shell started (+$sc_start us): not started by systemd at boot"; return 1; }
  figure xenpvusbd-boot-start-s "$(awk -v t=$d_start 'BEGIN { printf "%.1f", t / 1e6 }')" s
  figure xenpvusbd-boot-ready-s "$(awk -v t=$d_ready 'BEGIN { printf "%.1f", t / 1e6 }')" s
  figure lab-scenarios-start-s "$(awk -v t=$sc_start 'BEGIN { printf "%.1f", t / 1e6 }')" s
  pv_journal_has "serving backend/vusb" || { pv_log 30; reason "no 'serving backend/vusb' line from MainPID $(pv_pid)"; return 1; }
  # backend/vusb watched: nothing there yet; a controller of a domain that does not exist is answered
  n=$(xenstore-list /local/domain/0/backend/vusb 2>/dev/null | wc -l)
  [ "$n" = 0 ] || { xenstore-ls -f /local/domain/0/backend/vusb; reason "backend/vusb is not empty before any guest"; return 1; }
  local be=/local/domain/0/backend/vusb/32000/0
  t0=$(lab_now)
  # one node, one write (a write of several keys is not atomic, and the daemon answers the first)
  xenstore-write $be/state 1 || { reason "xenstore-write of $be/state failed"; return 1; }
  wait_for 20 eval "! xenstore-exists $be 2>/dev/null" \
    || { xenstore-ls -f $be; pv_log 20; xenstore-rm /local/domain/0/backend/vusb/32000; reason "the daemon did not answer a controller written under backend/vusb within 20 s"; return 1; }
  s=$(lab_elapsed "$t0")
  xenstore-exists /local/domain/0/backend/vusb/32000 2>/dev/null && xenstore-rm /local/domain/0/backend/vusb/32000
  wait_for 10 pv_journal_has "vusb 32000/0: the guest domain does not exist" || { pv_log 20; reason "$be went, but the daemon's journal does not say why"; return 1; }
  figure xenpvusbd-stale-answer-s "$s" s
  reason "$PV_PKG_STATE; enabled (multi-user.target wants it); systemd started it at +$(awk -v t=$d_start 'BEGIN { printf "%.1f", t / 1e6 }') s, READY=1 at +$(awk -v t=$d_ready 'BEGIN { printf "%.1f", t / 1e6 }') s, the scenarios' shell at +$(awk -v t=$sc_start 'BEGIN { printf "%.1f", t / 1e6 }') s; $st; no guest yet; backend/vusb empty, and a controller written there for the absent domain 32000 was removed by the daemon in $s s ('the guest domain does not exist; removing its stale controller')"
}
