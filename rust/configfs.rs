// SPDX-License-Identifier: GPL-2.0

//! The node's HA settings: `/sys/kernel/config/tcm_ha/` (issue 4,
//! requirement 1). Parsing and validation are the core's (`core::node`);
//! this file keeps the values and publishes what the data path reads in
//! [`NODE`] (atomics, read without locks from command context).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use kernel::{
    configfs::{self, AttributeOperations},
    configfs_attrs,
    fmt::Write as _,
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    sync::{Arc, Mutex},
};

use crate::core_logic::control::Role;
use crate::core_logic::node::{self, Peer};
use crate::core_logic::scsi::alua::{HaMode, Link};
use crate::link::Interlink;

/// Shows a value of the plain-Rust core (`core::fmt::Display`) through the
/// kernel's formatting.
pub(crate) struct Core<T>(pub(crate) T);

impl<T: core::fmt::Display> kernel::fmt::Display for Core<T> {
    fn fmt(&self, f: &mut kernel::fmt::Formatter<'_>) -> kernel::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

/// Node settings the data path reads.
pub(crate) struct NodeState {
    ha_id: AtomicU8,
    mode: AtomicU8,
    role: AtomicU8,
    link: AtomicU8,
    /// `failover=auto`.
    auto_failover: AtomicBool,
    /// Enabled `ha` devices: `ha_id` and `ha_mode` cannot change while
    /// any exists.
    devices: AtomicUsize,
}

/// The node's settings.
pub(crate) static NODE: NodeState = NodeState {
    ha_id: AtomicU8::new(0),
    mode: AtomicU8::new(HaMode::ActiveStandby as u8),
    role: AtomicU8::new(0),
    link: AtomicU8::new(0),
    auto_failover: AtomicBool::new(false),
    devices: AtomicUsize::new(0),
};

impl NodeState {
    /// `ha_id`: 0 (not in HA), 1 or 2.
    pub(crate) fn ha_id(&self) -> u8 {
        self.ha_id.load(Ordering::Relaxed)
    }

    /// `ha_mode`.
    pub(crate) fn mode(&self) -> HaMode {
        HaMode::from_u32(u32::from(self.mode.load(Ordering::Relaxed))).unwrap_or(HaMode::ActiveStandby)
    }

    /// The node's default role for its LUNs (`ha_role`).
    pub(crate) fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::Secondary,
            _ => Role::Primary,
        }
    }

    /// The interlink state.
    pub(crate) fn link(&self) -> Link {
        match self.link.load(Ordering::Relaxed) {
            2 => Link::Online,
            1 => Link::Connecting,
            _ => Link::Offline,
        }
    }

