// SPDX-License-Identifier: GPL-2.0

//! The SCSI state the `ha` backstore owns instead of LIO's core (it sets
//! `TRANSPORT_FLAG_PASSTHROUGH_ALUA | _PGR`): the I_T nexuses seen, their
//! pending unit attentions, the persistent reservation, and the ALUA view
//! of the LUN. The decisions are the plain-Rust core's; this module keeps
//! the state under a lock and hands it to the core. No `unsafe` here.

use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use kernel::{new_spinlock, prelude::*, sync::SpinLock};

use crate::configfs::NODE;
use crate::core_logic::control::Role;
use crate::core_logic::wire::msg::{AbortLun, AbortNexus, Message, PortName, PrBegin, PrReg, UaNexus, MAX_LUN_PORTS};
use crate::core_logic::scsi::{
    alua::{self, HaView, Link, PeerRole},
    inquiry::{self, LunInfo, PortGroup, PortInfo},
    io::Completion,
    mode,
    nexus::{self, UaQueue},
    pr::{self, Nexus, NexusId, PrError, PrEvent, PrState, ProutRequest, SnapshotBuilder, SnapshotError},
    sense::Sense,
    DataIn,
};

/// I_T nexuses remembered per device. An entry whose nexus holds no
/// registration is reused for a new one when the table is full; with every
/// entry registered, new nexuses get no PR identity (PR OUT from them fails
/// with INSUFFICIENT REGISTRATION RESOURCES).
const MAX_NEXUS: usize = 2 * pr::MAX_REGISTRANTS;

/// Longest ISID text kept (LIO's `PR_REG_ISID_LEN`).
pub(crate) const ISID_LEN: usize = 16;

/// How a command's I_T nexus is identified: the initiator port (protocol,
/// name, ISID) and the relative target port it arrived through.
#[derive(Clone, Copy)]
pub(crate) struct NexusKey<'a> {
    /// SCSI protocol identifier of the fabric.
    pub(crate) proto: u8,
    /// Initiator port name (ACL name).
    pub(crate) initiator: &'a [u8],
    /// ISID as text (iSCSI), empty for other fabrics.
    pub(crate) isid: &'a [u8],
    /// Relative target port identifier.
    pub(crate) rel_port: u16,
}

struct Entry {
    id: NexusId,
    proto: u8,
    name: KVec<u8>,
    isid: [u8; ISID_LEN],
    isid_len: usize,
    rel_port: u16,
    ua: UaQueue,
    /// Logged in through the peer node (known from the interlink): its
    /// unit attentions are sent there.
    remote: bool,
}

impl Entry {
    fn isid(&self) -> &[u8] {
        self.isid.get(..self.isid_len).unwrap_or(&[])
    }

    fn matches(&self, k: &NexusKey<'_>) -> bool {
        self.rel_port == k.rel_port && self.proto == k.proto && self.isid() == k.isid && self.name == k.initiator
    }
}

struct State {
    pr: PrState,
    nexus: KVec<Entry>,
    next_id: NexusId,
    /// The peer node's ports for this LUN (from its LunState).
    peer_ports: [u16; MAX_LUN_PORTS],
    n_peer_ports: usize,
    /// Unit attentions for nexuses of the peer, to be sent there.
    peer_uas: KVec<(NexusId, Sense)>,
    /// PREEMPT AND ABORT for nexuses of the peer, to be sent there with
    /// their token.
    peer_aborts: KVec<(NexusId, u32)>,
    /// The last token given to an abort sent to the peer.
    abort_token: u32,
}

/// What a PR OUT aborts (PREEMPT AND ABORT): the I_T nexuses logged in
/// here, and whether the peer was asked to abort some of its own (the
/// token its `AbortDone` must reach).
#[derive(Default)]
pub(crate) struct Aborts {
    /// Initiator port and relative target port of each local nexus.
    pub(crate) local: KVec<(PortName, u16)>,
    /// The token of the peer's aborts.
    pub(crate) peer: Option<u32>,
}

