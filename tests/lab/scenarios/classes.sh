# Scenario "classes": device classes other than the EHCI stick. One guest (real xen-hcd), one
# controller made by `xenpvusb usb-hc-create`:
# - the SuperSpeed stick (QEMU usb-storage on xHCI, 5000M in dom0), which the daemon presents at high
#   speed with translated descriptors: the guest must enumerate it as a high-speed device without a
#   descriptor complaint in its kernel log, and read it whole (checksum); dom0 reads it natively before
#   and after (ratio);
# - the xHCI keyboard (QEMU usb-kbd): the guest's usbhid + hid-generic + evdev (optional modules of the
#   guest initramfs) bind it, QEMU types "abc" through its monitor (LAB-REQUEST sendkey), and the guest
#   reads the key presses (30, 48, 46) from /dev/input/event*; after the detach dom0's usbhid has it again.

CL=$LAB_TMP/classes
mkdir -p $CL
# Kernel log lines that mean the guest's usbcore did not like what it was given (checked from the
# guest's marks on: its boot log has harmless "invalid"s, e.g. "DMI not present or invalid").
CL_BAD='maxpacket|Invalid ep0|config .* descriptor|invalid|unable to get BOS|device descriptor read|not accepting address|unable to enumerate'

cl_native_read() {
  local dev r d sp
  wait_for 60 usb_has_disk $LAB_STICK_XHCI_SERIAL || { reason "xHCI stick has no block device in dom0"; return 1; }
  dev=$(usb_disk_by_serial $LAB_STICK_XHCI_SERIAL)
  d=$(usb_dev_by_serial $LAB_STICK_XHCI_SERIAL); read -r sp < $d/speed
  r=$(read_disk $dev) || { reason "dd of /dev/$dev failed"; return 1; }
  set -- $r
  [ "$4" = "$LAB_STICK_XHCI_SHA256" ] || { reason "checksum mismatch: $4"; return 1; }
  echo "$3" > $CL/native-mbps-$WHEN
  if [ "$WHEN" = before ]; then figure dom0-native-xhci-MBps "$3" MB/s; else figure dom0-native-xhci-MBps-$WHEN "$3" MB/s; fi
  reason "${d##*/} ${sp}M /dev/$dev: $3 MB/s, $1 bytes, checksum OK"
}

