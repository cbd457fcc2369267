// SPDX-License-Identifier: GPL-2.0

//! Node-wide HA settings written to `/sys/kernel/config/tcm_ha/` (issue 4,
//! requirement 1): parsing and validation of each attribute, with errors
//! that name the attribute and the value. Plain Rust, shared with the host
//! crate.

use core::fmt;
use core::net::SocketAddr;
use core::str::FromStr;

use super::control::Role;
use super::scsi::alua::HaMode;

/// Largest `ha_id` (CTL: 0 = not in HA, 1 and 2 = the two nodes).
pub(crate) const MAX_HA_ID: u8 = 2;
/// Shortest pre-shared key accepted, in bytes.
pub(crate) const MIN_KEY_LEN: usize = 16;
/// Longest pre-shared key accepted, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 128;

/// Where the interlink goes (`ha_peer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peer {
    /// Empty: no interlink (Active/Unavailable).
    None,
    /// `listen ADDR:PORT`: accept the peer's connection there.
    Listen(SocketAddr),
    /// `connect ADDR:PORT`: connect to the peer there.
    Connect(SocketAddr),
}

impl Peer {
    /// Whether the peer address is loopback (the only case a link may come
    /// up without a key).
    pub(crate) fn is_loopback(&self) -> bool {
        match self {
            Peer::None => false,
            Peer::Listen(a) | Peer::Connect(a) => a.ip().is_loopback(),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::None => Ok(()),
            Peer::Listen(a) => write!(f, "listen {a}"),
            Peer::Connect(a) => write!(f, "connect {a}"),
        }
    }
}

/// Why a node attribute write was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeError<'a> {
    /// The value does not parse; `expected` says what would.
    BadValue {
        /// Attribute name.
        attr: &'static str,
        /// The value written (trimmed).
        value: &'a str,
        /// What the attribute accepts.
        expected: &'static str,
    },
}

impl fmt::Display for NodeError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::BadValue { attr, value, expected } => {
                write!(f, "{attr}: bad value '{value}': expected {expected}")
            }
        }
    }
}

/// The text of a configfs write without the trailing newline `echo` adds.
pub(crate) fn trim(s: &str) -> &str {
    s.strip_suffix('\n').unwrap_or(s).trim()
}

fn bad<'a>(attr: &'static str, value: &'a str, expected: &'static str) -> NodeError<'a> {
    NodeError::BadValue { attr, value, expected }
}

/// Parses `ha_id`: 0 (not in HA), 1 or 2.
pub(crate) fn parse_ha_id(s: &str) -> Result<u8, NodeError<'_>> {
    let v = trim(s);
    v.parse::<u8>().ok().filter(|n| *n <= MAX_HA_ID).ok_or(bad("ha_id", v, "0, 1 or 2"))
}

/// Parses `ha_mode`: 0 (Active/Standby), 1 (serialize only), 2 (proxy).
pub(crate) fn parse_ha_mode(s: &str) -> Result<HaMode, NodeError<'_>> {
    let v = trim(s);
    v.parse::<u32>()
        .ok()
        .and_then(HaMode::from_u32)
        .ok_or(bad("ha_mode", v, "0 (active/standby), 1 (serialize), 2 (proxy)"))
}

/// Parses `ha_role`: `primary` or `secondary`.
pub(crate) fn parse_role(s: &str) -> Result<Role, NodeError<'_>> {
    let v = trim(s);
    Role::parse(v).ok_or(bad("ha_role", v, "primary or secondary"))
}

/// Parses `failover`: `manual` (false) or `auto` (true: a secondary
/// promotes itself when its linked peer is lost).
pub(crate) fn parse_failover(s: &str) -> Result<bool, NodeError<'_>> {
    match trim(s) {
        "manual" => Ok(false),
        "auto" => Ok(true),
        v => Err(bad("failover", v, "manual or auto")),
    }
}

