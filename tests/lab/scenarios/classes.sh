# Scenario "classes": device classes other than the EHCI stick. One guest (real xen-hcd) with four
# controllers made by `xenpvusb usb-hc-create`: 0 (USB 2) the SuperSpeed stick only, 1 (USB 2) an EHCI
# stick only (their statistics compared), 2 (USB 2) the keyboard and the CDC ethernet device, 3 (USB 1.1)
# the tablet and the FTDI serial adapter, and a high-speed stick it must refuse.
# - the SuperSpeed stick (QEMU usb-storage on xHCI, 5000M in dom0), which the daemon presents at high
#   speed with translated descriptors: the guest must enumerate it as a high-speed device without a
#   descriptor complaint in its kernel log, and read it whole (checksum); dom0 reads it natively before
#   and after (median of three reads each, ratio); controller 0's statistics when it is destroyed;
# - the high-speed EHCI stick LABEHCI03: refused on the USB 1.1 controller (the CLI exits non-zero with the
#   daemon's reason, the port stays empty, dom0 keeps the stick), then read whole on controller 1 (the
#   same guest and daemon reading a high-speed stick: its statistics against the SuperSpeed stick's);
# - the xHCI keyboard (QEMU usb-kbd): the guest's usbhid + hid-generic + evdev (optional modules of the
#   guest initramfs) bind it, QEMU types "abc" through its monitor (LAB-REQUEST sendkey), and the guest
#   reads the key presses (30, 48, 46) from /dev/input/event*; after the detach dom0's usbhid has it again;
# - behind QEMU's usb-hub (full speed, never assignable), all three full-speed devices:
#   the tablet (QEMU usb-tablet) on the USB 1.1 controller: QEMU moves it to (12345, 23456) and clicks
#   (LAB-REQUEST tablet, QMP input-send-event), the guest reads ABS_X, ABS_Y and BTN_LEFT down/up;
#   the FTDI adapter (QEMU usb-serial, its line ends in run-lab) on the USB 1.1 controller: 4096 random
#   bytes written in the guest reach the host exactly (the host answers their count and sha256), and the
#   host's 4096 bytes (every byte value 16 times) reach the guest exactly (ftdi_sio, raw tty);
#   the CDC ethernet device (QEMU usb-net, joined by a QEMU hub netdev to a virtio NIC of dom0 and
#   nothing else; link-local addresses): cdc_ether binds in the guest, ping both ways (5 of 5), and 256 KiB
#   each way over HTTP (busybox httpd/wget), checksums compared.

CL=$LAB_TMP/classes
mkdir -p $CL
# Kernel log lines that mean the guest's usbcore did not like what it was given (checked from the
# guest's marks on: its boot log has harmless "invalid"s, e.g. "DMI not present or invalid").
CL_MODULES="hid usbhid hid_generic evdev usbserial ftdi_sio mii usbnet cdc_ether"
CL_BAD='maxpacket|Invalid ep0|config .* descriptor|invalid|unable to get BOS|device descriptor read|not accepting address|unable to enumerate'

# cl_native_read: dom0 reads the SuperSpeed stick whole three times (O_DIRECT 1 MiB reads, checksum
# each); the figure is the median (single reads varied from 7.9 to 94 MB/s across boots, and from 2.3
# to 12 within one, with the host's load).
cl_native_read() {
  local dev r d sp i all= med mx
  wait_for 60 usb_has_disk $LAB_STICK_XHCI_SERIAL || { reason "xHCI stick has no block device in dom0"; return 1; }
  dev=$(usb_disk_by_serial $LAB_STICK_XHCI_SERIAL)
  d=$(usb_dev_by_serial $LAB_STICK_XHCI_SERIAL); read -r sp < $d/speed
  read -r mx < /sys/block/$dev/queue/max_sectors_kb
  for i in 1 2 3; do
    r=$(read_disk $dev) || { reason "dd of /dev/$dev failed (read $i)"; return 1; }
    set -- $r
    [ "$4" = "$LAB_STICK_XHCI_SHA256" ] || { reason "checksum mismatch: $4 (read $i)"; return 1; }
    all="$all${all:+ }$3"
  done
  med=$(printf '%s\n' $all | sort -n | sed -n 2p)
  echo "$med" > $CL/native-mbps-$WHEN
  if [ "$WHEN" = before ]; then figure dom0-native-xhci-MBps "$med" MB/s; else figure dom0-native-xhci-MBps-$WHEN "$med" MB/s; fi
  reason "${d##*/} ${sp}M /dev/$dev (max_sectors_kb $mx): median $med MB/s of three reads ($all), checksums OK"
}

