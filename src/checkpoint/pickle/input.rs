//! The bytes of a pickle, read front to back: every read is checked against
//! what is left, so a length field can never make the reader allocate or
//! index past the end.

pub(super) struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub(super) fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, pos: 0 }
    }

    /// The offset of the next byte (for error messages).
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "the pickle ends early (needs {n} bytes at byte {}, has {})",
                    self.pos,
                    self.data.len()
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(super) fn u8(&mut self) -> Result<usize, String> {
        Ok(self.take(1)?[0] as usize)
    }

    pub(super) fn u16(&mut self) -> Result<usize, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }

    pub(super) fn u32(&mut self) -> Result<u64, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")) as u64)
    }

    pub(super) fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// A length-prefixed byte string, the length checked against the data left.
    pub(super) fn bytes(&mut self, len: u64) -> Result<Vec<u8>, String> {
        let n = usize::try_from(len).map_err(|_| format!("length {len} too large"))?;
        Ok(self.take(n)?.to_vec())
    }

    pub(super) fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated text line")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "text line is not UTF-8")?;
        self.pos += n + 1;
        Ok(s.to_string())
    }
}
