# Scenario "sandbox": the unit's confinement as systemd 252 in dom0 rates it and as the running daemon
# has it; last in ALL, so it also sees every system call the filter refused during the other scenarios.
#   unit-exposure    `systemd-analyze security xenpvusbd.service` (figure unit-exposure; at most 2.5)
#   process          the daemon's /proc status: no capabilities, seccomp filter, no_new_privs, its own
#                    network namespace
#   no-denials       no seccomp kill of xenpvusbd this boot (systemd's status=31/SYS, the kernel's audit
#                    type=1326) and no restart that was not asked for

sb_exposure() {
  local out line x
  out=$(systemd-analyze security --no-pager xenpvusbd.service 2>&1)
  echo "$out" | grep -v '✓' | head -n 30
  line=$(echo "$out" | grep 'Overall exposure level')
  x=$(echo "$line" | sed -n 's/.*xenpvusbd.service: \([0-9.]*\).*/\1/p')
  [ -n "$x" ] || { reason "no exposure in: $(echo "$out" | tail -n 2 | tr '\n' ' ')"; return 1; }
  figure unit-exposure "$x" "(0-10)"
  awk -v x=$x 'BEGIN { exit !(x <= 2.5) }' || { reason "exposure $x > 2.5: ${line#*: }"; return 1; }
  reason "${line#*: }"
}

sb_process() {
  local pid st cap seccomp nnp net1 net pc
  pid=$(pv_pid)
  [ "${pid:-0}" -gt 0 ] || { reason "xenpvusbd not running"; return 1; }
  st=$(cat /proc/$pid/status)
  cap=$(echo "$st" | sed -n 's/^CapEff:\s*//p'); seccomp=$(echo "$st" | sed -n 's/^Seccomp:\s*//p'); nnp=$(echo "$st" | sed -n 's/^NoNewPrivs:\s*//p')
  net=$(readlink /proc/$pid/ns/net); net1=$(readlink /proc/1/ns/net)
  echo "$st" | grep -E '^(Cap|Seccomp|NoNewPrivs)'
  [ "$cap" = 0000000000000000 ] || { reason "CapEff $cap"; return 1; }
  [ "$(echo "$st" | sed -n 's/^CapBnd:\s*//p')" = 0000000000000000 ] || { reason "bounding set not empty"; return 1; }
  [ "$seccomp" = 2 ] || { reason "Seccomp: $seccomp (2 = filter)"; return 1; }
  [ "$nnp" = 1 ] || { reason "NoNewPrivs: $nnp"; return 1; }
  [ "$net" != "$net1" ] || { reason "same network namespace as PID 1 ($net)"; return 1; }
  # its own /proc (ProtectProc=, ProcSubset=pid): no xenfs, so no privcmd (hypercalls), and no /proc/sys
  [ ! -e /proc/$pid/root/proc/xen/privcmd ] || { reason "/proc/xen/privcmd exists in the daemon's namespace"; return 1; }
  [ ! -e /proc/$pid/root/proc/sys/kernel ] || { reason "/proc/sys is visible in the daemon's namespace (ProcSubset=pid)"; return 1; }
  pc=$(grep -c xenfs /proc/$pid/mountinfo)
  [ "$pc" = 0 ] || { reason "xenfs is mounted in the daemon's namespace"; return 1; }
  reason "MainPID $pid: CapEff=0 CapBnd=0, Seccomp=2, NoNewPrivs=1, network namespace $net (PID 1: $net1); its /proc: no xenfs, no privcmd, no /proc/sys"
}

sb_denials() {
  local j k
  j=$(journalctl -u xenpvusbd -b -o cat --no-pager 2>&1 | grep -E 'status=31/SYS|code=dumped')
  k=$(dmesg 2>/dev/null | grep -E 'type=1326|seccomp' | grep -i xenpvusbd)
  [ -z "$j$k" ] || { echo "$j"; echo "$k"; reason "seccomp or a signal stopped the daemon: $(echo "$j$k" | grep -m1 .)"; return 1; }
  reason "no seccomp kill of xenpvusbd this boot (journal and kernel log); restarts: $(pv_prop NRestarts) (restart scenario: 1 asked for by SIGKILL)"
}

if stage daemon -t 120 pv_ensure; then
  stage unit-exposure -t 120 sb_exposure
  stage process -t 30 sb_process
  stage no-denials -t 30 sb_denials
fi
