# Scenario "unplug": physical hotplug under a guest. The guest reads the EHCI stick through xenpvusbd
# (the systemd service, pv_ensure in guest-lib.sh) when QEMU unplugs it from dom0 (monitor device_del):
# the guest's read must end with an error, not hang, and its disk must go away; the daemon keeps
# running and port 1 keeps the bus id. QEMU plugs the stick back on the same port (device_add): dom0
# sees it at the same bus id, the daemon attaches it again by itself (kernel uevents), and the guest
# reads it whole again (checksum). Ends with the stick back in dom0 and a clean `systemctl stop`.

UN_PID=$LAB_TMP/unplug-daemon-pid
UN_BUSID=$LAB_TMP/unplug-busid

un_guest() {
  cat > $LAB_TMP/unplug-guest.sh <<'G'
wait_usb_disk 300 || exit 0
read_until_error read1
wait_usb_gone 180 || exit 0
wait_usb_disk 600 || exit 0
result "disk2 dev=$DISK busid=$BUSID"
read_all
G
  guest_create unp $LAB_TMP/unplug-guest.sh || { reason "xl create failed"; return 1; }
  guest_wait unp 'GUEST-BEGIN' 120 || { reason "guest did not reach its script"; return 1; }
  guest_log unp | grep -q GUEST-HCD-LOADED || { reason "xen-hcd not loaded in the guest"; return 1; }
  reason "guest up, xen-hcd loaded"
}

un_hc_create() {
  xenpvusb usb-hc-create unp 2 8 || { pv_log 20; reason "usb-hc-create failed"; return 1; }
  wait_for 60 sh -c "xenstore-read /local/domain/0/backend/vusb/\$(xl domid unp)/0/state | grep -q 4" \
    || { pv_log 20; reason "backend did not reach Connected with the guest's xen-hcd"; return 1; }
  reason "controller 0 connected to xen-hcd"
}

