# Scenario "xenbus": the xenstore transport over the kernel's /dev/xen/xenbus (messages of at most 4096
# bytes; the kernel relays requests and runs the watches itself) against dom0's real xenstored. First
# the CLI on xenbus against the CLI on the xenstored socket (same nodes, permissions and listings, with
# xenpvusbd on the socket serving both controllers); then xenpvusbd itself on xenbus (a systemd drop-in
# sets XENSTORED_PATH) serves one guest connection through watches relayed by the kernel: the guest
# reads the stick, detach and usb-hc-destroy complete. Ends with the daemon back on the socket.

XB_DEV=/dev/xen/xenbus
XB_DROPIN=/run/systemd/system/xenpvusbd.service.d/lab-xenbus.conf

xb() { XENSTORED_PATH=$XB_DEV xenpvusb "$@"; }

xb_xenstored() {
  local pid exe
  [ -c $XB_DEV ] || { reason "no $XB_DEV"; return 1; }
  [ -S /run/xenstored/socket ] || { reason "no /run/xenstored/socket"; return 1; }
  read -r pid < /run/xenstore.pid 2>/dev/null || pid=$(pidof oxenstored xenstored | cut -d' ' -f1)
  exe=$(readlink /proc/$pid/exe) || { reason "no xenstored process found"; return 1; }
  reason "dom0's xenstored is ${exe##*/} ($exe, pid $pid); socket /run/xenstored/socket and $XB_DEV present"
}

xb_guest() {
  cat > $LAB_TMP/xenbus-guest.sh <<'G'
wait_usb_disk 600 || exit 0
read_all
G
  guest_create xbg $LAB_TMP/xenbus-guest.sh || { reason "xl create failed"; return 1; }
  guest_wait xbg 'GUEST-BEGIN' 120 || { reason "guest did not reach its script"; return 1; }
  guest_log xbg | grep -q GUEST-HCD-LOADED || { reason "xen-hcd not loaded in the guest"; return 1; }
  reason "guest up, xen-hcd loaded"
}

