// SPDX-License-Identifier: GPL-2.0

//! Fuzz harnesses for the interlink codec and handshake.
//!
//! Shared by the cargo-fuzz targets (`fuzz_targets/*.rs`, which mount
//! `rust/core/` as `crate::core_logic`) and by the host unit tests, which
//! replay every file under `host/fuzz/regressions/` through both functions.
//! Panics here are the fuzzing oracle; this file is never built into the
//! kernel module.
//!
//! Every frame ends in a CRC32C trailer, so a mutated input mostly stops at
//! the first checksum. Each harness therefore also runs the input with its
//! trailers recomputed ([`resealed`]), which takes the mutation to the
//! header, message and handshake checks behind the checksum.

use crate::core_logic::link::{SendError, Session, Tx};
use crate::core_logic::wire::crc::{Crc32c, TableCrc32c};
use crate::core_logic::wire::frame::{encode_data_head, encode_frame, split_frame, trailer, FrameHeader, SeqChecker};
use crate::core_logic::wire::handshake::{
    AbortReason, Config, Handshake, LocalParams, Mac, Outcome, Phase, Side, Step, MIN_MAX_PAYLOAD,
};
use crate::core_logic::wire::msg::{IoData, Message, IO_CHUNK, IO_DATA_HEAD, MAC_LEN, MAX_MESSAGE_PAYLOAD};
use crate::core_logic::wire::{HEADER_LEN, MAX_PAYLOAD, TRAILER_LEN};
use core::fmt::{self, Write};

/// Counts formatted bytes (exercises every `Display` without allocating).
struct Sink(usize);

impl Write for Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// Formats `t` and checks the text is not empty.
fn display<T: fmt::Display>(t: &T) {
    let mut s = Sink(0);
    write!(s, "{t}").expect("Display must not fail");
    assert!(s.0 > 0, "empty Display");
}

/// Longest frame the harnesses encode.
const BUF: usize = HEADER_LEN + MAX_MESSAGE_PAYLOAD + IO_DATA_HEAD + IO_CHUNK + TRAILER_LEN;

/// `stream` with the trailer of each frame recomputed, following the frames
/// by their length fields as long as whole frames fit (a length above
/// [`MAX_PAYLOAD`] stops it); `None` if that changed nothing.
pub(crate) fn resealed(stream: &[u8]) -> Option<std::vec::Vec<u8>> {
    let mut out = stream.to_vec();
    let mut pos = 0;
    while let Some(h) = out.get(pos..pos + HEADER_LEN) {
        let len = u32::from_le_bytes(h[12..16].try_into().unwrap());
        let end = pos + HEADER_LEN + len as usize;
        if len > MAX_PAYLOAD || end + TRAILER_LEN > out.len() {
            break;
        }
        let t = trailer(&TableCrc32c, &[&out[pos..end]]);
        out[end..end + TRAILER_LEN].copy_from_slice(&t);
        pos = end + TRAILER_LEN;
    }
    (out != stream).then_some(out)
}

/// Runs `f` on `data` and, if recomputing the trailers after the first
/// `prefix` bytes changes anything, on that too; returns `f(data)`.
fn also_resealed<T>(data: &[u8], prefix: usize, f: impl Fn(&[u8]) -> T) -> T {
    let r = f(data);
    if let Some(stream) = data.get(prefix..).and_then(resealed) {
        let mut d = data[..prefix].to_vec();
        d.extend_from_slice(&stream);
        f(&d);
    }
    r
}

/// Encodes `msg` (with `data` after an IoData's fields) as a frame into
/// `buf`; returns its length.
fn encode(seq: u64, msg: &Message, data: &[u8], buf: &mut [u8]) -> usize {
    match msg {
        Message::IoData(d) => {
            assert_eq!(d.len as usize, data.len());
            let n = encode_data_head(seq, d, buf).expect("encoding a decoded IoData head");
            buf[n..n + data.len()].copy_from_slice(data);
            let end = n + data.len();
            let t = trailer(&TableCrc32c, &[&buf[..n], data]);
            buf[end..end + TRAILER_LEN].copy_from_slice(&t);
            end + TRAILER_LEN
        }
        m => encode_frame(seq, m, buf).expect("encoding a decoded message"),
    }
}

