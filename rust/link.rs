// SPDX-License-Identifier: GPL-2.0

//! The interlink (issue 4): one kernel thread keeps one TCP connection to the
//! peer node, as `ha_peer` says (listen or connect), authenticates it and
//! checks the peer's parameters (`core::link::Session`), sends heartbeats and
//! drops a dead peer, and reconnects with capped exponential backoff.
//!
//! The thread never blocks for long: every socket call has a timeout
//! ([`sys::RECV_TIMEOUT_MS`], [`sys::SEND_TIMEOUT_MS`]), so it notices within
//! a fraction of a second that it must stop (module unload), that a setting
//! changed (the link is dropped with `Bye(config changed)` and re-established
//! with the new settings), or that the system goes down (reboot notifier: the
//! socket is closed first so the peer sees the drop at once).

use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::{c_str, new_mutex, prelude::*, sync::Arc, sync::Mutex};

use crate::configfs::{Core, NODE};
use crate::core_logic::link::{
    mac_self_test, Backoff, LinkError, RepeatGate, SendError, Session, Text, Tx,
};
use crate::core_logic::node::Peer;
use crate::core_logic::scsi::alua::Link as LinkState;
use crate::core_logic::wire::handshake::{Config, LinkParams, LocalParams, Side};
use crate::core_logic::control::Role;
use crate::core_logic::scsi::alua::PeerRole;
use crate::core_logic::wire::msg::{ByeReason, LunRole, LunState, Message, ModePages, MAX_LUN_PORTS, NONCE_LEN, SERIAL_LEN};
use crate::lio;
use crate::forward;
use crate::prsync::PrSync;
use crate::scsi::PeerNote;
use crate::proxy::Proxy;
use crate::core_logic::wire::crc::self_test as crc_self_test;
use crate::core_logic::wire::{HEADER_LEN, MAX_PAYLOAD, TRAILER_LEN};
use crate::sys::{self, KernelMac, Kthread, RebootHook, RebootNotifier, TcpSocket, ThreadBody, RECV_TIMEOUT_MS, SEND_TIMEOUT_MS};

/// Limits announced at login; both nodes must agree.
const MAX_LUNS: u32 = 1024;
const MAX_PORTS: u32 = 256;
const MAX_INITS_PER_PORT: u32 = 2048;
/// Commands one node may have outstanding at the other.
const MAX_INFLIGHT: u32 = 256;

/// Settings the link runs with; `gen` changes with every change.
struct Settings {
    peer: Peer,
    key: KVec<u8>,
    gen: u64,
}

impl Drop for Settings {
    fn drop(&mut self) {
        self.key.iter_mut().for_each(|b| *b = 0);
    }
}

/// What `ha_link` shows besides the state.
struct Status {
    /// Address of the connected peer and its ha_id, while online.
    peer: Option<(Option<SocketAddr>, u8)>,
    last_error: Text<200>,
}

/// Counters shown in `stats`.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) link_ups: AtomicU64,
    pub(crate) link_drops: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) rejected_connections: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
}

/// The interlink's shared state: settings from configfs, status for
/// `ha_link`, counters.
#[pin_data]
pub(crate) struct Interlink {
    #[pin]
    settings: Mutex<Settings>,
    #[pin]
    status: Mutex<Status>,
    gen: AtomicU64,
    /// Set by the reboot notifier: drop the link and stay down.
    halted: AtomicBool,
    /// The thread has no connection open.
    idle: AtomicBool,
    /// Random identity of this node for this module load.
    node_id: u64,
    pub(crate) stats: Stats,
}

impl Interlink {
    fn new() -> impl PinInit<Self, Error> {
        let mut id = [0u8; 8];
        sys::random_bytes(&mut id);
        try_pin_init!(Interlink {
            settings <- new_mutex!(Settings { peer: Peer::None, key: KVec::new(), gen: 0 }),
            status <- new_mutex!(Status { peer: None, last_error: Text::new() }),
            gen: AtomicU64::new(0),
            halted: AtomicBool::new(false),
            idle: AtomicBool::new(true),
            node_id: u64::from_ne_bytes(id),
            stats: Stats::default(),
        })
    }

    /// Marks the settings changed: a running link is dropped and
    /// re-established with them.
    pub(crate) fn changed(&self) {
        let mut s = self.settings.lock();
        s.gen = s.gen.wrapping_add(1);
        self.gen.store(s.gen, Ordering::Release);
    }

    /// The peer setting.
    pub(crate) fn peer(&self) -> Peer {
        self.settings.lock().peer
    }

