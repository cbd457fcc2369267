// SPDX-License-Identifier: GPL-2.0

//! The SPC commands the backstore answers itself because LIO's core skips
//! or cannot do them under PASSTHROUGH_ALUA/PGR
//! (lio-and-rust-for-linux-7.3.md §A.2, §A.5): INQUIRY (TPGS, VPD 0x83's
//! port group), REPORT/SET TARGET PORT GROUPS and PERSISTENT RESERVE IN/OUT,
//! and MODE SENSE/SELECT (LIO's refuse every change; ours change WCE on
//! both nodes).
//! This file gathers what LIO knows (device identity, attributes, ports);
//! the answers come from `crate::scsi` and the plain-Rust core.

use super::bindings as b;
use super::cmd::{reason, Cmd, ExecFn};
use crate::core_logic::scsi::{
    alua,
    inquiry::{self, BlockLimits, LunInfo, PortInfo, Provisioning},
    io::Completion,
    mode::{self, ModeParams},
    opcode as op,
    pr::PrError,
    sense::Sense,
};
use crate::forward;
use crate::scsi::{Aborts, ISID_LEN};

/// The emulation for `cdb`, if the backstore answers it itself.
pub(crate) fn emulation(cdb: &[u8]) -> Option<ExecFn> {
    let sa = op::service_action(cdb);
    match *cdb.first()? {
        op::INQUIRY => Some(execute_inquiry),
        op::MAINTENANCE_IN if sa == op::SA_REPORT_TARGET_PORT_GROUPS => Some(execute_rtpg),
        op::MAINTENANCE_OUT if sa == op::SA_SET_TARGET_PORT_GROUPS => Some(execute_stpg),
        op::PERSISTENT_RESERVE_IN => Some(execute_pr_in),
        op::PERSISTENT_RESERVE_OUT => Some(execute_pr_out),
        op::MODE_SENSE_6 | op::MODE_SENSE_10 => Some(execute_mode_sense),
        op::MODE_SELECT_6 | op::MODE_SELECT_10 => Some(execute_mode_select),
        _ => None,
    }
}

/// A NUL-terminated C `char` array (unsigned in the kernel) as bytes up
/// to the NUL.
fn c_bytes(a: &[u8]) -> &[u8] {
    a.split(|c| *c == 0).next().unwrap_or(&[])
}

/// Most target ports reported for one device.
const MAX_PORTS: usize = 64;

/// Relative target port ids of the LUNs exporting the command's device,
/// sorted, without duplicates.
fn port_ids(c: &Cmd, out: &mut [u16; MAX_PORTS]) -> usize {
    // SAFETY: a live device; the helper takes the device's port lock and
    // stores at most `MAX_PORTS` ids.
    let n = unsafe { b::tcm_ha_dev_port_ids(c.se_dev(), out.as_mut_ptr(), MAX_PORTS as u32) } as usize;
    let ids = out.get_mut(..n.min(MAX_PORTS)).unwrap_or(&mut []);
    ids.sort_unstable();
    let mut w = 0;
    for r in 0..ids.len() {
        let v = ids.get(r).copied().unwrap_or(0);
        if w == 0 || ids.get(w - 1) != Some(&v) {
            if let Some(slot) = ids.get_mut(w) {
                *slot = v;
            }
            w += 1;
        }
    }
    w
}

