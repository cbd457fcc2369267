// SPDX-License-Identifier: GPL-2.0

//! One interlink connection as the link thread drives it, in plain Rust.
//!
//! The kernel side owns the socket and the clock; it feeds received bytes and
//! clock ticks into a [`Session`] and sends what the session hands to its
//! [`Tx`]. The session does the framing (sequence numbers both ways, CRC32C
//! trailers made and checked with the [`Mac`] provider's implementation,
//! frames validated before their payload is looked at), the authentication and login
//! handshake ([`super::wire::handshake`]), heartbeats and dead-peer detection.
//! Every way a connection can end is a [`LinkError`] whose `Display` is the
//! dmesg text. [`Backoff`] spaces reconnects and [`RepeatGate`] keeps a failing
//! peer from flooding the log.

use core::fmt;

use super::wire::frame::{encode_data_head, encode_frame_with, split_frame_with, trailer, SeqChecker, SeqCounter};
use super::wire::handshake::{
    AbortReason, Config, ConfigError, Handshake, LinkParams, Mac, Outcome, Step,
    HANDSHAKE_TIMEOUT_MS,
};
use super::wire::msg::{ByeReason, IoData, Message, IO_DATA_HEAD, MAX_MESSAGE_PAYLOAD, NONCE_LEN};
use super::wire::{EncodeError, WireError, HEADER_LEN, TRAILER_LEN};

/// A heartbeat goes out when nothing was sent for this long (ms).
pub(crate) const HEARTBEAT_MS: u64 = 300;

/// The peer is declared dead after this long without a frame (ms). With
/// heartbeats every [`HEARTBEAT_MS`] this tolerates four lost intervals and
/// still detects a dead or frozen peer within 2 s of its last frame.
pub(crate) const DEAD_PEER_MS: u64 = 1500;

/// Longest encoded frame of the messages a session sends itself.
const MAX_OWN_FRAME: usize = HEADER_LEN + MAX_MESSAGE_PAYLOAD + TRAILER_LEN;

/// Sends whole frames on the connection.
pub(crate) trait Tx {
    /// Sends all of `frame`, or fails (the connection is then dropped).
    fn send(&mut self, frame: &[u8]) -> Result<(), SendError>;
}

/// A send failed; the kernel's errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SendError(pub(crate) i32);

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkError {
    /// Our own settings cannot bring a link up (no key, bad ha_id...).
    Config(ConfigError),
    /// A frame broke the format or the sequence.
    Wire(WireError),
    /// The handshake failed (authentication, login check, timeout, peer Bye).
    Handshake(AbortReason),
    /// The peer said Bye after the link was up.
    PeerBye(ByeReason),
    /// A handshake message arrived on an established link.
    UnexpectedWhileUp(super::wire::msg::MsgType),
    /// Nothing arrived from the peer for this many ms.
    DeadPeer(u64),
    /// The peer closed the TCP connection.
    Closed,
    /// A send failed (errno).
    Send(i32),
    /// A receive failed (errno).
    Recv(i32),
    /// We could not encode a frame (a bug, never the peer's fault).
    Encode(EncodeError),
}

