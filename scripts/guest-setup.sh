#!/usr/bin/env bash
# Configures a debootstrapped guest root ($1) for the test bed, using the files
# in $2 (tests/guest): harness agent, identity unit, quiet fast boot.
set -euo pipefail
root=$1 files=$2
install -m 755 "$files/th-agent" "$root/usr/local/sbin/th-agent"
install -m 755 "$files/th-guest-init" "$root/usr/local/sbin/th-guest-init"
install -m 644 "$files/th-agent.service" "$files/th-guest.service" "$root/etc/systemd/system/"
echo guest >"$root/etc/hostname"
printf '127.0.0.1 localhost\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
chroot "$root" passwd -d root
chroot "$root" systemctl enable th-agent.service th-guest.service
# Serial console login for debugging; nothing else on a console.
chroot "$root" systemctl mask getty@tty1.service systemd-timesyncd.service apt-daily.timer \
	apt-daily-upgrade.timer e2scrub_reap.service e2scrub_all.timer fstrim.timer 2>/dev/null || true
# Services the tests start when they need them, not at boot.
chroot "$root" systemctl disable open-iscsi.service iscsid.socket multipathd.service \
	multipathd.socket rtslib-fb-targetctl.service 2>/dev/null || true
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nForwardToConsole=no\n' >"$root/etc/systemd/journald.conf.d/tcm_ha.conf"
# multipathd wants a config file; the tests write their own.
printf 'defaults {\n\tuser_friendly_names yes\n\tfind_multipaths no\n}\n' >"$root/etc/multipath.conf"
rm -f "$root/etc/iscsi/initiatorname.iscsi"
chroot "$root" apt-get clean
rm -rf "$root/var/lib/apt/lists/"*
