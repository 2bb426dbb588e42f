# Scenario "qusb": the baseline peer. The guest gets a controller of QEMU's own PVUSB backend
# (type=qusb), `xl usbdev-attach` gives it the EHCI stick, the guest reads the stick's first
# LAB_QUSB_MIB (16) MiB; the lab prints the guest's MB/s next to dom0's native MB/s for the same 16 MiB
# of the same stick in the same boot. (QEMU's backend reads about 0.2 MB/s under TCG: the whole 64 MiB
# took 332 s.) Both checksums are checked against the stick image's (the host computes the region's
# sha256 from the image: LAB_STICK_EHCI_SHA256_16M), so dom0's read is verified, not only compared.

# native_read WHEN: dom0 reads the EHCI stick's first LAB_QUSB_MIB MiB (WHEN = before|after the guest's read).
native_read() {
  local dev r
  wait_for 60 usb_has_disk $LAB_STICK_EHCI_SERIAL || { reason "EHCI stick not found in dom0"; return 1; }
  dev=$(usb_disk_by_serial $LAB_STICK_EHCI_SERIAL)
  r=$(read_disk $dev $LAB_QUSB_MIB) || { reason "dd of /dev/$dev failed"; return 1; }
  set -- $r
  echo "dom0 read /dev/$dev: $1 bytes in $2 s = $3 MB/s sha256 $4"
  [ "$1" = $((LAB_QUSB_MIB << 20)) ] || { reason "read $1 bytes, not $LAB_QUSB_MIB MiB"; return 1; }
  [ "$4" = "$LAB_STICK_EHCI_SHA256_16M" ] || { reason "checksum mismatch: $4 (the image's first $LAB_QUSB_MIB MiB: $LAB_STICK_EHCI_SHA256_16M)"; return 1; }
  echo "$3" > $LAB_TMP/native-mbps-$WHEN
  figure dom0-native-ehci-MBps-$WHEN "$3" MB/s
  reason "$3 MB/s, $1 bytes, checksum OK"
}

qusb_guest() {
  cat > $LAB_TMP/qusb-guest.sh <<G
wait_usb_disk 300 && read_all "" $LAB_QUSB_MIB && usb_list
G
  guest_create qusbg $LAB_TMP/qusb-guest.sh 'usbctrl = [ "type=qusb,version=2,ports=8" ]' \
    || { reason "xl create with a qusb controller failed"; return 1; }
  guest_wait qusbg 'GUEST-BEGIN' 120 || { reason "guest did not reach its script"; return 1; }
  guest_log qusbg | grep -q GUEST-HCD-LOADED || { reason "xen-hcd not loaded in the guest"; return 1; }
  xl usb-list qusbg
  reason "guest up, xen-hcd loaded"
}

qusb_attach() {
  local bd
  bd=$(usb_busdev $LAB_STICK_EHCI_SERIAL) || { reason "EHCI stick not found"; return 1; }
  set -- $bd
  xl usbdev-attach qusbg hostbus=$1 hostaddr=$2 controller=0 port=1 || { reason "xl usbdev-attach failed"; return 1; }
  xl usb-list qusbg
  guest_wait qusbg 'GUEST-RESULT disk ' 120 || { reason "guest saw no USB disk within 120 s"; return 1; }
  reason "bus $1 dev $2 -> qusb port 1; guest $(guest_log qusbg | grep 'GUEST-RESULT disk ' | tail -n1 | cut -d' ' -f3-)"
}

qusb_read() {
  guest_wait qusbg 'GUEST-RESULT read |GUEST-END' 600 || { reason "no read result within 600 s"; return 1; }
  local sum mbps bytes
  guest_log qusbg | grep -E 'GUEST-RESULT|GUEST-USB'
  sum=$(guest_result qusbg read sha256); mbps=$(guest_result qusbg read mbps); bytes=$(guest_result qusbg read bytes)
  [ -n "$mbps" ] || { reason "guest read failed"; return 1; }
  echo "$mbps" > $LAB_TMP/guest-mbps
  figure qusb-guest-ehci-MBps "$mbps" MB/s
  [ "$bytes" = $((LAB_QUSB_MIB << 20)) ] || { reason "the guest read $bytes bytes, not $LAB_QUSB_MIB MiB"; return 1; }
  [ "$sum" = "$LAB_STICK_EHCI_SHA256_16M" ] || { reason "checksum mismatch in the guest: $sum ($mbps MB/s)"; return 1; }
  reason "guest $mbps MB/s for the first $LAB_QUSB_MIB MiB, checksum OK"
}

# ratio: guest MB/s over the mean of dom0's reads before and after (host load drifts during a run).
qusb_ratio() {
  local g b a
  read -r g < $LAB_TMP/guest-mbps 2>/dev/null || { reason "no guest figure"; return 77; }
  read -r b < $LAB_TMP/native-mbps-before 2>/dev/null
  read -r a < $LAB_TMP/native-mbps-after 2>/dev/null
  [ -n "$b$a" ] || { reason "no dom0 figure"; return 77; }
  local r; r=$(awk -v g=$g -v b=${b:-0} -v a=${a:-0} 'BEGIN { n = (b > 0 && a > 0) ? (a + b) / 2 : a + b; printf "%.2f %.2f", g / n, n }')
  set -- $r
  figure qusb-ratio "$1" guest/dom0
  reason "guest $g MB/s / dom0 $2 MB/s (before ${b:-?}, after ${a:-?}) = $1"
}

WHEN=before stage native-read -t 200 native_read
if stage guest-create -t 240 qusb_guest; then
  if stage usbdev-attach -t 200 qusb_attach; then
    stage guest-read -t 660 qusb_read
  else
    skip guest-read "stick not attached"
  fi
  xl usbdev-detach qusbg 0 1 2>&1 || true
else
  skip usbdev-attach "no guest"; skip guest-read "no guest"
fi
guest_destroy qusbg > /dev/null
WHEN=after stage native-read-after -t 200 native_read
stage ratio qusb_ratio