cl_guest() {
  {
    echo "BAD='$CL_BAD'"
    cat <<'G'
# 1. the SuperSpeed stick: a mark in the kernel log, then its disk, the kernel's view of the enumeration
ss_part() {
  echo "LAB-MARK classes ss-attach" > /dev/kmsg
  result "ss-mark uptime=$(now)"
  wait_usb_disk 180; rc=$?
  [ $rc = 0 ] && usb_list
  dmesg | sed -n '/LAB-MARK classes ss-attach/,$p' > /tmp/k-ss.txt
  result "ss-klog lines=$(wc -l < /tmp/k-ss.txt) highspeed=$(grep -c 'new high-speed USB device' /tmp/k-ss.txt) bad=$(grep -ciE "$BAD" /tmp/k-ss.txt)"
  [ $rc = 0 ] || return 0
  read_all
  wait_usb_gone 300
}
# 2. the keyboard: wait for its event device, hold it open, read the events QEMU types
hid_part() {
  echo "LAB-MARK classes hid" > /dev/kmsg
  result "hid-mark uptime=$(now)"
  n=0 ev=
  while [ $n -lt 300 ]; do
    for e in /sys/class/input/event*; do
      [ -f $e/device/name ] || continue
      read -r nm < $e/device/name
      case $nm in *Keyboard*) ev=${e##*/}; break;; esac
    done
    [ -n "$ev" ] && break
    n=$((n + 1)); sleep 1
  done
  [ -n "$ev" ] || { result "kbd-ready none"; return 0; }
  exec 3< /dev/input/$ev
  result "kbd-ready dev=$ev name=$(echo "$nm" | tr ' ' _) waited=${n}s"
  # one struct input_event (24 bytes) a read: the first blocks until the first event arrives
  timeout 120 dd bs=24 count=1 of=/tmp/ev.bin <&3 2>/dev/null
  [ -s /tmp/ev.bin ] || { result "kbd-first none"; exec 3<&-; return 0; }
  result "kbd-first uptime=$(now)"
  # three keys: MSC_SCAN, EV_KEY, SYN_REPORT for each press and each release = 18 events
  timeout 30 dd bs=24 count=17 <&3 2>/dev/null >> /tmp/ev.bin
  exec 3<&-
  od -A n -v -t u2 -w24 /tmp/ev.bin > /tmp/ev.txt
  result "kbd-events n=$(wc -l < /tmp/ev.txt) $(awk '
    $9 == 1 && $12 == 0 && $11 == 1 { p = p s1 $10; s1 = ","; if (!t) t = sprintf("first_sec=%d first_usec=%d", $1 + $2 * 65536 + $3 * 4294967296, $5 + $6 * 65536) }
    $9 == 1 && $12 == 0 && $11 == 0 { r = r s2 $10; s2 = "," }
    $9 == 1 && $11 == 2 { rep++ }
    END { printf "presses=%s releases=%s repeats=%d %s", p ? p : "none", r ? r : "none", rep, t }' /tmp/ev.txt)"
  n=0
  while [ -e /sys/class/input/$ev ] && [ $n -lt 120 ]; do sleep 1; n=$((n + 1)); done
  if [ -e /sys/class/input/$ev ]; then result "kbd-gone no"; else result "kbd-gone after=${n}s"; fi
}
ss_part
hid_part
G
  } > $CL/guest.sh
  GUEST_EXTRA_MODULES="hid usbhid hid_generic evdev" guest_create clg $CL/guest.sh || { reason "xl create failed"; return 1; }
  guest_wait clg 'GUEST-BEGIN' 120 || { reason "guest did not reach its script"; return 1; }
  xl domid clg > $CL/domid
  guest_log clg | grep -q GUEST-HCD-LOADED || { reason "xen-hcd not loaded in the guest"; return 1; }
  reason "guest up (domain $(cat $CL/domid)), xen-hcd loaded; $(guest_log clg | grep -E '^GUEST-MODULE (hid|usbhid|hid_generic|evdev) ' | cut -d' ' -f2- | tr '\n' ';' | sed 's/;$//')"
}

cl_hc() {
  xenpvusb usb-hc-create clg 2 8 || { pv_log 20; reason "usb-hc-create failed"; return 1; }
  wait_for 60 sh -c "xenstore-read /local/domain/0/backend/vusb/$(cat $CL/domid)/0/state | grep -qx 4" \
    || { pv_log 20; reason "backend did not reach Connected with the guest's xen-hcd"; return 1; }
  reason "controller 0 connected to xen-hcd"
}

# cl_klog MARK: the guest's console (its kernel log and our lines) from the kernel-log mark on.
cl_klog() { guest_log clg | sed -n "/LAB-MARK classes $1\$/,\$p"; }

# cl_journal T0: the daemon's journal since T0 (lab_now), for the busid / this domain's controller.
cl_journal() {
  journalctl -u xenpvusbd --since "@$(($1 / 1000000 - 1))" -o short-monotonic --no-pager 2>&1 \
    | grep -E "usb $2[: ]|vusb $(cat $CL/domid)/" | head -n 30
}
# cl_warnings T0: the daemon's warnings and errors since T0 (one line each).
cl_warnings() { journalctl -u xenpvusbd -p warning --since "@$(($1 / 1000000 - 1))" -o cat --no-pager 2>&1 | grep -v '^-- '; }

