// SPDX-License-Identifier: GPL-2.0

//! I_T nexus bookkeeping the backstore needs once it owns persistent
//! reservations and unit attentions (lio-and-rust-for-linux-7.3.md §A.5):
//!
//! * [`UaQueue`]: the unit attentions pending for one I_T nexus, reported
//!   one per command in the order they were established;
//! * [`transport_id`]: the TransportID READ FULL STATUS reports for an
//!   initiator port, from what LIO knows of the session (protocol
//!   identifier, initiator name, ISID text).

use super::inquiry::proto;
use super::pr;
use super::sense::Sense;

/// Unit attentions kept per I_T nexus. SPC-4 §6.39.2 lets a device server
/// that runs out of room report a more general condition; with this many
/// distinct conditions queued the oldest is dropped instead, since every
/// kind tcm_ha raises (PR, ALUA, reset) is re-established by the next
/// change of the same kind.
pub(crate) const UA_DEPTH: usize = 8;

/// Pending unit attentions of one I_T nexus (FIFO, no duplicates).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UaQueue {
    q: [Option<Sense>; UA_DEPTH],
}

impl UaQueue {
    /// An empty queue.
    pub(crate) const fn new() -> UaQueue {
        UaQueue { q: [None; UA_DEPTH] }
    }

    /// Establishes `sense`; a condition already pending is not queued
    /// twice; a full queue drops its oldest entry.
    pub(crate) fn push(&mut self, sense: Sense) {
        if self.q.iter().flatten().any(|s| *s == sense) {
            return;
        }
        let used = self.len();
        if used == UA_DEPTH {
            self.q.rotate_left(1);
            if let Some(last) = self.q.last_mut() {
                *last = Some(sense);
            }
        } else if let Some(slot) = self.q.get_mut(used) {
            *slot = Some(sense);
        }
    }

    /// Takes the oldest pending unit attention.
    pub(crate) fn pop(&mut self) -> Option<Sense> {
        let first = self.q.first_mut()?.take()?;
        self.q.rotate_left(1);
        Some(first)
    }

    /// Number of pending unit attentions.
    pub(crate) fn len(&self) -> usize {
        self.q.iter().take_while(|s| s.is_some()).count()
    }

    /// Whether nothing is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Value of one hexadecimal digit.
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses the hexadecimal digits of `s` into `out` (big endian), ignoring
/// a `naa.`, `0x` or `fc.` prefix and `:` separators; `None` if a character
/// is not a digit or there are more digits than fit.
fn hex_bytes<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    let s = [&b"naa."[..], b"0x", b"fc."]
        .iter()
        .find_map(|p| s.strip_prefix(*p))
        .unwrap_or(s);
    let mut digits = [0u8; 64];
    let mut n = 0usize;
    for &c in s.iter().filter(|c| **c != b':') {
        *digits.get_mut(n)? = hex_digit(c)?;
        n += 1;
    }
    if n == 0 || n > 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    // Right-align the digits.
    let skip = 2 * N - n;
    for (i, d) in digits.iter().take(n).enumerate() {
        let pos = skip + i;
        let b = out.get_mut(pos / 2)?;
        *b |= if pos.is_multiple_of(2) { d << 4 } else { *d };
    }
    Some(out)
}

/// Builds into `buf` the TransportID of the initiator port with protocol
/// identifier `proto_id` (SPC-4 §7.6.4), name `name` and ISID as LIO's
/// iSCSI fabric gives it (12 hexadecimal digits, empty for other fabrics);
/// returns the untruncated length.
///
/// * iSCSI: format 01b `"<name>,i,0x<isid>"` when the ISID parses, else
///   the device-name format;
/// * SAS (tcm_loop with `naa.` names): the 64-bit SAS address from the name;
/// * Fibre Channel: the 64-bit N_Port name (`21:00:…`, `0x…`, `naa.…`);
/// * SRP: the 128-bit port identifier;
/// * anything else, or a name that does not parse for SAS/FC/SRP: the
///   iSCSI device-name format, which carries the name as text.
pub(crate) fn transport_id(proto_id: u8, name: &[u8], isid: &[u8], buf: &mut [u8]) -> usize {
    match proto_id {
        proto::SAS => {
            if let Some(a) = hex_bytes::<8>(name) {
                return pr::sas_transport_id(u64::from_be_bytes(a), buf);
            }
        }
        proto::FC => {
            if let Some(a) = hex_bytes::<8>(name) {
                return pr::fc_transport_id(u64::from_be_bytes(a), buf);
            }
        }
        proto::SRP => {
            if let Some(a) = hex_bytes::<16>(name) {
                return srp_transport_id(&a, buf);
            }
        }
        proto::ISCSI => {
            let isid = hex_bytes::<6>(isid);
            return pr::iscsi_transport_id(name, isid.as_ref().map(|i| &i[..]), buf);
        }
        _ => {}
    }
    pr::iscsi_transport_id(name, None, buf)
}

