# XenPvUsb — userspace PVUSB backend for Xen dom0.
#   make run     the daemon on the built-in simulated Xen host, with a guest using an emulated stick and keyboard
#   make test    every test; ends with "N passed, N failed"
#   make bench   URB throughput and latency through the real backend code on the simulated host (BENCH=polling ... for some sections)
#   make fuzz    10^6 hostile requests, ring and xenstore games through the real backend (FUZZ_REQUESTS, FUZZ_SEED)
#   make publish NativeAOT single binaries of xenpvusbd and xenpvusb (no .NET needed on the dom0), the shim, the unit
#   make check   formatting (dotnet format, clang-format) and the shim's exported ABI
#   make deb     the Debian package out/deb/xenpvusb_<version>_amd64.deb (make deb-lint: lintian on it)
#   make lab     real Xen under QEMU (see tests/lab/README.md)

CONFIG ?= Release
DOTNET ?= dotnet
export DOTNET_CLI_TELEMETRY_OPTOUT := 1
export DOTNET_NOLOGO := 1
export DOTNET_SKIP_FIRST_TIME_EXPERIENCE := 1

APT_PACKAGES := libxen-dev gcc make clang-format zlib1g-dev clang
OUT := out
DAEMON_BIN := src/XenPvUsb.Daemon/bin/$(CONFIG)/net10.0/xenpvusbd
CLI_BIN := src/XenPvUsb.Cli/bin/$(CONFIG)/net10.0/xenpvusb
IMAGE ?=

.PHONY: all deps native build run test bench fuzz publish check clean lab deb deb-lint

all: build

# Installs what the build needs from Debian (only what is missing), and checks for the .NET SDK.
deps:
	@command -v $(DOTNET) >/dev/null || { echo "the .NET 10 SDK (dotnet) is required"; exit 1; }
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

native: deps
	$(MAKE) -C native

build: native
	$(DOTNET) build XenPvUsb.sln -c $(CONFIG) -nologo -clp:NoSummary -v:q

run: build
	$(DAEMON_BIN) --demo --cli $(CLI_BIN) $(if $(IMAGE),--image $(IMAGE))

test: build
	@rm -rf $(OUT)/test-results
	@set +e; $(DOTNET) test tests/XenPvUsb.Tests -c $(CONFIG) --no-build -nologo \
		--logger "trx;LogFileName=results.trx" --results-directory $(OUT)/test-results -v:q; rc=$$?; \
	trx=$$(ls $(OUT)/test-results/*.trx 2>/dev/null | head -1); \
	if [ -z "$$trx" ]; then echo "0 passed, 1 failed"; exit 1; fi; \
	passed=$$(grep -o '<Counters [^>]*' $$trx | grep -o 'passed="[0-9]*"' | grep -o '[0-9]*'); \
	failed=$$(grep -o '<Counters [^>]*' $$trx | grep -o ' failed="[0-9]*"' | grep -o '[0-9]*'); \
	errors=$$(grep -o '<Counters [^>]*' $$trx | grep -o ' error="[0-9]*"' | grep -o '[0-9]*'); \
	failed=$$(( $${failed:-0} + $${errors:-0} )); \
	if [ $$rc -ne 0 ] && [ $$failed -eq 0 ]; then failed=1; fi; \
	echo "$${passed:-0} passed, $$failed failed"; \
	[ $$failed -eq 0 ]

# BENCH="polling scaling events isolation": only those sections (default: all).
BENCH ?=
bench: build
	$(DOTNET) run --project tests/XenPvUsb.Bench -c Release --no-build -- $(BENCH)

# Needs only the .NET SDK and NuGet restore (no native shim, no Debian packages): the simulated host is in-process.
FUZZ_REQUESTS ?= 1000000
FUZZ_SEED ?=
fuzz:
	$(DOTNET) build tests/XenPvUsb.Fuzz -c $(CONFIG) -nologo -clp:NoSummary -v:q
	$(DOTNET) tests/XenPvUsb.Fuzz/bin/$(CONFIG)/net10.0/XenPvUsb.Fuzz.dll --requests $(FUZZ_REQUESTS) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

publish: deps
	$(DOTNET) publish src/XenPvUsb.Daemon -c Release -r linux-x64 -o $(OUT)/publish -nologo -v:q
	$(DOTNET) publish src/XenPvUsb.Cli -c Release -r linux-x64 -o $(OUT)/publish -nologo -v:q
	$(MAKE) -C native
	cp native/build/libxenpvusb-shim.so.1 $(OUT)/publish/
	cp packaging/systemd/xenpvusbd.service $(OUT)/publish/
	@ls -la $(OUT)/publish/xenpvusbd $(OUT)/publish/xenpvusb $(OUT)/publish/libxenpvusb-shim.so.1 $(OUT)/publish/xenpvusbd.service

# The Debian package: dpkg-deb over the NativeAOT binaries, the shim, the unit, the man pages, ...
# (packaging/deb/build-deb.sh). Its version is Directory.Build.props's <Version>, plus
# +git<commits>.<commit> in a git checkout; DEB_VERSION=... overrides it, DEB_MAINTAINER=... the maintainer.
VERSION := $(shell sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' Directory.Build.props)
DEB := $(OUT)/deb
apt_install = missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

deb: publish
	@$(call apt_install,dpkg-dev binutils)
	packaging/deb/build-deb.sh $(OUT)/publish $(DEB) $(VERSION)

# Prints every tag, E:, W:, I: and the overridden ones (O:, with the reason in N: lines), and fails on
# an E: tag. (lintian's own --fail-on error also fails on overridden errors once --show-overrides is given.)
deb-lint: deb
	@$(call apt_install,lintian)
	@tags=$$(lintian --fail-on none --display-info --show-overrides $(DEB)/xenpvusb_*_amd64.deb) \
		|| { echo "deb-lint: lintian did not run"; exit 1; }; \
	printf '%s\n' "$$tags"; \
	count() { printf '%s\n' "$$tags" | grep -c "^$$1: " || true; }; \
	echo "deb-lint: $$(count E) errors, $$(count W) warnings, $$(count I) infos, $$(count O) overridden"; \
	[ "$$(count E)" -eq 0 ]

check: build
	$(DOTNET) format XenPvUsb.sln --verify-no-changes -v:q
	$(MAKE) -C native check
	$(DOTNET) test tests/XenPvUsb.Tests -c $(CONFIG) --no-build -nologo -v:q --filter "FullyQualifiedName~XenPvUsb.Tests.Interop"

clean:
	rm -rf $(OUT)
	$(MAKE) -C native clean
	$(DOTNET) clean XenPvUsb.sln -v:q >/dev/null

# The lab boots dom0 with the Debian package installed (run-lab: dpkg -i into a per-run copy of the
# dom0 image; lintian on it as a stage) and carries the package in its payload.
lab: deb
lab: export LAB_DEB := $(abspath $(DEB))

-include tests/lab/lab.mk
