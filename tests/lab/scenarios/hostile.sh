# Scenario "hostile": a guest whose frontend is our own program in guest userspace
# (tests/lab/guest/hostile/pvfront.c, no xen-hcd: it grants its rings with /dev/xen/gntalloc, binds an
# event channel with /dev/xen/evtchn and writes its nodes through /dev/xen/xenbus) breaks the PVUSB
# protocol on purpose against a controller made by `xenpvusb usb-hc-create` with the xHCI keyboard on
# port 1, one game at a time. Malformed requests must each get an error status while the controller
# stays Connected and serves the next good request; ring index games must stop that controller only
# (Closing/Closed), after which the program re-initialises and must be served again. Meanwhile a
# bystander guest with the real xen-hcd reads its own stick again and again, each time whole with the
# right checksum; the daemon's MainPID stays the same; its journal has one line per ring violation.
# One stage per game (hostile/game-<name>), from the program's GUEST-RESULT lines.

HS=$LAB_TMP/hostile
mkdir -p $HS
HS_RING_GAMES=6   # ring index games pvfront plays (each must be logged once)

hs_guests() {
  cat > $HS/bystander.sh <<'G'
wait_usb_disk 300 || exit 0
n=0
while :; do
  n=$((n + 1))
  read_all | sed "s/^GUEST-RESULT read /GUEST-RESULT pass n=$n /"
  pvfront xs-read data/lab-stop > /dev/null 2>&1 && break
  [ $n -ge 60 ] && break
done
result "bystander-done passes=$n"
G
  cat > $HS/hostile.sh <<'G'
ls -l /dev/xen/
pvfront xs-wait data/lab-go 900 || { result "pvfront-exit rc=no-go"; exit 0; }
pvfront games 0
result "pvfront-exit rc=$?"
G
  guest_create hsb $HS/bystander.sh || { reason "xl create of the bystander failed"; return 1; }
  GUEST_SKIP_MODULES=xen_hcd GUEST_EXTRA_MODULES="xen_gntalloc xen_evtchn" guest_create hsh $HS/hostile.sh \
    || { reason "xl create of the hostile guest failed"; return 1; }
  guest_wait hsb 'GUEST-BEGIN' 120 && guest_wait hsh 'GUEST-BEGIN' 120 || { reason "a guest did not reach its script"; return 1; }
  guest_log hsh | grep -E 'GUEST-MODULE (xen_hcd|xen_gntalloc|xen_evtchn)'
  guest_log hsh | grep -q 'GUEST-MODULE xen_hcd skipped' || { reason "xen_hcd was not left out in the hostile guest"; return 1; }
  guest_log hsh | grep -q 'GUEST-MODULE xen_gntalloc loaded' && guest_log hsh | grep -q 'GUEST-MODULE xen_evtchn loaded' \
    || { reason "xen_gntalloc/xen_evtchn did not load: $(guest_log hsh | grep -E 'GUEST-MODULE xen_(gntalloc|evtchn)' | tr '\n' ' ')"; return 1; }
  xl domid hsb > $HS/hsb.id && xl domid hsh > $HS/hsh.id
  reason "bystander hsb (domain $(cat $HS/hsb.id), xen-hcd) and hostile hsh (domain $(cat $HS/hsh.id): no xen-hcd, gntalloc + evtchn loaded)"
}

hs_setup() {
  local s k id
  s=$(usb_dev_by_serial $LAB_STICK_EHCI_SERIAL) || { reason "EHCI stick not found"; return 1; }
  s=${s##*/}
  k=$(for d in /sys/bus/usb/devices/*; do [ -f $d/product ] && grep -qi keyboard $d/product && echo ${d##*/} && break; done)
  [ -n "$k" ] || { reason "no keyboard in dom0"; return 1; }
  echo $s > $HS/busid-stick; echo $k > $HS/busid-kbd
  xenpvusb usb-hc-create hsb 2 8 && xenpvusb usb-hc-create hsh 2 8 || { pv_log 20; reason "usb-hc-create failed"; return 1; }
  read -r id < $HS/hsb.id
  wait_for 60 sh -c "xenstore-read /local/domain/0/backend/vusb/$id/0/state | grep -qx 4" || { pv_log 20; reason "bystander's controller not Connected"; return 1; }
  read -r id < $HS/hsh.id
  wait_for 60 sh -c "xenstore-read /local/domain/0/backend/vusb/$id/0/state | grep -qx 2" || { pv_log 20; reason "hostile guest's controller not in InitWait"; return 1; }
  xenpvusb usb-attach hsb 0 1 $s || { reason "usb-attach of the stick failed"; return 1; }
  xenpvusb usb-attach hsh 0 1 $k || { reason "usb-attach of the keyboard failed"; return 1; }
  guest_wait hsb 'GUEST-RESULT disk ' 180 || { pv_log 20; reason "the bystander saw no disk"; return 1; }
  reason "stick $s -> bystander, keyboard $k -> hostile guest (port 1 of 8)"
}