impl LinkError {
    /// Whether this is an authentication failure (counted separately and
    /// logged with the peer address).
    pub(crate) fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            LinkError::Config(ConfigError::NoKey)
                | LinkError::Handshake(
                    AbortReason::AuthFailed
                        | AbortReason::PeerRejectedAuth
                        | AbortReason::NonceReflected
                )
                | LinkError::Handshake(AbortReason::PeerBye(ByeReason::AuthFailed))
        )
    }

    /// Whether an established link ended because the peer is gone (dead,
    /// disconnected without a word, or going down), as opposed to a
    /// configuration change or a fault of the link itself: what
    /// `failover=auto` promotes a secondary on.
    pub(crate) fn peer_lost(&self) -> bool {
        matches!(
            self,
            LinkError::DeadPeer(_)
                | LinkError::Closed
                | LinkError::Recv(_)
                | LinkError::Send(_)
                | LinkError::PeerBye(ByeReason::Shutdown)
        )
    }

    /// A small number naming the kind of failure, for [`RepeatGate`].
    pub(crate) fn kind(&self) -> u32 {
        match self {
            LinkError::Config(_) => 1,
            LinkError::Wire(_) => 2,
            // An authentication failure is its own kind: after a run of
            // other handshake failures it must still reach the log.
            LinkError::Handshake(_) if self.is_auth_failure() => 11,
            LinkError::Handshake(_) => 3,
            LinkError::PeerBye(_) => 4,
            LinkError::UnexpectedWhileUp(_) => 5,
            LinkError::DeadPeer(_) => 6,
            LinkError::Closed => 7,
            LinkError::Send(_) => 8,
            LinkError::Recv(_) => 9,
            LinkError::Encode(_) => 10,
        }
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Config(e) => write!(f, "{e}"),
            LinkError::Wire(e) => write!(f, "protocol error: {e}"),
            LinkError::Handshake(e) => write!(f, "{e}"),
            LinkError::PeerBye(r) => write!(f, "peer closed the link: {r}"),
            LinkError::UnexpectedWhileUp(t) => {
                write!(f, "protocol error: unexpected {t} on an established link")
            }
            LinkError::DeadPeer(ms) => write!(f, "peer silent for {ms} ms: declared dead"),
            LinkError::Closed => f.write_str("peer closed the connection"),
            LinkError::Send(e) => write!(f, "send failed: error {e}"),
            LinkError::Recv(e) => write!(f, "receive failed: error {e}"),
            LinkError::Encode(e) => write!(f, "internal error encoding a frame: {e:?}"),
        }
    }
}

/// One connection from TCP connect to close.
pub(crate) struct Session<'k, M: Mac> {
    hs: Handshake<'k, M>,
    rx_seq: SeqChecker,
    tx_seq: SeqCounter,
    params: Option<LinkParams>,
    started_ms: u64,
    last_rx_ms: u64,
    last_tx_ms: u64,
    heartbeats: u64,
    /// Frames received and sent on this connection.
    pub(crate) frames_in: u64,
    /// See `frames_in`.
    pub(crate) frames_out: u64,
}

