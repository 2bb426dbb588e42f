# Scenario "yardstick": xenpvusbd against the two other ways the same stick reaches the same code in
# this boot, dom0's own usb-storage (native) and Xen's PV disk path (blkback in dom0, xen-blkfront in
# the guest), for the EHCI stick (LABEHCI01) and the SuperSpeed xHCI stick (LABXHCI02, which the guest
# sees at high speed through xenpvusbd). One guest (real xen-hcd and xen-blkfront), interleaved rounds
# (native, blkback, pvusb, then pvusb, blkback, native), each with a 16 MiB O_DIRECT read (checksum
# against the image) and a write pass on a scratch region (saved, a known pattern written with
# O_DIRECT and read back, the original restored and checked against the image); ratios, and where the
# time of a SCSI command goes on each PV path (commands, interrupts, blkback's statistics, the daemon's
# counters). Then the daemon's footprint (RSS idle and with 16 controllers, time to READY=1 of a
# restart) and the interrupt latency of a USB keyboard (QEMU sendkey) natively and through xenpvusbd,
# on dom0's usbmon clock. Leaves the sticks with dom0's usb-storage and the keyboard with usbhid.

YS=$LAB_TMP/yardstick
mkdir -p $YS
YS_G=ysg
YS_MIB=16                                  # read region: MiB 0..15 (LAB_STICK_*_SHA256_16M)
YS_WOFF=${LAB_YS_WRITE_MIB:-48}            # write region: MiB 48..51 (LAB_STICK_*_SHA256_YSW)
YS_WCNT=${LAB_YS_WRITE_COUNT:-4}
YS_PRESSES=50
YS_HOLD_MS=60                              # QEMU sendkey hold time: a press every 2 x 60 ms
YS_TOOL=/payload/ystool
YS_VDEV=51728                              # xvdb = 202 * 256 + 16
YS_XS=/dev/xen/xenbus
[ -S /run/xenstored/socket ] && YS_XS=/run/xenstored/socket
: > $YS/res
echo 0 > $YS/cmdn

ys_serial() { case $1 in ehci) echo "$LAB_STICK_EHCI_SERIAL";; xhci) echo "$LAB_STICK_XHCI_SERIAL";; esac; }
ys_rsum() { case $1 in ehci) echo "$LAB_STICK_EHCI_SHA256_16M";; xhci) echo "$LAB_STICK_XHCI_SHA256_16M";; esac; }
ys_wsum() { case $1 in ehci) echo "$LAB_STICK_EHCI_SHA256_YSW";; xhci) echo "$LAB_STICK_XHCI_SHA256_YSW";; esac; }
ys_ctrl() { case $1 in ehci) echo 0;; xhci) echo 1;; esac; }
ys_id() { cat $YS/domid; }
ys_busid() { local d; d=$(usb_dev_by_serial "$(ys_serial $1)") || return 1; echo "${d##*/}"; }
# ys_rec KEY=VALUE...: one measured pass (stick= path= op= round= us= bytes= cmds= ...)
ys_rec() { echo "$*" >> $YS/res; }

# ys_cmd WORDS...: the guest script's next command (data/lab-cmdN); ys_done [TIMEOUT]: its end.
ys_cmd() {
  local n; read -r n < $YS/cmdn; n=$((n + 1)); echo $n > $YS/cmdn; YS_N=$n
  xenstore-write "/local/domain/$(ys_id)/data/lab-cmd$n" "$*"
}
ys_done() { guest_wait $YS_G "GUEST-RESULT cmd$YS_N-done " "${1:-300}"; }
# ys_res TAG KEY: a value of the guest's "GUEST-RESULT TAG ..." line
ys_res() { guest_result $YS_G "$1" "$2"; }

# dom0's counters: read/write I/Os of a disk (sets YR YW), interrupts (sets YB = blkif-backend, YE =
# evtchn of xenpvusbd; builtins only)
ys_dstat() { local a; read -r YR a a a YW a < /sys/block/$1/stat; }
ys_d0irq() {
  local l
  YB=0 YE=0
  while read -r l; do
    case $l in
      *blkif-backend) set -- $l; YB=$((YB + $2 + $3));;
      *evtchn:xenpvusbd*|*evtchn:.NET*) set -- $l; YE=$((YE + $2 + $3));;
    esac
  done < /proc/interrupts
}
ys_bbstat() { # -> "rd_req rd_sect wr_req wr_sect oo_req" of vbd-<domid>-51728
  local d=/sys/bus/xen-backend/devices/vbd-$(ys_id)-$YS_VDEV/statistics f v out=
  for f in rd_req rd_sect wr_req wr_sect oo_req; do read -r v < $d/$f 2>/dev/null || v=0; out="$out $v"; done
  echo $out
}

# --- the daemon's counters -------------------------------------------------------------------------
# With a daemon that dumps them on SIGUSR1 ("vusb D/C: counters: k=v ..."; its binary has that
# template, NativeAOT keeps strings as UTF-16) they are taken before and after each read pass;
# otherwise only the "served N URBs" line logged when a controller disconnects is there (whole
# controller life: both rounds' passes and enumerations).
ys_has_usr1() {
  local b=$PV_LIBDIR/xenpvusbd
  LC_ALL=C grep -qaP 'c\x00o\x00u\x00n\x00t\x00e\x00r\x00s\x00:\x00' $b || LC_ALL=C grep -qaF 'counters: ' $b
}
# ys_counters CTRL FILE: SIGUSR1, then the new counters line of vusb <domid>/CTRL as k=v lines in FILE.
ys_counters() {
  local c=$1 f=$2 n0 n pid line i
  pid=$(pv_pid)
  n0=$(pv_journal | grep -c "vusb $(ys_id)/$c: counters: ")
  systemctl kill -s USR1 xenpvusbd || return 1
  for i in $(seq 1 40); do
    n=$(pv_journal | grep -c "vusb $(ys_id)/$c: counters: ")
    [ "$n" -gt "$n0" ] && break
    lab_sleep 0.25
  done
  [ "$(pv_pid)" = "$pid" ] || { echo "yardstick: xenpvusbd's MainPID changed after SIGUSR1 ($pid -> $(pv_pid))"; return 1; }
  [ "$n" -gt "$n0" ] || return 1
  line=$(pv_journal | grep "vusb $(ys_id)/$c: counters: " | tail -n1)
  echo "$line" > $f.line
  echo "${line#*counters: }" | tr ' ,;' '\n\n\n' | grep -E '^[A-Za-z_-]+=[0-9.]+$' > $f
}
# ys_cdelta A B: "k=delta ..." of two counter files (keys of B)
ys_cdelta() { awk -F= 'NR == FNR { a[$1] = $2; next } { printf "%s%s=%s", s, $1, $2 - a[$1]; s = " " }' "$1" "$2"; }