# hs_answer N: dom0's side of "GUEST-ASK N cycle-port": detach and attach the keyboard again (a conn
# ring event for the backend to send), then tell the guest in its xenstore.
hs_answer() {
  local k id
  read -r k < $HS/busid-kbd; read -r id < $HS/hsh.id
  echo "hostile: GUEST-ASK $1: cycling port 1 ($k)"
  xenpvusb usb-detach hsh 0 1; xenpvusb usb-attach hsh 0 1 $k
  xenstore-write /local/domain/$id/data/lab-ask-$1 done
}

# Lets the games run (the bystander is reading), answering the program's requests, until it is done.
hs_games() {
  local id fd tp line rc=1 end
  read -r id < $HS/hsh.id
  pv_pid > $HS/pid
  lab_now > $HS/t0
  guest_log hsb | grep -c 'GUEST-RESULT pass ' > $HS/passes-before
  xenstore-write /local/domain/$id/data/lab-go 1 || { reason "cannot write data/lab-go"; return 1; }
  exec {fd}< <(exec tail -n +1 -F "$LAB_CONSOLE_DIR/guest-hsh.log" 2>/dev/null)
  tp=$!
  end=$((SECONDS + 1200))
  while [ $SECONDS -lt $end ]; do
    IFS= read -r -t 30 -u $fd line || continue
    line=${line%$'\r'}
    case $line in
      *"GUEST-ASK "*" cycle-port"*) set -- ${line#*GUEST-ASK }; hs_answer $1;;
      *"GUEST-RESULT pvfront-done "*|*"GUEST-RESULT pvfront-exit "*|*"GUEST-RESULT pvfront-connect failed"*) rc=0; break;;
    esac
  done
  exec {fd}<&-; kill $tp 2>/dev/null
  guest_log hsb | grep -c 'GUEST-RESULT pass ' > $HS/passes-after
  [ $rc = 0 ] || { reason "pvfront did not finish within 1200 s"; return 1; }
  guest_log hsh | grep -q 'GUEST-RESULT pvfront-connect ok' || { pv_log 30; reason "pvfront could not connect: $(guest_log hsh | grep -E 'pvfront:' | tail -n 3 | tr '\n' ' ')"; return 1; }
  reason "$(guest_log hsh | grep 'GUEST-RESULT pvfront-done' | cut -d' ' -f3-)"
}