/// INQUIRY, built by the backstore.
///
/// # Safety
/// Called by LIO with a live, uncompleted command of an `ha` device.
unsafe extern "C" fn execute_inquiry(cmd: *mut b::se_cmd) -> b::sense_reason_t {
    // SAFETY: LIO passes a live, uncompleted command.
    let Some(c) = (unsafe { Cmd::from_raw(cmd) }) else { return reason::LUN_COMMUNICATION_FAILURE };
    let dev = c.se_dev();
    // SAFETY: the device outlives its commands; LIO changes the identity
    // strings only through configfs, before the LUN is exported.
    let (wwn, attr, flags) = unsafe { (&(*dev).t10_wwn, &(*dev).dev_attrib, (*dev).dev_flags) };
    let d = c.device();
    let serial = if flags & b::DF_EMULATED_VPD_UNIT_SERIAL != 0 {
        c_bytes(&wwn.unit_serial)
    } else {
        d.inner.name().as_bytes()
    };
    let thin = attr.emulate_tpu || attr.emulate_tpws;
    let mut pages = [0u8; 6];
    let n = inquiry::ALL_PAGES.iter().filter(|p| thin || **p != inquiry::page::LBP).fold(0, |n, p| {
        if let Some(s) = pages.get_mut(n) {
            *s = *p;
        }
        n + 1
    });
    let bs = attr.block_size.max(1);
    let lun = LunInfo {
        qualifier: d.inner.scsi.qualifier(),
        device_type: inquiry::TYPE_DISK,
        vendor: c_bytes(&wwn.vendor),
        product: c_bytes(&wwn.model),
        revision: c_bytes(&wwn.revision),
        serial,
        three_pc: true,
        multi_port: false,
        vpd_pages: pages.get(..n).unwrap_or(&[]),
        block_limits: BlockLimits {
            wsnz: true,
            max_compare_write: u8::from(attr.emulate_caw),
            opt_xfer_granularity: 1,
            max_xfer: (u64::from(attr.hw_max_sectors) * u64::from(attr.hw_block_size) / u64::from(bs)) as u32,
            opt_xfer: attr.optimal_sectors,
            max_unmap_lbas: if thin { attr.max_unmap_lba_count } else { 0 },
            max_unmap_descriptors: if thin { attr.max_unmap_block_desc_count } else { 0 },
            unmap_granularity: if thin { attr.unmap_granularity } else { 0 },
            unmap_alignment: (thin && attr.unmap_granularity_alignment != 0).then_some(attr.unmap_granularity_alignment),
            max_write_same: if thin { u64::from(attr.max_write_same_len) } else { 0 },
        },
        non_rotating: attr.is_nonrot,
        provisioning: Provisioning {
            unmap: attr.emulate_tpu,
            write_same_16: attr.emulate_tpws,
            write_same_10: attr.emulate_tpws,
            lbprz: attr.unmap_zeroes_data,
            thin,
        },
    };
    // "<wwn>,t,0x<tag>" as LIO reports the target port's SCSI name.
    let mut port_name = [0u8; 256];
    let names = c.target_port().map(|(wwn, tag)| {
        let mut w = crate::lio::Page::new(&mut port_name);
        let _ = core::fmt::Write::write_fmt(
            &mut w,
            format_args!("{},t,0x{:04x}", core::str::from_utf8(wwn).unwrap_or(""), tag),
        );
        (wwn, w.len())
    });
    let port = PortInfo {
        rel_port_id: c.rel_port(),
        tpg_id: d.inner.scsi.tpg_id(),
        protocol: c.proto(),
        port_name: names.and_then(|(_, n)| port_name.get(..n)),
        target_name: names.map(|(w, _)| w),
    };
    let cdb = c.cdb();
    let cdb = cdb.get(..6).unwrap_or(cdb);
    let scsi = &d.inner.scsi;
    let r = c.data_in(|buf| scsi.inquiry(cdb, &lun, &port, buf));
    c.respond(r)
}

/// REPORT TARGET PORT GROUPS.
///
/// # Safety
/// Called by LIO with a live, uncompleted command of an `ha` device.
unsafe extern "C" fn execute_rtpg(cmd: *mut b::se_cmd) -> b::sense_reason_t {
    // SAFETY: LIO passes a live, uncompleted command.
    let Some(c) = (unsafe { Cmd::from_raw(cmd) }) else { return reason::LUN_COMMUNICATION_FAILURE };
    let mut ids = [0u16; MAX_PORTS];
    let n = port_ids(&c, &mut ids);
    let ports = ids.get(..n).unwrap_or(&[]);
    let scsi = &c.device().inner.scsi;
    let cdb = c.cdb().get(..12).unwrap_or(&[]);
    let r = c.data_in(|buf| scsi.rtpg(cdb, ports, buf));
    c.respond(r)
}

/// SET TARGET PORT GROUPS, refused (implicit ALUA only).
///
/// # Safety
/// Called by LIO with a live, uncompleted command of an `ha` device.
unsafe extern "C" fn execute_stpg(cmd: *mut b::se_cmd) -> b::sense_reason_t {
    // SAFETY: LIO passes a live, uncompleted command.
    let Some(c) = (unsafe { Cmd::from_raw(cmd) }) else { return reason::LUN_COMMUNICATION_FAILURE };
    c.complete(Completion::Check(alua::STPG_REFUSAL));
    reason::NONE
}

/// PERSISTENT RESERVE IN.
///
/// # Safety
/// Called by LIO with a live, uncompleted command of an `ha` device.
unsafe extern "C" fn execute_pr_in(cmd: *mut b::se_cmd) -> b::sense_reason_t {
    // SAFETY: LIO passes a live, uncompleted command.
    let Some(c) = (unsafe { Cmd::from_raw(cmd) }) else { return reason::LUN_COMMUNICATION_FAILURE };
    let scsi = &c.device().inner.scsi;
    let cdb = c.cdb().get(..10).unwrap_or(&[]);
    let r = c.data_in(|buf| scsi.pr_in(cdb, buf));
    c.respond(r)
}

/// Largest PR OUT parameter list accepted (the basic list; SPEC_I_PT
/// TransportID lists are not supported and refused by the core).
const PR_OUT_MAX: usize = 4096;