impl<'k, M: Mac> Session<'k, M> {
    /// A session for a freshly connected socket. `nonce` must be fresh random
    /// bytes; `now_ms` is a monotonic clock in milliseconds.
    pub(crate) fn new(
        cfg: Config<'k>,
        mac: M,
        nonce: [u8; NONCE_LEN],
        now_ms: u64,
    ) -> Result<Self, LinkError> {
        let hs = Handshake::new(cfg, mac, nonce).map_err(LinkError::Config)?;
        Ok(Session {
            hs,
            rx_seq: SeqChecker::new(),
            tx_seq: SeqCounter::new(),
            params: None,
            started_ms: now_ms,
            last_rx_ms: now_ms,
            last_tx_ms: now_ms,
            heartbeats: 0,
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// The negotiated parameters once the link is up.
    pub(crate) fn params(&self) -> Option<LinkParams> {
        self.params
    }

    /// Starts the handshake (sends our Hello).
    pub(crate) fn start(&mut self, now_ms: u64, tx: &mut impl Tx) -> Result<(), LinkError> {
        let step = self.hs.on_connected();
        self.carry_out(step, now_ms, tx).map(|_| ())
    }

    /// Consumes the complete frames at the start of `buf`. Returns how many
    /// bytes were used (the caller keeps the rest for the next call) and the
    /// link parameters if the link came up during this call. Inventory
    /// messages of an established link go to `inbox`.
    // Not inlined: the interlink thread's stack holds one such frame at a
    // time, not the sum of all of them (see `Interlink::converse`).
    #[inline(never)]
    pub(crate) fn on_bytes(
        &mut self,
        buf: &[u8],
        now_ms: u64,
        tx: &mut impl Tx,
        inbox: &mut impl FnMut(&Message, &[u8]),
    ) -> Result<(usize, Option<LinkParams>), LinkError> {
        let mut used = 0;
        let mut up = None;
        while let Some(rest) = buf.get(used..) {
            // Frames are checked with the MAC provider's CRC32C (the
            // kernel's own in the module).
            let decoded = split_frame_with(rest, self.hs.mac()).and_then(|(f, n)| {
                Message::decode(f.header.msg_type, f.payload).map(|m| (f.header.seq, m, f.payload, n))
            });
            let (seq, msg, payload, n) = match decoded {
                Ok(f) => f,
                Err(e) if e.is_incomplete() => break,
                Err(e) => return Err(self.fail(LinkError::Wire(e), tx)),
            };
            if let Err(e) = self.rx_seq.check(seq) {
                return Err(self.fail(LinkError::Wire(e), tx));
            }
            used += n;
            self.frames_in += 1;
            self.last_rx_ms = now_ms;
            let data = if matches!(msg, Message::IoData(_)) { IoData::data_of(payload) } else { &[] };
            if let Some(p) = self.on_message(&msg, data, now_ms, tx, inbox)? {
                up = Some(p);
            }
        }
        Ok((used, up))
    }

    /// Time passed: handshake timeout, heartbeat, dead-peer check.
    // Not inlined: the interlink thread's stack holds one such frame at a
    // time, not the sum of all of them (see `Interlink::converse`).
    #[inline(never)]
    pub(crate) fn on_tick(&mut self, now_ms: u64, tx: &mut impl Tx) -> Result<(), LinkError> {
        if self.params.is_none() {
            if now_ms.saturating_sub(self.started_ms) >= u64::from(HANDSHAKE_TIMEOUT_MS) {
                let step = self.hs.on_timeout();
                self.carry_out(step, now_ms, tx)?;
            }
            return Ok(());
        }
        let silent = now_ms.saturating_sub(self.last_rx_ms);
        if silent >= DEAD_PEER_MS {
            return Err(self.fail(LinkError::DeadPeer(silent), tx));
        }
        if now_ms.saturating_sub(self.last_tx_ms) >= HEARTBEAT_MS {
            self.heartbeats += 1;
            self.send(&Message::Heartbeat(self.heartbeats), now_ms, tx)?;
        }
        Ok(())
    }

    /// Sends an inventory message on the established link; `Ok(false)` (and
    /// nothing sent) while the link is not up.
    pub(crate) fn send_when_up(
        &mut self,
        msg: &Message,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Result<bool, LinkError> {
        if self.params.is_none() {
            return Ok(false);
        }
        self.send(msg, now_ms, tx).map(|()| true)
    }

    /// Sends an IoData frame with `data` on the established link (see
    /// [`Session::send_when_up`]).
    pub(crate) fn send_data_when_up(
        &mut self,
        tag: u32,
        offset: u32,
        data: &[u8],
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Result<bool, LinkError> {
        if self.params.is_none() {
            return Ok(false);
        }
        let len = u32::try_from(data.len()).map_err(|_| LinkError::Encode(EncodeError::PayloadTooLarge { len: data.len() }))?;
        let mut head = [0u8; HEADER_LEN + IO_DATA_HEAD];
        let n = encode_data_head(self.tx_seq.next_seq(), &IoData { tag, offset, len }, &mut head)
            .map_err(LinkError::Encode)?;
        let head = head.get(..n).unwrap_or(&[]);
        let tail = trailer(self.hs.mac(), &[head, data]);
        tx.send(head).map_err(|SendError(e)| LinkError::Send(e))?;
        tx.send(data).map_err(|SendError(e)| LinkError::Send(e))?;
        tx.send(&tail).map_err(|SendError(e)| LinkError::Send(e))?;
        self.frames_out += 1;
        self.last_tx_ms = now_ms;
        Ok(true)
    }

    /// Says Bye before the caller closes the connection (best effort).
    pub(crate) fn bye(&mut self, reason: ByeReason, now_ms: u64, tx: &mut impl Tx) {
        let _ = self.send(&Message::Bye(reason), now_ms, tx);
    }

    fn on_message(
        &mut self,
        msg: &Message,
        data: &[u8],
        now_ms: u64,
        tx: &mut impl Tx,
        inbox: &mut impl FnMut(&Message, &[u8]),
    ) -> Result<Option<LinkParams>, LinkError> {
        if self.params.is_none() {
            return self.handshake_frame(msg, now_ms, tx);
        }
        match *msg {
            Message::Heartbeat(v) => self.send(&Message::HeartbeatAck(v), now_ms, tx)?,
            Message::HeartbeatAck(_) => {}
            Message::Bye(r) => return Err(LinkError::PeerBye(r)),
            Message::LunState(_)
            | Message::LunGone(_)
            | Message::PrBegin(_)
            | Message::PrReg(_)
            | Message::PrEnd(..)
            | Message::PrOut(_)
            | Message::PrOutDone(_)
            | Message::UaNexus(_)
            | Message::UaAll(..)
            | Message::ModePages(_)
            | Message::AbortNexus(_)
            | Message::AbortDone(_)
            | Message::AbortLun(_)
            | Message::IoReq(_)
            | Message::IoData(_)
            | Message::IoDone(_)
            | Message::IoAbort(_)
            | Message::OrderReq(_)
            | Message::OrderGrant(_)
            | Message::OrderDone(_) => inbox(msg, data),
            ref other => {
                return Err(self.fail(LinkError::UnexpectedWhileUp(other.msg_type()), tx));
            }
        }
        Ok(None)
    }

    /// A frame of the handshake. Not inlined: a handshake step holds
    /// several messages, and the frames of the established link (whose
    /// handlers go deeper) need not carry that room.
    #[inline(never)]
    fn handshake_frame(&mut self, msg: &Message, now_ms: u64, tx: &mut impl Tx) -> Result<Option<LinkParams>, LinkError> {
        let step = self.hs.on_frame(msg);
        self.carry_out(step, now_ms, tx)
    }

    /// Sends a handshake step's messages and acts on its outcome.
    fn carry_out(
        &mut self,
        step: Step,
        now_ms: u64,
        tx: &mut impl Tx,
    ) -> Result<Option<LinkParams>, LinkError> {
        for m in step.send.iter() {
            self.send(m, now_ms, tx)?;
        }
        match step.outcome {
            Outcome::Continue => Ok(None),
            Outcome::Abort(r) => Err(LinkError::Handshake(r)),
            Outcome::Up(p) => {
                self.params = Some(p);
                self.last_rx_ms = now_ms;
                Ok(Some(p))
            }
        }
    }

    /// Sends Bye for a failure we detected and returns the failure.
    fn fail(&mut self, e: LinkError, tx: &mut impl Tx) -> LinkError {
        let reason = match e {
            LinkError::DeadPeer(_) => Some(ByeReason::Timeout),
            LinkError::Wire(w) => w.bye_reason(),
            LinkError::UnexpectedWhileUp(_) => Some(ByeReason::ProtocolError),
            _ => None,
        };
        if let Some(r) = reason {
            let now = self.last_tx_ms;
            self.bye(r, now, tx);
        }
        e
    }

    fn send(&mut self, msg: &Message, now_ms: u64, tx: &mut impl Tx) -> Result<(), LinkError> {
        let mut buf = [0u8; MAX_OWN_FRAME];
        let seq = self.tx_seq.next_seq();
        let n = encode_frame_with(seq, msg, &mut buf, self.hs.mac()).map_err(LinkError::Encode)?;
        let frame = buf.get(..n).ok_or(LinkError::Encode(EncodeError::BufferTooSmall {
            need: n,
            have: MAX_OWN_FRAME,
        }))?;
        tx.send(frame).map_err(|SendError(e)| LinkError::Send(e))?;
        self.frames_out += 1;
        self.last_tx_ms = now_ms;
        Ok(())
    }
}

/// Checks an HMAC-SHA256 implementation against RFC 4231 test case 2, fed
/// in two parts as the handshake does; the module runs it at load so a
/// broken crypto binding fails loudly instead of as "authentication failed".
pub(crate) fn mac_self_test(m: &impl Mac) -> bool {
    const WANT: [u8; 32] = [
        0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75,
        0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec,
        0x38, 0x43,
    ];
    m.hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]) == WANT
}

/// Reconnect delay: doubles from [`Backoff::MIN_MS`] up to [`Backoff::MAX_MS`]
/// on each failure, back to the minimum once a link came up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    next_ms: u32,
}

impl Backoff {
    /// First delay.
    pub(crate) const MIN_MS: u32 = 100;
    /// Cap.
    pub(crate) const MAX_MS: u32 = 5000;

    /// A fresh backoff.
    pub(crate) const fn new() -> Self {
        Backoff {
            next_ms: Self::MIN_MS,
        }
    }

    /// The delay to wait now; the next one doubles (capped).
    pub(crate) fn next_delay(&mut self) -> u32 {
        let d = self.next_ms;
        self.next_ms = d.saturating_mul(2).min(Self::MAX_MS);
        d
    }

    /// After a link came up.
    pub(crate) fn reset(&mut self) {
        self.next_ms = Self::MIN_MS;
    }
}

/// Decides which repeats of the same failure reach the log: the first, then
/// the 2nd, 4th, 8th... occurrence in a row (so a peer failing every 5 s
/// logs a handful of lines an hour, not 720).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RepeatGate {
    last: Option<u32>,
    count: u32,
}

impl RepeatGate {
    /// A gate that has seen nothing.
    pub(crate) const fn new() -> Self {
        RepeatGate {
            last: None,
            count: 0,
        }
    }