cl_guest() {
  {
    # W: how long (loop turns of about a second, longer under load) each part waits for its device: dom0's
    # stages between two parts take minutes on a loaded host (at load 9 the SuperSpeed stick's reads and
    # the latency stage took 7.5 min between the first stick's end and the second's attach)
    echo "BAD='$CL_BAD' SER_HOST_BYTES=$LAB_SERIAL_HOST_BYTES W=1500"
    cat <<'G'
# cmd_latency NAME: 256 O_DIRECT reads of 4 KiB (one SCSI command each: CBW, one data URB, CSW)
cmd_latency() {
  t0=$(now)
  dd if=/dev/$DISK of=/dev/null bs=4k count=256 iflag=direct 2>/dev/null
  t1=$(now)
  result "$1-4k ms_per_cmd=$(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.2f", (b-a) * 1000 / 256}')"
}
# 1. the SuperSpeed stick: a mark in the kernel log, then its disk, the kernel's view of the enumeration
ss_part() {
  echo "LAB-MARK classes ss-attach" > /dev/kmsg
  result "ss-mark uptime=$(now)"
  wait_usb_disk $W; rc=$?
  [ $rc = 0 ] && usb_list
  dmesg | sed -n '/LAB-MARK classes ss-attach/,$p' > /tmp/k-ss.txt
  result "ss-klog lines=$(wc -l < /tmp/k-ss.txt) highspeed=$(grep -c 'new high-speed USB device' /tmp/k-ss.txt) bad=$(grep -ciE "$BAD" /tmp/k-ss.txt)"
  [ $rc = 0 ] || return 0
  result "ss-queue max_sectors_kb=$(cat /sys/block/$DISK/queue/max_sectors_kb)"
  cmd_latency ss
  read_all
  wait_usb_gone 300
}
# 1b. the EHCI stick on controller 1 (after dom0 saw it refused on the USB 1.1 controller)
hs_part() {
  result "hs-mark uptime=$(now)"
  wait_usb_disk $W || return 0
  result "hs-queue max_sectors_kb=$(cat /sys/block/$DISK/queue/max_sectors_kb)"
  cmd_latency hs
  read_marked hsread
  wait_usb_gone 300 > /tmp/gone.out; sed 's/GUEST-RESULT gone /GUEST-RESULT hsgone /' /tmp/gone.out
}
# 2. the keyboard: wait for its event device, hold it open, read the events QEMU types
hid_part() {
  echo "LAB-MARK classes hid" > /dev/kmsg
  result "hid-mark uptime=$(now)"
  n=0 ev=
  while [ $n -lt $W ]; do
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
# ev_wait NAME-PATTERN [SECONDS]: waits for an event device whose name matches; sets ev and nm
ev_wait() {
  n=0 ev=
  while [ $n -lt ${2:-$W} ]; do
    for e in /sys/class/input/event*; do
      [ -f $e/device/name ] || continue
      read -r nm < $e/device/name
      case $nm in $1) ev=${e##*/}; break;; esac
    done
    [ -n "$ev" ] && return 0
    n=$((n + 1)); sleep 1
  done
  return 1
}
# 3. the tablet (full speed, on the USB 1.1 controller): QEMU moves it to (12345, 23456), presses and
# releases the left button; the guest reads ABS_X, ABS_Y, BTN_LEFT (272) 1 and 0
tablet_part() {
  echo "LAB-MARK classes tablet" > /dev/kmsg
  result "tab-mark uptime=$(now)"
  ev_wait '*Tablet*' || { result "tab-ready none"; return 0; }
  exec 3< /dev/input/$ev
  result "tab-ready dev=$ev name=$(echo "$nm" | tr ' ' _) waited=${n}s"
  timeout 120 dd bs=24 count=1 of=/tmp/tev.bin <&3 2>/dev/null
  [ -s /tmp/tev.bin ] || { result "tab-first none"; exec 3<&-; return 0; }
  result "tab-first uptime=$(now)"
  # move: ABS_X, ABS_Y, SYN; press: MSC_SCAN, BTN_LEFT 1, SYN; release: MSC_SCAN, BTN_LEFT 0, SYN
  timeout 20 dd bs=24 count=8 <&3 2>/dev/null >> /tmp/tev.bin
  exec 3<&-
  od -A n -v -t u2 -w24 /tmp/tev.bin > /tmp/tev.txt
  result "tab-events n=$(wc -l < /tmp/tev.txt) $(awk '
    $9 == 3 && $10 == 0 { x = $11 + $12 * 65536 }
    $9 == 3 && $10 == 1 { y = $11 + $12 * 65536 }
    $9 == 1 && $10 == 272 { b = b s $11; s = "," }
    $9 == 0 { syn++ }
    END { printf "x=%s y=%s btn_left=%s syn=%d", x == "" ? "none" : x, y == "" ? "none" : y, b ? b : "none", syn }' /tmp/tev.txt)"
  n=0
  while [ -e /sys/class/input/$ev ] && [ $n -lt 120 ]; do sleep 1; n=$((n + 1)); done
  if [ -e /sys/class/input/$ev ]; then result "tab-gone no"; else result "tab-gone after=${n}s"; fi
}
# 4. the FTDI adapter (full speed, behind QEMU's hub, on the USB 1.1 controller): 4096 random bytes out,
# then the host's answer in: "HOST-RX <count> <sha256>\n" (82 bytes) and SER_HOST_BYTES bytes
serial_part() {
  echo "LAB-MARK classes serial" > /dev/kmsg
  result "ser-mark uptime=$(now)"
  n=0
  while [ ! -c /dev/ttyUSB0 ] && [ $n -lt $W ]; do n=$((n + 1)); sleep 1; done
  [ -c /dev/ttyUSB0 ] || { result "ser-ready none"; return 0; }
  exec 4<> /dev/ttyUSB0
  stty raw -echo -ixon -ixoff -crtscts 115200 <&4 || result "ser-stty failed"
  dd if=/dev/urandom of=/tmp/sg.bin bs=4096 count=1 2>/dev/null
  result "ser-ready dev=ttyUSB0 driver=$(basename $(readlink -f /sys/class/tty/ttyUSB0/device/driver)) waited=${n}s stty=$(stty -g <&4 | tr ':' ,)"
  t0=$(now)
  cat /tmp/sg.bin >&4
  result "ser-sent bytes=$(stat -c %s /tmp/sg.bin) sha256=$(sha256sum /tmp/sg.bin | cut -d' ' -f1) uptime=$t0"
  timeout 180 head -c $((82 + SER_HOST_BYTES)) <&4 > /tmp/srx.bin
  t1=$(now)
  # anything after the answer (an echo, line noise) would show here
  timeout 3 head -c 1 <&4 > /tmp/sextra.bin
  exec 4<&-
  head -c 82 /tmp/srx.bin > /tmp/shdr.txt
  tail -c +83 /tmp/srx.bin > /tmp/shost.bin
  set -- $(cat /tmp/shdr.txt)
  result "ser-rx bytes=$(stat -c %s /tmp/srx.bin) header=${1:-none} host_count=${2:-none} host_sha256=${3:-none} data_bytes=$(stat -c %s /tmp/shost.bin) data_sha256=$(sha256sum /tmp/shost.bin | cut -d' ' -f1) extra=$(stat -c %s /tmp/sextra.bin) secs=$(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.1f", b-a}')"
  n=0
  while [ -e /dev/ttyUSB0 ] && [ $n -lt 120 ]; do sleep 1; n=$((n + 1)); done
  if [ -e /dev/ttyUSB0 ]; then result "ser-gone no"; else result "ser-gone after=${n}s"; fi
}
# 5. CDC ethernet (QEMU usb-net, full speed, on a USB 2 controller): link-local 169.254.77.2; ping dom0
# (169.254.77.1), serve 256 KiB over HTTP, fetch dom0's 256 KiB when dom0 says where (xenstore data/)
net_part() {
  echo "LAB-MARK classes net" > /dev/kmsg
  result "net-mark uptime=$(now)"
  n=0 nif=
  while [ $n -lt $W ]; do
    for i in /sys/class/net/*; do
      [ -e $i/device ] || continue
      case $(readlink -f $i/device) in */usb*) nif=${i##*/}; break;; esac
    done
    [ -n "$nif" ] && break
    n=$((n + 1)); sleep 1
  done
  [ -n "$nif" ] || { result "net-ready none"; return 0; }
  ip addr add 169.254.77.2/16 dev $nif && ip link set $nif up
  result "net-ready dev=$nif mac=$(cat /sys/class/net/$nif/address) driver=$(basename $(readlink -f /sys/class/net/$nif/device/driver)) waited=${n}s"
  ping -c 5 -W 10 -w 120 169.254.77.1 > /tmp/ping.txt 2>&1
  cat /tmp/ping.txt
  result "net-ping-out $(sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) packets received.*/tx=\1 rx=\2/p' /tmp/ping.txt)"
  mkdir -p /tmp/www
  dd if=/dev/urandom of=/tmp/www/g.bin bs=64k count=4 2>/dev/null
  httpd -f -p 169.254.77.2:8080 -h /tmp/www & hp=$!
  result "net-serve url=http://169.254.77.2:8080/g.bin bytes=$(stat -c %s /tmp/www/g.bin) sha256=$(sha256sum /tmp/www/g.bin | cut -d' ' -f1)"
  pvfront xs-wait data/classes-net-get 600 > /dev/null || { result "net-get none"; return 0; }
  url=$(pvfront xs-read data/classes-net-get)
  t0=$(now)
  wget -q -O /tmp/d.bin "$url" || result "net-get-failed url=$url"
  t1=$(now)
  result "net-get bytes=$(stat -c %s /tmp/d.bin 2>/dev/null || echo 0) sha256=$(sha256sum /tmp/d.bin | cut -d' ' -f1) secs=$(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.2f", b-a}') rx_packets=$(cat /sys/class/net/$nif/statistics/rx_packets) tx_packets=$(cat /sys/class/net/$nif/statistics/tx_packets)"
  kill $hp 2>/dev/null
  n=0
  while [ -e /sys/class/net/$nif ] && [ $n -lt 120 ]; do sleep 1; n=$((n + 1)); done
  if [ -e /sys/class/net/$nif ]; then result "net-gone no"; else result "net-gone after=${n}s"; fi
}
ss_part
hs_part
hid_part
tablet_part
serial_part
net_part
G
  } > $CL/guest.sh
  GUEST_EXTRA_MODULES="$CL_MODULES" guest_create clg $CL/guest.sh || { reason "xl create failed"; return 1; }
  guest_wait clg 'GUEST-BEGIN' 120 || { reason "guest did not reach its script"; return 1; }
  xl domid clg > $CL/domid
  guest_log clg | grep -q GUEST-HCD-LOADED || { reason "xen-hcd not loaded in the guest"; return 1; }
  reason "guest up (domain $(cat $CL/domid)), xen-hcd loaded; $(guest_log clg | grep -E "^GUEST-MODULE ($(echo $CL_MODULES | tr ' ' '|')) " | cut -d' ' -f2- | tr '\n' ';' | sed 's/;$//')"
}