# --- dom0's native passes --------------------------------------------------------------------------
ys_native() { # STICK ROUND
  local s=$1 r=$2 ser dev t0 t1 r0 w0 sum want i f=/dev/shm/ys.bin save=/dev/shm/ys-save.bin pat=/dev/shm/ys-pat.bin saved psum back rest why=""
  ser=$(ys_serial $s)
  wait_for 90 usb_has_disk "$ser" || { reason "$ser has no block device in dom0"; return 1; }
  dev=$(usb_disk_by_serial "$ser")
  want=$(ys_rsum $s)
  for i in 1 2; do
    ys_dstat $dev; r0=$YR
    t0=$(lab_now)
    dd if=/dev/$dev of=$f bs=1M count=$YS_MIB iflag=direct status=none || { reason "dd of /dev/$dev failed"; return 1; }
    t1=$(lab_now)
    ys_dstat $dev
    sum=$(sha256sum < $f | cut -d' ' -f1); rm -f $f
    [ "$sum" = "$want" ] || { reason "/dev/$dev: MiB 0-$((YS_MIB - 1)) sha256 $sum, the image's $want"; return 1; }
    ys_rec stick=$s path=native op=read round=$r.$i us=$((t1 - t0)) bytes=$((YS_MIB << 20)) cmds=$((YR - r0)) pair_cmds=$((YR - r0))
  done
  # write pass: save, pattern, read back, restore, check
  dd if=/dev/$dev of=$save bs=1M skip=$YS_WOFF count=$YS_WCNT iflag=direct status=none || { reason "saving MiB $YS_WOFF+ failed"; return 1; }
  saved=$(sha256sum < $save | cut -d' ' -f1)
  yes "yardstick native $s round $r" | head -c $((YS_WCNT << 20)) > $pat
  psum=$(sha256sum < $pat | cut -d' ' -f1)
  ys_dstat $dev; w0=$YW
  t0=$(lab_now)
  dd if=$pat of=/dev/$dev bs=1M seek=$YS_WOFF oflag=direct conv=fsync status=none || { dd if=$save of=/dev/$dev bs=1M seek=$YS_WOFF oflag=direct conv=fsync status=none; reason "the write to /dev/$dev failed"; return 1; }
  t1=$(lab_now)
  ys_dstat $dev
  back=$(dd if=/dev/$dev bs=1M skip=$YS_WOFF count=$YS_WCNT iflag=direct status=none | sha256sum | cut -d' ' -f1)
  dd if=$save of=/dev/$dev bs=1M seek=$YS_WOFF oflag=direct conv=fsync status=none || why="the restore failed; "
  rest=$(dd if=/dev/$dev bs=1M skip=$YS_WOFF count=$YS_WCNT iflag=direct status=none | sha256sum | cut -d' ' -f1)
  rm -f $save $pat
  [ "$saved" = "$(ys_wsum $s)" ] || why="$why""the saved region is not the image's ($saved); "
  [ "$back" = "$psum" ] || why="$why""the pattern read back as $back, written $psum; "
  [ "$rest" = "$(ys_wsum $s)" ] || why="$why""after the restore the region is $rest, the image's $(ys_wsum $s); "
  [ -z "$why" ] || { reason "/dev/$dev: $why"; return 1; }
  ys_rec stick=$s path=native op=write round=$r us=$((t1 - t0)) bytes=$((YS_WCNT << 20)) cmds=$((YW - w0))
  reason "/dev/$dev: read $(ys_mbps $s native read $r.1), $(ys_mbps $s native read $r.2) MB/s (checksums OK), write $(ys_mbps $s native write $r) MB/s (pattern read back, region restored and equal to the image)"
}
# ys_mbps STICK PATH OP ROUND: MB/s of that recorded pass
ys_mbps() { awk -v s=$1 -v p=$2 -v o=$3 -v r=$4 '{ delete v; for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } } v["stick"] == s && v["path"] == p && v["op"] == o && v["round"] == r { printf "%.2f", v["bytes"] / v["us"] }' $YS/res; }

# ys_guest_reads STICK PATH ROUND: the guest reads its disk (DISK, set by the "usb" or "xvd" command)
# twice, checksums; records both reads (the second with EXTRA, key=values measured around the pair,
# and pair_cmds, the commands of both).
ys_guest_reads() {
  local s=$1 p=$2 r=$3 i tag want
  want=$(ys_rsum $s)
  for i in 1 2; do
    tag=ys-$s-$p-r$r-read$i
    ys_cmd read $tag 0 $YS_MIB; ys_done 600 || { reason "no end of the guest's read"; return 1; }
    [ "$(ys_res $tag sha256)" = "$want" ] || { reason "the guest's read: $(guest_log $YS_G | grep "GUEST-RESULT $tag " | tail -n1 | cut -d' ' -f3-) (want sha256 $want)"; return 1; }
  done
}
ys_guest_rec() { # STICK PATH ROUND EXTRA...
  local s=$1 p=$2 r=$3 i tag pc
  shift 3
  pc=$(( $(ys_res ys-$s-$p-r$r-read1 rios) + $(ys_res ys-$s-$p-r$r-read2 rios) ))
  for i in 1 2; do
    tag=ys-$s-$p-r$r-read$i
    ys_rec stick=$s path=$p op=read round=$r.$i us=$(ys_res $tag us) bytes=$(ys_res $tag bytes) cmds=$(ys_res $tag rios) girq_hcd=$(ys_res $tag hcd) girq_blk=$(ys_res $tag blk) $([ $i = 2 ] && echo "pair_cmds=$pc $*")
  done
}
ys_guest_write() {
  local s=$1 p=$2 r=$3 tag=ys-$1-$2-r$3 why="" ws
  ws=$(ys_wsum $s)
  ys_cmd write $tag-write $YS_WOFF $YS_WCNT "$p-$s-$r"; ys_done 600 || { reason "no end of the guest's write pass"; return 1; }
  [ "$(ys_res $tag-write rc)" = 0 ] || why="the write failed ($(ys_res $tag-write rc)); "
  [ "$(ys_res $tag-write saved)" = "$ws" ] || why="$why""the saved region is not the image's; "
  [ "$(ys_res $tag-write readback)" = "$(ys_res $tag-write pattern)" ] || why="$why""the pattern did not read back; "
  [ "$(ys_res $tag-write restored)" = "$ws" ] || why="$why""the restored region is not the image's; "
  [ -z "$why" ] || { reason "the guest's write pass: $why$(guest_log $YS_G | grep "GUEST-RESULT $tag-write " | tail -n1 | cut -d' ' -f3-)"; return 1; }
  ys_rec stick=$s path=$p op=write round=$r us=$(ys_res $tag-write us) bytes=$(ys_res $tag-write bytes) cmds=$(ys_res $tag-write wios) girq_hcd=$(ys_res $tag-write hcd) girq_blk=$(ys_res $tag-write blk)
}

# --- the PV disk path: blkback in dom0, xen-blkfront in the guest ---------------------------------
# ys_blk_attach DEV MODE: xl block-attach phy:/dev/DEV,xvdb,MODE; the guest waits for xvdb.
ys_blk_attach() {
  xl block-attach $YS_G "phy:/dev/$1,xvdb,$2" || { reason "xl block-attach $YS_G phy:/dev/$1,xvdb,$2 failed"; return 1; }
  ys_cmd xvd; ys_done 180 || { reason "no xvdb in the guest"; return 1; }
  guest_log $YS_G | grep "GUEST-RESULT xvd " | tail -n1 | grep -q " size=[1-9]" || { reason "the guest's xvdb: $(guest_log $YS_G | grep 'GUEST-RESULT xvd ' | tail -n1)"; return 1; }
}
ys_blk_detach() {
  ys_cmd gone
  xl block-detach $YS_G xvdb || { reason "xl block-detach $YS_G xvdb failed"; return 1; }
  ys_done 120 || { reason "the guest still has xvdb"; return 1; }
  wait_for 30 eval "! xenstore-exists /local/domain/0/backend/vbd/$(ys_id)/$YS_VDEV 2>/dev/null" || { reason "backend/vbd/$(ys_id)/$YS_VDEV still there"; return 1; }
}
# (One attach, rw, for both passes: under TCG each xl block-attach/block-detach pair costs 15-20 s of
# hotplug scripts; a read-only attach reads the same way.)
ys_blkback() { # STICK ROUND
  local s=$1 r=$2 ser dev bb0 bb1 d0 dr0 ex
  ser=$(ys_serial $s)
  wait_for 90 usb_has_disk "$ser" || { reason "$ser has no block device in dom0"; return 1; }
  dev=$(usb_disk_by_serial "$ser")
  ys_blk_attach $dev w || return 1
  bb0=$(ys_bbstat); ys_d0irq; d0=$YB; ys_dstat $dev; dr0=$YR
  ys_guest_reads $s blkback $r || { ys_blk_detach; return 1; }
  bb1=$(ys_bbstat); ys_d0irq; ys_dstat $dev
  ex="dirq=$((YB - d0)) dom0_cmds=$((YR - dr0)) $(echo "$bb0 $bb1" | awk '{ printf "bb_rd_req=%d bb_rd_sect=%d bb_oo_req=%d", $6 - $1, $7 - $2, $10 - $5 }')"
  ys_guest_rec $s blkback $r $ex
  ys_guest_write $s blkback $r || { ys_blk_detach; return 1; }
  ys_blk_detach || return 1
  reason "phy:/dev/$dev,xvdb,w: read $(ys_mbps $s blkback read $r.1), $(ys_mbps $s blkback read $r.2) MB/s (checksums OK; around both: $ex), write $(ys_mbps $s blkback write $r) MB/s (pattern read back, region restored = the image)"
}

