# Scenario "audio": isochronous OUT with a real class driver. QEMU's usb-audio (full speed, UAC1,
# 48 kHz stereo S16, one 192-byte iso OUT packet a millisecond) is plugged on an xHCI controller of its
# own for this scenario (LAB-REQUEST replug audio); QEMU's wav audiodev writes what the device plays
# to tests/lab/out/audio.wav on the host, unchanged (no mixing engine: no volume, no resampling).
# A player of a countable pattern (isoaudio play, tests/lab/guest/audio/isoaudio.c: ALSA's kernel PCM
# interface, no alsa-lib; every frame carries its index, so every lost, repeated or reordered 1 ms
# packet shows) plays 4 s (4000 packets) plus 200 ms of silence, and keeps the device open 3 s more
# (QEMU drops what is still in the device's buffer when the driver closes the stream, and its wav
# writer lags: it takes 44100 frames a second; a second run without that lost the last 33 packets).
# The player free-wheels, which keeps snd-usb-audio out of its low-latency mode: in that mode Linux 6.1
# can submit two URBs in the other order than their data (seen once natively: packets 12-17 and 18-23
# swapped), which is the driver's race, not the transport's. It plays:
# - first in dom0 through dom0's own snd-usb-audio (native-play): the chain from player to file works
#   and the checker is right, independent of our daemon;
# - then in a PV guest through xen-hcd, xenpvusbd and usbfs (pvusb-play).
# After each, the host checks the wav file (LAB-REQUEST audiocheck, run-lab: isoaudio check) and
# records the verdict stages audio-native / audio-pvusb: every packet must have arrived exactly once, in
# order, bit-exact, with nothing but silence around the stream (tolerance: no lost packet; QEMU's
# device buffer is set larger than a clip, so the emulator drops none of its own). The play stages only
# say the player and the driver were content: snd-usb-audio does not look at the status of its
# playback packets, so a transport that fails every packet still "plays" in real time.

AU=$LAB_TMP/audio
mkdir -p $AU
AU_SERIAL=LABAUDIO01
AU_FRAMES=192000   # 4 s at 48 kHz = 4000 packets of 48 frames
AU_STREAM_NATIVE=1
AU_STREAM_PVUSB=2
AU_BAD='cannot submit|cannot set|usb_set_interface failed|urb status|error|fail|timeout|xrun|underrun'

# au_card BUSID: the ALSA card number of the device's first interface ("" if none; builtins only).
au_card() {
  local c
  for c in /sys/bus/usb/devices/$1:1.0/sound/card*; do [ -e "$c" ] && { echo "${c##*card}"; return 0; }; done
  return 1
}
au_has_pcm() { local c; c=$(au_card "$1") && [ -e /dev/snd/pcmC${c}D0p ]; }

au_plug() {
  local d b sp drv
  if ! usb_has_serial $AU_SERIAL; then
    lab_request replug audio
    wait_for 60 usb_has_serial $AU_SERIAL || { reason "no USB device with serial $AU_SERIAL 60 s after the device_add request"; return 1; }
  fi
  d=$(usb_dev_by_serial $AU_SERIAL); b=${d##*/}; echo $b > $AU/busid
  read -r sp < $d/speed
  wait_for 60 au_has_pcm $b || { reason "$b: no ALSA playback device in dom0 within 60 s (drivers: $(usb_drivers $b))"; return 1; }
  drv=$(usb_drivers $b); echo "$drv" > $AU/dom0-drivers
  reason "QEMU usb-audio $b $(cat $d/idVendor):$(cat $d/idProduct) \"$(cat $d/product)\" ${sp}M; dom0 drivers: $drv; card $(au_card $b) /dev/snd/pcmC$(au_card $b)D0p"
}

# au_parse LINE: an isoaudio-play line's KEY=value pairs into variables P_KEY.
au_parse() { local k n; for k in $1; do case $k in *=*) n=${k%%=*}; printf -v "P_${n//-/_}" '%s' "${k#*=}";; esac; done; }

au_native() {
  local b c l
  read -r b < $AU/busid
  c=$(au_card $b) || { reason "no card for $b"; return 1; }
  cat /proc/asound/card$c/stream0 2>/dev/null | sed 's/^/  /'
  l=$(/payload/isoaudio play -d /dev/snd/pcmC${c}D0p -s $AU_STREAM_NATIVE -n $AU_FRAMES -L 3 -T 120)
  echo "$l"
  au_parse "$l"
  # the host checks the wav file (whatever the player said: its result is on this stage's line)
  lab_request audiocheck audio/audio-native native $AU_STREAM_NATIVE $AU_FRAMES 0
  [ "${P_result:-}" = ok ] || { reason "dom0's player: ${l:-no output}"; return 1; }
  figure iso-out-native-play-s "$(awk -v a=$P_write_s -v b=$P_drain_s 'BEGIN { printf "%.2f", a + b }')" s
  reason "dom0 card $c: $P_frames frames (+$P_tail silence) of stream $AU_STREAM_NATIVE played in $P_write_s + $P_drain_s s (write + drain; then open $P_linger_s s more), buffer $P_buffer, period $P_period, xruns $P_xruns; the host checks the wav (stage audio-native)"
}