    /// With `failover=auto`, makes a secondary node primary (the link
    /// thread calls this when the linked peer was lost); returns whether
    /// it did.
    pub(crate) fn promote_on_peer_loss(&self) -> bool {
        self.auto_failover.load(Ordering::Relaxed)
            && self.role.compare_exchange(1, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Takes the module parameters' values (at load, before configfs
    /// exists); a bad value fails the load with a line naming it.
    pub(crate) fn load_params(&self, ha_id: u8, mode: u8, secondary: bool, auto: bool) -> Result {
        if ha_id > node::MAX_HA_ID {
            pr_err!("module parameter ha_id={ha_id}: expected 0, 1 or 2\n");
            return Err(EINVAL);
        }
        if HaMode::from_u32(u32::from(mode)).is_none() {
            pr_err!("module parameter ha_mode={mode}: expected 0 (active/standby), 1 (serialize) or 2 (proxy)\n");
            return Err(EINVAL);
        }
        self.ha_id.store(ha_id, Ordering::Relaxed);
        self.mode.store(mode, Ordering::Relaxed);
        self.role.store(u8::from(secondary), Ordering::Relaxed);
        self.auto_failover.store(auto, Ordering::Relaxed);
        Ok(())
    }

    /// Counts an enabled device (until [`NodeState::device_gone`]).
    pub(crate) fn device_added(&self) {
        self.devices.fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes the interlink state (the link thread).
    pub(crate) fn set_link(&self, l: Link) {
        let v = match l {
            Link::Offline => 0,
            Link::Connecting => 1,
            Link::Online => 2,
        };
        self.link.store(v, Ordering::Relaxed);
    }

    /// Uncounts a device enabled before.
    pub(crate) fn device_gone(&self) {
        self.devices.fetch_sub(1, Ordering::Relaxed);
    }

    fn devices(&self) -> usize {
        self.devices.load(Ordering::Relaxed)
    }
}

/// Data of the `tcm_ha` configfs subsystem.
#[pin_data]
pub(crate) struct Node {
    /// Serialises the checks and updates of `ha_id` / `ha_mode`.
    #[pin]
    lock: Mutex<()>,
    /// Peer, key and state of the interlink.
    link: Arc<Interlink>,
}

/// The `tcm_ha` configfs subsystem.
pub(crate) fn subsystem(link: Arc<Interlink>) -> impl PinInit<configfs::Subsystem<Node>, Error> {
    let item_type = configfs_attrs! {
        container: configfs::Subsystem<Node>,
        data: Node,
        attributes: [
            ha_id: 0,
            ha_mode: 1,
            ha_peer: 2,
            ha_role: 3,
            ha_key: 4,
            ha_link: 5,
            stats: 6,
            failover: 7,
        ],
    };
    configfs::Subsystem::new(
        c"tcm_ha",
        item_type,
        try_pin_init!(Node {
            lock <- new_mutex!(()),
            link,
        }),
    )
}

/// The text of a configfs write.
fn text(page: &[u8]) -> Result<&str> {
    core::str::from_utf8(page).map_err(|_| {
        pr_err!("configfs: value is not UTF-8\n");
        EINVAL
    })
}

/// Writes `args` into a configfs page.
fn show_fmt(page: &mut [u8; PAGE_SIZE], args: kernel::fmt::Arguments<'_>) -> Result<usize> {
    let mut w = kernel::str::Formatter::new(page);
    w.write_fmt(args)?;
    Ok(w.bytes_written())
}

/// A parsed value, or `EINVAL` after a dmesg line naming attribute and value.
fn parsed<T>(r: core::result::Result<T, node::NodeError<'_>>) -> Result<T> {
    r.map_err(|e| {
        pr_err!("{}\n", Core(e));
        EINVAL
    })
}

/// Refuses a change of `attr` while `ha` devices are enabled.
fn refuse_while_devices(attr: &str, changed: bool) -> Result {
    let n = NODE.devices();
    if changed && n > 0 {
        pr_err!("{}: cannot change while {} ha device(s) are enabled: disable them first\n", attr, n);
        return Err(EBUSY);
    }
    Ok(())
}

#[vtable]
impl AttributeOperations<0> for Node {
    type Data = Node;

    fn show(_this: &Node, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show_fmt(page, fmt!("{}\n", NODE.ha_id()))
    }

    fn store(this: &Node, page: &[u8]) -> Result {
        let v = parsed(node::parse_ha_id(text(page)?))?;
        let _guard = this.lock.lock();
        refuse_while_devices("ha_id", v != NODE.ha_id())?;
        if NODE.ha_id.swap(v, Ordering::Relaxed) != v {
            this.link.changed();
        }
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<1> for Node {
    type Data = Node;

    fn show(_this: &Node, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show_fmt(page, fmt!("{}\n", NODE.mode() as u8))
    }

    fn store(this: &Node, page: &[u8]) -> Result {
        let v = parsed(node::parse_ha_mode(text(page)?))?;
        let _guard = this.lock.lock();
        refuse_while_devices("ha_mode", v != NODE.mode())?;
        if NODE.mode.swap(v as u8, Ordering::Relaxed) != v as u8 {
            this.link.changed();
        }
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<2> for Node {
    type Data = Node;

    fn show(this: &Node, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show_fmt(page, fmt!("{}\n", Core(this.link.peer())))
    }

    fn store(this: &Node, page: &[u8]) -> Result {
        let v = parsed(node::parse_peer(text(page)?))?;
        if this.link.set_peer(v) {
            match v {
                Peer::None => pr_info!("ha_peer cleared: no interlink (active/unavailable)\n"),
                _ => pr_info!("ha_peer set to '{}'\n", Core(v)),
            }
        }
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<3> for Node {
    type Data = Node;

    fn show(_this: &Node, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show_fmt(page, fmt!("{}\n", NODE.role().as_str()))
    }

    fn store(this: &Node, page: &[u8]) -> Result {
        let v = parsed(node::parse_role(text(page)?))?;
        let code = match v {
            Role::Primary => 0,
            Role::Secondary => 1,
        };
        let _guard = this.lock.lock();
        if v == Role::Primary && NODE.role() != Role::Primary {
            // Two primaries for one LUN while linked: refused.
            let clash = crate::lio::with_devices(|devs| {
                devs.iter()
                    .map(|d| &d.device().ha().scsi)
                    .find(|s| s.follows_node() && s.peer_is_primary())
                    .map(|s| s.lun_id())
            });
            if let Some(id) = clash {
                pr_err!("ha_role: primary refused: LUN {} is primary on the linked peer; make the peer secondary first\n", id);
                return Err(EBUSY);
            }
        }
        if NODE.role.swap(code, Ordering::Relaxed) != code {
            pr_info!("node role: {}\n", v.as_str());
            crate::link::refresh_alua();
        }
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<4> for Node {
    type Data = Node;

    /// The key is never shown, only whether one is set.
    fn show(this: &Node, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let set = this.link.has_key();
        show_fmt(page, fmt!("{}\n", if set { "(set)" } else { "(not set)" }))
    }

    fn store(this: &Node, page: &[u8]) -> Result {
        let k = parsed(node::parse_key(page))?;
        this.link.set_key(k)
    }
}

#[vtable]
impl AttributeOperations<5> for Node {
    type Data = Node;

    fn show(this: &Node, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let mut w = kernel::str::Formatter::new(page);
        this.link.show(&mut w)?;
        Ok(w.bytes_written())
    }
}

#[vtable]
impl AttributeOperations<6> for Node {
    type Data = Node;

    fn show(this: &Node, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let s = &this.link.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        show_fmt(
            page,
            fmt!(
                "devices: {}\nlink_ups: {}\nlink_drops: {}\nconnect_failures: {}\nauth_failures: {}\nrejected_connections: {}\nframes_in: {}\nframes_out: {}\nforwarded_waiting: {}\nproxied_to_peer: {}\nproxied_for_peer: {}\naborts_to_peer: {}\naborted_for_peer: {}\norder_requests: {}\norder_waits: {}\norder_waiting: {}\norder_barriers: {}\npreempt_aborted: {}\npreempt_aborted_silently: {}\nreset_aborted: {}\n",
                NODE.devices(),
                n(&s.link_ups),
                n(&s.link_drops),
                n(&s.failures),
                n(&s.auth_failures),
                n(&s.rejected_connections),
                n(&s.frames_in),
                n(&s.frames_out),
                crate::forward::parked(),
                crate::forward::PROXIED_OUT.load(Ordering::Relaxed),
                crate::forward::PROXIED_IN.load(Ordering::Relaxed),
                crate::forward::ABORTS_TO_PEER.load(Ordering::Relaxed),
                crate::forward::ABORTED_FOR_PEER.load(Ordering::Relaxed),
                crate::serialize::ORDER_ASKED.load(Ordering::Relaxed),
                crate::serialize::ORDER_WAITED.load(Ordering::Relaxed),
                crate::serialize::waiting(),
                crate::serialize::ORDER_BARRIERS.load(Ordering::Relaxed),
                crate::lio::PREEMPT_ABORTED.load(Ordering::Relaxed),
                crate::lio::PREEMPT_SILENT.load(Ordering::Relaxed),
                crate::lio::RESET_ABORTED.load(Ordering::Relaxed)
            ),
        )
    }
}

#[vtable]
impl AttributeOperations<7> for Node {
    type Data = Node;

    fn show(_this: &Node, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let auto = NODE.auto_failover.load(Ordering::Relaxed);
        show_fmt(page, fmt!("{}\n", if auto { "auto" } else { "manual" }))
    }

    fn store(_this: &Node, page: &[u8]) -> Result {
        let auto = parsed(node::parse_failover(text(page)?))?;
        if NODE.auto_failover.swap(auto, Ordering::Relaxed) != auto {
            if auto {
                pr_warn!("failover=auto: a secondary makes itself primary when its peer is lost; fence the peer first (see Documentation)\n");
            } else {
                pr_info!("failover=manual\n");
            }
        }
        Ok(())
    }
}