# Four controllers: 0 and 1 (USB 2) one stick each, 2 (USB 2) keyboard and ethernet, 3 (USB 1.1) tablet,
# serial and the refused stick.
cl_hc() {
  local id c v
  read -r id < $CL/domid
  for v in 2 2 2 1; do
    xenpvusb usb-hc-create clg $v 8 || { pv_log 20; reason "usb-hc-create clg $v 8 failed"; return 1; }
  done
  for c in 0 1 2 3; do
    wait_for 60 sh -c "xenstore-read /local/domain/0/backend/vusb/$id/$c/state | grep -qx 4" \
      || { pv_log 20; reason "controller $c did not reach Connected with the guest's xen-hcd"; return 1; }
  done
  v=$(xenstore-read /local/domain/0/backend/vusb/$id/3/usb-ver)
  [ "$v" = 1 ] || { reason "controller 3 has usb-ver '$v', not 1"; return 1; }
  reason "controllers 0, 1, 2 (USB 2) and 3 (USB 1.1) connected to xen-hcd"
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

# Per-command latency: dom0 reads 256 x 4 KiB (O_DIRECT; one SCSI command each: CBW, one data URB,
# CSW) from the SuperSpeed and the EHCI stick, alternately, twice each; the guest did the same through
# the daemon before each whole read. What the daemon's path adds to a command = guest - dom0, per stick.
cl_dd4k() { # DEV -> ms per command
  local t0=${EPOCHREALTIME/[.,]/} t1
  dd if=/dev/$1 of=/dev/null bs=4k count=256 iflag=direct status=none || return 1
  t1=${EPOCHREALTIME/[.,]/}
  echo $(( (t1 - t0) / 256 / 10 )) | awk '{ printf "%.2f", $1 / 100 }'
}
cl_cmd_latency() {
  local ss hs a b c d gs gh
  ss=$(usb_disk_by_serial $LAB_STICK_XHCI_SERIAL) && hs=$(usb_disk_by_serial $LAB_STICK_EHCI3_SERIAL) || { reason "a stick has no disk in dom0"; return 1; }
  a=$(cl_dd4k $ss) && b=$(cl_dd4k $hs) && c=$(cl_dd4k $ss) && d=$(cl_dd4k $hs) || { reason "a 4 KiB read failed"; return 1; }
  set -- $(awk -v a=$a -v b=$b -v c=$c -v d=$d 'BEGIN { printf "%.2f %.2f", (a + c) / 2, (b + d) / 2 }')
  figure dom0-xhci-4k-ms-per-cmd $1 ms; figure dom0-ehci-4k-ms-per-cmd $2 ms
  gs=$(guest_result clg ss-4k ms_per_cmd); [ -n "$gs" ] && figure pvusb-xhci-4k-ms-per-cmd $gs ms
  echo "$1 $2" > $CL/dom0-4k
  reason "dom0, ms a 4 KiB command: SuperSpeed stick $a, $c (mean $1); EHCI stick $b, $d (mean $2); the guest through the daemon: SuperSpeed ${gs:-none} (the EHCI stick's comes with hs-read)"
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


cl_hid() {
  local k t0 dt ev evl first bad why= pre m jw
  for m in hid usbhid hid_generic evdev; do
    guest_log clg | grep -q "^GUEST-MODULE $m loaded" || { reason "module $m not loaded in the guest: $(guest_log clg | grep "^GUEST-MODULE $m " || echo 'no GUEST-MODULE line (an image without the optional HID modules?)')"; return 1; }
  done
  k=$(lab_xhci_kbd) || { lsusb; reason "no QEMU USB Keyboard (0627:0001) on the xHCI controller in dom0"; return 1; }
  echo $k > $CL/kbd
  if wait_for 10 usb_bound_to $k usbhid; then pre="usbhid had it in dom0"; else pre="dom0's usbhid did not have it before (drivers: $(usb_drivers $k))"; fi
  guest_wait clg 'GUEST-RESULT hid-mark' 600 || { reason "the guest's script did not reach the keyboard part"; return 1; }
  t0=$(lab_now); echo $t0 > $CL/t-hid
  xenpvusb usb-attach clg 2 1 $k || { pv_log 20; reason "usb-attach clg 2 1 $k failed"; return 1; }
  guest_wait clg 'GUEST-RESULT kbd-ready ' 330 || { cl_klog hid; pv_log 30; reason "no keyboard event device in the guest within 330 s"; return 1; }
  evl=$(guest_log clg | grep -m1 'GUEST-RESULT kbd-ready ')
  case $evl in *"kbd-ready none"*) cl_klog hid; pv_log 30; reason "no keyboard event device in the guest within its wait (W turns)"; return 1;; esac
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
  reason "keyboard $k ($pre) -> controller 2 port 1; guest /dev/input/$ev: presses 30,48,46 (a b c), releases $(guest_result clg kbd-events releases), $(guest_result clg kbd-events repeats) repeats; first event seen in dom0 $dt s after the request"
}

# detach: dom0's usbhid takes the keyboard back (fork-free wait); the guest's event device goes.
cl_hid_detach() {
  local k t0 n=0 dt
  read -r k < $CL/kbd
  t0=$(lab_now)
  xenpvusb usb-detach clg 2 1 || { pv_log 20; reason "usb-detach failed"; return 1; }
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

# cl_find VID:PID PRODUCT: the bus id of the USB device with these ids and product string.
cl_find() {
  local d v p n
  for d in /sys/bus/usb/devices/*; do
    [ -f $d/idVendor ] && [ -f $d/product ] || continue
    read -r v < $d/idVendor; read -r p < $d/idProduct; read -r n < $d/product
    [ "$v:$p" = "$1" ] && [ "$n" = "$2" ] && { echo ${d##*/}; return 0; }
  done
  return 1
}