au_guest() {
  cat > $AU/guest.sh <<G
AU_FRAMES=$AU_FRAMES AU_STREAM=$AU_STREAM_PVUSB AU_BAD='$AU_BAD'
G
  cat >> $AU/guest.sh <<'G'
n=0
while [ ! -e /dev/snd/pcmC0D0p ] && [ $n -lt 400 ]; do sleep 1; n=$((n + 1)); done
[ -e /dev/snd/pcmC0D0p ] || { result "audio-ready none"; exit 0; }
result "audio-ready dev=/dev/snd/pcmC0D0p waited=${n}s card=$(cat /proc/asound/card0/id 2>/dev/null)"
cat /proc/asound/card0/stream0 2>/dev/null
echo "LAB-MARK audio play" > /dev/kmsg
l=$(isoaudio play -d /dev/snd/pcmC0D0p -s $AU_STREAM -n $AU_FRAMES -L 3 -T 240)
echo "$l"
result "play ${l#isoaudio-play }"
dmesg | sed -n '/LAB-MARK audio play/,$p' > /tmp/k-play.txt
result "play-klog lines=$(wc -l < /tmp/k-play.txt) bad=$(grep -ciE "$AU_BAD" /tmp/k-play.txt)"
grep -iE "$AU_BAD" /tmp/k-play.txt | head -n 20
n=0
while [ -e /dev/snd/pcmC0D0p ] && [ $n -lt 200 ]; do sleep 1; n=$((n + 1)); done
if [ -e /dev/snd/pcmC0D0p ]; then result "audio-gone no"; else result "audio-gone after=${n}s"; fi
G
  GUEST_EXTRA_MODULES="soundcore snd snd_timer snd_pcm snd_hwdep snd_seq_device snd_rawmidi snd_usbmidi_lib mc snd_usb_audio" \
    guest_create aug $AU/guest.sh || { reason "xl create failed"; return 1; }
  guest_wait aug 'GUEST-BEGIN' 120 || { reason "guest did not reach its script"; return 1; }
  xl domid aug > $AU/domid
  guest_log aug | grep -q GUEST-HCD-LOADED || { reason "xen-hcd not loaded in the guest"; return 1; }
  guest_log aug | grep -q '^GUEST-MODULE snd_usb_audio loaded' \
    || { reason "snd_usb_audio not loaded in the guest: $(guest_log aug | grep -E '^GUEST-MODULE (snd|soundcore|mc)' | grep -v loaded | head -n 3 | tr '\n' ';')"; return 1; }
  reason "guest up (domain $(cat $AU/domid)), xen-hcd and snd-usb-audio (with the ALSA core) loaded"
}

au_hc() {
  xenpvusb usb-hc-create aug 2 8 || { pv_log 20; reason "usb-hc-create failed"; return 1; }
  wait_for 60 sh -c "xenstore-read /local/domain/0/backend/vusb/$(cat $AU/domid)/0/state | grep -qx 4" \
    || { pv_log 20; reason "backend did not reach Connected with the guest's xen-hcd"; return 1; }
  reason "controller 0 connected to xen-hcd"
}

au_attach() {
  local b t0 l
  read -r b < $AU/busid
  t0=$(lab_now); echo $t0 > $AU/t-attach
  xenpvusb usb-attach aug 0 1 $b || { pv_log 20; reason "usb-attach aug 0 1 $b failed"; return 1; }
  xenpvusb usb-list aug | tee $AU/list
  grep -q "Port 1: .* $b " $AU/list || { reason "usb-list does not show $b on port 1"; return 1; }
  guest_wait aug 'GUEST-RESULT audio-ready ' 420 || { pv_log 30; reason "the guest reported no sound card within 420 s"; return 1; }
  l=$(guest_log aug | grep -m1 'GUEST-RESULT audio-ready ')
  case $l in *"audio-ready none"*) pv_log 30; reason "no sound card in the guest"; return 1;; esac
  reason "$b -> port 1 (dom0 drivers now: $(usb_drivers $b | grep . || echo none)); guest: ${l#GUEST-RESULT audio-ready } ($(lab_elapsed $t0) s after usb-attach)"
}

