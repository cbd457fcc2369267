// SPDX-License-Identifier: GPL-2.0

//! FFI layer for the kernel services the interlink needs and the 7.3 kernel
//! crate does not wrap: TCP sockets, a kernel thread, HMAC-SHA256, random
//! bytes, the monotonic clock and the reboot notifier. Every `unsafe` of the
//! interlink lives in this file; `link.rs` uses only the safe types below.

use core::{
    ffi::{c_int, c_uint, c_void},
    marker::PhantomData,
    mem::MaybeUninit,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    ptr::{self, NonNull},
};
use kernel::{bindings as kb, error::to_result, prelude::*, str::CStr, sync::Arc, types::Opaque};

use crate::core_logic::wire::crc::Crc32c;
use crate::core_logic::wire::handshake::Mac;
use crate::core_logic::wire::msg::MAC_LEN;
use crate::lio::bindings as b;

/// Milliseconds of the monotonic clock.
pub(crate) fn now_ms() -> u64 {
    // SAFETY: `ktime_get` reads the clock; callable in any context.
    let ns = unsafe { kb::ktime_get() };
    u64::try_from(ns).unwrap_or(0) / 1_000_000
}

/// Fills `buf` with random bytes from the kernel's CSPRNG.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    // SAFETY: `buf` is valid for writes of its length.
    unsafe { kb::get_random_bytes(buf.as_mut_ptr().cast(), buf.len()) }
}

/// Sleeps `ms` milliseconds (process context).
/// Wakes the interlink thread from [`link_wait`] (any context).
pub(crate) fn link_kick() {
    // SAFETY: sets a flag and wakes a static wait queue; callable from
    // any context.
    unsafe { b::tcm_ha_link_kick() }
}

/// Sleeps until [`link_kick`], a request to stop the thread, or `ms`.
pub(crate) fn link_wait(ms: u32) {
    // SAFETY: sleeps on a static wait queue; called from the interlink
    // kernel thread.
    unsafe { b::tcm_ha_link_wait(ms) }
}

pub(crate) fn sleep_ms(ms: u32) {
    // SAFETY: the link thread runs in process context and holds no lock here.
    unsafe { kb::msleep(ms) }
}

/// Whether `kthread_stop` was called for the current kernel thread.
pub(crate) fn should_stop() -> bool {
    // SAFETY: only called from the thread started by [`Kthread::run`].
    unsafe { kb::kthread_should_stop() }
}

/// HMAC-SHA256 through the kernel's crypto library, and the CRC32C of the
/// frame trailers through the kernel's `crc32c()`.
pub(crate) struct KernelMac;

impl Crc32c for KernelMac {
    fn crc32c_update(&self, crc: u32, data: &[u8]) -> u32 {
        // SAFETY: `data` is valid for reads of its length; `crc32c` only
        // reads it and may be called in any context.
        unsafe { b::crc32c(crc, data.as_ptr().cast(), data.len()) }
    }
}

impl Mac for KernelMac {
    fn hmac_sha256(&self, key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut ctx = MaybeUninit::<kb::hmac_sha256_ctx>::zeroed();
        let mut out = [0u8; MAC_LEN];
        // SAFETY: `ctx` is writable storage for the context, initialised by
        // `init` before `update`/`final` use it; key, parts and `out` are
        // valid for their lengths (`out` is SHA256_DIGEST_SIZE bytes).
        unsafe {
            kb::hmac_sha256_init_usingrawkey(ctx.as_mut_ptr(), key.as_ptr(), key.len());
            for p in parts {
                b::tcm_ha_hmac_sha256_update(ctx.as_mut_ptr(), p.as_ptr(), p.len());
            }
            kb::hmac_sha256_final(ctx.as_mut_ptr(), out.as_mut_ptr());
        }
        out
    }
}

/// Room for a `sockaddr_in` or `sockaddr_in6`.
#[repr(C, align(8))]
struct RawAddr([u8; 128]);

const IPPROTO_TCP: c_int = 6;