# --- xenpvusbd -------------------------------------------------------------------------------------
# ys_cpu: the daemon's CPU time so far (utime + stime, clock ticks of /proc/PID/stat)
ys_cpu() { local f; f=$(cat /proc/$(pv_pid)/stat 2>/dev/null) || { echo 0; return; }; f=${f##*) }; set -- $f; echo $((${12} + ${13})); }
ys_pvusb() { # STICK ROUND [PATH: the records' path, pvusb unless a sweep names its own]
  local s=$1 r=$2 p=${3:-pvusb} c b ser d0 rec delta="" tag t0 cpu0 cpu1
  tag=ys-$s-$p-r$r
  c=$(ys_ctrl $s); ser=$(ys_serial $s)
  wait_for 90 usb_has_disk "$ser" || { reason "$ser has no block device in dom0"; return 1; }
  b=$(ys_busid $s)
  xenpvusb usb-attach $YS_G $c 1 $b || { pv_log 20; reason "usb-attach $YS_G $c 1 $b failed"; return 1; }
  ys_cmd usb; ys_done 300 || { pv_log 20; reason "no USB disk in the guest"; return 1; }
  guest_log $YS_G | grep 'GUEST-RESULT disk ' | tail -n1 | grep -q 'disk dev=' || { pv_log 20; reason "the guest saw no USB disk"; xenpvusb usb-detach $YS_G $c 1; return 1; }
  [ -f $YS/usr1 ] && ys_counters $c $YS/pvc-$tag-0
  ys_d0irq; d0=$YE; cpu0=$(ys_cpu)
  if ! ys_guest_reads $s $p $r; then xenpvusb usb-detach $YS_G $c 1; return 1; fi
  ys_d0irq; cpu1=$(ys_cpu)
  [ -f $YS/usr1 ] && { if ys_counters $c $YS/pvc-$tag-1; then delta=$(ys_cdelta $YS/pvc-$tag-0 $YS/pvc-$tag-1 | sed 's/\([^ =]*\)=/pv_\1=/g'); else echo "yardstick: no counters line after SIGUSR1"; fi; }
  ys_guest_rec $s $p $r dirq=$((YE - d0)) cpu_ticks=$((cpu1 - cpu0)) $delta
  ys_guest_write $s $p $r || { xenpvusb usb-detach $YS_G $c 1; return 1; }
  ys_cmd gone
  t0=$(lab_now)
  xenpvusb usb-detach $YS_G $c 1 || { pv_log 20; reason "usb-detach failed"; return 1; }
  wait_for 90 usb_has_disk "$ser" || { pv_log 20; reason "dom0 did not get $b back within 90 s"; return 1; }
  ys_done 120 || { reason "the guest still sees the stick"; return 1; }
  # the guest's commands over the disk's whole life on this controller (for the served-line figures)
  echo "$(ys_res gone rios) $(ys_res gone wios)" >> $YS/life-$s
  reason "$b -> controller $c: read $(ys_mbps $s $p read $r.1), $(ys_mbps $s $p read $r.2) MB/s (checksums OK, $(ys_res $tag-read1 rios) + $(ys_res $tag-read2 rios) SCSI commands), write $(ys_mbps $s $p write $r) MB/s (pattern read back, region restored = the image); back with dom0's usb-storage $(lab_elapsed $t0) s after usb-detach${delta:+; daemon: $delta}"
}

# --- the guest -------------------------------------------------------------------------------------
ys_guest() {
  cat > $YS/guest.sh <<'G'
# dom0 drives this script through data/lab-cmdN: usb | xvd | read TAG SKIP COUNT | write TAG SKIP COUNT SEED
# | gone | hid TAG PRESSES | pong ROUNDS TIMEOUT | sys N | quit. (ys_* names: guest/init's helpers use globals.)
ys_now() { read -r ys_u ys_x < /proc/uptime; echo "$ys_u"; }
# ys_snap: the disk's read and write I/Os (YR YW) and the interrupts of xen-hcd and blkfront (YH YB)
ys_snap() {
  read -r YR ys_x ys_x ys_x YW ys_x < /sys/block/$DISK/stat
  set -- $(awk '$NF == "xenhcd" { h += $2 } $NF == "blkif" { b += $2 } END { print h + 0, b + 0 }' /proc/interrupts)
  YH=$1 YB=$2
}
ys_us() { awk -v a=$1 -v b=$2 'BEGIN { printf "%d", (b - a) * 1e6 }'; }
ys_read() {
  ys_snap; ys_r0=$YR ys_h0=$YH ys_b0=$YB
  ys_t0=$(ys_now)
  dd if=/dev/$DISK of=/tmp/ys.bin bs=1M skip=$2 count=$3 iflag=direct 2>/tmp/dd.err || { cat /tmp/dd.err; result "$1 dev=$DISK error"; return; }
  ys_t1=$(ys_now)
  ys_snap
  result "$1 dev=$DISK bytes=$(stat -c %s /tmp/ys.bin) us=$(ys_us $ys_t0 $ys_t1) rios=$((YR - ys_r0)) hcd=$((YH - ys_h0)) blk=$((YB - ys_b0)) sha256=$(sha256sum /tmp/ys.bin | cut -d' ' -f1) max_sectors_kb=$(cat /sys/block/$DISK/queue/max_sectors_kb)"
  rm -f /tmp/ys.bin
}
ys_write() {
  dd if=/dev/$DISK of=/tmp/ys-save.bin bs=1M skip=$2 count=$3 iflag=direct 2>/dev/null
  ys_saved=$(sha256sum /tmp/ys-save.bin | cut -d' ' -f1)
  yes "yardstick $4" | head -c $(($3 * 1048576)) > /tmp/ys-pat.bin
  ys_pat=$(sha256sum /tmp/ys-pat.bin | cut -d' ' -f1)
  ys_snap; ys_w0=$YW ys_h0=$YH ys_b0=$YB
  ys_t0=$(ys_now)
  dd if=/tmp/ys-pat.bin of=/dev/$DISK bs=1M seek=$2 oflag=direct conv=fsync 2>/tmp/dd.err; ys_rc=$?
  ys_t1=$(ys_now)
  ys_snap
  [ $ys_rc = 0 ] || cat /tmp/dd.err
  ys_back=$(dd if=/dev/$DISK bs=1M skip=$2 count=$3 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  dd if=/tmp/ys-save.bin of=/dev/$DISK bs=1M seek=$2 oflag=direct conv=fsync 2>/dev/null || ys_rc="restore-failed"
  ys_rest=$(dd if=/dev/$DISK bs=1M skip=$2 count=$3 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  rm -f /tmp/ys-save.bin /tmp/ys-pat.bin
  result "$1 dev=$DISK bytes=$(($3 * 1048576)) us=$(ys_us $ys_t0 $ys_t1) wios=$((YW - ys_w0)) hcd=$((YH - ys_h0)) blk=$((YB - ys_b0)) rc=$ys_rc saved=$ys_saved pattern=$ys_pat readback=$ys_back restored=$ys_rest"
}
ys_xvd() {
  ys_k=0
  while [ $ys_k -lt 120 ]; do
    [ -e /sys/block/xvdb/size ] && read -r ys_sz < /sys/block/xvdb/size && [ "$ys_sz" != 0 ] && break
    ys_k=$((ys_k + 1)); sleep 1
  done
  DISK=xvdb
  result "xvd dev=xvdb size=${ys_sz:-0} waited=$ys_k max_sectors_kb=$(cat /sys/block/xvdb/queue/max_sectors_kb 2>/dev/null)"
}
ys_gone() {
  read -r YR ys_x ys_x ys_x YW ys_x < /sys/block/$DISK/stat
  result "gone-start dev=$DISK rios=$YR wios=$YW"
  ys_k=0
  while [ -e /sys/block/$DISK ] && [ $ys_k -lt 110 ]; do ys_k=$((ys_k + 1)); sleep 1; done
  result "gone dev=$DISK rios=$YR wios=$YW waited=$ys_k present=$([ -e /sys/block/$DISK ] && echo yes || echo no)"
}
ys_hid() {
  ys_k=0 ys_ev=
  while [ $ys_k -lt 180 ]; do
    for e in /sys/class/input/event*; do
      [ -f $e/device/name ] || continue
      read -r ys_nm < $e/device/name
      case $ys_nm in *Keyboard*) ys_ev=${e##*/}; break;; esac
    done
    [ -n "$ys_ev" ] && break
    ys_k=$((ys_k + 1)); sleep 1
  done
  [ -n "$ys_ev" ] || { result "$1-ready none"; return; }
  ystool evread -p "GUEST-RESULT $1-" /dev/input/$ys_ev $2 120
}
ys_n=1
while pvfront xs-wait data/lab-cmd$ys_n 3000; do
  set -- $(pvfront xs-read data/lab-cmd$ys_n)
  ys_c=$1; shift
  case $ys_c in
    usb) wait_usb_disk 300 ;;
    xvd) ys_xvd ;;
    read) ys_read "$@" ;;
    write) ys_write "$@" ;;
    gone) ys_gone ;;
    hid) ys_hid "$@" ;;
    pong) ystool xspong data/ys "$1" "$2" ;;
    sys) result "sys $(ystool syscalls "$1")" ;;
    quit) result "cmd$ys_n-done quit"; break ;;
  esac
  result "cmd$ys_n-done $ys_c"
  ys_n=$((ys_n + 1))
