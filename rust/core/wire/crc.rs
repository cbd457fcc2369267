// SPDX-License-Identifier: GPL-2.0

//! CRC32C (Castagnoli), the checksum of every interlink frame's trailer.
//!
//! The same CRC as iSCSI's header and data digests (RFC 3720, B.4): the
//! reflected polynomial `0x82F63B78`, register preset to all ones, result
//! inverted. [`Crc32c::crc32c_update`] follows the kernel's `crc32c()`: it
//! continues a raw register and inverts neither at the start nor at the
//! end, so a whole CRC is `!update(!0, data)` ([`checksum`]).
//!
//! The plain-Rust implementation here ([`TableCrc32c`]) is slicing-by-8
//! over eight 256-entry tables built at compile time. The host uses it; the
//! kernel module hands the kernel's own `crc32c()` (hardware-accelerated
//! where the CPU can) through the same trait, and checks it at load with
//! [`self_test`].

/// The CRC32C polynomial, bit-reflected.
const POLY: u32 = 0x82F6_3B78;

/// `TABLES[0][b]`: the register after feeding byte `b` into a zero
/// register; `TABLES[k][b]`: the same followed by `k` zero bytes.
static TABLES: [[u32; 256]; 8] = tables();

const fn tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            bit += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

/// Byte `n` (0 = lowest) of `v`, as a table index.
#[inline(always)]
fn byte(v: u64, n: u32) -> usize {
    ((v >> (8 * n)) & 0xff) as usize
}

/// Continues the raw CRC32C register `crc` over `data` (slicing-by-8).
pub(crate) fn update(mut crc: u32, data: &[u8]) -> u32 {
    let t = &TABLES;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let Ok(w) = <[u8; 8]>::try_from(w) else {
            // Never: chunks_exact yields 8 bytes.
            continue;
        };
        // The register lines up with the first four bytes; each byte of
        // the word then moves through as many zero bytes as follow it.
        let v = u64::from_le_bytes(w) ^ u64::from(crc);
        crc = t[7][byte(v, 0)]
            ^ t[6][byte(v, 1)]
            ^ t[5][byte(v, 2)]
            ^ t[4][byte(v, 3)]
            ^ t[3][byte(v, 4)]
            ^ t[2][byte(v, 5)]
            ^ t[1][byte(v, 6)]
            ^ t[0][byte(v, 7)];
    }
    for &b in words.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xff) as usize];
    }
    crc
}

/// A CRC32C implementation.
pub(crate) trait Crc32c {
    /// Continues the raw register `crc` over `data` (no inversion, as the
    /// kernel's `crc32c()`). The default is [`TableCrc32c`]'s.
    fn crc32c_update(&self, crc: u32, data: &[u8]) -> u32 {
        update(crc, data)
    }
}

impl<T: Crc32c + ?Sized> Crc32c for &T {
    fn crc32c_update(&self, crc: u32, data: &[u8]) -> u32 {
        (**self).crc32c_update(crc, data)
    }
}

/// The plain-Rust, table-driven CRC32C of this file.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TableCrc32c;

impl Crc32c for TableCrc32c {}

/// The CRC32C of the concatenation of `parts`.
pub(crate) fn checksum(c: &impl Crc32c, parts: &[&[u8]]) -> u32 {
    !parts.iter().fold(!0, |crc, p| c.crc32c_update(crc, p))
}

/// Checks a CRC32C implementation against the standard check value and
/// RFC 3720's vectors, fed whole and in unaligned pieces; the module runs
/// it at load so that a broken binding fails loudly instead of as a
/// checksum mismatch on every frame.
pub(crate) fn self_test(c: &impl Crc32c) -> bool {
    let mut ramp = [0u8; 32];
    for (i, b) in ramp.iter_mut().enumerate() {
        *b = i as u8;
    }
    checksum(c, &[b"123456789"]) == 0xE306_9283
        && checksum(c, &[b"1", b"2345", b"", b"6789"]) == 0xE306_9283
        && checksum(c, &[&[0u8; 32]]) == 0x8A91_36AA
        && checksum(c, &[&[0xffu8; 32]]) == 0x62A8_AB43
        && checksum(c, &[ramp.get(..13).unwrap_or(&[]), ramp.get(13..).unwrap_or(&[])]) == 0x46DD_794E
}

/// CRC-32 (IEEE, reflected, no final inversion) continued from `crc`:
/// a plausible wrong CRC for the tests that check a wrong one is refused.
#[cfg(test)]
pub(crate) fn ieee_crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Bit by bit, straight from the definition.
    fn reference(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ POLY } else { crc >> 1 };
            }
        }
        !crc
    }

    fn crc(data: &[u8]) -> u32 {
        checksum(&TableCrc32c, &[data])
    }

    #[test]
    fn check_value() {
        assert_eq!(crc(b"123456789"), 0xE306_9283);
        assert_eq!(crc(b""), 0);
    }

    /// RFC 3720, B.4: the iSCSI digest examples.
    #[test]
    fn rfc3720_vectors() {
        assert_eq!(crc(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc(&[0xffu8; 32]), 0x62A8_AB43);
        let up: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc(&up), 0x46DD_794E);
        let down: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(crc(&down), 0x113F_DB5C);
        // The iSCSI SCSI READ (10) command PDU of B.4.
        let mut pdu = [0u8; 48];
        pdu[..2].copy_from_slice(&[0x01, 0xc0]);
        pdu[16] = 0x14;
        pdu[22] = 0x04;
        pdu[27] = 0x14;
        pdu[31] = 0x18;
        pdu[32] = 0x28;
        pdu[40] = 0x02;
        assert_eq!(crc(&pdu), 0xD996_3A56);
    }

    #[test]
    fn tables_match_the_definition_at_every_length_and_split() {
        // xorshift: deterministic data.
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let data: Vec<u8> = (0..1031)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect();
        for len in (0..64).chain([255, 256, 257, 1000, 1031]) {
            for start in 0..8.min(data.len() - len + 1) {
                let d = &data[start..start + len];
                let want = reference(d);
                assert_eq!(crc(d), want, "len {len} start {start}");
                for cut in [0, 1, 3, 7, 8, 9, len / 2, len] {
                    let cut = cut.min(len);
                    assert_eq!(checksum(&TableCrc32c, &[&d[..cut], &d[cut..]]), want);
                }
            }
        }
    }

    #[test]
    fn self_test_catches_a_wrong_crc() {
        assert!(self_test(&TableCrc32c));
        assert!(self_test(&&TableCrc32c));
        /// CRC-32 (IEEE) in CRC32C's place: a plausible wrong binding.
        struct Ieee;
        impl Crc32c for Ieee {
            fn crc32c_update(&self, crc: u32, data: &[u8]) -> u32 {
                super::ieee_crc32_update(crc, data)
            }
        }
        assert!(!self_test(&Ieee));
        /// Inverts at both ends itself (a binding that is not raw).
        struct Inverting;
        impl Crc32c for Inverting {
            fn crc32c_update(&self, crc: u32, data: &[u8]) -> u32 {
                !update(!crc, data)
            }
        }
        assert!(!self_test(&Inverting));
    }
}