# cl_port_line DEVID PORT: that port's line of `xenpvusb usb-list clg`.
cl_port_line() { xenpvusb usb-list clg | awk -v c=$1 -v p="  Port $2:" '/^Devid/ { getline; d = $1 } d == c && index($0, p) == 1 { print; exit }'; }

# cl_stats DEVID NAME: destroys controller DEVID; its statistics (logged when it disconnects) as figures
# classes-NAME-*: URBs, bytes per URB, device and grant time per URB, requests merged.
cl_stats() {
  local c=$1 nm=$2 id t0 line urbs bytes dev gr batch merged mt
  read -r id < $CL/domid
  t0=$(lab_now)
  xenpvusb usb-hc-destroy clg $c || { pv_log 20; reason "usb-hc-destroy clg $c failed"; return 1; }
  wait_for 30 eval "pv_journal $t0 | grep -q 'vusb $id/$c: served '" || { pv_log 20; reason "no statistics line for vusb $id/$c within 30 s"; return 1; }
  line=$(pv_journal $t0 | grep -m1 "vusb $id/$c: served ")
  echo "$line"
  set -- $(echo "$line" | sed -n 's/.*served \([0-9]*\) URBs, \([0-9]*\) bytes .*device \([0-9.]*\) us, grant copy\/map \([0-9.]*\) us; \([0-9.]*\) requests per ring batch; \([0-9]*\) bulk [IN ]*requests merged into \([0-9]*\) transfers.*/\1 \2 \3 \4 \5 \6 \7/p')
  [ $# = 7 ] || { reason "cannot parse: $line"; return 1; }
  urbs=$1 bytes=$2 dev=$3 gr=$4 batch=$5 merged=$6 mt=$7
  figure classes-$nm-urbs $urbs URBs
  figure classes-$nm-bytes-per-urb $(awk -v b=$bytes -v u=$urbs 'BEGIN { printf "%.0f", u ? b / u : 0 }') bytes
  figure classes-$nm-device-us-per-urb $dev us
  figure classes-$nm-grant-us-per-urb $gr us
  figure classes-$nm-device-s-total $(awk -v d=$dev -v u=$urbs 'BEGIN { printf "%.1f", d * u / 1e6 }') s
  reason "controller $c: $urbs URBs, $bytes bytes ($(awk -v b=$bytes -v u=$urbs 'BEGIN { printf "%.0f", u ? b / u : 0 }') a URB), device $dev us a URB ($(awk -v d=$dev -v u=$urbs 'BEGIN { printf "%.1f", d * u / 1e6 }') s in all), grant $gr us, $batch requests a batch, $merged requests merged into $mt transfers"
}

# The high-speed EHCI stick on the USB 1.1 controller: the daemon must refuse it, the CLI say so and
# exit non-zero, the port stay empty (port/3 empty, usb-list shows it free, port-status/3 the
# verdict), and dom0 keep the stick (usb-storage, its disk).
cl_refuse() {
  local d b sp out rc id pn ps pl dsk why= t0
  d=$(usb_dev_by_serial $LAB_STICK_EHCI3_SERIAL) || { reason "EHCI stick $LAB_STICK_EHCI3_SERIAL not found"; return 1; }
  b=${d##*/}; echo $b > $CL/hs-busid
  read -r sp < $d/speed
  [ "$sp" = 480 ] || { reason "$b runs at ${sp}M, not high speed"; return 1; }
  dsk=$(usb_disk_by_serial $LAB_STICK_EHCI3_SERIAL) || { reason "dom0 has no disk for $b before the attach"; return 1; }
  read -r id < $CL/domid
  t0=$(lab_now)
  out=$(xenpvusb usb-attach clg 3 3 $b 2>&1); rc=$?
  echo "xenpvusb usb-attach clg 3 3 $b -> exit $rc: $out"
  [ $rc != 0 ] || why="$why""the CLI exited 0; "
  echo "$out" | grep -qi "refused $b on port 3 of controller 3: a high-speed device cannot be served on a USB 1.x controller" \
    || why="$why""the CLI did not print the refusal ('$out'); "
  pn=$(xenstore-read /local/domain/0/backend/vusb/$id/3/port/3 2>&1)
  [ -z "$pn" ] || why="$why""port/3 = '$pn', not empty; "
  ps=$(xenstore-read /local/domain/0/backend/vusb/$id/3/port-status/3 2>&1)
  case $ps in "refused $b: "*) ;; *) why="$why""port-status/3 = '$ps'; ";; esac
  pl=$(cl_port_line 3 3)
  [ "$pl" = "  Port 3:" ] || why="$why""usb-list shows '$pl' for controller 3 port 3; "
  xenpvusb usb-list-assignable-devices | grep -q "^$b " || why="$why""$b is not in usb-list-assignable-devices any more; "
  wait_for 30 eval 'usb_bound_to $b usb-storage && usb_has_disk $LAB_STICK_EHCI3_SERIAL' \
    || why="$why""dom0 lost the stick (drivers: $(usb_drivers $b)); "
  pv_journal $t0 | grep "vusb $id/3: " | head -n 5
  if [ -n "$why" ]; then pv_log 20; reason "$b (${sp}M) on USB 1.1 controller 3: $why"; return 1; fi
  reason "$b (${sp}M): usb-attach exit $rc, '$(echo "$out" | head -n1)'; port/3 empty, usb-list: port 3 free, port-status/3 '$ps'; dom0 keeps it (usb-storage, /dev/$(usb_disk_by_serial $LAB_STICK_EHCI3_SERIAL), before /dev/$dsk)"
}

