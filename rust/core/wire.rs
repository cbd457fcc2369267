// SPDX-License-Identifier: GPL-2.0

//! Interlink wire format (plain Rust).
//!
//! The two nodes of a pair talk over one TCP stream that carries a sequence of
//! frames. Unlike FreeBSD CTL HA (host-endian structs, raw kernel pointers, no
//! authentication, few length checks), every field here has an explicit
//! little-endian layout, every length is bounded before anything is allocated,
//! nothing on the wire is a pointer (commands and objects are named by opaque
//! `u64` ids), and the link is authenticated before it is used.
//!
//! # Frame header ([`HEADER_LEN`] = 24 bytes, all fields little-endian)
//!
//! | offset | size | field        | rule                                            |
//! |-------:|-----:|--------------|-------------------------------------------------|
//! |      0 |    4 | magic        | [`MAGIC`] (the bytes `"tcHA"`)                   |
//! |      4 |    2 | version      | [`super::PROTOCOL_VERSION`]                      |
//! |      6 |    2 | message type | a known [`msg::MsgType`]                         |
//! |      8 |    2 | flags        | 0 (no flags are defined yet)                     |
//! |     10 |    2 | reserved     | 0                                                |
//! |     12 |    4 | payload len  | ≤ [`MAX_PAYLOAD`] and within the type's bounds   |
//! |     16 |    8 | sequence     | 0 for the first frame of a connection, then +1   |
//!
//! The payload follows the header directly. [`frame::FrameHeader::decode`]
//! checks everything above from the 24 header bytes alone, so a receiver knows
//! the payload is acceptable before it reads or allocates it.
//!
//! # Frame trailer ([`TRAILER_LEN`] = 4 bytes)
//!
//! After the payload comes the CRC32C (Castagnoli, as iSCSI's digests:
//! [`crc`]) of the header and the payload, a little-endian `u32`. A frame is
//! complete once header, payload and trailer have arrived; the receiver
//! checks the trailer before it decodes the payload, and a mismatch
//! ([`WireError::ChecksumMismatch`]) ends the link like every other protocol
//! error. TCP's 16-bit checksum lets some corruption through (a bad NIC,
//! a middlebox, memory); the trailer catches it before a flipped byte of an
//! IoData payload becomes write data. It is not authentication: whoever can
//! change a frame can recompute it (see `Documentation/security.rst`).
//!
//! So a frame occupies `HEADER_LEN + payload length + TRAILER_LEN` bytes.
//!
//! # Message types
//!
//! Type numbers are grouped so later messages have room:
//!
//! | range           | group                                                   |
//! |-----------------|---------------------------------------------------------|
//! | `0x0000`        | never valid (catches zeroed buffers)                    |
//! | `0x0001-0x000f` | authentication (Hello, AuthResponse, AuthResult)        |
//! | `0x0010-0x001f` | login (Login, LoginAck, LoginReject)                    |
//! | `0x0020-0x002f` | liveness (Heartbeat, HeartbeatAck)                      |
//! | `0x0030-0x003f` | session end (Bye)                                       |
//! | `0x0100-0x01ff` | reserved: inventory sync (LUN, port, initiator, mode pages) |
//! | `0x0200-0x02ff` | reserved: persistent reservations and unit attentions  |
//! | `0x0300-0x03ff` | reserved: command forwarding (serialize, ready-to-run, data, finish) |
//! | `0x0400-0x04ff` | reserved: task management                               |
//!
//! An unknown type is a protocol error: the header decoder returns
//! [`WireError::UnknownType`] and the link is aborted (both nodes must run the
//! same protocol version, which the login checks, so an unknown type means a
//! bug or a hostile peer, never something to skip). See [`msg`] for each
//! payload layout and [`handshake`] for the authentication and login exchange.

use core::fmt;

pub(crate) mod bytes;
pub(crate) mod crc;
pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod msg;

/// Frame magic: the bytes `t c H A` read as a little-endian `u32`.
pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"tcHA");

/// Length of the fixed frame header in bytes.
pub(crate) const HEADER_LEN: usize = 24;

/// Length of the frame trailer (the CRC32C after the payload) in bytes.
pub(crate) const TRAILER_LEN: usize = 4;

