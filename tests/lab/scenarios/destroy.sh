# Scenario "destroy": domain death is final. Two guests, each with its own controller made by
# `xenpvusb usb-hc-create` and its own EHCI stick, both read their stick whole; `xl destroy` of one in
# the middle of its read. The other finishes with the right checksum; the dead guest's stick is back
# in dom0 (usb-storage bound, block device there; figure destroy-handback-s from `xl destroy`
# returning, aim 2 s); no backend or frontend nodes are left for the dead domain; the daemon never
# opens or claims that stick again for it; usb-list-assignable-devices lists it again and it can be
# attached to the surviving guest's controller (which reads it whole); same MainPID throughout. The
# surviving guest is then destroyed too, idle (second handback figure).

DS=$LAB_TMP/destroy
mkdir -p $DS

ds_guests() {
  # d1 reads its stick once; d2 reads its own, then waits for a second disk (the dead guest's stick,
  # attached to it later) and reads that whole too.
  cat > $DS/d1.sh <<'G'
wait_usb_disk 300 || exit 0
read_marked read1
G
  cat > $DS/d2.sh <<'G'
wait_usb_disk 300 || exit 0
read_marked read1
NOT_DISK=$DISK wait_usb_disk 900 || exit 0
result "disk2 dev=$DISK busid=$BUSID"
read_marked read2
G
  guest_create dsa $DS/d1.sh || { reason "xl create dsa failed"; return 1; }
  guest_create dsb $DS/d2.sh || { reason "xl create dsb failed"; return 1; }
  guest_wait dsa 'GUEST-BEGIN' 120 && guest_wait dsb 'GUEST-BEGIN' 120 || { reason "a guest did not reach its script"; return 1; }
  xl domid dsa > $DS/dsa.id && xl domid dsb > $DS/dsb.id
  reason "guests dsa (domain $(cat $DS/dsa.id)) and dsb (domain $(cat $DS/dsb.id)) up"
}

ds_hc() {
  local g id
  for g in dsa dsb; do
    xenpvusb usb-hc-create $g 2 8 || { pv_log 20; reason "usb-hc-create $g failed"; return 1; }
  done
  for g in dsa dsb; do
    read -r id < $DS/$g.id
    wait_for 60 sh -c "xenstore-read /local/domain/0/backend/vusb/$id/0/state | grep -qx 4" \
      || { pv_log 20; reason "controller of $g did not reach Connected"; return 1; }
  done
  reason "one controller each, both Connected to xen-hcd"
}