done
G
  GUEST_EXTRA_MODULES="xen_blkfront hid usbhid hid_generic evdev" guest_create $YS_G $YS/guest.sh || { reason "xl create failed"; return 1; }
  guest_wait $YS_G 'GUEST-BEGIN' 180 || { reason "the guest did not reach its script"; return 1; }
  xl domid $YS_G > $YS/domid
  guest_log $YS_G | grep -q GUEST-HCD-LOADED || { reason "xen-hcd not loaded in the guest"; return 1; }
  guest_log $YS_G | grep -q '^GUEST-MODULE xen_blkfront loaded' || { reason "xen-blkfront: $(guest_log $YS_G | grep '^GUEST-MODULE xen_blkfront' || echo 'no GUEST-MODULE line (an image without it in /lib/modules/opt?)')"; return 1; }
  reason "guest $YS_G (domain $(ys_id)): xen-hcd, xen-blkfront, hid, usbhid, hid-generic, evdev loaded"
}

ys_hc() {
  local c
  xenpvusb usb-hc-create $YS_G 2 8 && xenpvusb usb-hc-create $YS_G 2 8 && xenpvusb usb-hc-create --grant-mode map $YS_G 2 8 \
    || { pv_log 20; reason "usb-hc-create failed"; return 1; }
  for c in 0 1 2; do
    wait_for 60 eval "[ \"\$(xenstore-read /local/domain/0/backend/vusb/$(ys_id)/$c/state 2>/dev/null)\" = 4 ]" \
      || { pv_log 20; reason "controller $c did not reach Connected"; return 1; }
  done
  if ys_has_usr1; then : > $YS/usr1; fi
  reason "controllers 0 (EHCI stick), 1 (SuperSpeed stick), 2 (--grant-mode map) connected; daemon counters: $([ -f $YS/usr1 ] && echo "SIGUSR1 dumps" || echo "no SIGUSR1 dump in this daemon: the 'served' line of each controller")"
}

# --- footprint ------------------------------------------------------------------------------------
ys_rss() { local k v u; while read -r k v u; do [ "$k" = VmRSS: ] && { awk -v v=$v 'BEGIN { printf "%.1f", v / 1024 }'; return 0; }; done < /proc/$(pv_pid)/status; return 1; }
ys_restart() {
  local st a b pid0 pid rss
  [ -z "$(xenstore-list /local/domain/0/backend/vusb 2>/dev/null)" ] || { reason "controllers exist already: $(xenstore-list /local/domain/0/backend/vusb | tr '\n' ' ')"; return 1; }
  pid0=$(pv_pid)
  systemctl restart xenpvusbd || { pv_log 20; reason "systemctl restart failed"; return 1; }
  pid=$(pv_pid)
  st=$(pv_show ActiveState,SubState)
  has_all "$st" ActiveState=active SubState=running || { reason "after the restart: $st"; return 1; }
  a=$(pv_prop ExecMainStartTimestampMonotonic); b=$(pv_prop ActiveEnterTimestampMonotonic)
  figure xenpvusbd-restart-ready-s "$(awk -v a=$a -v b=$b 'BEGIN { printf "%.2f", (b - a) / 1e6 }')" s
  wait_for 20 pv_journal_has "serving backend/vusb" || { reason "no 'serving' line after the restart"; return 1; }
  lab_sleep 3
  rss=$(ys_rss) || { reason "no VmRSS for pid $pid"; return 1; }
  figure xenpvusbd-rss-idle-MB "$rss" MB
  reason "pid $pid0 -> $pid: ExecMainStart -> READY=1 (ActiveEnter) $(awk -v a=$a -v b=$b 'BEGIN { printf "%.2f", (b - a) / 1e6 }') s; VmRSS idle (no controller) $rss MB (aim < 15)"
}
ys_16hc() {
  local i c id t0 rss n
  id=$(ys_id)
  t0=$(lab_now)
  # four at a time (the CLI picks the devid in a xenstore transaction, retried on a conflict)
  for i in 1 2 3 4; do
    for c in 1 2 3 4; do { xenpvusb usb-hc-create $YS_G 2 8; echo "rc=$?"; } > $YS/hc-$i-$c.out 2>&1 & done
    wait
  done
  # each create's exit status (a backend that does not reach InitWait within libxl's 10 s makes the CLI
  # remove the controller again and exit non-zero, with a message that need not say "error")
  for i in 1 2 3 4; do for c in 1 2 3 4; do
    grep -q '^rc=0$' $YS/hc-$i-$c.out || { cat $YS/hc-$i-$c.out; pv_log 30; reason "usb-hc-create (batch $i, $c of 4): $(grep -v '^rc=' $YS/hc-$i-$c.out | head -n1) ($(grep '^rc=' $YS/hc-$i-$c.out))"; return 1; }
  done; done
  n=0
  for c in $(xenstore-list /local/domain/0/backend/vusb/$id); do
    wait_for 120 eval "[ \"\$(xenstore-read /local/domain/0/backend/vusb/$id/$c/state 2>/dev/null)\" = 4 ]" \
      || { pv_log 20; reason "controller $c did not reach Connected"; return 1; }
    n=$((n + 1))
  done
  [ $n = 16 ] || { pv_log 30; reason "$n controllers, not 16 (devids $(xenstore-list /local/domain/0/backend/vusb/$id | tr '\n' ' '); the creates said: $(cat $YS/hc-*.out | tr '\n' ' ')"; return 1; }
  figure yardstick-16hc-connected-s "$(lab_elapsed $t0)" s
  lab_sleep 3
  rss=$(ys_rss) || { reason "no VmRSS"; return 1; }
  figure xenpvusbd-rss-16hc-MB "$rss" MB
  echo "guest: $(guest_log $YS_G | grep -c 'xen_hcd\|xenhcd\|new USB bus registered') xen-hcd lines"
  for c in $(xenstore-list /local/domain/0/backend/vusb/$id); do xenpvusb usb-hc-destroy $YS_G $c > /dev/null 2>&1 || true; done
  wait_for 60 eval "[ -z \"\$(xenstore-list /local/domain/0/backend/vusb/$id 2>/dev/null)\" ]" || { reason "controllers left after usb-hc-destroy: $(xenstore-list /local/domain/0/backend/vusb/$id | tr '\n' ' ')"; return 1; }
  reason "16 controllers (usb-hc-create $YS_G 2 8, four at a time) Connected to the guest's xen-hcd in $(lab_elapsed $t0) s; VmRSS $rss MB (aim < 30); all destroyed"
}

# --- ratios and the breakdown ---------------------------------------------------------------------
# ys_agg STICK PATH OP: "median_mbps n list" over the passes
ys_agg() {
  awk -v s=$1 -v p=$2 -v o=$3 '{ delete v; for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    v["stick"] == s && v["path"] == p && v["op"] == o { m[++n] = v["bytes"] / v["us"]; l = l sprintf("%s%.2f", n > 1 ? "," : "", m[n]) }
    END { if (!n) { print "0 0 none"; exit }
      for (i = 2; i <= n; i++) { x = m[i]; for (j = i - 1; j >= 1 && m[j] > x; j--) m[j + 1] = m[j]; m[j + 1] = x }
      printf "%.2f %d %s", n % 2 ? m[(n + 1) / 2] : (m[n / 2] + m[n / 2 + 1]) / 2, n, l }' $YS/res
}
ys_ratio() { # STICK OP
  local s=$1 o=$2 nat blk pv why
  set -- $(ys_agg $s native $o); nat=$1; local nl=$3
  set -- $(ys_agg $s blkback $o); blk=$1; local bl=$3
  set -- $(ys_agg $s pvusb $o); pv=$1; local pl=$3
  awk -v a=$nat -v b=$blk -v c=$pv 'BEGIN { exit !(a > 0 && b > 0 && c > 0) }' || { reason "missing passes: native $nl, blkback $bl, pvusb $pl"; return 1; }
  set -- $(awk -v n=$nat -v b=$blk -v p=$pv 'BEGIN { printf "%.2f %.2f %.2f", p / n, b / n, p / b }')
  figure yardstick-$s-$o-pvusb/native $1 ratio
  figure yardstick-$s-$o-blkback/native $2 ratio
  figure yardstick-$s-$o-pvusb/blkback $3 ratio
  figure yardstick-$s-$o-native-MBps $nat MB/s
  figure yardstick-$s-$o-blkback-MBps $blk MB/s
  figure yardstick-$s-$o-pvusb-MBps $pv MB/s
  why="goal pvusb/blkback >= 0.9 $(awk -v r=$3 'BEGIN { print (r >= 0.9) ? "met" : "not met" }')"
  reason "pvusb/native $1 blkback/native $2 pvusb/blkback $3 (pvusb $pv, blkback $blk, native $nat MB/s; medians of the passes: pvusb $pl, blkback $bl, native $nl); $why"
}