impl RawAddr {
    /// Encodes `a` in the kernel's layout: family (host order), port (network
    /// order), then the IPv4 address or IPv6 flowinfo/address/scope.
    fn from_addr(a: SocketAddr) -> (RawAddr, c_int) {
        let mut r = RawAddr([0; 128]);
        let (family, len) = match a {
            SocketAddr::V4(v4) => {
                r.0[4..8].copy_from_slice(&v4.ip().octets());
                (kb::AF_INET as u16, 16)
            }
            SocketAddr::V6(v6) => {
                r.0[4..8].copy_from_slice(&v6.flowinfo().to_be_bytes());
                r.0[8..24].copy_from_slice(&v6.ip().octets());
                r.0[24..28].copy_from_slice(&v6.scope_id().to_ne_bytes());
                (kb::AF_INET6 as u16, 28)
            }
        };
        r.0[0..2].copy_from_slice(&family.to_ne_bytes());
        r.0[2..4].copy_from_slice(&a.port().to_be_bytes());
        (r, len)
    }

    fn to_addr(&self) -> Option<SocketAddr> {
        let family = u32::from(u16::from_ne_bytes([self.0[0], self.0[1]]));
        let port = u16::from_be_bytes([self.0[2], self.0[3]]);
        if family == kb::AF_INET {
            let ip: [u8; 4] = self.0[4..8].try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        } else if family == kb::AF_INET6 {
            let ip: [u8; 16] = self.0[8..24].try_into().ok()?;
            Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0)))
        } else {
            None
        }
    }

    fn as_unsized(&mut self) -> *mut kb::sockaddr_unsized {
        ptr::from_mut(self).cast()
    }
}

/// A kernel TCP socket; released on drop.
pub(crate) struct TcpSocket(NonNull<kb::socket>);

// SAFETY: a kernel socket may be used and released from any process context;
// `TcpSocket` is only used by one thread at a time (`&self` methods are the
// socket calls the kernel itself serialises with the socket lock).
unsafe impl Send for TcpSocket {}

/// Receive timeout of link sockets: the link thread's loop period, hence
/// the longest a PR snapshot or a forwarded command waits to be sent.
pub(crate) const RECV_TIMEOUT_MS: u32 = 20;
/// Send (and connect) timeout: a peer that does not take our frames for this
/// long is dropped.
pub(crate) const SEND_TIMEOUT_MS: u32 = 1000;

impl TcpSocket {
    fn create(a: &SocketAddr) -> Result<Self> {
        let family = match a.ip() {
            IpAddr::V4(_) => kb::AF_INET,
            IpAddr::V6(_) => kb::AF_INET6,
        };
        let mut sock = ptr::null_mut();
        // SAFETY: `init_net` is the initial network namespace (static);
        // `sock` receives the new socket.
        to_result(unsafe {
            kb::sock_create_kern(
                &raw mut kb::init_net,
                family as c_int,
                kb::sock_type_SOCK_STREAM as c_int,
                IPPROTO_TCP,
                &mut sock,
            )
        })?;
        let s = TcpSocket(NonNull::new(sock).ok_or(ENOMEM)?);
        s.tune();
        Ok(s)
    }

    fn tune(&self) {
        // SAFETY: a live socket with its `sk`.
        unsafe { b::tcm_ha_sock_tune(self.0.as_ptr(), RECV_TIMEOUT_MS, SEND_TIMEOUT_MS) }
    }

    /// A socket listening on `a` (backlog 1).
    pub(crate) fn listen(a: SocketAddr) -> Result<Self> {
        let s = Self::create(&a)?;
        let (mut raw, len) = RawAddr::from_addr(a);
        // SAFETY: a live socket; `raw` holds `len` bytes of a sockaddr.
        to_result(unsafe { kb::kernel_bind(s.0.as_ptr(), raw.as_unsized(), len) })?;
        // SAFETY: a bound socket.
        to_result(unsafe { kb::kernel_listen(s.0.as_ptr(), 1) })?;
        Ok(s)
    }

    /// A socket connected to `a` (waits up to [`SEND_TIMEOUT_MS`]).
    pub(crate) fn connect(a: SocketAddr) -> Result<Self> {
        let s = Self::create(&a)?;
        let (mut raw, len) = RawAddr::from_addr(a);
        // SAFETY: a live socket; `raw` holds `len` bytes of a sockaddr.
        to_result(unsafe { kb::kernel_connect(s.0.as_ptr(), raw.as_unsized(), len, 0) })?;
        Ok(s)
    }

    /// The next connection of a listening socket; `None` when none came
    /// within the receive timeout (or at once, with `nonblock`).
    pub(crate) fn accept(&self, nonblock: bool) -> Result<Option<Self>> {
        let mut new = ptr::null_mut();
        let flags = if nonblock { kb::O_NONBLOCK as c_int } else { 0 };
        // SAFETY: a listening socket; `new` receives the accepted socket.
        let r = unsafe { kb::kernel_accept(self.0.as_ptr(), &mut new, flags) };
        if r == -(kb::EAGAIN as c_int) || r == -(kb::EINTR as c_int) {
            return Ok(None);
        }
        to_result(r)?;
        let s = TcpSocket(NonNull::new(new).ok_or(ENOMEM)?);
        s.tune();
        Ok(Some(s))
    }