/// Largest payload any frame may carry (256 KiB), checked before allocation.
/// The longest frame is `HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN` bytes.
pub(crate) const MAX_PAYLOAD: u32 = 256 * 1024;

/// Why a received frame or message was rejected.
///
/// Each variant is one distinct reason; its `Display` text is meant for the
/// kernel log line that explains why the link was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WireError {
    /// Fewer than [`HEADER_LEN`] bytes are available for a header.
    HeaderTruncated {
        /// Bytes available.
        have: usize,
    },
    /// The magic field is not [`MAGIC`].
    BadMagic {
        /// Magic found in the frame.
        got: u32,
    },
    /// The header's protocol version is not the one this node speaks.
    UnsupportedVersion {
        /// Version found in the frame.
        got: u16,
        /// Version this node speaks.
        supported: u16,
    },
    /// The flags field is not zero.
    NonzeroFlags {
        /// Flags found in the frame.
        got: u16,
    },
    /// The reserved header field is not zero.
    NonzeroReserved {
        /// Value found in the frame.
        got: u16,
    },
    /// The payload length exceeds [`MAX_PAYLOAD`].
    PayloadTooLarge {
        /// Announced payload length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The message type is not one this protocol version defines.
    UnknownType {
        /// Type number found in the frame.
        got: u16,
    },
    /// The payload is shorter than the message type needs.
    PayloadTooShort {
        /// Message type.
        msg: msg::MsgType,
        /// Payload length.
        len: usize,
        /// Smallest valid payload length for this type.
        min: usize,
    },
    /// The payload is longer than the message type uses (trailing bytes).
    TrailingPayload {
        /// Message type.
        msg: msg::MsgType,
        /// Payload length.
        len: usize,
        /// Largest valid payload length for this type.
        max: usize,
    },
    /// The buffer ends before the payload the header announced and the
    /// trailer after it.
    PayloadTruncated {
        /// Bytes available after the header.
        have: usize,
        /// Bytes the frame has after its header (payload and trailer).
        need: usize,
    },
    /// The trailer is not the CRC32C of the frame's header and payload
    /// (the frame was corrupted in transit).
    ChecksumMismatch {
        /// Message type of the frame (as its header says).
        msg: msg::MsgType,
        /// Sequence number of the frame (as its header says).
        seq: u64,
        /// CRC32C of the received header and payload.
        expected: u32,
        /// CRC32C the trailer carries.
        got: u32,
    },
    /// A field holds a value its message does not allow.
    InvalidField {
        /// Message type.
        msg: msg::MsgType,
        /// Field name.
        field: &'static str,
        /// Value found.
        value: u64,
    },
    /// A sequence number was skipped (frames lost or injected).
    SequenceGap {
        /// Sequence number expected.
        expected: u64,
        /// Sequence number received.
        got: u64,
    },
    /// A sequence number was repeated or went backwards (replay).
    SequenceDuplicate {
        /// Sequence number expected.
        expected: u64,
        /// Sequence number received.
        got: u64,
    },
}

impl WireError {
    /// True if the error only means "more bytes are needed" when decoding from
    /// a stream buffer that may hold a partial frame.
    pub(crate) fn is_incomplete(&self) -> bool {
        matches!(
            self,
            WireError::HeaderTruncated { .. } | WireError::PayloadTruncated { .. }
        )
    }