# ys_breakdown STICK: where a read command's time goes, per path. Commands: the block layer's read I/Os
# (the guest's sdX for pvusb = SCSI commands, its xvdb for blkback = blkfront requests; dom0's sdX
# natively); time: the reads' own; interrupts, blkback's statistics and the daemon's counters were
# taken around each pass's pair of reads (divided by pair_cmds).
ys_breakdown() {
  local s=$1 served line u wl
  line=$(awk -v s=$s '{ delete v; for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    v["stick"] == s && v["op"] == "read" && v["path"] ~ /^(native|blkback|pvusb)$/ { p = v["path"]; n[p]++; us[p] += v["us"]; c[p] += v["cmds"]; by[p] += v["bytes"]; gi[p] += (p == "pvusb" ? v["girq_hcd"] : v["girq_blk"])
      if ("pair_cmds" in v) { pc[p] += v["pair_cmds"]; di[p] += v["dirq"]; dc[p] += v["dom0_cmds"]; bbr[p] += v["bb_rd_req"]; bbs[p] += v["bb_rd_sect"] }
      if ("pv_urbs" in v) { pvc += v["pair_cmds"]; for (k in v) if (k ~ /^pv_/) pv[k] += v[k] } }
    END {
      for (p in n) if (p == "native") printf "%s cmds=%d kib_per_cmd=%.1f ms_per_cmd=%.2f\n", p, c[p], c[p] ? by[p] / 1024 / c[p] : 0, c[p] ? us[p] / 1000 / c[p] : 0
        else printf "%s cmds=%d kib_per_cmd=%.1f ms_per_cmd=%.2f guest_irqs_per_cmd=%.2f dom0_irqs_per_cmd=%.2f\n", p, c[p], c[p] ? by[p] / 1024 / c[p] : 0, c[p] ? us[p] / 1000 / c[p] : 0, c[p] ? gi[p] / c[p] : 0, pc[p] ? di[p] / pc[p] : 0
      if (pc["blkback"]) printf "blkback-extra dom0_scsi_per_req=%.2f bb_rd_req_per_req=%.2f sect_per_req=%.1f\n", dc["blkback"] / pc["blkback"], bbr["blkback"] / pc["blkback"], bbs["blkback"] / pc["blkback"]
      if (pvc) { printf "pvusb-extra"; for (k in pv) printf " %s_per_cmd=%.2f", substr(k, 4), pv[k] / pvc; printf "\n" }
    }' $YS/res)
  echo "--- yardstick $s, read passes: where a command's time goes (per command of the path's block device)"
  echo "$line" | sort | column -t 2>/dev/null || echo "$line" | sort
  echo "$line" | while read -r p rest; do
    for kv in $rest; do
      k=${kv%%=*}; v=${kv#*=}
      case $p:$k in
        *:ms_per_cmd) figure yardstick-$s-$p-ms-per-cmd $v ms;;
        blkback:guest_irqs_per_cmd|pvusb:guest_irqs_per_cmd) figure yardstick-$s-$p-guest-irqs-per-cmd $v irqs;;
        blkback:dom0_irqs_per_cmd|pvusb:dom0_irqs_per_cmd) figure yardstick-$s-$p-dom0-irqs-per-cmd $v irqs;;
        blkback-extra:*) figure yardstick-$s-blkback-${k//_/-} $v count;;
        pvusb-extra:*-us_per_cmd) figure yardstick-$s-pvusb-${k//_/-} $v us;;
        pvusb-extra:*) figure yardstick-$s-pvusb-${k//_/-} $v count;;
        *:kib_per_cmd) figure yardstick-$s-$p-kib-per-cmd $v KiB;;
      esac
    done
  done
  wl=
  served=$(cat $YS/served-$s 2>/dev/null)
  if [ ! -f $YS/usr1 ] && [ -n "$served" ]; then
    # no SIGUSR1 dumps: the daemon's 'served' line of this stick's controller (its whole life: every
    # pass, reads and writes, and the enumerations) over the guest's commands on that disk
    u=$(echo "$served" | sed -n 's/.*served \([0-9]*\) URBs.*/\1/p')
    wl=$(awk '{ r += $1; w += $2 } END { print r + w }' $YS/life-$s 2>/dev/null)
    if [ -n "$u" ] && [ "${wl:-0}" -gt 0 ]; then
      figure yardstick-$s-pvusb-urbs-per-cmd "$(awk -v u=$u -v c=$wl 'BEGIN { printf "%.2f", u / c }')" URBs
      echo "pvusb (the daemon's served line, the controller's life: $wl commands of the guest, reads and writes): ${served#*: }"
    fi
  fi
  reason "$(echo "$line" | sort | tr '\n' ';' | sed 's/;$//')${wl:+; pvusb served line over $wl commands: ${served#*: }}"
}

# --- the daemon's system calls per command ----------------------------------------------------------
# strace of every thread of xenpvusbd (-f -p) while the guest reads MiB 0-3 of the EHCI stick once
# more through controller 0 (a pass of its own, checksum checked: strace slows every call, so its MB/s is
# no figure), and what one system call costs in dom0 and in the guest (ystool syscalls: getppid()).
# Figures: yardstick-ehci-pvusb-syscalls-per-cmd, -syscall-<name>-per-cmd for the five most frequent,
# dom0-syscall-us, guest-syscall-us.
ys_syscalls() {
  local s=ehci c b ser pid spid tag=ys-sys want calls cmds top d0 g0 st=/payload/strace why=""
  [ -x $st/strace ] || { reason "no strace in the payload (run-lab copies the host's)"; return 1; }
  c=$(ys_ctrl $s); ser=$(ys_serial $s); want=$LAB_STICK_EHCI_SHA256_4M
  wait_for 90 usb_has_disk "$ser" || { reason "$ser has no block device in dom0"; return 1; }
  b=$(ys_busid $s)
  xenpvusb usb-attach $YS_G $c 1 $b || { pv_log 20; reason "usb-attach $YS_G $c 1 $b failed"; return 1; }
  ys_cmd usb; ys_done 300 || { pv_log 20; reason "no USB disk in the guest"; xenpvusb usb-detach $YS_G $c 1; return 1; }
  pid=$(pv_pid)
  for t in /proc/$pid/task/*; do echo "${t##*/} $(tr ' ' '_' < $t/comm)"; done > $YS/tids.txt
  # A full trace counted here: strace 6.1's -c summary is lost when it is interrupted after -p.
  LD_LIBRARY_PATH=$st/lib $st/strace -f -qq -o $YS/strace.txt -p $pid 2> $YS/strace.err & spid=$!
  lab_sleep 3
  ys_cmd read $tag 0 4; ys_done 900 || why="no end of the guest's read under strace; "
  kill -TERM $spid 2>/dev/null; wait $spid
  [ "$(ys_res $tag sha256)" = "$want" ] || why="$why""the read's checksum: $(guest_log $YS_G | grep "GUEST-RESULT $tag " | tail -n1 | cut -d' ' -f3-); "
  ys_cmd gone
  xenpvusb usb-detach $YS_G $c 1 || why="$why""usb-detach failed; "
  wait_for 90 usb_has_disk "$ser" || why="$why""dom0 did not get $b back; "
  ys_done 120 || why="$why""the guest still sees the stick; "
  [ -z "$why" ] || { reason "$why$(head -c 300 $YS/strace.err)"; return 1; }
  # every call's first line ("TID name(..." or "TID name(... <unfinished ...>"; not "<... name resumed>")
  sed -E 's/^[0-9]+ +//' $YS/strace.txt | grep -E '^[a-z_0-9]+\(' > $YS/strace.calls
  sed 's/(.*//' $YS/strace.calls | sort | uniq -c | sort -rn > $YS/syscalls.txt
  grep '^ioctl(' $YS/strace.calls | awk -F', ' '{ print $2 }' | sort | uniq -c | sort -rn | head -n 6 > $YS/ioctls.txt
  # per thread (name from /proc/PID/task/TID/comm at the start): its calls, and its two most frequent
  awk 'NR == FNR { name[$1] = $2; next } $2 !~ /^</ { split($2, c, "("); k = (($1 in name) ? name[$1] : "new") " " c[1]; n[k]++ }
    END { for (k in n) print n[k], k }' $YS/tids.txt $YS/strace.txt | sort -rn > $YS/bythread.txt
  calls=$(awk '{ n += $1 } END { print n + 0 }' $YS/syscalls.txt)
  cmds=$(ys_res $tag rios)
  [ "$calls" -gt 0 ] && [ "${cmds:-0}" -gt 0 ] || { reason "no system call traced ($(head -c 300 $YS/strace.err | tr '\n' ' ')) or no commands ($cmds)"; return 1; }
  figure yardstick-ehci-pvusb-syscalls-per-cmd "$(awk -v a=$calls -v c=$cmds 'BEGIN { printf "%.1f", a / c }')" count
  top=$(head -n 5 $YS/syscalls.txt)
  echo "$top" | while read -r n name; do figure yardstick-ehci-pvusb-syscall-$name-per-cmd "$(awk -v a=$n -v c=$cmds 'BEGIN { printf "%.2f", a / c }')" count; done
  d0=$($YS_TOOL syscalls 20000 | sed -n 's/.* ns_per_call=\([0-9]*\).*/\1/p')
  ys_cmd sys 20000; ys_done 120 && g0=$(ys_res sys ns_per_call)
  [ -n "$d0" ] && figure dom0-syscall-us "$(awk -v n=$d0 'BEGIN { printf "%.2f", n / 1000 }')" us
  [ -n "$g0" ] && figure guest-syscall-us "$(awk -v n=$g0 'BEGIN { printf "%.2f", n / 1000 }')" us
  reason "$(awk -v a=$calls -v c=$cmds 'BEGIN { printf "%.1f", a / c }') system calls of xenpvusbd per SCSI command ($calls over $cmds commands; most: $(echo "$top" | awk -v c=$cmds '{ printf "%s%s %.2f", s, $2, $1 / c; s = ", " }'); ioctls: $(awk -v c=$cmds '{ printf "%s%s %.2f", s, $2, $1 / c; s = ", " }' $YS/ioctls.txt); by thread and call: $(head -n 8 $YS/bythread.txt | awk -v c=$cmds '{ printf "%s%s %s %.2f", s, $2, $3, $1 / c; s = ", " }')); one getppid() costs ${d0:-?} ns in dom0, ${g0:-?} ns in the guest: $(awk -v a=$calls -v c=$cmds -v n=${d0:-0} 'BEGIN { printf "%.2f", a / c * n / 1e6 }') ms of a command in dom0's system-call entry and exit alone"
}