    /// Sets `ha_peer`; returns whether it changed.
    pub(crate) fn set_peer(&self, p: Peer) -> bool {
        let mut s = self.settings.lock();
        if s.peer == p {
            return false;
        }
        s.peer = p;
        s.gen = s.gen.wrapping_add(1);
        self.gen.store(s.gen, Ordering::Release);
        true
    }

    /// Whether a key is set.
    pub(crate) fn has_key(&self) -> bool {
        !self.settings.lock().key.is_empty()
    }

    /// Sets `ha_key` (the old one is wiped).
    pub(crate) fn set_key(&self, k: &[u8]) -> Result {
        let mut fresh = KVec::with_capacity(k.len(), GFP_KERNEL)?;
        fresh.extend_from_slice(k, GFP_KERNEL)?;
        let mut s = self.settings.lock();
        s.key.iter_mut().for_each(|b| *b = 0);
        s.key = fresh;
        s.gen = s.gen.wrapping_add(1);
        self.gen.store(s.gen, Ordering::Release);
        Ok(())
    }

    /// Writes the `ha_link` text.
    pub(crate) fn show(&self, w: &mut impl kernel::fmt::Write) -> kernel::fmt::Result {
        let state = match NODE.link() {
            LinkState::Offline => "offline",
            LinkState::Connecting => "connecting",
            LinkState::Online => "online",
        };
        writeln!(w, "{}", state)?;
        let st = self.status.lock();
        if let (LinkState::Online, Some((addr, id))) = (NODE.link(), st.peer) {
            match addr {
                Some(a) => writeln!(w, "peer: ha_id {} at {}", id, a)?,
                None => writeln!(w, "peer: ha_id {}", id)?,
            }
        }
        if !st.last_error.as_str().is_empty() {
            writeln!(w, "last error: {}", st.last_error.as_str())?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<(u64, Peer, KVec<u8>)> {
        let s = self.settings.lock();
        let mut key = KVec::with_capacity(s.key.len(), GFP_KERNEL)?;
        key.extend_from_slice(&s.key, GFP_KERNEL)?;
        Ok((s.gen, s.peer, key))
    }

    fn stale(&self, gen: u64) -> bool {
        sys::should_stop() || self.halted.load(Ordering::Acquire) || self.gen.load(Ordering::Acquire) != gen
    }

    fn set_error(&self, args: core::fmt::Arguments<'_>) {
        self.status.lock().last_error.set(args);
    }

    /// Sleeps `ms` in short steps; returns early when the settings changed
    /// or the thread must stop.
    fn pause(&self, ms: u32, gen: u64) {
        let mut left = ms;
        while left > 0 && !self.stale(gen) {
            forward::expire();
            crate::barrier::pump();
            let step = left.min(50);
            sys::sleep_ms(step);
            left -= step;
        }
    }
}

/// Bytes queued for the peer beyond which the link is dropped (the peer
/// does not read: forwarded IO is bounded well below this).
const TX_LIMIT: usize = 128 << 20;
/// Forwarded commands are taken for sending only while fewer bytes than
/// this wait to go out.
const TX_LOW: usize = 4 << 20;

/// Frames for the peer, queued and drained into the socket without waiting
/// ([`Outq::flush`]): the link thread never blocks in a send, so both
/// nodes keep reading while they send (two threads each blocked sending to
/// the other, with both sockets' buffers full, would never wake).
struct Outq {
    buf: KVVec<u8>,
    sent: usize,
    /// When the socket last took bytes, or the queue was empty.
    progress_ms: u64,
}

impl Outq {
    fn new() -> Outq {
        Outq { buf: KVVec::new(), sent: 0, progress_ms: sys::now_ms() }
    }

    fn queued(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Sends what the socket takes now. Fails when it has taken nothing
    /// for [`SEND_TIMEOUT_MS`] while bytes wait (the peer stopped reading).
    fn flush(&mut self, sock: &TcpSocket) -> core::result::Result<(), LinkError> {
        let now = sys::now_ms();
        while let Some(rest) = self.buf.get(self.sent..).filter(|r| !r.is_empty()) {
            match sock.send_now(rest) {
                Ok(0) => break,
                Ok(n) => {
                    self.sent += n;
                    self.progress_ms = now;
                }
                Err(e) => return Err(LinkError::Send(e)),
            }
        }
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
            self.progress_ms = now;
        } else if self.sent >= (1 << 20) && self.sent * 2 >= self.buf.len() {
            let len = self.buf.len();
            self.buf.copy_within(self.sent..len, 0);
            self.buf.truncate(len - self.sent);
            self.sent = 0;
        }
        if now.saturating_sub(self.progress_ms) >= u64::from(SEND_TIMEOUT_MS) {
            return Err(LinkError::Send(-(kernel::bindings::EAGAIN as i32)));
        }
        Ok(())
    }

    /// Flushes for at most `ms` (a Bye before closing).
    fn drain(&mut self, sock: &TcpSocket, ms: u64) {
        let end = sys::now_ms().saturating_add(ms);
        while self.queued() > 0 && sys::now_ms() < end && self.flush(sock).is_ok() {
            sys::link_wait(10);
        }
    }
}

/// Frames go out through the queue.
struct SockTx<'a>(&'a mut Outq);

impl Tx for SockTx<'_> {
    fn send(&mut self, frame: &[u8]) -> core::result::Result<(), SendError> {
        let q = &mut *self.0;
        if q.queued() == 0 {
            q.progress_ms = sys::now_ms();
        }
        if q.queued().saturating_add(frame.len()) > TX_LIMIT {
            return Err(SendError(-(kernel::bindings::ENOBUFS as i32)));
        }
        q.buf.extend_from_slice(frame, GFP_KERNEL).map_err(|_| SendError(-(kernel::bindings::ENOMEM as i32)))
    }
}