au_pvusb() {
  local l kl b why=
  read -r b < $AU/busid
  guest_wait aug 'GUEST-RESULT play ' 300 || { pv_log 40; reason "the guest's player did not finish within 300 s"; return 1; }
  l=$(guest_log aug | grep -m1 'GUEST-RESULT play ')
  lab_request audiocheck audio/audio-pvusb pvusb $AU_STREAM_PVUSB $AU_FRAMES 0
  guest_wait aug 'GUEST-RESULT play-klog ' 30
  kl=$(guest_log aug | grep -m1 'GUEST-RESULT play-klog ')
  echo "--- the guest's kernel log from the play on:"; guest_log aug | sed -n '/LAB-MARK audio play$/,$p' | grep -v '^GUEST-' | head -n 40
  echo "--- the daemon's journal since the attach:"
  journalctl -u xenpvusbd --since "@$(( $(cat $AU/t-attach) / 1000000 - 1 ))" -o short-monotonic --no-pager 2>&1 | tail -n 40
  au_parse "${l#GUEST-RESULT play }"
  [ "${P_result:-}" = ok ] || why="the guest's player: ${l#GUEST-RESULT play }; "
  case $kl in *" bad=0"*) ;; *) why="$why""the guest's kernel log: ${kl#GUEST-RESULT }; ";; esac
  if [ -n "$why" ]; then reason "$why"; return 1; fi
  figure iso-out-pvusb-play-s "$(awk -v a=$P_write_s -v b=$P_drain_s 'BEGIN { printf "%.2f", a + b }')" s
  reason "guest: $P_frames frames (+$P_tail silence) of stream $AU_STREAM_PVUSB played in $P_write_s + $P_drain_s s (write + drain; then open $P_linger_s s more), buffer $P_buffer, period $P_period, xruns $P_xruns; no complaint in its kernel log; the host checks the wav (stage audio-pvusb)"
}

au_detach() {
  local b t0 n=0 dt want
  read -r b < $AU/busid
  t0=$(lab_now)
  xenpvusb usb-detach aug 0 1 || { pv_log 20; reason "usb-detach failed"; return 1; }
  until usb_bound_to $b snd-usb-audio; do
    n=$((n + 1))
    [ $n -gt 1200 ] && { pv_log 30; reason "snd-usb-audio not bound to $b in dom0 within 60 s (drivers: $(usb_drivers $b))"; return 1; }
    lab_sleep 0.05
  done
  dt=$(lab_elapsed $t0)
  figure audio-handback-s $dt s
  # snd-usb-audio binds the control interface and claims the streaming one from its probe: both, as at plug time
  read -r want < $AU/dom0-drivers
  wait_for 10 eval '[ "$(usb_drivers $b)" = "$want" ]' || { reason "dom0's drivers on $b after the detach: $(usb_drivers $b), at plug time: $want"; return 1; }
  wait_for 10 au_has_pcm $b || { reason "snd-usb-audio has $b again, but dom0 has no playback device for it"; return 1; }
  guest_wait aug 'GUEST-RESULT audio-gone ' 220 || { reason "snd-usb-audio has $b again after $dt s, but the guest did not report its card gone"; return 1; }
  guest_log aug | grep -q 'GUEST-RESULT audio-gone no' && { reason "the guest's card is still there"; return 1; }
  reason "snd-usb-audio bound to $b in dom0 again $dt s after usb-detach began (drivers: $(usb_drivers $b)), /dev/snd/pcmC$(au_card $b)D0p; the guest's card gone"
}

# Whatever happened: no guest, the device unplugged from QEMU (which closes the wav file).
au_cleanup() {
  local id
  if [ -f $AU/domid ]; then
    read -r id < $AU/domid
    # no usb-hc-destroy: the domain's death tears the controller down (scenario destroy checks that path)
    guest_destroy aug > /dev/null
    wait_for 15 eval "! xenstore-exists /local/domain/0/backend/vusb/$id 2>/dev/null" \
      || { echo "audio: backend/vusb/$id still there 15 s after its domain died; removing it by hand:"; xenstore-ls -f /local/domain/0/backend/vusb/$id | head -n 20; xenstore-rm /local/domain/0/backend/vusb/$id; }
  else
    guest_destroy aug > /dev/null 2>&1
  fi
  if usb_has_serial $AU_SERIAL; then
    lab_request unplug audio
    wait_for 60 eval '! usb_has_serial $AU_SERIAL' || { reason "the audio device is still in dom0 60 s after device_del"; return 1; }
  fi
  reason "no guest; QEMU's usb-audio unplugged"
}

if stage daemon -t 120 pv_ensure; then
  if stage plug -t 120 au_plug; then
    stage native-play -t 200 au_native
    if stage guest-create -t 240 au_guest && stage hc-create -t 120 au_hc && stage attach -t 480 au_attach; then
      stage pvusb-play -t 400 au_pvusb
      stage detach -t 300 au_detach
    fi
  fi
  stage cleanup -t 180 au_cleanup
  pv_log 20
fi
