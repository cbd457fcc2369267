// SPDX-License-Identifier: GPL-2.0

//! Frame codec: the fixed header, the CRC32C trailer, whole-frame
//! encode/decode and sequence numbering. The layout is documented in
//! [`super`].
//!
//! A stream receiver reads [`HEADER_LEN`] bytes, calls
//! [`FrameHeader::decode`] (which validates everything including the payload
//! length for the message type), then reads exactly `payload_len` bytes and
//! the [`TRAILER_LEN`]-byte trailer, checks the trailer against the CRC32C
//! of header and payload, checks [`FrameHeader::seq`] with a [`SeqChecker`]
//! and calls [`Message::decode`]. [`split_frame`] (header, completeness and
//! checksum) and [`decode_frame`] (and the message) do this on a buffer that
//! may hold several frames; the session ([`crate::core_logic::link`]) checks
//! the sequence.
//!
//! The `_with` variants take the CRC32C implementation (the kernel module
//! passes the kernel's); the others use the plain-Rust [`TableCrc32c`].

use super::bytes::{Reader, Writer};
use super::crc::{checksum, Crc32c, TableCrc32c};
use super::msg::{IoData, Message, MsgType, IO_DATA_HEAD};
use super::{EncodeError, WireError, HEADER_LEN, MAGIC, MAX_PAYLOAD, TRAILER_LEN};
use crate::core_logic::PROTOCOL_VERSION;

/// A validated frame header.
///
/// Magic, version, flags and reserved are constants once validated, so only
/// the variable fields are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// Message type.
    pub(crate) msg_type: MsgType,
    /// Payload length in bytes (already checked against the type).
    pub(crate) payload_len: u32,
    /// Sequence number.
    pub(crate) seq: u64,
}

impl FrameHeader {
    /// Decodes and validates the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// Checks, in order: length of `buf`, magic, version, flags, reserved,
    /// payload length against [`MAX_PAYLOAD`], message type, payload length
    /// against the type's bounds. Bytes after the header are ignored.
    pub(crate) fn decode(buf: &[u8]) -> Result<FrameHeader, WireError> {
        let truncated = WireError::HeaderTruncated { have: buf.len() };
        let mut r = Reader::new(buf);
        let (
            Some(magic),
            Some(version),
            Some(ty),
            Some(flags),
            Some(reserved),
            Some(len),
            Some(seq),
        ) = (
            r.u32(),
            r.u16(),
            r.u16(),
            r.u16(),
            r.u16(),
            r.u32(),
            r.u64(),
        )
        else {
            return Err(truncated);
        };
        if magic != MAGIC {
            return Err(WireError::BadMagic { got: magic });
        }
        if version != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion {
                got: version,
                supported: PROTOCOL_VERSION,
            });
        }
        if flags != 0 {
            return Err(WireError::NonzeroFlags { got: flags });
        }
        if reserved != 0 {
            return Err(WireError::NonzeroReserved { got: reserved });
        }
        if len > MAX_PAYLOAD {
            return Err(WireError::PayloadTooLarge {
                len,
                max: MAX_PAYLOAD,
            });
        }
        let msg_type = MsgType::from_u16(ty).ok_or(WireError::UnknownType { got: ty })?;
        // `len <= MAX_PAYLOAD` fits in usize on every supported target.
        let ulen = usize::try_from(len).map_err(|_| WireError::PayloadTooLarge {
            len,
            max: MAX_PAYLOAD,
        })?;
        msg_type.check_len(ulen)?;
        Ok(FrameHeader {
            msg_type,
            payload_len: len,
            seq,
        })
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub(crate) fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let have = out.len();
        let mut w = Writer::new(out);
        let done = (|| {
            w.u32(MAGIC)?;
            w.u16(PROTOCOL_VERSION)?;
            w.u16(self.msg_type.as_u16())?;
            w.u16(0)?;
            w.u16(0)?;
            w.u32(self.payload_len)?;
            w.u64(self.seq)
        })();
        done.ok_or(EncodeError::BufferTooSmall {
            need: HEADER_LEN,
            have,
        })?;
        Ok(HEADER_LEN)
    }

    /// Payload length as `usize`.
    pub(crate) fn payload_len(&self) -> usize {
        // Checked against MAX_PAYLOAD at decode; saturate rather than panic.
        usize::try_from(self.payload_len).unwrap_or(usize::MAX)
    }

    /// Whole frame length (header, payload and trailer), or `None` on
    /// overflow.
    pub(crate) fn frame_len(&self) -> Option<usize> {
        HEADER_LEN.checked_add(self.payload_len())?.checked_add(TRAILER_LEN)
    }
}

