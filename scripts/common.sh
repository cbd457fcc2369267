# Shared by the setup, build and test scripts: pinned versions, cache paths,
# and step helpers that report progress and name the step that failed.
# shellcheck shell=bash

TCM_HA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${TCM_HA_CACHE:-$HOME/.cache/tcm_ha}

RUST_TOOLCHAIN=1.95.0
BINDGEN_VERSION=0.73.2
KSRC_PACKAGE=linux-source-7.3
KSRC_SUITE=trixie-backports
DEBIAN_MIRROR=${TCM_HA_MIRROR:-http://deb.debian.org/debian}
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}
export RUSTUP_TOOLCHAIN=$RUST_TOOLCHAIN
export PATH="$HOME/.cargo/bin:$PATH"

# Packages baked into the guest image (changing this list changes the image key).
GUEST_PACKAGES="systemd-sysv,udev,dbus,kmod,iproute2,iputils-ping,procps,python3,\
targetcli-fb,python3-rtslib-fb,open-iscsi,multipath-tools,sg3-utils,fio,libiscsi-bin,\
util-linux,e2fsprogs"

log() { printf '[tcm_ha %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[tcm_ha] ERROR: %s\n' "$*" >&2; exit 1; }

# run_step NAME LOGFILE CMD...: runs CMD with output to LOGFILE, prints a
# heartbeat every 60 s, and on failure names the step and shows the log tail.
run_step() {
	local name=$1 logf=$2; shift 2
	local start=$SECONDS rc=0
	log "$name: started (log: $logf)"
	mkdir -p "$(dirname "$logf")"
	"$@" >"$logf" 2>&1 &
	local pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		local i
		for i in $(seq 60); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 1
		done
		kill -0 "$pid" 2>/dev/null && log "$name: still running, $(( (SECONDS - start) / 60 ))m$(( (SECONDS - start) % 60 ))s elapsed; last line: $(tail -n1 "$logf" | cut -c1-100)"
	done
	wait "$pid" || rc=$?
	if [ "$rc" != 0 ]; then
		printf '[tcm_ha] step "%s" FAILED (exit %s) after %ss; last lines of %s:\n' "$name" "$rc" $((SECONDS - start)) "$logf" >&2
		tail -n 40 "$logf" >&2
		exit 1
	fi
	log "$name: done in $((SECONDS - start))s"
}

# The private apt configuration used only to fetch the kernel source package.
apt_private_opts() {
	local d=$CACHE/apt
	echo "-o Dir::Etc::SourceList=$d/sources.list -o Dir::Etc::SourceParts=/dev/null" \
	     "-o Dir::State::Lists=$d/lists -o Dir::Cache=$d/cache -o Dir::State::status=/var/lib/dpkg/status"
}

ksrc_dir() { echo "$CACHE/src/$(cat "$CACHE/src/current-version" 2>/dev/null || echo none)/linux"; }

# Bump when the way the config is assembled changes (not the fragment itself).
KCONFIG_RECIPE="x86_64_defconfig+kvm_guest.config+kernel.config v1"
config_hash() {
	{ echo "$KCONFIG_RECIPE"; cat "$TCM_HA_ROOT/scripts/kernel.config"; } | sha256sum | cut -c1-12
}

# Fixes carried for the test kernel's own code (LIO bugs the tests hit; not
# part of tcm_ha.ko): applied to the unpacked source before a build, and to an
# already built tree by an incremental rebuild (scripts/setup.sh step_kernel).
KPATCH_DIR="$TCM_HA_ROOT/scripts/kernel-patches"
kpatches_hash() { cat "$KPATCH_DIR"/*.patch 2>/dev/null | sha256sum | cut -c1-12; }

# Cached kernel build tree for the current source version and config.
kbuild_dir() {
	echo "$CACHE/kernel/$(cat "$CACHE/src/current-version" 2>/dev/null || echo none)-$(config_hash)"
}

# The debootstrapped root depends only on the package list; the image adds the
# guest files (tests/guest, scripts/guest-setup.sh, tools/targetcli-ha) and the
# kernel's modules.
rootfs_key() { echo "$GUEST_PACKAGES" | sha256sum | cut -c1-12; }
image_key() {
	{
		rootfs_key
		kpatches_hash
		cat "$TCM_HA_ROOT/scripts/guest-setup.sh" "$TCM_HA_ROOT/tests/guest/"*
		# Names and contents of every file the image takes from tools/
		# (targetcli-ha and its boot unit in tools/systemd).
		(cd "$TCM_HA_ROOT/tools" && find targetcli-ha systemd -type f ! -name '*.pyc' | LC_ALL=C sort |
			while read -r f; do echo "$f"; cat "$f"; done)
	} | sha256sum | cut -c1-12
}