cl_ss_attach() {
  local d b sp t0 bad hs why= dl usbl kl jw
  d=$(usb_dev_by_serial $LAB_STICK_XHCI_SERIAL) || { reason "xHCI stick not found in dom0"; return 1; }
  b=${d##*/}; echo $b > $CL/ss-busid
  read -r sp < $d/speed
  [ "$sp" = 5000 ] || { reason "the xHCI stick $b runs at ${sp}M in dom0, not SuperSpeed (5000M)"; return 1; }
  guest_wait clg 'GUEST-RESULT ss-mark' 60 || { reason "the guest's script did not start"; return 1; }
  t0=$(lab_now); echo $t0 > $CL/t-ss
  xenpvusb usb-attach clg 0 1 $b || { pv_log 20; reason "usb-attach clg 0 1 $b failed"; return 1; }
  xenpvusb usb-list clg | tee $CL/list
  grep -q "Port 1: .* $b .*ID [0-9a-f]*:[0-9a-f]*" $CL/list || { reason "usb-list does not show $b on port 1"; return 1; }
  # the guest's report, or (sooner) a line of the kernel giving up on the device
  guest_wait clg 'GUEST-RESULT ss-klog |unable to enumerate|Invalid ep0|maxpacket|not accepting address|device descriptor read' 240 \
    || why="no report from the guest within 240 s; "
  guest_log clg | grep -q 'GUEST-RESULT ss-klog ' || lab_sleep 5  # (let the kernel finish its complaint)
  cl_klog ss-attach > $CL/ss-console
  echo "--- the guest's kernel log from the attach on:"; grep -v '^GUEST-' $CL/ss-console
  echo "--- the daemon's journal for $b:"; cl_journal $t0 $b
  # what the daemon's copy of the descriptors comes from: sysfs "descriptors" (its size as stat gives
  # it, the bytes a read to the end gets, in dom0 and in the daemon's own mount namespace)
  echo "--- /sys/bus/usb/devices/$b/descriptors: st_size $(stat -c %s /sys/bus/usb/devices/$b/descriptors), read to the end: $(cat /sys/bus/usb/devices/$b/descriptors | wc -c) bytes in dom0, $(nsenter -t $(pv_pid) -m -- cat /sys/bus/usb/devices/$b/descriptors 2>/dev/null | wc -c) in xenpvusbd's mount namespace"
  bad=$(grep -v '^GUEST-' $CL/ss-console | grep -iE "$CL_BAD")
  hs=$(grep -m1 'new high-speed USB device number' $CL/ss-console | sed 's/^\[ *[0-9.]*\] //')
  dl=$(grep -m1 'GUEST-RESULT disk ' $CL/ss-console)
  kl=$(grep -m1 'GUEST-RESULT ss-klog ' $CL/ss-console)
  jw=$(cl_warnings $t0)
  [ -z "$bad" ] || why="$why""guest kernel: $(echo "$bad" | head -n 4 | sed 's/^\[ *[0-9.]*\] //' | tr '\n' ';') "
  [ -n "$hs" ] || why="$why""no 'new high-speed USB device' line; "
  case $dl in *"disk dev="*) ;; *) why="$why""the guest saw no disk (${dl:-no disk line}); ";; esac
  case $kl in *" bad=0"*) ;; "") ;; *) why="$why""the guest's dmesg: ${kl#GUEST-RESULT }; ";; esac
  usbl=$(grep "^GUEST-USB $(echo "$dl" | sed -n 's/.* busid=\([^ ]*\) .*/\1/p') " $CL/ss-console)
  [ -z "$dl" ] || case $usbl in *" speed=480 "*) ;; *) why="$why""the guest's sysfs: ${usbl:-no GUEST-USB line for the disk}; ";; esac
  [ -z "$jw" ] || why="$why""daemon: $(echo "$jw" | head -n 3 | tr '\n' ';')"
  if [ -n "$why" ]; then pv_log 30; reason "$b (5000M in dom0): $why"; return 1; fi
  reason "$b (5000M in dom0) -> port 1: guest: '$hs', $(echo "${usbl#GUEST-USB }" | cut -d' ' -f1-3), ${dl#GUEST-RESULT disk }; no descriptor complaint in its kernel log ($(echo "$kl" | sed 's/.* lines=\([0-9]*\).*/\1/') lines), no daemon warning"
}

