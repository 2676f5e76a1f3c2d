//! Reading a phone number as a channel delivers it into E.164 with only each region's dialling
//! codes (country calling code, international prefix, national trunk prefix), not the full
//! numbering plan.
//!
//! [`PhoneE164::parse`](crate::contact::PhoneE164::parse) checks a number against
//! libphonenumber's numbering plan: right when a contact is saved, but it costs 5–10 µs natively
//! and about 100 ms of table building on first use in WebAssembly. Matching an inbound sender
//! needs less: its key only has to equal a contact's stored E.164 form, so [`e164`] rewrites
//! the prefixes and leaves validation to that equality (a number that does not exist matches no
//! contact). Tests check [`REGIONS`] against the `phonenumber` crate's metadata and [`e164`]
//! against `PhoneE164::parse` on libphonenumber's example numbers for every region.

use crate::contact::{Region, SEPARATORS};

/// Every region's dialling codes, sorted by region: ISO 3166 code, country calling code,
/// international prefix when it is plain digits (otherwise ""), national trunk prefix (or "").
/// Generated from libphonenumber's `PhoneNumberMetadata.xml` (the version the `phonenumber`
/// crate carries). Fixed-size records, no pointers: the table is small in a WebAssembly rule.
const REGIONS: &[Dialling] = &[
    d("AC", 247, "00", ""),
    d("AD", 376, "00", ""),
    d("AE", 971, "00", "0"),
    d("AF", 93, "00", "0"),
    d("AG", 1, "011", "1"),
    d("AI", 1, "011", "1"),
    d("AL", 355, "00", "0"),
    d("AM", 374, "00", "0"),
    d("AO", 244, "00", ""),
    d("AR", 54, "00", "0"),
    d("AS", 1, "011", "1"),
    d("AT", 43, "00", "0"),
    d("AU", 61, "0011", "0"),
    d("AW", 297, "00", ""),
    d("AX", 358, "00", "0"),
    d("AZ", 994, "00", "0"),
    d("BA", 387, "00", "0"),
    d("BB", 1, "011", "1"),
    d("BD", 880, "00", "0"),
    d("BE", 32, "00", "0"),
    d("BF", 226, "00", ""),
    d("BG", 359, "00", "0"),
    d("BH", 973, "00", ""),
    d("BI", 257, "00", ""),
    d("BJ", 229, "00", ""),
    d("BL", 590, "00", "0"),
    d("BM", 1, "011", "1"),
    d("BN", 673, "00", ""),
    d("BO", 591, "", "0"),
    d("BQ", 599, "00", ""),
    d("BR", 55, "", "0"),
    d("BS", 1, "011", "1"),
    d("BT", 975, "00", ""),
    d("BW", 267, "00", ""),
    d("BY", 375, "810", "8"),
    d("BZ", 501, "00", ""),
    d("CA", 1, "011", "1"),
    d("CC", 61, "0011", "0"),
    d("CD", 243, "00", "0"),
    d("CF", 236, "00", ""),
    d("CG", 242, "00", ""),
    d("CH", 41, "00", "0"),
    d("CI", 225, "00", ""),
    d("CK", 682, "00", ""),
    d("CL", 56, "", ""),
    d("CM", 237, "00", ""),
    d("CN", 86, "00", "0"),
    d("CO", 57, "", "0"),
    d("CR", 506, "00", ""),
    d("CU", 53, "119", "0"),
    d("CV", 238, "0", ""),
    d("CW", 599, "00", ""),
    d("CX", 61, "0011", "0"),
    d("CY", 357, "00", ""),
    d("CZ", 420, "00", ""),
    d("DE", 49, "00", "0"),
    d("DJ", 253, "00", ""),
    d("DK", 45, "00", ""),
    d("DM", 1, "011", "1"),
    d("DO", 1, "011", "1"),
    d("DZ", 213, "00", "0"),
    d("EC", 593, "00", "0"),
    d("EE", 372, "00", ""),
    d("EG", 20, "00", "0"),
    d("EH", 212, "00", "0"),
    d("ER", 291, "00", "0"),
    d("ES", 34, "00", ""),
    d("ET", 251, "00", "0"),
    d("FI", 358, "00", "0"),
    d("FJ", 679, "00", ""),
    d("FK", 500, "00", ""),
    d("FM", 691, "00", ""),
    d("FO", 298, "00", ""),
    d("FR", 33, "00", "0"),
    d("GA", 241, "00", ""),
    d("GB", 44, "00", "0"),
    d("GD", 1, "011", "1"),
    d("GE", 995, "00", "0"),
    d("GF", 594, "00", "0"),
    d("GG", 44, "00", "0"),
    d("GH", 233, "00", "0"),
    d("GI", 350, "00", ""),
    d("GL", 299, "00", ""),
    d("GM", 220, "00", ""),
    d("GN", 224, "00", ""),
    d("GP", 590, "00", "0"),
    d("GQ", 240, "00", ""),
    d("GR", 30, "00", ""),
    d("GT", 502, "00", ""),
    d("GU", 1, "011", "1"),
    d("GW", 245, "00", ""),
    d("GY", 592, "001", ""),
    d("HK", 852, "00", ""),
    d("HN", 504, "00", ""),
    d("HR", 385, "00", "0"),
    d("HT", 509, "00", ""),
    d("HU", 36, "00", "06"),
    d("ID", 62, "", "0"),
    d("IE", 353, "00", "0"),
    d("IL", 972, "", "0"),
    d("IM", 44, "00", "0"),
    d("IN", 91, "00", "0"),
    d("IO", 246, "00", ""),
    d("IQ", 964, "00", "0"),
    d("IR", 98, "00", "0"),
    d("IS", 354, "00", ""),
    d("IT", 39, "00", ""),
    d("JE", 44, "00", "0"),
    d("JM", 1, "011", "1"),
    d("JO", 962, "00", "0"),
    d("JP", 81, "010", "0"),
    d("KE", 254, "000", "0"),
    d("KG", 996, "00", "0"),
    d("KH", 855, "", "0"),
    d("KI", 686, "00", "0"),
    d("KM", 269, "00", ""),
    d("KN", 1, "011", "1"),
    d("KP", 850, "", "0"),
    d("KR", 82, "", "0"),
    d("KW", 965, "00", ""),
    d("KY", 1, "011", "1"),
    d("KZ", 7, "810", "8"),
    d("LA", 856, "00", "0"),
    d("LB", 961, "00", "0"),
    d("LC", 1, "011", "1"),
    d("LI", 423, "00", "0"),
    d("LK", 94, "00", "0"),
    d("LR", 231, "00", "0"),
    d("LS", 266, "00", ""),
    d("LT", 370, "00", "0"),
    d("LU", 352, "00", ""),
    d("LV", 371, "00", ""),
    d("LY", 218, "00", "0"),
    d("MA", 212, "00", "0"),
    d("MC", 377, "00", "0"),
    d("MD", 373, "00", "0"),
    d("ME", 382, "00", "0"),
    d("MF", 590, "00", "0"),
    d("MG", 261, "00", "0"),
    d("MH", 692, "011", "1"),
    d("MK", 389, "00", "0"),
    d("ML", 223, "00", ""),
    d("MM", 95, "00", "0"),
    d("MN", 976, "001", "0"),
    d("MO", 853, "00", ""),
    d("MP", 1, "011", "1"),
    d("MQ", 596, "00", "0"),
    d("MR", 222, "00", ""),
    d("MS", 1, "011", "1"),
    d("MT", 356, "00", ""),
    d("MU", 230, "020", ""),
    d("MV", 960, "00", ""),
    d("MW", 265, "00", "0"),
    d("MX", 52, "00", ""),
    d("MY", 60, "00", "0"),
    d("MZ", 258, "00", ""),
    d("NA", 264, "00", "0"),
    d("NC", 687, "00", ""),
    d("NE", 227, "00", ""),
    d("NF", 672, "00", ""),
    d("NG", 234, "009", "0"),
    d("NI", 505, "00", ""),
    d("NL", 31, "00", "0"),
    d("NO", 47, "00", ""),
    d("NP", 977, "00", "0"),
    d("NR", 674, "00", ""),
    d("NU", 683, "00", ""),
    d("NZ", 64, "00", "0"),
    d("OM", 968, "00", ""),
    d("PA", 507, "00", ""),
    d("PE", 51, "00", "0"),
    d("PF", 689, "00", ""),
    d("PG", 675, "00", ""),
    d("PH", 63, "00", "0"),
    d("PK", 92, "00", "0"),
    d("PL", 48, "00", ""),
    d("PM", 508, "00", "0"),
    d("PR", 1, "011", "1"),
    d("PS", 970, "00", "0"),
    d("PT", 351, "00", ""),
    d("PW", 680, "", ""),
    d("PY", 595, "00", "0"),
    d("QA", 974, "00", ""),
    d("RE", 262, "00", "0"),
    d("RO", 40, "00", "0"),
    d("RS", 381, "00", "0"),
    d("RU", 7, "810", "8"),
    d("RW", 250, "00", "0"),
    d("SA", 966, "00", "0"),
    d("SB", 677, "", ""),
    d("SC", 248, "00", ""),
    d("SD", 249, "00", "0"),
    d("SE", 46, "00", "0"),
    d("SG", 65, "", ""),
    d("SH", 290, "00", ""),
    d("SI", 386, "00", "0"),
    d("SJ", 47, "00", ""),
    d("SK", 421, "00", "0"),
    d("SL", 232, "00", "0"),
    d("SM", 378, "00", ""),
    d("SN", 221, "00", ""),
    d("SO", 252, "00", "0"),
    d("SR", 597, "00", ""),
    d("SS", 211, "00", "0"),
    d("ST", 239, "00", ""),
    d("SV", 503, "00", ""),
    d("SX", 1, "011", "1"),
    d("SY", 963, "00", "0"),
    d("SZ", 268, "00", ""),
    d("TA", 290, "00", ""),
    d("TC", 1, "011", "1"),
    d("TD", 235, "00", ""),
    d("TG", 228, "00", ""),
    d("TH", 66, "", "0"),
    d("TJ", 992, "810", ""),
    d("TK", 690, "00", ""),
    d("TL", 670, "00", ""),
    d("TM", 993, "810", "8"),
    d("TN", 216, "00", ""),
    d("TO", 676, "00", ""),
    d("TR", 90, "00", "0"),
    d("TT", 1, "011", "1"),
    d("TV", 688, "00", ""),
    d("TW", 886, "", "0"),
    d("TZ", 255, "", "0"),
    d("UA", 380, "00", "0"),
    d("UG", 256, "", "0"),
    d("US", 1, "011", "1"),
    d("UY", 598, "00", "0"),
    d("UZ", 998, "00", ""),
    d("VA", 39, "00", ""),
    d("VC", 1, "011", "1"),
    d("VE", 58, "00", "0"),
    d("VG", 1, "011", "1"),
    d("VI", 1, "011", "1"),
    d("VN", 84, "00", "0"),
    d("VU", 678, "00", ""),
    d("WF", 681, "00", ""),
    d("WS", 685, "0", ""),
    d("XK", 383, "00", "0"),
    d("YE", 967, "00", "0"),
    d("YT", 262, "00", "0"),
    d("ZA", 27, "00", "0"),
    d("ZM", 260, "00", "0"),
    d("ZW", 263, "00", "0"),
];

