//! Reading Avro binary primitives from a byte slice, for decoders written by hand for one schema
//! (see [`super::usage_decoder`]).
//!
//! Each read takes the name of the field it is for, so an error says where the datum went wrong.
//! Every rule matches apache_avro's reader: varints of at most 10 bytes (bits past 64 dropped,
//! as apache_avro drops them), `int`s that must fit an `i32`, lengths that must not be negative,
//! strings that must be UTF-8, booleans that must be 0 or 1, map blocks with a negative count
//! followed by their size in bytes. Nothing here panics on any input: a short datum is an error.

/// Why a datum could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {kind}")]
pub struct DatumError {
    /// The schema field being read.
    pub field: &'static str,
    pub kind: DatumErrorKind,
}

/// What was wrong with the bytes of a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatumErrorKind {
    #[error("the datum ends early ({needed} more bytes needed, {left} left)")]
    Truncated { needed: u64, left: usize },
    #[error("a variable-length integer is longer than 10 bytes")]
    VarintTooLong,
    #[error("{0} does not fit an Avro int (32 bits)")]
    IntOutOfRange(i64),
    #[error("length {0} is negative")]
    NegativeLength(i64),
    #[error("the string is not UTF-8")]
    InvalidUtf8,
    #[error("{text:?} is not a UUID: {reason}")]
    InvalidUuid { text: String, reason: String },
    #[error("byte {0} is not a boolean (0 or 1)")]
    InvalidBool(u8),
    #[error("union branch {index} does not exist (the union has {branches})")]
    UnionBranch { index: i64, branches: usize },
    #[error("enum symbol {index} does not exist (the enum has {symbols})")]
    EnumSymbol { index: i64, symbols: usize },
}

/// The unread rest of a datum.
#[derive(Debug)]
pub struct Datum<'a> {
    rest: &'a [u8],
}

