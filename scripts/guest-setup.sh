#!/usr/bin/env bash
# Configures a debootstrapped guest root ($1) for the test bed, using the files
# in $2 (tests/guest): harness agent, identity unit, and a boot trimmed for
# speed under TCG (every unit costs seconds there).
set -euo pipefail
root=$1 files=$2
install -m 755 "$files/th-agent" "$root/usr/local/sbin/th-agent"
install -m 755 "$files/th-guest-init" "$root/usr/local/sbin/th-guest-init"
install -m 644 "$files/th-agent.service" "$files/th-guest.service" "$root/etc/systemd/system/"
echo guest >"$root/etc/hostname"
printf '127.0.0.1 localhost\n' >"$root/etc/hosts"
# The kernel mounts / read-write (root=/dev/vda rw): no fstab entry, so no
# unit waits for dev-vda.device (which needs the slow udev coldplug).
: >"$root/etc/fstab"
chroot "$root" passwd -d root >/dev/null
chroot "$root" systemctl enable th-agent.service th-guest.service
chroot "$root" systemctl set-default multi-user.target
# Units a test guest does not need.
chroot "$root" systemctl mask getty-static.service getty@tty1.service systemd-binfmt.service \
	dev-hugepages.mount dev-mqueue.mount sys-kernel-tracing.mount sys-fs-fuse-connections.mount \
	systemd-random-seed.service systemd-pstore.service systemd-firstboot.service \
	systemd-journal-flush.service systemd-update-utmp.service systemd-update-utmp-runlevel.service \
	systemd-machine-id-commit.service modprobe@fuse.service modprobe@efi_pstore.service \
	modprobe@drm.service modprobe@configfs.service e2scrub_reap.service e2scrub_all.timer \
	fstrim.timer apt-daily.timer apt-daily-upgrade.timer systemd-timesyncd.service serial-getty@ttyS0.service \
	remote-fs.target >/dev/null 2>&1 || true
# Services the tests start when they need them, not at boot.
chroot "$root" systemctl disable open-iscsi.service iscsid.socket iscsid.service multipathd.service \
	multipathd.socket rtslib-fb-targetctl.service >/dev/null 2>&1 || true
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nForwardToConsole=no\n' >"$root/etc/systemd/journald.conf.d/tcm_ha.conf"
# multipathd wants a config file. round-robin is the path selector built into
# dm-multipath; the guest kernel has no dm-service-time (multipath's default).
printf 'defaults {\n\tuser_friendly_names yes\n\tfind_multipaths no\n\tpath_selector "round-robin 0"\n}\n' >"$root/etc/multipath.conf"
rm -f "$root/etc/iscsi/initiatorname.iscsi"
# targetcli-ha: the distribution's targetcli with the `ha` backstore.
bash "$(dirname "$0")/../tools/targetcli-ha/install.sh" "$root"
