# tests/lab/lab.mk -- the real-Xen lab. Included by the root Makefile (`include tests/lab/lab.mk`);
# standalone: make -f tests/lab/lab.mk lab [SCENARIO=boot]
# Boots Xen 4.17 + a Debian dom0 under QEMU (TCG) and runs the scenarios in tests/lab/scenarios/.
# Including this file does not change the including Makefile's default goal.
LAB_SAVED_DEFAULT_GOAL := $(.DEFAULT_GOAL)
LAB_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
SCENARIO ?= all

.PHONY: lab lab-clean lab-clean-cache
lab:
	$(LAB_DIR)/run-lab $(SCENARIO)

# Remove the run outputs (serial logs, payload); the image cache stays.
lab-clean:
	rm -rf $(LAB_DIR)/out

# Remove the cached images (the next `make lab` rebuilds them, about 4 min).
lab-clean-cache:
	rm -rf /var/cache/xenpvusb-lab

.DEFAULT_GOAL := $(LAB_SAVED_DEFAULT_GOAL)