    /// The Bye reason to send before closing the link on this error, or
    /// `None` if the error only means more bytes are needed.
    pub(crate) fn bye_reason(&self) -> Option<msg::ByeReason> {
        if self.is_incomplete() {
            None
        } else {
            Some(msg::ByeReason::ProtocolError)
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::HeaderTruncated { have } => write!(
                f,
                "truncated frame header: {have} of {HEADER_LEN} bytes"
            ),
            WireError::BadMagic { got } => write!(
                f,
                "bad frame magic {got:#010x} (expected {MAGIC:#010x}): not a tcm_ha peer or stream out of sync"
            ),
            WireError::UnsupportedVersion { got, supported } => write!(
                f,
                "unsupported protocol version {got} in frame header (this node speaks {supported})"
            ),
            WireError::NonzeroFlags { got } => {
                write!(f, "frame flags {got:#06x} set (no flags are defined)")
            }
            WireError::NonzeroReserved { got } => {
                write!(f, "reserved frame header field is {got:#06x}, must be 0")
            }
            WireError::PayloadTooLarge { len, max } => {
                write!(f, "frame payload of {len} bytes exceeds the limit of {max}")
            }
            WireError::UnknownType { got } => {
                write!(f, "unknown message type {got:#06x}")
            }
            WireError::PayloadTooShort { msg, len, min } => write!(
                f,
                "{} payload too short: {len} bytes, needs at least {min}",
                msg.name()
            ),
            WireError::TrailingPayload { msg, len, max } => write!(
                f,
                "{} payload has trailing bytes: {len} bytes, at most {max} allowed",
                msg.name()
            ),
            WireError::PayloadTruncated { have, need } => write!(
                f,
                "truncated frame payload: {have} of {need} bytes (payload and checksum)"
            ),
            WireError::ChecksumMismatch { msg, seq, expected, got } => write!(
                f,
                "frame checksum mismatch: {} seq {seq} carries CRC32C {got:#010x}, its bytes give {expected:#010x} (corrupted in transit)",
                msg.name()
            ),
            WireError::InvalidField { msg, field, value } => {
                write!(f, "{} has invalid {field} {value:#x}", msg.name())
            }
            WireError::SequenceGap { expected, got } => write!(
                f,
                "frame sequence gap: expected {expected}, got {got} (frames lost or injected)"
            ),
            WireError::SequenceDuplicate { expected, got } => write!(
                f,
                "frame sequence went backwards: expected {expected}, got {got} (duplicate or replay)"
            ),
        }
    }
}

/// Why a message could not be encoded (a local error, never the peer's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EncodeError {
    /// The output buffer is too small for the frame.
    BufferTooSmall {
        /// Bytes the frame needs.
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
    /// The payload would exceed [`MAX_PAYLOAD`].
    PayloadTooLarge {
        /// Payload length.
        len: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::BufferTooSmall { need, have } => {
                write!(f, "frame needs {need} bytes but the send buffer has {have}")
            }
            EncodeError::PayloadTooLarge { len } => write!(
                f,
                "payload of {len} bytes exceeds the limit of {MAX_PAYLOAD}"
            ),
        }
    }
}