# --- busy-poll sweep: LAB_YS_POLL_SWEEP="0 50 500 2000" (not in make lab's run) ------------------------
# How long a loop keeps polling a ring after its last request or answer (--busy-poll, µs) before the guest
# must notify again: for each value the daemon is restarted with it (controllers 0 and 1 stay connected,
# as after any restart) and one pvusb pass per stick is recorded as path pvusb-bpV; the conffile is
# restored at the end. Figures: each value's read and write MB/s over blkback's medians, with the
# guest's notifications (kicks), the daemon's notifications and its CPU per command.
ys_poll_set() { # USEC
  local v=$1 c pid
  [ -f $YS/defaults.saved ] || cp $PV_DEFAULTS $YS/defaults.saved 2>/dev/null || : > $YS/defaults.saved
  echo "XENPVUSBD_OPTS=\"${LAB_XENPVUSBD_ARGS:+$LAB_XENPVUSBD_ARGS }--busy-poll $v\"" > $PV_DEFAULTS
  ys_restart_serving "--busy-poll $v"
}
ys_poll_restore() {
  [ -f $YS/defaults.saved ] || { reason "nothing to restore"; return 0; }
  cp $YS/defaults.saved $PV_DEFAULTS
  ys_restart_serving "${LAB_XENPVUSBD_ARGS:-}"
}
# ys_restart_serving ARGS: systemctl restart; the new MainPID runs with ARGS; controllers 0 and 1 connected
ys_restart_serving() {
  local c pid
  systemctl restart xenpvusbd || { pv_log 20; reason "systemctl restart xenpvusbd failed ($(cat $PV_DEFAULTS))"; return 1; }
  pid=$(pv_pid)
  [ -z "$1" ] || tr '\0' ' ' < /proc/$pid/cmdline | grep -qF -- "$1" || { reason "MainPID $pid runs $(tr '\0' ' ' < /proc/$pid/cmdline), not with $1"; return 1; }
  for c in 0 1; do
    wait_for 60 eval "[ \"\$(xenstore-read /local/domain/0/backend/vusb/$(ys_id)/$c/state 2>/dev/null)\" = 4 ]" \
      || { pv_log 20; reason "controller $c not Connected after the restart"; return 1; }
  done
  reason "xenpvusbd pid $pid: $(tr '\0' ' ' < /proc/$pid/cmdline); controllers 0 and 1 connected"
}
ys_poll_ratio() { # STICK
  local s=$1 v blk wb pv wp per out=""
  set -- $(ys_agg $s blkback read); blk=$1
  set -- $(ys_agg $s blkback write); wb=$1
  for v in $LAB_YS_POLL_SWEEP; do
    set -- $(ys_agg $s pvusb-bp$v read); pv=$1
    set -- $(ys_agg $s pvusb-bp$v write); wp=$1
    per=$(awk -v s=$s -v p=pvusb-bp$v '{ delete v; for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
      v["stick"] == s && v["path"] == p && v["op"] == "read" { us += v["us"]; c += v["cmds"]; if ("pair_cmds" in v) { pc += v["pair_cmds"]; k += v["pv_kicks"]; nt += v["pv_notifies"]; cpu += v["cpu_ticks"] } }
      END { printf "%.2f %.2f %.2f %.2f", c ? us / 1000 / c : 0, pc ? k / pc : 0, pc ? nt / pc : 0, pc ? cpu * 10 / pc : 0 }' $YS/res)
    set -- $per
    awk -v a=$pv -v b=$blk 'BEGIN { exit !(a > 0 && b > 0) }' || { reason "no pass for --busy-poll $v (pvusb $pv, blkback $blk MB/s)"; return 1; }
    figure yardstick-$s-read-pvusb-bp$v/blkback "$(awk -v a=$pv -v b=$blk 'BEGIN { printf "%.2f", a / b }')" ratio
    figure yardstick-$s-write-pvusb-bp$v/blkback "$(awk -v a=$wp -v b=$wb 'BEGIN { printf "%.2f", b > 0 ? a / b : 0 }')" ratio
    figure yardstick-$s-pvusb-bp$v-ms-per-cmd $1 ms
    figure yardstick-$s-pvusb-bp$v-kicks-per-cmd $2 count
    figure yardstick-$s-pvusb-bp$v-cpu-ms-per-cmd $4 ms
    out="$out${out:+; }--busy-poll $v: read $pv MB/s ($(awk -v a=$pv -v b=$blk 'BEGIN { printf "%.2f", a / b }') of blkback's), write $wp MB/s, $1 ms/cmd, kicks $2 notifies $3 daemon CPU $4 ms per cmd"
  done
  reason "$s, blkback read $blk write $wb MB/s; $out"
}

# ys_destroy_ctrls: destroys controllers 0-2 (their 'served' lines: figures of the whole life)
ys_destroy_ctrls() {
  local c t0 id s
  id=$(ys_id); t0=$(lab_now)
  for c in 0 1 2; do
    xenstore-exists /local/domain/0/backend/vusb/$id/$c 2>/dev/null && { xenpvusb usb-hc-destroy $YS_G $c || true; }
  done
  wait_for 30 eval "[ \$(pv_journal $t0 | grep -c 'vusb $id/[012]: served ') -ge 3 ]"
  for s in ehci xhci; do pv_journal $t0 | grep "vusb $id/$(ys_ctrl $s): served " | tail -n1 > $YS/served-$s; done
  pv_journal $t0 | grep "vusb $id/[012]: served "
  reason "$(pv_journal $t0 | grep "vusb $id/[012]: served " | sed 's/.*vusb /vusb /' | tr '\n' ';')"
}

# the map-mode controller: one read of the EHCI stick (checksum), so grant map stays covered
ys_map_read() {
  local ser b tag=ys-map-read mbps
  ser=$(ys_serial ehci)
  wait_for 90 usb_has_disk "$ser" || { reason "no EHCI stick in dom0"; return 1; }
  b=$(ys_busid ehci)
  xenpvusb usb-attach $YS_G 2 1 $b || { pv_log 20; reason "usb-attach to the map controller failed"; return 1; }
  ys_cmd usb; ys_done 300 || { xenpvusb usb-detach $YS_G 2 1; reason "no USB disk in the guest"; return 1; }
  ys_cmd read $tag 0 $YS_MIB; ys_done 600 || { xenpvusb usb-detach $YS_G 2 1; reason "no end of the read"; return 1; }
  ys_cmd gone
  xenpvusb usb-detach $YS_G 2 1 || { reason "usb-detach failed"; return 1; }
  wait_for 90 usb_has_disk "$ser" || { reason "dom0 did not get $b back"; return 1; }
  ys_done 120 || { reason "the guest still sees the stick"; return 1; }
  [ "$(ys_res $tag sha256)" = "$(ys_rsum ehci)" ] || { reason "checksum: $(guest_log $YS_G | grep "GUEST-RESULT $tag " | tail -n1 | cut -d' ' -f3-)"; return 1; }
  mbps=$(awk -v b=$(ys_res $tag bytes) -v u=$(ys_res $tag us) 'BEGIN { printf "%.2f", b / u }')
  figure yardstick-ehci-pvusb-map-read-MBps $mbps MB/s
  reason "controller 2 (--grant-mode map): $b read $mbps MB/s (the copy-mode rounds: $(ys_agg ehci pvusb read | cut -d' ' -f3)), checksum OK"
}

# --- HID latency ----------------------------------------------------------------------------------
ys_usbmon_start() { # NAME: dom0's usbmon text of the keyboard's bus into $YS/mon-NAME.txt
  local k bus
  k=$(cat $YS/kbd); read -r bus < /sys/bus/usb/devices/$k/busnum
  ( exec cat /sys/kernel/debug/usb/usbmon/${bus}u > $YS/mon-$1.txt ) &
  echo $! > $YS/mon-$1.pid
  lab_sleep 0.5
}
ys_usbmon_stop() { kill "$(cat $YS/mon-$1.pid)" 2>/dev/null; wait "$(cat $YS/mon-$1.pid)" 2>/dev/null; true; }
# ys_presses: the keyboard's interrupt IN completions with a left-shift report in dom0's usbmon text
# (monotonic µs mod 4096 s), one timestamp a line, unwrapped near dom0's monotonic now (MONO_US)
ys_mon_presses() { # FILE MONO_US
  local k bus dev
  k=$(cat $YS/kbd); read -r bus < /sys/bus/usb/devices/$k/busnum; read -r dev < /sys/bus/usb/devices/$k/devnum
  awk -v a="$(printf 'Ii:%d:%03d:1' $bus $dev)" -v now=$2 '$3 == "C" && $4 == a && $5 ~ /^0:/ && $7 == "=" && $8 ~ /^02/ {
      t = $2 + 0; w = 4096000000; k = int((now - t) / w + 0.5); printf "%.0f\n", t + k * w }' "$1"
}
# ys_lat_stats FILE (latencies in µs, one a line) -> "n median_ms worst_ms"
ys_lat_stats() { sort -n "$1" | awk '{ v[NR] = $1 } END { if (!NR) { print "0 0 0"; exit } printf "%d %.2f %.2f", NR, (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) / 1000, v[NR] / 1000 }'; }

