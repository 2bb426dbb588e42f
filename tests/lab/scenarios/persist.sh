# Scenario "persist": persistent assignments (/etc/xenpvusb/assignments.conf, applied by xenpvusbd).
# An assignment by vendor:product and serial is made before the guest exists (and before its stick is
# plugged in); `xl create` of a guest whose config has `usbctrl = [ "type=pv,version=2,ports=4" ]`:
# the guest sees the stick with no further command and reads it whole; `xl reboot` (new domid): it sees
# the stick again; QEMU unplugs the stick and plugs it into another port (EHCI port 3 -> 4, a new bus
# id): attached again; `systemctl restart xenpvusbd`: still attached, the guest reads a region; a broad
# rule (class=03, no force) with `xenpvusb apply` never takes dom0's keyboard (or tablet); then the
# journal must hold the audit records of all of it (MESSAGE_ID 5b6a0d2b7c1e4f0a9a3e0c1d2e3f4a01..06,
# XENPVUSB_ACTION attach|detach|plug|unplug|refuse|policy with DOMAIN, DOMID, BUSID, VID_PID, SERIAL,
# RULE, REASON). The stick is the scenario's own (LABPERS04, 16 MiB, QEMU id pstick), plugged only
# while it runs, so no other scenario's devices are touched; the cleanup removes the rules, destroys the
# guest and unplugs the stick.

PS=$LAB_TMP/persist
mkdir -p $PS
PS_G=persg
PS_VIDPID=46f4:0001                      # QEMU's usb-storage
PS_MATCH="id=$PS_VIDPID serial=$LAB_STICK_PERS_SERIAL"
PS_MSGID=5b6a0d2b7c1e4f0a9a3e0c1d2e3f4a0 # + 1..6: attach detach plug unplug refuse policy
PS_ACTIONS="attach detach plug unplug refuse policy"

ps_domid() { xl domid $PS_G 2>/dev/null; }
# ps_cmd WORD: ask the guest script to do WORD (data/lab-cmdN, N counting from 1 in each boot of the
# guest: the script takes them in order); PS_N is set to N.
ps_cmd() {
  local n; read -r n < $PS/cmdn; n=$((n + 1)); echo $n > $PS/cmdn; PS_N=$n
  xenstore-write "/local/domain/$(cat $PS/domid)/data/lab-cmd$n" "$1"
}
# ps_port_of BUSID: the port of the guest's controller 0 that holds BUSID (backend/vusb/<domid>/0/port/N).
ps_port_of() {
  local id p v
  id=$(ps_domid) || return 1
  for p in $(xenstore-list /local/domain/0/backend/vusb/$id/0/port 2>/dev/null); do
    v=$(xenstore-read /local/domain/0/backend/vusb/$id/0/port/$p 2>/dev/null)
    [ "$v" = "$1" ] && { echo "$p"; return 0; }
  done
  return 1
}
# ps_guest_read TAG WANT_SHA WANT_BYTES: the guest's "GUEST-RESULT TAG ..." line has that checksum and size.
ps_guest_read() {
  local sum bytes mbps
  sum=$(guest_result $PS_G "$1" sha256); bytes=$(guest_result $PS_G "$1" bytes); mbps=$(guest_result $PS_G "$1" mbps)
  [ -n "$sum" ] || { reason "the guest's $1 failed: $(guest_log $PS_G | grep "GUEST-RESULT $1" | tail -n1 | cut -d' ' -f3-)"; return 1; }
  [ "$sum" = "$2" ] && [ "$bytes" = "$3" ] || { reason "the guest's $1: $bytes bytes, sha256 $sum (want $3 bytes, $2)"; return 1; }
  PS_READ="$bytes bytes at $mbps MB/s, checksum OK"
}

