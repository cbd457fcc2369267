// SPDX-License-Identifier: GPL-2.0

//! Authentication and login handshake: a pure, event-driven state machine.
//!
//! The caller owns the socket, the timer, the random source and the HMAC
//! implementation ([`Mac`]; the kernel uses its crypto API). It feeds events
//! ([`Handshake::on_connected`], [`Handshake::on_frame`] with a decoded
//! message, [`Handshake::on_timeout`]) and carries out the returned [`Step`]:
//! send every message in [`Step::send`] in order, then act on
//! [`Step::outcome`] (keep going, close the link and log the reason, or
//! bring the link up with the negotiated [`LinkParams`]). Frame-level
//! problems (decode errors, sequence gaps) never reach the state machine: the
//! caller aborts on them directly.
//!
//! # Authentication (mutual, before login)
//!
//! Both nodes share a pre-shared key `K`. On connect each node sends
//! [`Hello`] with a fresh 32-byte nonce and its ha_id. A response is
//!
//! ```text
//! tag(S) = HMAC-SHA256(K, "tcm_ha interlink auth v1" || dir(S)
//!                         || nonce_C || nonce_L || ha_id_C || ha_id_L)
//! ```
//!
//! where `C` is the side that connected, `L` the side that accepted, `S` the
//! side computing the tag, and `dir` is one byte (1 connector, 2 listener).
//! Nonces and ha_ids are always in connector-then-listener order; only the
//! direction byte differs between the two tags, so a tag reflected back to
//! the node that made it never verifies, and a node's tag is bound to this
//! connection's two nonces (a node also refuses a Hello carrying its own
//! nonce).
//!
//! The connector proves itself first, so an unauthenticated client of the
//! listening port never obtains a tag from the listener:
//!
//! ```text
//! connector                                   listener
//!   Hello(nC, idC)           ──►   ◄──        Hello(nL, idL)
//!   AuthResponse(tag(C))     ──►               verify tag(C)
//!                            ◄──        AuthResult(ok), AuthResponse(tag(L))
//!   verify tag(L)
//!   AuthResult(ok), Login    ──►
//!                            ◄──        Login
//!   check peer Login                           check peer Login
//!   LoginAck                 ──►   ◄──        LoginAck
//!   link up                                    link up
//! ```
//!
//! A failed check sends `AuthResult(failed)` or a [`LoginReject`] naming the
//! parameter and both values, then [`Bye`](Message::Bye), and aborts. Anyone
//! who sees a tag can try to guess a weak key offline, so `ha_key` should be
//! long and random.
//!
//! # Login
//!
//! Each side checks the peer's [`Login`]: same protocol version, same
//! ha_mode, peer ha_id 1 or 2, different from ours and equal to the one it
//! authenticated with, different node_id, equal mandatory feature bits (high
//! 32), equal max_luns / max_ports / max_inits_per_port, max_payload at least
//! [`MIN_MAX_PAYLOAD`] and max_inflight at least 1. The link uses the minimum
//! of both max_payload and max_inflight and the intersection of the optional
//! feature bits.

use super::crc::Crc32c;
use super::msg::{
    AuthResponse, AuthResult, ByeReason, Hello, Login, LoginReject, Message, MsgType, RejectReason,
    MAC_LEN, NONCE_LEN,
};
use super::MAX_PAYLOAD;
use crate::core_logic::PROTOCOL_VERSION;
use core::fmt;

/// HMAC-SHA256 provider; the kernel implements it with its crypto API.
///
/// It also provides the CRC32C of the frame trailers ([`Crc32c`]: the
/// plain-Rust tables unless the implementation overrides it; the kernel's
/// uses the kernel's `crc32c()`), which the session takes from here.
pub(crate) trait Mac: Crc32c {
    /// HMAC-SHA256 with `key` over the concatenation of `parts`.
    fn hmac_sha256(&self, key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN];
}

impl<T: Mac + ?Sized> Mac for &T {
    fn hmac_sha256(&self, key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
        (**self).hmac_sha256(key, parts)
    }
}

/// Domain-separation label at the start of every authentication transcript.
pub(crate) const AUTH_LABEL: &[u8] = b"tcm_ha interlink auth v1";

/// Smallest max_payload a node may announce (and the link may negotiate).
pub(crate) const MIN_MAX_PAYLOAD: u32 = 4096;

/// Feature bits that must be equal on both nodes (the high 32 bits).
pub(crate) const MANDATORY_FEATURES: u64 = 0xffff_ffff_0000_0000;

/// Suggested time for the caller's timer from connect to link up.
pub(crate) const HANDSHAKE_TIMEOUT_MS: u32 = 5000;

/// Which end of the TCP connection this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// This node called connect (`ha_peer = connect ...`).
    Connector,
    /// This node accepted the connection (`ha_peer = listen ...`).
    Listener,
}

impl Side {
    /// The other end.
    pub(crate) fn other(self) -> Side {
        match self {
            Side::Connector => Side::Listener,
            Side::Listener => Side::Connector,
        }
    }

    /// The direction byte of the transcript.
    fn dir(self) -> &'static [u8] {
        match self {
            Side::Connector => &[1],
            Side::Listener => &[2],
        }
    }
}

/// The transcript parts that `sender` authenticates, in order.
///
/// The MAC input is their concatenation (91 bytes), see the module docs.
pub(crate) fn auth_transcript<'a>(
    sender: Side,
    connector: &'a Hello,
    listener: &'a Hello,
) -> [&'a [u8]; 6] {
    [
        AUTH_LABEL,
        sender.dir(),
        &connector.nonce,
        &listener.nonce,
        core::slice::from_ref(&connector.ha_id),
        core::slice::from_ref(&listener.ha_id),
    ]
}

/// The tag that `sender` must send for this pair of Hellos.
pub(crate) fn auth_tag<M: Mac + ?Sized>(
    mac: &M,
    key: &[u8],
    sender: Side,
    connector: &Hello,
    listener: &Hello,
) -> [u8; MAC_LEN] {
    mac.hmac_sha256(key, &auth_transcript(sender, connector, listener))
}

/// Compares two tags in time independent of where they differ.
pub(crate) fn ct_eq(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    core::hint::black_box(diff) == 0
}

/// This node's settings as announced in its Login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LocalParams {
    /// 1 or 2.
    pub(crate) ha_id: u8,
    /// 0, 1 or 2.
    pub(crate) ha_mode: u8,
    /// Largest payload accepted, [`MIN_MAX_PAYLOAD`]..=[`MAX_PAYLOAD`].
    pub(crate) max_payload: u32,
    /// Forwarded commands in flight, at least 1.
    pub(crate) max_inflight: u32,
    /// Size of the LUN id space.
    pub(crate) max_luns: u32,
    /// Size of the target port space.
    pub(crate) max_ports: u32,
    /// Initiators per port.
    pub(crate) max_inits_per_port: u32,
    /// Feature bits (high 32 mandatory, low 32 optional).
    pub(crate) features: u64,
    /// Opaque node identity (random per node).
    pub(crate) node_id: u64,
}

/// Everything the handshake needs from the node configuration.
///
/// Its `Debug` output never shows the key.
#[derive(Clone, Copy)]
pub(crate) struct Config<'k> {
    /// Which end of the connection this node is.
    pub(crate) side: Side,
    /// The pre-shared key (`ha_key`); empty when none is set.
    pub(crate) key: &'k [u8],
    /// Accept an empty key (the caller allows this only for a loopback peer,
    /// and logs a warning). Both nodes then authenticate with the empty key.
    pub(crate) allow_empty_key: bool,
    /// This node's login parameters.
    pub(crate) local: LocalParams,
}

impl Config<'_> {
    /// Whether these settings can bring a link up at all (checked before
    /// any connection is made).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.local;
        if self.key.is_empty() && !self.allow_empty_key {
            return Err(ConfigError::NoKey);
        }
        if !(1..=2).contains(&l.ha_id) {
            return Err(ConfigError::HaIdInvalid(l.ha_id));
        }
        if l.ha_mode > 2 {
            return Err(ConfigError::HaModeInvalid(l.ha_mode));
        }
        if !(MIN_MAX_PAYLOAD..=MAX_PAYLOAD).contains(&l.max_payload) {
            return Err(ConfigError::MaxPayloadInvalid(l.max_payload));
        }
        if l.max_inflight == 0 {
            return Err(ConfigError::MaxInflightZero);
        }
        Ok(())
    }
}