# dsb's stick first, so that its read is under way when dsa's starts.
ds_attach() {
  local a b
  a=$(usb_dev_by_serial $LAB_STICK_EHCI_SERIAL) && b=$(usb_dev_by_serial $LAB_STICK_EHCI3_SERIAL) \
    || { reason "EHCI sticks not found"; return 1; }
  a=${a##*/} b=${b##*/}
  echo $a > $DS/busid-a; echo $b > $DS/busid-b
  xenpvusb usb-attach dsb 0 1 $b || { reason "usb-attach dsb failed"; return 1; }
  guest_wait dsb 'GUEST-RESULT read1-start' 180 || { pv_log 20; reason "dsb did not see its disk"; return 1; }
  xenpvusb usb-attach dsa 0 1 $a || { reason "usb-attach dsa failed"; return 1; }
  guest_wait dsa 'GUEST-RESULT read1-start' 180 || { pv_log 20; reason "dsa did not see its disk"; return 1; }
  reason "LABEHCI01 $a -> dsa, LABEHCI03 $b -> dsb; both reading"
}

# xl destroy dsa after 8 MiB of its read; time until dom0 has the stick back (fork-free polling):
# until usb-storage is bound to it again (the daemon's part: figure destroy-handback-s, aim 2 s) and
# until its block device is there (plus usb-storage's own settle delay and SCSI scan in dom0).
ds_destroy() {
  local a t0 dt dd pid n=0 up up_ret kt
  read -r a < $DS/busid-a
  guest_wait dsa 'GUEST-RESULT read1-progress|GUEST-RESULT read1 ' 300 || { pv_log 20; reason "dsa's read did not get going"; return 1; }
  guest_log dsa | grep -q 'GUEST-RESULT read1 ' && { reason "dsa's read ended before the destroy"; return 1; }
  guest_log dsb | grep -q 'GUEST-RESULT read1 ' && { reason "dsb's read ended before the destroy: the reads did not overlap"; return 1; }
  pid=$(pv_pid); echo $pid > $DS/pid
  lab_now > $DS/t-destroy
  read -r up _ < /proc/uptime; echo "destroy: xl destroy dsa begins at dom0 uptime $up"
  xl destroy dsa || { reason "xl destroy failed"; return 1; }
  t0=$(lab_now); echo $t0 > $DS/t-destroyed
  read -r up _ < /proc/uptime; echo "destroy: xl destroy dsa returned at dom0 uptime $up (the journal's monotonic clock)"
  up_ret=$up
  # (the console follower is stopped afterwards: guest_unfollow takes seconds, which would count here)
  until usb_bound_to $a usb-storage; do
    n=$((n + 1))
    [ $n -gt 1200 ] && { pv_log 30; reason "usb-storage not bound to the stick within 60 s of xl destroy (drivers: $(usb_drivers $a))"; return 1; }
    lab_sleep 0.05
  done
  dt=$(lab_elapsed $t0)
  read -r up _ < /proc/uptime; echo "destroy: usb-storage bound to $a at dom0 uptime $up"
  until usb_has_disk $LAB_STICK_EHCI_SERIAL; do
    n=$((n + 1))
    [ $n -gt 1200 ] && { pv_log 30; reason "usb-storage bound after $dt s, but no block device within 60 s of xl destroy"; return 1; }
    lab_sleep 0.05
  done
  dd=$(lab_elapsed $t0)
  guest_unfollow dsa
  # the kernel's own time of usb-storage's probe, against the uptime at xl destroy's return
  kt=$(dmesg | grep "usb-storage $a:1.0: USB Mass Storage device detected" | tail -n 1 | sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p')
  [ -n "$kt" ] && figure destroy-handback-kernel-s "$(awk -v a=$up_ret -v b=$kt 'BEGIN { printf "%.2f", b - a }')" s
  echo $dt > $DS/handback
  figure destroy-handback-s $dt s
  figure destroy-handback-disk-s $dd s
  journalctl -u xenpvusbd --since "@$(( $(cat $DS/t-destroy) / 1000000 - 1))" -o short-monotonic --no-pager | grep -E "usb $a:|vusb $(cat $DS/dsa.id)/" | head -n 12
  reason "stick $a bound to usb-storage again $dt s after xl destroy returned, /dev/$(usb_disk_by_serial $LAB_STICK_EHCI_SERIAL) back after $dd s$(journalctl -u xenpvusbd --since "@$(( $(cat $DS/t-destroy) / 1000000 - 1))" -o cat --no-pager | grep -m1 -oE "handed back to dom0 in [0-9]+ ms" | sed 's/^/; daemon: /')"
}

ds_handback_2s() {
  local dt
  read -r dt < $DS/handback || { reason "no handback time"; return 1; }
  awk -v d=$dt 'BEGIN { exit !(d <= 2.0) }' || { reason "usb-storage bound again $dt s after xl destroy: > 2 s"; return 1; }
  reason "usb-storage bound again $dt s after xl destroy: <= 2 s"
}

ds_survivor() {
  local sum mbps
  guest_wait dsb 'GUEST-RESULT read1 ' 900 || { pv_log 30; reason "dsb's read did not finish"; return 1; }
  sum=$(guest_result dsb read1 sha256); mbps=$(guest_result dsb read1 mbps)
  [ -n "$mbps" ] || { reason "dsb's read failed: $(guest_log dsb | grep 'GUEST-RESULT read1 ')"; return 1; }
  [ "$sum" = "$LAB_STICK_EHCI3_SHA256" ] || { reason "checksum mismatch in dsb: $sum"; return 1; }
  figure destroy-survivor-MBps $mbps MB/s
  reason "dsb read its stick whole while dsa died: $mbps MB/s, checksum OK"
}

# ds_nodes_gone ID: neither backend/vusb/ID nor the domain's device/vusb is left (waits up to 10 s).
ds_nodes_gone() {
  local id=$1 t0 left
  t0=$(lab_now)
  wait_for 10 eval "! xenstore-exists /local/domain/0/backend/vusb/$id 2>/dev/null && ! xenstore-exists /local/domain/$id/device/vusb 2>/dev/null" \
    || { left=$(xenstore-ls -f /local/domain/0/backend/vusb/$id 2>/dev/null | head -n 12; xenstore-ls -f /local/domain/$id/device/vusb 2>/dev/null | head -n 4)
         echo "$left"; pv_log 20; reason "nodes left 10 s later: $(echo "$left" | head -n 3 | tr '\n' ';')"; return 1; }
  reason "backend/vusb/$id and /local/domain/$id/device/vusb gone ($(lab_elapsed $t0) s after the check began)"
}

# After its release, the stick was never opened or attached again for the dead domain.
ds_no_reclaim() {
  local a id t0 log after
  read -r a < $DS/busid-a; read -r id < $DS/dsa.id; read -r t0 < $DS/t-destroy
  log=$(journalctl -u xenpvusbd --since "@$((t0 / 1000000 - 1))" -o cat --no-pager 2>&1)
  echo "$log" | grep -E "usb $a:|vusb $id/" | head -n 20
  # the release: the daemon hands the stick back ("handed back to dom0", or the older "released")
  echo "$log" | grep -qE "usb $a: (handed back|released)" || { reason "no 'usb $a: handed back/released' line after the destroy"; return 1; }
  after=$(echo "$log" | sed -n -E "/usb $a: (handed back|released)/,\$p" | tail -n +2 \
    | grep -E "usb $a: (opened|claimed port|took over)|vusb $id/0: (port [0-9]+: $a attached|connected|re-adopted)")
  [ -z "$after" ] || { reason "after its release: $(echo "$after" | head -n1)"; return 1; }
  usb_bound_to $a usb-storage || { reason "the stick is not bound to usb-storage any more: $(usb_drivers $a)"; return 1; }
  reason "released once; no open, attach or connect for domain $id after it; still bound to usb-storage"
}

ds_alive() {
  local pid
  pid=$(pv_pid)
  [ "$(pv_prop ActiveState)" = active ] || { reason "xenpvusbd is not active: $(pv_show ActiveState,SubState,Result)"; return 1; }
  [ "$pid" = "$(cat $DS/pid)" ] || { pv_log; reason "xenpvusbd restarted: MainPID $(cat $DS/pid) -> $pid"; return 1; }
  reason "MainPID $pid unchanged"
}

ds_reattach() {
  local a sum
  read -r a < $DS/busid-a
  xenpvusb usb-list-assignable-devices | tee $DS/assignable
  grep -q "^$a " $DS/assignable || { reason "usb-list-assignable-devices does not list $a"; return 1; }
  xenpvusb usb-attach dsb 0 2 $a || { pv_log 20; reason "usb-attach dsb 0 2 $a failed"; return 1; }
  guest_wait dsb 'GUEST-RESULT read2 ' 900 || { pv_log 30; reason "dsb did not read the second stick"; return 1; }
  sum=$(guest_result dsb read2 sha256)
  [ "$sum" = "$LAB_STICK_EHCI_SHA256" ] || { reason "dsb's read of $a: ${sum:-failed}"; return 1; }
  reason "listed as assignable again; attached to dsb port 2, read whole there ($(guest_result dsb read2 mbps) MB/s, checksum OK)"
}

# The survivor is destroyed idle, with both sticks: both must come back.
ds_destroy_idle() {
  local a b t0 n=0 dt id
  read -r a < $DS/busid-a; read -r b < $DS/busid-b; read -r id < $DS/dsb.id
  xl destroy dsb || { reason "xl destroy dsb failed"; return 1; }
  t0=$(lab_now)
  until usb_bound_to $a usb-storage && usb_bound_to $b usb-storage && usb_has_disk $LAB_STICK_EHCI_SERIAL && usb_has_disk $LAB_STICK_EHCI3_SERIAL; do
    n=$((n + 1))
    [ $n -gt 1200 ] && { pv_log 30; reason "sticks not back within 60 s (drivers: $a: $(usb_drivers $a); $b: $(usb_drivers $b))"; return 1; }
    lab_sleep 0.05
  done
  dt=$(lab_elapsed $t0)
  guest_unfollow dsb
  figure destroy-handback-idle-s $dt s
  ds_nodes_gone $id || return 1
  reason "both sticks back in dom0 $dt s after xl destroy returned; nodes of domain $id gone"
}

# Whatever happened, leave dom0 with both sticks and no guest (removing our controllers' nodes if the
# daemon did not).
ds_cleanup() {
  local g id
  for g in dsa dsb; do
    [ -f $DS/$g.id ] || continue
    read -r id < $DS/$g.id
    xl destroy $g > /dev/null 2>&1; guest_unfollow $g
    wait_for 15 eval "! xenstore-exists /local/domain/0/backend/vusb/$id 2>/dev/null" \
      || { echo "destroy: backend/vusb/$id still there 15 s after its domain died; removing it by hand"; xenstore-rm /local/domain/0/backend/vusb/$id; }
  done
  if ! wait_for 60 eval 'usb_has_disk $LAB_STICK_EHCI_SERIAL && usb_has_disk $LAB_STICK_EHCI3_SERIAL'; then
    for g in $LAB_STICK_EHCI_SERIAL $LAB_STICK_EHCI3_SERIAL; do lab_recover_stick $g; done
    reason "dom0 did not get both sticks back by itself (replugged in QEMU for the next scenarios)"; return 1
  fi
  reason "no guests; both sticks in dom0"
}

if stage daemon -t 120 pv_ensure; then
  if stage guests -t 300 ds_guests && stage hc-create -t 120 ds_hc && stage attach -t 420 ds_attach; then
    if stage destroy-mid-read -t 420 ds_destroy; then
      stage handback-2s -t 10 ds_handback_2s
      stage survivor-read -t 960 ds_survivor
      stage nodes-gone -t 60 ds_nodes_gone "$(cat $DS/dsa.id)"
      stage no-reclaim -t 60 ds_no_reclaim
      stage daemon-alive -t 30 ds_alive
      stage attach-to-survivor -t 960 ds_reattach
      stage destroy-idle -t 180 ds_destroy_idle
      stage daemon-alive-after -t 30 ds_alive
    fi
  fi
  stage cleanup -t 180 ds_cleanup
fi