ps_assign() {
  local out j
  xl domid $PS_G > /dev/null 2>&1 && { reason "a domain $PS_G exists already"; return 1; }
  usb_has_serial $LAB_STICK_PERS_SERIAL && { reason "$LAB_STICK_PERS_SERIAL is plugged in already"; return 1; }
  out=$(xenpvusb assign $PS_G $PS_MATCH 2>&1) || { reason "xenpvusb assign failed: $out"; return 1; }
  echo "$out"
  xenpvusb assignments
  j=$(xenpvusb assignments --json 2>&1)
  echo "$j" | tr -d ' \n' | grep -q "\"domain\":\"$PS_G\",\"vendor\":\"46f4\",\"product\":\"0001\",\"serial\":\"$LAB_STICK_PERS_SERIAL\"" \
    || { echo "$j"; reason "assignments --json does not show the rule"; return 1; }
  grep -v '^#' /etc/xenpvusb/assignments.conf
  reason "before the guest exists and before the stick is plugged in: '$out'; assignments --json lists it"
}

# QEMU plugs the stick in (EHCI port 3): dom0's usb-storage takes it (the domain does not exist yet),
# and usb-list-assignable-devices names the rule that claims it.
ps_plug() {
  local d b v p line
  lab_request replug pstick
  wait_for 60 usb_has_serial $LAB_STICK_PERS_SERIAL || { reason "dom0 did not see $LAB_STICK_PERS_SERIAL within 60 s"; return 1; }
  d=$(usb_dev_by_serial $LAB_STICK_PERS_SERIAL); b=${d##*/}; echo $b > $PS/busid1
  read -r v < $d/idVendor; read -r p < $d/idProduct
  [ "$v:$p" = $PS_VIDPID ] || { reason "the stick is $v:$p, not $PS_VIDPID"; return 1; }
  wait_for 60 usb_has_disk $LAB_STICK_PERS_SERIAL || { reason "dom0's usb-storage did not take $b (drivers: $(usb_drivers $b))"; return 1; }
  lab_sleep 3
  usb_bound_to $b usb-storage || { reason "$b left usb-storage with no domain to go to (drivers: $(usb_drivers $b))"; return 1; }
  line=$(xenpvusb usb-list-assignable-devices | grep "^$b ")
  echo "$line"
  case $line in *"[assigned to $PS_G:"*) ;; *) reason "usb-list-assignable-devices does not name the rule for $b: $line"; return 1;; esac
  reason "$b ($v:$p) with dom0's usb-storage as /dev/$(usb_disk_by_serial $LAB_STICK_PERS_SERIAL); ${line##*  }"
}

ps_create() {
  local t0 id
  cat > $PS/guest.sh <<'G'
# Each boot: wait for the stick (no command from dom0), read it whole, then do what dom0 asks
# (data/lab-cmdN = gone | reread | region | list). Results carry the domain id (boots differ).
# (Variables ps_*: the helpers of guest/init use n, k, sum and others as globals.)
ID=$(pvfront xs-read domid)
wait_usb_disk 600 || exit 0
usb_list | sed "s/^GUEST-USB /GUEST-USB-d$ID /"
read_all | sed "s/^GUEST-RESULT read /GUEST-RESULT read-d$ID /"
ps_n=1
while pvfront xs-wait data/lab-cmd$ps_n 3000; do
  ps_c=$(pvfront xs-read data/lab-cmd$ps_n)
  case $ps_c in
    gone) wait_usb_gone 300 ;;
    reread) read_again reread-d$ID 600; usb_list | sed "s/^GUEST-USB /GUEST-USB-d$ID /" ;;
    region)
      # the stick's MiB 8..11, on whatever disk it is now
      ps_k=0 ps_sum=
      while [ $ps_k -lt 5 ]; do
        ps_k=$((ps_k + 1))
        wait_usb_disk 60 || continue
        ps_sum=$(dd if=/dev/$DISK bs=1M skip=8 count=4 iflag=direct 2>/tmp/rg.err | sha256sum | cut -d' ' -f1)
        grep -q '4+0 records in' /tmp/rg.err && break
        cat /tmp/rg.err; ps_sum=; sleep 5
      done
      result "region-d$ID tries=$ps_k dev=$DISK sha256=${ps_sum:-none}" ;;
    list) usb_list | sed "s/^GUEST-USB /GUEST-USB$ps_n-d$ID /" ;;
  esac
  result "cmd$ps_n-d$ID $ps_c done"
  ps_n=$((ps_n + 1))