impl State {
    /// The id of the nexus `k`, remembering it on first sight (as the
    /// peer's when `remote`).
    fn nexus_id(&mut self, k: &NexusKey<'_>, remote: bool) -> Option<NexusId> {
        if let Some(e) = self.nexus.iter_mut().find(|e| e.matches(k)) {
            // A command through a local port proves the nexus local (a
            // snapshot may have named it first).
            e.remote &= remote;
            return Some(e.id);
        }
        let mut name = KVec::with_capacity(k.initiator.len(), GFP_ATOMIC).ok()?;
        name.extend_from_slice(k.initiator, GFP_ATOMIC).ok()?;
        let mut isid = [0u8; ISID_LEN];
        let isid_len = k.isid.len().min(ISID_LEN);
        isid.get_mut(..isid_len)?.copy_from_slice(k.isid.get(..isid_len)?);
        self.next_id = self.next_id.wrapping_add(1);
        let e = Entry {
            id: self.next_id,
            proto: k.proto,
            name,
            isid,
            isid_len,
            rel_port: k.rel_port,
            ua: UaQueue::new(),
            remote,
        };
        if self.nexus.len() < MAX_NEXUS {
            self.nexus.push(e, GFP_ATOMIC).ok()?;
        } else {
            let pr = &self.pr;
            let slot = self.nexus.iter_mut().find(|x| pr.key_of(x.id).is_none())?;
            *slot = e;
        }
        Some(self.next_id)
    }

    fn entry(&mut self, id: NexusId) -> Option<&mut Entry> {
        self.nexus.iter_mut().find(|e| e.id == id)
    }

    fn transport_id(&self, id: NexusId, buf: &mut [u8]) -> usize {
        match self.nexus.iter().find(|e| e.id == id) {
            Some(e) => nexus::transport_id(e.proto, &e.name, e.isid(), buf),
            None => 0,
        }
    }
}

/// Removes the first `n` entries of `v` (those just sent).
fn drop_front<T>(v: &mut KVec<T>, n: usize) {
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        i > n
    });
}

/// Per-device SCSI state of the backstore.
#[pin_data]
pub(crate) struct Scsi {
    #[pin]
    state: SpinLock<State>,
    /// The LUN's role override (`ha_role=` in the control string):
    /// 0 none, 1 primary, 2 secondary.
    role: AtomicU8,
    /// HA identity (`lun_id=` or derived), set when enabled.
    lun_id: AtomicU32,
    /// The peer's role as last announced: 0 unknown, 1 primary, 2 secondary.
    peer_role: AtomicU8,
    /// Group states last reported (local << 8 | peer), to raise
    /// ASYMMETRIC ACCESS STATE CHANGED when they change.
    reported: AtomicU16,
    /// Bumped by every change of the PR state made here (not by a
    /// snapshot installed from the primary): the interlink sends a
    /// snapshot when it differs from the one last sent.
    pr_version: AtomicU32,
    /// A LUN RESET happened here: the peer's nexuses get its unit
    /// attention.
    reset: AtomicBool,
    /// The abort token of the last such reset (sent with its AbortLun).
    reset_token: AtomicU32,
    /// Changeable mode parameters: generation << 1 | WCE (the generation
    /// counts MODE SELECTs that changed them, here or at the peer).
    mode: AtomicU64,
    /// What is wrong between this LUN and the peer's ([`PeerNote`]), for
    /// `info`.
    note: AtomicU8,
    /// The highest token of the peer's `AbortDone`.
    abort_acked: AtomicU32,
}

/// What the interlink found wrong between a LUN and the peer's LUN of the
/// same `lun_id` (shown in the device's `info`; dmesg has the details).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerNote {
    /// Nothing (or no link).
    None = 0,
    /// Block size, capacity or unit serial differ: the peer's is not used.
    CopyDiffers = 1,
    /// Both nodes are primary for it.
    SplitBrain = 2,
    /// The linked peer has no LUN with this `lun_id`.
    Absent = 3,
}