impl fmt::Debug for Config<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("side", &self.side)
            .field("key_len", &self.key.len())
            .field("allow_empty_key", &self.allow_empty_key)
            .field("local", &self.local)
            .finish()
    }
}

/// Why the handshake refuses to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConfigError {
    /// No `ha_key` is set and an unauthenticated link is not allowed.
    NoKey,
    /// Our ha_id is not 1 or 2.
    HaIdInvalid(u8),
    /// Our ha_mode is not 0, 1 or 2.
    HaModeInvalid(u8),
    /// Our max_payload is outside [`MIN_MAX_PAYLOAD`]..=[`MAX_PAYLOAD`].
    MaxPayloadInvalid(u32),
    /// Our max_inflight is 0.
    MaxInflightZero,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::NoKey => f.write_str(
                "no ha_key configured: refusing to bring the interlink up without authentication (set the same ha_key on both nodes)",
            ),
            ConfigError::HaIdInvalid(v) => {
                write!(f, "ha_id {v} cannot run the interlink (must be 1 or 2)")
            }
            ConfigError::HaModeInvalid(v) => write!(f, "ha_mode {v} invalid (must be 0, 1 or 2)"),
            ConfigError::MaxPayloadInvalid(v) => write!(
                f,
                "max_payload {v} out of range ({MIN_MAX_PAYLOAD}..={MAX_PAYLOAD})"
            ),
            ConfigError::MaxInflightZero => f.write_str("max_inflight must be at least 1"),
        }
    }
}

/// Parameters of an established link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkParams {
    /// The peer's ha_id.
    pub(crate) peer_ha_id: u8,
    /// The peer's node identity.
    pub(crate) peer_node_id: u64,
    /// The common ha_mode.
    pub(crate) ha_mode: u8,
    /// Smaller of both max_payload values.
    pub(crate) max_payload: u32,
    /// Smaller of both max_inflight values.
    pub(crate) max_inflight: u32,
    /// Common max_luns.
    pub(crate) max_luns: u32,
    /// Common max_ports.
    pub(crate) max_ports: u32,
    /// Common max_inits_per_port.
    pub(crate) max_inits_per_port: u32,
    /// Common mandatory bits plus the optional bits both nodes have.
    pub(crate) features: u64,
}

/// A refused login parameter, with both values as seen from one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// The parameter.
    pub(crate) reason: RejectReason,
    /// This node's value (for [`RejectReason::HaIdChanged`]: the ha_id the
    /// peer authenticated with).
    pub(crate) local: u64,
    /// The peer's value.
    pub(crate) peer: u64,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (l, p) = (self.local, self.peer);
        match self.reason {
            RejectReason::Version => {
                write!(f, "protocol version mismatch: local {l}, peer {p}")
            }
            RejectReason::HaMode => write!(f, "ha_mode mismatch: local {l}, peer {p}"),
            RejectReason::HaIdConflict => write!(
                f,
                "ha_id conflict: local {l}, peer {p} (the two nodes need different ha_id)"
            ),
            RejectReason::HaIdInvalid => write!(
                f,
                "peer ha_id invalid: local {l}, peer {p} (must be 1 or 2)"
            ),
            RejectReason::HaIdChanged => write!(
                f,
                "peer ha_id changed after authentication: hello {l}, login {p}"
            ),
            RejectReason::NodeIdConflict => write!(
                f,
                "node_id conflict: local {l:#x}, peer {p:#x} (node connected to itself?)"
            ),
            RejectReason::MandatoryFeatures => write!(
                f,
                "mandatory feature bits mismatch: local {l:#x}, peer {p:#x}"
            ),
            RejectReason::MaxLuns => write!(f, "max_luns mismatch: local {l}, peer {p}"),
            RejectReason::MaxPorts => write!(f, "max_ports mismatch: local {l}, peer {p}"),
            RejectReason::MaxInitsPerPort => {
                write!(f, "max_inits_per_port mismatch: local {l}, peer {p}")
            }
            RejectReason::MaxPayload => write!(
                f,
                "max_payload incompatible: local {l}, peer {p} (minimum {MIN_MAX_PAYLOAD})"
            ),
            RejectReason::MaxInflight => write!(
                f,
                "max_inflight incompatible: local {l}, peer {p} (minimum 1)"
            ),
            RejectReason::Other(c) => {
                write!(f, "login parameter #{c} mismatch: local {l}, peer {p}")
            }
        }
    }
}

/// Where the handshake is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not connected yet.
    Idle,
    /// Waiting for the peer's Hello.
    Hello,
    /// Waiting for the peer's AuthResponse.
    AuthResponse,
    /// Waiting for the peer's AuthResult on our response.
    AuthResult,
    /// Waiting for the peer's Login.
    Login,
    /// Waiting for the peer's LoginAck.
    LoginAck,
    /// The link is up; the handshake is finished.
    Up,
    /// The handshake was aborted.
    Aborted,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Idle => "not connected",
            Phase::Hello => "waiting for the peer's Hello",
            Phase::AuthResponse => "waiting for the peer's AuthResponse",
            Phase::AuthResult => "waiting for the peer's AuthResult",
            Phase::Login => "waiting for the peer's Login",
            Phase::LoginAck => "waiting for the peer's LoginAck",
            Phase::Up => "link up",
            Phase::Aborted => "aborted",
        })
    }
}

/// Why the handshake aborted the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AbortReason {
    /// The caller's timer fired before the link came up.
    Timeout(Phase),
    /// The peer sent a message that does not belong in this phase.
    Unexpected {
        /// The phase.
        phase: Phase,
        /// What the peer sent.
        got: MsgType,
    },
    /// The peer's Hello carried our own nonce.
    NonceReflected,
    /// The peer's AuthResponse did not verify.
    AuthFailed,
    /// The peer did not accept our AuthResponse.
    PeerRejectedAuth,
    /// The peer's Login was refused.
    LoginMismatch(Mismatch),
    /// The peer refused our Login (values from our point of view).
    PeerRejectedLogin(Mismatch),
    /// The peer said Bye.
    PeerBye(ByeReason),
    /// The caller delivered an event the current phase does not allow.
    BadEvent {
        /// The phase.
        phase: Phase,
        /// The event.
        event: &'static str,
    },
}

impl AbortReason {
    /// The Bye reason sent to the peer, or `None` if none should be sent.
    pub(crate) fn bye_reason(&self) -> Option<ByeReason> {
        Some(match self {
            AbortReason::Timeout(_) => ByeReason::Timeout,
            AbortReason::Unexpected { .. } | AbortReason::BadEvent { .. } => {
                ByeReason::ProtocolError
            }
            AbortReason::NonceReflected
            | AbortReason::AuthFailed
            | AbortReason::PeerRejectedAuth => ByeReason::AuthFailed,
            AbortReason::LoginMismatch(_) | AbortReason::PeerRejectedLogin(_) => {
                ByeReason::LoginRejected
            }
            AbortReason::PeerBye(_) => return None,
        })
    }
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortReason::Timeout(phase) => write!(f, "handshake timed out {phase}"),
            AbortReason::Unexpected { phase, got } => {
                write!(f, "protocol error: unexpected {got} while {phase}")
            }
            AbortReason::NonceReflected => f.write_str(
                "authentication failed: peer sent our own nonce back (reflection attempt)",
            ),
            AbortReason::AuthFailed => f.write_str(
                "authentication failed: peer's response does not verify (ha_key differs?)",
            ),
            AbortReason::PeerRejectedAuth => {
                f.write_str("authentication failed: peer rejected our response (ha_key differs?)")
            }
            AbortReason::LoginMismatch(m) => write!(f, "{m}"),
            AbortReason::PeerRejectedLogin(m) => write!(f, "peer rejected our login: {m}"),
            AbortReason::PeerBye(r) => write!(f, "peer closed the link: {r}"),
            AbortReason::BadEvent { phase, event } => {
                write!(f, "handshake misuse: {event} while {phase}")
            }
        }
    }
}