    /// Sends what the socket takes of `buf` now, without waiting: the
    /// number of bytes taken (0 when its buffer is full).
    pub(crate) fn send_now(&self, buf: &[u8]) -> core::result::Result<usize, i32> {
        let mut iov = kb::kvec { iov_base: buf.as_ptr().cast_mut().cast(), iov_len: buf.len() };
        // SAFETY: an all-zero msghdr is a valid "no address, no control"
        // header.
        let mut msg: kb::msghdr = unsafe { core::mem::zeroed() };
        msg.msg_flags = (kb::MSG_NOSIGNAL | kb::MSG_DONTWAIT) as c_uint;
        // SAFETY: a live socket; `iov` describes `buf`, which the kernel
        // only reads.
        let n = unsafe { kb::kernel_sendmsg(self.0.as_ptr(), &mut msg, &mut iov, 1, buf.len()) };
        if n == -(kb::EAGAIN as c_int) {
            return Ok(0);
        }
        usize::try_from(n).map_err(|_| n)
    }

    /// Wakes the interlink thread ([`link_wait`]) when data arrives on
    /// this socket or it can take more; undone on drop.
    pub(crate) fn watch(&self) {
        // SAFETY: a live socket with its `sk`.
        unsafe { b::tcm_ha_sock_watch(self.0.as_ptr()) }
    }

    /// Receives into `buf`: `Ok(Some(0))` when the peer closed, `Ok(None)`
    /// when nothing arrived within the receive timeout (at once with
    /// `nowait`).
    pub(crate) fn recv(&self, buf: &mut [u8], nowait: bool) -> core::result::Result<Option<usize>, i32> {
        let mut iov = kb::kvec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: an all-zero msghdr is a valid "no address, no control"
        // header.
        let mut msg: kb::msghdr = unsafe { core::mem::zeroed() };
        let flags = if nowait { kb::MSG_DONTWAIT as c_int } else { 0 };
        // SAFETY: a live socket; `iov` describes `buf`, writable.
        let n = unsafe { kb::kernel_recvmsg(self.0.as_ptr(), &mut msg, &mut iov, 1, buf.len(), flags) };
        if n == -(kb::EAGAIN as c_int) || n == -(kb::EINTR as c_int) {
            return Ok(None);
        }
        usize::try_from(n).map(Some).map_err(|_| n)
    }

    /// The address of the other end, if connected.
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        let mut raw = RawAddr([0; 128]);
        // SAFETY: a live socket; `raw` has room for any inet sockaddr.
        let n = unsafe { kb::kernel_getpeername(self.0.as_ptr(), ptr::from_mut(&mut raw).cast()) };
        if n < 0 {
            return None;
        }
        raw.to_addr()
    }

    /// Shuts both directions down: the peer sees the close at once.
    pub(crate) fn shutdown(&self) {
        // SAFETY: a live socket.
        unsafe { kb::kernel_sock_shutdown(self.0.as_ptr(), kb::sock_shutdown_cmd_SHUT_RDWR) };
    }
}

impl Drop for TcpSocket {
    fn drop(&mut self) {
        // SAFETY: we own the socket; its TCP callbacks come back (if
        // `watch` replaced them) before it is released, and nothing uses
        // it after this.
        unsafe {
            b::tcm_ha_sock_unwatch(self.0.as_ptr());
            kb::sock_release(self.0.as_ptr())
        }
    }
}

/// What a kernel thread runs.
pub(crate) trait ThreadBody: Send + Sync + 'static {
    /// Runs until [`should_stop`] returns true.
    fn run(&self);
}

/// A kernel thread running `T::run` on shared data; stopped (and waited for)
/// on drop.
pub(crate) struct Kthread<T: ThreadBody> {
    task: NonNull<kb::task_struct>,
    /// Keeps the thread's data alive until the thread has exited.
    _data: Arc<T>,
    _p: PhantomData<T>,
}

// SAFETY: the task pointer is only passed to `kthread_stop_put`, callable
// from any process context.
unsafe impl<T: ThreadBody> Send for Kthread<T> {}
// SAFETY: `&Kthread` gives no access to the task.
unsafe impl<T: ThreadBody> Sync for Kthread<T> {}

