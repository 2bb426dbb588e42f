#!/bin/bash
# /payload/scenario.sh -- dom0 entry point, started by lab-run (systemd) after boot.
# Runs the scenarios named in /payload/lab.env (LAB_SCENARIOS), each in its own subshell, then copies
# the guest console logs and any crash lines of dom0/Xen to the console for the host.
read -r LAB_T0_UPTIME _ < /proc/uptime   # when the scenarios' shell started (s since boot): for boot/package
cd /payload
. /payload/lab.env
. /payload/guest-lib.sh
echo "LAB-SCENARIOS $LAB_SCENARIOS"
rc=0
# Before any scenario (so before the first xl create of the run): the package's daemon was enabled and
# started by systemd at boot, and serves.
( LAB_SCENARIO=boot; stage package -t 200 pv_boot_check ) || rc=1
for s in $LAB_SCENARIOS; do
  echo "SCENARIO-BEGIN $s"
  if [ -f "/payload/scenarios/$s.sh" ]; then
    ( LAB_SCENARIO=$s; . "/payload/scenarios/$s.sh" ) || rc=1
  else
    echo "STAGE $s/scenario FAIL 0.0s no scenarios/$s.sh in the payload"; rc=1
  fi
  echo "SCENARIO-END $s"
done
for d in $(xl list 2>/dev/null | awk 'NR > 2 { print $1 }'); do xl destroy "$d" 2>/dev/null; done
lab_stop_followers
lab_crash_scan
exit $rc