/// A frame whose header and checksum are validated and whose payload is
/// borrowed from the receive buffer (not yet decoded into a [`Message`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    /// The validated header.
    pub(crate) header: FrameHeader,
    /// Exactly `header.payload_len` bytes.
    pub(crate) payload: &'a [u8],
}

/// The trailer of a frame made of `parts` (its header, then its payload in
/// one or more pieces): their CRC32C, little-endian.
pub(crate) fn trailer(crc: &impl Crc32c, parts: &[&[u8]]) -> [u8; TRAILER_LEN] {
    checksum(crc, parts).to_le_bytes()
}

/// Splits the first frame off `buf` ([`split_frame_with`] with the
/// plain-Rust CRC32C).
pub(crate) fn split_frame(buf: &[u8]) -> Result<(Frame<'_>, usize), WireError> {
    split_frame_with(buf, &TableCrc32c)
}

/// Splits the first frame off `buf`, its trailer checked with `crc`.
///
/// Returns the frame and the number of bytes it occupies (header, payload
/// and trailer). If `buf` holds only part of a frame, the error is
/// [`WireError::HeaderTruncated`] or [`WireError::PayloadTruncated`]
/// ([`WireError::is_incomplete`]); a stream reader then waits for more
/// bytes. The checksum is computed only once the whole frame is there. Any
/// other error (a bad header, [`WireError::ChecksumMismatch`]) is fatal for
/// the link.
pub(crate) fn split_frame_with<'a>(buf: &'a [u8], crc: &impl Crc32c) -> Result<(Frame<'a>, usize), WireError> {
    let header = FrameHeader::decode(buf)?;
    let plen = header.payload_len();
    let used = header.frame_len().ok_or(WireError::PayloadTooLarge {
        len: header.payload_len,
        max: MAX_PAYLOAD,
    })?;
    let body = buf.get(HEADER_LEN..).unwrap_or(&[]);
    let truncated = WireError::PayloadTruncated {
        have: body.len(),
        need: used - HEADER_LEN,
    };
    let (Some(head), Some(payload), Some(tail)) = (
        buf.get(..HEADER_LEN),
        body.get(..plen),
        body.get(plen..used - HEADER_LEN),
    ) else {
        return Err(truncated);
    };
    let got = u32::from_le_bytes(tail.try_into().map_err(|_| truncated)?);
    let expected = checksum(crc, &[head, payload]);
    if got != expected {
        return Err(WireError::ChecksumMismatch {
            msg: header.msg_type,
            seq: header.seq,
            expected,
            got,
        });
    }
    Ok((Frame { header, payload }, used))
}

/// Decodes the first frame of `buf` into its sequence number and message.
///
/// Returns `(seq, message, bytes used)`. Errors as for [`split_frame`] plus the
/// message's own checks.
pub(crate) fn decode_frame(buf: &[u8]) -> Result<(u64, Message, usize), WireError> {
    let (frame, used) = split_frame(buf)?;
    let msg = Message::decode(frame.header.msg_type, frame.payload)?;
    Ok((frame.header.seq, msg, used))
}

