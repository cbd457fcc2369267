#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Installs targetcli-ha into a root file system ($1, default /): the
# tcm_ha_targetcli package into that root's python3 site directory for local
# packages, the targetcli-ha and targetctl-ha commands into /usr/local/bin,
# and the boot unit tcm-ha.service (tools/systemd) into
# /usr/local/lib/systemd/system, not enabled.
# Needs the root's own python3 (run through chroot when $1 is not /).
set -euo pipefail
root=${1:-/}
here=$(cd "$(dirname "$0")" && pwd)
py() { if [ "$root" = / ]; then python3 "$@"; else chroot "$root" python3 "$@"; fi; }
# Debian's python3 searches /usr/local/lib/python3.X/dist-packages first.
site=$(py -c 'import site; print(site.getsitepackages()[0])')
case $site in /usr/local/*) ;; *) echo "targetcli-ha: unexpected site directory '$site'" >&2; exit 1 ;; esac
units=/usr/local/lib/systemd/system
install -d "$root$site/tcm_ha_targetcli" "$root/usr/local/bin" "$root$units"
install -m 644 "$here"/tcm_ha_targetcli/*.py "$root$site/tcm_ha_targetcli/"
install -m 755 "$here/targetcli-ha" "$here/targetctl-ha" "$root/usr/local/bin/"
install -m 644 "$here/../systemd/tcm-ha.service" "$root$units/"
echo "targetcli-ha: installed into $root (package in $site, unit $units/tcm-ha.service," \
	"not enabled: systemctl daemon-reload; systemctl enable tcm-ha.service)"
