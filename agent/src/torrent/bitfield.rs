//! Which pieces a peer (or this node) has: BEP 3's bitfield, high bit of
//! the first byte is piece 0, spare bits at the end zero.

/// A fixed-size set of piece indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// No piece of `len`.
    pub fn new(len: u32) -> Bitfield {
        Bitfield {
            bits: vec![0; len.div_ceil(8) as usize],
            len,
            ones: 0,
        }
    }

    /// Every piece of `len`.
    pub fn full(len: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// From a bitfield message already checked by the wire codec (exact
    /// length, spare bits zero); extra bytes or bits are ignored.
    pub fn from_wire(len: u32, bytes: &[u8]) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            if bytes
                .get((i / 8) as usize)
                .is_some_and(|byte| byte & (0x80 >> (i % 8)) != 0)
            {
                b.set(i);
            }
        }
        b
    }

    /// The message body.
    pub fn as_wire(&self) -> &[u8] {
        &self.bits
    }

    /// Pieces in the torrent.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True for a torrent without pieces.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Pieces set.
    pub fn count(&self) -> u32 {
        self.ones
    }

    /// Every piece set.
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Piece `i` set (false past the end).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Set piece `i`; false if it already was (or is past the end).
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    /// Clear piece `i`; false if it was not set.
    pub fn clear(&mut self, i: u32) -> bool {
        if !self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] &= !(0x80 >> (i % 8));
        self.ones -= 1;
        true
    }

    /// The first index not set, if any.
    pub fn first_missing(&self) -> Option<u32> {
        (0..self.len()).find(|&i| !self.get(i))
    }

    /// The set pieces, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_order_and_counts() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0));
        assert!(b.set(9));
        assert!(!b.set(9));
        assert!(!b.set(10));
        assert_eq!(b.as_wire(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        assert_eq!(Bitfield::from_wire(10, &[0x80, 0x40]), b);
        assert!(b.clear(0));
        assert!(!b.clear(0));
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![9]);
        assert!(Bitfield::full(10).is_full());
        assert_eq!(Bitfield::full(10).as_wire(), &[0xff, 0xc0]);
        assert!(!b.get(100));
    }
}
