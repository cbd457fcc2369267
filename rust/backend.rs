// SPDX-License-Identifier: GPL-2.0

//! The `ha` backstore device: its control-string settings and the backing
//! block device. No `unsafe` here: LIO is reached through `crate::lio`.

use core::fmt::Write;
use kernel::{new_mutex, prelude::*, str::CString, sync::Mutex};

use crate::configfs::{Core, NODE};
use crate::core_logic::control::{self, Param, Role};
use crate::core_logic::scsi::alua::HaMode;
use crate::lio::{Bdev, BdevFile, HwAttribs, Page};
use crate::scsi::Scsi;

/// A C string as text for messages (configfs names and paths are UTF-8 here:
/// they come from `&str` or were checked by `set_params`).
fn text(c: &CStr) -> &str {
    c.to_str().unwrap_or("(non-UTF-8)")
}

/// Commands LIO may queue to one device.
const QUEUE_DEPTH: u32 = 128;
/// Largest transfer the backstore advertises, in 512-byte sectors (4 MiB:
/// LIO's default fabric limit and the size Linux caps its requests at
/// when a device gives no usable optimal size). Also the optimal transfer
/// length unless the `optimal_sectors` attribute is set lower, so that a
/// Linux initiator sizes its requests for an `ha` LUN as for an iblock
/// LUN of the same disk (8 MiB before: its SCSI disk took 8 MiB requests,
/// the iblock one 4 MiB).
const MAX_IO_SECTORS: u32 = 8192;
/// Largest WRITE SAME in blocks (written as repeated pages or as write
/// zeroes, either way in pieces the block layer splits).
const MAX_WRITE_SAME: u32 = 0xFFFF;

#[derive(Default)]
struct Settings {
    dev: Option<CString>,
    lun_id: Option<u32>,
    role: Option<Role>,
    readonly: bool,
    /// Enabled by LIO (`configure` done, `destroy` not yet).
    enabled: bool,
    /// The backing device while held: always on a primary, on a secondary
    /// only in mode 1 (shared storage, both nodes do IO).
    bdev: Option<BdevFile>,
    /// The last attempt to open it on promotion failed (logged once).
    open_failed: bool,
    /// Block size and capacity in sectors when enabled.
    geometry: (u32, u64),
    /// Device number of the backing device when enabled (reopened by it).
    devt: u32,
}

/// Per-device state of the `ha` backstore.
#[pin_data]
pub(crate) struct HaDev {
    name: CString,
    #[pin]
    settings: Mutex<Settings>,
    /// ALUA, PR and unit attentions of the LUN.
    #[pin]
    pub(crate) scsi: Scsi,
}

