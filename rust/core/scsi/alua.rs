// SPDX-License-Identifier: GPL-2.0

//! Implicit ALUA as FreeBSD CTL HA does it.
//!
//! * [`AccessState`]: the asymmetric access states reported and enforced;
//! * [`classify`]: CTL's per-command flags `OK_ON_UNAVAIL`, `OK_ON_STANDBY`,
//!   `RUN_HERE` and `NO_SENSE` (freebsd-ctl-ha-behaviour.md §1.3 step 2, §1.5);
//! * [`check_access`]: refusal of a command in a given state (§1.3, §1.6);
//! * [`group_states`]: CTL's table from (mode, link, roles) to the states of
//!   the local and the peer target port group (§1.4);
//! * [`lun_check`]: the HA part of CTL's `ctl_scsiio_lun_check()` in its
//!   order (§1.3 step 3).

use super::super::control::Role;
use super::opcode as op;
use super::sense::Sense;

/// Asymmetric access states (SPC-4 §5.15.2.4; codes as in RTPG).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum AccessState {
    /// 0h Active/Optimized.
    ActiveOptimized = 0x0,
    /// 1h Active/Non-optimized.
    ActiveNonOptimized = 0x1,
    /// 2h Standby.
    Standby = 0x2,
    /// 3h Unavailable.
    Unavailable = 0x3,
    /// Fh Transitioning.
    Transitioning = 0xF,
}

impl AccessState {
    /// The 4-bit code.
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    /// The state for a code, `None` for states CTL never reports
    /// (LBA dependent, Offline, reserved).
    pub(crate) fn from_code(c: u8) -> Option<AccessState> {
        Some(match c {
            0x0 => AccessState::ActiveOptimized,
            0x1 => AccessState::ActiveNonOptimized,
            0x2 => AccessState::Standby,
            0x3 => AccessState::Unavailable,
            0xF => AccessState::Transitioning,
            _ => return None,
        })
    }
}

impl core::fmt::Display for AccessState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AccessState::ActiveOptimized => "active/optimized",
            AccessState::ActiveNonOptimized => "active/non-optimized",
            AccessState::Standby => "standby",
            AccessState::Unavailable => "unavailable",
            AccessState::Transitioning => "transitioning",
        })
    }
}

/// Supported-states byte of an RTPG descriptor as CTL reports it:
/// T_SUP | U_SUP | S_SUP | AN_SUP | AO_SUP = 8Fh (no LBD, no Offline;
/// freebsd-ctl-ha-behaviour.md §1.4).
pub(crate) const SUPPORTED_STATES: u8 = 0x8F;

/// RTPG status code CTL reports: 02h, altered by implicit ALUA (§1.4).
pub(crate) const STATUS_ALTERED_IMPLICIT: u8 = 0x02;

/// Refusal of SET TARGET PORT GROUPS (MAINTENANCE OUT A4h/0Ah): CTL has no
/// explicit ALUA (freebsd-ctl-ha-behaviour.md §1.4) and answers a service
/// action it does not implement with INVALID FIELD IN CDB pointing at byte 1
/// bit 4 (the service action field), as its command validation does for any
/// unimplemented service action.
pub(crate) const STPG_REFUSAL: Sense = Sense::invalid_cdb_field(1, Some(4));

/// Target port group of every port of a node not in HA (`ha_id` 0), and of
/// `ha_shared` ports (§6.2).
pub(crate) const SHARED_TPG_ID: u16 = 1;

/// State of the only port group of a node not in HA (`ha_id` 0): CTL acts
/// as primary (§1.1).
pub(crate) const SINGLE_NODE_STATE: AccessState = AccessState::ActiveOptimized;

/// Target port group id of node `ha_id`'s ports: 2 for node 1, 3 for node 2,
/// [`SHARED_TPG_ID`] when the node is not in HA (0, or above 2, which CTL
/// treats like 0; §1.1, §6.2).
pub(crate) fn node_tpg_id(ha_id: u8) -> u16 {
    match ha_id {
        1 => 2,
        2 => 3,
        _ => SHARED_TPG_ID,
    }
}

