# Scenario "restart": the daemon dies or restarts under a guest. A guest (real xen-hcd) reads its stick;
# after 8 MiB, `systemctl kill -s KILL xenpvusbd` (systemd restarts it: Restart=on-failure). The read in
# progress must complete or fail within 120 s; then, with no command given in dom0, the guest reads
# the stick whole again (its script waits for a disk, re-enumerated or not); dom0 never gets a driver on
# the stick in between (fork-free watch of /sys/bus/usb/drivers/*/<busid>:*); figures: seconds without
# service (kill to the guest's I/O moving again), the guest's own stall, kill to the new daemon serving.
# Then `systemctl restart xenpvusbd` with the guest idle: the guest reads whole again. Last, a controller
# of a domain destroyed while the daemon was stopped is not served again and its stick not claimed.

RS=$LAB_TMP/restart
mkdir -p $RS

# rs_watch_start BUSID FILE [ALL]: in the background, every 0.1 s (builtins only), note in FILE each
# change of the drivers bound to the device's interfaces other than usbfs (all drivers with ALL=all),
# and whether dom0 has a block device on it. rs_watch_stop FILE ends it; FILE.n holds the sample count.
rs_watch_start() {
  local b=$1 f=$2 all=${3:-} serial=${4:-}
  : > $f
  ( n=0 last=
    while :; do
      cur=
      for x in /sys/bus/usb/drivers/*/"$b":*; do
        [ -e "$x" ] || continue
        x=${x%/*}; x=${x##*/}
        [ "$x" = usbfs ] && [ "$all" != all ] && continue
        cur="$cur $x"
      done
      [ -n "$serial" ] && usb_has_disk $serial && cur="$cur disk"
      if [ "$cur" != "$last" ]; then echo "${EPOCHREALTIME/[.,]/} ${cur:- none}" >> $f; last=$cur; fi
      n=$((n + 1)); [ $((n % 20)) = 0 ] && echo $n > $f.n
      lab_sleep 0.1
    done ) &
  echo $! > $f.pid
}
rs_watch_stop() { [ -f $1.pid ] && killtree "$(cat $1.pid)"; rm -f $1.pid; }