# The same stick on USB 2 controller 1: the guest reads it whole (checksum); figure pvusb-guest-ehci-MBps-classes.
cl_hs_read() {
  local b sum mbps m ds dh gs add
  read -r b < $CL/hs-busid
  guest_wait clg 'GUEST-RESULT hs-mark' 600 || { reason "the guest's script did not reach the EHCI stick part"; return 1; }
  xenpvusb usb-attach clg 1 1 $b || { pv_log 20; reason "usb-attach clg 1 1 $b failed"; return 1; }
  guest_wait clg 'GUEST-RESULT hsread ' 400 || { pv_log 30; reason "no read result"; return 1; }
  sum=$(guest_result clg hsread sha256); mbps=$(guest_result clg hsread mbps)
  [ -n "$mbps" ] || { reason "guest read failed: $(guest_log clg | grep 'GUEST-RESULT hsread ')"; return 1; }
  figure pvusb-guest-ehci-MBps-classes "$mbps" MB/s
  [ "$sum" = "$LAB_STICK_EHCI3_SHA256" ] || { reason "checksum mismatch in the guest: $sum"; return 1; }
  m=$(guest_result clg hs-4k ms_per_cmd); [ -n "$m" ] && figure pvusb-ehci-4k-ms-per-cmd $m ms
  [ -f $CL/dom0-4k ] && read -r ds dh < $CL/dom0-4k
  gs=$(guest_result clg ss-4k ms_per_cmd)
  add=$(awk -v gs=${gs:-0} -v ds=${ds:-0} -v gh=${m:-0} -v dh=${dh:-0} 'BEGIN { printf "SuperSpeed %.2f - %.2f = %.2f, EHCI %.2f - %.2f = %.2f", gs, ds, gs - ds, gh, dh, gh - dh }')
  reason "$b on controller 1: guest $mbps MB/s, checksum OK ($(guest_log clg | grep -m1 'GUEST-RESULT hs-queue ' | cut -d' ' -f3)); ms a 4 KiB command, guest - dom0: $add"
}
cl_hs_detach() {
  local b
  read -r b < $CL/hs-busid
  xenpvusb usb-detach clg 1 1 || { pv_log 20; reason "usb-detach failed"; return 1; }
  wait_for 60 eval 'usb_bound_to $b usb-storage && usb_has_disk $LAB_STICK_EHCI3_SERIAL' || { reason "dom0 did not get $b back"; return 1; }
  guest_wait clg 'GUEST-RESULT hsgone ' 120 || { reason "the guest still sees the disk"; return 1; }
  reason "$b back with usb-storage in dom0, gone from the guest"
}

# The tablet (full speed behind QEMU's hub) on the USB 1.1 controller: QEMU moves it to (12345, 23456)
# and clicks; the guest must read exactly those.
CL_TX=12345 CL_TY=23456
cl_tablet() {
  local t k dt why= m bad
  t=$(cl_find 0627:0001 "QEMU USB Tablet") || { lsusb; reason "no QEMU USB Tablet (0627:0001) in dom0"; return 1; }
  echo $t > $CL/tablet
  case $t in *.*) ;; *) reason "the tablet $t is not behind the hub"; return 1;; esac
  guest_wait clg 'GUEST-RESULT tab-mark' 600 || { reason "the guest's script did not reach the tablet part"; return 1; }
  echo $(lab_now) > $CL/t-tab
  xenpvusb usb-attach clg 3 1 $t || { pv_log 20; reason "usb-attach clg 3 1 $t failed"; return 1; }
  guest_wait clg 'GUEST-RESULT tab-ready ' 330 || { cl_klog tablet; pv_log 30; reason "no answer from the guest"; return 1; }
  guest_log clg | grep -q 'GUEST-RESULT tab-ready none' && { cl_klog tablet; pv_log 30; reason "no tablet event device in the guest within its wait (W turns)"; return 1; }
  k=$(lab_now)
  lab_request tablet $CL_TX $CL_TY
  guest_wait clg 'GUEST-RESULT tab-first ' 150 || { reason "no answer from the guest"; return 1; }
  dt=$(lab_elapsed $k)
  guest_log clg | grep -q 'GUEST-RESULT tab-first none' && { cl_klog tablet; pv_log 30; reason "no tablet event in the guest within 120 s of the request"; return 1; }
  figure classes-tablet-seen-s $dt s
  guest_wait clg 'GUEST-RESULT tab-events ' 60 || { reason "no event summary from the guest"; return 1; }
  cl_klog tablet > $CL/tab-console
  echo "--- the guest's kernel log from the tablet's attach on:"; grep -v '^GUEST-' $CL/tab-console
  echo "--- the daemon's journal for $t:"; cl_journal $(cat $CL/t-tab) $t
  bad=$(grep -v '^GUEST-' $CL/tab-console | grep -iE "$CL_BAD")
  [ -z "$bad" ] || why="$why""guest kernel: $(echo "$bad" | head -n 4 | sed 's/^\[ *[0-9.]*\] //' | tr '\n' ';') "
  grep -q 'new full-speed USB device' $CL/tab-console || why="$why""no 'new full-speed USB device' line; "
  grep -qE 'hid-generic .*Tablet' $CL/tab-console || why="$why""no hid-generic Tablet line; "
  m=$(guest_log clg | grep -m1 'GUEST-RESULT tab-events ')
  [ "$(guest_result clg tab-events x)" = $CL_TX ] && [ "$(guest_result clg tab-events y)" = $CL_TY ] \
    && [ "$(guest_result clg tab-events btn_left)" = 1,0 ] || why="$why""events: ${m#GUEST-RESULT }; "
  m=$(cl_warnings $(cat $CL/t-tab)); [ -z "$m" ] || why="$why""daemon: $(echo "$m" | head -n 3 | tr '\n' ';')"
  if [ -n "$why" ]; then reason "tablet $t: $why"; return 1; fi
  reason "tablet $t (full speed) -> USB 1.1 controller 3 port 1; guest $(guest_result clg tab-ready dev): ABS_X $CL_TX, ABS_Y $CL_TY, BTN_LEFT 1 then 0 ($(guest_result clg tab-events n) events); first event seen in dom0 $dt s after the request"
}
cl_tablet_detach() {
  local t t0 dt
  read -r t < $CL/tablet
  t0=$(lab_now)
  xenpvusb usb-detach clg 3 1 || { pv_log 20; reason "usb-detach failed"; return 1; }
  wait_for 60 usb_bound_to $t usbhid || { pv_log 30; reason "usbhid not bound to $t within 60 s (drivers: $(usb_drivers $t))"; return 1; }
  dt=$(lab_elapsed $t0)
  guest_wait clg 'GUEST-RESULT tab-gone ' 150 || { reason "the guest did not report its event device gone"; return 1; }
  guest_log clg | grep -q 'GUEST-RESULT tab-gone no' && { reason "the guest's event device is still there"; return 1; }
  reason "usbhid bound to $t again ${dt} s after usb-detach began; the guest's event device gone"
}