/// CTL's command table flags relevant to HA (§1.3, §1.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CmdFlags {
    /// Allowed when the port is Unavailable or Transitioning.
    pub(crate) ok_on_unavail: bool,
    /// Allowed on an Active/Standby secondary (Standby state). Implied by
    /// `ok_on_unavail`.
    pub(crate) ok_on_standby: bool,
    /// Never forwarded to the primary; runs on the receiving node.
    pub(crate) run_here: bool,
    /// Pending unit attentions are not reported for this command
    /// (REQUEST SENSE, INQUIRY, REPORT LUNS).
    pub(crate) no_ua: bool,
}

/// Flags of the command in `cdb` per CTL's `ctl_cmd_table.c`
/// (freebsd-ctl-ha-behaviour.md §1.5):
///
/// * `OK_ON_UNAVAIL`: REQUEST SENSE, INQUIRY, REPORT LUNS, REPORT TARGET PORT
///   GROUPS, REPORT SUPPORTED OPCODES, REPORT SUPPORTED TMFs, REPORT
///   TIMESTAMP;
/// * `OK_ON_STANDBY`: those, plus MODE SENSE(6/10), MODE SELECT(6/10), LOG
///   SENSE, RESERVE(6/10), RELEASE(6/10), PERSISTENT RESERVE IN (the four
///   service actions), PERSISTENT RESERVE OUT (REGISTER, RESERVE, RELEASE,
///   CLEAR, PREEMPT, PREEMPT AND ABORT, REGISTER AND IGNORE; not REGISTER
///   AND MOVE), READ BUFFER(10/16) modes data, descriptor and echo, WRITE
///   BUFFER mode data, RECEIVE COPY OPERATING PARAMETERS;
/// * `RUN_HERE`: REQUEST SENSE, REPORT LUNS;
/// * no UA report: REQUEST SENSE, INQUIRY, REPORT LUNS (§1.3 step 2).
///
/// Everything else, TEST UNIT READY included, has no flag. An empty CDB has
/// no flag.
pub(crate) fn classify(cdb: &[u8]) -> CmdFlags {
    let unavail = CmdFlags {
        ok_on_unavail: true,
        ok_on_standby: true,
        run_here: false,
        no_ua: false,
    };
    let standby = CmdFlags {
        ok_on_standby: true,
        ..CmdFlags::default()
    };
    let Some(&opc) = cdb.first() else {
        return CmdFlags::default();
    };
    let sa = op::service_action(cdb);
    match opc {
        op::REQUEST_SENSE | op::REPORT_LUNS => CmdFlags {
            run_here: true,
            no_ua: true,
            ..unavail
        },
        op::INQUIRY => CmdFlags {
            no_ua: true,
            ..unavail
        },
        op::MAINTENANCE_IN => match sa {
            op::SA_REPORT_TARGET_PORT_GROUPS
            | op::SA_REPORT_SUPPORTED_OPCODES
            | op::SA_REPORT_SUPPORTED_TMFS
            | op::SA_REPORT_TIMESTAMP => unavail,
            _ => CmdFlags::default(),
        },
        op::MODE_SENSE_6
        | op::MODE_SENSE_10
        | op::MODE_SELECT_6
        | op::MODE_SELECT_10
        | op::LOG_SENSE
        | op::RESERVE_6
        | op::RESERVE_10
        | op::RELEASE_6
        | op::RELEASE_10 => standby,
        op::PERSISTENT_RESERVE_IN if sa <= 0x03 => standby,
        op::PERSISTENT_RESERVE_OUT if sa <= 0x06 => standby,
        op::READ_BUFFER_10 | op::READ_BUFFER_16
            if matches!(
                sa,
                op::BUFFER_MODE_DATA | op::BUFFER_MODE_DESCRIPTOR | op::BUFFER_MODE_ECHO
            ) =>
        {
            standby
        }
        op::WRITE_BUFFER if sa == op::BUFFER_MODE_DATA => standby,
        // Not in CTL's set, but in LIO's: a Linux initiator sizes a SCSI
        // disk with READ CAPACITY when it finds the path, and dm-multipath
        // cannot put a standby path of size 0 into the map.
        op::READ_CAPACITY_10 => standby,
        op::SERVICE_ACTION_IN_16 if sa == op::SA_READ_CAPACITY_16 => standby,
        op::RECEIVE_COPY_RESULTS if sa == op::SA_RECEIVE_COPY_OPERATING_PARAMETERS => standby,
        _ => CmdFlags::default(),
    }
}