/// Checks that `msg` re-encodes and decodes to itself.
fn roundtrip(seq: u64, msg: &Message, data: &[u8]) {
    let mut buf = std::vec![0u8; BUF];
    let n = encode(seq, msg, data, &mut buf);
    let (frame, used) = split_frame(&buf[..n]).expect("re-decoding an encoded frame");
    assert_eq!(used, n);
    assert_eq!(frame.header.seq, seq);
    assert_eq!(
        Message::decode(frame.header.msg_type, frame.payload).as_ref(),
        Ok(msg)
    );
}

/// Decodes `data` as a stream of frames; every decoded message must
/// re-encode to exactly the bytes it came from.
pub(crate) fn decode(data: &[u8]) {
    also_resealed(data, 0, decode_stream);
}

fn decode_stream(data: &[u8]) {
    if let Err(e) = FrameHeader::decode(data) {
        display(&e);
    }
    let mut rest = data;
    let mut seq = SeqChecker::new();
    loop {
        match split_frame(rest) {
            Ok((frame, used)) => {
                assert!(used <= rest.len());
                assert_eq!(used, HEADER_LEN + frame.payload.len() + TRAILER_LEN);
                assert_eq!(Some(used), frame.header.frame_len());
                assert!(frame.payload.len() <= MAX_PAYLOAD as usize);
                if let Err(e) = seq.check(frame.header.seq) {
                    display(&e);
                }
                match Message::decode(frame.header.msg_type, frame.payload) {
                    Ok(msg) => {
                        let mut buf = std::vec![0u8; BUF];
                        let data = if matches!(msg, Message::IoData(_)) { IoData::data_of(frame.payload) } else { &[] };
                        let n = encode(frame.header.seq, &msg, data, &mut buf);
                        assert_eq!(&buf[..n], &rest[..used], "encoding is not canonical");
                    }
                    Err(e) => display(&e),
                }
                rest = &rest[used..];
            }
            Err(e) => {
                display(&e);
                break;
            }
        }
    }
}

/// A MAC the fuzzer can satisfy: every tag is `[key length; 32]`.
struct FuzzMac;

impl Crc32c for FuzzMac {}

impl Mac for FuzzMac {
    fn hmac_sha256(&self, key: &[u8], _parts: &[&[u8]]) -> [u8; MAC_LEN] {
        [key.len() as u8; MAC_LEN]
    }
}

/// Checks a step's messages and outcome; returns true if the handshake ended.
fn check_step(step: &Step, local: &LocalParams, seq: &mut u64) -> bool {
    assert!(step.send.len() <= 2);
    for m in step.send.iter() {
        roundtrip(*seq, m, &[]);
        *seq += 1;
    }
    match step.outcome {
        Outcome::Continue => false,
        Outcome::Abort(r) => {
            display(&r);
            if let AbortReason::PeerBye(_) = r {
                assert!(!step.send.iter().any(|m| matches!(m, Message::Bye(_))));
            }
            true
        }
        Outcome::Up(p) => {
            assert!((1..=2).contains(&p.peer_ha_id));
            assert_ne!(p.peer_ha_id, local.ha_id);
            assert_ne!(p.peer_node_id, local.node_id);
            assert_eq!(p.ha_mode, local.ha_mode);
            assert!(p.max_payload >= MIN_MAX_PAYLOAD && p.max_payload <= local.max_payload);
            assert!(p.max_inflight >= 1 && p.max_inflight <= local.max_inflight);
            assert_eq!(p.max_luns, local.max_luns);
            true
        }
    }
}

/// Feeds the frames in `data` (after a 2-byte configuration prefix) to one
/// handshake state machine and checks its invariants.
///
/// Prefix byte 0: bit 0 listener (else connector), bit 1 empty key, bit 2
/// allow an empty key, and the first byte of our nonce. Byte 1: bit 0 selects
/// ha_id 2 (else 1), bits 1.. modulo 3 the ha_mode. The fuzz MAC makes every
/// tag `[key length; 32]`. Returns the phase the handshake stopped in
/// (with `data` as given; it also runs with the trailers recomputed).
pub(crate) fn handshake(data: &[u8]) -> Option<Phase> {
    also_resealed(data, 2, handshake_stream)
}