done
G
  t0=$(lab_now)
  guest_create $PS_G $PS/guest.sh 'usbctrl = [ "type=pv,version=2,ports=4" ]' || { pv_log 20; reason "xl create with usbctrl type=pv failed"; return 1; }
  figure persist-xl-create-s "$(lab_elapsed $t0)" s
  id=$(ps_domid); echo $id > $PS/domid; echo $id > $PS/domid1; echo 0 > $PS/cmdn
  xl usb-list $PS_G
  reason "xl create (usbctrl type=pv,version=2,ports=4): domain $id in $(lab_elapsed $t0) s"
}

# ps_sees TAG BUSID T0 WHAT: the daemon attached BUSID to the guest (by itself) and the guest read it whole.
ps_sees() {
  local tag=$1 b=$2 t0=$3 id port
  id=$(cat $PS/domid)
  guest_wait $PS_G "GUEST-RESULT $tag " 600 || { pv_log 30; xenpvusb usb-list $PS_G; reason "domain $id: no '$tag' result (the stick never came?)"; return 1; }
  figure persist-$4-seen-s "$(lab_elapsed $t0)" s
  ps_guest_read $tag $LAB_STICK_PERS_SHA256 $((16 << 20)) || return 1
  port=$(ps_port_of $b) || { xenpvusb usb-list $PS_G; reason "backend/vusb/$id/0 has no port with $b"; return 1; }
  xenpvusb usb-list $PS_G | tee $PS/usb-list
  grep -q "Port $port: .*$b" $PS/usb-list || { reason "usb-list $PS_G does not show $b on port $port"; return 1; }
  guest_log $PS_G | grep -q "GUEST-USB-d$id [^ ]* $PS_VIDPID " || { reason "the guest's sysfs has no $PS_VIDPID device"; return 1; }
  PS_SEEN="domain $id: $b on controller 0 port $port (usb-list), the guest read it whole: $PS_READ"
}

ps_first() {
  local t0; read -r t0 < $PS/t-create
  ps_sees read-d$(cat $PS/domid) "$(cat $PS/busid1)" $t0 create || return 1
  reason "no command given: $PS_SEEN"
}

ps_reboot() {
  local old new t0
  read -r old < $PS/domid
  t0=$(lab_now)
  xl reboot $PS_G || { reason "xl reboot failed"; return 1; }
  wait_for 180 eval 'new=$(ps_domid) && [ -n "$new" ] && [ "$new" != "$old" ]' || { xl list; reason "no new domain $PS_G within 180 s of xl reboot"; return 1; }
  new=$(ps_domid); echo $new > $PS/domid; echo $new > $PS/domid2; echo 0 > $PS/cmdn
  figure persist-reboot-newdomid-s "$(lab_elapsed $t0)" s
  ps_sees read-d$new "$(cat $PS/busid1)" $t0 reboot || return 1
  wait_for 30 eval "! xenstore-exists /local/domain/0/backend/vusb/$old 2>/dev/null" || { reason "backend/vusb/$old of the old domain is still there"; return 1; }
  reason "domain $old -> $new; $PS_SEEN; backend/vusb/$old gone"
}

