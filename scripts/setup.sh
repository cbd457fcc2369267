#!/usr/bin/env bash
# make setup: installs everything tcm_ha needs on a Debian bookworm machine and
# builds the cached guest kernel and guest image. Idempotent: each step checks
# whether its result is already there. Steps: packages rust ksrc kernel rootfs image.
#   scripts/setup.sh            all steps
#   scripts/setup.sh kernel     one step (and what it needs)
#   scripts/setup.sh --print-kdir | --print-image
set -euo pipefail
. "$(dirname "$0")/common.sh"

HOST_PACKAGES="flex bison bc libelf-dev libssl-dev cpio libclang-19-dev llvm-19 clang-19 lld-19 \
debootstrap kmod rsync make gcc patch xz-utils zstd e2fsprogs dwarves python3 python3-pytest \
ca-certificates iproute2 qemu-utils"

need_root() { [ "$(id -u)" = 0 ] || die "step $1 needs root (apt-get); rerun as root or install: $HOST_PACKAGES qemu-system-x86"; }

step_packages() {
	local stamp=$CACHE/stamps/packages-$(echo "$HOST_PACKAGES" | sha256sum | cut -c1-12)
	if [ -e "$stamp" ] && command -v qemu-system-x86_64 >/dev/null && command -v debootstrap >/dev/null; then
		return 0
	fi
	need_root packages
	local bpo=/etc/apt/sources.list.d/tcm_ha-bookworm-backports.sources
	if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		log "packages: adding bookworm-backports (for qemu-system-x86 10.x) as $bpo"
		cat >"$bpo" <<SRC
Types: deb
URIs: $DEBIAN_MIRROR
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	fi
	run_step "apt-get update" "$CACHE/logs/apt-update.log" apt-get update
	# shellcheck disable=SC2086
	run_step "apt-get install host packages" "$CACHE/logs/apt-install.log" \
		env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $HOST_PACKAGES
	run_step "apt-get install qemu-system-x86 (bookworm-backports)" "$CACHE/logs/apt-qemu.log" \
		env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		-t bookworm-backports qemu-system-x86 qemu-utils
	mkdir -p "$(dirname "$stamp")" && touch "$stamp"
}

step_rust() {
	if ! command -v rustup >/dev/null; then
		die "rustup is not installed; install rustup (https://rustup.rs) and rerun make setup"
	fi
	if ! rustup run "$RUST_TOOLCHAIN" rustc --version >/dev/null 2>&1; then
		run_step "rustup toolchain $RUST_TOOLCHAIN" "$CACHE/logs/rustup.log" \
			rustup toolchain install "$RUST_TOOLCHAIN" --profile minimal
	fi
	if ! [ -d "$(rustup run "$RUST_TOOLCHAIN" rustc --print sysroot)/lib/rustlib/src/rust/library" ]; then
		run_step "rust-src component" "$CACHE/logs/rust-src.log" \
			rustup component add rust-src --toolchain "$RUST_TOOLCHAIN"
	fi
	for c in clippy rustfmt; do
		rustup run "$RUST_TOOLCHAIN" which "cargo-$([ $c = clippy ] && echo clippy || echo fmt)" >/dev/null 2>&1 ||
			run_step "$c component" "$CACHE/logs/rust-$c.log" rustup component add $c --toolchain "$RUST_TOOLCHAIN"
	done
	if ! bindgen --version 2>/dev/null | grep -q "$BINDGEN_VERSION"; then
		run_step "cargo install bindgen-cli $BINDGEN_VERSION (~2 min)" "$CACHE/logs/bindgen.log" \
			cargo install --locked bindgen-cli --version "$BINDGEN_VERSION"
	fi
}