    /// Records failure `kind`; returns `Some(n)` (`n` = occurrences in a row
    /// so far) if this one should be logged.
    pub(crate) fn note(&mut self, kind: u32) -> Option<u32> {
        if self.last == Some(kind) {
            self.count = self.count.saturating_add(1);
        } else {
            self.last = Some(kind);
            self.count = 1;
        }
        self.count.is_power_of_two().then_some(self.count)
    }

    /// A link came up (or the settings changed): start over.
    pub(crate) fn clear(&mut self) {
        *self = Self::new();
    }
}

/// A short text kept without allocating (the last link error for
/// `ha_link`); longer text is cut at a character boundary.
#[derive(Clone, Copy)]
pub(crate) struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    /// Empty text.
    pub(crate) const fn new() -> Self {
        Text { buf: [0; N], len: 0 }
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        let bytes = self.buf.get(..self.len).unwrap_or(&[]);
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            // Cut inside a character: keep the valid prefix.
            Err(e) => core::str::from_utf8(bytes.get(..e.valid_up_to()).unwrap_or(&[]))
                .unwrap_or(""),
        }
    }

    /// Replaces the text with `args`.
    pub(crate) fn set(&mut self, args: fmt::Arguments<'_>) {
        self.len = 0;
        let _ = fmt::Write::write_fmt(self, args);
    }
}

