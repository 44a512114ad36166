//! HPACK decoding (RFC 7541) for one direction of an HTTP/2 connection, with a dynamic table
//! that may hold entries the decoder never saw: the connection began before the window, or a
//! header block was lost on the way. Those entries are unknown, and so is every field coded
//! against them: `None`, never a guess. Entries inserted while the decoder watched are known
//! and are always the newest, so an index either lands on a known entry or past them.
//!
//! Eviction can only be approximated once unknown entries (of unknown size) are in the table,
//! so this table errs on keeping: it evicts by the largest size the encoder announced (at
//! least the protocol's 4,096 bytes) and counts unknown parts as empty. A table that keeps
//! more than the encoder's holds the encoder's as its newest entries, which is all an index
//! can reach.

use std::collections::VecDeque;

use super::huffman::{self, STATIC_TABLE};

/// SETTINGS_HEADER_TABLE_SIZE's default.
const DEFAULT_TABLE: usize = 4096;
/// A table larger than this is not kept (memory per connection direction is bounded).
const MAX_TABLE: usize = 64 * 1024;
/// Per-entry overhead (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;
/// Strings longer than this are not kept as values (the decoder still steps over them).
const MAX_STRING: usize = 16 * 1024;

/// A header field as decoded: name and value, each `None` where it came from an unknown entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// The block ended inside a field.
    Truncated,
    /// Not HPACK: a bad Huffman string, an integer too large, an index past a complete table.
    Invalid,
}

#[derive(Debug)]
pub struct Decoder {
    /// Newest first.
    entries: VecDeque<Field>,
    size: usize,
    limit: usize,
    /// Entries older than the known ones may exist.
    partial: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder that saw the connection from its start.
    pub fn new() -> Self {
        Decoder {
            entries: VecDeque::new(),
            size: 0,
            limit: DEFAULT_TABLE,
            partial: false,
        }
    }

    /// A decoder that joins a connection already under way.
    pub fn joined() -> Self {
        Decoder {
            partial: true,
            ..Decoder::new()
        }
    }

    /// Everything before this point is unknown from now on (a block was lost): the entries
    /// it may have inserted shift every known one by an unknown count, so none stays known.
    pub fn lose_history(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.partial = true;
    }

    /// Decodes one complete header block. On an error the table may have missed an update:
    /// the decoder marks its history unknown before returning it.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, Error> {
        let r = self.decode_inner(block);
        if r.is_err() {
            self.lose_history();
        }
        r
    }

    fn decode_inner(&mut self, block: &[u8]) -> Result<Vec<Field>, Error> {
        let mut fields = Vec::new();
        let mut at = 0;
        while at < block.len() {
            let b = block[at];
            if b & 0x80 != 0 {
                // Indexed field.
                let index = integer(block, &mut at, 7)?;
                fields.push(self.lookup(index)?);
            } else if b & 0xc0 == 0x40 {
                // Literal with incremental indexing: it enters the table.
                let field = self.literal(block, &mut at, 6)?;
                self.insert(field.clone());
                fields.push(field);
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update.
                let size = integer(block, &mut at, 5)?;
                self.limit = size.clamp(DEFAULT_TABLE, MAX_TABLE).max(self.limit);
                self.evict();
            } else {
                // Literal without indexing, or never indexed.
                fields.push(self.literal(block, &mut at, 4)?);
            }
        }
        Ok(fields)
    }

    fn literal(&self, block: &[u8], at: &mut usize, prefix: u8) -> Result<Field, Error> {
        let index = integer(block, at, prefix)?;
        let name = if index == 0 {
            Some(string(block, at)?)
        } else {
            self.lookup(index)?.name
        };
        let value = Some(string(block, at)?);
        Ok(Field { name, value })
    }

    fn lookup(&self, index: usize) -> Result<Field, Error> {
        match index {
            0 => Err(Error::Invalid),
            1..=61 => {
                let (name, value) = STATIC_TABLE[index - 1];
                Ok(Field {
                    name: Some(name.as_bytes().to_vec()),
                    value: Some(value.as_bytes().to_vec()),
                })
            }
            _ => match self.entries.get(index - 62) {
                Some(field) => Ok(field.clone()),
                None if self.partial => Ok(Field {
                    name: None,
                    value: None,
                }),
                None => Err(Error::Invalid),
            },
        }
    }

    fn insert(&mut self, field: Field) {
        self.size += entry_size(&field);
        self.entries.push_front(field);
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.limit {
            match self.entries.pop_back() {
                Some(old) => self.size -= entry_size(&old),
                None => break,
            }
        }
    }
}