un_attach() {
  local d
  wait_for 60 usb_has_disk $LAB_STICK_EHCI_SERIAL || { reason "EHCI stick not in dom0"; return 1; }
  d=$(usb_dev_by_serial $LAB_STICK_EHCI_SERIAL) || { reason "EHCI stick not found"; return 1; }
  echo "${d##*/}" > $UN_BUSID
  xenpvusb usb-attach unp 0 1 ${d##*/} || { pv_log 20; reason "usb-attach failed"; return 1; }
  guest_wait unp 'GUEST-RESULT disk ' 180 || { pv_log 30; reason "guest saw no USB disk within 180 s"; return 1; }
  guest_log unp | grep -q 'GUEST-RESULT disk none' && { pv_log 30; reason "guest saw no USB disk"; return 1; }
  reason "stick ${d##*/} -> port 1; guest $(guest_log unp | grep 'GUEST-RESULT disk ' | tail -n1 | cut -d' ' -f3-)"
}

# While the guest reads (8 MiB done), ask QEMU to unplug the stick; the read must end with an error.
un_unplug() {
  local t0 dt rc err
  guest_wait unp 'GUEST-RESULT read1-progress|GUEST-RESULT read1 ' 300 || { pv_log 20; reason "the guest's read did not get going"; return 1; }
  guest_log unp | grep -q 'GUEST-RESULT read1 ' && { reason "the read ended before the unplug: $(guest_log unp | grep 'GUEST-RESULT read1 ' | cut -d' ' -f3-)"; return 1; }
  pv_pid > $UN_PID
  t0=$(lab_now)
  echo "$t0" > $LAB_TMP/unplug-t0
  lab_request unplug stick
  guest_wait unp 'GUEST-RESULT read1 ' 120 || { pv_log 30; reason "the guest's read did not end within 120 s of device_del (hang)"; return 1; }
  dt=$(lab_elapsed "$t0")
  figure unplug-read-error-s "$dt" s
  rc=$(guest_result unp read1 rc); err=$(guest_result unp read1 err)
  [ "$rc" != 0 ] || { reason "the guest's read did not fail: $(guest_log unp | grep 'GUEST-RESULT read1 ' | cut -d' ' -f3-)"; return 1; }
  reason "the guest's dd failed $dt s after the device_del request: ${err//_/ } ($(guest_log unp | grep 'GUEST-RESULT read1 ' | cut -d' ' -f3-))"
}

un_gone() {
  wait_for 60 eval '! usb_has_serial $LAB_STICK_EHCI_SERIAL' || { reason "the stick is still in dom0's sysfs"; return 1; }
  guest_wait unp 'GUEST-RESULT gone ' 180 || { pv_log 30; reason "the guest's disk did not go away within 180 s"; return 1; }
  guest_log unp | grep -q 'GUEST-RESULT gone none' && { pv_log 30; reason "the guest still has the disk or its USB device"; return 1; }
  pv_journal_has "usb $(cat $UN_BUSID): gone" "$(cat $LAB_TMP/unplug-t0)" || { pv_log 30; reason "no 'gone' line in the daemon's journal"; return 1; }
  reason "dom0 lost the stick; guest: $(guest_log unp | grep 'GUEST-RESULT gone ' | cut -d' ' -f3-)"
}

un_daemon_alive() {
  local pid b out
  pid=$(pv_pid); read -r b < $UN_BUSID
  [ "$(pv_prop ActiveState)" = active ] || { pv_log; reason "xenpvusbd is not active: $(pv_show ActiveState,SubState,Result)"; return 1; }
  [ "$pid" = "$(cat $UN_PID)" ] || { pv_log; reason "xenpvusbd restarted: MainPID $(cat $UN_PID) -> $pid"; return 1; }
  out=$(xenpvusb usb-list unp 2>&1); echo "$out"
  echo "$out" | grep -qE "^ *Port 1: $b \(not plugged in\)" || { reason "usb-list does not show port 1 = $b (not plugged in)"; return 1; }
  reason "MainPID $pid still running; usb-list: port 1: $b (not plugged in)"
}

# QEMU plugs the stick back on the same port: same bus id in dom0, the daemon attaches it by itself.
un_replug() {
  local t0 dt d b
  read -r b < $UN_BUSID
  t0=$(lab_now)
  echo "$t0" > $LAB_TMP/unplug-replug-t0
  lab_request replug stick
  wait_for 60 usb_has_serial $LAB_STICK_EHCI_SERIAL || { reason "dom0 did not see the stick again within 60 s"; return 1; }
  d=$(usb_dev_by_serial $LAB_STICK_EHCI_SERIAL)
  [ "${d##*/}" = "$b" ] || { reason "the stick came back at bus id ${d##*/}, not $b"; return 1; }
  dt=$(lab_elapsed "$t0")
  figure unplug-replug-dom0-s "$dt" s
  reason "dom0 sees the stick again at $b $dt s after the device_add request"
}

un_reattach() {
  local t0 dt b pid
  read -r t0 < $LAB_TMP/unplug-replug-t0; read -r b < $UN_BUSID
  guest_wait unp 'GUEST-RESULT disk2 ' 240 || { pv_log 40; xenpvusb usb-list unp; reason "the guest did not see the disk again within 240 s"; return 1; }
  dt=$(lab_elapsed "$t0")
  figure unplug-reattach-s "$dt" s
  pid=$(pv_pid)
  [ "$pid" = "$(cat $UN_PID)" ] || { reason "xenpvusbd restarted: MainPID $(cat $UN_PID) -> $pid"; return 1; }
  pv_journal_has "usb $b: plugged in" "$t0" || { pv_log 30; reason "no 'usb $b: plugged in' line in the daemon's journal"; return 1; }
  pv_journal_has "vusb $(xl domid unp)/0: port 1: $b attached" "$t0" || { pv_log 30; reason "the journal does not show port 1 attached again"; return 1; }
  xenpvusb usb-list unp
  reason "the daemon attached it again by itself; the guest sees $(guest_log unp | grep 'GUEST-RESULT disk2 ' | cut -d' ' -f3-) $dt s after the device_add request"
}

un_read_again() {
  local sum mbps
  guest_wait unp 'GUEST-RESULT read ' 900 || { pv_log 30; reason "no read result"; return 1; }
  sum=$(guest_result unp read sha256); mbps=$(guest_result unp read mbps)
  [ -n "$mbps" ] || { reason "guest read failed"; return 1; }
  [ "$sum" = "$LAB_STICK_EHCI_SHA256" ] || { reason "checksum mismatch in the guest: $sum"; return 1; }
  figure unplug-guest-reread-MBps "$mbps" MB/s
  reason "guest read the replugged stick whole: $mbps MB/s, checksum OK"
}

un_detach() {
  xenpvusb usb-detach unp 0 1 || { reason "usb-detach failed"; return 1; }
  wait_for 60 usb_has_disk $LAB_STICK_EHCI_SERIAL || { pv_log 20; reason "dom0 did not get the stick back"; return 1; }
  reason "stick back in dom0 as /dev/$(usb_disk_by_serial $LAB_STICK_EHCI_SERIAL)"
}

# Leave dom0 as the next scenarios expect it: stick plugged in and driven by dom0, no guest.
un_cleanup() {
  xenpvusb usb-hc-destroy unp 0 2>&1 || true
  guest_destroy unp > /dev/null
  if ! usb_has_serial $LAB_STICK_EHCI_SERIAL; then
    lab_request replug stick
    wait_for 60 usb_has_serial $LAB_STICK_EHCI_SERIAL || echo "unplug: the stick did not come back"
  fi
  wait_for 60 usb_has_disk $LAB_STICK_EHCI_SERIAL || { lab_recover_stick $LAB_STICK_EHCI_SERIAL; reason "dom0 did not get the stick back by itself (replugged in QEMU for the next scenarios)"; return 1; }
  reason "guest destroyed, stick in dom0 as /dev/$(usb_disk_by_serial $LAB_STICK_EHCI_SERIAL)"
}

if stage daemon -t 120 pv_ensure; then
  if stage guest-create -t 240 un_guest && stage hc-create -t 120 un_hc_create && stage attach -t 240 un_attach; then
    if stage unplug-mid-read -t 480 un_unplug; then
      stage guest-disconnect -t 300 un_gone
      stage daemon-alive -t 60 un_daemon_alive
    fi
    if ! usb_has_serial $LAB_STICK_EHCI_SERIAL && stage replug -t 120 un_replug; then
      stage reattach -t 300 un_reattach && stage read-again -t 960 un_read_again && stage detach -t 120 un_detach
    fi
  fi
  stage cleanup -t 180 un_cleanup
  stage daemon-stop -t 120 pv_stop
fi
