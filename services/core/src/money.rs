//! Exact money. Amounts are `rust_decimal::Decimal` US dollars end to end; no float ever touches
//! a price or a cost. On the wire (Avro `decimal(38, 18)`) and in ClickHouse (`Decimal(38, 18)`)
//! an amount is the integer number of 10^-18 dollars, so conversion is exact and never rounds:
//! an amount with more than 18 decimal places is refused instead of being rounded silently.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Decimal places of money on the wire and in ClickHouse.
pub const WIRE_SCALE: u32 = 18;
/// Total decimal digits of money on the wire and in ClickHouse.
pub const WIRE_PRECISION: u32 = 38;

/// An exact amount of US dollars.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Usd(pub Decimal);

/// Why an amount cannot be represented on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount {0} has more than {WIRE_SCALE} decimal places; refusing to round money")]
    TooPrecise(Decimal),
    #[error("amount {0} does not fit Decimal(38, 18)")]
    Overflow(String),
    #[error("decimal bytes of length {0} do not fit 128 bits")]
    BadBytes(usize),
}

impl Usd {
    pub const ZERO: Usd = Usd(Decimal::ZERO);

    /// The amount as an integer count of 10^-18 dollars.
    pub fn to_units(self) -> Result<i128, MoneyError> {
        let mut value = self.0;
        if value.scale() > WIRE_SCALE {
            let normalized = value.normalize();
            if normalized.scale() > WIRE_SCALE {
                return Err(MoneyError::TooPrecise(self.0));
            }
            value = normalized;
        }
        let factor = 10i128.pow(WIRE_SCALE - value.scale());
        value.mantissa().checked_mul(factor).ok_or_else(|| MoneyError::Overflow(self.0.to_string()))
    }

    /// The amount from an integer count of 10^-18 dollars.
    pub fn from_units(units: i128) -> Result<Usd, MoneyError> {
        Decimal::try_from_i128_with_scale(units, WIRE_SCALE)
            .map(|d| Usd(d.normalize()))
            .map_err(|_| MoneyError::Overflow(format!("{units}e-{WIRE_SCALE}")))
    }

    /// Avro `decimal` bytes: the unscaled value as 16 bytes of big-endian two's complement.
    /// Always 16 bytes (not the minimal length) because Avro readers that resolve schemas check
    /// that the byte length can hold the declared precision (38 digits need 16 bytes).
    pub fn to_avro_bytes(self) -> Result<Vec<u8>, MoneyError> {
        Ok(self.to_units()?.to_be_bytes().to_vec())
    }

    /// The inverse of [`Usd::to_avro_bytes`].
    pub fn from_avro_bytes(bytes: &[u8]) -> Result<Usd, MoneyError> {
        if bytes.is_empty() {
            return Ok(Usd::ZERO);
        }
        if bytes.len() > 16 {
            return Err(MoneyError::BadBytes(bytes.len()));
        }
        let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
        let mut buf = [fill; 16];
        buf[16 - bytes.len()..].copy_from_slice(bytes);
        Usd::from_units(i128::from_be_bytes(buf))
    }
}

impl fmt::Debug for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.0)
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.0.normalize())
    }
}

impl FromStr for Usd {
    type Err = rust_decimal::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decimal::from_str_exact(s.trim_start_matches('$')).map(Usd)
    }
}

impl From<Decimal> for Usd {
    fn from(value: Decimal) -> Self {
        Usd(value)
    }
}

/// Serde adapter: [`Usd`] as Avro `decimal(38, 18)` bytes.
pub mod avro_decimal {
    use super::Usd;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};

    pub fn serialize<S: Serializer>(value: &Usd, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = value.to_avro_bytes().map_err(S::Error::custom)?;
        serializer.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Usd, D::Error> {
        let bytes: serde_bytes_like::Bytes = Deserialize::deserialize(deserializer)?;
        Usd::from_avro_bytes(&bytes.0).map_err(D::Error::custom)
    }

    /// `Option<Usd>` as a nullable Avro decimal.
    pub mod option {
        use super::super::Usd;
        use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};

        pub fn serialize<S: Serializer>(value: &Option<Usd>, serializer: S) -> Result<S::Ok, S::Error> {
            match value {
                Some(v) => {
                    let bytes = v.to_avro_bytes().map_err(S::Error::custom)?;
                    serializer.serialize_some(&super::serde_bytes_like::BytesRef(&bytes))
                }
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Usd>, D::Error> {
            let bytes: Option<super::serde_bytes_like::Bytes> = Deserialize::deserialize(deserializer)?;
            bytes.map(|b| Usd::from_avro_bytes(&b.0).map_err(D::Error::custom)).transpose()
        }
    }

    /// Minimal byte-buffer serde helpers (serialize_bytes / visit_bytes).
    pub(crate) mod serde_bytes_like {
        use serde::de::{SeqAccess, Visitor};
        use serde::{Deserialize, Deserializer, Serialize, Serializer};
        use std::fmt;

        pub struct Bytes(pub Vec<u8>);
        pub struct BytesRef<'a>(pub &'a [u8]);

        impl Serialize for BytesRef<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }

        impl<'de> Deserialize<'de> for Bytes {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Bytes;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("decimal bytes")
                    }
                    fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                        Ok(Bytes(v.to_vec()))
                    }
                    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                        Ok(Bytes(v))
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                        let mut out = Vec::new();
                        while let Some(b) = seq.next_element::<u8>()? {
                            out.push(b);
                        }
                        Ok(Bytes(out))
                    }
                }
                deserializer.deserialize_bytes(V)
            }
        }
    }
}