impl<const N: usize> fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let take = s.len().min(room);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..self.len + take), s.as_bytes().get(..take)) {
            dst.copy_from_slice(src);
            self.len += take;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::frame::encode_frame;
    use super::super::wire::handshake::{tests::params, Side};
    use super::super::wire::msg::MAC_LEN;
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    /// A toy MAC for tests: not cryptographic, but key- and data-dependent.
    struct ToyMac;

    impl super::super::wire::crc::Crc32c for ToyMac {}
    impl Mac for ToyMac {
        fn hmac_sha256(&self, key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
            let mut out = [0u8; MAC_LEN];
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in key.iter().chain(parts.iter().flat_map(|p| p.iter())) {
                h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
            for (i, o) in out.iter_mut().enumerate() {
                *o = (h >> ((i % 8) * 8)) as u8 ^ i as u8;
            }
            out
        }
    }

    #[derive(Default)]
    struct Wire(Vec<u8>);
    impl Tx for Wire {
        fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
            self.0.extend_from_slice(frame);
            Ok(())
        }
    }

    fn session<'k>(side: Side, key: &'k [u8], id: u8, nonce: u8) -> Session<'k, ToyMac> {
        let cfg = Config {
            side,
            key,
            allow_empty_key: false,
            local: params(id),
        };
        Session::new(cfg, ToyMac, [nonce; NONCE_LEN], 0).unwrap()
    }

    /// Delivers what `from` sent to `to`; returns the link params if `to`
    /// came up.
    fn pump(
        to: &mut Session<'_, ToyMac>,
        from: &mut Wire,
        back: &mut Wire,
        now: u64,
    ) -> Result<Option<LinkParams>, LinkError> {
        let bytes = core::mem::take(&mut from.0);
        let (used, up) = to.on_bytes(&bytes, now, back, &mut |_, _| {})?;
        assert_eq!(used, bytes.len());
        Ok(up)
    }

    fn linked<'k>(
        key_c: &'k [u8],
        key_l: &'k [u8],
    ) -> (Session<'k, ToyMac>, Session<'k, ToyMac>, Wire, Wire, Result<(), LinkError>) {
        let mut c = session(Side::Connector, key_c, 1, 1);
        let mut l = session(Side::Listener, key_l, 2, 2);
        let (mut to_l, mut to_c) = (Wire::default(), Wire::default());
        c.start(0, &mut to_l).unwrap();
        l.start(0, &mut to_c).unwrap();
        let mut res = Ok(());
        for _ in 0..6 {
            if let Err(e) = pump(&mut l, &mut to_l, &mut to_c, 1) {
                res = Err(e);
                break;
            }
            if let Err(e) = pump(&mut c, &mut to_c, &mut to_l, 1) {
                res = Err(e);
                break;
            }
        }
        (c, l, to_l, to_c, res)
    }

    #[test]
    fn authentication_failures_are_their_own_kind() {
        let auth = LinkError::Handshake(AbortReason::AuthFailed);
        let other = LinkError::Handshake(AbortReason::NonceReflected);
        let timeout = LinkError::Handshake(AbortReason::Timeout(super::super::wire::handshake::Phase::Hello));
        assert_eq!(auth.kind(), other.kind(), "both are authentication failures");
        assert_ne!(auth.kind(), timeout.kind(), "a run of other handshake failures must not hide it");
    }

    #[test]
    fn peer_lost_is_what_failover_acts_on() {
        for e in [LinkError::DeadPeer(1500), LinkError::Closed, LinkError::Recv(-104), LinkError::Send(-32),
                  LinkError::PeerBye(ByeReason::Shutdown)] {
            assert!(e.peer_lost(), "{e:?}");
        }
        for e in [LinkError::PeerBye(ByeReason::ConfigChanged), LinkError::PeerBye(ByeReason::ProtocolError),
                  LinkError::UnexpectedWhileUp(super::super::wire::msg::MsgType::Hello)] {
            assert!(!e.peer_lost(), "{e:?}");
        }
    }

    #[test]
    fn link_comes_up_with_matching_keys() {
        let (c, l, ..) = linked(b"secret", b"secret");
        assert_eq!(c.params().unwrap().peer_ha_id, 2);
        assert_eq!(l.params().unwrap().peer_ha_id, 1);
        assert!(c.frames_out >= 3 && l.frames_in == c.frames_out);
    }

    #[test]
    fn wrong_key_is_an_auth_failure() {
        let (c, l, .., res) = linked(b"secret", b"other");
        let e = res.unwrap_err();
        assert!(e.is_auth_failure(), "{e}");
        assert!(e.to_string().contains("authentication failed"), "{e}");
        assert!(c.params().is_none() && l.params().is_none());
    }

    #[test]
    fn heartbeats_flow_and_silence_kills() {
        let (mut c, mut l, mut to_l, mut to_c, res) = linked(b"k", b"k");
        res.unwrap();
        // Nothing sent for HEARTBEAT_MS: a heartbeat goes out and is answered.
        c.on_tick(1 + HEARTBEAT_MS, &mut to_l).unwrap();
        assert!(!to_l.0.is_empty());
        pump(&mut l, &mut to_l, &mut to_c, 1 + HEARTBEAT_MS).unwrap();
        assert!(!to_c.0.is_empty(), "heartbeat not acknowledged");
        pump(&mut c, &mut to_c, &mut to_l, 2 + HEARTBEAT_MS).unwrap();
        // Then the peer goes silent.
        let e = c.on_tick(2 + HEARTBEAT_MS + DEAD_PEER_MS, &mut to_l).unwrap_err();
        assert_eq!(e, LinkError::DeadPeer(DEAD_PEER_MS));
        // ... and we said Bye(timeout).
        let bytes = core::mem::take(&mut to_l.0);
        let hb_and_bye = l.on_bytes(&bytes, 0, &mut to_c, &mut |_, _| {}).unwrap_err();
        assert_eq!(hb_and_bye, LinkError::PeerBye(ByeReason::Timeout));
    }

    #[test]
    fn handshake_times_out() {
        let mut c = session(Side::Connector, b"k", 1, 1);
        let mut w = Wire::default();
        c.start(0, &mut w).unwrap();
        c.on_tick(u64::from(HANDSHAKE_TIMEOUT_MS) - 1, &mut w).unwrap();
        let e = c.on_tick(u64::from(HANDSHAKE_TIMEOUT_MS), &mut w).unwrap_err();
        assert!(matches!(e, LinkError::Handshake(AbortReason::Timeout(_))), "{e}");
    }

    #[test]
    fn garbage_and_replays_abort_with_a_reason() {
        let (mut c, ..) = linked(b"k", b"k");
        let mut w = Wire::default();
        let e = c.on_bytes(b"GET / HTTP/1.1\r\n\r\nxxxxxxxx", 5, &mut w, &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, LinkError::Wire(WireError::BadMagic { .. })), "{e}");
        // A frame replayed with sequence 0 on an established link.
        let (mut c2, _l2, ..) = linked(b"k", b"k");
        let mut buf = [0u8; 64];
        let n = encode_frame(0, &Message::Heartbeat(1), &mut buf).unwrap();
        let e = c2.on_bytes(&buf[..n], 5, &mut w, &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, LinkError::Wire(WireError::SequenceDuplicate { .. })), "{e}");
    }

    /// A frame corrupted in transit on an established link (one payload
    /// bit of an IoData carrying write data) ends the link with a protocol
    /// error naming the checksum, and a Bye(protocol error) to the peer;
    /// the data never reaches the inbox.
    #[test]
    fn corrupted_frame_ends_the_link() {
        let (mut c, mut l, mut to_l, mut to_c, res) = linked(b"k", b"k");
        res.unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
        assert_eq!(c.send_data_when_up(7, 0, &data, 2, &mut to_l), Ok(true));
        c.send_when_up(&Message::LunGone(3), 2, &mut to_l).unwrap();
        let good = to_l.0.clone();
        // Intact: the data arrives.
        let mut got = Vec::new();
        let (used, _) = l.on_bytes(&good, 2, &mut to_c, &mut |m, d| got.push((*m, d.to_vec()))).unwrap();
        assert_eq!(used, good.len());
        assert_eq!(got[0], (Message::IoData(IoData { tag: 7, offset: 0, len: 3000 }), data.clone()));
        assert_eq!(got[1].0, Message::LunGone(3));
        // One bit of the data flipped, on a fresh pair.
        let (mut c, mut l, mut to_l, mut to_c, res) = linked(b"k", b"k");
        res.unwrap();
        c.send_data_when_up(7, 0, &data, 2, &mut to_l).unwrap();
        let mut bad = core::mem::take(&mut to_l.0);
        bad[HEADER_LEN + IO_DATA_HEAD + 1234] ^= 0x20;
        let mut got = 0;
        let e = l.on_bytes(&bad, 2, &mut to_c, &mut |_, _| got += 1).unwrap_err();
        assert_eq!(got, 0, "corrupted data reached the inbox");
        assert!(matches!(e, LinkError::Wire(WireError::ChecksumMismatch { seq, .. }) if seq == l.frames_in), "{e}");
        let text = e.to_string();
        assert!(text.starts_with("protocol error: frame checksum mismatch: IoData seq "), "{text}");
        assert!(!e.peer_lost());
        // The peer hears Bye(protocol error).
        let bye = core::mem::take(&mut to_c.0);
        let e = c.on_bytes(&bye, 3, &mut to_l, &mut |_, _| {}).unwrap_err();
        assert_eq!(e, LinkError::PeerBye(ByeReason::ProtocolError));
    }

    /// The established link's stream (handshake frames, heartbeats, IoData
    /// with data, inventory) cut at every byte, including inside the
    /// trailers, is consumed whole once the rest arrives.
    #[test]
    fn stream_cut_at_every_byte() {
        let (mut c, _l, mut to_l, _to_c, res) = linked(b"k", b"k");
        res.unwrap();
        let data: Vec<u8> = (0..100u32).map(|i| i as u8).collect();
        c.send_data_when_up(1, 0, &data, 2, &mut to_l).unwrap();
        c.send_when_up(&Message::LunGone(9), 2, &mut to_l).unwrap();
        c.send_data_when_up(1, 100, &data[..1], 2, &mut to_l).unwrap();
        c.on_tick(2 + HEARTBEAT_MS, &mut to_l).unwrap();
        let tail = core::mem::take(&mut to_l.0);
        for cut in 0..=tail.len() {
            let (_c, mut l, _, mut to_c, res) = linked(b"k", b"k");
            res.unwrap();
            let mut got = Vec::new();
            let mut inbox = |m: &Message, d: &[u8]| got.push((*m, d.len()));
            let (used, _) = l.on_bytes(&tail[..cut], 3, &mut to_c, &mut inbox).unwrap();
            let (rest, _) = l.on_bytes(&tail[used..], 3, &mut to_c, &mut inbox).unwrap();
            assert_eq!(used + rest, tail.len(), "cut {cut}");
            assert_eq!(got.len(), 3, "cut {cut}");
            assert_eq!(got[2], (Message::IoData(IoData { tag: 1, offset: 100, len: 1 }), 1));
        }
    }

    /// The session takes the CRC32C from its MAC provider: frames made with
    /// another CRC are refused by a peer, whatever their content.
    #[test]
    fn session_uses_the_providers_crc() {
        struct IeeeMac;
        impl super::super::wire::crc::Crc32c for IeeeMac {
            fn crc32c_update(&self, crc: u32, data: &[u8]) -> u32 {
                crate::core_logic::wire::crc::ieee_crc32_update(crc, data)
            }
        }
        impl Mac for IeeeMac {
            fn hmac_sha256(&self, key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
                ToyMac.hmac_sha256(key, parts)
            }
        }
        let cfg = Config { side: Side::Connector, key: b"k", allow_empty_key: false, local: params(1) };
        let mut c = Session::new(cfg, IeeeMac, [1; NONCE_LEN], 0).unwrap();
        let mut l = session(Side::Listener, b"k", 2, 2);
        let (mut to_l, mut to_c) = (Wire::default(), Wire::default());
        c.start(0, &mut to_l).unwrap();
        l.start(0, &mut to_c).unwrap();
        let e = pump(&mut l, &mut to_l, &mut to_c, 1).unwrap_err();
        assert!(matches!(e, LinkError::Wire(WireError::ChecksumMismatch { seq: 0, .. })), "{e}");
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut c = session(Side::Connector, b"k", 1, 1);
        let mut l = session(Side::Listener, b"k", 2, 2);
        let (mut to_l, mut to_c) = (Wire::default(), Wire::default());
        c.start(0, &mut to_l).unwrap();
        l.start(0, &mut to_c).unwrap();
        let bytes = core::mem::take(&mut to_l.0);
        let (used, _) = l.on_bytes(&bytes[..5], 0, &mut to_c, &mut |_, _| {}).unwrap();
        assert_eq!(used, 0);
        let (used, _) = l.on_bytes(&bytes, 0, &mut to_c, &mut |_, _| {}).unwrap();
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn inventory_flows_only_on_an_up_link() {
        use super::super::wire::msg::tests::lun_state;
        let mut c = session(Side::Connector, b"k", 1, 1);
        let mut w = Wire::default();
        c.start(0, &mut w).unwrap();
        let m = Message::LunState(lun_state());
        assert_eq!(c.send_when_up(&m, 0, &mut w), Ok(false));
        let (mut c, mut l, mut to_l, _to_c, res) = linked(b"k", b"k");
        res.unwrap();
        assert_eq!(c.send_when_up(&m, 2, &mut to_l), Ok(true));
        c.send_when_up(&Message::LunGone(42), 2, &mut to_l).unwrap();
        let mut got = Vec::new();
        let bytes = core::mem::take(&mut to_l.0);
        l.on_bytes(&bytes, 2, &mut Wire::default(), &mut |m, _| got.push(*m)).unwrap();
        assert_eq!(got, [m, Message::LunGone(42)]);
    }

    #[test]
    fn handshake_message_on_an_up_link_is_refused() {
        let (mut c, mut l, mut to_l, mut to_c, res) = linked(b"k", b"k");
        res.unwrap();
        l.send(&Message::LoginAck, 3, &mut to_c).unwrap();
        let e = pump(&mut c, &mut to_c, &mut to_l, 3).unwrap_err();
        assert!(matches!(e, LinkError::UnexpectedWhileUp(_)), "{e}");
    }

    #[test]
    fn mac_self_test_accepts_hmac_sha256_only() {
        assert!(mac_self_test(&super::super::wire::handshake::tests::TestMac));
        assert!(!mac_self_test(&ToyMac));
    }

    #[test]
    fn text_truncates_on_a_char_boundary() {
        let mut t = Text::<8>::new();
        t.set(format_args!("ab{}", 12));
        assert_eq!(t.as_str(), "ab12");
        t.set(format_args!("abcdefgé"));
        assert_eq!(t.as_str(), "abcdefg");
        t.set(format_args!("0123456789"));
        assert_eq!(t.as_str(), "01234567");
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new();
        let seq: Vec<u32> = (0..8).map(|_| b.next_delay()).collect();
        assert_eq!(seq, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Backoff::MIN_MS);
    }

    #[test]
    fn repeat_gate_logs_powers_of_two() {
        let mut g = RepeatGate::new();
        let logged: Vec<u32> = (0..20).filter_map(|_| g.note(7)).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16]);
        assert_eq!(g.note(3), Some(1), "a different failure is logged at once");
        g.clear();
        assert_eq!(g.note(3), Some(1));
    }
}
