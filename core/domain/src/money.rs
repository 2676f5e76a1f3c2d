//! Money in integer minor units (cents), currencies, and exact decimal quantities such as
//! percentages and labour hours. No floating point is used for arithmetic anywhere.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An amount in minor units of some currency (e.g. cents). Arithmetic is checked: an overflow
/// is an error, never a wrapped value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = i64, example = 12550)]
pub struct Money(i64);

/// An arithmetic result that does not fit in the range of [`Money`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("amount is out of range")]
pub struct Overflow;

impl Money {
    /// Zero.
    pub const ZERO: Money = Money(0);

    /// An amount of `minor` units (cents).
    pub const fn from_minor(minor: i64) -> Self {
        Money(minor)
    }

    /// The amount in minor units.
    pub const fn minor(self) -> i64 {
        self.0
    }

    /// `self + other`, or [`Overflow`].
    pub fn checked_add(self, other: Money) -> Result<Money, Overflow> {
        self.0.checked_add(other.0).map(Money).ok_or(Overflow)
    }

    /// `self - other`, or [`Overflow`].
    pub fn checked_sub(self, other: Money) -> Result<Money, Overflow> {
        self.0.checked_sub(other.0).map(Money).ok_or(Overflow)
    }

    /// `self × quantity`, or [`Overflow`].
    pub fn checked_mul(self, quantity: i64) -> Result<Money, Overflow> {
        self.0.checked_mul(quantity).map(Money).ok_or(Overflow)
    }

    /// `self × hundredths / 100`, rounded half away from zero (commercial rounding), e.g. a
    /// rate per hour times 2.5 hours, or an amount times a percentage in basis points / 100.
    pub fn mul_hundredths(self, factor: Hundredths) -> Result<Money, Overflow> {
        mul_div_round(self.0, factor.0, 100).map(Money)
    }

    /// `self × percent`, rounded half away from zero.
    pub fn percent_of(self, percent: Hundredths) -> Result<Money, Overflow> {
        mul_div_round(self.0, percent.0, 10_000).map(Money)
    }
}