/// Serde adapter: [`Usd`] as an exact decimal string, normalized (`"12.5"`), for JSON APIs.
/// Reading refuses anything but a string (a JSON number may have passed through a float).
pub mod decimal_string {
    use super::Usd;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(value: &Usd, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&value.0.normalize())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Usd, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(D::Error::custom)
    }

    /// `Option<Usd>` as a decimal string or null.
    pub mod option {
        use super::super::Usd;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(value: &Option<Usd>, serializer: S) -> Result<S::Ok, S::Error> {
            match value {
                Some(v) => super::serialize(v, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Usd>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] Usd);
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(v)| v))
        }
    }
}

/// Serde adapter: [`Usd`] as a ClickHouse `Decimal(38, 18)` (an `i128` of 10^-18 dollars).
pub mod ch_decimal {
    use super::Usd;
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _, ser::Error as _};

    pub fn serialize<S: Serializer>(value: &Usd, serializer: S) -> Result<S::Ok, S::Error> {
        value.to_units().map_err(S::Error::custom)?.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Usd, D::Error> {
        Usd::from_units(i128::deserialize(deserializer)?).map_err(D::Error::custom)
    }

    /// `Option<Usd>` as `Nullable(Decimal(38, 18))`.
    pub mod option {
        use super::super::Usd;
        use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _, ser::Error as _};

        pub fn serialize<S: Serializer>(value: &Option<Usd>, serializer: S) -> Result<S::Ok, S::Error> {
            value.map(|v| v.to_units()).transpose().map_err(S::Error::custom)?.serialize(serializer)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Usd>, D::Error> {
            Option::<i128>::deserialize(deserializer)?
                .map(|u| Usd::from_units(u).map_err(D::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(s: &str) -> Usd {
        s.parse().unwrap()
    }

    #[test]
    fn units_are_exact() {
        assert_eq!(usd("0.000000887").to_units().unwrap(), 887_000_000_000);
        assert_eq!(usd("-1.5").to_units().unwrap(), -1_500_000_000_000_000_000);
        assert_eq!(Usd::from_units(887_000_000_000).unwrap(), usd("0.000000887"));
    }

    #[test]
    fn refuses_to_round() {
        let too_fine = Usd(Decimal::from_i128_with_scale(1, 20));
        assert_eq!(too_fine.to_units(), Err(MoneyError::TooPrecise(too_fine.0)));
        // Trailing zeros beyond the scale are not precision.
        let padded = Usd(Decimal::from_i128_with_scale(15_000, 21));
        assert_eq!(padded.to_units().unwrap(), 15);
    }

    #[test]
    fn avro_bytes_are_sixteen_bytes_of_twos_complement() {
        assert_eq!(Usd::ZERO.to_avro_bytes().unwrap(), vec![0; 16]);
        let mut one = vec![0; 16];
        one[15] = 1;
        assert_eq!(Usd::from_units(1).unwrap().to_avro_bytes().unwrap(), one);
        assert_eq!(Usd::from_units(-1).unwrap().to_avro_bytes().unwrap(), vec![0xff; 16]);
        // Shorter (minimal) encodings from other writers are read too.
        assert_eq!(Usd::from_avro_bytes(&[0xff, 0x7f]).unwrap(), Usd::from_units(-129).unwrap());
        assert_eq!(Usd::from_avro_bytes(&[0x00, 0x80]).unwrap(), Usd::from_units(128).unwrap());
    }

    proptest! {
        #[test]
        fn avro_bytes_round_trip(units in -(10i128.pow(28))..10i128.pow(28)) {
            let amount = Usd::from_units(units).unwrap();
            let back = Usd::from_avro_bytes(&amount.to_avro_bytes().unwrap()).unwrap();
            prop_assert_eq!(back, amount);
            prop_assert_eq!(back.to_units().unwrap(), units);
        }
    }
}