impl PeerNote {
    /// The words `info` shows.
    pub(crate) fn words(self) -> &'static str {
        match self {
            PeerNote::None => "",
            PeerNote::CopyDiffers => "; the peer's copy differs (size, block size or serial): not used",
            PeerNote::SplitBrain => "; split brain: both nodes primary",
            PeerNote::Absent => "; the peer has no LUN with this lun_id",
        }
    }
}

impl Scsi {
    /// Empty state: no nexus known, no reservation.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Scsi {
            state <- new_spinlock!(State {
                pr: PrState::new(),
                nexus: KVec::new(),
                next_id: 0,
                peer_ports: [0; MAX_LUN_PORTS],
                n_peer_ports: 0,
                peer_uas: KVec::new(),
                peer_aborts: KVec::new(),
                abort_token: 0,
            }),
            role: AtomicU8::new(0),
            lun_id: AtomicU32::new(0),
            peer_role: AtomicU8::new(0),
            reported: AtomicU16::new(u16::MAX),
            pr_version: AtomicU32::new(1),
            reset: AtomicBool::new(false),
            reset_token: AtomicU32::new(0),
            mode: AtomicU64::new(0),
            note: AtomicU8::new(PeerNote::None as u8),
            abort_acked: AtomicU32::new(0),
        })
    }

    /// Records the LUN's role override.
    pub(crate) fn set_role(&self, role: Option<Role>) {
        let v = match role {
            None => 0,
            Some(Role::Primary) => 1,
            Some(Role::Secondary) => 2,
        };
        self.role.store(v, Ordering::Relaxed);
    }

    /// The inputs of CTL's state table for this LUN: the node's mode and
    /// link, the LUN's role (its override, else the node's `ha_role`).
    /// Without an interlink the link is offline: a primary LUN is
    /// Active/Optimized, a secondary one Unavailable (Active/Unavailable).
    pub(crate) fn view(&self) -> HaView {
        let peer = match self.peer_role.load(Ordering::Relaxed) {
            1 => PeerRole::Primary,
            2 => PeerRole::Secondary,
            _ => PeerRole::Unknown,
        };
        HaView { mode: NODE.mode(), link: NODE.link(), local: self.local_role(), peer }
    }

    /// Whether the LUN follows the node's `ha_role` (no override).
    pub(crate) fn follows_node(&self) -> bool {
        self.role.load(Ordering::Relaxed) == 0
    }

    /// Whether the linked peer announced itself primary for this LUN: a
    /// promotion here would make two primaries.
    pub(crate) fn peer_is_primary(&self) -> bool {
        self.peer_role.load(Ordering::Relaxed) == 1 && NODE.link() == Link::Online
    }

    /// This node's role for the LUN: its override, else the node's.
    pub(crate) fn local_role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::Primary,
            2 => Role::Secondary,
            _ => NODE.role(),
        }
    }

    /// Records the LUN's HA identity (at enable).
    pub(crate) fn set_lun_id(&self, id: u32) {
        self.lun_id.store(id, Ordering::Relaxed);
    }

    /// The LUN's HA identity.
    pub(crate) fn lun_id(&self) -> u32 {
        self.lun_id.load(Ordering::Relaxed)
    }

    /// Records what the peer announced for this LUN (`None`: nothing, or
    /// the link is down).
    pub(crate) fn set_peer(&self, peer: Option<(PeerRole, &[u16])>) {
        let (role, ports) = peer.unwrap_or((PeerRole::Unknown, &[]));
        let code = match role {
            PeerRole::Unknown => 0,
            PeerRole::Primary => 1,
            PeerRole::Secondary => 2,
        };
        self.peer_role.store(code, Ordering::Relaxed);
        if code == 0 {
            // Nothing to deliver them to any more.
            self.reset.store(false, Ordering::Release);
        }
        let mut st = self.state.lock();
        if code == 0 {
            st.peer_uas.clear();
            st.peer_aborts.clear();
        }
        let n = ports.len().min(MAX_LUN_PORTS);
        if let (Some(dst), Some(src)) = (st.peer_ports.get_mut(..n), ports.get(..n)) {
            dst.copy_from_slice(src);
        }
        st.n_peer_ports = n;
    }

    /// Records what is wrong between this LUN and the peer's.
    pub(crate) fn set_note(&self, note: PeerNote) {
        self.note.store(note as u8, Ordering::Relaxed);
    }

    /// What is wrong between this LUN and the peer's (as last found).
    pub(crate) fn note(&self) -> PeerNote {
        match self.note.load(Ordering::Relaxed) {
            1 => PeerNote::CopyDiffers,
            2 => PeerNote::SplitBrain,
            3 => PeerNote::Absent,
            _ => PeerNote::None,
        }
    }

    /// The group states now (local, peer), as RTPG reports them.
    pub(crate) fn group_states(&self) -> alua::GroupStates {
        alua::group_states(&self.view())
    }

    /// Raises ASYMMETRIC ACCESS STATE CHANGED on every known I_T nexus if
    /// the group states differ from the last ones seen here; returns the
    /// states when they changed.
    pub(crate) fn check_alua_change(&self) -> Option<alua::GroupStates> {
        let g = alua::group_states(&self.view());
        let code = (u16::from(g.local.code()) << 8) | u16::from(g.peer.code());
        let old = self.reported.swap(code, Ordering::Relaxed);
        if old == code {
            return None;
        }
        if old != u16::MAX {
            let mut st = self.state.lock();
            for e in st.nexus.iter_mut() {
                e.ua.push(Sense::ASYMMETRIC_ACCESS_STATE_CHANGED);
            }
        }
        Some(g)
    }

    /// Peripheral qualifier for INQUIRY data.
    pub(crate) fn qualifier(&self) -> u8 {
        alua::peripheral_qualifier(&self.view())
    }

    /// The checks before a command runs, in CTL's order: a pending unit
    /// attention (except for INQUIRY, REPORT LUNS, REQUEST SENSE), the
    /// ALUA access state, then reservation conflicts.
    pub(crate) fn admit(&self, key: Option<&NexusKey<'_>>, cdb: &[u8]) -> Result<(), Completion> {
        let flags = alua::classify(cdb);
        let mut st = self.state.lock();
        let id = key.and_then(|k| st.nexus_id(k, false));
        if let Some(id) = id {
            if !flags.no_ua {
                if let Some(ua) = st.entry(id).and_then(|e| e.ua.pop()) {
                    return Err(Completion::Check(ua));
                }
            }
        }
        alua::lun_check(&self.view(), cdb).map_err(Completion::Check)?;
        if id.is_some_and(|id| st.pr.conflicts(id, cdb)) {
            return Err(Completion::ReservationConflict);
        }
        Ok(())
    }

    /// INQUIRY: `lun` and `port` as LIO describes them.
    pub(crate) fn inquiry(
        &self,
        cdb: &[u8],
        lun: &LunInfo<'_>,
        port: &PortInfo<'_>,
        buf: &mut [u8],
    ) -> Result<DataIn, Sense> {
        inquiry::inquiry(cdb, lun, port, buf)
    }

    /// The target port group of this node's ports.
    pub(crate) fn tpg_id(&self) -> u16 {
        alua::node_tpg_id(NODE.ha_id())
    }

    /// REPORT TARGET PORT GROUPS: this node's group with `ports` and, in a
    /// pair (`ha_id` 1 or 2), the peer's group with the ports it announced,
    /// in the states of CTL's table.
    pub(crate) fn rtpg(&self, cdb: &[u8], ports: &[u16], buf: &mut [u8]) -> Result<DataIn, Sense> {
        let states = alua::group_states(&self.view());
        let local = PortGroup::ctl(self.tpg_id(), states.local, ports);
        let ha_id = NODE.ha_id();
        if ha_id == 0 {
            return inquiry::report_target_port_groups(cdb, &[local], buf);
        }
        let (peer_ports, n) = {
            let st = self.state.lock();
            (st.peer_ports, st.n_peer_ports)
        };
        let peer = PortGroup::ctl(alua::node_tpg_id(3 - ha_id), states.peer, peer_ports.get(..n).unwrap_or(&[]));
        let groups = if ha_id == 1 { [local, peer] } else { [peer, local] };
        inquiry::report_target_port_groups(cdb, &groups, buf)
    }

    /// PERSISTENT RESERVE IN.
    pub(crate) fn pr_in(&self, cdb: &[u8], buf: &mut [u8]) -> Result<DataIn, Sense> {
        let st = self.state.lock();
        st.pr.pr_in(cdb, &|id, b| st.transport_id(id, b), buf)
    }

    /// PERSISTENT RESERVE OUT from `key` with parameter list `params`; the
    /// unit attentions it raises are queued for their nexuses, and what
    /// PREEMPT AND ABORT aborts is returned (the caller aborts the local
    /// nexuses' commands; the peer's are queued for it).
    pub(crate) fn pr_out(&self, key: Option<&NexusKey<'_>>, cdb: &[u8], params: &[u8]) -> Result<Aborts, PrError> {
        let req = ProutRequest::parse(cdb, params)?;
        let k = key.ok_or(PrError::Check(Sense::INSUFFICIENT_REGISTRATION_RESOURCES))?;
        self.apply(k, false, &req)
    }

    /// Executes a parsed PR OUT for the nexus `k` (local, or the peer's
    /// when it forwarded the command here: `remote`). Unit attentions and
    /// aborts for the peer's nexuses are kept for [`Scsi::take_peer_msgs`];
    /// the local nexuses whose commands PREEMPT AND ABORT aborts are
    /// returned.
    pub(crate) fn apply(&self, k: &NexusKey<'_>, remote: bool, req: &ProutRequest) -> Result<Aborts, PrError> {
        let mut aborts = Aborts::default();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let Some(id) = st.nexus_id(k, remote) else {
            return Err(PrError::Check(Sense::INSUFFICIENT_REGISTRATION_RESOURCES));
        };
        let nexus = Nexus { id, rel_port: k.rel_port };
        let State { pr, nexus: table, peer_uas, peer_aborts, abort_token, .. } = st;
        let peer_known = self.peer_role.load(Ordering::Relaxed) != 0;
        let token = abort_token.wrapping_add(1);
        let r = pr.apply(nexus, req, &mut |ev| match ev {
            PrEvent::UnitAttention { nexus, sense } => match table.iter_mut().find(|e| e.id == nexus) {
                Some(e) if e.remote => {
                    // Bounded: a PR OUT raises at most one per registrant.
                    if peer_known && peer_uas.len() < MAX_NEXUS {
                        let _ = peer_uas.push((nexus, sense), GFP_ATOMIC);
                    }
                }
                Some(e) => e.ua.push(sense),
                None => {}
            },
            PrEvent::Abort { nexus } => match table.iter().find(|e| e.id == nexus) {
                Some(e) if e.remote => {
                    if peer_known && peer_aborts.len() < MAX_NEXUS && peer_aborts.push((nexus, token), GFP_ATOMIC).is_ok() {
                        aborts.peer = Some(token);
                    }
                }
                Some(e) => {
                    // Without memory that nexus's commands run to their end
                    // (as before PREEMPT AND ABORT was carried out).
                    if let Some(port) = PortName::new(e.proto, &e.name, e.isid()) {
                        let _ = aborts.local.push((port, e.rel_port), GFP_ATOMIC);
                    }
                }
                None => {}
            },
        });
        if aborts.peer.is_some() {
            *abort_token = token;
        }
        drop(guard);
        r?;
        self.pr_version.fetch_add(1, Ordering::Release);
        Ok(aborts)
    }

    /// The peer's `AbortDone`: its aborted commands up to `token` have
    /// ended.
    pub(crate) fn abort_done(&self, token: u32) {
        // Tokens increase (wrapping): keep the later one.
        let _ = self.abort_acked.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
            (token.wrapping_sub(t) as i32 > 0).then_some(token)
        });
    }

    /// Whether the peer answered every abort up to `token`.
    pub(crate) fn abort_answered(&self, token: u32) -> bool {
        self.abort_acked.load(Ordering::Acquire).wrapping_sub(token) as i32 >= 0
    }

    /// Whether a PR OUT received here must be executed by the peer: this
    /// node is secondary for the LUN and the linked peer is its primary.
    pub(crate) fn pr_goes_to_peer(&self) -> bool {
        self.local_role() == Role::Secondary && self.peer_is_primary()
    }

    /// Whether this node hands the LUN's IO to the peer: proxy mode
    /// (`ha_mode=2`), secondary for the LUN, and the linked peer its
    /// primary.
    pub(crate) fn proxies(&self) -> bool {
        NODE.mode() == alua::HaMode::Proxy && self.pr_goes_to_peer()
    }

    /// Whether this node sends its PR state to the peer: primary for the
    /// LUN, and the linked peer announced the same LUN as secondary.
    pub(crate) fn pr_goes_from_here(&self) -> bool {
        self.local_role() == Role::Primary
            && self.peer_role.load(Ordering::Relaxed) == 2
            && NODE.link() == Link::Online
    }

    /// The PR state's version (see `pr_version`).
    pub(crate) fn pr_version(&self) -> u32 {
        self.pr_version.load(Ordering::Acquire)
    }

    /// Puts a snapshot of the PR state into `out` (cleared first; it must
    /// have room for [`pr::MAX_REGISTRANTS`] + 2 messages, so nothing is
    /// allocated under the lock) as PrBegin, PrReg..., PrEnd numbered with
    /// the version it reflects, which is returned. `None` if a registrant
    /// cannot be named on the wire (an initiator name longer than 223).
    pub(crate) fn pr_snapshot(&self, out: &mut KVVec<Message>) -> Option<u32> {
        out.clear();
        let lun_id = self.lun_id();
        let st = self.state.lock();
        // Read under the lock: a change made after this is a new version.
        let snapshot = self.pr_version();
        let regs = st.pr.registrations();
        let res = st.pr.reservation();
        let holder = res
            .filter(|r| !r.ty.all_registrants())
            .and_then(|r| regs.iter().position(|g| g.nexus.id == r.holder))
            .and_then(|i| u16::try_from(i).ok());
        let begin = PrBegin {
            lun_id,
            snapshot,
            generation: st.pr.generation(),
            count: u16::try_from(regs.len()).ok()?,
            res_type: res.map_or(0, |r| r.ty.code()),
            holder,
        };
        out.push(Message::PrBegin(begin), GFP_ATOMIC).ok()?;
        for (i, g) in regs.iter().enumerate() {
            let e = st.nexus.iter().find(|e| e.id == g.nexus.id)?;
            let index = u16::try_from(i).ok()?;
            let reg = PrReg::new(lun_id, snapshot, index, g.nexus.rel_port, g.key, e.proto, &e.name, e.isid())?;
            out.push(Message::PrReg(reg), GFP_ATOMIC).ok()?;
        }
        out.push(Message::PrEnd(lun_id, snapshot), GFP_ATOMIC).ok()?;
        Some(snapshot)
    }

    /// The local handle of the I_T nexus the peer names `port` through
    /// relative port `rel_port` (remembered on first sight).
    pub(crate) fn map_nexus(&self, port: &PortName, rel_port: u16) -> Option<Nexus> {
        let k = NexusKey { proto: port.proto, initiator: port.name(), isid: port.isid(), rel_port };
        let id = self.state.lock().nexus_id(&k, true)?;
        Some(Nexus { id, rel_port })
    }

    /// Notes a LUN RESET executed here (LIO's TMR): the peer establishes its
    /// unit attention for its nexuses and aborts its commands of the LUN
    /// (UaAll, AbortLun). The token the peer's AbortDone must reach, if
    /// they are queued for the peer.
    pub(crate) fn note_reset(&self) -> Option<u32> {
        // Only while the peer has the LUN: a later link up must not
        // deliver a stale attention.
        if self.peer_role.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let token = {
            let mut st = self.state.lock();
            st.abort_token = st.abort_token.wrapping_add(1);
            st.abort_token
        };
        self.reset_token.store(token, Ordering::Release);
        self.reset.store(true, Ordering::Release);
        Some(token)
    }

    /// Moves the unit attentions due at the peer into `out` (cleared first;
    /// room as for [`Scsi::pr_snapshot`], extra ones wait for the next
    /// call): `UaAll` and `AbortLun` after a LUN RESET, `UaNexus` for the
    /// peer's nexuses.
    pub(crate) fn take_peer_msgs(&self, out: &mut KVVec<Message>) {
        out.clear();
        let lun_id = self.lun_id();
        if self.reset.swap(false, Ordering::AcqRel) {
            let s = Sense::BUS_DEVICE_RESET;
            let _ = out.push(Message::UaAll(lun_id, [s.asc, s.ascq]), GFP_ATOMIC);
            // After the attention: its AbortDone says both were handled.
            let token = self.reset_token.load(Ordering::Acquire);
            let _ = out.push(Message::AbortLun(AbortLun { lun_id, token }), GFP_ATOMIC);
        }
        let mut st = self.state.lock();
        let State { nexus, peer_uas, peer_aborts, .. } = &mut *st;
        let room = out.capacity().saturating_sub(out.len());
        let n = peer_uas.len().min(room);
        for (id, sense) in peer_uas.iter().take(n) {
            let Some(e) = nexus.iter().find(|e| e.id == *id) else { continue };
            let Some(port) = PortName::new(e.proto, &e.name, e.isid()) else { continue };
            let ua = UaNexus { lun_id, rel_port: e.rel_port, asc: [sense.asc, sense.ascq], port };
            let _ = out.push(Message::UaNexus(ua), GFP_ATOMIC);
        }
        drop_front(peer_uas, n);
        // After the unit attentions: REGISTRATIONS PREEMPTED reaches the
        // nexus no later than its aborted commands' status.
        let room = out.capacity().saturating_sub(out.len());
        let n = peer_aborts.len().min(room);
        for (id, token) in peer_aborts.iter().take(n) {
            let Some(e) = nexus.iter().find(|e| e.id == *id) else { continue };
            let Some(port) = PortName::new(e.proto, &e.name, e.isid()) else { continue };
            let a = AbortNexus { lun_id, token: *token, rel_port: e.rel_port, port };
            let _ = out.push(Message::AbortNexus(a), GFP_ATOMIC);
        }
        drop_front(peer_aborts, n);
    }

    /// Whether unit attentions or aborts wait to be sent to the peer.
    pub(crate) fn has_peer_msgs(&self) -> bool {
        if self.reset.load(Ordering::Acquire) {
            return true;
        }
        let st = self.state.lock();
        !st.peer_uas.is_empty() || !st.peer_aborts.is_empty()
    }

    /// Establishes a unit attention from the peer: for its nexus `port`
    /// through `rel_port` (a local one), or with `None` for every local
    /// nexus of the LUN.
    pub(crate) fn ua_from_peer(&self, nexus: Option<(&PortName, u16)>, asc: [u8; 2]) {
        match nexus {
            None => {
                let sense = Sense::unit_attention(asc[0], asc[1]);
                let mut st = self.state.lock();
                st.nexus.iter_mut().filter(|e| !e.remote).for_each(|e| e.ua.push(sense));
            }
            Some((port, rel_port)) => self.ua_local(port, rel_port, asc),
        }
    }

    /// Establishes a unit attention for the local nexus of `port` through
    /// `rel_port`.
    pub(crate) fn ua_local(&self, port: &PortName, rel_port: u16, asc: [u8; 2]) {
        let sense = Sense::unit_attention(asc[0], asc[1]);
        let mut st = self.state.lock();
        let k = NexusKey { proto: port.proto, initiator: port.name(), isid: port.isid(), rel_port };
        if let Some(id) = st.nexus_id(&k, false) {
            if let Some(e) = st.entry(id) {
                e.ua.push(sense);
            }
        }
    }

    /// Mode parameters as configured: the backing device's write cache
    /// (at enable).
    pub(crate) fn mode_init(&self, wce: bool) {
        self.mode.store(u64::from(wce), Ordering::Relaxed);
    }

    /// The mode parameters' generation and WCE.
    pub(crate) fn mode(&self) -> (u32, bool) {
        let v = self.mode.load(Ordering::Acquire);
        ((v >> 1) as u32, v & 1 != 0)
    }

    /// Whether the write cache is enabled (caching page WCE): when not,
    /// every write goes through to the medium (FUA).
    pub(crate) fn wce(&self) -> bool {
        self.mode().1
    }

    /// MODE SELECT from nexus `key` set WCE to `wce`: a change bumps the
    /// generation (the peer follows) and establishes MODE PARAMETERS
    /// CHANGED for every other I_T nexus of this node. Returns whether it
    /// changed.
    pub(crate) fn mode_select(&self, key: Option<&NexusKey<'_>>, wce: bool) -> bool {
        let mut st = self.state.lock();
        let (gen, cur) = self.mode();
        if cur == wce {
            return false;
        }
        self.store_mode(gen.wrapping_add(1), wce);
        let me = key.and_then(|k| st.nexus_id(k, false));
        for e in st.nexus.iter_mut().filter(|e| !e.remote && Some(e.id) != me) {
            e.ua.push(Sense::MODE_PARAMETERS_CHANGED);
        }
        true
    }

    /// The peer holds generation `gen` with `wce`: adopted when newer, or
    /// when as new and the peer is the LUN's primary; a change of WCE
    /// establishes MODE PARAMETERS CHANGED for every I_T nexus of this
    /// node. Returns whether WCE changed.
    pub(crate) fn mode_from_peer(&self, gen: u32, wce: bool, peer_primary: bool) -> bool {
        let mut st = self.state.lock();
        let local = self.mode();
        if !mode::adopt(local, (gen, wce), peer_primary) {
            return false;
        }
        self.store_mode(gen, wce);
        if local.1 == wce {
            return false;
        }
        for e in st.nexus.iter_mut().filter(|e| !e.remote) {
            e.ua.push(Sense::MODE_PARAMETERS_CHANGED);
        }
        true
    }

    /// How a log line names write cache state `wce`.
    pub(crate) fn wce_words(wce: bool) -> &'static str {
        if wce {
            "enabled (WCE 1)"
        } else {
            "disabled, writes go through (WCE 0)"
        }
    }

    fn store_mode(&self, gen: u32, wce: bool) {
        self.mode.store((u64::from(gen) << 1) | u64::from(wce), Ordering::Release);
    }

    /// Replaces the PR state with the primary's snapshot in `b`.
    pub(crate) fn install(&self, b: &SnapshotBuilder, snapshot: u32) -> Result<(), SnapshotError> {
        let mut st = self.state.lock();
        b.finish(self.lun_id(), snapshot, &mut st.pr)
    }
}