fn handshake_stream(data: &[u8]) -> Option<Phase> {
    let (cfg_bytes, mut rest) = match data {
        [a, b, rest @ ..] => ([*a, *b], rest),
        _ => return None,
    };
    let local = LocalParams {
        ha_id: 1 + (cfg_bytes[1] & 1),
        ha_mode: (cfg_bytes[1] >> 1) % 3,
        max_payload: MAX_PAYLOAD,
        max_inflight: 32,
        max_luns: 1024,
        max_ports: 256,
        max_inits_per_port: 2048,
        features: 0x0000_0001_0000_0003,
        node_id: 0x1234,
    };
    let key: &[u8] = if cfg_bytes[0] & 2 != 0 { b"" } else { b"k" };
    let cfg = Config {
        side: if cfg_bytes[0] & 1 != 0 {
            Side::Listener
        } else {
            Side::Connector
        },
        key,
        allow_empty_key: cfg_bytes[0] & 4 != 0,
        local,
    };
    let mut nonce = [0u8; 32];
    nonce[0] = cfg_bytes[0];
    let mut hs = match Handshake::new(cfg, FuzzMac, nonce) {
        Ok(hs) => hs,
        Err(e) => {
            display(&e);
            return None;
        }
    };
    let mut tx_seq = 0u64;
    let mut done = check_step(&hs.on_connected(), &local, &mut tx_seq);
    let mut rx = SeqChecker::new();
    while !done {
        match split_frame(rest) {
            Ok((frame, used)) => {
                rest = &rest[used..];
                // A real link aborts on a sequence error; the fuzzer may
                // ignore it to reach deeper states.
                if let Err(e) = rx.check(frame.header.seq) {
                    display(&e);
                }
                match Message::decode(frame.header.msg_type, frame.payload) {
                    Ok(msg) => done = check_step(&hs.on_frame(&msg), &local, &mut tx_seq),
                    Err(e) => display(&e),
                }
            }
            Err(e) => {
                display(&e);
                if rest.first().is_some_and(|b| b & 1 != 0) {
                    check_step(&hs.on_timeout(), &local, &mut tx_seq);
                }
                break;
            }
        }
    }
    // Whatever happened, later events never panic and never bring a link up.
    let phase = hs.phase();
    let step = hs.on_frame(&Message::LoginAck);
    if phase == Phase::Aborted || phase == Phase::Up {
        assert!(matches!(
            step.outcome,
            Outcome::Abort(AbortReason::BadEvent { .. })
        ));
    }
    if phase == Phase::Aborted {
        assert!(step.send.is_empty());
    }
    let step = hs.on_timeout();
    assert!(matches!(step.outcome, Outcome::Abort(_)));
    Some(phase)
}


/// Takes every frame and drops it.
struct NullTx;

impl Tx for NullTx {
    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        assert!(frame.len() >= HEADER_LEN);
        Ok(())
    }
}

/// Feeds `data` (after its first byte) to a listener-side [`Session`] as a
/// byte stream arriving in chunks of 1..=64 bytes, with clock ticks between
/// chunks (both picked by the first byte): never a panic, never more bytes
/// consumed than were given, and every failure has a text. Also runs with
/// the trailers recomputed.
pub(crate) fn session(data: &[u8]) {
    also_resealed(data, 1, session_stream)
}

fn session_stream(data: &[u8]) {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let cfg = Config {
        side: Side::Listener,
        key: b"k",
        allow_empty_key: false,
        local: LocalParams {
            ha_id: 2,
            ha_mode: 0,
            max_payload: MIN_MAX_PAYLOAD,
            max_inflight: 1,
            max_luns: 1024,
            max_ports: 256,
            max_inits_per_port: 2048,
            features: 0,
            node_id: 7,
        },
    };
    let mut s = Session::new(cfg, FuzzMac, [pick; 32], 0).expect("a valid configuration");
    s.start(0, &mut NullTx).expect("NullTx never fails");
    let chunk = usize::from(pick % 64) + 1;
    let (mut start, mut end, mut now) = (0usize, 0usize, 0u64);
    while end < stream.len() {
        end = (end + chunk).min(stream.len());
        match s.on_bytes(&stream[start..end], now, &mut NullTx, &mut |m, d| roundtrip(0, m, d)) {
            Ok((used, _)) => {
                assert!(used <= end - start);
                start += used;
            }
            Err(e) => {
                display(&e);
                return;
            }
        }
        now += u64::from(pick) * 7;
        if let Err(e) = s.on_tick(now, &mut NullTx) {
            display(&e);
            return;
        }
    }
}