# The stick is unplugged (QEMU device_del) and plugged into another EHCI port (device_add port=4).
ps_replug() {
  local id b1 b2 d t0
  read -r id < $PS/domid; read -r b1 < $PS/busid1
  ps_cmd gone
  lab_request unplug pstick
  wait_for 60 eval '! usb_has_serial $LAB_STICK_PERS_SERIAL' || { reason "$LAB_STICK_PERS_SERIAL still in dom0's sysfs 60 s after device_del"; return 1; }
  guest_wait $PS_G "GUEST-RESULT cmd$PS_N-d$id gone done" 120 || { reason "the guest's disk did not go"; return 1; }
  ps_cmd reread
  t0=$(lab_now)
  lab_request replug pstick-port4
  wait_for 60 usb_has_serial $LAB_STICK_PERS_SERIAL || { reason "dom0 did not see the stick again within 60 s"; return 1; }
  d=$(usb_dev_by_serial $LAB_STICK_PERS_SERIAL); b2=${d##*/}; echo $b2 > $PS/busid2
  [ "$b2" != "$b1" ] || { reason "the stick came back at the same bus id $b1"; return 1; }
  ps_sees reread-d$id $b2 $t0 replug || return 1
  reason "$b1 unplugged, back as $b2; $PS_SEEN"
}

ps_restart() {
  local id b pid0 pid port
  read -r id < $PS/domid; read -r b < $PS/busid2
  pid0=$(pv_pid)
  systemctl restart xenpvusbd || { pv_log 30; reason "systemctl restart failed: $(pv_show ActiveState,SubState,Result)"; return 1; }
  pid=$(pv_pid)
  [ "$pid" != "$pid0" ] && [ "${pid:-0}" -gt 0 ] || { reason "no new MainPID ($pid0 -> $pid)"; return 1; }
  wait_for 30 pv_journal_has "serving backend/vusb" || { pv_log 30; reason "the new daemon ($pid) does not serve"; return 1; }
  ps_cmd region
  guest_wait $PS_G "GUEST-RESULT region-d$id " 400 || { pv_log 30; reason "the guest did not read after the restart"; return 1; }
  [ "$(guest_result $PS_G region-d$id sha256)" = "$LAB_STICK_PERS_SHA256_8M4" ] \
    || { pv_log 30; reason "the guest's read after the restart: $(guest_log $PS_G | grep "GUEST-RESULT region-d$id " | cut -d' ' -f3-)"; return 1; }
  port=$(ps_port_of $b) || { xenpvusb usb-list $PS_G; reason "after the restart no port of backend/vusb/$id/0 holds $b"; return 1; }
  xenpvusb usb-list $PS_G | tee $PS/usb-list
  grep -q "Port $port: .*$b" $PS/usb-list || { reason "usb-list does not show $b on port $port after the restart"; return 1; }
  usb_bound_to $b usb-storage && { reason "dom0's usb-storage has $b after the restart"; return 1; }
  reason "MainPID $pid0 -> $pid; $b still on port $port; the guest read MiB 8-11: $(guest_log $PS_G | grep "GUEST-RESULT region-d$id " | tail -n1 | cut -d' ' -f3-4), checksum OK"
}

# A broad rule (interface class 03, HID, no force) for the guest: dom0's keyboard and tablet, which
# have input devices in dom0, must stay with dom0's usbhid.
ps_broad() {
  local id k kb='' tb='' out p
  read -r id < $PS/domid
  for k in /sys/bus/usb/devices/*; do
    [ -f $k/product ] || continue
    read -r p < $k/product
    case $p in *Keyboard*) kb=${k##*/};; *Tablet*) tb=${k##*/};; esac
  done
  [ -n "$kb" ] || { reason "no keyboard in dom0's sysfs"; return 1; }
  usb_bound_to $kb usbhid || { reason "the keyboard $kb is not with usbhid before the rule (drivers: $(usb_drivers $kb))"; return 1; }
  echo "$kb $tb" > $PS/hid
  out=$(xenpvusb assign $PS_G class=03 2>&1) || { reason "xenpvusb assign $PS_G class=03 failed: $out"; return 1; }
  echo "$out"
  out=$(xenpvusb apply $PS_G 2>&1); echo "apply: $out" | tee $PS/apply
  lab_sleep 3
  xenpvusb usb-list $PS_G | tee $PS/usb-list
  for k in $kb $tb; do
    grep -q " $k " $PS/usb-list && { reason "usb-list $PS_G shows dom0's HID device $k"; return 1; }
    grep -q " $k\$" $PS/usb-list && { reason "usb-list $PS_G shows dom0's HID device $k"; return 1; }
    usb_bound_to $k usbhid || { reason "$k left usbhid (drivers: $(usb_drivers $k))"; return 1; }
  done
  ps_cmd list
  guest_wait $PS_G "GUEST-RESULT cmd$PS_N-d$id list done" 120 || { reason "the guest did not list its devices"; return 1; }
  guest_log $PS_G | grep "GUEST-USB$PS_N-d$id "
  guest_log $PS_G | grep -q "GUEST-USB$PS_N-d$id [^ ]* 0627:0001 " && { reason "the guest has a 0627:0001 (QEMU HID) device"; return 1; }
  xenpvusb unassign $PS_G class=03 || { reason "xenpvusb unassign $PS_G class=03 failed"; return 1; }
  reason "keyboard $kb${tb:+ and tablet $tb} still with usbhid, not in usb-list or the guest; apply said: $(head -n 3 $PS/apply | tr '\n' ' ')"
}