fn entry_size(f: &Field) -> usize {
    f.name.as_ref().map_or(0, Vec::len) + f.value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541 §5.1).
fn integer(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, Error> {
    let max = (1usize << prefix) - 1;
    let first = *block.get(*at).ok_or(Error::Truncated)? as usize & max;
    *at += 1;
    if first < max {
        return Ok(first);
    }
    let mut value = max;
    let mut shift = 0;
    loop {
        let b = *block.get(*at).ok_or(Error::Truncated)? as usize;
        *at += 1;
        if shift > 28 {
            return Err(Error::Invalid);
        }
        value += (b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// A string literal: Huffman-coded or raw (RFC 7541 §5.2).
fn string(block: &[u8], at: &mut usize) -> Result<Vec<u8>, Error> {
    let huffman = *block.get(*at).ok_or(Error::Truncated)? & 0x80 != 0;
    let len = integer(block, at, 7)?;
    let end = at.checked_add(len).ok_or(Error::Invalid)?;
    let bytes = block.get(*at..end).ok_or(Error::Truncated)?;
    *at = end;
    if len > MAX_STRING {
        return Ok(Vec::new());
    }
    if huffman {
        huffman::decode(bytes).ok_or(Error::Invalid)
    } else {
        Ok(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn text(fields: &[Field]) -> Vec<(String, String)> {
        let s = |v: &Option<Vec<u8>>| {
            v.as_ref()
                .map_or("?".into(), |v| String::from_utf8_lossy(v).into())
        };
        fields.iter().map(|f| (s(&f.name), s(&f.value))).collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// RFC 7541 C.4: three requests on one connection, Huffman-coded, the dynamic table
    /// carried from one to the next.
    #[test]
    fn decodes_the_rfc_request_sequence() {
        let mut d = Decoder::new();
        let first = d
            .decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
            .unwrap();
        assert_eq!(
            text(&first),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        let second = d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(
            text(&second),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        let third = d
            .decode(&hex(
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ))
            .unwrap();
        assert_eq!(
            text(&third),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
    }

    /// The same second request decoded by a decoder that missed the first: the field that
    /// refers to the first request's entry is unknown, the rest exact.
    #[test]
    fn a_decoder_that_joined_late_says_unknown_never_guesses() {
        let mut d = Decoder::joined();
        let second = d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(
            text(&second),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("?", "?"),
                ("cache-control", "no-cache")
            ])
        );
        // A decoder that saw everything treats the same reference as corrupt state.
        assert_eq!(
            Decoder::new().decode(&hex("8286 84be")),
            Err(Error::Invalid)
        );
        assert_eq!(
            Decoder::new().decode(&hex("41 8cf1")),
            Err(Error::Truncated)
        );
    }

    /// RFC 7541 C.6: responses with a 256-byte table, so entries are evicted.
    #[test]
    fn evicts_as_the_encoder_does() {
        let mut d = Decoder::new();
        d.limit = 256;
        d.decode(&hex(
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        ))
        .unwrap();
        let second = d.decode(&hex("4883 640e ffc1 c0bf")).unwrap();
        assert_eq!(
            text(&second),
            pairs(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ])
        );
        assert_eq!(d.entries.len(), 4);
    }
}