# The FTDI adapter (QEMU usb-serial behind the hub: a bus id with a dot) on the USB 1.1 controller.
# The hub itself: neither in usb-list-assignable-devices nor accepted by usb-attach.
cl_serial() {
  local f h out rc why= m t0 k
  f=$(cl_find 0403:6001 "QEMU USB SERIAL") || f=$(cl_find 0403:6001 "QEMU USB Serial") || { lsusb; reason "no FTDI 0403:6001 in dom0"; return 1; }
  echo $f > $CL/ftdi
  case $f in *.*) ;; *) reason "the FTDI adapter $f is not behind a hub (no dot in its bus id)"; return 1;; esac
  h=${f%.*}
  [ -f /sys/bus/usb/devices/$h/bDeviceClass ] && [ "$(cat /sys/bus/usb/devices/$h/bDeviceClass)" = 09 ] || { reason "$h (the FTDI adapter's parent) is not a hub"; return 1; }
  wait_for 20 usb_bound_to $f ftdi_sio || echo "(dom0's ftdi_sio did not have $f before: $(usb_drivers $f))"
  xenpvusb usb-list-assignable-devices > $CL/assignable
  cat $CL/assignable
  grep -q "^$h " $CL/assignable && { reason "usb-list-assignable-devices lists the hub $h"; return 1; }
  grep -q "^$f " $CL/assignable || { reason "usb-list-assignable-devices does not list the FTDI adapter $f"; return 1; }
  out=$(xenpvusb usb-attach clg 3 4 $h 2>&1); rc=$?
  echo "xenpvusb usb-attach clg 3 4 $h (the hub) -> exit $rc: $out"
  [ $rc != 0 ] || { xenpvusb usb-detach clg 3 4; reason "usb-attach of the hub $h exited 0"; return 1; }
  [ -z "$(xenstore-read /local/domain/0/backend/vusb/$(cat $CL/domid)/3/port/4)" ] || { reason "the hub's usb-attach left port/4 set"; return 1; }
  guest_wait clg 'GUEST-RESULT ser-mark' 600 || { reason "the guest's script did not reach the serial part"; return 1; }
  t0=$(lab_now); echo $t0 > $CL/t-ser
  xenpvusb usb-attach clg 3 2 $f || { pv_log 20; reason "usb-attach clg 3 2 $f failed"; return 1; }
  guest_wait clg 'GUEST-RESULT ser-sent |GUEST-RESULT ser-ready none' 330 || { cl_klog serial; pv_log 30; reason "no answer from the guest"; return 1; }
  guest_log clg | grep -q 'GUEST-RESULT ser-ready none' && { cl_klog serial; pv_log 30; reason "no /dev/ttyUSB0 in the guest within its wait (W turns)"; return 1; }
  k=$(lab_now)
  lab_request serial-answer 4096
  guest_wait clg 'GUEST-RESULT ser-rx ' 240 || { reason "no answer from the guest"; return 1; }
  figure classes-serial-roundtrip-s $(lab_elapsed $k) s
  cl_klog serial > $CL/ser-console
  echo "--- the guest's kernel log from the adapter's attach on:"; grep -v '^GUEST-' $CL/ser-console
  echo "--- the daemon's journal for $f:"; cl_journal $t0 $f
  m=$(grep -v '^GUEST-' $CL/ser-console | grep -iE "$CL_BAD")
  [ -z "$m" ] || why="$why""guest kernel: $(echo "$m" | head -n 4 | sed 's/^\[ *[0-9.]*\] //' | tr '\n' ';') "
  grep -q 'FTDI USB Serial Device converter now attached to ttyUSB0' $CL/ser-console || why="$why""no ftdi_sio attach line; "
  [ "$(guest_result clg ser-rx header)" = HOST-RX ] || why="$why""no HOST-RX header; "
  [ "$(guest_result clg ser-rx host_count)" = 00004096 ] || why="$why""the host got $(guest_result clg ser-rx host_count) bytes, not 4096; "
  [ "$(guest_result clg ser-rx host_sha256)" = "$(guest_result clg ser-sent sha256)" ] || why="$why""the host's sha256 $(guest_result clg ser-rx host_sha256) is not the guest's $(guest_result clg ser-sent sha256); "
  [ "$(guest_result clg ser-rx data_bytes)" = "$LAB_SERIAL_HOST_BYTES" ] && [ "$(guest_result clg ser-rx data_sha256)" = "$LAB_SERIAL_HOST_SHA256" ] \
    || why="$why""the guest got $(guest_result clg ser-rx data_bytes) bytes from the host, sha256 $(guest_result clg ser-rx data_sha256) (want $LAB_SERIAL_HOST_BYTES, $LAB_SERIAL_HOST_SHA256); "
  [ "$(guest_result clg ser-rx extra)" = 0 ] || why="$why""$(guest_result clg ser-rx extra) byte(s) after the answer; "
  m=$(cl_warnings $t0); [ -z "$m" ] || why="$why""daemon: $(echo "$m" | head -n 3 | tr '\n' ';')"
  if [ -n "$why" ]; then pv_log 30; reason "FTDI $f: $why"; return 1; fi
  reason "FTDI $f (behind hub $h: not assignable, usb-attach refused it) -> USB 1.1 controller 3 port 2, guest $(guest_result clg ser-ready driver) ttyUSB0: 4096 random bytes to the host (its count and sha256 match), the host's $LAB_SERIAL_HOST_BYTES bytes (0..255 x16) exact in the guest, nothing more; $(guest_result clg ser-rx secs) s from the guest's write to the answer read"
}
cl_serial_detach() {
  local f
  read -r f < $CL/ftdi
  xenpvusb usb-detach clg 3 2 || { pv_log 20; reason "usb-detach failed"; return 1; }
  wait_for 60 usb_bound_to $f ftdi_sio || { pv_log 30; reason "ftdi_sio not bound to $f within 60 s (drivers: $(usb_drivers $f))"; return 1; }
  guest_wait clg 'GUEST-RESULT ser-gone ' 150 || { reason "the guest did not report its tty gone"; return 1; }
  guest_log clg | grep -q 'GUEST-RESULT ser-gone no' && { reason "the guest's ttyUSB0 is still there"; return 1; }
  reason "ftdi_sio bound to $f in dom0 again; the guest's ttyUSB0 gone"
}