/// One region's dialling codes.
#[derive(Debug)]
struct Dialling {
    region: [u8; 2],
    calling_code: u16,
    international_prefix: Prefix,
    national_prefix: Prefix,
}

/// Up to four digits.
#[derive(Debug)]
struct Prefix {
    digits: [u8; 4],
    len: u8,
}

impl Prefix {
    fn as_str(&self) -> &str {
        // Only ASCII digits are stored (see `d`).
        std::str::from_utf8(&self.digits[..usize::from(self.len)]).unwrap_or("")
    }
}

/// A table row (checked at compile time: two-letter region, prefixes of at most four digits).
const fn d(region: &str, calling_code: u16, international_prefix: &str, national_prefix: &str) -> Dialling {
    let region = region.as_bytes();
    assert!(region.len() == 2);
    Dialling {
        region: [region[0], region[1]],
        calling_code,
        international_prefix: prefix(international_prefix),
        national_prefix: prefix(national_prefix),
    }
}

const fn prefix(text: &str) -> Prefix {
    let bytes = text.as_bytes();
    assert!(bytes.len() <= 4);
    let mut digits = [0u8; 4];
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i].is_ascii_digit());
        digits[i] = bytes[i];
        i += 1;
    }
    Prefix { digits, len: bytes.len() as u8 }
}