# One STAGE line per game, from pvfront's results.
hs_game_stages() {
  local line name ok got kind expect
  guest_log hsh | grep 'GUEST-RESULT game ' > $HS/games
  while IFS= read -r line; do
    name=${line#*name=}; name=${name%% *}
    kind=${line#*kind=}; kind=${kind%% *}
    expect=${line#*expect=}; expect=${expect%% *}
    got=${line#*got=}; got=${got%% ok=*}; got=${got//_/ }
    ok=${line#* ok=}; ok=${ok%% *}
    if [ "$ok" = yes ]; then
      echo "STAGE $LAB_SCENARIO/game-$name PASS 0.0s $kind, expected $expect: $got"
    else
      echo "STAGE $LAB_SCENARIO/game-$name FAIL 0.0s $kind, expected $expect; got: $got"
    fi
  done < $HS/games
  [ -s $HS/games ] || echo "STAGE $LAB_SCENARIO/games-played FAIL 0.0s no game results from pvfront"
}

hs_ring_lines() {
  local id t0 n
  read -r id < $HS/hsh.id; read -r t0 < $HS/t0
  journalctl -u xenpvusbd --since "@$((t0 / 1000000 - 1))" -o cat --no-pager 2>&1 | grep "vusb $id/0: frontend broke" > $HS/ring-lines
  cat $HS/ring-lines
  n=$(grep -c . $HS/ring-lines)
  figure hostile-ring-violation-log-lines $n lines
  [ "$n" = $HS_RING_GAMES ] || { reason "$n 'frontend broke the ... protocol' lines for $HS_RING_GAMES ring violations"; return 1; }
  reason "$n lines for $HS_RING_GAMES ring violations: $(sed 's/.*frontend broke the \(.*\) protocol (producer index \([0-9]*\)).*/\1 \2/' $HS/ring-lines | tr '\n' ',' | sed 's/,$//')"
}

hs_alive() {
  local pid
  pid=$(pv_pid)
  [ "$(pv_prop ActiveState)" = active ] || { pv_log; reason "xenpvusbd is not active: $(pv_show ActiveState,SubState,Result)"; return 1; }
  if [ "$pid" != "$(cat $HS/pid)" ]; then
    journalctl -u xenpvusbd --since "@$(( $(cat $HS/t0) / 1000000 - 1))" -o short-monotonic --no-pager 2>&1 | grep -iE 'fail|exception|error|Main process|Started|Stopped' | head -n 30
    reason "xenpvusbd restarted: MainPID $(cat $HS/pid) -> $pid ($(journalctl -u xenpvusbd --since "@$(( $(cat $HS/t0) / 1000000 - 1))" -o cat --no-pager 2>&1 | grep -m1 -E 'event loop failed|Main process exited' ))"
    return 1
  fi
  reason "MainPID $pid unchanged"
}

hs_bystander() {
  local id before after bad sums n
  read -r id < $HS/hsb.id; read -r before < $HS/passes-before; read -r after < $HS/passes-after
  xenstore-write /local/domain/$id/data/lab-stop 1
  guest_wait hsb 'GUEST-RESULT bystander-done' 900 || { pv_log 20; reason "the bystander did not finish its last pass"; return 1; }
  guest_log hsb | grep 'GUEST-RESULT pass ' > $HS/passes
  n=$(grep -c . $HS/passes)
  bad=$(grep -v "sha256=$LAB_STICK_EHCI_SHA256" $HS/passes | head -n 1)
  [ -z "$bad" ] || { reason "a bystander pass went wrong: ${bad#*GUEST-RESULT }"; return 1; }
  [ $((after - before)) -ge 1 ] || { reason "no bystander pass completed while the games ran ($before before, $after after)"; return 1; }
  figure hostile-bystander-MBps "$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^mbps=/) { s += substr($i, 6); c++ } } END { if (c) printf "%.2f", s / c }' $HS/passes)" MB/s
  reason "$n passes, all whole with the right checksum; $((after - before)) completed while the games ran"
}

hs_cleanup() {
  local g id
  for g in hsh hsb; do
    xenpvusb usb-hc-destroy $g 0 > /dev/null 2>&1
  done
  for g in hsh hsb; do
    id=; [ -f $HS/$g.id ] && read -r id < $HS/$g.id
    guest_destroy $g > /dev/null
    [ -n "$id" ] && ! wait_for 15 eval "! xenstore-exists /local/domain/0/backend/vusb/$id 2>/dev/null" \
      && { echo "hostile: backend/vusb/$id still there 15 s after its domain died; removing it by hand"; xenstore-rm /local/domain/0/backend/vusb/$id; }
  done
  wait_for 60 usb_has_disk $LAB_STICK_EHCI_SERIAL || { lab_recover_stick $LAB_STICK_EHCI_SERIAL; reason "the stick did not come back to dom0 by itself (replugged in QEMU for the next scenarios)"; return 1; }
  reason "guests destroyed, stick in dom0"
}

if stage daemon -t 120 pv_ensure; then
  if stage guests -t 300 hs_guests && stage setup -t 300 hs_setup; then
    if stage games -t 1300 hs_games; then
      hs_game_stages
    fi
    stage ring-violations-logged -t 30 hs_ring_lines
    stage daemon-alive -t 30 hs_alive
    stage bystander -t 960 hs_bystander
  fi
  stage cleanup -t 180 hs_cleanup
fi