impl HaDev {
    /// A new, unconfigured device named after its configfs directory.
    pub(crate) fn new(name: &CStr) -> impl PinInit<Self, Error> + '_ {
        try_pin_init!(HaDev {
            name: CString::try_from_fmt(fmt!("{}", name))?,
            settings <- new_mutex!(Settings::default()),
            scsi <- Scsi::new(),
        })
    }

    /// The configfs name of the device, for messages.
    pub(crate) fn name(&self) -> &str {
        text(&self.name)
    }

    /// Applies a control string. The whole string is checked before
    /// anything changes; `configured` devices refuse a new backing path.
    pub(crate) fn set_params(&self, text: &str, configured: bool) -> Result {
        let mut s = self.settings.lock();
        let mut dev = None;
        let (mut lun_id, mut role, mut readonly) = (s.lun_id, s.role, s.readonly);
        for p in control::params(text) {
            match p {
                Err(e) => {
                    pr_err!("{}: control: {}\n", self.name(), Core(e));
                    return Err(EINVAL);
                }
                Ok(Param::Dev(path)) => dev = Some(path),
                Ok(Param::File(path)) => {
                    pr_err!("{}: control: file={} is not supported yet; use dev=\n", self.name(), path);
                    return Err(EINVAL);
                }
                Ok(Param::LunId(n)) => lun_id = Some(n),
                Ok(Param::Role(r)) => role = Some(r),
                Ok(Param::ReadOnly(r)) => readonly = r,
            }
        }
        if configured {
            let changes_dev = dev.is_some_and(|d| s.dev.as_ref().map(|c| c.to_bytes()) != Some(d.as_bytes()));
            if changes_dev || readonly != s.readonly {
                pr_err!("{}: control: dev and readonly cannot change while the device is enabled\n", self.name());
                return Err(EBUSY);
            }
        }
        let promoted = role.unwrap_or(NODE.role()) == Role::Primary && self.scsi.local_role() != Role::Primary;
        if configured && promoted && self.scsi.peer_is_primary() {
            pr_err!(
                "{}: control: ha_role=primary refused: LUN {} is primary on the linked peer; make it secondary there first\n",
                self.name(),
                self.scsi.lun_id()
            );
            return Err(EBUSY);
        }
        if let Some(d) = dev {
            s.dev = Some(CString::try_from_fmt(fmt!("{}", d))?);
        }
        s.lun_id = lun_id;
        s.role = role;
        self.scsi.set_role(role);
        // A role change is an ALUA state change for the LUN's nexuses.
        self.scsi.check_alua_change();
        s.readonly = readonly;
        Ok(())
    }

    /// Writes the `info` part of this backstore.
    pub(crate) fn show_params(&self, out: &mut Page<'_>) {
        let s = self.settings.lock();
        let dev = s.dev.as_deref().map_or("(none)", text);
        let role = s.role.map_or("node default", Role::as_str);
        let _ = write!(out, "HA device: {} dev: {} ", self.name(), dev);
        let _ = match s.lun_id {
            Some(n) => write!(out, "lun_id: {}", n),
            None => write!(out, "lun_id: (derived)"),
        };
        let _ = writeln!(out, " ha_role: {} readonly: {}", role, u8::from(s.readonly));
        if let Some(b) = &s.bdev {
            let _ = writeln!(out, "        capacity: {} sectors, block size {}", b.nr_sectors(), b.logical_block_size());
        } else if s.enabled {
            let _ = writeln!(out, "        backing device released (secondary)");
        }
        if s.enabled {
            // The states RTPG reports, and what the interlink found wrong
            // with the peer's LUN of the same lun_id.
            let g = self.scsi.group_states();
            let _ = writeln!(out, "        ALUA: local {}, peer {}{}", g.local, g.peer, self.scsi.note().words());
        }
    }

    /// Opens the backing device (`echo 1 > enable`).
    pub(crate) fn configure(&self, holder: *mut c_void) -> Result<HwAttribs> {
        let mut s = self.settings.lock();
        let Some(path) = s.dev.as_deref() else {
            pr_err!("{}: enable: no backing device: write dev=<block device> to control first\n", self.name());
            return Err(EINVAL);
        };
        let bdev = BdevFile::open(path, s.readonly, holder).inspect_err(|e| {
            pr_err!("{}: enable: cannot open dev={}: error {}\n", self.name(), text(path), e.to_errno());
        })?;
        let block_size = bdev.logical_block_size();
        let hw = HwAttribs {
            block_size,
            // The device's limit in blocks, capped: virtio-blk and others
            // report no limit (UINT_MAX), which LIO would advertise as the
            // maximum and optimal transfer length.
            max_sectors: bdev.max_hw_sectors().min(MAX_IO_SECTORS) / (block_size / 512).max(1),
            queue_depth: QUEUE_DEPTH,
            max_write_same: MAX_WRITE_SAME,
            nonrot: bdev.nonrot(),
            sectors: bdev.nr_sectors(),
            write_cache: bdev.write_cache(),
            readonly: s.readonly,
            io: bdev.io(),
        };
        let lun_id = s.lun_id.unwrap_or_else(|| control::derived_lun_id(self.name()));
        self.scsi.set_lun_id(lun_id);
        pr_info!(
            "{}: enabled on dev={} ({} sectors of 512 bytes), lun_id {}\n",
            self.name(),
            text(path),
            bdev.nr_sectors(),
            lun_id
        );
        s.bdev = Some(bdev);
        s.enabled = true;
        s.open_failed = false;
        s.geometry = (hw.block_size, hw.sectors);
        s.devt = s.bdev.as_ref().map_or(0, BdevFile::devt);
        Ok(hw)
    }

    /// Closes the backing device.
    pub(crate) fn destroy(&self) {
        let mut s = self.settings.lock();
        s.enabled = false;
        s.bdev = None;
    }

    /// Whether this node should hold the backing device open: as primary,
    /// and in mode 1 (shared storage) also as secondary. In modes 0 and 2
    /// the secondary does no IO and gives the device back, so that a
    /// cluster manager (or DRBD) may hand it to the other node.
    fn wants_storage(&self) -> bool {
        self.scsi.local_role() == Role::Primary || NODE.mode() == HaMode::SerializeOnly
    }

    /// Opens or releases the backing device to match the LUN's role.
    /// `publish` gets the opened device, or `None` when it must stop being
    /// used: it returns once no IO uses it, and the device is closed after.
    pub(crate) fn follow_role(&self, holder: *mut c_void, publish: impl FnOnce(Option<Bdev>)) {
        let mut s = self.settings.lock();
        if !s.enabled {
            return;
        }
        let want = self.wants_storage();
        if want == s.bdev.is_some() {
            return;
        }
        if !want {
            publish(None);
            s.bdev = None;
            let dev = s.dev.as_deref().map_or("(none)", text);
            pr_info!("{}: secondary: backing device {} released\n", self.name(), dev);
            return;
        }
        let Some(path) = s.dev.as_deref() else { return };
        match BdevFile::open_dev(s.devt, s.readonly, holder) {
            Ok(b) => {
                let (bs, sectors) = (b.logical_block_size(), b.nr_sectors());
                pr_info!("{}: primary: backing device {} opened ({} sectors)\n", self.name(), text(path), sectors);
                if (bs, sectors) != s.geometry {
                    pr_warn!(
                        "{}: {} changed since enable (block size {}, {} sectors): disable and enable the device to use the new size\n",
                        self.name(),
                        text(path),
                        bs,
                        sectors
                    );
                }
                publish(Some(b.io()));
                s.bdev = Some(b);
                s.open_failed = false;
            }
            Err(e) => {
                if !s.open_failed {
                    pr_err!(
                        "{}: primary: cannot open dev={}: error {}: IO is refused as transitioning until it opens (retried on every state change)\n",
                        self.name(),
                        text(path),
                        e.to_errno()
                    );
                }
                s.open_failed = true;
            }
        }
    }
}