/// PERSISTENT RESERVE OUT.
///
/// # Safety
/// Called by LIO with a live, uncompleted command of an `ha` device.
unsafe extern "C" fn execute_pr_out(cmd: *mut b::se_cmd) -> b::sense_reason_t {
    // SAFETY: LIO passes a live, uncompleted command.
    let Some(c) = (unsafe { Cmd::from_raw(cmd) }) else { return reason::LUN_COMMUNICATION_FAILURE };
    let scsi = &c.device().inner.scsi;
    let cdb = c.cdb().get(..10).unwrap_or(&[]);
    let len = c.data_length().min(PR_OUT_MAX);
    let mut isid = [0u8; ISID_LEN];
    let key = c.nexus(&mut isid);
    let r = if scsi.pr_goes_to_peer() {
        // The primary executes it; checked here first, so that what it
        // gets is a valid request.
        let lun_id = scsi.lun_id();
        let req = match len {
            0 => Some(forward::pr_request(lun_id, key.as_ref(), cdb, &[])),
            _ => c.with_data(len, |p| forward::pr_request(lun_id, key.as_ref(), cdb, p)),
        };
        match req {
            Some(Ok(o)) => {
                // LIO executes PR OUT where it may sleep (its own PREEMPT
                // AND ABORT waits for the aborted commands there too).
                let done = forward::pr_out(o);
                // The primary's AbortNexus for this node's nexuses came
                // before its answer: their commands end first.
                if done == Completion::Good {
                    crate::prsync::wait_aborted(c.device(), &Aborts::default());
                }
                c.complete(done);
                return reason::NONE;
            }
            Some(Err(e)) => Some(Err(e)),
            None => None,
        }
    } else {
        let r = match len {
            0 => Some(scsi.pr_out(key.as_ref(), cdb, &[])),
            _ => c.with_data(len, |p| scsi.pr_out(key.as_ref(), cdb, p)),
        };
        r.map(|r| {
            r.map(|aborts| {
                c.device().abort_commands(&aborts.local);
                crate::prsync::wait_aborted(c.device(), &aborts);
            })
        })
    };
    let done = match r {
        None => return reason::OUT_OF_RESOURCES,
        Some(Ok(())) => Completion::Good,
        Some(Err(PrError::Conflict)) => Completion::ReservationConflict,
        Some(Err(PrError::Check(s))) => Completion::Check(s),
    };
    c.complete(done);
    reason::NONE
}

/// What the mode pages of the command's device report now.
fn mode_params(c: &Cmd) -> ModeParams {
    let d = c.device();
    let (block_size, blocks) = d.geometry();
    let wce = d.ha().scsi.wce();
    let (fua, tas) = c.fua_and_tas();
    ModeParams {
        wce,
        wce_default: d.default_wce(),
        read_only: d.readonly() || c.lun_read_only(),
        // DPOFUA as LIO sets it: FUA honoured while the cache is on.
        fua: fua && wce,
        tas,
        blocks,
        block_size,
    }
}

/// MODE SENSE (6) and (10).
///
/// # Safety
/// Called by LIO with a live, uncompleted command of an `ha` device.
unsafe extern "C" fn execute_mode_sense(cmd: *mut b::se_cmd) -> b::sense_reason_t {
    // SAFETY: LIO passes a live, uncompleted command.
    let Some(c) = (unsafe { Cmd::from_raw(cmd) }) else { return reason::LUN_COMMUNICATION_FAILURE };
    let p = mode_params(&c);
    let cdb = c.cdb().get(..10).unwrap_or(&[]);
    let r = c.data_in(|buf| mode::mode_sense(cdb, &p, buf));
    c.respond(r)
}

/// Longest MODE SELECT parameter list looked at (all our pages with a
/// long block descriptor fit in far less).
const MODE_SELECT_MAX: usize = 512;

/// MODE SELECT (6) and (10).
///
/// # Safety
/// Called by LIO with a live, uncompleted command of an `ha` device.
unsafe extern "C" fn execute_mode_select(cmd: *mut b::se_cmd) -> b::sense_reason_t {
    // SAFETY: LIO passes a live, uncompleted command.
    let Some(c) = (unsafe { Cmd::from_raw(cmd) }) else { return reason::LUN_COMMUNICATION_FAILURE };
    let p = mode_params(&c);
    let cdb = c.cdb().get(..10).unwrap_or(&[]);
    let len = mode::select_param_len(cdb).unwrap_or(0).min(c.data_length());
    let r = if len == 0 {
        Some(mode::mode_select(cdb, &[], &p))
    } else if len > MODE_SELECT_MAX {
        Some(Err(Sense::PARAMETER_LIST_LENGTH_ERROR))
    } else {
        c.with_data(len, |params| mode::mode_select(cdb, params, &p))
    };
    let done = match r {
        None => return reason::OUT_OF_RESOURCES,
        Some(Err(s)) => Completion::Check(s),
        Some(Ok(wce)) => {
            let scsi = &c.device().ha().scsi;
            let mut isid = [0u8; ISID_LEN];
            if scsi.mode_select(c.nexus(&mut isid).as_ref(), wce) {
                kernel::pr_info!(
                    "LUN {}: MODE SELECT: write cache {}; the peer follows\n",
                    scsi.lun_id(),
                    crate::scsi::Scsi::wce_words(wce)
                );
                crate::link::modes_changed();
            }
            Completion::Good
        }
    };
    c.complete(done);
    reason::NONE
}