impl<T: ThreadBody> Kthread<T> {
    /// The thread function of a `Kthread`: runs the body.
    ///
    /// # Safety
    /// Called by the kthread machinery with the `Arc<T>` payload the `Kthread` keeps alive until
    /// the thread has stopped.
    unsafe extern "C" fn trampoline(data: *mut c_void) -> c_int {
        // SAFETY: `data` is the `Arc<T>` payload kept alive by the `Kthread`
        // until `kthread_stop_put` has returned, i.e. after this function.
        let t = unsafe { &*data.cast_const().cast::<T>() };
        t.run();
        // A body returns only once stopped; wait for the stop anyway so the
        // task stays valid for `kthread_stop_put`.
        while !should_stop() {
            sleep_ms(10);
        }
        0
    }

    /// Starts `name` running `data.run()`.
    pub(crate) fn run(name: &CStr, data: Arc<T>) -> Result<Self> {
        let raw = ptr::from_ref::<T>(&data).cast_mut().cast::<c_void>();
        // SAFETY: `trampoline` matches the thread function type; `raw` stays
        // valid while `data` (moved into the result) lives; the helper takes
        // a task reference that `kthread_stop_put` drops.
        let task = unsafe { b::tcm_ha_kthread_run(Some(Self::trampoline), raw, name.as_char_ptr()) };
        // SAFETY: plain pointer inspection.
        if unsafe { b::tcm_ha_is_err(task.cast_const().cast()) } {
            // SAFETY: as above.
            let e = unsafe { b::tcm_ha_ptr_err(task.cast_const().cast()) };
            return Err(Error::from_errno(i32::try_from(e).unwrap_or(-(kb::ENOMEM as i32))));
        }
        Ok(Kthread { task: NonNull::new(task).ok_or(ENOMEM)?, _data: data, _p: PhantomData })
    }
}

impl<T: ThreadBody> Drop for Kthread<T> {
    fn drop(&mut self) {
        // SAFETY: the task is ours (with the reference the helper took); this
        // waits for the thread function to return, then drops the reference.
        unsafe { kb::kthread_stop_put(self.task.as_ptr()) };
    }
}

/// Calls `T::on_reboot` when the system shuts down, halts or reboots.
pub(crate) trait RebootHook: Send + Sync + 'static {
    /// Runs in the reboot notifier chain (process context).
    fn on_reboot(&self);
}

/// A registered reboot notifier; unregistered on drop.
#[pin_data(PinnedDrop)]
pub(crate) struct RebootNotifier<T: RebootHook> {
    #[pin]
    nb: Opaque<kb::notifier_block>,
    hook: Arc<T>,
}

// SAFETY: the notifier block is only touched by the notifier chain under its
// own lock; `hook` is `Sync`.
unsafe impl<T: RebootHook> Send for RebootNotifier<T> {}
// SAFETY: as above.
unsafe impl<T: RebootHook> Sync for RebootNotifier<T> {}

impl<T: RebootHook> RebootNotifier<T> {
    /// The reboot notifier's callback.
    ///
    /// # Safety
    /// Called by the reboot notifier chain with the `nb` field of a registered `RebootNotifier<T>`.
    unsafe extern "C" fn call(nb: *mut kb::notifier_block, _action: usize, _d: *mut c_void) -> c_int {
        // SAFETY: `nb` is the `nb` field of a registered `RebootNotifier<T>`,
        // which stays pinned and alive until it unregisters.
        let this = unsafe { &*kernel::container_of!(Opaque::cast_from(nb), Self, nb) };
        this.hook.on_reboot();
        kb::NOTIFY_DONE as c_int
    }

    /// Registers `hook`.
    pub(crate) fn new(hook: Arc<T>) -> impl PinInit<Self, Error> {
        // `hook` first: the notifier may fire as soon as it is registered.
        try_pin_init!(Self {
            hook,
            nb <- Opaque::try_ffi_init(|nb: *mut kb::notifier_block| {
                // SAFETY: `nb` is valid, pinned storage for the block.
                unsafe {
                    nb.write(kb::notifier_block {
                        notifier_call: Some(Self::call),
                        ..Default::default()
                    });
                    to_result(b::register_reboot_notifier(nb))
                }
            }),
        })
    }
}

#[pinned_drop]
impl<T: RebootHook> PinnedDrop for RebootNotifier<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: registered in `new`.
        unsafe { b::unregister_reboot_notifier(self.nb.get()) };
    }
}
