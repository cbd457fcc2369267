// SPDX-License-Identifier: GPL-2.0

//! Bounds-checked little-endian cursors over byte slices.
//!
//! Every read and write is checked; nothing here can index out of bounds or
//! overflow. Reads return `None` when the input is too short, writes return
//! `None` when the output is too small.

/// Reads little-endian values from a borrowed byte slice, front to back.
pub(crate) struct Reader<'a> {
    /// The bytes not read yet.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { rest: buf }
    }

    /// Number of bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes the next `n` bytes, or `None` if fewer are left.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let head = self.rest.get(..n)?;
        let tail = self.rest.get(n..)?;
        self.rest = tail;
        Some(head)
    }

    /// Takes the next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(u8::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u16`.
    pub(crate) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u32`.
    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u64`.
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }
}

/// Writes little-endian values into a caller-supplied buffer, front to back.
pub(crate) struct Writer<'a> {
    /// The whole output buffer.
    buf: &'a mut [u8],
    /// Number of bytes written so far.
    pos: usize,
}

impl<'a> Writer<'a> {
    /// Starts writing at the beginning of `buf`.
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    /// Number of bytes written so far.
    pub(crate) fn written(&self) -> usize {
        self.pos
    }

    /// Appends `bytes`, or returns `None` (writing nothing) if they do not fit.
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(bytes.len())?;
        let dst = self.buf.get_mut(self.pos..end)?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Some(())
    }

    /// Appends one byte.
    pub(crate) fn u8(&mut self, v: u8) -> Option<()> {
        self.put(&v.to_le_bytes())
    }

    /// Appends a little-endian `u16`.
    pub(crate) fn u16(&mut self, v: u16) -> Option<()> {
        self.put(&v.to_le_bytes())
    }

    /// Appends a little-endian `u32`.
    pub(crate) fn u32(&mut self, v: u32) -> Option<()> {
        self.put(&v.to_le_bytes())
    }

    /// Appends a little-endian `u64`.
    pub(crate) fn u64(&mut self, v: u64) -> Option<()> {
        self.put(&v.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reads_le_and_stops_at_end() {
        let buf = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16(), Some(0x0302));
        assert_eq!(r.u32(), Some(0x0706_0504));
        assert_eq!(r.remaining(), 8);
        assert_eq!(r.u64(), Some(0x0f0e_0d0c_0b0a_0908));
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.u8(), None);
        assert_eq!(r.take(usize::MAX), None);
    }

    #[test]
    fn reader_short_read_consumes_nothing() {
        let buf = [1u8, 2, 3];
        let mut r = Reader::new(&buf);
        assert_eq!(r.u32(), None);
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.u16(), Some(0x0201));
    }

    #[test]
    fn writer_writes_le_and_refuses_overflow() {
        let mut buf = [0u8; 7];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.u16(0x0201), Some(()));
        assert_eq!(w.u32(0x0605_0403), Some(()));
        assert_eq!(w.u16(0xffff), None);
        assert_eq!(w.written(), 6);
        assert_eq!(w.u8(7), Some(()));
        assert_eq!(w.u8(8), None);
        assert_eq!(w.u64(0), None);
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7]);
    }
}