# xb_created OUTPUT: the controller id in usb-hc-create's "created controller N for domain D".
xb_created() { local r=${1#created controller }; echo "${r%% *}"; }
xb_state_is() { [ "$(xenstore-read /local/domain/0/backend/vusb/$(xl domid xbg)/$1/state 2>/dev/null)" = "$2" ]; }
# xb_tree DEVID: the backend and frontend nodes of a controller with their permissions, the devid masked.
xb_tree() {
  local dom; dom=$(xl domid xbg)
  { xenstore-ls -p /local/domain/0/backend/vusb/$dom/$1; echo "--- frontend"; xenstore-ls -p /local/domain/$dom/device/vusb/$1; } 2>&1 \
    | sed -E -e "s|/vusb/$dom/$1|/vusb/DOM/DEV|g" -e "s|/device/vusb/$1|/device/vusb/DEV|g" \
      -e 's/[ .]+\(/ (/' -e 's/^( *)(urb-ring-ref|conn-ring-ref|event-channel) = "[0-9]*"/\1\2 = "N"/'
}

# The CLI on xenbus and on the socket: controller 0 made over xenbus, controller 1 over the socket.
xb_cli() {
  local a b x s
  a=$(xb usb-hc-create xbg 2 8) || { echo "$a"; pv_log 20; reason "usb-hc-create over xenbus failed"; return 1; }
  b=$(xenpvusb usb-hc-create xbg 2 8) || { echo "$b"; pv_log 20; reason "usb-hc-create over the socket failed"; return 1; }
  echo "$a"; echo "$b"
  x=$(xb_created "$a"); s=$(xb_created "$b")
  wait_for 60 xb_state_is $x 4 && wait_for 60 xb_state_is $s 4 || { pv_log 20; reason "the controllers did not both connect to xen-hcd"; return 1; }
  xb_tree $x > $LAB_TMP/xb-tree-xenbus; xb_tree $s > $LAB_TMP/xb-tree-socket
  cat $LAB_TMP/xb-tree-xenbus
  diff $LAB_TMP/xb-tree-socket $LAB_TMP/xb-tree-xenbus || { reason "xenstore nodes made over xenbus differ from the socket's"; return 1; }
  a=$(xb usb-list xbg 2>&1); b=$(xenpvusb usb-list xbg 2>&1)
  echo "$a"
  [ -n "$a" ] && [ "$a" = "$b" ] || { echo "$b"; reason "usb-list over xenbus differs from the socket's"; return 1; }
  echo "$a" | grep -q . || { reason "empty usb-list"; return 1; }
  xb usb-hc-destroy xbg $s || { reason "usb-hc-destroy over xenbus failed"; return 1; }
  xenpvusb usb-hc-destroy xbg $x || { reason "usb-hc-destroy over the socket failed"; return 1; }
  [ -z "$(xb usb-list xbg 2>&1)" ] || { xb usb-list xbg; reason "controllers left after usb-hc-destroy"; return 1; }
  reason "controller $x made over xenbus, $s over the socket: same nodes and permissions ($(grep -c . $LAB_TMP/xb-tree-xenbus) lines), same usb-list; each destroyed over the other transport"
}

xb_daemon() {
  local pid
  mkdir -p ${XB_DROPIN%/*}
  printf '[Service]\nEnvironment=XENSTORED_PATH=%s\n' $XB_DEV > $XB_DROPIN
  systemctl daemon-reload && systemctl restart xenpvusbd || { pv_log 20; reason "restart with XENSTORED_PATH=$XB_DEV failed"; return 1; }
  pv_ensure || return 1
  pid=$(pv_pid)
  tr '\0' '\n' < /proc/$pid/environ | grep -qx "XENSTORED_PATH=$XB_DEV" || { reason "the daemon's environment lacks XENSTORED_PATH"; return 1; }
  ls -l /proc/$pid/fd | grep -q " -> $XB_DEV\$" || { ls -l /proc/$pid/fd; reason "the daemon has no $XB_DEV open"; return 1; }
  reason "xenpvusbd pid $pid serves backend/vusb with $XB_DEV open (XENSTORED_PATH)"
}

xb_serve() {
  local d c
  c=$(xenpvusb usb-hc-create xbg 2 8) || { echo "$c"; pv_log 20; reason "usb-hc-create failed"; return 1; }
  c=$(xb_created "$c"); echo "$c" > $LAB_TMP/xb-ctrl
  wait_for 60 xb_state_is $c 4 || { pv_log 20; reason "the daemon on xenbus did not connect controller $c to xen-hcd"; return 1; }
  d=$(usb_dev_by_serial $LAB_STICK_EHCI_SERIAL) || { reason "EHCI stick not found"; return 1; }
  xenpvusb usb-attach xbg $c 1 ${d##*/} || { reason "usb-attach failed"; return 1; }
  guest_wait xbg 'GUEST-RESULT read |GUEST-RESULT disk none' 900 || { pv_log 30; reason "no read result"; return 1; }
  local sum mbps
  sum=$(guest_result xbg read sha256); mbps=$(guest_result xbg read mbps)
  [ "$sum" = "$LAB_STICK_EHCI_SHA256" ] || { pv_log 30; reason "guest read failed or checksum mismatch: ${sum:-none}"; return 1; }
  figure xenbus-guest-ehci-MBps "$mbps" MB/s
  pv_journal_has "vusb $(xl domid xbg)/$c: connected" && pv_journal_has "vusb $(xl domid xbg)/$c: port 1: ${d##*/} attached" \
    || { pv_log 20; reason "the journal does not show controller $c connected and port 1 attached"; return 1; }
  reason "daemon on xenbus: controller $c connected, ${d##*/} attached, guest read the stick: $mbps MB/s, checksum OK"
}

xb_release() {
  local c; read -r c < $LAB_TMP/xb-ctrl
  xenpvusb usb-detach xbg $c 1 || { reason "usb-detach failed"; return 1; }
  wait_for 60 usb_has_disk $LAB_STICK_EHCI_SERIAL || { pv_log 20; reason "dom0 did not get the stick back"; return 1; }
  xenpvusb usb-hc-destroy xbg $c || { pv_log 20; reason "usb-hc-destroy failed"; return 1; }
  [ -z "$(xenpvusb usb-list xbg 2>&1)" ] || { reason "controller left after usb-hc-destroy"; return 1; }
  pv_log 12
  reason "detach and usb-hc-destroy served through xenbus watches; stick back in dom0"
}

# Back to the socket, whatever happened.
xb_restore() {
  rm -f $XB_DROPIN
  systemctl daemon-reload
  systemctl restart xenpvusbd || { pv_log 20; reason "restart failed"; return 1; }
  pv_ensure || return 1
  ! tr '\0' '\n' < /proc/$(pv_pid)/environ | grep -q XENSTORED_PATH || { reason "XENSTORED_PATH still set"; return 1; }
  reason "xenpvusbd back on the socket: $(pv_show MainPID,ActiveState)"
}

stage xenstored -t 60 xb_xenstored
if stage daemon -t 120 pv_ensure && stage guest-create -t 240 xb_guest; then
  stage cli -t 300 xb_cli
  if stage daemon-on-xenbus -t 120 xb_daemon; then
    stage serve -t 960 xb_serve && stage release -t 180 xb_release
  fi
  [ -f $LAB_TMP/xb-ctrl ] && xenpvusb usb-hc-destroy xbg "$(cat $LAB_TMP/xb-ctrl)" > /dev/null 2>&1
  guest_destroy xbg > /dev/null
  stage restore -t 120 xb_restore
fi