#[cfg(test)]
#[path = "../../host/fuzz/harness.rs"]
pub(crate) mod fuzz_harness;

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn magic_bytes_on_the_wire() {
        assert_eq!(MAGIC.to_le_bytes(), *b"tcHA");
    }

    #[test]
    fn every_error_has_a_distinct_reason() {
        let t = msg::MsgType::Login;
        let all = [
            WireError::HeaderTruncated { have: 3 },
            WireError::BadMagic { got: 1 },
            WireError::UnsupportedVersion {
                got: 9,
                supported: 1,
            },
            WireError::NonzeroFlags { got: 1 },
            WireError::NonzeroReserved { got: 1 },
            WireError::PayloadTooLarge {
                len: 1 << 20,
                max: MAX_PAYLOAD,
            },
            WireError::UnknownType { got: 0x7777 },
            WireError::PayloadTooShort {
                msg: t,
                len: 1,
                min: 2,
            },
            WireError::TrailingPayload {
                msg: t,
                len: 3,
                max: 2,
            },
            WireError::PayloadTruncated { have: 1, need: 2 },
            WireError::InvalidField {
                msg: t,
                field: "x",
                value: 5,
            },
            WireError::SequenceGap {
                expected: 1,
                got: 3,
            },
            WireError::SequenceDuplicate {
                expected: 3,
                got: 1,
            },
            WireError::ChecksumMismatch {
                msg: msg::MsgType::IoData,
                seq: 7,
                expected: 0x1234_5678,
                got: 0x9abc_def0,
            },
        ];
        let texts: std::vec::Vec<std::string::String> = all.iter().map(|e| e.to_string()).collect();
        for (i, a) in texts.iter().enumerate() {
            assert!(!a.is_empty());
            for b in texts.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
        assert!(texts[1].contains("magic"));
        assert!(texts[2].contains("version 9") && texts[2].contains("speaks 1"));
        assert!(texts[6].contains("0x7777"));
        assert!(texts[11].contains("gap"));
        assert!(texts[12].contains("duplicate"));
        assert!(texts[13].starts_with("frame checksum mismatch: IoData seq 7"), "{}", texts[13]);
        assert!(texts[13].contains("0x9abcdef0") && texts[13].contains("0x12345678"));
        assert!(!all[13].is_incomplete());
        assert_eq!(all[13].bye_reason(), Some(msg::ByeReason::ProtocolError));
    }

    #[test]
    fn encode_errors_display() {
        let a = EncodeError::BufferTooSmall { need: 10, have: 2 }.to_string();
        let b = EncodeError::PayloadTooLarge { len: 1 << 30 }.to_string();
        assert!(a.contains("10") && a.contains('2'));
        assert!(b.contains("limit"));
    }

    #[test]
    fn incomplete_errors() {
        assert!(WireError::HeaderTruncated { have: 0 }.is_incomplete());
        assert!(WireError::PayloadTruncated { have: 0, need: 1 }.is_incomplete());
        assert!(!WireError::BadMagic { got: 0 }.is_incomplete());
        assert_eq!(WireError::HeaderTruncated { have: 0 }.bye_reason(), None);
        assert_eq!(
            WireError::UnknownType { got: 0x0100 }.bye_reason(),
            Some(msg::ByeReason::ProtocolError)
        );
    }

    /// Frames `msgs` with sequence numbers 0, 1, ... after `prefix`.
    fn stream(prefix: &[u8], msgs: &[msg::Message]) -> std::vec::Vec<u8> {
        let mut out = prefix.to_vec();
        for (seq, m) in msgs.iter().enumerate() {
            let mut buf = [0u8; HEADER_LEN + msg::MAX_MESSAGE_PAYLOAD + TRAILER_LEN];
            let n = frame::encode_frame(seq as u64, m, &mut buf).unwrap();
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// Valid handshake streams (with the harness's 2-byte prefix), as the
    /// connector and as the listener: the fuzzers' seeds.
    fn seed_streams() -> [std::vec::Vec<u8>; 2] {
        use msg::{AuthResponse, AuthResult, Hello, Login, Message};
        let hello = Message::Hello(Hello {
            nonce: [0x55; 32],
            ha_id: 2,
        });
        // The fuzz MAC's tag for the 1-byte key.
        let tag = Message::AuthResponse(AuthResponse { mac: [1; 32] });
        let ok = Message::AuthResult(AuthResult::Ok);
        let login = Message::Login(Login {
            version: super::super::PROTOCOL_VERSION,
            ha_mode: 0,
            ha_id: 2,
            max_payload: MAX_PAYLOAD,
            max_inflight: 32,
            max_luns: 1024,
            max_ports: 256,
            max_inits_per_port: 2048,
            features: 0x0000_0001_0000_0003,
            node_id: 0x99,
        });
        [
            stream(&[0, 0], &[hello, ok, tag, login, Message::LoginAck]),
            stream(&[1, 0], &[hello, tag, ok, login, Message::LoginAck]),
        ]
    }

    /// The handshake harness can reach link-up on both sides (so the fuzzer
    /// can too), and the decode harness accepts a valid stream.
    #[test]
    fn fuzz_harness_reaches_link_up() {
        use handshake::Phase;
        use msg::{AuthResult, Message};
        let [connector, listener] = seed_streams();
        assert_eq!(fuzz_harness::handshake(&connector), Some(Phase::Up));
        assert_eq!(fuzz_harness::handshake(&listener), Some(Phase::Up));
        // The seeds' trailers are right; the harnesses' resealing repairs a
        // changed frame (here the Hello's ha_id, 2 to 1: a conflict).
        assert_eq!(fuzz_harness::resealed(&connector[2..]), None);
        let mut changed = connector.clone();
        changed[2 + HEADER_LEN + 32] = 1;
        assert!(matches!(
            frame::split_frame(&changed[2..]),
            Err(WireError::ChecksumMismatch { msg: msg::MsgType::Hello, seq: 0, .. })
        ));
        assert_eq!(fuzz_harness::handshake(&changed), Some(Phase::Hello));
        let repaired = [&changed[..2], &fuzz_harness::resealed(&changed[2..]).unwrap()[..]].concat();
        assert_eq!(fuzz_harness::handshake(&repaired), Some(Phase::Aborted));
        // Wrong order stops early.
        let mut rest = &listener[2..];
        let mut frames = std::vec::Vec::new();
        while let Ok((f, used)) = frame::split_frame(rest) {
            frames.push(Message::decode(f.header.msg_type, f.payload).unwrap());
            rest = &rest[used..];
        }
        assert_eq!(frames.len(), 5);
        frames.swap(1, 2);
        assert_eq!(frames[1], Message::AuthResult(AuthResult::Ok));
        let bad = stream(&listener[..2], &frames);
        assert_eq!(fuzz_harness::handshake(&bad), Some(Phase::Aborted));
        assert_eq!(fuzz_harness::handshake(&[0]), None);
        fuzz_harness::decode(&connector[2..]);
        fuzz_harness::decode(&[]);
        for pick in [0u8, 1, 63, 200] {
            let mut d = std::vec![pick];
            d.extend_from_slice(&connector[2..]);
            fuzz_harness::session(&d);
        }
        fuzz_harness::session(b"");
        fuzz_harness::session(b"\x05GET / HTTP/1.1\r\n\r\n");
    }

    /// A bounded mutation fuzzer on stable Rust, run by `make check`: valid
    /// handshake streams mutated (bit flips, boundary values in length and
    /// type fields, inserted, deleted, duplicated and truncated ranges) and
    /// fed to the three harnesses for TCM_HA_FUZZ_SECS seconds (default 2).
    /// TCM_HA_FUZZ_SEED replays a run. An input that panics is saved under
    /// `host/fuzz/regressions/` (replayed by the test below) before the
    /// panic is passed on. cargo-fuzz (`make fuzz`) explores further.
    #[test]
    fn fuzz_mutations_bounded() {
        use std::time::{Duration, Instant, SystemTime};
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        let secs = env("TCM_HA_FUZZ_SECS").unwrap_or(2);
        let seed = env("TCM_HA_FUZZ_SEED").unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        }) | 1;
        // xorshift64*: deterministic for a seed.
        let mut state = seed;
        let mut rnd = move |n: usize| -> usize {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as usize % n.max(1)
        };
        const INTERESTING: [u32; 9] = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x1_0000, 0x7fff_ffff, u32::MAX];
        let seeds = seed_streams();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut cases = 0u64;
        while cases < 1000 || Instant::now() < deadline {
            let mut d = seeds[rnd(2)].clone();
            for _ in 0..1 + rnd(8) {
                let len = d.len();
                let at = rnd(len + 1);
                match rnd(7) {
                    0 if len > 0 => d[at.min(len - 1)] ^= 1 << rnd(8),
                    1 if len > 0 => d[at.min(len - 1)] = rnd(256) as u8,
                    2 if at + 4 <= len => d[at..at + 4]
                        .copy_from_slice(&INTERESTING[rnd(INTERESTING.len())].to_le_bytes()),
                    3 => {
                        let end = (at + 1 + rnd(64)).min(len);
                        d.drain(at..end);
                    }
                    4 => {
                        let end = (at + 1 + rnd(64)).min(len);
                        let chunk = d[at..end].to_vec();
                        let to = rnd(len + 1);
                        d.splice(to..to, chunk);
                    }
                    5 => d.truncate(at),
                    _ => {
                        let extra: std::vec::Vec<u8> = (0..1 + rnd(32)).map(|_| rnd(256) as u8).collect();
                        d.splice(at..at, extra);
                    }
                }
            }
            let input = d.clone();
            let r = std::panic::catch_unwind(move || {
                fuzz_harness::decode(&d);
                fuzz_harness::handshake(&d);
                fuzz_harness::session(&d);
            });
            if let Err(p) = r {
                let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions");
                let name = std::format!("{dir}/mutation-{seed:016x}-{cases}");
                let _ = std::fs::create_dir_all(dir);
                let _ = std::fs::write(&name, &input);
                std::eprintln!("fuzz: seed {seed} case {cases} panicked; input saved as {name}");
                std::panic::resume_unwind(p);
            }
            cases += 1;
        }
        std::println!("[fuzz] {cases} mutated streams in {secs} s (seed {seed}), no panic");
    }

    /// Replays every file under `host/fuzz/regressions/` through both fuzz
    /// harnesses (inputs that once crashed a fuzz target).
    #[test]
    fn fuzz_regressions_replay() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                let data = std::fs::read(&path).unwrap();
                fuzz_harness::decode(&data);
                fuzz_harness::handshake(&data);
                fuzz_harness::session(&data);
            }
        }
    }
}