# cl_dom0_if MAC: dom0's network interface with that address.
cl_dom0_if() { local a f; for f in /sys/class/net/*/address; do read -r a < $f; [ "$a" = "$1" ] && { f=${f%/address}; echo ${f##*/}; return 0; }; done; return 1; }

# CDC ethernet: QEMU usb-net on USB 2 controller 2 port 2; dom0's end is its virtio NIC on the same QEMU hub.
cl_net() {
  local u di t0 why= m gsha url r st hp
  u=$(cl_find 0525:a4a2 "RNDIS/QEMU USB Network Device") || { lsusb; reason "no QEMU usb-net (0525:a4a2) in dom0"; return 1; }
  echo $u > $CL/usbnet; usb_drivers $u > $CL/usbnet-drivers
  di=$(cl_dom0_if $LAB_NET_DOM0_MAC) || { ip -br link; reason "dom0 has no interface with $LAB_NET_DOM0_MAC (virtio_net)"; return 1; }
  echo $di > $CL/dom0if
  ip addr flush dev $di; ip addr add 169.254.77.1/16 dev $di && ip link set $di up || { reason "cannot configure $di"; return 1; }
  echo "dom0 $di: $(ip -br addr show dev $di); usb-net $u: config $(cat /sys/bus/usb/devices/$u/bConfigurationValue), drivers $(usb_drivers $u)"
  guest_wait clg 'GUEST-RESULT net-mark' 600 || { reason "the guest's script did not reach the ethernet part"; return 1; }
  t0=$(lab_now); echo $t0 > $CL/t-net
  xenpvusb usb-attach clg 2 2 $u || { pv_log 20; reason "usb-attach clg 2 2 $u failed"; return 1; }
  guest_wait clg 'GUEST-RESULT net-ping-out|GUEST-RESULT net-ready none' 450 || { cl_klog net; pv_log 30; reason "no answer from the guest"; return 1; }
  guest_log clg | grep -q 'GUEST-RESULT net-ready none' && { cl_klog net; pv_log 30; reason "no USB network interface in the guest within its wait (W turns)"; return 1; }
  m=$(guest_log clg | grep -m1 'GUEST-RESULT net-ping-out'); echo "$m"
  case $m in *" tx=5 rx=5"*) ;; *) why="$why""guest -> dom0 ping: ${m#GUEST-RESULT net-ping-out}; ";; esac
  guest_wait clg 'GUEST-RESULT net-serve ' 60 || { reason "the guest did not serve its file"; return 1; }
  busybox ping -c 5 -W 10 -w 120 169.254.77.2 > $CL/ping.txt 2>&1; cat $CL/ping.txt
  grep -q '^5 packets transmitted, 5 packets received' $CL/ping.txt || why="$why""dom0 -> guest ping: $(grep 'packets transmitted' $CL/ping.txt || tail -n1 $CL/ping.txt); "
  url=$(guest_result clg net-serve url); gsha=$(guest_result clg net-serve sha256)
  r=$(lab_now)
  busybox wget -q -O $CL/g.bin "$url" || why="$why""dom0's wget $url failed; "
  st=$(lab_elapsed $r)
  m=$(sha256sum < $CL/g.bin | cut -d' ' -f1)
  [ "$m" = "$gsha" ] && [ "$(stat -c %s $CL/g.bin)" = 262144 ] || why="$why""guest -> dom0 file: $(stat -c %s $CL/g.bin) bytes, sha256 $m, the guest's $gsha; "
  figure classes-net-guest-to-dom0-s $st s
  mkdir -p $CL/www; dd if=/dev/urandom of=$CL/www/d.bin bs=64k count=4 2> /dev/null
  busybox httpd -f -p 169.254.77.1:8081 -h $CL/www & hp=$!
  xenstore-write /local/domain/$(cat $CL/domid)/data/classes-net-get http://169.254.77.1:8081/d.bin
  guest_wait clg 'GUEST-RESULT net-get ' 240 || why="$why""no net-get result from the guest; "
  kill $hp 2>/dev/null; wait $hp 2>/dev/null
  m=$(sha256sum < $CL/www/d.bin | cut -d' ' -f1)
  [ "$(guest_result clg net-get sha256)" = "$m" ] && [ "$(guest_result clg net-get bytes)" = 262144 ] \
    || why="$why""dom0 -> guest file: $(guest_log clg | grep -m1 'GUEST-RESULT net-get' | cut -d' ' -f3-) (want 262144 bytes, sha256 $m); "
  figure classes-net-dom0-to-guest-s "$(guest_result clg net-get secs)" s
  cl_klog net > $CL/net-console
  echo "--- the guest's kernel log from the adapter's attach on:"; grep -v '^GUEST-' $CL/net-console
  echo "--- the daemon's journal for $u:"; cl_journal $t0 $u
  m=$(grep -v '^GUEST-' $CL/net-console | grep -iE "$CL_BAD")
  [ -z "$m" ] || why="$why""guest kernel: $(echo "$m" | head -n 4 | sed 's/^\[ *[0-9.]*\] //' | tr '\n' ';') "
  [ "$(guest_result clg net-ready driver)" = cdc_ether ] || why="$why""the guest's driver is $(guest_result clg net-ready driver), not cdc_ether; "
  m=$(cl_warnings $t0); [ -z "$m" ] || why="$why""daemon: $(echo "$m" | head -n 3 | tr '\n' ';')"
  echo "dom0 $di: rx_packets $(cat /sys/class/net/$di/statistics/rx_packets) tx_packets $(cat /sys/class/net/$di/statistics/tx_packets)"
  if [ -n "$why" ]; then pv_log 30; reason "usb-net $u: $why"; return 1; fi
  reason "usb-net $u (full speed) -> controller 2 port 2: guest $(guest_result clg net-ready dev) (cdc_ether, $(guest_result clg net-ready mac)) <-> dom0 $di: ping 5/5 each way, 256 KiB guest->dom0 in $st s and dom0->guest in $(guest_result clg net-get secs) s, checksums match"
}
# cl_net_bound BUSID: a dom0 network driver for usb-net has it. Both cdc_ether and cdc_subset (which
# lists 0525:a4a2 and takes the data interface alone) match it; which one binds depends on the order
# the drivers meet the interfaces (at boot: cdc_subset, and cdc_ether's probe gets EBUSY).
cl_net_bound() { usb_bound_to $1 cdc_ether || usb_bound_to $1 cdc_subset; }
cl_net_detach() {
  local u
  read -r u < $CL/usbnet
  xenpvusb usb-detach clg 2 2 || { pv_log 20; reason "usb-detach failed"; return 1; }
  wait_for 60 cl_net_bound $u || { pv_log 30; reason "neither cdc_ether nor cdc_subset bound to $u in dom0 within 60 s (drivers: $(usb_drivers $u))"; return 1; }
  guest_wait clg 'GUEST-RESULT net-gone ' 150 || { reason "the guest did not report its interface gone"; return 1; }
  guest_log clg | grep -q 'GUEST-RESULT net-gone no' && { reason "the guest's interface is still there"; return 1; }
  reason "dom0's $(usb_drivers $u) bound to $u again (before the attach: $(cat $CL/usbnet-drivers)); the guest's interface gone"
}