/// Encodes `msg` as a whole frame with sequence number `seq` into `out`
/// ([`encode_frame_with`] with the plain-Rust CRC32C).
pub(crate) fn encode_frame(seq: u64, msg: &Message, out: &mut [u8]) -> Result<usize, EncodeError> {
    encode_frame_with(seq, msg, out, &TableCrc32c)
}

/// Encodes `msg` as a whole frame (header, payload, trailer computed with
/// `crc`) with sequence number `seq` into `out`.
///
/// Returns the frame length. Nothing useful is left in `out` on error.
pub(crate) fn encode_frame_with(
    seq: u64,
    msg: &Message,
    out: &mut [u8],
    crc: &impl Crc32c,
) -> Result<usize, EncodeError> {
    let plen = msg.payload_len();
    let need = HEADER_LEN
        .checked_add(plen)
        .and_then(|n| n.checked_add(TRAILER_LEN))
        .ok_or(EncodeError::PayloadTooLarge { len: plen })?;
    let payload_len = u32::try_from(plen)
        .ok()
        .filter(|&l| l <= MAX_PAYLOAD)
        .ok_or(EncodeError::PayloadTooLarge { len: plen })?;
    let have = out.len();
    let too_small = EncodeError::BufferTooSmall { need, have };
    let frame = out.get_mut(..need).ok_or(too_small)?;
    let (head, body) = frame.split_at_mut(HEADER_LEN);
    let (payload, tail) = body.split_at_mut(plen);
    FrameHeader {
        msg_type: msg.msg_type(),
        payload_len,
        seq,
    }
    .encode(head)?;
    msg.encode_payload(payload).map_err(|_| too_small)?;
    tail.copy_from_slice(&trailer(crc, &[head, payload]));
    Ok(need)
}

/// Encodes the frame header and the fields of an IoData frame that carries
/// `d.len` data bytes into `out`; the caller sends the data right after,
/// then the trailer: [`trailer`] over this head and the data.
/// Returns the length written ([`HEADER_LEN`] + 8).
pub(crate) fn encode_data_head(seq: u64, d: &IoData, out: &mut [u8]) -> Result<usize, EncodeError> {
    let data = usize::try_from(d.len).map_err(|_| EncodeError::PayloadTooLarge { len: usize::MAX })?;
    let plen = IO_DATA_HEAD.saturating_add(data);
    MsgType::IoData.check_len(plen).map_err(|_| EncodeError::PayloadTooLarge { len: plen })?;
    let payload_len = u32::try_from(plen).map_err(|_| EncodeError::PayloadTooLarge { len: plen })?;
    let need = HEADER_LEN + IO_DATA_HEAD;
    let have = out.len();
    let too_small = EncodeError::BufferTooSmall { need, have };
    let (head, body) = if have >= need { out.split_at_mut(HEADER_LEN) } else { return Err(too_small) };
    FrameHeader { msg_type: MsgType::IoData, payload_len, seq }.encode(head)?;
    Message::IoData(*d).encode_payload(body.get_mut(..IO_DATA_HEAD).ok_or(too_small)?).map_err(|_| too_small)?;
    Ok(need)
}

/// Checks received sequence numbers: the first frame of a connection is 0 and
/// each next frame is one more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SeqChecker {
    /// Sequence number the next frame must carry.
    next: u64,
}

impl SeqChecker {
    /// A checker for a new connection (expects 0 first).
    pub(crate) fn new() -> Self {
        SeqChecker { next: 0 }
    }

    /// Sequence number the next frame must carry.
    pub(crate) fn expected(&self) -> u64 {
        self.next
    }

    /// Accepts `seq` if it is the expected one and advances; otherwise reports
    /// a gap (`seq` ahead) or a duplicate (`seq` behind) and stays put.
    pub(crate) fn check(&mut self, seq: u64) -> Result<(), WireError> {
        let expected = self.next;
        if seq == expected {
            // 2^64 frames never happen; wrapping keeps this panic-free.
            self.next = expected.wrapping_add(1);
            Ok(())
        } else if seq > expected {
            Err(WireError::SequenceGap { expected, got: seq })
        } else {
            Err(WireError::SequenceDuplicate { expected, got: seq })
        }
    }
}