/// Whether the command in `cdb` may run on a port group in `state`; the
/// refusal sense otherwise (freebsd-ctl-ha-behaviour.md §1.3, §1.6):
///
/// * Active/Optimized, Active/Non-optimized: everything;
/// * Standby: `OK_ON_STANDBY` commands, else NOT READY 04h/0Bh;
/// * Unavailable: `OK_ON_UNAVAIL` commands, else NOT READY 04h/0Ch;
/// * Transitioning: `OK_ON_UNAVAIL` commands, else NOT READY 04h/0Ah.
pub(crate) fn check_access(state: AccessState, cdb: &[u8]) -> Result<(), Sense> {
    let f = classify(cdb);
    match state {
        AccessState::ActiveOptimized | AccessState::ActiveNonOptimized => Ok(()),
        AccessState::Standby if f.ok_on_standby => Ok(()),
        AccessState::Standby => Err(Sense::ALUA_STANDBY),
        AccessState::Unavailable if f.ok_on_unavail => Ok(()),
        AccessState::Unavailable => Err(Sense::ALUA_UNAVAILABLE),
        AccessState::Transitioning if f.ok_on_unavail => Ok(()),
        AccessState::Transitioning => Err(Sense::ALUA_TRANSITIONING),
    }
}

/// The node's `ha_mode` (freebsd-ctl-ha-behaviour.md §1.1, §1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HaMode {
    /// 0: Active/Standby; the secondary serves discovery and reservations.
    ActiveStandby = 0,
    /// 1: Active/Active, serialize only (shared storage).
    SerializeOnly = 1,
    /// 2: Active/Active, proxy (commands and data forwarded to the primary).
    Proxy = 2,
}

impl HaMode {
    /// The mode for an `ha_mode` value.
    pub(crate) fn from_u32(v: u32) -> Option<HaMode> {
        match v {
            0 => Some(HaMode::ActiveStandby),
            1 => Some(HaMode::SerializeOnly),
            2 => Some(HaMode::Proxy),
            _ => None,
        }
    }
}

/// State of the interlink as CTL's `ha_link` sees it (§1.1, §2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Link {
    /// No peer configured (`ha_peer` empty): CTL's OFFLINE (0). This is the
    /// Active/Unavailable mode of §1.2.
    Offline,
    /// Peer configured but not (yet) logged in: CTL's UNKNOWN (1). The
    /// module's `connecting` and `authenticating` both map here.
    Connecting,
    /// Peer logged in: CTL's ONLINE (2).
    Online,
}

/// What this node knows about the peer's role for a LUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerRole {
    /// Nothing known (no LUN sync received).
    Unknown,
    /// The peer announced itself primary (CTL's `CTL_LUN_PEER_SC_PRIMARY`).
    Primary,
    /// The peer announced itself secondary.
    Secondary,
}

/// Inputs of CTL's state table for one LUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HaView {
    /// The node's `ha_mode`.
    pub(crate) mode: HaMode,
    /// The interlink state.
    pub(crate) link: Link,
    /// This node's role for the LUN (node `ha_role` or the LUN override).
    pub(crate) local: Role,
    /// The peer's role for the LUN as last announced.
    pub(crate) peer: PeerRole,
}

impl HaView {
    /// Whether the peer counts as primary. Like CTL's `PEER_SC_PRIMARY`,
    /// which is only set while the link is up (§1.4), a peer role learned
    /// earlier is ignored unless the link is [`Link::Online`].
    pub(crate) fn peer_primary(&self) -> bool {
        self.link == Link::Online && self.peer == PeerRole::Primary
    }

    /// Both nodes primary while the link is up: split brain. CTL calls it
    /// illegal without defining states (§1.2); tcm_ha reports both groups
    /// Transitioning until an administrator resolves it (issue 5, req. 6).
    pub(crate) fn split_brain(&self) -> bool {
        self.local == Role::Primary && self.peer_primary()
    }
}

/// States of the two HA target port groups for one LUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GroupStates {
    /// This node's group (CTL's `ts`).
    pub(crate) local: AccessState,
    /// The peer node's group (CTL's `os`).
    pub(crate) peer: AccessState,
}

