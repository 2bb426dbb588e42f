# Scenario "diag" (not in ALL): where dom0's boot time goes, and what a fork costs in dom0 under TCG.
diag_boot() {
  local u
  for u in xen.service systemd-udev-settle.service systemd-udev-trigger.service lab-payload.service; do
    echo "$u: $(systemctl show $u -p InactiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic | tr '\n' ' ')"
  done
  ps -eo pid,etimes,time,args | grep -E 'qemu|xenstored|xenconsoled' | grep -v grep
  local t0; t0=$(lab_now)
  /usr/libexec/xen-qemu-system-i386 -xen-domid 0 -xen-attach -name dom0x -nographic -M xenpv -daemonize \
    -monitor none -serial none -parallel none -pidfile /tmp/qx.pid
  echo "second dom0 qemu start: $(lab_elapsed $t0)s"
  kill $(cat /tmp/qx.pid)
  t0=$(lab_now); xenstore-read -s / > /dev/null; echo "xenstore-read: $(lab_elapsed $t0)s"
  t0=$(lab_now); xl list > /dev/null; echo "xl list: $(lab_elapsed $t0)s"
  t0=$(lab_now); /bin/true; /bin/true; /bin/true; /bin/true; /bin/true
  figure dom0-fork-exec-s "$(awk -v us=$(( ${EPOCHREALTIME/[.,]/} - t0 )) 'BEGIN { printf "%.2f", us / 5e6 }')" s
  t0=$(lab_now); modprobe -n xen-gntdev; echo "modprobe -n: $(lab_elapsed $t0)s"
  cat /proc/loadavg
  echo "systemctl (private bus): $(systemctl show -p Version --value 2>&1) / $(systemctl is-system-running 2>&1)"
}
stage boot-times diag_boot