/// Hands out sequence numbers for sent frames: 0, 1, 2, ...
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SeqCounter {
    /// Sequence number of the next frame to send.
    next: u64,
}

impl SeqCounter {
    /// A counter for a new connection (starts at 0).
    pub(crate) fn new() -> Self {
        SeqCounter { next: 0 }
    }

    /// Returns the next sequence number and advances.
    pub(crate) fn next_seq(&mut self) -> u64 {
        let seq = self.next;
        self.next = seq.wrapping_add(1);
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::super::msg::tests::samples;
    use super::super::msg::{ByeReason, MAX_MESSAGE_PAYLOAD};
    use super::*;
    use std::string::ToString;

    const BUF: usize = HEADER_LEN + MAX_MESSAGE_PAYLOAD + TRAILER_LEN;

    /// A valid Heartbeat frame with seq 5 and payload 8.
    fn heartbeat_frame() -> [u8; HEADER_LEN + 8 + TRAILER_LEN] {
        let mut buf = [0u8; HEADER_LEN + 8 + TRAILER_LEN];
        let n = encode_frame(5, &Message::Heartbeat(9), &mut buf).unwrap();
        assert_eq!(n, buf.len());
        buf
    }

    /// Recomputes the trailer of the frame `f` (after a test changed it).
    pub(crate) fn reseal(f: &mut [u8]) {
        let end = f.len() - TRAILER_LEN;
        let t = trailer(&TableCrc32c, &[&f[..end]]);
        f[end..].copy_from_slice(&t);
    }

    #[test]
    fn header_layout() {
        let f = heartbeat_frame();
        assert_eq!(&f[0..4], b"tcHA");
        assert_eq!(&f[4..6], &PROTOCOL_VERSION.to_le_bytes());
        assert_eq!(&f[6..8], &[0x20, 0x00]);
        assert_eq!(&f[8..12], &[0, 0, 0, 0]);
        assert_eq!(&f[12..16], &[8, 0, 0, 0]);
        assert_eq!(&f[16..24], &[5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&f[24..32], &[9, 0, 0, 0, 0, 0, 0, 0]);
        // The trailer: CRC32C of the 32 bytes before it, little-endian.
        assert_eq!(f[32..36], checksum(&TableCrc32c, &[&f[..32]]).to_le_bytes());
        assert_eq!(f[32..36], super::super::crc::checksum(&TableCrc32c, &[&f[..10], &f[10..32]]).to_le_bytes());
    }

    #[test]
    fn frame_roundtrip_every_message() {
        for (i, m) in samples().into_iter().enumerate() {
            let mut buf = [0u8; BUF];
            let seq = 1000 + i as u64;
            let n = encode_frame(seq, &m, &mut buf).unwrap();
            assert_eq!(n, HEADER_LEN + m.payload_len() + TRAILER_LEN);
            assert_eq!(decode_frame(&buf[..n]), Ok((seq, m, n)));
            let (f, used) = split_frame(&buf[..n]).unwrap();
            assert_eq!((f.header.frame_len(), used), (Some(n), n));
            assert_eq!(f.payload, &buf[HEADER_LEN..n - TRAILER_LEN]);
            // Extra bytes after the frame belong to the next frame.
            assert_eq!(decode_frame(&buf), Ok((seq, m, n)));
        }
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut buf = [0u8; 10 * BUF];
        let mut pos = 0;
        let mut tx = SeqCounter::new();
        for m in samples() {
            pos += encode_frame(tx.next_seq(), &m, &mut buf[pos..]).unwrap();
        }
        let mut rx = SeqChecker::new();
        let mut rest = &buf[..pos];
        for m in samples() {
            let (seq, got, used) = decode_frame(rest).unwrap();
            rx.check(seq).unwrap();
            assert_eq!(got, m);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        assert_eq!(rx.expected(), samples().len() as u64);
    }

    #[test]
    fn reject_truncated_header() {
        let f = heartbeat_frame();
        for n in 0..HEADER_LEN {
            let e = FrameHeader::decode(&f[..n]).unwrap_err();
            assert_eq!(e, WireError::HeaderTruncated { have: n });
            assert!(e.is_incomplete());
        }
    }

    #[test]
    fn reject_truncated_payload_and_trailer() {
        let f = heartbeat_frame();
        for n in HEADER_LEN..f.len() {
            let e = split_frame(&f[..n]).unwrap_err();
            assert_eq!(
                e,
                WireError::PayloadTruncated {
                    have: n - HEADER_LEN,
                    need: 8 + TRAILER_LEN
                }
            );
            assert!(e.is_incomplete());
        }
        // A frame without payload is complete with its trailer only.
        let mut buf = [0u8; BUF];
        let n = encode_frame(0, &Message::LoginAck, &mut buf).unwrap();
        assert_eq!(n, HEADER_LEN + TRAILER_LEN);
        for k in HEADER_LEN..n {
            assert_eq!(
                split_frame(&buf[..k]),
                Err(WireError::PayloadTruncated { have: k - HEADER_LEN, need: TRAILER_LEN })
            );
        }
        assert_eq!(decode_frame(&buf[..n]), Ok((0, Message::LoginAck, n)));
    }

    /// Every single-bit flip of a frame is refused: in the header by the
    /// header checks or the checksum, in the payload and in the trailer by
    /// the checksum (before the payload is decoded).
    #[test]
    fn every_bit_flip_is_caught() {
        let mut buf = [0u8; BUF];
        let m = samples()[3];
        let n = encode_frame(77, &m, &mut buf).unwrap();
        let good = buf[..n].to_vec();
        let want = checksum(&TableCrc32c, &[&good[..n - TRAILER_LEN]]);
        for i in 0..n {
            for bit in 0..8 {
                let mut f = good.clone();
                f[i] ^= 1 << bit;
                let e = split_frame(&f).unwrap_err();
                if i >= n - TRAILER_LEN {
                    // The trailer: the bytes give the old CRC.
                    assert_eq!(
                        e,
                        WireError::ChecksumMismatch {
                            msg: m.msg_type(),
                            seq: 77,
                            expected: want,
                            got: u32::from_le_bytes(f[n - TRAILER_LEN..].try_into().unwrap())
                        }
                    );
                } else if i >= HEADER_LEN || (16..24).contains(&i) {
                    // The payload, or the sequence number.
                    assert!(matches!(e, WireError::ChecksumMismatch { got, .. } if got == want), "{i}.{bit}: {e}");
                } else if let WireError::ChecksumMismatch { msg, .. } = e {
                    // The type, to another of the same length.
                    assert!((6..8).contains(&i) && msg != m.msg_type(), "{i}.{bit}");
                } else {
                    // Magic, version, type, flags, reserved, length: the
                    // header checks, or (a longer length) more bytes to wait
                    // for, whose CRC will not match either.
                    assert!(i < 16, "{i}.{bit}: {e}");
                }
                assert!(!e.to_string().is_empty());
            }
        }
        let e = split_frame(&{
            let mut f = good.clone();
            f[HEADER_LEN + 1] ^= 0x10;
            f
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("frame checksum mismatch: "), "{e}");
        assert_eq!(e.bye_reason(), Some(ByeReason::ProtocolError));
        // A flipped payload bit is caught by the checksum before the
        // message would be decoded (it would decode, with another value).
        let mut f = heartbeat_frame();
        f[HEADER_LEN] ^= 1;
        assert!(matches!(decode_frame(&f), Err(WireError::ChecksumMismatch { msg: MsgType::Heartbeat, seq: 5, .. })));
        reseal(&mut f);
        assert_eq!(decode_frame(&f), Ok((5, Message::Heartbeat(8), f.len())));
    }

    /// A frame with the trailer of another CRC implementation (here CRC-32,
    /// IEEE, of the same bytes) is refused.
    #[test]
    fn another_crc_is_refused() {
        struct Ieee;
        impl Crc32c for Ieee {
            fn crc32c_update(&self, crc: u32, data: &[u8]) -> u32 {
                crate::core_logic::wire::crc::ieee_crc32_update(crc, data)
            }
        }
        let mut buf = [0u8; BUF];
        let n = encode_frame_with(3, &Message::Heartbeat(1), &mut buf, &Ieee).unwrap();
        assert!(matches!(split_frame(&buf[..n]), Err(WireError::ChecksumMismatch { .. })));
        let (f, used) = split_frame_with(&buf[..n], &Ieee).unwrap();
        assert_eq!((f.header.seq, used), (3, n));
    }

    /// A stream of frames arriving cut at any byte (inside a header, a
    /// payload or a trailer) decodes once the rest is there: everything
    /// before a cut is incomplete, never an error.
    #[test]
    fn stream_split_at_every_byte() {
        let mut stream = std::vec::Vec::new();
        let mut tx = SeqCounter::new();
        for m in samples() {
            let mut buf = [0u8; BUF];
            let n = encode_frame(tx.next_seq(), &m, &mut buf).unwrap();
            stream.extend_from_slice(&buf[..n]);
        }
        for cut in 0..=stream.len() {
            let mut got = std::vec::Vec::new();
            let mut pending = std::vec::Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                pending.extend_from_slice(part);
                loop {
                    match decode_frame(&pending) {
                        Ok((seq, m, used)) => {
                            got.push((seq, m));
                            pending.drain(..used);
                        }
                        Err(e) => {
                            assert!(e.is_incomplete(), "cut {cut}: {e}");
                            break;
                        }
                    }
                }
            }
            assert!(pending.is_empty(), "cut {cut}");
            let want: std::vec::Vec<_> = samples().into_iter().enumerate().map(|(i, m)| (i as u64, m)).collect();
            assert_eq!(got, want, "cut {cut}");
        }
    }

    #[test]
    fn reject_bad_magic() {
        let mut f = heartbeat_frame();
        f[0] = b'T';
        assert_eq!(
            FrameHeader::decode(&f),
            Err(WireError::BadMagic {
                got: u32::from_le_bytes(*b"TcHA")
            })
        );
    }

    #[test]
    fn reject_unsupported_version() {
        let mut f = heartbeat_frame();
        f[4..6].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        let e = FrameHeader::decode(&f).unwrap_err();
        assert_eq!(
            e,
            WireError::UnsupportedVersion {
                got: PROTOCOL_VERSION + 1,
                supported: PROTOCOL_VERSION
            }
        );
        assert!(e.to_string().contains("unsupported protocol version"));
        // A version 1 peer's frame (no trailer) is refused by its header
        // alone, before a trailer is waited for.
        assert_eq!(PROTOCOL_VERSION, 6);
        let mut v1 = heartbeat_frame();
        v1[4..6].copy_from_slice(&1u16.to_le_bytes());
        let e = split_frame(&v1[..HEADER_LEN + 8]).unwrap_err();
        assert_eq!(e, WireError::UnsupportedVersion { got: 1, supported: 6 });
        assert_eq!(
            std::format!("{e}"),
            "unsupported protocol version 1 in frame header (this node speaks 6)"
        );
    }

    #[test]
    fn reject_flags_and_reserved() {
        let mut f = heartbeat_frame();
        f[8] = 1;
        assert_eq!(
            FrameHeader::decode(&f),
            Err(WireError::NonzeroFlags { got: 1 })
        );
        let mut f = heartbeat_frame();
        f[11] = 0x80;
        assert_eq!(
            FrameHeader::decode(&f),
            Err(WireError::NonzeroReserved { got: 0x8000 })
        );
    }

    #[test]
    fn reject_oversized_payload_before_reading_it() {
        let mut f = heartbeat_frame();
        f[12..16].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        assert_eq!(
            FrameHeader::decode(&f[..HEADER_LEN]),
            Err(WireError::PayloadTooLarge {
                len: MAX_PAYLOAD + 1,
                max: MAX_PAYLOAD
            })
        );
        f[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            split_frame(&f),
            Err(WireError::PayloadTooLarge {
                len: u32::MAX,
                max: MAX_PAYLOAD
            })
        );
    }

    #[test]
    fn reject_unknown_type() {
        for ty in [0u16, 0x0004, 0x0102, 0x0300, 0xffff] {
            let mut f = heartbeat_frame();
            f[6..8].copy_from_slice(&ty.to_le_bytes());
            assert_eq!(
                FrameHeader::decode(&f),
                Err(WireError::UnknownType { got: ty })
            );
        }
    }

    #[test]
    fn reject_wrong_length_for_type_in_header() {
        let mut f = heartbeat_frame();
        f[12..16].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            FrameHeader::decode(&f),
            Err(WireError::PayloadTooShort {
                msg: MsgType::Heartbeat,
                len: 7,
                min: 8
            })
        );
        f[12..16].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(
            FrameHeader::decode(&f),
            Err(WireError::TrailingPayload {
                msg: MsgType::Heartbeat,
                len: 9,
                max: 8
            })
        );
    }

    #[test]
    fn reject_invalid_field_in_frame() {
        let mut buf = [0u8; BUF];
        let n = encode_frame(0, &Message::Bye(ByeReason::Shutdown), &mut buf).unwrap();
        buf[HEADER_LEN] = 0;
        reseal(&mut buf[..n]);
        assert_eq!(
            decode_frame(&buf[..n]),
            Err(WireError::InvalidField {
                msg: MsgType::Bye,
                field: "reason",
                value: 0
            })
        );
    }

    #[test]
    fn encode_into_small_buffers() {
        let m = samples()[3];
        let need = HEADER_LEN + m.payload_len() + TRAILER_LEN;
        let mut buf = [0u8; BUF];
        for have in [0, 1, HEADER_LEN - 1, HEADER_LEN, need - TRAILER_LEN, need - 1] {
            assert_eq!(
                encode_frame(0, &m, &mut buf[..have]),
                Err(EncodeError::BufferTooSmall { need, have })
            );
        }
        assert_eq!(encode_frame(0, &m, &mut buf[..need]), Ok(need));
    }

    #[test]
    fn sequence_gap_and_duplicate() {
        let mut rx = SeqChecker::new();
        rx.check(0).unwrap();
        rx.check(1).unwrap();
        assert_eq!(
            rx.check(3),
            Err(WireError::SequenceGap {
                expected: 2,
                got: 3
            })
        );
        assert_eq!(
            rx.check(1),
            Err(WireError::SequenceDuplicate {
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            rx.check(0),
            Err(WireError::SequenceDuplicate {
                expected: 2,
                got: 0
            })
        );
        assert_eq!(rx.expected(), 2);
        rx.check(2).unwrap();
        assert_eq!(
            rx.check(u64::MAX),
            Err(WireError::SequenceGap {
                expected: 3,
                got: u64::MAX
            })
        );
    }

    #[test]
    fn sequence_wraps_without_panic() {
        let mut rx = SeqChecker { next: u64::MAX };
        rx.check(u64::MAX).unwrap();
        rx.check(0).unwrap();
        let mut tx = SeqCounter { next: u64::MAX };
        assert_eq!(tx.next_seq(), u64::MAX);
        assert_eq!(tx.next_seq(), 0);
    }
}