cl_ss_read() {
  local sum mbps resets
  guest_wait clg 'GUEST-RESULT read ' 600 || { pv_log 30; reason "no read result"; return 1; }
  sum=$(guest_result clg read sha256); mbps=$(guest_result clg read mbps)
  [ -n "$mbps" ] || { reason "guest read failed: $(guest_log clg | grep 'GUEST-RESULT read ')"; return 1; }
  echo "$mbps" > $CL/guest-mbps
  figure pvusb-guest-xhci-MBps "$mbps" MB/s
  [ "$sum" = "$LAB_STICK_XHCI_SHA256" ] || { reason "checksum mismatch in the guest: $sum"; return 1; }
  resets=$(cl_klog ss-attach | grep -c 'reset high-speed USB device')
  reason "guest $mbps MB/s, checksum OK; $resets device resets in the guest's kernel log"
}

# detach: dom0's usb-storage takes the stick back (fork-free wait); the guest loses its disk.
cl_ss_detach() {
  local b t0 n=0 dt sp
  read -r b < $CL/ss-busid
  t0=$(lab_now)
  xenpvusb usb-detach clg 0 1 || { pv_log 20; reason "usb-detach failed"; return 1; }
  until usb_bound_to $b usb-storage && usb_has_disk $LAB_STICK_XHCI_SERIAL; do
    n=$((n + 1))
    [ $n -gt 1200 ] && { pv_log 30; reason "dom0 did not get $b back within 60 s (drivers: $(usb_drivers $b))"; return 1; }
    lab_sleep 0.05
  done
  dt=$(lab_elapsed $t0)
  figure classes-ss-handback-s $dt s
  read -r sp < /sys/bus/usb/devices/$b/speed
  xenpvusb usb-list clg | tee $CL/list
  grep -qx "  Port 1:" $CL/list || { reason "usb-list still shows a device on port 1"; return 1; }
  guest_wait clg 'GUEST-RESULT gone ' 120 || { reason "the guest still sees the disk"; return 1; }
  guest_log clg | grep -q 'GUEST-RESULT gone none' && { reason "the guest still sees the disk after 300 s"; return 1; }
  reason "usb-storage bound to $b again $dt s after usb-detach began, /dev/$(usb_disk_by_serial $LAB_STICK_XHCI_SERIAL) at ${sp}M; the guest reported its disk gone $(lab_elapsed $t0) s after it began"
}

cl_ratio() {
  local g b a
  read -r g < $CL/guest-mbps 2>/dev/null || { reason "no guest figure"; return 77; }
  read -r b < $CL/native-mbps-before 2>/dev/null
  read -r a < $CL/native-mbps-after 2>/dev/null
  [ -n "$b$a" ] || { reason "no dom0 figure"; return 77; }
  set -- $(awk -v g=$g -v b=${b:-0} -v a=${a:-0} 'BEGIN { n = (b > 0 && a > 0) ? (a + b) / 2 : a + b; printf "%.2f %.2f", g / n, n }')
  figure pvusb-xhci/native "$1" guest/dom0
  reason "guest $g MB/s / dom0 $2 MB/s (before ${b:-none}, after ${a:-none}) = $1"
}

# cl_kbd: the bus id of QEMU's usb-kbd (0627:0001 "QEMU USB Keyboard") on the xHCI controller.
cl_kbd() {
  local d v p n bn drv
  for d in /sys/bus/usb/devices/*; do
    [ -f $d/idVendor ] && [ -f $d/product ] || continue
    read -r v < $d/idVendor; read -r p < $d/idProduct; read -r n < $d/product
    [ "$v:$p" = 0627:0001 ] && [ "$n" = "QEMU USB Keyboard" ] || continue
    read -r bn < $d/busnum
    drv=$(readlink -f /sys/bus/usb/devices/usb$bn/../driver)
    [ "${drv##*/}" = xhci_hcd ] && { echo ${d##*/}; return 0; }
  done
  return 1
}