ps_cleanup() {
  local id g ok=1
  xenpvusb unassign $PS_G 2>&1
  id=$(ps_domid)
  guest_destroy $PS_G > /dev/null
  [ -n "$id" ] && { wait_for 30 eval "! xenstore-exists /local/domain/0/backend/vusb/$id 2>/dev/null" || { echo "backend/vusb/$id still there"; ok=0; }; }
  if usb_has_serial $LAB_STICK_PERS_SERIAL; then
    lab_request unplug pstick
    wait_for 60 eval '! usb_has_serial $LAB_STICK_PERS_SERIAL' || { echo "$LAB_STICK_PERS_SERIAL still plugged in"; ok=0; }
  fi
  for g in $(cat $PS/hid 2>/dev/null); do usb_bound_to $g usbhid || { echo "$g not with usbhid: $(usb_drivers $g)"; ok=0; }; done
  grep -v '^\s*#' /etc/xenpvusb/assignments.conf | grep -q '[^[:space:]]' && { echo "rules left: $(cat /etc/xenpvusb/assignments.conf)"; ok=0; }
  [ $ok = 1 ] || { reason "not clean (see above)"; return 1; }
  reason "rules removed, $PS_G destroyed, backend/vusb/${id:-?} gone, the stick unplugged, dom0's HID devices with usbhid"
}

