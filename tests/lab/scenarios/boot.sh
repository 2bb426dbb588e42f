# Scenario "boot": dom0 sees its USB devices, the toolstack works, a PV guest starts and loads xen-hcd,
# and the host can unplug/replug a device through QEMU's monitor.

usb_present() {
  lsusb
  ls -l /dev/bus/usb/*/ | head -n 40
  local s n=0 want="$LAB_STICK_EHCI_SERIAL $LAB_STICK_XHCI_SERIAL $LAB_STICK_EHCI3_SERIAL"
  wait_for 60 eval 'usb_has_disk $LAB_STICK_EHCI_SERIAL && usb_has_disk $LAB_STICK_XHCI_SERIAL && usb_has_disk $LAB_STICK_EHCI3_SERIAL' \
    || { reason "sticks not found: $(for s in $want; do usb_disk_by_serial $s >/dev/null || echo -n "$s "; done)"; return 1; }
  lsusb -d 0627:0001 >/dev/null || { reason "no QEMU keyboard/tablet (0627:0001)"; return 1; }
  n=$(lsusb | wc -l)
  local e x e3
  e=$(usb_dev_by_serial $LAB_STICK_EHCI_SERIAL); x=$(usb_dev_by_serial $LAB_STICK_XHCI_SERIAL); e3=$(usb_dev_by_serial $LAB_STICK_EHCI3_SERIAL)
  [ "$(cat $e3/speed)" = 480 ] || { reason "second EHCI stick ${e3##*/} at $(cat $e3/speed)M, not high speed"; return 1; }
  reason "$n USB devices; EHCI sticks ${e##*/} $(cat $e/speed)M /dev/$(usb_disk_by_serial $LAB_STICK_EHCI_SERIAL) and ${e3##*/} $(cat $e3/speed)M /dev/$(usb_disk_by_serial $LAB_STICK_EHCI3_SERIAL), xHCI stick ${x##*/} $(cat $x/speed)M; $(ls /dev/bus/usb/*/* | wc -l) usbfs nodes"
}

xl_info() {
  wait_for 60 eval 'xl info > /tmp/xl-info 2>&1' || { cat /tmp/xl-info; reason "xl info fails"; return 1; }
  grep -E '^(xen_version|nr_cpus|total_memory|free_memory|xen_caps)' /tmp/xl-info
  reason "Xen $(awk '/^xen_version/ {print $3}' /tmp/xl-info), free $(awk '/^free_memory/ {print $3}' /tmp/xl-info) MB"
}

boot_guest() {
  cat > $LAB_TMP/boot-guest.sh <<'G'
usb_list
G
  local t0; t0=$(lab_now)
  guest_create bootg $LAB_TMP/boot-guest.sh || { reason "xl create failed"; return 1; }
  reason "xl create took $(lab_elapsed $t0)s"
}

guest_hcd() {
  guest_wait bootg 'GUEST-HCD-LOADED|GUEST-MODULE xen_hcd failed' 120 || { guest_log bootg | tail -n 20; reason "no xen-hcd message in the guest console within 120 s"; return 1; }
  guest_log bootg | grep -E 'GUEST-MODULE|xen_hcd|vusb' | head -n 20
  guest_log bootg | grep -q GUEST-HCD-LOADED || { reason "$(guest_log bootg | grep 'GUEST-MODULE xen_hcd')"; return 1; }
  guest_wait bootg 'GUEST-END' 30
  reason "xen-hcd loaded at guest uptime $(guest_log bootg | sed -n 's/.*GUEST-HCD-LOADED uptime=//p')s"
}

hotplug() {
  usb_has_serial $LAB_STICK_XHCI_SERIAL || { reason "no xHCI stick to unplug"; return 1; }
  lab_request unplug ssstick
  wait_for 60 eval '! usb_has_serial $LAB_STICK_XHCI_SERIAL' || { reason "stick still present 60 s after unplug request"; return 1; }
  lab_request replug ssstick
  wait_for 60 eval 'usb_has_disk $LAB_STICK_XHCI_SERIAL' || { reason "stick not back 60 s after replug request"; return 1; }
  reason "xHCI stick unplugged and replugged through the QEMU monitor"
}

stage usb-devices usb_present
if stage xl-info xl_info; then
  if stage guest-create -t 180 boot_guest; then
    stage guest-xen-hcd -t 200 guest_hcd
  else
    skip guest-xen-hcd "no guest"
  fi
  guest_destroy bootg > /dev/null
else
  skip guest-create "toolstack not working"; skip guest-xen-hcd "toolstack not working"
fi
stage hotplug -t 150 hotplug
