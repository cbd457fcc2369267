# SPDX-License-Identifier: GPL-2.0
# tcm_ha: top-level targets. The kernel build itself reads ./Kbuild.
#
#   make            build tcm_ha.ko against the cached test kernel (or KDIR=...)
#   make install    (= modules_install) install tcm_ha.ko through the kernel's
#                   modules_install [KDIR=... INSTALL_MOD_PATH= or DESTDIR=,
#                   INSTALL_MOD_DIR=]
#   make setup      install tools, build the test kernel and guest image (cached)
#   make check      host unit tests (with FUZZ_SECS=60 s of mutation fuzzing)
#                   + VM tests (T=<pattern> selects tests)
#   make fuzz       cargo-fuzz targets, FUZZ_SECS each (nightly, installed on use)
#   make demo       boot two nodes, load the module, show its state
#   make soak       DURATION=30m MODE=2: fio with verification through both
#                   nodes, a role switch or a link flap per cycle, a summary
#   make bench      benchmarks (bench-local: ha vs iblock ratios on one node;
#                   bench-pair: secondary vs primary path, modes 2 and 1;
#                   bench-ha: failover, link-up and PR timings; bench-report:
#                   bench/results.json, .md and .png)
#   make install-targetcli [DESTDIR=/]  install targetcli-ha (tools/targetcli-ha)
#                   and its boot unit tcm-ha.service (not enabled)
#   make clean

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
export RUSTUP_TOOLCHAIN ?= 1.95.0
export LIBCLANG_PATH ?= /usr/lib/llvm-19/lib

# KDIR defaults to the cached test kernel. Its path depends on the kernel
# source version, known only once `make setup` has fetched it, so recipes
# resolve it when they run (a cold cache builds it first).
ifeq ($(origin KDIR),undefined)
OWN_KERNEL := 1
KDIR_SH := $$(scripts/setup.sh --print-kdir)
else
OWN_KERNEL :=
KDIR_SH := $(KDIR)
endif
PYTHON ?= /usr/bin/python3
T ?=

.PHONY: all module setup kernel check check-full host-test lint vm-test demo soak bench bench-local bench-pair bench-ha bench-report install modules_install fuzz \
	install-targetcli clean

all: module

setup:
	scripts/setup.sh all

kernel:
ifeq ($(OWN_KERNEL),1)
	@scripts/setup.sh kernel
endif

module: kernel
	@kdir="$(KDIR_SH)"; \
	test -f "$$kdir/Makefile" || { echo "tcm_ha: KDIR=$$kdir is not a kernel build tree"; exit 1; }; \
	grep -qx 'CONFIG_RUST=y' "$$kdir/.config" 2>/dev/null || { \
		echo "tcm_ha: KDIR=$$kdir has no CONFIG_RUST=y: tcm_ha needs a Rust-enabled 7.x kernel tree"; exit 1; }; \
	test -f "$$kdir/rust/libkernel.rmeta" || { \
		echo "tcm_ha: KDIR=$$kdir lacks the Rust metadata (rust/libkernel.rmeta): build that tree"; \
		echo "        with 'make' (distribution header packages do not ship it), or use 'make setup'"; exit 1; }; \
	$(MAKE) -C "$$kdir" M="$(CURDIR)" modules

# The kernel's modules_install for M=: /lib/modules/<release>/updates/tcm_ha.ko
# (INSTALL_MOD_DIR, default updates in current kernels, extra in older ones)
# under INSTALL_MOD_PATH (default: DESTDIR when that is not /), then depmod
# (the kernel's depmod.sh skips it for a tree without System.map).
INSTALL_MOD_PATH ?= $(patsubst %/,%,$(filter-out /,$(DESTDIR)))

modules_install: module
	@kdir="$(KDIR_SH)"; \
	$(MAKE) -C "$$kdir" M="$(CURDIR)" $(if $(INSTALL_MOD_PATH),INSTALL_MOD_PATH="$(INSTALL_MOD_PATH)") modules_install

install: modules_install

# The host tests include a bounded mutation fuzzer of the interlink codec and
# handshake (FUZZ_SECS seconds; inputs that panic land in host/fuzz/regressions/)
# and the self-test of the interlink fault proxy (tests/linkfault.py).
FUZZ_SECS ?= 60

host-test:
	scripts/check-kdir.sh
	set -o pipefail; cd host && TCM_HA_FUZZ_SECS=$(FUZZ_SECS) cargo test $(T) -- --show-output 2>&1 \
		| grep -v '^    core_logic::'
	$(PYTHON) tests/linkfault.py --self-test

# libFuzzer through cargo-fuzz (nightly; installed on first use), each target
# for FUZZ_SECS seconds: make fuzz FUZZ_SECS=3600 FUZZ_TARGETS=decode
FUZZ_TARGETS ?= decode handshake session
fuzz:
	rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	cd host/fuzz && for t in $(FUZZ_TARGETS); do \
		RUSTUP_TOOLCHAIN=nightly cargo fuzz run $$t -- -max_total_time=$(FUZZ_SECS) || exit 1; done

vm-test: setup module
	cd tests && $(PYTHON) -m pytest $(if $(T),-k '$(T)') ; rc=$$?; \
	if [ $$rc = 5 ] && [ -n "$(T)" ]; then echo "tcm_ha: no VM test matches T=$(T)"; rc=0; fi; exit $$rc

check: host-test lint vm-test

# The module built under clippy (the kernel's CLIPPY=1, with the kernel's
# lint set: `// SAFETY:` on every unsafe block, `# Safety` on every unsafe
# fn, ...): a lint fails the build. The sources are touched so that clippy
# runs even when the module is up to date.
lint: setup
	@touch rust/tcm_ha.rs
	$(MAKE) module CLIPPY=1

# Every test at full size: the reboot test, the interlink faults in modes 1
# and 0, more flaps, cycles and race rounds (about 2 h under TCG).
check-full:
	TCM_HA_FULL=1 $(MAKE) check

demo: setup module
	$(PYTHON) scripts/demo.py

# Mixed IO with a role switch or a link flap per cycle: DURATION=30m MODE=2
soak: setup module
	DURATION=$(or $(DURATION),10m) MODE=$(or $(MODE),2) $(PYTHON) scripts/soak.py

# Benchmarks print ratios measured side by side in one run.
bench: bench-local bench-pair bench-ha
	$(MAKE) bench-report

bench-local: setup module
	$(PYTHON) scripts/bench_local.py

bench-pair: setup module
	$(PYTHON) scripts/bench_pair.py

bench-ha: setup module
	$(PYTHON) scripts/bench_ha.py

bench-report:
	@dpkg -s python3-matplotlib >/dev/null 2>&1 || apt-get install -y -q python3-matplotlib >/dev/null
	$(PYTHON) scripts/bench_report.py

# targetcli-ha into DESTDIR (default /): needs that root's python3, targetcli-fb
# and python3-rtslib-fb (Debian bookworm's).
DESTDIR ?= /
install-targetcli:
	bash tools/targetcli-ha/install.sh "$(DESTDIR)"

clean:
	$(MAKE) -C "$(KDIR_SH)" M="$(CURDIR)" clean 2>/dev/null || true
	rm -rf host/target tests/out tests/__pycache__