/// Messages to send, in order (at most two per step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outbox {
    /// The messages; a `None` is skipped.
    msgs: [Option<Message>; 2],
}

impl Outbox {
    /// Nothing to send.
    fn empty() -> Self {
        Outbox { msgs: [None, None] }
    }

    /// One message.
    fn one(m: Message) -> Self {
        Outbox {
            msgs: [Some(m), None],
        }
    }

    /// Two messages, `a` first.
    fn two(a: Message, b: Message) -> Self {
        Outbox {
            msgs: [Some(a), Some(b)],
        }
    }

    /// Appends `m` if there is room (there always is for the Bye of an abort).
    fn push(&mut self, m: Message) {
        if let Some(slot) = self.msgs.iter_mut().find(|s| s.is_none()) {
            *slot = Some(m);
        }
    }

    /// The messages in send order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Message> + '_ {
        self.msgs.iter().flatten()
    }

    /// Number of messages.
    pub(crate) fn len(&self) -> usize {
        self.iter().count()
    }

    /// True if there is nothing to send.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What happens after the messages of a step are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Keep waiting for the peer.
    Continue,
    /// Close the link and log the reason.
    Abort(AbortReason),
    /// The link is up with these parameters.
    Up(LinkParams),
}

/// Result of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    /// Send these first, in order.
    pub(crate) send: Outbox,
    /// Then do this.
    pub(crate) outcome: Outcome,
}

/// Internal state.
#[derive(Clone, Copy, Debug)]
enum State {
    /// Before `on_connected`.
    Idle,
    /// Waiting for the peer's Hello.
    AwaitHello,
    /// Waiting for the peer's AuthResponse.
    AwaitResponse {
        /// The peer's Hello.
        peer: Hello,
    },
    /// Waiting for the peer's verdict on our AuthResponse.
    AwaitVerdict {
        /// The peer's Hello.
        peer: Hello,
    },
    /// Both sides authenticated; waiting for the peer's Login.
    AwaitLogin {
        /// The peer's Hello.
        peer: Hello,
    },
    /// The peer's Login was accepted; waiting for its LoginAck.
    AwaitLoginAck {
        /// What the link will use.
        params: LinkParams,
    },
    /// Done.
    Up,
    /// Failed; every further event is refused.
    Aborted,
}

/// The handshake of one connection.
pub(crate) struct Handshake<'k, M: Mac> {
    /// HMAC provider.
    mac: M,
    /// Pre-shared key.
    key: &'k [u8],
    /// Our end of the connection.
    side: Side,
    /// Our parameters.
    local: LocalParams,
    /// Our Hello (our nonce for this connection).
    own: Hello,
    /// Where we are.
    state: State,
}

