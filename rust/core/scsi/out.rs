// SPDX-License-Identifier: GPL-2.0

//! A truncating writer for SCSI response data.
//!
//! [`Out`] appends into a caller-supplied buffer. Bytes beyond the buffer are
//! dropped, but the position keeps counting, so at the end [`Out::len`] is the
//! untruncated length (what an allocation length of "infinity" would get).
//! Nothing here can panic: every store goes through `get_mut`, and the
//! position saturates at `usize::MAX`.

/// Truncating big-endian writer over `&mut [u8]`.
pub(crate) struct Out<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Out<'a> {
    /// A writer starting at offset 0 of `buf`.
    pub(crate) fn new(buf: &'a mut [u8]) -> Out<'a> {
        Out { buf, pos: 0 }
    }

    /// Untruncated number of bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.pos
    }

    /// Whether nothing was written yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Stores `v` at absolute offset `at` if it is inside the buffer.
    pub(crate) fn set(&mut self, at: usize, v: u8) {
        if let Some(b) = self.buf.get_mut(at) {
            *b = v;
        }
    }

    /// Stores `src` at absolute offset `at`, dropping what does not fit.
    pub(crate) fn set_bytes(&mut self, at: usize, src: &[u8]) {
        for (i, v) in src.iter().enumerate() {
            if let Some(a) = at.checked_add(i) {
                self.set(a, *v);
            }
        }
    }

    /// Stores a big-endian `u16` at absolute offset `at` (for length fields
    /// known only at the end).
    pub(crate) fn set_be16(&mut self, at: usize, v: u16) {
        self.set_bytes(at, &v.to_be_bytes());
    }

    /// Stores a big-endian `u32` at absolute offset `at`.
    pub(crate) fn set_be32(&mut self, at: usize, v: u32) {
        self.set_bytes(at, &v.to_be_bytes());
    }

    /// Appends one byte.
    pub(crate) fn u8(&mut self, v: u8) {
        self.set(self.pos, v);
        self.pos = self.pos.saturating_add(1);
    }

    /// Appends bytes.
    pub(crate) fn bytes(&mut self, src: &[u8]) {
        self.set_bytes(self.pos, src);
        self.pos = self.pos.saturating_add(src.len());
    }

    /// Appends `n` zero bytes.
    pub(crate) fn zeros(&mut self, n: usize) {
        for _ in 0..n {
            self.u8(0);
        }
    }

    /// Appends a big-endian `u16`.
    pub(crate) fn be16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }

    /// Appends a big-endian `u32`.
    pub(crate) fn be32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }

    /// Appends a big-endian `u64`.
    pub(crate) fn be64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }

    /// Appends exactly `width` bytes: `src` cut to `width`, then `pad` bytes
    /// (INQUIRY's space-padded ASCII fields).
    pub(crate) fn padded(&mut self, src: &[u8], width: usize, pad: u8) {
        let take = src.len().min(width);
        self.bytes(src.get(..take).unwrap_or(&[]));
        for _ in take..width {
            self.u8(pad);
        }
    }
}

/// Big-endian `u16` of `n`, saturating at `u16::MAX` (for length fields of
/// responses that can never be that long in practice).
pub(crate) fn sat16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// `n` as `u32`, saturating at `u32::MAX`.
pub(crate) fn sat32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_but_counts() {
        let mut b = [0xAAu8; 5];
        let mut o = Out::new(&mut b);
        assert!(o.is_empty());
        o.be32(0x01020304);
        o.be16(0x0506);
        o.zeros(3);
        o.set_be16(0, 0xBEEF);
        o.set_be16(4, 0xCAFE);
        o.set_be32(100, 1);
        assert_eq!(o.len(), 9);
        assert_eq!(b, [0xBE, 0xEF, 3, 4, 0xCA]);
    }

    #[test]
    fn padded_fields() {
        let mut b = [0u8; 8];
        let mut o = Out::new(&mut b);
        o.padded(b"ab", 4, b' ');
        o.padded(b"abcdef", 4, b' ');
        assert_eq!(o.len(), 8);
        assert_eq!(&b, b"ab  abcd");
    }

    #[test]
    fn empty_buffer() {
        let mut b = [0u8; 0];
        let mut o = Out::new(&mut b);
        o.be64(7);
        o.padded(b"x", 3, b' ');
        assert_eq!(o.len(), 11);
    }

    #[test]
    fn saturation() {
        assert_eq!(sat16(70000), u16::MAX);
        assert_eq!(sat16(7), 7);
        assert_eq!(sat32(7), 7);
    }
}