impl<'a> Datum<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Datum { rest: bytes }
    }

    /// What has not been read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    fn take(&mut self, field: &'static str, n: u64) -> Result<&'a [u8], DatumError> {
        match usize::try_from(n).ok().filter(|&n| n <= self.rest.len()) {
            Some(n) => {
                let (taken, rest) = self.rest.split_at(n);
                self.rest = rest;
                Ok(taken)
            }
            None => Err(DatumError {
                field,
                kind: DatumErrorKind::Truncated { needed: n, left: self.rest.len() },
            }),
        }
    }

    /// A zigzag varint `long`.
    pub fn long(&mut self, field: &'static str) -> Result<i64, DatumError> {
        let mut raw = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        let kind = match self.rest.len() >= 10 {
            true => DatumErrorKind::VarintTooLong,
            false => DatumErrorKind::Truncated { needed: 1, left: 0 },
        };
        Err(DatumError { field, kind })
    }

    /// A zigzag varint `int`.
    pub fn int(&mut self, field: &'static str) -> Result<i32, DatumError> {
        let value = self.long(field)?;
        i32::try_from(value).map_err(|_| DatumError { field, kind: DatumErrorKind::IntOutOfRange(value) })
    }

    pub fn boolean(&mut self, field: &'static str) -> Result<bool, DatumError> {
        match self.take(field, 1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DatumError { field, kind: DatumErrorKind::InvalidBool(other) }),
        }
    }

    /// A `string`, borrowed from the datum.
    pub fn str(&mut self, field: &'static str) -> Result<&'a str, DatumError> {
        let len = self.long(field)?;
        let len = u64::try_from(len)
            .map_err(|_| DatumError { field, kind: DatumErrorKind::NegativeLength(len) })?;
        let bytes = self.take(field, len)?;
        std::str::from_utf8(bytes).map_err(|_| DatumError { field, kind: DatumErrorKind::InvalidUtf8 })
    }

    pub fn string(&mut self, field: &'static str) -> Result<String, DatumError> {
        self.str(field).map(str::to_owned)
    }

    /// A string holding a UUID (logical type `uuid`), in any form `Uuid::parse_str` accepts.
    pub fn uuid(&mut self, field: &'static str) -> Result<uuid::Uuid, DatumError> {
        let text = self.str(field)?;
        uuid::Uuid::parse_str(text).map_err(|e| DatumError {
            field,
            kind: DatumErrorKind::InvalidUuid { text: text.to_owned(), reason: e.to_string() },
        })
    }

    /// The branch index of a union of `branches` branches.
    pub fn branch(&mut self, field: &'static str, branches: usize) -> Result<usize, DatumError> {
        let index = self.int(field)?;
        usize::try_from(index)
            .ok()
            .filter(|&i| i < branches)
            .ok_or(DatumError { field, kind: DatumErrorKind::UnionBranch { index: index.into(), branches } })
    }

    /// `["null", T]`: whether a `T` follows.
    pub fn present(&mut self, field: &'static str) -> Result<bool, DatumError> {
        Ok(self.branch(field, 2)? == 1)
    }

    /// `["null", "string"]`.
    pub fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, DatumError> {
        match self.present(field)? {
            true => self.string(field).map(Some),
            false => Ok(None),
        }
    }

    /// `["null", "long"]`.
    pub fn opt_long(&mut self, field: &'static str) -> Result<Option<i64>, DatumError> {
        match self.present(field)? {
            true => self.long(field).map(Some),
            false => Ok(None),
        }
    }

    /// An enum's symbol, picked from `symbols` (listed in the schema's order).
    pub fn symbol<T: Copy>(&mut self, field: &'static str, symbols: &[T]) -> Result<T, DatumError> {
        let index = self.int(field)?;
        usize::try_from(index).ok().and_then(|i| symbols.get(i).copied()).ok_or(DatumError {
            field,
            kind: DatumErrorKind::EnumSymbol { index: index.into(), symbols: symbols.len() },
        })
    }

    /// The item count of the next block of an array or map; 0 at the end. A negative count is
    /// followed by the block's size in bytes, which is read and not needed.
    pub fn block(&mut self, field: &'static str) -> Result<u64, DatumError> {
        let count = self.long(field)?;
        if count < 0 {
            self.long(field)?;
        }
        Ok(count.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zigzag(value: i64) -> Vec<u8> {
        let mut z = ((value << 1) ^ (value >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return out;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    #[test]
    fn longs_read_back_and_bad_varints_are_errors() {
        for value in [0, 1, -1, 63, -64, 64, i64::from(i32::MAX), i64::MIN, i64::MAX] {
            let bytes = zigzag(value);
            let mut datum = Datum::new(&bytes);
            assert_eq!(datum.long("f"), Ok(value));
            assert!(datum.rest().is_empty());
        }
        let eleven = [0x80u8; 11];
        assert_eq!(Datum::new(&eleven).long("f").unwrap_err().kind, DatumErrorKind::VarintTooLong);
        let short = [0x80u8, 0x80];
        assert!(matches!(Datum::new(&short).long("f").unwrap_err().kind, DatumErrorKind::Truncated { .. }));
        assert!(matches!(Datum::new(&[]).long("f").unwrap_err().kind, DatumErrorKind::Truncated { .. }));
        let big = zigzag(i64::from(i32::MAX) + 1);
        assert_eq!(Datum::new(&big).int("f").unwrap_err().kind, DatumErrorKind::IntOutOfRange(1 << 31));
    }

    #[test]
    fn strings_check_length_and_utf8() {
        let mut bytes = zigzag(3);
        bytes.extend_from_slice(b"abc");
        assert_eq!(Datum::new(&bytes).str("f"), Ok("abc"));
        let error = Datum::new(&bytes[..3]).str("f").unwrap_err();
        assert_eq!(error.kind, DatumErrorKind::Truncated { needed: 3, left: 2 });
        assert_eq!(error.to_string(), "field f: the datum ends early (3 more bytes needed, 2 left)");
        assert_eq!(Datum::new(&zigzag(-2)).str("f").unwrap_err().kind, DatumErrorKind::NegativeLength(-2));
        let huge = zigzag(i64::MAX);
        assert!(matches!(Datum::new(&huge).str("f").unwrap_err().kind, DatumErrorKind::Truncated { .. }));
        let mut bad = zigzag(1);
        bad.push(0xff);
        assert_eq!(Datum::new(&bad).str("f").unwrap_err().kind, DatumErrorKind::InvalidUtf8);
    }

    #[test]
    fn unions_enums_and_booleans_are_bounded() {
        assert_eq!(
            Datum::new(&zigzag(2)).branch("f", 2).unwrap_err().kind,
            DatumErrorKind::UnionBranch { index: 2, branches: 2 }
        );
        assert!(Datum::new(&zigzag(-1)).present("f").is_err());
        assert_eq!(Datum::new(&zigzag(1)).symbol("f", &['a', 'b']), Ok('b'));
        assert!(Datum::new(&zigzag(2)).symbol("f", &['a', 'b']).is_err());
        assert_eq!(Datum::new(&[2]).boolean("f").unwrap_err().kind, DatumErrorKind::InvalidBool(2));
        let mut block = zigzag(-2);
        block.extend(zigzag(10));
        assert_eq!(Datum::new(&block).block("f"), Ok(2));
    }
}
