# Scenario "xl": a controller made by `xl usbctrl-attach type=pv` is served by xenpvusbd (libxl waits
# ~10 s for the backend to leave state 1), a device attached to it with our CLI is read by the guest,
# and `xl destroy` completes without "unable to remove device". xenpvusbd is the systemd service
# (pv_ensure, guest-lib.sh: started here unless an earlier scenario left it running).

xl_guest() {
  cat > $LAB_TMP/xl-guest.sh <<'G'
wait_usb_disk 300 && read_all
G
  guest_create xlg $LAB_TMP/xl-guest.sh || { reason "xl create failed"; return 1; }
  guest_wait xlg 'GUEST-BEGIN' 120 || { reason "guest did not reach its script"; return 1; }
  reason "guest up"
}

xl_ctrl() {
  local t0=$SECONDS
  xl usbctrl-attach xlg type=pv version=2 ports=8 || { pv_log 20; reason "xl usbctrl-attach failed"; return 1; }
  xl usb-list xlg
  reason "xl usbctrl-attach type=pv took $((SECONDS - t0)) s"
}

xl_attach() {
  local d
  d=$(usb_dev_by_serial $LAB_STICK_EHCI_SERIAL) || { reason "EHCI stick not found"; return 1; }
  xenpvusb usb-attach xlg 0 1 ${d##*/} || { reason "usb-attach failed"; return 1; }
  guest_wait xlg 'GUEST-RESULT read |GUEST-RESULT disk none' 900 || { reason "no read result"; return 1; }
  local sum mbps
  sum=$(guest_result xlg read sha256); mbps=$(guest_result xlg read mbps)
  [ "$sum" = "$LAB_STICK_EHCI_SHA256" ] || { reason "guest read failed or checksum mismatch: ${sum:-none}"; return 1; }
  figure xl-guest-ehci-MBps "$mbps" MB/s
  reason "guest read the stick on the xl-made controller: $mbps MB/s, checksum OK"
}

xl_destroy() {
  local t0=$SECONDS out
  out=$(xl destroy xlg 2>&1); echo "$out"
  guest_unfollow xlg
  echo "$out" | grep -q "unable to remove" && { reason "xl destroy: unable to remove device"; return 1; }
  wait_for 60 usb_has_disk $LAB_STICK_EHCI_SERIAL || { reason "dom0 did not get the stick back"; return 1; }
  reason "xl destroy took $((SECONDS - t0)) s, stick back in dom0"
}

if stage install -t 120 pv_ensure; then
  if stage guest-create -t 240 xl_guest && stage usbctrl-attach -t 120 xl_ctrl; then
    stage attach-read -t 960 xl_attach
    stage destroy -t 120 xl_destroy
  else
    guest_destroy xlg > /dev/null
  fi
  pv_log 20
fi