cl_hid() {
  local k t0 dt ev evl first bad why= pre m jw
  for m in hid usbhid hid_generic evdev; do
    guest_log clg | grep -q "^GUEST-MODULE $m loaded" || { reason "module $m not loaded in the guest: $(guest_log clg | grep "^GUEST-MODULE $m " || echo 'no GUEST-MODULE line (an image without the optional HID modules?)')"; return 1; }
  done
  k=$(cl_kbd) || { lsusb; reason "no QEMU USB Keyboard (0627:0001) on the xHCI controller in dom0"; return 1; }
  echo $k > $CL/kbd
  if wait_for 10 usb_bound_to $k usbhid; then pre="usbhid had it in dom0"; else pre="dom0's usbhid did not have it before (drivers: $(usb_drivers $k))"; fi
  guest_wait clg 'GUEST-RESULT hid-mark' 240 || { reason "the guest's script did not reach the keyboard part"; return 1; }
  t0=$(lab_now); echo $t0 > $CL/t-hid
  xenpvusb usb-attach clg 0 2 $k || { pv_log 20; reason "usb-attach clg 0 2 $k failed"; return 1; }
  guest_wait clg 'GUEST-RESULT kbd-ready ' 330 || { cl_klog hid; pv_log 30; reason "no keyboard event device in the guest within 330 s"; return 1; }
  evl=$(guest_log clg | grep -m1 'GUEST-RESULT kbd-ready ')
  case $evl in *"kbd-ready none"*) cl_klog hid; pv_log 30; reason "no keyboard event device in the guest within 300 s"; return 1;; esac
  ev=$(echo "$evl" | sed -n 's/.* dev=\([^ ]*\) .*/\1/p')
  # QEMU types a, b, c (through run-lab and the monitor: run-lab looks at the console once a second)
  t0=$(lab_now)
  lab_request sendkey a b c
  guest_wait clg 'GUEST-RESULT kbd-first ' 150 || { reason "no answer from the guest"; return 1; }
  dt=$(lab_elapsed $t0)
  guest_log clg | grep -q 'GUEST-RESULT kbd-first none' && { cl_klog hid; pv_log 30; reason "no input event in the guest within 120 s of the sendkey request"; return 1; }
  figure classes-hid-key-seen-s $dt s
  guest_wait clg 'GUEST-RESULT kbd-events ' 60 || { reason "no event summary from the guest"; return 1; }
  cl_klog hid > $CL/hid-console
  echo "--- the guest's kernel log from the keyboard's attach on:"; grep -v '^GUEST-' $CL/hid-console
  echo "--- the daemon's journal for $k:"; cl_journal $(cat $CL/t-hid) $k
  bad=$(grep -v '^GUEST-' $CL/hid-console | grep -iE "$CL_BAD")
  [ -z "$bad" ] || why="$why""guest kernel: $(echo "$bad" | head -n 4 | sed 's/^\[ *[0-9.]*\] //' | tr '\n' ';') "
  grep -qE 'hid-generic .*Keyboard' $CL/hid-console || why="$why""no hid-generic Keyboard line in the guest's kernel log; "
  first=$(guest_result clg kbd-events presses)
  [ "$first" = 30,48,46 ] || why="$why""key presses $first, not 30,48,46 (a b c): $(guest_log clg | grep -m1 'GUEST-RESULT kbd-events ' | cut -d' ' -f3-); "
  jw=$(cl_warnings $(cat $CL/t-hid))
  [ -z "$jw" ] || why="$why""daemon: $(echo "$jw" | head -n 3 | tr '\n' ';')"
  if [ -n "$why" ]; then reason "keyboard $k: $why"; return 1; fi
  reason "keyboard $k ($pre) -> port 2; guest /dev/input/$ev: presses 30,48,46 (a b c), releases $(guest_result clg kbd-events releases), $(guest_result clg kbd-events repeats) repeats; first event seen in dom0 $dt s after the request"
}