/// CTL's REPORT TARGET PORT GROUPS state table
/// (freebsd-ctl-ha-behaviour.md §1.4):
///
/// | local role | link | mode | local | peer |
/// |---|---|---|---|---|
/// | primary | offline | any | AO | Unavailable |
/// | primary | connecting | any | AO | Transitioning |
/// | primary | online | A/S | AO | Standby |
/// | primary | online | SER/proxy | AO | Active/Non-optimized |
/// | secondary, peer primary | online | A/S | Standby | AO |
/// | secondary, peer primary | online | SER/proxy | Active/Non-optimized | AO |
/// | secondary, no primary | offline | any | Unavailable | AO |
/// | secondary, no primary | connecting | any | Transitioning | AO |
/// | secondary, no primary | online | any | Transitioning | Transitioning |
///
/// Split brain (both primary, link up) gives Transitioning for both groups
/// (see [`HaView::split_brain`]). The shared group, if any, reports `local`.
pub(crate) fn group_states(v: &HaView) -> GroupStates {
    use AccessState::*;
    // State of the non-primary side when some node is primary.
    let x = match (v.link, v.mode) {
        (Link::Offline, _) => Unavailable,
        (Link::Connecting, _) => Transitioning,
        (Link::Online, HaMode::ActiveStandby) => Standby,
        (Link::Online, HaMode::SerializeOnly | HaMode::Proxy) => ActiveNonOptimized,
    };
    if v.split_brain() {
        return GroupStates {
            local: Transitioning,
            peer: Transitioning,
        };
    }
    if v.local == Role::Primary {
        return GroupStates {
            local: ActiveOptimized,
            peer: x,
        };
    }
    if v.peer_primary() {
        return GroupStates {
            local: x,
            peer: ActiveOptimized,
        };
    }
    match v.link {
        Link::Offline => GroupStates {
            local: Unavailable,
            peer: ActiveOptimized,
        },
        Link::Connecting => GroupStates {
            local: Transitioning,
            peer: ActiveOptimized,
        },
        Link::Online => GroupStates {
            local: Transitioning,
            peer: Transitioning,
        },
    }
}

/// Peripheral qualifier of standard INQUIRY (and VPD) data: 000b when the
/// LUN is primary here or the link is at least connecting, else 001b
/// ("LU offline"; freebsd-ctl-ha-behaviour.md §1.4, last bullet).
pub(crate) fn peripheral_qualifier(v: &HaView) -> u8 {
    if v.local == Role::Primary || v.link >= Link::Connecting {
        0
    } else {
        1
    }
}