rs_guest() {
  cat > $RS/guest.sh <<'G'
wait_usb_disk 300 || exit 0
io_watch &
read_marked read1
read_again read2 900
pvfront xs-wait data/lab-read3 2400 || { result "no read3 signal"; exit 0; }
read_again read3 900
G
  guest_create rsg $RS/guest.sh || { reason "xl create failed"; return 1; }
  guest_wait rsg 'GUEST-BEGIN' 120 || { reason "guest did not reach its script"; return 1; }
  xl domid rsg > $RS/rsg.id
  xenpvusb usb-hc-create rsg 2 8 || { pv_log 20; reason "usb-hc-create failed"; return 1; }
  wait_for 60 sh -c "xenstore-read /local/domain/0/backend/vusb/$(cat $RS/rsg.id)/0/state | grep -qx 4" \
    || { pv_log 20; reason "controller not Connected"; return 1; }
  local d
  d=$(usb_dev_by_serial $LAB_STICK_EHCI_SERIAL) || { reason "EHCI stick not found"; return 1; }
  echo ${d##*/} > $RS/busid
  xenpvusb usb-attach rsg 0 1 ${d##*/} || { reason "usb-attach failed"; return 1; }
  guest_wait rsg 'GUEST-RESULT read1-start' 180 || { pv_log 20; reason "the guest did not see the stick"; return 1; }
  reason "guest rsg (domain $(cat $RS/rsg.id)) reads stick ${d##*/} on controller 0 port 1"
}

rs_kill() {
  local b pid
  read -r b < $RS/busid
  guest_wait rsg 'GUEST-RESULT read1-progress|GUEST-RESULT read1 ' 300 || { pv_log 20; reason "the guest's read did not get going"; return 1; }
  guest_log rsg | grep -q 'GUEST-RESULT read1 ' && { reason "the read ended before the kill"; return 1; }
  pid=$(pv_pid); echo $pid > $RS/pid0
  rs_watch_start $b $RS/watch-kill "" $LAB_STICK_EHCI_SERIAL
  ( guest_wait rsg 'GUEST-RESULT io-resume' 1200 && lab_now > $RS/t-resume ) &
  lab_now > $RS/t-kill
  systemctl kill -s KILL xenpvusbd || { reason "systemctl kill failed"; return 1; }
  # what a successor finds (for the record): the recovery journals and the frontend's nodes
  ls -la /run/xenpvusb/ 2>&1
  xenstore-ls -f /local/domain/$(cat $RS/rsg.id)/device/vusb 2>&1
  reason "SIGKILL to MainPID $pid after the guest read 8 MiB"
}

# The read that was in progress ends (completes or fails) within 120 s of the kill.
rs_read_ends() {
  local t0 left res sum
  read -r t0 < $RS/t-kill
  left=$(( 120 - ( ${EPOCHREALTIME/[.,]/} - t0 ) / 1000000 ))
  [ $left -ge 1 ] || left=1
  guest_wait rsg 'GUEST-RESULT read1 ' $left || { pv_log 30; reason "the read in progress neither completed nor failed within 120 s of the kill"; return 1; }
  figure restart-read-ended-s "$(lab_elapsed $t0)" s
  res=$(guest_log rsg | grep 'GUEST-RESULT read1 ' | tail -n1 | cut -d' ' -f3-)
  sum=$(guest_result rsg read1 sha256)
  if [ -n "$sum" ]; then
    [ "$sum" = "$LAB_STICK_EHCI_SHA256" ] || { reason "the read completed with the wrong data: $res"; return 1; }
    reason "completed, checksum OK, $(lab_elapsed $t0) s after the kill"
  else
    reason "failed $(lab_elapsed $t0) s after the kill: $res"
  fi
}

rs_daemon_back() {
  local t0 pid0 pid ts
  read -r t0 < $RS/t-kill; read -r pid0 < $RS/pid0
  wait_for 60 eval '[ "$(pv_prop ActiveState)" = active ] && [ "$(pv_pid)" != "$pid0" ] && [ "$(pv_pid)" != 0 ]' \
    || { pv_log 30; reason "systemd did not restart xenpvusbd within 60 s: $(pv_show ActiveState,SubState,Result,NRestarts)"; return 1; }
  pid=$(pv_pid)
  wait_for 30 pv_journal_has "serving backend/vusb" || { pv_log 30; reason "the new daemon ($pid) does not serve"; return 1; }
  ts=$(journalctl -u xenpvusbd _PID=$pid -o short-unix --no-pager 2>/dev/null | grep -m1 'serving backend/vusb' | cut -d' ' -f1)
  [ -n "$ts" ] && figure restart-daemon-serving-s "$(awk -v a=$t0 -v b=$ts 'BEGIN { printf "%.1f", b - a / 1e6 }')" s
  journalctl -u xenpvusbd _PID=$pid -o cat --no-pager 2>/dev/null | grep -E "vusb $(cat $RS/rsg.id)/" | head -n 20
  reason "new MainPID $pid ($(pv_show NRestarts)), serving $(awk -v a=$t0 -v b=${ts:-0} 'BEGIN { printf "%.1f", b - a / 1e6 }') s after the kill"
}

rs_reread() {
  local sum
  guest_wait rsg 'GUEST-RESULT read2 ' 1000 || { pv_log 40; reason "the guest did not read the stick again"; return 1; }
  guest_log rsg | grep -E 'GUEST-RESULT (read2|disk)'
  sum=$(guest_result rsg read2 sha256)
  [ -n "$sum" ] || { pv_log 40; reason "the guest could not read the stick again: $(guest_log rsg | grep 'GUEST-RESULT read2 ' | cut -d' ' -f3-)"; return 1; }
  [ "$sum" = "$LAB_STICK_EHCI_SHA256" ] || { reason "checksum mismatch: $sum"; return 1; }
  reason "read whole again with no command given: $(guest_log rsg | grep 'GUEST-RESULT read2 ' | tail -n1 | cut -d' ' -f3-5), checksum OK"
}

rs_gap() {
  local t0 t1 st
  read -r t0 < $RS/t-kill
  wait_for 30 test -s $RS/t-resume || { reason "the guest's I/O never moved again (no io-resume)"; return 1; }
  read -r t1 < $RS/t-resume
  st=$(guest_result rsg io-resume stalled)
  figure restart-gap-s "$(awk -v a=$t0 -v b=$t1 'BEGIN { printf "%.1f", (b - a) / 1e6 }')" s
  [ -n "$st" ] && figure restart-guest-stall-s "$st" s
  reason "kill -> the guest's reads moving again: $(awk -v a=$t0 -v b=$t1 'BEGIN { printf "%.1f", (b - a) / 1e6 }') s (dom0 clock); the guest's reads stood still $st s"
}

# rs_no_driver FILE: the watch saw no dom0 driver (nor block device) on the stick.
rs_no_driver() {
  local n
  rs_watch_stop $1
  n=$(cat $1.n 2>/dev/null)
  [ -s $1 ] && { cat $1; reason "dom0 got the stick in between: $(head -n1 $1 | cut -d' ' -f2-) (of ${n:-?} samples)"; return 1; }
  [ "${n:-0}" -gt 10 ] || { reason "the watch took only ${n:-0} samples"; return 1; }
  reason "no dom0 driver or block device on $(cat $RS/busid) in ${n} samples (every 0.1 s)"
}

# systemctl restart with the guest idle; then the guest is asked to read again.
rs_restart() {
  local b pid0 pid t0 id sum
  read -r b < $RS/busid; read -r id < $RS/rsg.id
  pid0=$(pv_pid)
  rs_watch_start $b $RS/watch-restart "" $LAB_STICK_EHCI_SERIAL
  t0=$(lab_now)
  systemctl restart xenpvusbd || { pv_log 30; reason "systemctl restart failed: $(pv_show ActiveState,SubState,Result)"; return 1; }
  figure restart-systemctl-s "$(lab_elapsed $t0)" s
  pid=$(pv_pid)
  [ "$pid" != "$pid0" ] && [ "$pid" != 0 ] || { reason "no new MainPID after systemctl restart ($pid0 -> $pid)"; return 1; }
  xenstore-write /local/domain/$id/data/lab-read3 1 || { reason "cannot signal the guest"; return 1; }
  guest_wait rsg 'GUEST-RESULT read3 ' 1000 || { pv_log 40; reason "no read after the restart"; return 1; }
  sum=$(guest_result rsg read3 sha256)
  [ "$sum" = "$LAB_STICK_EHCI_SHA256" ] || { pv_log 40; reason "the read after systemctl restart: $(guest_log rsg | grep 'GUEST-RESULT read3 ' | cut -d' ' -f3-)"; return 1; }
  reason "MainPID $pid0 -> $pid; the idle guest then read whole ($(guest_log rsg | grep 'GUEST-RESULT read3 ' | tail -n1 | cut -d' ' -f3-4)), checksum OK"
}

rs_no_hung() {
  local h
  h=$(guest_log rsg | grep -E 'blocked for more than|hung_task|INFO: task' | head -n 3)
  [ -z "$h" ] || { reason "hung tasks in the guest: $(echo "$h" | head -n1)"; return 1; }
  reason "no hung-task reports in the guest's log"
}

# A second, small guest with stick LABEHCI03 on its own controller; the daemon is stopped, the guest
# destroyed, the daemon started: that controller must not be served again nor the stick claimed.
rs_dead_domain() {
  local b sid before t0 log
  cat > $RS/small.sh <<'G'
wait_usb_disk 300 && result ready
G
  GUEST_MEMORY=256 guest_create rss $RS/small.sh || { reason "xl create failed"; return 1; }
  guest_wait rss 'GUEST-BEGIN' 120 || { reason "small guest did not reach its script"; return 1; }
  sid=$(xl domid rss); echo $sid > $RS/rss.id
  b=$(usb_dev_by_serial $LAB_STICK_EHCI3_SERIAL) || { reason "LABEHCI03 not found"; return 1; }
  b=${b##*/}; echo $b > $RS/busid3
  xenpvusb usb-hc-create rss 2 4 || { reason "usb-hc-create failed"; return 1; }
  xenpvusb usb-attach rss 0 1 $b || { reason "usb-attach failed"; return 1; }
  guest_wait rss 'GUEST-RESULT ready' 180 || { pv_log 20; reason "the small guest did not see its stick"; return 1; }
  systemctl stop xenpvusbd || { pv_log 20; reason "systemctl stop failed"; return 1; }
  xl destroy rss || { reason "xl destroy failed"; return 1; }
  guest_unfollow rss
  before=$(usb_drivers $b)
  xenstore-exists /local/domain/0/backend/vusb/$sid 2>/dev/null && echo "backend/vusb/$sid is there while the daemon is stopped"
  rs_watch_start $b $RS/watch-dead all
  t0=$(lab_now); echo $t0 > $RS/t-start
  systemctl start xenpvusbd || { rs_watch_stop $RS/watch-dead; pv_log 20; reason "systemctl start failed"; return 1; }
  wait_for 15 eval "! xenstore-exists /local/domain/0/backend/vusb/$sid 2>/dev/null" \
    || { rs_watch_stop $RS/watch-dead; xenstore-ls -f /local/domain/0/backend/vusb/$sid | head; reason "backend/vusb/$sid of the dead domain is still there 15 s after the start"; return 1; }
  wait_for 10 usb_bound_to $b usb-storage
  lab_sleep 3
  rs_watch_stop $RS/watch-dead
  cat $RS/watch-dead
  grep -q usbfs $RS/watch-dead && { reason "the new daemon claimed $b (usbfs bound) for the dead domain $sid"; return 1; }
  log=$(journalctl -u xenpvusbd _PID=$(pv_pid) -o cat --no-pager 2>/dev/null)
  echo "$log" | grep -E "vusb $sid/|usb $b:" | head -n 10
  echo "$log" | grep -qE "usb $b: (opened|claimed port|took over)|vusb $sid/0: (port [0-9]+: $b attached|connected|re-adopted|USB [12]\.0 controller)" \
    && { reason "the new daemon served domain $sid or claimed $b: $(echo "$log" | grep -m1 -E "usb $b: (opened|claimed|took)|vusb $sid/0: (port|connected|re-adopted|USB)")"; return 1; }
  usb_bound_to $b usb-storage && usb_has_disk $LAB_STICK_EHCI3_SERIAL || { reason "the stick is not back with usb-storage in dom0 (drivers: $(usb_drivers $b); before the start: ${before:-none})"; return 1; }
  reason "backend/vusb/$sid removed, never served; $b never claimed, with usb-storage in dom0 (before the start: ${before:-no driver})"
}

rs_cleanup() {
  local g id
  xenpvusb usb-hc-destroy rsg 0 > /dev/null 2>&1
  for g in rsg rss; do
    id=; [ -f $RS/$g.id ] && read -r id < $RS/$g.id
    guest_destroy $g > /dev/null
  done
  for f in $RS/watch-*.pid; do [ -f "$f" ] && rs_watch_stop ${f%.pid}; done
  [ "$(pv_prop ActiveState)" = active ] || systemctl start xenpvusbd
  for g in rsg rss; do
    id=; [ -f $RS/$g.id ] && read -r id < $RS/$g.id
    [ -n "$id" ] || continue
    wait_for 15 eval "! xenstore-exists /local/domain/0/backend/vusb/$id 2>/dev/null" \
      || { echo "restart: backend/vusb/$id still there 15 s after its domain died; removing it by hand"; xenstore-rm /local/domain/0/backend/vusb/$id; }
  done
  if ! wait_for 60 eval 'usb_has_disk $LAB_STICK_EHCI_SERIAL && usb_has_disk $LAB_STICK_EHCI3_SERIAL'; then
    pv_log 20
    for g in $LAB_STICK_EHCI_SERIAL $LAB_STICK_EHCI3_SERIAL; do lab_recover_stick $g; done
    reason "dom0 did not get both sticks back by itself (replugged in QEMU for the next scenarios)"; return 1
  fi
  reason "guests destroyed, both sticks in dom0, xenpvusbd $(pv_prop ActiveState)"
}

if stage daemon -t 120 pv_ensure; then
  if stage guest -t 420 rs_guest && stage kill-mid-read -t 360 rs_kill; then
    read_ended=0
    stage read-ends -t 150 rs_read_ends && read_ended=1
    stage daemon-restarted -t 120 rs_daemon_back
    if [ $read_ended = 1 ]; then
      stage read-again -t 1060 rs_reread
      stage service-gap -t 60 rs_gap
    else
      # a guest whose read hangs cannot read again; its hung tasks are reported below
      skip read-again "the read in progress at the kill never ended (guest hung)"
      skip service-gap "the guest's I/O did not resume"
    fi
    stage no-dom0-driver-after-kill -t 30 rs_no_driver $RS/watch-kill
    if [ $read_ended = 1 ] && stage systemctl-restart -t 1100 rs_restart; then
      stage no-dom0-driver-during-restart -t 30 rs_no_driver $RS/watch-restart
    else
      [ $read_ended = 1 ] || skip systemctl-restart "the guest is hung since the kill"
    fi
    stage no-hung-tasks -t 30 rs_no_hung
    stage dead-domain-not-served -t 400 rs_dead_domain
  fi
  stage cleanup -t 240 rs_cleanup
fi
