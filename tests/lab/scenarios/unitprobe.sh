# Scenario "unitprobe" (diagnostics, not in ALL): which of the unit's sandbox settings stops what.
#   access     for each hardening setting of packaging/systemd/xenpvusbd.service alone, and for all of
#              them together, a transient unit (systemd-run) tries what the daemon does first: read
#              /proc/xen/capabilities, open /dev/xen/{gntdev,evtchn,xenbus} and a usbfs node, connect to
#              xenstored's socket
#   bisect     if the real unit does not start: one drop-in per setting that undoes just that setting
#              (boolean -> no, list -> reset), and whether the daemon starts then
# The settings are the [Service] lines after the "Least privilege" comment of the unit.

UP=$LAB_TMP/unitprobe
mkdir -p $UP

up_settings() {
  sed -n '/^# --- Least privilege/,/^\[Install\]/p' /payload/xenpvusbd.service | grep -E '^[A-Za-z]+=' > $UP/settings
  [ -s $UP/settings ] || { reason "no hardening settings found in the unit"; return 1; }
  reason "$(wc -l < $UP/settings) settings"
}

UP_TEST='r=""
cat /proc/xen/capabilities > /dev/null 2>&1 || r="$r capabilities"
for d in gntdev evtchn xenbus; do ( exec 3<> /dev/xen/$d ) 2> /dev/null || r="$r $d"; done
u=$(ls /dev/bus/usb/*/* 2> /dev/null | head -n 1); ( exec 3<> $u ) 2> /dev/null || r="$r usbfs($u)"
[ -S /run/xenstored/socket ] && { xenstore-read /local/domain/0/name > /dev/null 2>&1 || r="$r xenstored"; }
echo "${r:- ok}"'

# up_run SETTING...: the test in a transient service with those properties; prints its verdict.
up_run() {
  local args=() s
  for s; do args+=(-p "$s"); done
  timeout 60 systemd-run --quiet --wait --pipe --collect "${args[@]}" /bin/bash -c "$UP_TEST" 2>&1 | tail -n 1
}

up_access() {
  local s v all=() bad=
  while IFS= read -r s; do
    all+=("$s")
    v=$(up_run "$s")
    echo "  $s -> $v"
    [ "$v" = " ok" ] || { bad="$bad [$s:$v]"; echo "PROBE-FAIL $s ->$v"; }
  done < $UP/settings
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

if stage install -t 120 pv_install && stage settings up_settings; then
  stage access -t 900 up_access
  stage bisect -t 1500 up_bisect
fi