ys_hid_prep() {
  local k
  k=$(lab_xhci_kbd) || { reason "no QEMU USB Keyboard on xHCI in dom0"; return 1; }
  echo $k > $YS/kbd
  wait_for 20 usb_bound_to $k usbhid || { reason "dom0's usbhid does not have $k"; return 1; }
  if [ ! -d /sys/kernel/debug/usb/usbmon ]; then
    [ -d /sys/kernel/debug/usb ] || mount -t debugfs none /sys/kernel/debug 2>/dev/null
    if ! grep -q '^usbmon ' /proc/modules; then modprobe usbmon || { reason "modprobe usbmon failed"; return 1; }; : > $YS/usbmon-loaded; fi
  fi
  [ -d /sys/kernel/debug/usb/usbmon ] || { reason "no /sys/kernel/debug/usb/usbmon"; return 1; }
  $YS_TOOL clocks > $YS/clocks-d0 || { reason "ystool clocks failed"; return 1; }
  reason "keyboard $k on bus $(cat /sys/bus/usb/devices/$k/busnum) (device $(cat /sys/bus/usb/devices/$k/devnum)); usbmon ($([ -f $YS/usbmon-loaded ] && echo "loaded here" || echo "there already")); dom0 $(cat $YS/clocks-d0)"
}