/// E.164 needs at least this many digits after the `+` to be a subscriber number anywhere.
const MIN_DIGITS: usize = 7;
/// E.164 allows at most 15 digits.
const MAX_DIGITS: usize = 15;

/// The dialling codes of `region`.
fn codes(region: Region) -> Option<&'static Dialling> {
    REGIONS.binary_search_by(|entry| entry.region.as_slice().cmp(region.code().as_bytes())).ok().map(|i| &REGIONS[i])
}

/// Whether `region` has a numbering plan (is in the table).
pub(crate) fn is_known(region: Region) -> bool {
    codes(region).is_some()
}

/// `number` in E.164 (`+306941234567`), read as dialled in `region`: with `+`, `00` or the
/// region's own international prefix it is international; otherwise it is national, and loses
/// the region's trunk prefix (`0`, `1`, `8`, …) before the country code goes in front. Spaces,
/// dots, dashes and brackets are ignored. `None` when it has anything else in it or cannot be a
/// number (fewer than 7 or more than 15 digits, or a country code starting with 0).
pub fn e164(number: &str, region: Region) -> Option<String> {
    let bare: String = number.chars().filter(|c| !SEPARATORS.contains(*c)).collect();
    let (plus, digits) = match bare.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, bare.as_str()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let codes = codes(region)?;
    let (international_prefix, national_prefix) = (codes.international_prefix.as_str(), codes.national_prefix.as_str());
    let international = if plus {
        Some(digits)
    } else if !international_prefix.is_empty() && digits.starts_with(international_prefix) {
        Some(&digits[international_prefix.len()..])
    } else {
        digits.strip_prefix("00")
    };
    let full = match international {
        Some(full) => full.to_owned(),
        None => {
            let national = match digits.strip_prefix(national_prefix) {
                Some(rest) if !national_prefix.is_empty() && !rest.is_empty() => rest,
                _ => digits,
            };
            format!("{}{national}", codes.calling_code)
        }
    };
    ((MIN_DIGITS..=MAX_DIGITS).contains(&full.len()) && !full.starts_with('0')).then(|| format!("+{full}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::PhoneE164;
    use phonenumber::metadata::DATABASE;
    use std::str::FromStr;

    fn region(code: &str) -> Region {
        Region::parse(code).unwrap()
    }

    #[test]
    fn channels_spellings_become_e164() {
        let gr = Region::GR;
        for typed in ["+30 694 123 4567", "+306941234567", "0030 6941234567", "694-123-4567", "(+30) 694.123.4567"] {
            assert_eq!(e164(typed, gr).as_deref(), Some("+306941234567"), "{typed}");
        }
        assert_eq!(e164("020 7946 0018", region("GB")).as_deref(), Some("+442079460018"), "trunk 0 dropped");
        assert_eq!(e164("06 1234 5678", region("IT")).as_deref(), Some("+390612345678"), "Italy keeps its 0");
        assert_eq!(e164("1 (202) 555-0123", region("US")).as_deref(), Some("+12025550123"));
        assert_eq!(e164("011 30 694 123 4567", region("US")).as_deref(), Some("+306941234567"), "US exit code");
        assert_eq!(e164("8 912 345 67 89", region("RU")).as_deref(), Some("+79123456789"), "trunk 8");
        for not_a_number in ["", "+", "1234", "call me", "+30 694 123 4567 ext 5", "++306941234567", "+0306941234567", "1234567890123456"] {
            assert_eq!(e164(not_a_number, gr), None, "{not_a_number}");
        }
    }

    /// The table says what the `phonenumber` crate's metadata says, for every region it knows.
    #[test]
    fn table_agrees_with_libphonenumber_metadata() {
        let mut checked = 0;
        for meta in DATABASE.iter().filter(|m| m.id().len() == 2) {
            let id = meta.id();
            let Some(codes) = codes(region(id)) else {
                panic!("{id} is missing from REGIONS");
            };
            assert_eq!(codes.calling_code, meta.country_code(), "{id}");
            assert_eq!(codes.national_prefix.as_str(), meta.national_prefix().unwrap_or(""), "{id}");
            let plain = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            let expected = meta
                .international_prefix()
                .map(|p| p.as_str().to_owned())
                .filter(|p| plain(p))
                .or_else(|| meta.preferred_international_prefix().filter(|p| plain(p)).map(str::to_owned))
                .unwrap_or_default();
            assert_eq!(codes.international_prefix.as_str(), expected, "{id}");
            checked += 1;
        }
        assert_eq!(checked, REGIONS.len());
        for entry in REGIONS {
            let id = std::str::from_utf8(&entry.region).unwrap();
            assert!(phonenumber::country::Id::from_str(id).is_ok(), "{id} is not a region of the phonenumber crate");
        }
        assert!(REGIONS.windows(2).all(|w| w[0].region < w[1].region), "sorted, without duplicates");
        assert!(Region::parse("XX").is_err() && Region::parse("GRC").is_err() && Region::parse("").is_err());
        assert_eq!(Region::parse(" de ").map(|r| r.to_string()), Ok("DE".to_owned()));
    }

    /// Regions where a national number is more than trunk prefix + national significant number
    /// (libphonenumber rewrites it with a `nationalPrefixForParsing` rule, such as a carrier code
    /// or Argentina's mobile `15`): [`e164`] reads their international form only.
    fn rewritten_nationally(meta: &phonenumber::metadata::Metadata) -> bool {
        meta.national_prefix_transform_rule().is_some()
            || meta.national_prefix_for_parsing().is_some_and(|p| Some(p.as_str()) != meta.national_prefix())
    }

    /// Every example number of every region, written internationally (`+`, `00`) and nationally
    /// (with and without the trunk prefix), reads as `PhoneE164::parse` reads it.
    #[test]
    fn example_numbers_read_as_the_numbering_plan_reads_them() {
        let mut checked = 0;
        let mut failures = Vec::new();
        for meta in DATABASE.iter().filter(|m| m.id().len() == 2) {
            let home = region(meta.id());
            let descriptors = meta.descriptors();
            let examples =
                [descriptors.fixed_line(), descriptors.mobile(), descriptors.toll_free(), descriptors.premium_rate(), descriptors.voip()];
            for example in examples.into_iter().flatten().filter_map(|d| d.example()) {
                let expected = format!("+{}{example}", meta.country_code());
                if PhoneE164::parse(&expected, home).map(|p| p.as_str().to_owned()).ok() != Some(expected.clone()) {
                    continue;
                }
                let mut spellings = vec![(expected.clone(), Region::GR), (format!("00{}{example}", meta.country_code()), Region::GR)];
                if !rewritten_nationally(meta) {
                    spellings.push((format!("{}{example}", meta.national_prefix().unwrap_or("")), home));
                }
                for (typed, read_in) in spellings {
                    let plan = PhoneE164::parse(&typed, read_in).ok().map(|p| p.as_str().to_owned());
                    if plan.is_some() && e164(&typed, read_in) != plan {
                        failures.push(format!("{} {typed}: {:?} but the plan says {plan:?}", meta.id(), e164(&typed, read_in)));
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 1_000, "only {checked} spellings checked");
        assert!(failures.is_empty(), "{} of {checked}:\n{}", failures.len(), failures.join("\n"));
    }
}