# detach: dom0's usbhid takes the keyboard back (fork-free wait); the guest's event device goes.
cl_hid_detach() {
  local k t0 n=0 dt
  read -r k < $CL/kbd
  t0=$(lab_now)
  xenpvusb usb-detach clg 0 2 || { pv_log 20; reason "usb-detach failed"; return 1; }
  until usb_bound_to $k usbhid; do
    n=$((n + 1))
    [ $n -gt 1200 ] && { pv_log 30; reason "usbhid not bound to $k within 60 s (drivers: $(usb_drivers $k))"; return 1; }
    lab_sleep 0.05
  done
  dt=$(lab_elapsed $t0)
  figure classes-hid-handback-s $dt s
  guest_wait clg 'GUEST-RESULT kbd-gone ' 150 || { reason "usbhid has $k again after $dt s, but the guest did not report its event device gone"; return 1; }
  guest_log clg | grep -q 'GUEST-RESULT kbd-gone no' && { reason "usbhid has $k again after $dt s, but the guest's event device is still there"; return 1; }
  reason "usbhid bound to $k again $dt s after usb-detach began; the guest reported its event device gone $(lab_elapsed $t0) s after it began"
}

# Whatever happened: no guest, the stick back with usb-storage, the keyboard back with usbhid.
cl_cleanup() {
  local id b k f fixed=
  read -r b < $CL/ss-busid 2>/dev/null || b=$(d=$(usb_dev_by_serial $LAB_STICK_XHCI_SERIAL) && echo ${d##*/})
  read -r k < $CL/kbd 2>/dev/null || k=$(cl_kbd)
  if [ -f $CL/domid ]; then
    read -r id < $CL/domid
    xenpvusb usb-hc-destroy clg 0 2>&1 || true
    guest_destroy clg > /dev/null
    wait_for 15 eval "! xenstore-exists /local/domain/0/backend/vusb/$id 2>/dev/null" \
      || { echo "classes: backend/vusb/$id still there 15 s after its domain died; removing it by hand"; xenstore-rm /local/domain/0/backend/vusb/$id; }
  else
    guest_destroy clg > /dev/null 2>&1
  fi
  if ! wait_for 60 eval 'usb_has_disk $LAB_STICK_XHCI_SERIAL && usb_bound_to "$b" usb-storage && usb_bound_to "$k" usbhid'; then
    usb_has_disk $LAB_STICK_XHCI_SERIAL || { lab_recover_stick $LAB_STICK_XHCI_SERIAL; fixed="stick replugged in QEMU; "; }
    if [ -n "$k" ] && ! usb_bound_to "$k" usbhid; then
      echo "LAB-RECOVERY: usbhid is not bound to the keyboard $k (drivers: $(usb_drivers $k)); asking the kernel to probe its interfaces"
      for f in /sys/bus/usb/devices/$k:*; do [ -e "$f" ] && echo "${f##*/}" > /sys/bus/usb/drivers_probe; done
      fixed="$fixed""keyboard re-probed; "
    fi
    reason "dom0 did not get both devices back by itself (${fixed}stick $b: $(usb_drivers "$b"); keyboard $k: $(usb_drivers "$k"))"; return 1
  fi
  reason "no guest; stick $b in dom0 (usb-storage, /dev/$(usb_disk_by_serial $LAB_STICK_XHCI_SERIAL)), keyboard $k bound to usbhid"
}

if stage daemon -t 120 pv_ensure; then
  if stage guest-create -t 240 cl_guest && stage hc-create -t 120 cl_hc; then
    WHEN=before stage ss-native-read -t 200 cl_native_read
    if stage ss-attach -t 300 cl_ss_attach; then
      stage ss-guest-read -t 660 cl_ss_read
      stage ss-detach -t 180 cl_ss_detach
    else
      xenpvusb usb-detach clg 0 1 2>&1 || true
    fi
    WHEN=after stage ss-native-read-after -t 200 cl_native_read
    stage ss-ratio cl_ratio
    stage hid-keyboard -t 600 cl_hid && stage hid-detach -t 180 cl_hid_detach
  fi
  stage cleanup -t 180 cl_cleanup
  pv_log 30
fi