/// SRP TransportID (24 bytes, SPC-4 §7.6.4.5).
fn srp_transport_id(port: &[u8; 16], buf: &mut [u8]) -> usize {
    let mut o = super::out::Out::new(buf);
    o.u8(proto::SRP);
    o.zeros(7);
    o.bytes(port);
    o.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ua_queue_is_fifo_without_duplicates() {
        let mut q = UaQueue::new();
        assert!(q.is_empty());
        q.push(Sense::RESERVATIONS_PREEMPTED);
        q.push(Sense::ASYMMETRIC_ACCESS_STATE_CHANGED);
        q.push(Sense::RESERVATIONS_PREEMPTED);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(), Some(Sense::RESERVATIONS_PREEMPTED));
        assert_eq!(q.pop(), Some(Sense::ASYMMETRIC_ACCESS_STATE_CHANGED));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn ua_queue_drops_oldest_when_full() {
        let mut q = UaQueue::new();
        for i in 0..=UA_DEPTH as u8 {
            q.push(Sense::new(super::super::sense::SenseKey::UnitAttention, 0x2A, i));
        }
        assert_eq!(q.len(), UA_DEPTH);
        assert_eq!(q.pop().map(|s| s.ascq), Some(1));
    }

    #[test]
    fn sas_transport_id_from_naa_name() {
        let mut b = [0u8; 32];
        let n = transport_id(proto::SAS, b"naa.5001405abcdef012", b"", &mut b);
        assert_eq!(n, 24);
        assert_eq!(b[0], 0x06);
        assert_eq!(&b[4..12], &[0x50, 0x01, 0x40, 0x5a, 0xbc, 0xde, 0xf0, 0x12]);
    }

    #[test]
    fn fc_transport_id_from_colon_name() {
        let mut b = [0u8; 32];
        let n = transport_id(proto::FC, b"21:00:00:24:ff:01:02:03", b"", &mut b);
        assert_eq!(n, 24);
        assert_eq!(&b[8..16], &[0x21, 0, 0, 0x24, 0xff, 1, 2, 3]);
    }

    #[test]
    fn iscsi_transport_id_with_isid_text() {
        let mut b = [0u8; 128];
        let n = transport_id(proto::ISCSI, b"iqn.2026-11.test:init", b"23d000001", &mut b);
        assert_eq!(b[0], 0x45);
        let body = &b[4..n];
        let text = core::str::from_utf8(body).unwrap().trim_end_matches('\0');
        assert_eq!(text, "iqn.2026-11.test:init,i,0x00023d000001");
        assert_eq!(n % 4, 0);
    }

    #[test]
    fn unparsable_names_fall_back_to_name_format() {
        let mut b = [0u8; 64];
        let n = transport_id(proto::SAS, b"not-hex", b"", &mut b);
        assert_eq!(b[0], 0x05);
        assert!(b[4..n].starts_with(b"not-hex\0"));
        let n = transport_id(0x0F, b"x", b"", &mut b);
        assert_eq!((b[0], n), (0x05, 24));
    }

    #[test]
    fn hex_bytes_limits() {
        assert_eq!(hex_bytes::<2>(b"0x1234"), Some([0x12, 0x34]));
        assert_eq!(hex_bytes::<2>(b"12345"), None);
        assert_eq!(hex_bytes::<2>(b""), None);
        assert_eq!(hex_bytes::<2>(b"1g"), None);
        assert_eq!(hex_bytes::<2>(b"abc"), Some([0x0a, 0xbc]));
    }
}