step_ksrc() {
	local d=$CACHE/apt
	if [ -e "$CACHE/src/current-version" ] && [ -f "$(ksrc_dir)/Makefile" ]; then
		return 0
	fi
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/debs" "$CACHE/src"
	echo "deb $DEBIAN_MIRROR $KSRC_SUITE main" >"$d/sources.list"
	# shellcheck disable=SC2046
	run_step "apt-get update (private list: $KSRC_SUITE, for $KSRC_PACKAGE)" "$CACHE/logs/apt-ksrc-update.log" \
		apt-get $(apt_private_opts) update
	# shellcheck disable=SC2046
	local ver
	ver=$(apt-cache $(apt_private_opts) show "$KSRC_PACKAGE" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
	if [ -z "$ver" ]; then
		# shellcheck disable=SC2046
		local avail
		avail=$(apt-cache $(apt_private_opts) pkgnames linux-source- 2>/dev/null | sort -V | tr '\n' ' ')
		die "$KSRC_PACKAGE is no longer in $KSRC_SUITE. Available: ${avail:-none}. Update KSRC_PACKAGE in scripts/common.sh (and check the module still builds) or set TCM_HA_MIRROR to an archive that has it."
	fi
	# shellcheck disable=SC2046
	(cd "$d/debs" && run_step "apt-get download $KSRC_PACKAGE $ver (~170 MB)" "$CACHE/logs/ksrc-download.log" \
		apt-get $(apt_private_opts) download "$KSRC_PACKAGE=$ver")
	local deb
	deb=$(ls "$d/debs/${KSRC_PACKAGE}_"*.deb | head -n1)
	local dest=$CACHE/src/$ver
	rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
	run_step "unpack $KSRC_PACKAGE" "$CACHE/logs/ksrc-unpack.log" bash -c "
		set -e; cd '$dest.tmp'; dpkg-deb -x '$deb' pkg
		tar -xf pkg/usr/src/$KSRC_PACKAGE.tar.xz
		mv $KSRC_PACKAGE linux; rm -rf pkg"
	rm -rf "$dest" && mv "$dest.tmp" "$dest"
	echo "$ver" >"$CACHE/src/current-version"
}

# Applies scripts/kernel-patches/*.patch to the kernel source in $1, each
# once (a patch that reverses cleanly is already there).
apply_kernel_patches() {
	local src=$1 p
	for p in "$KPATCH_DIR"/*.patch; do
		[ -e "$p" ] || continue
		patch -d "$src" -p1 -R -f -s --dry-run <"$p" >/dev/null 2>&1 && continue
		patch -d "$src" -p1 -f -s --no-backup-if-mismatch <"$p" ||
			die "kernel patch $(basename "$p") does not apply to $src"
		log "kernel: applied $(basename "$p")"
	done
}

step_kernel() {
	step_rust
	step_ksrc
	local kb src
	kb=$(kbuild_dir); src=$(ksrc_dir)
	apply_kernel_patches "$src"
	if [ -e "$kb/.tcm_ha-built" ]; then
		# A tree built before a patch was added rebuilds what it touches.
		if [ "$(cat "$kb/.tcm_ha-patches" 2>/dev/null)" != "$(kpatches_hash)" ]; then
			run_step "kernel rebuild for scripts/kernel-patches" "$CACHE/logs/kernel-patch-build.log" \
				make -C "$src" O="$kb" -j$(($(nproc) + 1)) bzImage modules
			kpatches_hash >"$kb/.tcm_ha-patches"
		fi
		return 0
	fi
	mkdir -p "$kb"
	log "kernel: building $(cat "$CACHE/src/current-version") into $kb (cold: ~17 min on 2 cores)"
	run_step "kernel config" "$CACHE/logs/kernel-config.log" bash -c "
		set -e
		make -C '$src' O='$kb' x86_64_defconfig
		make -C '$src' O='$kb' kvm_guest.config
		'$src/scripts/kconfig/merge_config.sh' -m -O '$kb' '$kb/.config' '$TCM_HA_ROOT/scripts/kernel.config'
		make -C '$src' O='$kb' olddefconfig
		make -C '$src' O='$kb' rustavailable"
	# Every =y/=m line of the fragment must have survived olddefconfig.
	local missing
	missing=$(grep -E '^CONFIG_[A-Z0-9_]+=[ym]$' "$TCM_HA_ROOT/scripts/kernel.config" | while read -r l; do
		grep -qx "$l" "$kb/.config" || echo "$l"; done)
	[ -z "$missing" ] || die "kernel config: these fragment options were dropped by olddefconfig (a dependency is missing): $missing"
	run_step "kernel build (make -j$(($(nproc) + 1)))" "$CACHE/logs/kernel-build.log" \
		make -C "$src" O="$kb" -j$(($(nproc) + 1)) bzImage modules
	kpatches_hash >"$kb/.tcm_ha-patches"
	touch "$kb/.tcm_ha-built"
}

guest_rootfs_dir() { echo "$CACHE/rootfs/$(rootfs_key)"; }
guest_image() { echo "$CACHE/images/$(image_key)-$(basename "$(kbuild_dir)").img"; }

step_rootfs() {
	local rootfs
	rootfs=$(guest_rootfs_dir)
	[ -e "$rootfs/.tcm_ha-done" ] && return 0
	need_root rootfs
	rm -rf "$rootfs" && mkdir -p "$rootfs"
	run_step "debootstrap bookworm guest (~2 min)" "$CACHE/logs/debootstrap.log" \
		debootstrap --variant=minbase --include="$GUEST_PACKAGES" bookworm "$rootfs" "$DEBIAN_MIRROR"
	chroot "$rootfs" apt-get clean
	touch "$rootfs/.tcm_ha-done"
	# Root file systems for other keys are stale.
	find "$CACHE/rootfs" -mindepth 1 -maxdepth 1 ! -path "$rootfs" -exec rm -rf {} +
}

step_image() {
	# debootstrap (network and dpkg, ~2 min) runs beside the kernel build
	# (CPU) on a cold machine.
	local rootfs_pid=""
	if [ ! -e "$(guest_rootfs_dir)/.tcm_ha-done" ]; then
		step_rootfs &
		rootfs_pid=$!
	fi
	step_kernel
	if [ -n "$rootfs_pid" ]; then
		wait "$rootfs_pid" || die "the guest root file system step failed (see above)"
	fi
	step_rootfs
	local img rootfs kb
	img=$(guest_image); rootfs=$(guest_rootfs_dir); kb=$(kbuild_dir)
	[ -e "$img" ] && return 0
	local stage=$CACHE/images/stage
	rm -rf "$stage" && mkdir -p "$stage" "$CACHE/images"
	run_step "guest image (rootfs + kernel modules)" "$CACHE/logs/image.log" bash -c "
		set -e
		cp -a '$rootfs/.' '$stage/'
		rm -f '$stage/.tcm_ha-done'
		bash '$TCM_HA_ROOT/scripts/guest-setup.sh' '$stage' '$TCM_HA_ROOT/tests/guest'
		make -C '$(ksrc_dir)' O='$kb' INSTALL_MOD_PATH='$stage' modules_install
		truncate -s 3G '$img.tmp'
		mke2fs -q -F -t ext4 -L tcm_ha_root -d '$stage' '$img.tmp'
		mv '$img.tmp' '$img'"
	rm -rf "$stage"
	# Older images for other keys are stale: keep only this one.
	find "$CACHE/images" -maxdepth 1 -name '*.img' ! -path "$img" -delete
}

main() {
	case "${1:-all}" in
	--print-kdir) kbuild_dir; return ;;
	--print-image) guest_image; return ;;
	--print-kernel) echo "$(kbuild_dir)/arch/x86/boot/bzImage"; return ;;
	esac
	local start=$SECONDS
	mkdir -p "$CACHE/logs" "$CACHE/stamps"
	case "${1:-all}" in
	packages) step_packages ;;
	rust) step_rust ;;
	ksrc) step_ksrc ;;
	kernel) step_packages; step_kernel ;;
	rootfs) step_packages; step_rootfs ;;
	image|all) step_packages; step_image ;;
	*) die "unknown step '$1' (packages rust ksrc kernel rootfs image all)" ;;
	esac
	log "setup: ready in $((SECONDS - start))s (cache: $CACHE)"
}
main "$@"
exit $?