# native: dom0's usbhid + evdev (EVIOCSCLOCKID CLOCK_MONOTONIC: the usbmon clock), 50 presses
ys_hid_native() {
  local k ev e pid n now st
  k=$(cat $YS/kbd)
  for e in /sys/bus/usb/devices/$k:*/*/input/input*/event*; do [ -e "$e" ] && ev=${e##*/}; done
  [ -n "$ev" ] || { reason "no event device for $k in dom0"; return 1; }
  ys_usbmon_start native
  $YS_TOOL evread -m /dev/input/$ev $YS_PRESSES 90 > $YS/ev-native.txt 2>&1 &
  pid=$!
  wait_for 20 grep -q '^ready' $YS/ev-native.txt || { ys_usbmon_stop native; kill $pid; reason "evread did not start: $(cat $YS/ev-native.txt)"; return 1; }
  lab_request sendkeys $YS_HOLD_MS $(for n in $(seq 1 $YS_PRESSES); do echo shift; done)
  wait $pid
  lab_sleep 0.5
  ys_usbmon_stop native
  now=$(sed -n 's/.* mono_ns=\([0-9]*\).*/\1/p' <($YS_TOOL clocks)); now=$((now / 1000))
  ys_mon_presses $YS/mon-native.txt $now > $YS/mon-native.press
  awk '/^ev code=42 value=1 / { sub("t=", "", $4); split($4, a, "."); printf "%.0f\n", a[1] * 1000000 + a[2] }' $YS/ev-native.txt > $YS/ev-native.press
  paste $YS/mon-native.press $YS/ev-native.press | awk 'NF == 2 { printf "%.0f\n", $2 - $1 }' > $YS/lat-native
  echo "--- native: $(wc -l < $YS/mon-native.press) usbmon completions, $(wc -l < $YS/ev-native.press) evdev presses; latencies (us): $(tr '\n' ' ' < $YS/lat-native)"
  [ "$(wc -l < $YS/mon-native.press)" = $YS_PRESSES ] && [ "$(wc -l < $YS/ev-native.press)" = $YS_PRESSES ] \
    || { head -n 20 $YS/mon-native.txt; reason "$(wc -l < $YS/mon-native.press) press reports in usbmon, $(wc -l < $YS/ev-native.press) presses in evdev, want $YS_PRESSES each"; return 1; }
  st=$(ys_lat_stats $YS/lat-native); set -- $st
  awk -v m=$2 'BEGIN { exit !(m >= 0 && m < 1000) }' || { reason "implausible native median $2 ms"; return 1; }
  figure hid-latency-native-median-ms $2 ms
  figure hid-latency-native-worst-ms $3 ms
  reason "$1 presses (left shift, QEMU sendkey, hold $YS_HOLD_MS ms) through dom0's xhci-hcd + usbhid + evdev /dev/input/$ev: usbmon completion -> evdev event (both CLOCK_MONOTONIC) median $2 ms, worst $3 ms"
}

# the guest's CLOCK_REALTIME against dom0's: ping-pong over xenstore (min-RTT sample; bound RTT/2)
ys_offset() { # NAME
  local out
  # a fresh data/ys: a ready=1 left by the session before would let xsping ping before xspong reset
  # its nodes (the first full run lost its second session that way)
  xenstore-rm /local/domain/$(ys_id)/data/ys 2>/dev/null
  ys_cmd pong 20 60
  out=$($YS_TOOL xsping -x $YS_XS /local/domain/$(ys_id)/data/ys 20 60 2>&1)
  ys_done 90 || { reason "the guest's xspong did not end"; return 1; }
  echo "$out" > $YS/offset-$1
  echo "$out" | tail -n 3
  echo "$out" | grep -q '^best ' || { reason "xsping: $(echo "$out" | tail -n 2 | tr '\n' ' ')"; return 1; }
  return 0
}

ys_hid_pvusb() {
  local k t0 n now d0off st o1 o2 off err line
  k=$(cat $YS/kbd)
  local c pre
  pre=" $(xenstore-list /local/domain/0/backend/vusb/$(ys_id) 2>/dev/null | tr '\n' ' ') "
  xenpvusb usb-hc-create $YS_G 2 8 > /dev/null || { reason "usb-hc-create failed"; return 1; }
  for c in $(xenstore-list /local/domain/0/backend/vusb/$(ys_id) 2>/dev/null); do case $pre in *" $c "*) ;; *) break;; esac; done
  wait_for 60 eval "[ \"\$(xenstore-read /local/domain/0/backend/vusb/$(ys_id)/$c/state 2>/dev/null)\" = 4 ]" || { reason "controller $c did not connect"; return 1; }
  ys_offset before || return 1
  ys_usbmon_start pvusb
  xenpvusb usb-attach $YS_G $c 1 $k || { ys_usbmon_stop pvusb; pv_log 20; reason "usb-attach $YS_G $c 1 $k failed"; return 1; }
  ys_cmd hid hid $YS_PRESSES
  guest_wait $YS_G 'GUEST-RESULT hid-ready' 240 || { ys_usbmon_stop pvusb; reason "no keyboard event device in the guest"; return 1; }
  guest_log $YS_G | grep -q 'GUEST-RESULT hid-ready none' && { ys_usbmon_stop pvusb; reason "no keyboard event device in the guest within 180 s"; return 1; }
  lab_request sendkeys $YS_HOLD_MS $(for n in $(seq 1 $YS_PRESSES); do echo shift; done)
  ys_done 200 || { ys_usbmon_stop pvusb; reason "the guest's evread did not end"; return 1; }
  lab_sleep 0.5
  ys_usbmon_stop pvusb
  ys_offset after || return 1
  $YS_TOOL clocks > $YS/clocks-d0b
  now=$(sed -n 's/.* mono_ns=\([0-9]*\).*/\1/p' $YS/clocks-d0b); now=$((now / 1000))
  d0off=$(sed -n 's/.* off_ns=\([0-9]*\).*/\1/p' $YS/clocks-d0b); d0off=$((d0off / 1000))
  # the offset (guest realtime - dom0 realtime) of the tighter of the two min-RTT samples
  o1=$(grep '^best ' $YS/offset-before); o2=$(grep '^best ' $YS/offset-after)
  line=$(printf '%s\n%s\n' "$o1" "$o2" | sed 's/.*rtt_us=\([-0-9]*\) off_us=\([-0-9]*\) err_us=\([0-9]*\).*/\1 \2 \3/' | sort -n | head -n1)
  set -- $line; off=$2 err=$3
  figure hid-clock-offset-us $off us
  figure hid-clock-offset-bound-us $err us
  ys_mon_presses $YS/mon-pvusb.txt $now > $YS/mon-pvusb.press
  guest_log $YS_G | awk '/GUEST-RESULT hid-ev code=42 value=1 / { sub("t=", "", $5); split($5, a, "."); printf "%.0f\n", a[1] * 1000000 + a[2] }' > $YS/ev-pvusb.press
  # guest realtime - (usbmon monotonic + dom0's realtime - monotonic) - (guest - dom0 realtime)
  paste $YS/mon-pvusb.press $YS/ev-pvusb.press | awk -v d=$d0off -v o=$off 'NF == 2 { printf "%.0f\n", $2 - ($1 + d) - o }' > $YS/lat-pvusb
  echo "--- pvusb: $(wc -l < $YS/mon-pvusb.press) usbmon completions, $(wc -l < $YS/ev-pvusb.press) guest evdev presses; clock offset guest-dom0 $off us +- $err us (before: ${o1#best }; after: ${o2#best }); dom0 realtime-monotonic $d0off us; latencies (us): $(tr '\n' ' ' < $YS/lat-pvusb)"
  xenpvusb usb-detach $YS_G $c 1 || { reason "usb-detach failed"; return 1; }
  xenpvusb usb-hc-destroy $YS_G $c > /dev/null 2>&1
  wait_for 60 usb_bound_to $k usbhid || { reason "usbhid did not take $k back"; return 1; }
  [ "$(wc -l < $YS/mon-pvusb.press)" = $YS_PRESSES ] && [ "$(wc -l < $YS/ev-pvusb.press)" = $YS_PRESSES ] \
    || { grep " C Ii" $YS/mon-pvusb.txt | head -n 10; reason "$(wc -l < $YS/mon-pvusb.press) press reports in usbmon, $(wc -l < $YS/ev-pvusb.press) presses in the guest's evdev, want $YS_PRESSES each"; return 1; }
  st=$(ys_lat_stats $YS/lat-pvusb); set -- $st
  awk -v m=$2 -v e=$err 'BEGIN { exit !(m > -e / 1000 && m < 2000) }' || { reason "implausible pvusb median $2 ms (offset bound $err us)"; return 1; }
  figure hid-latency-pvusb-median-ms $2 ms
  figure hid-latency-pvusb-worst-ms $3 ms
  reason "$1 presses through xenpvusbd (controller $c, guest usbhid + evdev, CLOCK_REALTIME): dom0's usbmon completion -> the guest's evdev event median $2 ms, worst $3 ms; guest-dom0 realtime offset $off us, bound +-$err us (min-RTT of 2 x 20 xenstore ping-pongs); native: median $(ys_lat_stats $YS/lat-native | cut -d' ' -f2) ms"
}

ys_cleanup() {
  local id c why="" k s f
  id=$(ys_id 2>/dev/null)
  [ -n "$id" ] && for c in $(xenstore-list /local/domain/0/backend/vusb/$id 2>/dev/null); do xenpvusb usb-hc-destroy $YS_G $c > /dev/null 2>&1 || true; done
  [ -n "$id" ] && xenstore-exists /local/domain/0/backend/vbd/$id 2>/dev/null && { xl block-detach $YS_G xvdb 2>&1 || true; }
  guest_destroy $YS_G > /dev/null
  [ -n "$id" ] && { wait_for 20 eval "! xenstore-exists /local/domain/0/backend/vusb/$id 2>/dev/null" || { why="backend/vusb/$id left; "; xenstore-rm /local/domain/0/backend/vusb/$id; }; }
  for f in $YS/mon-*.pid; do [ -f "$f" ] && kill "$(cat $f)" 2>/dev/null; done
  [ -f $YS/usbmon-loaded ] && { rmmod usbmon 2>/dev/null || why="$why""rmmod usbmon failed; "; }
  for s in ehci xhci; do
    wait_for 60 usb_has_disk "$(ys_serial $s)" || { lab_recover_stick "$(ys_serial $s)"; why="$why""$s stick not with usb-storage (replugged in QEMU); "; }
  done
  k=$(cat $YS/kbd 2>/dev/null || lab_xhci_kbd)
  [ -z "$k" ] || wait_for 30 usb_bound_to $k usbhid || why="$why""keyboard $k not with usbhid ($(usb_drivers $k)); "
  [ -z "$why" ] || { reason "$why"; return 1; }
  reason "guest destroyed, no controller or vbd left; both sticks with usb-storage, the keyboard with usbhid${id:+; usbmon $([ -f $YS/usbmon-loaded ] && echo unloaded again || echo untouched)}"
}

if stage daemon -t 120 pv_ensure; then
  stage restart -t 120 ys_restart
  if stage guest-create -t 300 ys_guest && stage hc-create -t 180 ys_hc; then
    for s in ehci xhci; do stage $s-r1-native -t 300 ys_native $s 1 && stage $s-r1-blkback -t 600 ys_blkback $s 1 && stage $s-r1-pvusb -t 600 ys_pvusb $s 1; done
    for s in ehci xhci; do stage $s-r2-pvusb -t 600 ys_pvusb $s 2 && stage $s-r2-blkback -t 600 ys_blkback $s 2 && stage $s-r2-native -t 300 ys_native $s 2; done
    stage syscalls -t 900 ys_syscalls
    if [ -n "${LAB_YS_POLL_SWEEP:-}" ]; then
      for v in $LAB_YS_POLL_SWEEP; do
        stage poll-$v-restart -t 180 ys_poll_set $v && for s in ehci xhci; do stage $s-poll-$v -t 600 ys_pvusb $s p$v pvusb-bp$v; done
      done
      stage poll-restore -t 180 ys_poll_restore
      for s in ehci xhci; do stage $s-poll-ratio ys_poll_ratio $s; done
    fi
    stage map-read -t 600 ys_map_read
    stage controllers-stats -t 120 ys_destroy_ctrls
    for s in ehci xhci; do
      stage $s-read-ratio ys_ratio $s read
      stage $s-write-ratio ys_ratio $s write
      stage $s-breakdown ys_breakdown $s
    done
    stage footprint-16hc -t 300 ys_16hc
    if stage hid-prep -t 60 ys_hid_prep && stage hid-native -t 180 ys_hid_native; then
      stage hid-pvusb -t 600 ys_hid_pvusb
    fi
  fi
  stage cleanup -t 240 ys_cleanup
  cat $YS/res
  pv_log 20
fi