# Whatever happened: no guest, every device back with its dom0 driver (the sticks with usb-storage, the
# keyboard and tablet with usbhid, the FTDI adapter with ftdi_sio, usb-net with cdc_ether); dom0's link
# address removed.
cl_cleanup() {
  local id b b3 k t f u c fixed= why= di dev drv
  read -r b < $CL/ss-busid 2>/dev/null || b=$(d=$(usb_dev_by_serial $LAB_STICK_XHCI_SERIAL) && echo ${d##*/})
  read -r b3 < $CL/hs-busid 2>/dev/null || b3=$(d=$(usb_dev_by_serial $LAB_STICK_EHCI3_SERIAL) && echo ${d##*/})
  read -r k < $CL/kbd 2>/dev/null || k=$(lab_xhci_kbd)
  t=$(cl_find 0627:0001 "QEMU USB Tablet"); f=$(cl_find 0403:6001 "QEMU USB SERIAL" || cl_find 0403:6001 "QEMU USB Serial")
  u=$(cl_find 0525:a4a2 "RNDIS/QEMU USB Network Device")
  if [ -f $CL/domid ]; then
    read -r id < $CL/domid
    for c in 3 2 1 0; do xenstore-exists /local/domain/0/backend/vusb/$id/$c 2>/dev/null && { xenpvusb usb-hc-destroy clg $c 2>&1 || true; }; done
    guest_destroy clg > /dev/null
    wait_for 15 eval "! xenstore-exists /local/domain/0/backend/vusb/$id 2>/dev/null" \
      || { echo "classes: backend/vusb/$id still there 15 s after its domain died; removing it by hand"; xenstore-rm /local/domain/0/backend/vusb/$id; }
  else
    guest_destroy clg > /dev/null 2>&1
  fi
  di=$(cl_dom0_if $LAB_NET_DOM0_MAC) && { ip addr flush dev $di; ip link set $di down; }
  if ! wait_for 60 eval 'usb_has_disk $LAB_STICK_XHCI_SERIAL && usb_has_disk $LAB_STICK_EHCI3_SERIAL && usb_bound_to "$k" usbhid && usb_bound_to "$t" usbhid && usb_bound_to "$f" ftdi_sio && cl_net_bound "$u"'; then
    usb_has_disk $LAB_STICK_XHCI_SERIAL || { lab_recover_stick $LAB_STICK_XHCI_SERIAL; fixed="SuperSpeed stick replugged in QEMU; "; }
    usb_has_disk $LAB_STICK_EHCI3_SERIAL || { lab_recover_stick $LAB_STICK_EHCI3_SERIAL; fixed="$fixed""EHCI stick replugged in QEMU; "; }
    for dev in "$k usbhid" "$t usbhid" "$f ftdi_sio" "$u cdc_ether"; do
      set -- $dev
      [ -n "$1" ] && ! usb_bound_to "$1" $2 || continue
      [ $2 = cdc_ether ] && cl_net_bound "$1" && continue
      echo "LAB-RECOVERY: $2 is not bound to $1 (drivers: $(usb_drivers $1)); asking the kernel to probe its interfaces"
      why="$why""$1: $(usb_drivers $1), not $2; "
      for drv in /sys/bus/usb/devices/$1:*; do [ -e "$drv" ] && echo "${drv##*/}" > /sys/bus/usb/drivers_probe; done
      fixed="$fixed""$1 re-probed; "
    done
    reason "dom0 did not get every device back by itself (${fixed}$why)"; return 1
  fi
  reason "no guest; sticks $b and $b3 in dom0 (usb-storage), keyboard $k and tablet $t with usbhid, FTDI $f with ftdi_sio, usb-net $u with $(usb_drivers $u)"
}

if stage daemon -t 120 pv_ensure; then
  if stage guest-create -t 240 cl_guest && stage hc-create -t 180 cl_hc; then
    WHEN=before stage ss-native-read -t 300 cl_native_read
    if stage ss-attach -t 300 cl_ss_attach; then
      stage ss-guest-read -t 660 cl_ss_read
      stage ss-detach -t 180 cl_ss_detach
    else
      xenpvusb usb-detach clg 0 1 2>&1 || true
    fi
    stage ss-stats -t 60 cl_stats 0 ss
    WHEN=after stage ss-native-read-after -t 300 cl_native_read
    stage ss-ratio cl_ratio
    stage cmd-latency -t 300 cl_cmd_latency
    stage hs-refused -t 120 cl_refuse
    if stage hs-read -t 900 cl_hs_read; then stage hs-detach -t 180 cl_hs_detach; else xenpvusb usb-detach clg 1 1 2>&1 || true; fi
    stage hs-stats -t 60 cl_stats 1 hs
    stage hid-keyboard -t 900 cl_hid && stage hid-detach -t 180 cl_hid_detach
    stage hid-tablet -t 900 cl_tablet && stage tablet-detach -t 180 cl_tablet_detach
    stage serial -t 900 cl_serial && stage serial-detach -t 180 cl_serial_detach
    stage cdc-ether -t 900 cl_net && stage cdc-ether-detach -t 180 cl_net_detach
  fi
  stage cleanup -t 240 cl_cleanup
  pv_log 30
fi