/// Parses `ha_peer`: empty, `listen ADDR:PORT` or `connect ADDR:PORT`
/// (IPv6 as `[ADDR]:PORT`); port 0 and unspecified connect addresses are
/// refused.
pub(crate) fn parse_peer(s: &str) -> Result<Peer, NodeError<'_>> {
    const EXPECTED: &str = "empty, 'listen ADDR:PORT' or 'connect ADDR:PORT'";
    let v = trim(s);
    if v.is_empty() {
        return Ok(Peer::None);
    }
    let (verb, rest) = v.split_once(char::is_whitespace).ok_or(bad("ha_peer", v, EXPECTED))?;
    let addr = SocketAddr::from_str(rest.trim()).map_err(|_| bad("ha_peer", v, EXPECTED))?;
    if addr.port() == 0 {
        return Err(bad("ha_peer", v, "a port between 1 and 65535"));
    }
    match verb {
        "listen" => Ok(Peer::Listen(addr)),
        "connect" if addr.ip().is_unspecified() => Err(bad("ha_peer", v, "a peer address to connect to")),
        "connect" => Ok(Peer::Connect(addr)),
        _ => Err(bad("ha_peer", v, EXPECTED)),
    }
}

/// Checks `ha_key`: the pre-shared key's bytes (the trailing newline of
/// `echo` removed), 16 to 128 bytes; an empty write clears the key.
pub(crate) fn parse_key(s: &[u8]) -> Result<&[u8], NodeError<'static>> {
    let k = s.strip_suffix(b"\n").unwrap_or(s);
    if k.is_empty() || (MIN_KEY_LEN..=MAX_KEY_LEN).contains(&k.len()) {
        Ok(k)
    } else {
        // The key itself is never echoed into the log.
        Err(bad("ha_key", "(hidden)", "16 to 128 bytes, or empty to clear"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn ha_id_values() {
        assert_eq!(parse_ha_id("0\n"), Ok(0));
        assert_eq!(parse_ha_id("2"), Ok(2));
        for bad in ["3", "-1", "", "x", "1 2", "256"] {
            assert!(parse_ha_id(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_ha_id("7\n").unwrap_err().to_string(), "ha_id: bad value '7': expected 0, 1 or 2");
    }

    #[test]
    fn ha_mode_values() {
        assert_eq!(parse_ha_mode("0"), Ok(HaMode::ActiveStandby));
        assert_eq!(parse_ha_mode("1\n"), Ok(HaMode::SerializeOnly));
        assert_eq!(parse_ha_mode("2"), Ok(HaMode::Proxy));
        assert!(parse_ha_mode("3").is_err());
        assert!(parse_ha_mode("proxy").is_err());
    }

    #[test]
    fn role_values() {
        assert_eq!(parse_role("primary\n"), Ok(Role::Primary));
        assert_eq!(parse_role("secondary"), Ok(Role::Secondary));
        assert!(parse_role("master").is_err());
    }

    #[test]
    fn failover_values() {
        assert_eq!(parse_failover("manual\n"), Ok(false));
        assert_eq!(parse_failover("auto"), Ok(true));
        assert_eq!(parse_failover("yes").unwrap_err().to_string(), "failover: bad value 'yes': expected manual or auto");
    }

    #[test]
    fn peer_values() {
        assert_eq!(parse_peer("\n"), Ok(Peer::None));
        assert_eq!(parse_peer(""), Ok(Peer::None));
        let p = parse_peer("listen 0.0.0.0:7777\n").unwrap();
        assert_eq!(p.to_string(), "listen 0.0.0.0:7777");
        let p = parse_peer("connect 192.0.2.2:7777").unwrap();
        assert!(matches!(p, Peer::Connect(a) if a.port() == 7777));
        let p = parse_peer("connect [2001:db8::2]:7777").unwrap();
        assert_eq!(p.to_string(), "connect [2001:db8::2]:7777");
        assert!(parse_peer("connect 127.0.0.1:1").unwrap().is_loopback());
        for bad in ["listen", "listen 1.2.3.4", "dial 1.2.3.4:5", "connect 0.0.0.0:7777",
                    "connect 1.2.3.4:0", "connect 2001:db8::2:7777", "connect 1.2.3.4:70000"] {
            assert!(parse_peer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_lengths() {
        assert_eq!(parse_key(b"\n"), Ok(&b""[..]));
        assert_eq!(parse_key(b"0123456789abcdef\n"), Ok(&b"0123456789abcdef"[..]));
        assert!(parse_key(b"short").is_err());
        assert!(parse_key(&[b'k'; 129]).is_err());
        assert!(!parse_key(b"short").unwrap_err().to_string().contains("short"));
    }
}
