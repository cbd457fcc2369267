// SPDX-License-Identifier: GPL-2.0

//! The `ha` backstore's control string (`control` file of an `ha` device):
//! comma- or newline-separated `key=value` pairs.
//!
//! | key       | value                          |
//! |-----------|--------------------------------|
//! | `dev`     | absolute path of a block device |
//! | `file`    | absolute path of a backing file |
//! | `lun_id`  | 0..=16383, the HA identity      |
//! | `ha_role` | `primary` or `secondary`        |
//! | `readonly`| `0` or `1`                      |

use core::fmt;

/// Longest accepted path for `dev=` and `file=` (LIO's udev_path is 512 bytes
/// including the terminator).
pub(crate) const MAX_PATH: usize = 511;

/// Largest accepted `lun_id`.
pub(crate) const MAX_LUN_ID: u32 = 16383;

/// HA role of a node or of one LUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Serves the LUN (Active/Optimized).
    Primary,
    /// Follows the primary (Standby, Unavailable or Active/Non-optimized).
    Secondary,
}

impl Role {
    /// Parses `primary` or `secondary`.
    pub(crate) fn parse(s: &str) -> Option<Role> {
        match s {
            "primary" => Some(Role::Primary),
            "secondary" => Some(Role::Secondary),
            _ => None,
        }
    }

    /// The name used in configfs and the control string.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        }
    }
}

/// One parsed `key=value` pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Param<'a> {
    /// `dev=`: backing block device.
    Dev(&'a str),
    /// `file=`: backing regular file.
    File(&'a str),
    /// `lun_id=`: identity of the LUN shared by both nodes.
    LunId(u32),
    /// `ha_role=`: per-LUN role override.
    Role(Role),
    /// `readonly=`: refuse writes.
    ReadOnly(bool),
}

/// Why a control string was refused; `Display` names the key and the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ControlError<'a> {
    /// A pair without `=`.
    NoValue(&'a str),
    /// A key this backstore does not know.
    UnknownKey(&'a str, &'a str),
    /// A known key with a value outside its range.
    BadValue {
        /// The key.
        key: &'static str,
        /// The value as written.
        value: &'a str,
        /// What would have been accepted.
        expected: &'static str,
    },
}

impl fmt::Display for ControlError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::NoValue(tok) => write!(f, "'{}' is not key=value", tok),
            ControlError::UnknownKey(k, v) => write!(f, "unknown key '{}' (value '{}')", k, v),
            ControlError::BadValue {
                key,
                value,
                expected,
            } => write!(
                f,
                "bad value '{}' for '{}': expected {}",
                value, key, expected
            ),
        }
    }
}

fn parse_path<'a>(key: &'static str, value: &'a str) -> Result<(), ControlError<'a>> {
    let expected = "an absolute path of at most 511 bytes";
    if !value.starts_with('/') || value.len() > MAX_PATH || value.contains('\0') {
        return Err(ControlError::BadValue {
            key,
            value,
            expected,
        });
    }
    Ok(())
}

/// Parses one `key=value` token (already trimmed, non-empty).
pub(crate) fn parse_pair(tok: &str) -> Result<Param<'_>, ControlError<'_>> {
    let (key, value) = tok.split_once('=').ok_or(ControlError::NoValue(tok))?;
    let (key, value) = (key.trim(), value.trim());
    match key {
        "dev" => parse_path("dev", value).map(|()| Param::Dev(value)),
        "file" => parse_path("file", value).map(|()| Param::File(value)),
        "lun_id" => match value.parse::<u32>() {
            Ok(n) if n <= MAX_LUN_ID => Ok(Param::LunId(n)),
            _ => Err(ControlError::BadValue {
                key: "lun_id",
                value,
                expected: "an integer 0..=16383",
            }),
        },
        "ha_role" => Role::parse(value)
            .map(Param::Role)
            .ok_or(ControlError::BadValue {
                key: "ha_role",
                value,
                expected: "primary or secondary",
            }),
        "readonly" => match value {
            "0" => Ok(Param::ReadOnly(false)),
            "1" => Ok(Param::ReadOnly(true)),
            _ => Err(ControlError::BadValue {
                key: "readonly",
                value,
                expected: "0 or 1",
            }),
        },
        _ => Err(ControlError::UnknownKey(key, value)),
    }
}

/// Iterates over the pairs of a control string; empty tokens are skipped.
pub(crate) fn params(s: &str) -> impl Iterator<Item = Result<Param<'_>, ControlError<'_>>> {
    s.split([',', '\n'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(parse_pair)
}

/// The `lun_id` of a device whose control string sets none: a hash of its
/// configfs name, so two nodes that name a LUN alike agree on its identity.
pub(crate) fn derived_lun_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h % (MAX_LUN_ID + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    #[test]
    fn parses_every_key() {
        let got: Vec<_> =
            params("dev=/dev/vdb,lun_id=7,ha_role=secondary,readonly=1\nfile=/srv/x\n")
                .collect::<Result<_, _>>()
                .unwrap();
        assert_eq!(
            got,
            [
                Param::Dev("/dev/vdb"),
                Param::LunId(7),
                Param::Role(Role::Secondary),
                Param::ReadOnly(true),
                Param::File("/srv/x"),
            ]
        );
    }

    #[test]
    fn empty_and_blank_tokens_are_skipped() {
        assert_eq!(params(" , \n,").count(), 0);
        assert_eq!(params(" lun_id = 3 ,").next(), Some(Ok(Param::LunId(3))));
    }

    #[test]
    fn errors_name_key_and_value() {
        let e = params("lun_id=99999").next().unwrap().unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad value '99999' for 'lun_id': expected an integer 0..=16383"
        );
        let e = params("colour=blue").next().unwrap().unwrap_err();
        assert_eq!(e.to_string(), "unknown key 'colour' (value 'blue')");
        assert_eq!(
            params("dev").next(),
            Some(Err(ControlError::NoValue("dev")))
        );
        assert!(params("dev=vdb").next().unwrap().is_err());
        assert!(params("ha_role=master").next().unwrap().is_err());
        assert!(params("readonly=yes").next().unwrap().is_err());
        assert!(params("lun_id=-1").next().unwrap().is_err());
    }

    #[test]
    fn path_length_is_bounded() {
        let mut long = std::string::String::from("dev=/");
        long.push_str(&"a".repeat(MAX_PATH));
        assert!(params(&long).next().unwrap().is_err());
        let ok = std::format!("dev=/{}", "a".repeat(MAX_PATH - 1));
        assert!(params(&ok).next().unwrap().is_ok());
    }

    #[test]
    fn role_round_trips() {
        for r in [Role::Primary, Role::Secondary] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn derived_lun_ids_are_stable_and_in_range() {
        assert_eq!(derived_lun_id("disk0"), derived_lun_id("disk0"));
        assert_ne!(derived_lun_id("disk0"), derived_lun_id("disk1"));
        for n in ["", "a", "a-very-long-configfs-directory-name-of-a-lun"] {
            assert!(derived_lun_id(n) <= MAX_LUN_ID);
        }
    }
}
