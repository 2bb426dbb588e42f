# Scenario "crashtest" (not in ALL): checks the lab's own crash detection. A bash in dom0 overflows its
# stack, the kernel logs "segfault at", and the host must FAIL the run with a crash signature.
# Expected result: this scenario's stage PASSes and the run as a whole FAILs (host/crash-scan).
provoke_segfault() {
  bash -c 'ulimit -s 256; f() { f; }; f' 2>/dev/null
  local rc=$?
  [ $rc = 139 ] || { reason "bash exited $rc, not by SIGSEGV"; return 1; }
  reason "bash died by SIGSEGV; the host must now report a crash signature"
}
stage segfault -t 120 provoke_segfault