impl<'k, M: Mac> Handshake<'k, M> {
    /// Prepares the handshake of one connection.
    ///
    /// `nonce` must be fresh random bytes (`get_random_bytes`) for every
    /// connection. Fails if the configuration cannot bring a link up.
    pub(crate) fn new(
        cfg: Config<'k>,
        mac: M,
        nonce: [u8; NONCE_LEN],
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Handshake {
            mac,
            key: cfg.key,
            side: cfg.side,
            local: cfg.local,
            own: Hello {
                nonce,
                ha_id: cfg.local.ha_id,
            },
            state: State::Idle,
        })
    }

    /// The HMAC (and CRC32C) provider.
    pub(crate) fn mac(&self) -> &M {
        &self.mac
    }

    /// Where the handshake is.
    pub(crate) fn phase(&self) -> Phase {
        match self.state {
            State::Idle => Phase::Idle,
            State::AwaitHello => Phase::Hello,
            State::AwaitResponse { .. } => Phase::AuthResponse,
            State::AwaitVerdict { .. } => Phase::AuthResult,
            State::AwaitLogin { .. } => Phase::Login,
            State::AwaitLoginAck { .. } => Phase::LoginAck,
            State::Up => Phase::Up,
            State::Aborted => Phase::Aborted,
        }
    }

    /// The Login this node sends.
    pub(crate) fn local_login(&self) -> Login {
        let l = &self.local;
        Login {
            version: PROTOCOL_VERSION,
            ha_mode: l.ha_mode,
            ha_id: l.ha_id,
            max_payload: l.max_payload,
            max_inflight: l.max_inflight,
            max_luns: l.max_luns,
            max_ports: l.max_ports,
            max_inits_per_port: l.max_inits_per_port,
            features: l.features,
            node_id: l.node_id,
        }
    }

    /// The TCP connection is established: send our Hello.
    pub(crate) fn on_connected(&mut self) -> Step {
        match self.state {
            State::Idle => {
                self.state = State::AwaitHello;
                Step {
                    send: Outbox::one(Message::Hello(self.own)),
                    outcome: Outcome::Continue,
                }
            }
            _ => self.bad_event("on_connected"),
        }
    }

    /// The caller's handshake timer fired.
    pub(crate) fn on_timeout(&mut self) -> Step {
        match self.state {
            State::Idle | State::Up | State::Aborted => self.bad_event("on_timeout"),
            _ => {
                let phase = self.phase();
                self.abort(Outbox::empty(), AbortReason::Timeout(phase))
            }
        }
    }

    /// A message arrived from the peer (its frame already validated and in
    /// sequence).
    pub(crate) fn on_frame(&mut self, msg: &Message) -> Step {
        match self.state {
            State::Idle | State::Up | State::Aborted => return self.bad_event("on_frame"),
            _ => {}
        }
        if let Message::Bye(reason) = *msg {
            return self.abort(Outbox::empty(), AbortReason::PeerBye(reason));
        }
        match (self.state, *msg) {
            (State::AwaitHello, Message::Hello(peer)) => self.got_hello(peer),
            (State::AwaitResponse { peer }, Message::AuthResponse(resp)) => {
                self.got_response(peer, &resp)
            }
            (State::AwaitVerdict { peer }, Message::AuthResult(result)) => {
                self.got_verdict(peer, result)
            }
            (State::AwaitLogin { peer }, Message::Login(login)) => self.got_login(&peer, &login),
            (State::AwaitLogin { .. } | State::AwaitLoginAck { .. }, Message::LoginReject(r)) => {
                let m = Mismatch {
                    reason: r.reason,
                    local: r.receiver_value,
                    peer: r.sender_value,
                };
                self.abort(Outbox::empty(), AbortReason::PeerRejectedLogin(m))
            }
            (State::AwaitLoginAck { params }, Message::LoginAck) => {
                self.state = State::Up;
                Step {
                    send: Outbox::empty(),
                    outcome: Outcome::Up(params),
                }
            }
            (_, other) => {
                let phase = self.phase();
                self.abort(
                    Outbox::empty(),
                    AbortReason::Unexpected {
                        phase,
                        got: other.msg_type(),
                    },
                )
            }
        }
    }

    /// Hellos ordered (connector, listener).
    fn hellos<'a>(&'a self, peer: &'a Hello) -> (&'a Hello, &'a Hello) {
        match self.side {
            Side::Connector => (&self.own, peer),
            Side::Listener => (peer, &self.own),
        }
    }

    /// Our tag for this connection.
    fn our_tag(&self, peer: &Hello) -> AuthResponse {
        let (c, l) = self.hellos(peer);
        AuthResponse {
            mac: auth_tag(&self.mac, self.key, self.side, c, l),
        }
    }

    /// Handles the peer's Hello.
    fn got_hello(&mut self, peer: Hello) -> Step {
        if peer.nonce == self.own.nonce {
            return self.abort(Outbox::empty(), AbortReason::NonceReflected);
        }
        match self.side {
            // The connector proves itself first.
            Side::Connector => {
                let resp = self.our_tag(&peer);
                self.state = State::AwaitVerdict { peer };
                self.cont(Outbox::one(Message::AuthResponse(resp)))
            }
            Side::Listener => {
                self.state = State::AwaitResponse { peer };
                self.cont(Outbox::empty())
            }
        }
    }

    /// Handles the peer's AuthResponse.
    fn got_response(&mut self, peer: Hello, resp: &AuthResponse) -> Step {
        let (c, l) = self.hellos(&peer);
        let expected = auth_tag(&self.mac, self.key, self.side.other(), c, l);
        if !ct_eq(&expected, &resp.mac) {
            return self.abort(
                Outbox::one(Message::AuthResult(AuthResult::Failed)),
                AbortReason::AuthFailed,
            );
        }
        let ok = Message::AuthResult(AuthResult::Ok);
        match self.side {
            // The connector was verified already: both are authenticated.
            Side::Connector => {
                self.state = State::AwaitLogin { peer };
                self.cont(Outbox::two(ok, Message::Login(self.local_login())))
            }
            Side::Listener => {
                let ours = self.our_tag(&peer);
                self.state = State::AwaitVerdict { peer };
                self.cont(Outbox::two(ok, Message::AuthResponse(ours)))
            }
        }
    }

    /// Handles the peer's AuthResult on our response.
    fn got_verdict(&mut self, peer: Hello, result: AuthResult) -> Step {
        if result != AuthResult::Ok {
            return self.abort(Outbox::empty(), AbortReason::PeerRejectedAuth);
        }
        match self.side {
            Side::Connector => {
                self.state = State::AwaitResponse { peer };
                self.cont(Outbox::empty())
            }
            // The listener verified the connector before answering.
            Side::Listener => {
                self.state = State::AwaitLogin { peer };
                self.cont(Outbox::one(Message::Login(self.local_login())))
            }
        }
    }

    /// Handles the peer's Login.
    fn got_login(&mut self, peer: &Hello, login: &Login) -> Step {
        match self.check_login(peer.ha_id, login) {
            Ok(params) => {
                self.state = State::AwaitLoginAck { params };
                self.cont(Outbox::one(Message::LoginAck))
            }
            Err(m) => {
                let reject = LoginReject {
                    reason: m.reason,
                    sender_value: m.local,
                    receiver_value: m.peer,
                };
                self.abort(
                    Outbox::one(Message::LoginReject(reject)),
                    AbortReason::LoginMismatch(m),
                )
            }
        }
    }

    /// Validates the peer's Login and computes the link parameters.
    fn check_login(&self, hello_ha_id: u8, p: &Login) -> Result<LinkParams, Mismatch> {
        let l = self.local_login();
        let fail = |reason, local: u64, peer: u64| {
            Err(Mismatch {
                reason,
                local,
                peer,
            })
        };
        if p.version != l.version {
            return fail(RejectReason::Version, l.version.into(), p.version.into());
        }
        if p.ha_mode != l.ha_mode {
            return fail(RejectReason::HaMode, l.ha_mode.into(), p.ha_mode.into());
        }
        if !(1..=2).contains(&p.ha_id) {
            return fail(RejectReason::HaIdInvalid, l.ha_id.into(), p.ha_id.into());
        }
        if p.ha_id == l.ha_id {
            return fail(RejectReason::HaIdConflict, l.ha_id.into(), p.ha_id.into());
        }
        if p.ha_id != hello_ha_id {
            return fail(
                RejectReason::HaIdChanged,
                hello_ha_id.into(),
                p.ha_id.into(),
            );
        }
        if p.node_id == l.node_id {
            return fail(RejectReason::NodeIdConflict, l.node_id, p.node_id);
        }
        let (lm, pm) = (
            l.features & MANDATORY_FEATURES,
            p.features & MANDATORY_FEATURES,
        );
        if lm != pm {
            return fail(RejectReason::MandatoryFeatures, lm, pm);
        }
        if p.max_luns != l.max_luns {
            return fail(RejectReason::MaxLuns, l.max_luns.into(), p.max_luns.into());
        }
        if p.max_ports != l.max_ports {
            return fail(
                RejectReason::MaxPorts,
                l.max_ports.into(),
                p.max_ports.into(),
            );
        }
        if p.max_inits_per_port != l.max_inits_per_port {
            return fail(
                RejectReason::MaxInitsPerPort,
                l.max_inits_per_port.into(),
                p.max_inits_per_port.into(),
            );
        }
        if p.max_payload < MIN_MAX_PAYLOAD {
            return fail(
                RejectReason::MaxPayload,
                l.max_payload.into(),
                p.max_payload.into(),
            );
        }
        if p.max_inflight == 0 {
            return fail(
                RejectReason::MaxInflight,
                l.max_inflight.into(),
                p.max_inflight.into(),
            );
        }
        Ok(LinkParams {
            peer_ha_id: p.ha_id,
            peer_node_id: p.node_id,
            ha_mode: l.ha_mode,
            max_payload: l.max_payload.min(p.max_payload),
            max_inflight: l.max_inflight.min(p.max_inflight),
            max_luns: l.max_luns,
            max_ports: l.max_ports,
            max_inits_per_port: l.max_inits_per_port,
            features: lm | (l.features & p.features & !MANDATORY_FEATURES),
        })
    }

    /// A step that sends `send` and keeps going.
    fn cont(&self, send: Outbox) -> Step {
        Step {
            send,
            outcome: Outcome::Continue,
        }
    }

    /// Moves to `Aborted`; sends `send` and then a Bye when one is due.
    fn abort(&mut self, mut send: Outbox, reason: AbortReason) -> Step {
        if let Some(bye) = reason.bye_reason() {
            send.push(Message::Bye(bye));
        }
        self.state = State::Aborted;
        Step {
            send,
            outcome: Outcome::Abort(reason),
        }
    }

    /// Refuses an event the current phase does not allow.
    fn bad_event(&mut self, event: &'static str) -> Step {
        let phase = self.phase();
        let reason = AbortReason::BadEvent { phase, event };
        if phase == Phase::Aborted {
            // Already closed: say nothing more to the peer.
            return Step {
                send: Outbox::empty(),
                outcome: Outcome::Abort(reason),
            };
        }
        self.abort(Outbox::empty(), reason)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::frame::{decode_frame, encode_frame, SeqChecker, SeqCounter};
    use super::super::msg::MAX_MESSAGE_PAYLOAD;
    use super::super::{HEADER_LEN, TRAILER_LEN};
    use super::*;
    use hmac::{Hmac, Mac as _};
    use sha2::Sha256;
    use std::string::ToString;
    use std::vec::Vec;

    /// HMAC-SHA256 from the RustCrypto crates.
    pub(crate) struct TestMac;

    impl Crc32c for TestMac {}

    impl Mac for TestMac {
        fn hmac_sha256(&self, key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
            let mut m = <Hmac<Sha256> as hmac::Mac>::new_from_slice(key).unwrap();
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().into()
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const KEY: &[u8] = b"correct horse battery staple, but longer";

    pub(crate) fn params(ha_id: u8) -> LocalParams {
        LocalParams {
            ha_id,
            ha_mode: 2,
            max_payload: MAX_PAYLOAD,
            max_inflight: 64,
            max_luns: 1024,
            max_ports: 256,
            max_inits_per_port: 2048,
            features: 0x0000_0001_0000_0003,
            node_id: 0x1000 + u64::from(ha_id),
        }
    }

    fn cfg(side: Side, key: &[u8], local: LocalParams) -> Config<'_> {
        Config {
            side,
            key,
            allow_empty_key: false,
            local,
        }
    }

    fn machine(side: Side, key: &[u8], local: LocalParams, nonce: u8) -> Handshake<'_, TestMac> {
        Handshake::new(cfg(side, key, local), TestMac, [nonce; NONCE_LEN]).unwrap()
    }

    /// Result of wiring two machines together.
    struct Run {
        c: Option<Outcome>,
        l: Option<Outcome>,
        /// Every message the connector and listener sent, in order.
        c_sent: Vec<Message>,
        l_sent: Vec<Message>,
    }

    /// Runs two handshakes against each other through the real frame codec
    /// until both stop or nothing is in flight.
    fn wire(c: &mut Handshake<'_, TestMac>, l: &mut Handshake<'_, TestMac>) -> Run {
        let mut run = Run {
            c: None,
            l: None,
            c_sent: Vec::new(),
            l_sent: Vec::new(),
        };
        // Byte streams C→L and L→C.
        let mut to_l: Vec<u8> = Vec::new();
        let mut to_c: Vec<u8> = Vec::new();
        let (mut c_tx, mut l_tx) = (SeqCounter::new(), SeqCounter::new());
        let (mut c_rx, mut l_rx) = (SeqChecker::new(), SeqChecker::new());
        let emit = |step: Step, tx: &mut SeqCounter, out: &mut Vec<u8>, log: &mut Vec<Message>| {
            for m in step.send.iter() {
                let mut buf = [0u8; HEADER_LEN + MAX_MESSAGE_PAYLOAD + TRAILER_LEN];
                let n = encode_frame(tx.next_seq(), m, &mut buf).unwrap();
                out.extend_from_slice(&buf[..n]);
                log.push(*m);
            }
            match step.outcome {
                Outcome::Continue => None,
                o => Some(o),
            }
        };
        run.c = emit(c.on_connected(), &mut c_tx, &mut to_l, &mut run.c_sent);
        run.l = emit(l.on_connected(), &mut l_tx, &mut to_c, &mut run.l_sent);
        for _ in 0..64 {
            let mut progressed = false;
            if run.l.is_none() && !to_l.is_empty() {
                let (seq, msg, used) = decode_frame(&to_l).unwrap();
                l_rx.check(seq).unwrap();
                to_l.drain(..used);
                run.l = emit(l.on_frame(&msg), &mut l_tx, &mut to_c, &mut run.l_sent);
                progressed = true;
            }
            if run.c.is_none() && !to_c.is_empty() {
                let (seq, msg, used) = decode_frame(&to_c).unwrap();
                c_rx.check(seq).unwrap();
                to_c.drain(..used);
                run.c = emit(c.on_frame(&msg), &mut c_tx, &mut to_l, &mut run.c_sent);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        run
    }

    fn types(msgs: &[Message]) -> Vec<MsgType> {
        msgs.iter().map(|m| m.msg_type()).collect()
    }

    #[test]
    fn rfc4231_vectors_through_parts() {
        // Test case 1.
        let key = [0x0bu8; 20];
        let want = hex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        assert_eq!(TestMac.hmac_sha256(&key, &[b"Hi There"]).to_vec(), want);
        assert_eq!(
            TestMac.hmac_sha256(&key, &[b"Hi", b"", b" There"]).to_vec(),
            want
        );
        // Test case 2.
        let want = hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert_eq!(
            TestMac
                .hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"])
                .to_vec(),
            want
        );
        // Test case 6: key longer than the block size.
        let key = [0xaau8; 131];
        let want = hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
        assert_eq!(
            TestMac
                .hmac_sha256(
                    &key,
                    &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
                )
                .to_vec(),
            want
        );
    }

    /// Known-answer vector for the transcript, computed independently
    /// (Python `hmac`), for checking the kernel's implementation.
    #[test]
    fn transcript_known_answer() {
        let mut c = Hello {
            nonce: [0; 32],
            ha_id: 1,
        };
        let mut l = Hello {
            nonce: [0; 32],
            ha_id: 2,
        };
        for i in 0..32u8 {
            c.nonce[usize::from(i)] = i;
            l.nonce[usize::from(i)] = 0x20 + i;
        }
        let parts = auth_transcript(Side::Connector, &c, &l);
        let flat: Vec<u8> = parts.concat();
        assert_eq!(flat.len(), 91);
        let mut want = b"tcm_ha interlink auth v1".to_vec();
        want.push(1);
        want.extend(0u8..0x40);
        want.extend([1, 2]);
        assert_eq!(flat, want);
        let key = b"tcm_ha test key";
        assert_eq!(
            auth_tag(&TestMac, key, Side::Connector, &c, &l).to_vec(),
            hex("d149ebe4bcb4b2816a4641e38c38aee51b132fd80051ff77b233b50261153a8e")
        );
        assert_eq!(
            auth_tag(&TestMac, key, Side::Listener, &c, &l).to_vec(),
            hex("6adc58e12be21aa9207e982b396c3727d3aba95cc08b7716c36292f7041ad4c6")
        );
    }

    #[test]
    fn ct_eq_works() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(ct_eq(&a, &b));
        for i in 0..32 {
            b = a;
            b[i] ^= 0x80;
            assert!(!ct_eq(&a, &b));
        }
    }

    #[test]
    fn happy_path() {
        let mut c = machine(Side::Connector, KEY, params(1), 0x11);
        let mut l = machine(Side::Listener, KEY, params(2), 0x22);
        let run = wire(&mut c, &mut l);
        let Some(Outcome::Up(cp)) = run.c else {
            panic!("{:?}", run.c)
        };
        let Some(Outcome::Up(lp)) = run.l else {
            panic!("{:?}", run.l)
        };
        assert_eq!(cp.peer_ha_id, 2);
        assert_eq!(lp.peer_ha_id, 1);
        assert_eq!(cp.peer_node_id, 0x1002);
        assert_eq!(lp.peer_node_id, 0x1001);
        assert_eq!(cp.ha_mode, 2);
        assert_eq!(cp.max_payload, MAX_PAYLOAD);
        assert_eq!(cp.features, 0x0000_0001_0000_0003);
        assert_eq!(c.phase(), Phase::Up);
        assert_eq!(l.phase(), Phase::Up);
        use MsgType::*;
        assert_eq!(
            types(&run.c_sent),
            [Hello, AuthResponse, AuthResult, Login, LoginAck]
        );
        assert_eq!(
            types(&run.l_sent),
            [Hello, AuthResult, AuthResponse, Login, LoginAck]
        );
    }

    #[test]
    fn negotiates_minimums_and_optional_features() {
        let mut pc = params(1);
        pc.max_payload = 8192;
        pc.max_inflight = 500;
        pc.features = 0x0000_0005_0000_00f0;
        let mut pl = params(2);
        pl.max_inflight = 16;
        pl.features = 0x0000_0005_0000_0f30;
        let mut c = machine(Side::Connector, KEY, pc, 1);
        let mut l = machine(Side::Listener, KEY, pl, 2);
        let run = wire(&mut c, &mut l);
        let Some(Outcome::Up(cp)) = run.c else {
            panic!()
        };
        let Some(Outcome::Up(lp)) = run.l else {
            panic!()
        };
        for p in [cp, lp] {
            assert_eq!(p.max_payload, 8192);
            assert_eq!(p.max_inflight, 16);
            assert_eq!(p.features, 0x0000_0005_0000_0030);
        }
    }

    #[test]
    fn wrong_key_fails_on_both_sides() {
        let mut c = machine(Side::Connector, KEY, params(1), 1);
        let mut l = machine(Side::Listener, b"another key", params(2), 2);
        let run = wire(&mut c, &mut l);
        assert_eq!(run.l, Some(Outcome::Abort(AbortReason::AuthFailed)));
        assert_eq!(run.c, Some(Outcome::Abort(AbortReason::PeerRejectedAuth)));
        // The listener never revealed a tag of its own.
        assert!(!run
            .l_sent
            .iter()
            .any(|m| matches!(m, Message::AuthResponse(_))));
        assert_eq!(
            run.l_sent.last(),
            Some(&Message::Bye(ByeReason::AuthFailed))
        );
        assert!(run
            .l_sent
            .contains(&Message::AuthResult(AuthResult::Failed)));
        assert!(AbortReason::AuthFailed
            .to_string()
            .contains("authentication failed"));
        assert!(AbortReason::PeerRejectedAuth
            .to_string()
            .contains("authentication failed"));
        // Neither side sent a Login.
        assert!(!run.c_sent.iter().any(|m| matches!(m, Message::Login(_))));
        assert!(!run.l_sent.iter().any(|m| matches!(m, Message::Login(_))));
    }

    #[test]
    fn wrong_key_detected_by_connector() {
        // A listener holding a different key that (wrongly) accepts anything:
        // the connector still refuses the listener's response.
        let mut c = machine(Side::Connector, KEY, params(1), 1);
        c.on_connected();
        let lh = Hello {
            nonce: [9; 32],
            ha_id: 2,
        };
        c.on_frame(&Message::Hello(lh));
        assert_eq!(
            c.on_frame(&Message::AuthResult(AuthResult::Ok)).outcome,
            Outcome::Continue
        );
        let ch = Hello {
            nonce: [1; 32],
            ha_id: 1,
        };
        let forged = auth_tag(&TestMac, b"wrong", Side::Listener, &ch, &lh);
        let step = c.on_frame(&Message::AuthResponse(super::AuthResponse { mac: forged }));
        assert_eq!(step.outcome, Outcome::Abort(AbortReason::AuthFailed));
        assert_eq!(
            step.send.iter().copied().collect::<Vec<_>>(),
            [
                Message::AuthResult(AuthResult::Failed),
                Message::Bye(ByeReason::AuthFailed)
            ]
        );
    }

    #[test]
    fn reflected_response_is_rejected() {
        // A fake listener sends the connector's own tag back as its response.
        let mut c = machine(Side::Connector, KEY, params(1), 1);
        c.on_connected();
        let step = c.on_frame(&Message::Hello(Hello {
            nonce: [5; 32],
            ha_id: 2,
        }));
        let Some(Message::AuthResponse(own)) = step.send.iter().next().copied() else {
            panic!()
        };
        c.on_frame(&Message::AuthResult(AuthResult::Ok));
        let step = c.on_frame(&Message::AuthResponse(own));
        assert_eq!(step.outcome, Outcome::Abort(AbortReason::AuthFailed));
    }

    #[test]
    fn reflected_response_is_rejected_even_with_swapped_ids() {
        // The attacker claims the connector's ha_id too; the direction byte
        // still separates the two tags.
        let mut c = machine(Side::Connector, KEY, params(1), 1);
        c.on_connected();
        let step = c.on_frame(&Message::Hello(Hello {
            nonce: [5; 32],
            ha_id: 1,
        }));
        let Some(Message::AuthResponse(own)) = step.send.iter().next().copied() else {
            panic!()
        };
        c.on_frame(&Message::AuthResult(AuthResult::Ok));
        let step = c.on_frame(&Message::AuthResponse(own));
        assert_eq!(step.outcome, Outcome::Abort(AbortReason::AuthFailed));
    }

    #[test]
    fn tags_differ_by_direction_and_role_order() {
        let a = Hello {
            nonce: [1; 32],
            ha_id: 1,
        };
        let b = Hello {
            nonce: [2; 32],
            ha_id: 2,
        };
        let t = |s, c, l| auth_tag(&TestMac, KEY, s, c, l);
        let all = [
            t(Side::Connector, &a, &b),
            t(Side::Listener, &a, &b),
            t(Side::Connector, &b, &a),
            t(Side::Listener, &b, &a),
        ];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j]);
            }
        }
    }

    #[test]
    fn own_nonce_echoed_is_rejected() {
        for side in [Side::Connector, Side::Listener] {
            let mut m = machine(side, KEY, params(1), 7);
            m.on_connected();
            let step = m.on_frame(&Message::Hello(Hello {
                nonce: [7; 32],
                ha_id: 2,
            }));
            assert_eq!(step.outcome, Outcome::Abort(AbortReason::NonceReflected));
            assert!(!step
                .send
                .iter()
                .any(|m| matches!(m, Message::AuthResponse(_))));
        }
    }

    #[test]
    fn listener_reveals_nothing_before_verifying() {
        let mut l = machine(Side::Listener, KEY, params(2), 2);
        l.on_connected();
        let step = l.on_frame(&Message::Hello(Hello {
            nonce: [1; 32],
            ha_id: 1,
        }));
        assert!(step.send.is_empty());
        let step = l.on_frame(&Message::AuthResponse(super::AuthResponse { mac: [0; 32] }));
        assert_eq!(step.outcome, Outcome::Abort(AbortReason::AuthFailed));
        assert!(!step
            .send
            .iter()
            .any(|m| matches!(m, Message::AuthResponse(_))));
    }

    #[test]
    fn login_before_auth_is_refused() {
        for side in [Side::Connector, Side::Listener] {
            let mut m = machine(side, KEY, params(1), 1);
            m.on_connected();
            let login = Message::Login(machine(side, KEY, params(2), 2).local_login());
            let step = m.on_frame(&login);
            assert_eq!(
                step.outcome,
                Outcome::Abort(AbortReason::Unexpected {
                    phase: Phase::Hello,
                    got: MsgType::Login
                })
            );
            let mut m = machine(side, KEY, params(1), 1);
            m.on_connected();
            m.on_frame(&Message::Hello(Hello {
                nonce: [3; 32],
                ha_id: 2,
            }));
            let step = m.on_frame(&login);
            assert!(matches!(
                step.outcome,
                Outcome::Abort(AbortReason::Unexpected {
                    got: MsgType::Login,
                    ..
                })
            ));
            assert_eq!(
                step.send.iter().last(),
                Some(&Message::Bye(ByeReason::ProtocolError))
            );
        }
    }

    #[test]
    fn config_debug_hides_the_key() {
        let text = std::format!("{:?}", cfg(Side::Connector, b"s3cr3t-key", params(1)));
        assert!(!text.contains("s3cr3t"));
        assert!(text.contains("key_len: 10"));
    }

    #[test]
    fn no_key_refuses_to_come_up() {
        let r = Handshake::new(cfg(Side::Connector, b"", params(1)), TestMac, [0; 32]);
        let e = r.err().unwrap();
        assert_eq!(e, ConfigError::NoKey);
        assert!(e.to_string().contains("no ha_key configured"));
    }

    #[test]
    fn empty_key_allowed_when_caller_permits() {
        let mut cc = cfg(Side::Connector, b"", params(1));
        cc.allow_empty_key = true;
        let mut lc = cfg(Side::Listener, b"", params(2));
        lc.allow_empty_key = true;
        let mut c = Handshake::new(cc, TestMac, [1; 32]).unwrap();
        let mut l = Handshake::new(lc, TestMac, [2; 32]).unwrap();
        let run = wire(&mut c, &mut l);
        assert!(matches!(run.c, Some(Outcome::Up(_))));
        assert!(matches!(run.l, Some(Outcome::Up(_))));
        // But an empty key does not match a real one.
        let mut c = Handshake::new(cc, TestMac, [1; 32]).unwrap();
        let mut l = machine(Side::Listener, KEY, params(2), 2);
        let run = wire(&mut c, &mut l);
        assert_eq!(run.l, Some(Outcome::Abort(AbortReason::AuthFailed)));
    }

    #[test]
    fn invalid_local_config() {
        let try_new = |p: LocalParams| {
            Handshake::new(cfg(Side::Listener, KEY, p), TestMac, [0; 32])
                .err()
                .unwrap()
        };
        let mut p = params(1);
        p.ha_id = 0;
        assert_eq!(try_new(p), ConfigError::HaIdInvalid(0));
        p.ha_id = 3;
        assert_eq!(try_new(p), ConfigError::HaIdInvalid(3));
        let mut p = params(1);
        p.ha_mode = 3;
        assert_eq!(try_new(p), ConfigError::HaModeInvalid(3));
        let mut p = params(1);
        p.max_payload = MIN_MAX_PAYLOAD - 1;
        assert_eq!(
            try_new(p),
            ConfigError::MaxPayloadInvalid(MIN_MAX_PAYLOAD - 1)
        );
        p.max_payload = MAX_PAYLOAD + 1;
        assert_eq!(try_new(p), ConfigError::MaxPayloadInvalid(MAX_PAYLOAD + 1));
        let mut p = params(1);
        p.max_inflight = 0;
        assert_eq!(try_new(p), ConfigError::MaxInflightZero);
        for e in [
            ConfigError::HaIdInvalid(3),
            ConfigError::HaModeInvalid(3),
            ConfigError::MaxPayloadInvalid(1),
            ConfigError::MaxInflightZero,
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    /// Drives `m` through authentication with a scripted, honest peer and
    /// returns the peer's Hello.
    fn authenticate(m: &mut Handshake<'_, TestMac>, peer_ha_id: u8) -> Hello {
        let peer = Hello {
            nonce: [0xee; 32],
            ha_id: peer_ha_id,
        };
        let own = Hello {
            nonce: m.own.nonce,
            ha_id: m.own.ha_id,
        };
        m.on_connected();
        match m.side {
            Side::Connector => {
                m.on_frame(&Message::Hello(peer));
                m.on_frame(&Message::AuthResult(AuthResult::Ok));
                let tag = auth_tag(&TestMac, KEY, Side::Listener, &own, &peer);
                let step = m.on_frame(&Message::AuthResponse(super::AuthResponse { mac: tag }));
                assert_eq!(step.outcome, Outcome::Continue);
            }
            Side::Listener => {
                m.on_frame(&Message::Hello(peer));
                let tag = auth_tag(&TestMac, KEY, Side::Connector, &peer, &own);
                let step = m.on_frame(&Message::AuthResponse(super::AuthResponse { mac: tag }));
                assert_eq!(step.outcome, Outcome::Continue);
                m.on_frame(&Message::AuthResult(AuthResult::Ok));
            }
        }
        assert_eq!(m.phase(), Phase::Login);
        peer
    }

    /// Feeds `login` (from a peer that authenticated with `hello_id`) to a
    /// fresh authenticated listener with ha_id 1, returns the step.
    fn login_step(hello_id: u8, login: Login) -> Step {
        let mut m = machine(Side::Listener, KEY, params(1), 1);
        authenticate(&mut m, hello_id);
        m.on_frame(&Message::Login(login))
    }

    fn good_peer_login() -> Login {
        machine(Side::Connector, KEY, params(2), 2).local_login()
    }

    fn expect_mismatch(
        hello_id: u8,
        login: Login,
        reason: RejectReason,
        local: u64,
        peer: u64,
        text: &str,
    ) {
        let step = login_step(hello_id, login);
        let m = Mismatch {
            reason,
            local,
            peer,
        };
        assert_eq!(step.outcome, Outcome::Abort(AbortReason::LoginMismatch(m)));
        assert_eq!(
            step.send.iter().copied().collect::<Vec<_>>(),
            [
                Message::LoginReject(LoginReject {
                    reason,
                    sender_value: local,
                    receiver_value: peer
                }),
                Message::Bye(ByeReason::LoginRejected)
            ]
        );
        let Outcome::Abort(r) = step.outcome else {
            unreachable!()
        };
        assert_eq!(r.to_string(), text);
    }

    #[test]
    fn login_accepted_then_ack_brings_link_up() {
        let mut m = machine(Side::Listener, KEY, params(1), 1);
        authenticate(&mut m, 2);
        let step = m.on_frame(&Message::Login(good_peer_login()));
        assert_eq!(step.outcome, Outcome::Continue);
        assert_eq!(
            step.send.iter().copied().collect::<Vec<_>>(),
            [Message::LoginAck]
        );
        let step = m.on_frame(&Message::LoginAck);
        assert!(matches!(step.outcome, Outcome::Up(p) if p.peer_ha_id == 2));
        assert!(step.send.is_empty());
    }

    #[test]
    fn mismatch_version() {
        let mut p = good_peer_login();
        p.version = PROTOCOL_VERSION + 1;
        expect_mismatch(
            2,
            p,
            RejectReason::Version,
            PROTOCOL_VERSION.into(),
            (PROTOCOL_VERSION + 1).into(),
            &std::format!("protocol version mismatch: local {}, peer {}", PROTOCOL_VERSION, PROTOCOL_VERSION + 1),
        );
    }

    #[test]
    fn mismatch_ha_mode() {
        let mut p = good_peer_login();
        p.ha_mode = 0;
        expect_mismatch(
            2,
            p,
            RejectReason::HaMode,
            2,
            0,
            "ha_mode mismatch: local 2, peer 0",
        );
    }

    #[test]
    fn mismatch_ha_id_same() {
        let mut p = good_peer_login();
        p.ha_id = 1;
        expect_mismatch(
            1,
            p,
            RejectReason::HaIdConflict,
            1,
            1,
            "ha_id conflict: local 1, peer 1 (the two nodes need different ha_id)",
        );
    }

    #[test]
    fn mismatch_ha_id_invalid() {
        for bad in [0u8, 3, 255] {
            let mut p = good_peer_login();
            p.ha_id = bad;
            expect_mismatch(
                bad,
                p,
                RejectReason::HaIdInvalid,
                1,
                bad.into(),
                &std::format!("peer ha_id invalid: local 1, peer {bad} (must be 1 or 2)"),
            );
        }
    }

    #[test]
    fn mismatch_ha_id_changed_after_hello() {
        // Authenticated as ha_id 1 (equal to ours: only login judges that),
        // then logs in as 2.
        let p = good_peer_login();
        expect_mismatch(
            1,
            p,
            RejectReason::HaIdChanged,
            1,
            2,
            "peer ha_id changed after authentication: hello 1, login 2",
        );
    }

    #[test]
    fn mismatch_node_id() {
        let mut p = good_peer_login();
        p.node_id = params(1).node_id;
        expect_mismatch(
            2,
            p,
            RejectReason::NodeIdConflict,
            0x1001,
            0x1001,
            "node_id conflict: local 0x1001, peer 0x1001 (node connected to itself?)",
        );
    }

    #[test]
    fn mismatch_mandatory_features() {
        let mut p = good_peer_login();
        p.features = 0x0000_0003_0000_0003;
        expect_mismatch(
            2,
            p,
            RejectReason::MandatoryFeatures,
            0x1_0000_0000,
            0x3_0000_0000,
            "mandatory feature bits mismatch: local 0x100000000, peer 0x300000000",
        );
    }

    #[test]
    fn optional_features_never_mismatch() {
        let mut p = good_peer_login();
        p.features = 0x0000_0001_ffff_0000;
        let step = login_step(2, p);
        assert_eq!(step.outcome, Outcome::Continue);
    }

    #[test]
    fn mismatch_limits() {
        let mut p = good_peer_login();
        p.max_luns = 512;
        expect_mismatch(
            2,
            p,
            RejectReason::MaxLuns,
            1024,
            512,
            "max_luns mismatch: local 1024, peer 512",
        );
        let mut p = good_peer_login();
        p.max_ports = 1024;
        expect_mismatch(
            2,
            p,
            RejectReason::MaxPorts,
            256,
            1024,
            "max_ports mismatch: local 256, peer 1024",
        );
        let mut p = good_peer_login();
        p.max_inits_per_port = 1;
        expect_mismatch(
            2,
            p,
            RejectReason::MaxInitsPerPort,
            2048,
            1,
            "max_inits_per_port mismatch: local 2048, peer 1",
        );
        let mut p = good_peer_login();
        p.max_payload = 100;
        expect_mismatch(
            2,
            p,
            RejectReason::MaxPayload,
            MAX_PAYLOAD.into(),
            100,
            "max_payload incompatible: local 262144, peer 100 (minimum 4096)",
        );
        let mut p = good_peer_login();
        p.max_inflight = 0;
        expect_mismatch(
            2,
            p,
            RejectReason::MaxInflight,
            64,
            0,
            "max_inflight incompatible: local 64, peer 0 (minimum 1)",
        );
    }

    #[test]
    fn mismatch_between_two_real_nodes_names_values_on_both_sides() {
        let mut pl = params(2);
        pl.ha_mode = 0;
        let mut c = machine(Side::Connector, KEY, params(1), 1);
        let mut l = machine(Side::Listener, KEY, pl, 2);
        let run = wire(&mut c, &mut l);
        let Some(Outcome::Abort(rc)) = run.c else {
            panic!()
        };
        let Some(Outcome::Abort(rl)) = run.l else {
            panic!()
        };
        assert_eq!(rc.to_string(), "ha_mode mismatch: local 2, peer 0");
        assert_eq!(rl.to_string(), "ha_mode mismatch: local 0, peer 2");
    }

    #[test]
    fn ha_id_conflict_between_two_real_nodes() {
        let mut c = machine(Side::Connector, KEY, params(1), 1);
        let mut pl = params(1);
        pl.node_id = 77;
        let mut l = machine(Side::Listener, KEY, pl, 2);
        let run = wire(&mut c, &mut l);
        let Some(Outcome::Abort(rc)) = run.c else {
            panic!()
        };
        assert!(rc
            .to_string()
            .starts_with("ha_id conflict: local 1, peer 1"));
        assert!(matches!(
            run.l,
            Some(Outcome::Abort(AbortReason::LoginMismatch(_)))
        ));
    }

    #[test]
    fn peer_rejects_our_login() {
        let mut m = machine(Side::Connector, KEY, params(1), 1);
        authenticate(&mut m, 2);
        m.on_frame(&Message::Login(good_peer_login()));
        assert_eq!(m.phase(), Phase::LoginAck);
        let step = m.on_frame(&Message::LoginReject(LoginReject {
            reason: RejectReason::HaMode,
            sender_value: 0,
            receiver_value: 2,
        }));
        let Outcome::Abort(r) = step.outcome else {
            panic!()
        };
        assert_eq!(
            r.to_string(),
            "peer rejected our login: ha_mode mismatch: local 2, peer 0"
        );
        assert_eq!(
            step.send.iter().copied().collect::<Vec<_>>(),
            [Message::Bye(ByeReason::LoginRejected)]
        );
        // An unknown reason code from a newer peer is still reported.
        let mut m = machine(Side::Connector, KEY, params(1), 1);
        authenticate(&mut m, 2);
        let step = m.on_frame(&Message::LoginReject(LoginReject {
            reason: RejectReason::Other(99),
            sender_value: 5,
            receiver_value: 6,
        }));
        let Outcome::Abort(r) = step.outcome else {
            panic!()
        };
        assert_eq!(
            r.to_string(),
            "peer rejected our login: login parameter #99 mismatch: local 6, peer 5"
        );
    }

    #[test]
    fn peer_bye_aborts_without_reply() {
        let mut m = machine(Side::Listener, KEY, params(1), 1);
        m.on_connected();
        let step = m.on_frame(&Message::Bye(ByeReason::Shutdown));
        assert_eq!(
            step.outcome,
            Outcome::Abort(AbortReason::PeerBye(ByeReason::Shutdown))
        );
        assert!(step.send.is_empty());
        assert_eq!(
            AbortReason::PeerBye(ByeReason::Shutdown).to_string(),
            "peer closed the link: shutdown"
        );
    }

    #[test]
    fn timeout_in_every_phase() {
        let mut m = machine(Side::Connector, KEY, params(1), 1);
        m.on_connected();
        let step = m.on_timeout();
        assert_eq!(
            step.outcome,
            Outcome::Abort(AbortReason::Timeout(Phase::Hello))
        );
        assert_eq!(
            step.send.iter().copied().collect::<Vec<_>>(),
            [Message::Bye(ByeReason::Timeout)]
        );
        assert_eq!(
            AbortReason::Timeout(Phase::Login).to_string(),
            "handshake timed out waiting for the peer's Login"
        );
        // AuthResult phase (connector after sending its response).
        let mut m = machine(Side::Connector, KEY, params(1), 1);
        m.on_connected();
        m.on_frame(&Message::Hello(Hello {
            nonce: [2; 32],
            ha_id: 2,
        }));
        assert_eq!(
            m.on_timeout().outcome,
            Outcome::Abort(AbortReason::Timeout(Phase::AuthResult))
        );
        // AuthResponse phase (listener).
        let mut m = machine(Side::Listener, KEY, params(1), 1);
        m.on_connected();
        m.on_frame(&Message::Hello(Hello {
            nonce: [2; 32],
            ha_id: 2,
        }));
        assert_eq!(
            m.on_timeout().outcome,
            Outcome::Abort(AbortReason::Timeout(Phase::AuthResponse))
        );
        // Login and LoginAck phases.
        let mut m = machine(Side::Listener, KEY, params(1), 1);
        authenticate(&mut m, 2);
        assert_eq!(
            m.on_timeout().outcome,
            Outcome::Abort(AbortReason::Timeout(Phase::Login))
        );
        let mut m = machine(Side::Listener, KEY, params(1), 1);
        authenticate(&mut m, 2);
        m.on_frame(&Message::Login(good_peer_login()));
        assert_eq!(
            m.on_timeout().outcome,
            Outcome::Abort(AbortReason::Timeout(Phase::LoginAck))
        );
    }

    #[test]
    fn heartbeat_during_handshake_is_unexpected() {
        let mut m = machine(Side::Listener, KEY, params(1), 1);
        authenticate(&mut m, 2);
        let step = m.on_frame(&Message::Heartbeat(1));
        let Outcome::Abort(r) = step.outcome else {
            panic!()
        };
        assert_eq!(
            r.to_string(),
            "protocol error: unexpected Heartbeat while waiting for the peer's Login"
        );
    }

    #[test]
    fn events_out_of_order_are_refused() {
        let mut m = machine(Side::Listener, KEY, params(1), 1);
        let step = m.on_frame(&Message::LoginAck);
        assert!(matches!(
            step.outcome,
            Outcome::Abort(AbortReason::BadEvent {
                phase: Phase::Idle,
                event: "on_frame"
            })
        ));
        let mut m = machine(Side::Listener, KEY, params(1), 1);
        assert!(matches!(
            m.on_timeout().outcome,
            Outcome::Abort(AbortReason::BadEvent { .. })
        ));
        let mut m = machine(Side::Listener, KEY, params(1), 1);
        m.on_connected();
        let step = m.on_connected();
        assert!(matches!(
            step.outcome,
            Outcome::Abort(AbortReason::BadEvent { .. })
        ));
        assert_eq!(m.phase(), Phase::Aborted);
        // After an abort: refused, and nothing more is sent.
        let step = m.on_frame(&Message::Hello(Hello {
            nonce: [0; 32],
            ha_id: 2,
        }));
        assert!(step.send.is_empty());
        assert!(matches!(
            step.outcome,
            Outcome::Abort(AbortReason::BadEvent {
                phase: Phase::Aborted,
                ..
            })
        ));
        assert!(m.on_timeout().send.is_empty());
        // After link up: the link layer owns the frames.
        let mut c = machine(Side::Connector, KEY, params(1), 1);
        let mut l = machine(Side::Listener, KEY, params(2), 2);
        wire(&mut c, &mut l);
        let step = c.on_frame(&Message::Heartbeat(0));
        assert!(matches!(
            step.outcome,
            Outcome::Abort(AbortReason::BadEvent {
                phase: Phase::Up,
                ..
            })
        ));
        assert_eq!(
            AbortReason::BadEvent {
                phase: Phase::Up,
                event: "on_frame"
            }
            .to_string(),
            "handshake misuse: on_frame while link up"
        );
    }

    #[test]
    fn every_abort_reason_displays_differently() {
        let m = Mismatch {
            reason: RejectReason::MaxLuns,
            local: 1,
            peer: 2,
        };
        let all = [
            AbortReason::Timeout(Phase::Hello),
            AbortReason::Unexpected {
                phase: Phase::Hello,
                got: MsgType::Login,
            },
            AbortReason::NonceReflected,
            AbortReason::AuthFailed,
            AbortReason::PeerRejectedAuth,
            AbortReason::LoginMismatch(m),
            AbortReason::PeerRejectedLogin(m),
            AbortReason::PeerBye(ByeReason::Timeout),
            AbortReason::BadEvent {
                phase: Phase::Idle,
                event: "x",
            },
        ];
        let texts: Vec<_> = all.iter().map(|r| r.to_string()).collect();
        for i in 0..texts.len() {
            for j in i + 1..texts.len() {
                assert_ne!(texts[i], texts[j]);
            }
        }
        for p in [
            Phase::Idle,
            Phase::Hello,
            Phase::AuthResponse,
            Phase::AuthResult,
            Phase::Login,
            Phase::LoginAck,
            Phase::Up,
            Phase::Aborted,
        ] {
            assert!(!p.to_string().is_empty());
        }
    }
}