/// How a connection ended.
enum End {
    /// The link had come up.
    WasUp,
    /// It failed before coming up (with the remote address, if known).
    Failed(LinkError, Option<SocketAddr>),
    /// Settings changed or the thread stops.
    Stopped,
}

impl ThreadBody for Interlink {
    fn run(&self) {
        let mut backoff = Backoff::new();
        let mut gate = RepeatGate::new();
        let mut listener: Option<(SocketAddr, TcpSocket)> = None;
        let mut rx = KVVec::new();
        let mut warned_gen = None;
        let mut seen_gen = None;
        while !sys::should_stop() {
            refresh_alua();
            crate::barrier::pump();
            let Ok((gen, peer, key)) = self.snapshot() else {
                sys::sleep_ms(100);
                continue;
            };
            if seen_gen != Some(gen) {
                // New settings: start over at once.
                seen_gen = Some(gen);
                gate.clear();
                backoff.reset();
            }
            if self.halted.load(Ordering::Acquire) || matches!(peer, Peer::None) {
                listener = None;
                if matches!(peer, Peer::None) {
                    // No interlink by choice: errors of earlier settings no
                    // longer apply (dmesg keeps them).
                    self.status.lock().last_error = Text::new();
                }
                NODE.set_link(if matches!(peer, Peer::None) { LinkState::Offline } else { LinkState::Connecting });
                self.pause(1000, gen);
                continue;
            }
            NODE.set_link(LinkState::Connecting);
            // Room for the longest frame: header, payload, trailer.
            if rx.is_empty() && rx.resize(HEADER_LEN + MAX_PAYLOAD as usize + TRAILER_LEN, 0, GFP_KERNEL).is_err() {
                self.pause(backoff.next_delay(), gen);
                continue;
            }
            if key.is_empty() && peer.is_loopback() && warned_gen != Some(gen) {
                pr_warn!("interlink: no ha_key set: the link to loopback peer '{}' is NOT authenticated (allowed only on loopback)\n", Core(peer));
                warned_gen = Some(gen);
            }
            // Settings that cannot work are reported once, before any
            // connection is tried; they do not change until a write.
            if let Err(e) = self.config(Side::Connector, peer, &key).validate() {
                if warned_gen != Some(gen) {
                    pr_err!("interlink: {}\n", Core(e));
                    warned_gen = Some(gen);
                }
                self.set_error(format_args!("{}", e));
                listener = None;
                self.pause(60_000, gen);
                continue;
            }
            let end = match peer {
                Peer::None => End::Stopped,
                Peer::Listen(a) => {
                    if listener.as_ref().map(|l| l.0) != Some(a) {
                        listener = None;
                        match TcpSocket::listen(a) {
                            Ok(s) => {
                                pr_info!("interlink: listening for the peer on {}\n", Core(a));
                                listener = Some((a, s));
                            }
                            Err(e) => {
                                self.failed(&mut gate, a, format_args!("cannot listen: error {}", e.to_errno()));
                                self.pause(backoff.next_delay(), gen);
                                continue;
                            }
                        }
                    }
                    let Some((_, l)) = listener.as_ref() else { continue };
                    match l.accept(false) {
                        Ok(Some(s)) => self.connection(s, Side::Listener, gen, peer, &key, Some(l), &mut rx),
                        Ok(None) => continue,
                        Err(e) => End::Failed(LinkError::Recv(e.to_errno()), None),
                    }
                }
                Peer::Connect(a) => {
                    listener = None;
                    match TcpSocket::connect(a) {
                        Ok(s) => self.connection(s, Side::Connector, gen, peer, &key, None, &mut rx),
                        Err(e) => {
                            self.failed(&mut gate, a, format_args!("cannot connect: error {}", e.to_errno()));
                            self.pause(backoff.next_delay(), gen);
                            continue;
                        }
                    }
                }
            };
            match end {
                End::WasUp => {
                    backoff.reset();
                    gate.clear();
                    self.pause(Backoff::MIN_MS, gen);
                }
                End::Stopped => {}
                End::Failed(e, remote) => {
                    if e.is_auth_failure() {
                        self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    let addr = match (remote, peer) {
                        (Some(a), _) | (None, Peer::Listen(a) | Peer::Connect(a)) => a,
                        (None, Peer::None) => continue,
                    };
                    if let Some(n) = gate.note(e.kind()) {
                        self.log_failure(addr, &e, n);
                    }
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    self.set_error(format_args!("{}", e));
                    // Connection attempts come from the connecting node,
                    // whose backoff spaces them; the listener only waits
                    // briefly, so a fixed peer is accepted soon.
                    let delay = backoff.next_delay();
                    self.pause(if matches!(peer, Peer::Listen(_)) { delay.min(1000) } else { delay }, gen);
                }
            }
        }
        NODE.set_link(LinkState::Offline);
        self.idle.store(true, Ordering::Release);
    }
}

impl Interlink {
    /// The handshake settings for a connection on `side`.
    fn config<'k>(&self, side: Side, peer: Peer, key: &'k [u8]) -> Config<'k> {
        let local = LocalParams {
            ha_id: NODE.ha_id(),
            ha_mode: NODE.mode() as u8,
            max_payload: MAX_PAYLOAD,
            max_inflight: MAX_INFLIGHT,
            max_luns: MAX_LUNS,
            max_ports: MAX_PORTS,
            max_inits_per_port: MAX_INITS_PER_PORT,
            features: 0,
            node_id: self.node_id,
        };
        Config { side, key, allow_empty_key: key.is_empty() && peer.is_loopback(), local }
    }

    fn failed(&self, gate: &mut RepeatGate, a: SocketAddr, args: core::fmt::Arguments<'_>) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = gate.note(100) {
            if n > 1 {
                pr_err!("interlink: {}: {} ({} times in a row)\n", Core(a), args, n);
            } else {
                pr_err!("interlink: {}: {}\n", Core(a), args);
            }
        }
        self.set_error(args);
    }

    fn log_failure(&self, a: SocketAddr, e: &LinkError, n: u32) {
        if n > 1 {
            pr_err!("interlink: peer {}: {} ({} times in a row)\n", Core(a), Core(e), n);
        } else {
            pr_err!("interlink: peer {}: {}\n", Core(a), Core(e));
        }
    }

    /// Runs one connection until it ends.
    #[allow(clippy::too_many_arguments)]
    fn connection(
        &self,
        sock: TcpSocket,
        side: Side,
        gen: u64,
        peer: Peer,
        key: &[u8],
        listener: Option<&TcpSocket>,
        rx: &mut KVVec<u8>,
    ) -> End {
        self.idle.store(false, Ordering::Release);
        let addr = sock.peer_addr();
        let end = self.converse(&sock, side, gen, peer, key, listener, rx, addr);
        // Close first: the peer sees the drop at once.
        sock.shutdown();
        drop(sock);
        if let End::WasUp | End::Stopped = end {
            if NODE.link() == LinkState::Online {
                self.stats.link_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
        NODE.set_link(LinkState::Connecting);
        self.status.lock().peer = None;
        self.idle.store(true, Ordering::Release);
        end
    }

    /// Talks on one connection until it ends. The thread's stack is a
    /// kernel stack (16 KiB with the socket and block layers under it):
    /// the handlers called from here are kept out of line
    /// (`#[inline(never)]`) and big buffers live on the heap, so that the
    /// stack holds one handler's frame at a time (the deepest path was
    /// 13 KiB; about 6 KiB since, measured with objdump on the frames).
    #[allow(clippy::too_many_arguments)]
    fn converse(
        &self,
        sock: &TcpSocket,
        side: Side,
        gen: u64,
        peer: Peer,
        key: &[u8],
        listener: Option<&TcpSocket>,
        rx: &mut KVVec<u8>,
        addr: Option<SocketAddr>,
    ) -> End {
        let cfg = self.config(side, peer, key);
        let mut nonce = [0u8; NONCE_LEN];
        sys::random_bytes(&mut nonce);
        sock.watch();
        let mut out = Outq::new();
        let mut s = match Session::new(cfg, KernelMac, nonce, sys::now_ms()) {
            Ok(s) => s,
            Err(e) => return End::Failed(e, addr),
        };
        if let Err(e) = s.start(sys::now_ms(), &mut SockTx(&mut out)) {
            return End::Failed(e, addr);
        }
        let mut fill = 0usize;
        let mut inv = Inventory::new();
        let (mut prs, mut proxy) = match (PrSync::new(), Proxy::new()) {
            (Ok(p), Ok(x)) => (p, x),
            _ => return End::Failed(LinkError::Recv(ENOMEM.to_errno()), addr),
        };
        let result = loop {
            if self.stale(gen) {
                let why = if self.gen.load(Ordering::Acquire) != gen {
                    ByeReason::ConfigChanged
                } else {
                    ByeReason::Shutdown
                };
                if s.params().is_some() {
                    pr_info!("interlink: closing the link to {}: {}\n", Core(peer), Core(why));
                }
                s.bye(why, sys::now_ms(), &mut SockTx(&mut out));
                out.drain(sock, u64::from(SEND_TIMEOUT_MS));
                break Ok(());
            }
            if let Some(l) = listener {
                self.reject_extra(l);
            }
            // Everything that has arrived, without waiting.
            let received = loop {
                let room = rx.get_mut(fill..).unwrap_or(&mut []);
                match sock.recv(room, true) {
                    Ok(Some(0)) => break Err(LinkError::Closed),
                    Ok(Some(n)) => {
                        fill = (fill + n).min(rx.len());
                        let now = sys::now_ms();
                        let inbox = &mut |m: &Message, data: &[u8]| {
                            inv.inbound(m);
                            prs.inbound(m);
                            proxy.inbound(m, data);
                            crate::serialize::inbound(m);
                        };
                        match s.on_bytes(rx.get(..fill).unwrap_or(&[]), now, &mut SockTx(&mut out), inbox) {
                            Ok((used, up)) => {
                                rx.copy_within(used..fill, 0);
                                fill -= used;
                                if let Some(p) = up {
                                    self.up(&p, addr);
                                    inv.due = 0;
                                }
                            }
                            Err(e) => break Err(e),
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(LinkError::Recv(e)),
                }
            };
            if let Err(e) = received {
                break Err(e);
            }
            let mut tx = SockTx(&mut out);
            if let Err(e) = s.on_tick(sys::now_ms(), &mut tx) {
                break Err(e);
            }
            if s.params().is_some() && (sys::now_ms() >= inv.due || MODES_CHANGED.swap(false, Ordering::AcqRel)) {
                if let Err(e) = inv.sync(&mut s, &mut tx) {
                    break Err(e);
                }
            }
            // Completed shared-storage IO frees ranges before the
            // queued messages go out.
            crate::serialize::pump();
            crate::barrier::pump();
            if s.params().is_some() {
                let r = prs.flush(&mut |m| s.send_when_up(m, sys::now_ms(), &mut tx).map(|_| ()));
                if let Err(e) = r {
                    break Err(e);
                }
                if tx.0.queued() < TX_LOW {
                    if let Err(e) = proxy.flush(&mut s, &mut tx) {
                        break Err(e);
                    }
                }
            }
            forward::expire();
            if let Err(e) = out.flush(sock) {
                break Err(e);
            }
            // Until data arrives, the socket takes more, a command is
            // queued for the peer or an IO of the peer's completes (each
            // kicks), or the next tick.
            // A COMPARE AND WRITE of the peer's waiting for its lock is
            // retried every millisecond (the lock's release does not kick).
            sys::link_wait(if proxy.waiting() { 1 } else { RECV_TIMEOUT_MS });
        };
        if result.is_err() {
            // What the failure queued (AuthResult(2), LoginReject, Bye)
            // goes out before the close, so that the peer logs why; it
            // normally fits the socket's buffer at once.
            out.drain(sock, 200);
        }
        // Commands waiting for the peer fail now, not at their deadline.
        forward::set_online(false);
        // Whatever the peer said no longer holds.
        Inventory::forget_peer();
        self.stats.frames_in.fetch_add(s.frames_in, Ordering::Relaxed);
        self.stats.frames_out.fetch_add(s.frames_out, Ordering::Relaxed);
        match (result, s.params().is_some()) {
            (Ok(()), _) => End::Stopped,
            (Err(e), true) => {
                pr_warn!("interlink: link to {} down: {}\n", Core(peer), Core(e));
                self.set_error(format_args!("{}", e));
                if e.peer_lost() && NODE.promote_on_peer_loss() {
                    pr_warn!("failover=auto: peer lost ({}): this node is now primary for its LUNs that follow the node role\n", Core(e));
                    refresh_alua();
                }
                End::WasUp
            }
            (Err(e), false) => End::Failed(e, addr),
        }
    }

    fn up(&self, p: &LinkParams, addr: Option<SocketAddr>) {
        self.stats.link_ups.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = self.status.lock();
            st.peer = Some((addr, p.peer_ha_id));
            st.last_error = Text::new();
        }
        NODE.set_link(LinkState::Online);
        forward::set_online(true);
        match addr {
            Some(a) => pr_info!(
                "interlink: online with peer ha_id {} at {} (ha_mode {}, max_payload {}, max_inflight {})\n",
                p.peer_ha_id, Core(a), p.ha_mode, p.max_payload, p.max_inflight
            ),
            None => pr_info!("interlink: online with peer ha_id {}\n", p.peer_ha_id),
        }
    }

    /// Turns away connections to our listener while a link is in use.
    fn reject_extra(&self, l: &TcpSocket) {
        while let Ok(Some(extra)) = l.accept(true) {
            self.stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
            match extra.peer_addr() {
                Some(a) => pr_warn!("interlink: rejected a second connection from {}: the link is in use\n", Core(a)),
                None => pr_warn!("interlink: rejected a second connection: the link is in use\n"),
            }
            extra.shutdown();
        }
    }
}

/// Inventory sync of one connection: what we announced, what the peer
/// announced, and when to compare again.
struct Inventory {
    sent: KVec<LunState>,
    peer: KVec<LunState>,
    /// Mode parameters sent, and the peer's last ones (per LUN).
    modes_sent: KVec<ModePages>,
    peer_modes: KVec<ModePages>,
    /// Peer LUNs reported as not matching ours (logged once each).
    mismatched: KVec<u32>,
    /// Next sync time (ms); 0 = at once.
    due: u64,
    /// When the connection came up (ms): the peer's inventory is complete
    /// one sync period later.
    since: u64,
}

/// Sync period: port and role changes reach the peer within this.
const SYNC_MS: u64 = 500;

impl Inventory {
    fn new() -> Self {
        Inventory {
            sent: KVec::new(),
            peer: KVec::new(),
            modes_sent: KVec::new(),
            peer_modes: KVec::new(),
            mismatched: KVec::new(),
            due: 0,
            since: sys::now_ms(),
        }
    }

    /// Whether the peer has had the time to announce all its LUNs.
    fn settled(&self) -> bool {
        sys::now_ms() >= self.since.saturating_add(SYNC_MS)
    }

    /// A LunState or LunGone from the peer.
    // Not inlined: the interlink thread's stack holds one such frame at a
    // time, not the sum of all of them (see `Interlink::converse`).
    #[inline(never)]
    fn inbound(&mut self, m: &Message) {
        match *m {
            Message::LunState(l) => {
                if let Some(old) = self.peer.iter_mut().find(|p| p.lun_id == l.lun_id) {
                    *old = l;
                } else if self.peer.len() >= MAX_LUNS as usize || self.peer.push(l, GFP_KERNEL).is_err() {
                    pr_err!("interlink: no room for the peer's LUN {}: ignored\n", l.lun_id);
                }
            }
            Message::LunGone(id) => {
                self.peer.retain(|p| p.lun_id != id);
                self.peer_modes.retain(|p| p.lun_id != id);
            }
            Message::ModePages(m) => {
                if let Some(old) = self.peer_modes.iter_mut().find(|p| p.lun_id == m.lun_id) {
                    *old = m;
                } else if self.peer_modes.len() >= MAX_LUNS as usize || self.peer_modes.push(m, GFP_KERNEL).is_err() {
                    pr_err!("interlink: no room for the peer's mode parameters of LUN {}: ignored\n", m.lun_id);
                    return;
                }
                Self::apply_modes(core::slice::from_ref(&m));
                return;
            }
            _ => return,
        }
        self.due = 0;
    }

    /// Our LUNs as announced.
    fn local() -> KVec<LunState> {
        let mut out = KVec::new();
        lio::with_devices(|devs| {
            for d in devs {
                let scsi = &d.device().ha().scsi;
                let (block_size, blocks) = d.geometry();
                let mut serial = [0u8; SERIAL_LEN];
                d.unit_serial(&mut serial);
                let mut ports = [0u16; MAX_LUN_PORTS];
                let n = d.port_ids(&mut ports);
                let l = LunState {
                    lun_id: scsi.lun_id(),
                    role: match scsi.local_role() {
                        Role::Primary => LunRole::Primary,
                        Role::Secondary => LunRole::Secondary,
                    },
                    block_size,
                    blocks,
                    serial,
                    nports: u8::try_from(n).unwrap_or(0),
                    ports,
                };
                if out.push(l, GFP_KERNEL).is_err() {
                    break;
                }
            }
        });
        out
    }

    /// Sends what changed since the last sync and applies the peer's view.
    // Not inlined: the interlink thread's stack holds one such frame at a
    // time, not the sum of all of them (see `Interlink::converse`).
    #[inline(never)]
    fn sync(&mut self, s: &mut Session<'_, KernelMac>, tx: &mut impl Tx) -> core::result::Result<(), LinkError> {
        let now = sys::now_ms();
        self.due = now + SYNC_MS;
        let cur = Self::local();
        for l in cur.iter() {
            if !self.sent.iter().any(|o| o == l) {
                s.send_when_up(&Message::LunState(*l), now, tx)?;
            }
        }
        for o in self.sent.iter() {
            if !cur.iter().any(|l| l.lun_id == o.lun_id) {
                s.send_when_up(&Message::LunGone(o.lun_id), now, tx)?;
            }
        }
        self.sent = cur;
        // Mode parameters: those that changed since last sent.
        let mut modes = KVec::new();
        lio::with_devices(|devs| {
            for d in devs {
                let scsi = &d.device().ha().scsi;
                let (generation, wce) = scsi.mode();
                if modes.push(ModePages { lun_id: scsi.lun_id(), generation, wce }, GFP_KERNEL).is_err() {
                    break;
                }
            }
        });
        for m in modes.iter() {
            if !self.modes_sent.iter().any(|o| o == m) {
                s.send_when_up(&Message::ModePages(*m), now, tx)?;
            }
        }
        self.modes_sent = modes;
        self.apply();
        Self::apply_modes(&self.peer_modes);
        Ok(())
    }

    /// Gives our LUNs the peer's mode parameters where they win.
    fn apply_modes(peer: &[ModePages]) {
        lio::with_devices(|devs| {
            for m in peer {
                let Some(d) = devs.iter().find(|d| d.device().ha().scsi.lun_id() == m.lun_id) else { continue };
                let scsi = &d.device().ha().scsi;
                if scsi.mode_from_peer(m.generation, m.wce, scsi.peer_is_primary()) {
                    pr_info!(
                        "LUN {}: MODE SELECT through the peer: write cache {}\n",
                        m.lun_id,
                        crate::scsi::Scsi::wce_words(m.wce)
                    );
                }
            }
        });
    }

    /// Gives each of our LUNs what the peer says about it.
    fn apply(&mut self) {
        let mut newly_bad = [0u32; 8];
        let mut nbad = 0;
        let settled = self.settled();
        lio::with_devices(|devs| {
            for d in devs {
                let scsi = &d.device().ha().scsi;
                let id = scsi.lun_id();
                let Some(p) = self.peer.iter().find(|p| p.lun_id == id) else {
                    scsi.set_peer(None);
                    scsi.set_note(if settled { PeerNote::Absent } else { PeerNote::None });
                    continue;
                };
                let (bs, blocks) = d.geometry();
                let mut serial = [0u8; SERIAL_LEN];
                d.unit_serial(&mut serial);
                if p.block_size != bs || p.blocks != blocks || p.serial != serial {
                    // Kept non-active here rather than silently mismatched.
                    scsi.set_peer(None);
                    scsi.set_note(PeerNote::CopyDiffers);
                    let serial_note = if p.serial == serial { "same" } else { "differs" };
                    if !self.mismatched.contains(&id) {
                        if nbad < newly_bad.len() {
                            newly_bad[nbad] = id;
                            nbad += 1;
                        }
                        pr_err!(
                            "interlink: LUN {}: peer's copy differs (block size {} vs {}, {} vs {} blocks, serial {}): not using it\n",
                            id, bs, p.block_size, blocks, p.blocks, serial_note
                        );
                    }
                    continue;
                }
                let role = match p.role {
                    LunRole::Primary => PeerRole::Primary,
                    LunRole::Secondary => PeerRole::Secondary,
                };
                let split = role == PeerRole::Primary && scsi.local_role() == Role::Primary;
                if split && scsi.note() != PeerNote::SplitBrain {
                    pr_err!("interlink: LUN {}: both nodes are primary (split brain): both report Transitioning until one is made secondary\n", id);
                }
                scsi.set_note(if split { PeerNote::SplitBrain } else { PeerNote::None });
                scsi.set_peer(Some((role, p.ports())));
            }
        });
        for id in newly_bad.iter().take(nbad) {
            let _ = self.mismatched.push(*id, GFP_KERNEL);
        }
        // LUNs the peer has and we do not: reported once each.
        let ours = Self::local();
        for p in self.peer.iter() {
            if !ours.iter().any(|l| l.lun_id == p.lun_id) && !self.mismatched.contains(&p.lun_id) {
                pr_warn!("interlink: the peer has LUN {} which this node does not have\n", p.lun_id);
                let _ = self.mismatched.push(p.lun_id, GFP_KERNEL);
            }
        }
        refresh_alua();
    }

    /// The link is gone: nothing the peer said holds.
    fn forget_peer() {
        lio::with_devices(|devs| {
            for d in devs {
                let scsi = &d.device().ha().scsi;
                scsi.set_peer(None);
                scsi.set_note(PeerNote::None);
            }
        });
        refresh_alua();
    }
}

/// A MODE SELECT changed a LUN's mode parameters: sent at the next pass.
static MODES_CHANGED: AtomicBool = AtomicBool::new(false);

/// Has the interlink send the LUNs' changed mode parameters at once.
pub(crate) fn modes_changed() {
    MODES_CHANGED.store(true, Ordering::Release);
    sys::link_kick();
}

/// Opens or releases each LUN's backing device as its role asks, raises
/// ASYMMETRIC ACCESS STATE CHANGED where the LUN's group states changed
/// (link state, roles, the peer's announcements) and logs the new states.
pub(crate) fn refresh_alua() {
    lio::with_devices(|devs| {
        for d in devs {
            // First, so that a new primary has the device when initiators
            // hear of the change (a secondary waits for its IO to end here).
            d.device().follow_role();
            let scsi = &d.device().ha().scsi;
            if let Some(g) = scsi.check_alua_change() {
                pr_info!("LUN {}: ALUA states now local {}, peer {}\n", scsi.lun_id(), Core(g.local), Core(g.peer));
            }
        }
    });
}

impl RebootHook for Interlink {
    fn on_reboot(&self) {
        pr_info!("interlink: system going down: closing the link\n");
        self.halted.store(true, Ordering::Release);
        // The thread notices within one receive timeout; give it a bound.
        for _ in 0..40 {
            if self.idle.load(Ordering::Acquire) {
                break;
            }
            sys::sleep_ms(25);
        }
    }
}

/// The running interlink: its thread and reboot notifier.
#[pin_data]
pub(crate) struct Service {
    #[pin]
    _reboot: RebootNotifier<Interlink>,
    _thread: Kthread<Interlink>,
}

impl Service {
    /// Starts the link thread (idle until `ha_peer` is set).
    pub(crate) fn start(link: Arc<Interlink>) -> impl PinInit<Self, Error> {
        let mac_ok = mac_self_test(&KernelMac);
        let crc_ok = crc_self_test(&KernelMac);
        try_pin_init!(Service {
            _reboot <- {
                if !mac_ok {
                    pr_err!("interlink: HMAC-SHA256 self-test failed: refusing to load\n");
                    return Err(EINVAL);
                }
                if !crc_ok {
                    pr_err!("interlink: CRC32C self-test failed: refusing to load\n");
                    return Err(EINVAL);
                }
                RebootNotifier::new(link.clone())
            },
            _thread: Kthread::run(c_str!("tcm_ha_link"), link)?,
        })
    }
}

/// Allocates the shared state (configfs needs it before the thread runs).
pub(crate) fn new_interlink() -> Result<Arc<Interlink>> {
    Arc::pin_init(Interlink::new(), GFP_KERNEL)
}