/// The HA checks of CTL's `ctl_scsiio_lun_check()` in CTL's order
/// (freebsd-ctl-ha-behaviour.md §1.3 step 3), for a command received on
/// this node:
///
/// 1. LUN primary here (and no split brain): allowed;
/// 2. link offline, command not `OK_ON_UNAVAIL`: 04h/0Ch;
/// 3. peer not known primary, command not `OK_ON_UNAVAIL`: 04h/0Ah;
/// 4. Active/Standby, command not `OK_ON_STANDBY`: 04h/0Bh;
/// 5. otherwise allowed (forwarded or serialized by the caller).
///
/// With split brain the LUN is Transitioning on both nodes, so step 3
/// applies to the primary too. For every [`HaView`] this agrees with
/// `check_access(group_states(v).local, cdb)`.
pub(crate) fn lun_check(v: &HaView, cdb: &[u8]) -> Result<(), Sense> {
    let f = classify(cdb);
    if v.local == Role::Primary && !v.split_brain() {
        return Ok(());
    }
    if v.link == Link::Offline && !f.ok_on_unavail {
        return Err(Sense::ALUA_UNAVAILABLE);
    }
    if (!v.peer_primary() || v.split_brain()) && !f.ok_on_unavail {
        return Err(Sense::ALUA_TRANSITIONING);
    }
    if v.mode == HaMode::ActiveStandby && !f.ok_on_standby {
        return Err(Sense::ALUA_STANDBY);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessState::*;

    const MODES: [HaMode; 3] = [HaMode::ActiveStandby, HaMode::SerializeOnly, HaMode::Proxy];
    const LINKS: [Link; 3] = [Link::Offline, Link::Connecting, Link::Online];
    const PEERS: [PeerRole; 3] = [PeerRole::Unknown, PeerRole::Primary, PeerRole::Secondary];
    const ROLES: [Role; 2] = [Role::Primary, Role::Secondary];

    fn views() -> impl Iterator<Item = HaView> {
        MODES.iter().flat_map(|&mode| {
            LINKS.iter().flat_map(move |&link| {
                ROLES.iter().flat_map(move |&local| {
                    PEERS.iter().map(move |&peer| HaView {
                        mode,
                        link,
                        local,
                        peer,
                    })
                })
            })
        })
    }

    /// The §1.4 table written out independently, row by row.
    fn expected(v: &HaView) -> (AccessState, AccessState) {
        let active_active = v.mode != HaMode::ActiveStandby;
        let peer_primary = v.peer == PeerRole::Primary;
        match (v.local, v.link) {
            (Role::Primary, Link::Online) if peer_primary => (Transitioning, Transitioning),
            (Role::Primary, Link::Offline) => (ActiveOptimized, Unavailable),
            (Role::Primary, Link::Connecting) => (ActiveOptimized, Transitioning),
            (Role::Primary, Link::Online) if active_active => (ActiveOptimized, ActiveNonOptimized),
            (Role::Primary, Link::Online) => (ActiveOptimized, Standby),
            (Role::Secondary, Link::Online) if peer_primary && active_active => {
                (ActiveNonOptimized, ActiveOptimized)
            }
            (Role::Secondary, Link::Online) if peer_primary => (Standby, ActiveOptimized),
            (Role::Secondary, Link::Offline) => (Unavailable, ActiveOptimized),
            (Role::Secondary, Link::Connecting) => (Transitioning, ActiveOptimized),
            (Role::Secondary, Link::Online) => (Transitioning, Transitioning),
        }
    }

    #[test]
    fn state_table_every_combination() {
        let mut n = 0;
        for v in views() {
            let g = group_states(&v);
            assert_eq!((g.local, g.peer), expected(&v), "{v:?}");
            n += 1;
        }
        assert_eq!(n, 54);
    }

    #[test]
    fn state_table_rows_from_reference() {
        let v = |mode, link, local, peer| HaView {
            mode,
            link,
            local,
            peer,
        };
        let g = |v: HaView| {
            let s = group_states(&v);
            (s.local, s.peer)
        };
        use HaMode::*;
        use Link::*;
        use PeerRole as P;
        let p = Role::Primary;
        let s = Role::Secondary;
        assert_eq!(
            g(v(Proxy, Offline, p, P::Unknown)),
            (ActiveOptimized, Unavailable)
        );
        assert_eq!(
            g(v(ActiveStandby, Connecting, p, P::Unknown)),
            (ActiveOptimized, Transitioning)
        );
        assert_eq!(
            g(v(ActiveStandby, Online, p, P::Secondary)),
            (ActiveOptimized, Standby)
        );
        assert_eq!(
            g(v(SerializeOnly, Online, p, P::Secondary)),
            (ActiveOptimized, ActiveNonOptimized)
        );
        assert_eq!(
            g(v(Proxy, Online, p, P::Secondary)),
            (ActiveOptimized, ActiveNonOptimized)
        );
        assert_eq!(
            g(v(ActiveStandby, Online, s, P::Primary)),
            (Standby, ActiveOptimized)
        );
        assert_eq!(
            g(v(SerializeOnly, Online, s, P::Primary)),
            (ActiveNonOptimized, ActiveOptimized)
        );
        assert_eq!(
            g(v(Proxy, Online, s, P::Primary)),
            (ActiveNonOptimized, ActiveOptimized)
        );
        assert_eq!(
            g(v(ActiveStandby, Offline, s, P::Unknown)),
            (Unavailable, ActiveOptimized)
        );
        assert_eq!(
            g(v(Proxy, Connecting, s, P::Secondary)),
            (Transitioning, ActiveOptimized)
        );
        assert_eq!(
            g(v(SerializeOnly, Online, s, P::Secondary)),
            (Transitioning, Transitioning)
        );
        assert_eq!(
            g(v(SerializeOnly, Online, s, P::Unknown)),
            (Transitioning, Transitioning)
        );
        // A stale "peer primary" is ignored while the link is down.
        assert_eq!(
            g(v(ActiveStandby, Offline, s, P::Primary)),
            (Unavailable, ActiveOptimized)
        );
        assert_eq!(
            g(v(Proxy, Connecting, s, P::Primary)),
            (Transitioning, ActiveOptimized)
        );
        // Split brain.
        assert_eq!(
            g(v(Proxy, Online, p, P::Primary)),
            (Transitioning, Transitioning)
        );
        assert_eq!(
            g(v(Proxy, Offline, p, P::Primary)),
            (ActiveOptimized, Unavailable)
        );
    }

    const STANDBY_ONLY: &[&[u8]] = &[
        &[op::MODE_SENSE_6],
        &[op::MODE_SENSE_10],
        &[op::MODE_SELECT_6],
        &[op::MODE_SELECT_10],
        &[op::LOG_SENSE],
        &[op::RESERVE_6],
        &[op::RESERVE_10],
        &[op::RELEASE_6],
        &[op::RELEASE_10],
        &[op::PERSISTENT_RESERVE_IN, 0x00],
        &[op::PERSISTENT_RESERVE_IN, 0x01],
        &[op::PERSISTENT_RESERVE_IN, 0x02],
        &[op::PERSISTENT_RESERVE_IN, 0x03],
        &[op::PERSISTENT_RESERVE_OUT, 0x00],
        &[op::PERSISTENT_RESERVE_OUT, 0x01],
        &[op::PERSISTENT_RESERVE_OUT, 0x02],
        &[op::PERSISTENT_RESERVE_OUT, 0x03],
        &[op::PERSISTENT_RESERVE_OUT, 0x04],
        &[op::PERSISTENT_RESERVE_OUT, 0x05],
        &[op::PERSISTENT_RESERVE_OUT, 0x06],
        &[op::READ_BUFFER_10, 0x02],
        &[op::READ_BUFFER_10, 0x03],
        &[op::READ_BUFFER_10, 0x0A],
        &[op::READ_BUFFER_16, 0x02],
        &[op::READ_BUFFER_16, 0x03],
        &[op::READ_BUFFER_16, 0x0A],
        &[op::WRITE_BUFFER, 0x02],
        &[op::RECEIVE_COPY_RESULTS, 0x03],
        &[op::READ_CAPACITY_10],
        &[op::SERVICE_ACTION_IN_16, 0x10],
    ];

    const UNAVAIL_OK: &[&[u8]] = &[
        &[op::REQUEST_SENSE],
        &[op::INQUIRY],
        &[op::REPORT_LUNS],
        &[op::MAINTENANCE_IN, 0x0A],
        &[op::MAINTENANCE_IN, 0x0C],
        &[op::MAINTENANCE_IN, 0x0D],
        &[op::MAINTENANCE_IN, 0x0F],
    ];

    const NEITHER: &[&[u8]] = &[
        &[],
        &[op::TEST_UNIT_READY],
        &[op::READ_10],
        &[op::WRITE_10],
        &[op::READ_16],
        &[op::WRITE_16],
        &[op::SERVICE_ACTION_IN_16, 0x12],
        &[op::SYNCHRONIZE_CACHE_10],
        &[op::UNMAP],
        &[op::COMPARE_AND_WRITE],
        &[op::MAINTENANCE_IN, 0x0B],
        &[op::MAINTENANCE_OUT, 0x0A],
        &[op::PERSISTENT_RESERVE_IN, 0x04],
        &[op::PERSISTENT_RESERVE_OUT, 0x07],
        &[op::READ_BUFFER_10, 0x00],
        &[op::WRITE_BUFFER, 0x05],
        &[op::RECEIVE_COPY_RESULTS, 0x00],
        &[op::LOG_SELECT],
    ];

    #[test]
    fn classification() {
        for c in UNAVAIL_OK {
            let f = classify(c);
            assert!(f.ok_on_unavail && f.ok_on_standby, "{c:x?}");
        }
        for c in STANDBY_ONLY {
            let f = classify(c);
            assert!(
                !f.ok_on_unavail && f.ok_on_standby && !f.run_here && !f.no_ua,
                "{c:x?}"
            );
        }
        for c in NEITHER {
            assert_eq!(classify(c), CmdFlags::default(), "{c:x?}");
        }
        let rs = classify(&[op::REQUEST_SENSE]);
        assert!(rs.run_here && rs.no_ua);
        let rl = classify(&[op::REPORT_LUNS]);
        assert!(rl.run_here && rl.no_ua);
        let inq = classify(&[op::INQUIRY]);
        assert!(!inq.run_here && inq.no_ua);
        let rtpg = classify(&[op::MAINTENANCE_IN, 0xEA]);
        assert!(rtpg.ok_on_unavail && !rtpg.run_here && !rtpg.no_ua);
    }

    #[test]
    fn access_per_state() {
        for c in UNAVAIL_OK.iter().chain(STANDBY_ONLY).chain(NEITHER) {
            assert_eq!(check_access(ActiveOptimized, c), Ok(()));
            assert_eq!(check_access(ActiveNonOptimized, c), Ok(()));
        }
        for c in UNAVAIL_OK {
            for s in [Standby, Unavailable, Transitioning] {
                assert_eq!(check_access(s, c), Ok(()));
            }
        }
        for c in STANDBY_ONLY {
            assert_eq!(check_access(Standby, c), Ok(()));
            assert_eq!(check_access(Unavailable, c), Err(Sense::ALUA_UNAVAILABLE));
            assert_eq!(
                check_access(Transitioning, c),
                Err(Sense::ALUA_TRANSITIONING)
            );
        }
        for c in NEITHER {
            assert_eq!(check_access(Standby, c), Err(Sense::ALUA_STANDBY));
            assert_eq!(check_access(Unavailable, c), Err(Sense::ALUA_UNAVAILABLE));
            assert_eq!(
                check_access(Transitioning, c),
                Err(Sense::ALUA_TRANSITIONING)
            );
        }
    }

    #[test]
    fn lun_check_agrees_with_states() {
        for v in views() {
            for c in UNAVAIL_OK.iter().chain(STANDBY_ONLY).chain(NEITHER) {
                assert_eq!(
                    lun_check(&v, c),
                    check_access(group_states(&v).local, c),
                    "{v:?} {c:x?}"
                );
            }
        }
    }

    #[test]
    fn lun_check_order() {
        // A stale peer-primary with the link offline: unavailable wins.
        let v = HaView {
            mode: HaMode::ActiveStandby,
            link: Link::Offline,
            local: Role::Secondary,
            peer: PeerRole::Primary,
        };
        assert_eq!(lun_check(&v, &[op::READ_10]), Err(Sense::ALUA_UNAVAILABLE));
        assert_eq!(
            lun_check(&v, &[op::MODE_SENSE_6]),
            Err(Sense::ALUA_UNAVAILABLE)
        );
        let v = HaView {
            link: Link::Online,
            ..v
        };
        assert_eq!(
            lun_check(&v, &[op::TEST_UNIT_READY]),
            Err(Sense::ALUA_STANDBY)
        );
        assert_eq!(lun_check(&v, &[op::PERSISTENT_RESERVE_OUT, 1]), Ok(()));
    }

    #[test]
    fn peripheral_qualifier_rule() {
        for v in views() {
            let want = if v.local == Role::Primary || v.link != Link::Offline {
                0
            } else {
                1
            };
            assert_eq!(peripheral_qualifier(&v), want, "{v:?}");
        }
    }

    #[test]
    fn codes_and_ids() {
        for s in [
            ActiveOptimized,
            ActiveNonOptimized,
            Standby,
            Unavailable,
            Transitioning,
        ] {
            assert_eq!(AccessState::from_code(s.code()), Some(s));
        }
        assert_eq!(AccessState::from_code(4), None);
        assert_eq!(AccessState::from_code(0xE), None);
        assert_eq!(node_tpg_id(0), 1);
        assert_eq!(node_tpg_id(1), 2);
        assert_eq!(node_tpg_id(2), 3);
        assert_eq!(node_tpg_id(3), 1);
        assert_eq!(HaMode::from_u32(2), Some(HaMode::Proxy));
        assert_eq!(HaMode::from_u32(3), None);
        assert_eq!(SINGLE_NODE_STATE, ActiveOptimized);
    }
}