# ps_field JSON KEY: PS_V = the string value of KEY in one journal JSON record ("" if none). No fork.
ps_field() { local r=$1 k=$2; PS_V=; r=${r#*\""$k"\":\"}; [ "$r" = "$1" ] && return 0; PS_V=${r%%\"*}; }

# The audit records of this boot about the guest (DOMAIN=persg): one line per record, counted per action,
# checked for the fields each event must carry; the daemon's own log lines of them (audit <Action>: ...,
# and any "the journal did not take an audit record") are printed beside them. (The stick's first plug-in, with no domain to go to, changes no guest's
# port: no record is asked for it.)
ps_journal() {
  local i a n rec f line why='' bad='' b1 b2 d1 d2 hid kb
  read -r b1 < $PS/busid1; read -r b2 < $PS/busid2 2>/dev/null
  read -r d1 < $PS/domid1; read -r d2 < $PS/domid2 2>/dev/null; read -r hid < $PS/hid 2>/dev/null; kb=${hid%% *}
  : > $PS/audit
  i=0
  for a in $PS_ACTIONS; do
    i=$((i + 1))
    journalctl -b MESSAGE_ID=$PS_MSGID$i DOMAIN=$PS_G -o json --no-pager \
      --output-fields=MESSAGE_ID,XENPVUSB_ACTION,DOMAIN,DOMID,DEVID,PORT,BUSID,VID_PID,SERIAL,RULE,REASON,_SYSTEMD_UNIT,_PID,MESSAGE 2>/dev/null > $PS/j-$a
    n=0
    while IFS= read -r rec; do
      [ -n "$rec" ] || continue
      n=$((n + 1))
      line="$a:"
      for f in XENPVUSB_ACTION DOMAIN DOMID DEVID PORT BUSID VID_PID SERIAL RULE REASON _SYSTEMD_UNIT; do ps_field "$rec" $f; line="$line $f=${PS_V// /_}"; done
      echo "$line" >> $PS/audit
      ps_field "$rec" XENPVUSB_ACTION; [ "$PS_V" = $a ] || bad="$bad; a $a record (MESSAGE_ID ..$i) has XENPVUSB_ACTION=$PS_V"
      ps_field "$rec" _SYSTEMD_UNIT; [ "$PS_V" = xenpvusbd.service ] || bad="$bad; a $a record not from xenpvusbd.service"
    done < $PS/j-$a
    figure persist-audit-$a "$n" records
    why="$why $a=$n"
  done
  sed 's/^/AUDIT /' $PS/audit
  echo "--- the daemon's log lines of its audit records (journalctl -u xenpvusbd -b, events 250 and 251)"
  journalctl -b -u xenpvusbd -o short-monotonic --no-pager 2>/dev/null | grep -E 'Audit\[25[01]\]' | grep -E 'persg|journal did not take'
  # what each part of the scenario must have left
  need() { # DESCRIPTION PATTERN...: a record with every pattern
    local d=$1 l p ok; shift
    while IFS= read -r l; do
      ok=1; for p; do case " $l " in *" $p "*) ;; *) ok=0; break;; esac; done
      [ $ok = 1 ] && return 0
    done < $PS/audit
    bad="$bad; no $d record"
  }
  local st="DOMAIN=$PS_G VID_PID=$PS_VIDPID SERIAL=$LAB_STICK_PERS_SERIAL"
  need "attach (xl create, domain $d1)" attach: $st DOMID=$d1 BUSID=$b1
  [ -n "$d2" ] && need "attach (after xl reboot, domain $d2)" attach: $st DOMID=$d2 BUSID=$b1
  [ -n "$d2" ] && need "detach (domain $d1 gone at the reboot)" detach: DOMAIN=$PS_G DOMID=$d1 BUSID=$b1
  [ -n "$b2" ] && need "unplug ($b1)" unplug: BUSID=$b1 VID_PID=$PS_VIDPID SERIAL=$LAB_STICK_PERS_SERIAL
  # back on another port, under another bus id: an attach (the rule's), or a plug ("plugged in, attached")
  if [ -n "$b2" ]; then
    grep -E "^(attach|plug): " $PS/audit | grep " DOMID=$d2 " | grep " BUSID=$b2 " | grep " SERIAL=$LAB_STICK_PERS_SERIAL " | grep -q " DOMAIN=$PS_G " \
      || bad="$bad; no attach or plug record of $b2 to domain $d2 (after the replug)"
  fi
  [ -n "$b2" ] && need "detach (the cleanup's destroy)" detach: DOMAIN=$PS_G DOMID=$d2 BUSID=$b2
  if [ -n "$kb" ]; then
    grep -E "^(refuse|policy): " $PS/audit | grep " BUSID=$kb " | grep -q " VID_PID=0627:0001 " \
      || bad="$bad; no refuse or policy record for the keyboard $kb (0627:0001)"
    grep -E "^(refuse|policy): " $PS/audit | grep " BUSID=$kb " | grep -q " RULE=[^ ]*class=03" \
      || bad="$bad; the keyboard's refuse/policy record does not name the rule (class=03)"
  fi
  # RULE must name the stick's rule on every record about the stick that is an attach
  grep "^attach: .* SERIAL=$LAB_STICK_PERS_SERIAL " $PS/audit | grep -v " RULE=[^ ]*serial=$LAB_STICK_PERS_SERIAL" | head -n 1 | grep -q . \
    && bad="$bad; an attach record of the stick without its rule in RULE"
  if [ -n "$bad" ]; then
    # whether journald dropped or suppressed anything this boot
    journalctl -b _COMM=systemd-journal -o short-monotonic --no-pager 2>/dev/null | grep -iE 'suppress|drop|missed|rotat|vacuum' | tail -n 10
    reason "records:$why${bad}"; return 1
  fi
  reason "records:$why; every step has its record with DOMAIN/DOMID/BUSID/VID_PID/SERIAL/RULE"
}

if stage daemon -t 120 pv_ensure; then
  if stage assign -t 60 ps_assign && stage plug -t 150 ps_plug; then
    lab_now > $PS/t-create
    if stage create -t 240 ps_create && stage first-attach -t 660 ps_first; then
      if stage reboot -t 800 ps_reboot; then
        stage replug -t 800 ps_replug && stage daemon-restart -t 480 ps_restart
        stage broad-rule -t 180 ps_broad
      fi
    fi
  fi
  stage cleanup -t 180 ps_cleanup
  stage journal -t 120 ps_journal
  pv_log 30
fi
