# Scenario "unitprobe" (diagnostics, not in ALL): which of the unit's sandbox settings stops what.
#   access     for each hardening setting of packaging/systemd/xenpvusbd.service alone, and for all of
#              them together, a transient unit (systemd-run) tries what the daemon does first: read
#              /proc/xen/capabilities (or /sys/hypervisor, as the daemon does), open /dev/xen/{gntdev,evtchn,xenbus} and a usbfs node, connect to
#              xenstored's socket
#   bisect     if the real unit does not start: one drop-in per setting that undoes just that setting
#              (boolean -> no, list -> reset), and whether the daemon starts then
# The settings are the [Service] lines after the "Least privilege" comment of the unit.

UP=/run/lab-unitprobe   # not in /tmp: the probe units have a private /tmp
mkdir -p $UP

up_settings() {
  sed -n '/^# --- Least privilege/,/^\[Install\]/p' $PV_UNIT | grep -E '^[A-Za-z]+=' > $UP/settings
  [ -s $UP/settings ] || { reason "no hardening settings found in the unit"; return 1; }
  reason "$(wc -l < $UP/settings) settings"
}

UP_TEST='r=""
if [ -n "$UP_VERBOSE" ]; then ls -la /proc/xen/; grep -E " /proc(/xen)? " /proc/self/mountinfo; cat /proc/xen/capabilities; id; grep -E "^(Cap|Seccomp|NoNewPrivs)" /proc/self/status; fi
if c=$(cat /proc/xen/capabilities 2>/dev/null); then case $c in *control_d*) ;; *) r="$r no-control_d($c)";; esac
else [ "$(cat /sys/hypervisor/type 2>&1)" = xen ] && [ "$(cat /sys/hypervisor/uuid 2>&1)" = 00000000-0000-0000-0000-000000000000 ] || r="$r not-dom0(no /proc/xen/capabilities, /sys/hypervisor: $(cat /sys/hypervisor/type /sys/hypervisor/uuid 2>&1 | tr "\n" " "))"; fi
for d in gntdev evtchn xenbus; do ( exec 3<> /dev/xen/$d ) 2> /dev/null || r="$r $d"; done
u=$(ls /dev/bus/usb/*/* 2> /dev/null | head -n 1); ( exec 3<> $u ) 2> /dev/null || r="$r usbfs($u)"
[ -S /run/xenstored/socket ] && { xenstore-read /local/domain/0/name > /dev/null 2>&1 || r="$r xenstored"; }
echo "${r:- ok}"'

# up_run SETTING...: the test in a oneshot service with those settings (a unit file in /run: dom0 has
# no D-Bus for systemd-run); prints its verdict (UP_VERBOSE=1: everything it printed).
up_run() {
  local s u=lab-unitprobe
  mkdir -p $UP
  { [ -n "${UP_VERBOSE:-}" ] && echo "UP_VERBOSE=1"; printf '%s\n' "$UP_TEST"; } > $UP/test.sh
  { echo "[Service]"; echo "Type=oneshot"; echo "ExecStart=/bin/bash $UP/test.sh"
    echo "StandardOutput=file:$UP/out"; echo "StandardError=file:$UP/out"
    for s; do echo "$s"; done; } > /run/systemd/system/$u.service
  rm -f $UP/out
  systemctl daemon-reload
  timeout 60 systemctl start $u 2> $UP/err || { echo " unit failed: $(tail -n 1 $UP/err) $(journalctl -u $u -n 3 -o cat --no-pager | tr '\n' ' ')"; return; }
  if [ -n "${UP_VERBOSE:-}" ]; then cat $UP/out; else tail -n 1 $UP/out 2> /dev/null || echo " no output"; fi
}

up_access() {
  local s v all=() bad=
  echo "  (no setting) -> $(up_run)"
  while IFS= read -r s; do
    all+=("$s")
    v=$(up_run "$s")
    echo "  $s -> $v"
    [ "$v" = " ok" ] || { bad="$bad [$s:$v]"; echo "PROBE-FAIL $s ->$v"; }
  done < $UP/settings
  UP_VERBOSE=1 up_run "${all[@]}" | sed 's/^/  all: /'
  v=$(up_run "${all[@]}")
  echo "PROBE-ALL $v"
  [ "$v" = " ok" ] && [ -z "$bad" ] || { reason "alone:${bad:- none denied}; all together:$v"; return 1; }
  reason "every setting alone and all together: ok"
}

# The neutral value of a setting: boolean-like -> no, a list -> empty (reset).
up_neutral() {
  local k=${1%%=*} v=${1#*=}
  case $k in
    User|UMask|KeyringMode|ReadWritePaths|AmbientCapabilities) return 1;;
    CapabilityBoundingSet) echo "CapabilityBoundingSet=~";;
    DevicePolicy) echo "DevicePolicy=auto";;
    ProtectSystem|ProtectHome|ProtectProc) echo "$k=no";;
    *) case $v in yes|true) echo "$k=no";; *) echo "$k=";; esac;;
  esac
}

up_bisect() {
  local s n fixes=
  mkdir -p /run/systemd/system/xenpvusbd.service.d
  systemctl stop xenpvusbd 2> /dev/null; systemctl reset-failed xenpvusbd 2> /dev/null
  if timeout 60 systemctl start xenpvusbd; then reason "the unit starts as it is"; return 0; fi
  pv_log 15
  while IFS= read -r s; do
    n=$(up_neutral "$s") || continue
    printf '[Service]\n%s\n' "$n" > /run/systemd/system/xenpvusbd.service.d/probe.conf
    systemctl daemon-reload
    systemctl reset-failed xenpvusbd 2> /dev/null
    if timeout 60 systemctl start xenpvusbd; then
      echo "PROBE-FIX $n: the daemon starts"; fixes="$fixes $n"
      systemctl stop xenpvusbd
    else
      echo "  $n: still fails"; systemctl stop xenpvusbd 2> /dev/null
    fi
  done < $UP/settings
  rm -f /run/systemd/system/xenpvusbd.service.d/probe.conf; systemctl daemon-reload; systemctl reset-failed xenpvusbd 2> /dev/null
  reason "the unit does not start; undoing one setting makes it start:${fixes:- none}"
  return 1
}

up_clean() { rm -f /run/systemd/system/lab-unitprobe.service; systemctl daemon-reload; }

if stage install -t 120 pv_install && stage settings up_settings; then
  stage access -t 900 up_access
  up_clean
  stage bisect -t 1500 up_bisect
fi
