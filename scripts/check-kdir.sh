#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# make KDIR=... must refuse a tree it cannot build against and say what is
# missing (issue 9): run by `make host-test`.
set -euo pipefail
cd "$(dirname "$0")/.."
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
expect() {
	local want=$1 out
	shift
	if out=$(make --no-print-directory "$@" module 2>&1); then
		echo "check-kdir: FAIL: make $* module succeeded"
		exit 1
	fi
	grep -qF -- "$want" <<<"$out" || { echo "check-kdir: FAIL: make $* module: no '$want' in:"; echo "$out"; exit 1; }
}
expect "is not a kernel build tree" KDIR="$t/none"
mkdir "$t/k"
printf 'all:\n' >"$t/k/Makefile"
: >"$t/k/.config"
expect "has no CONFIG_RUST=y: tcm_ha needs a Rust-enabled 7.x kernel tree" KDIR="$t/k"
echo CONFIG_RUST=y >"$t/k/.config"
expect "lacks the Rust metadata (rust/libkernel.rmeta)" KDIR="$t/k"
echo "[kdir] make KDIR=: a missing tree, a tree without Rust and one without its Rust metadata are refused with their reason"