/// `a × b / d` in 128-bit arithmetic, rounded half away from zero; `d` must be positive.
fn mul_div_round(a: i64, b: i64, d: i64) -> Result<i64, Overflow> {
    let product = i128::from(a) * i128::from(b);
    let d = i128::from(d);
    let half = d / 2;
    let rounded = if product >= 0 { (product + half) / d } else { (product - half) / d };
    i64::try_from(rounded).map_err(|_| Overflow)
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

/// An ISO 4217 currency code: three upper-case ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, example = "EUR")]
pub struct Currency(String);

impl Currency {
    /// Parses a code such as `EUR` (case-insensitive on input, stored upper-case).
    pub fn parse(code: &str) -> Result<Self, String> {
        let code = code.trim().to_ascii_uppercase();
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(code))
        } else {
            Err("must be a three-letter ISO 4217 currency code such as EUR".into())
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Currency {
    fn default() -> Self {
        Currency("EUR".into())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An exact decimal with two fractional digits, kept as an integer count of hundredths:
/// percentages (12.5 % is 1250) and labour hours (2.25 h is 225). On the wire it is a plain JSON
/// number; more than two decimals are refused rather than rounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, utoipa::ToSchema)]
#[schema(value_type = f64, example = 12.5)]
pub struct Hundredths(i64);

impl Hundredths {
    /// `n / 100`.
    pub const fn from_hundredths(n: i64) -> Self {
        Hundredths(n)
    }

    /// The count of hundredths.
    pub const fn hundredths(self) -> i64 {
        self.0
    }

    /// Parses a decimal string such as `12.5` or `-3`; at most two fractional digits.
    pub fn parse(text: &str) -> Result<Self, String> {
        let err = || format!("`{text}` must be a number with at most two decimals");
        let (neg, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let int: i64 = int.parse().map_err(|_| err())?;
        let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| err())?;
        let value = int.checked_mul(100).and_then(|v| v.checked_add(frac)).ok_or_else(err)?;
        Ok(Hundredths(if neg { -value } else { value }))
    }
}

impl fmt::Display for Hundredths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        match abs % 100 {
            0 => write!(f, "{sign}{}", abs / 100),
            n if n % 10 == 0 => write!(f, "{sign}{}.{}", abs / 100, n / 10),
            n => write!(f, "{sign}{}.{n:02}", abs / 100),
        }
    }
}

impl Serialize for Hundredths {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The decimal text is exact; serde_json's arbitrary precision is not enabled, so go
        // through the shortest float that prints back as the same text.
        let value: f64 = self.to_string().parse().map_err(serde::ser::Error::custom)?;
        s.serialize_f64(value)
    }
}

impl<'de> Deserialize<'de> for Hundredths {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let number = serde_json::Number::deserialize(d)?;
        Hundredths::parse(&number.to_string()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn percent_rounds_half_away_from_zero() {
        assert_eq!(Money::from_minor(1_005).percent_of(Hundredths(1_000)).unwrap(), Money(101)); // 100.5 -> 101
        assert_eq!(Money::from_minor(1_004).percent_of(Hundredths(1_000)).unwrap(), Money(100)); // 100.4 -> 100
        assert_eq!(Money::from_minor(-1_005).percent_of(Hundredths(1_000)).unwrap(), Money(-101));
        assert_eq!(Money::from_minor(3_000).mul_hundredths(Hundredths(250)).unwrap(), Money(7_500));
    }

    #[test]
    fn hundredths_parse_and_print_exactly() {
        assert_eq!(Hundredths::parse("12.5").unwrap(), Hundredths(1_250));
        assert_eq!(Hundredths::parse("0.07").unwrap(), Hundredths(7));
        assert_eq!(Hundredths::parse("-3").unwrap(), Hundredths(-300));
        assert!(Hundredths::parse("1.005").is_err());
        assert!(Hundredths::parse("1e3").is_err());
        assert_eq!(serde_json::to_string(&Hundredths(7)).unwrap(), "0.07");
        assert_eq!(serde_json::from_str::<Hundredths>("12.50").unwrap(), Hundredths(1_250));
    }

    #[test]
    fn currency_codes() {
        assert_eq!(Currency::parse("eur").unwrap().as_str(), "EUR");
        assert!(Currency::parse("EURO").is_err());
        assert!(Currency::parse("E1R").is_err());
    }

    #[test]
    fn overflow_is_an_error() {
        assert_eq!(Money(i64::MAX).checked_add(Money(1)), Err(Overflow));
        assert_eq!(Money(i64::MAX).checked_mul(2), Err(Overflow));
        assert_eq!(Money(i64::MAX).percent_of(Hundredths(20_000)), Err(Overflow));
    }

    proptest! {
        #[test]
        fn hundredths_round_trip_through_json(n in -10_000_000_000i64..10_000_000_000) {
            let h = Hundredths(n);
            let json = serde_json::to_string(&h).unwrap();
            prop_assert_eq!(serde_json::from_str::<Hundredths>(&json).unwrap(), h);
        }

        #[test]
        fn percentage_matches_exact_rational_rounding(amount in -1_000_000_000i64..1_000_000_000, bps in 0i64..=10_000) {
            let got = Money(amount).percent_of(Hundredths(bps)).unwrap().minor();
            // Exact: amount*bps/10000 lies within half a cent of the result.
            let exact_times_10000 = i128::from(amount) * i128::from(bps);
            let diff = (i128::from(got) * 10_000 - exact_times_10000).abs();
            prop_assert!(diff <= 5_000);
            if diff == 5_000 { // ties go away from zero
                prop_assert!(i128::from(got).abs() * 10_000 > exact_times_10000.abs());
            }
        }

        #[test]
        fn addition_is_exact_or_overflows(a in any::<i64>(), b in any::<i64>()) {
            match Money(a).checked_add(Money(b)) {
                Ok(sum) => prop_assert_eq!(i128::from(sum.minor()), i128::from(a) + i128::from(b)),
                Err(Overflow) => prop_assert!(i128::from(a) + i128::from(b) > i128::from(i64::MAX) || i128::from(a) + i128::from(b) < i128::from(i64::MIN)),
            }
        }

        #[test]
        fn display_shows_two_decimals(n in any::<i64>()) {
            let text = Money(n).to_string();
            let (int, frac) = text.rsplit_once('.').unwrap();
            prop_assert_eq!(frac.len(), 2);
            let back = i128::from(int.trim_start_matches('-').parse::<u64>().unwrap()) * 100 + i128::from(frac.parse::<u8>().unwrap());
            prop_assert_eq!(if n < 0 { -back } else { back }, i128::from(n));
        }
    }
}
