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

/// Every region's dialling codes, sorted by region: (ISO 3166 code, country calling code,
/// international prefix when it is plain digits, otherwise "", national trunk prefix or "").
/// Generated from libphonenumber's `PhoneNumberMetadata.xml` (the version the `phonenumber`
/// crate carries).
const REGIONS: &[(&str, &str, &str, &str)] = &[
    ("AC", "247", "00", ""),
    ("AD", "376", "00", ""),
    ("AE", "971", "00", "0"),
    ("AF", "93", "00", "0"),
    ("AG", "1", "011", "1"),
    ("AI", "1", "011", "1"),
    ("AL", "355", "00", "0"),
    ("AM", "374", "00", "0"),
    ("AO", "244", "00", ""),
    ("AR", "54", "00", "0"),
    ("AS", "1", "011", "1"),
    ("AT", "43", "00", "0"),
    ("AU", "61", "0011", "0"),
    ("AW", "297", "00", ""),
    ("AX", "358", "00", "0"),
    ("AZ", "994", "00", "0"),
    ("BA", "387", "00", "0"),
    ("BB", "1", "011", "1"),
    ("BD", "880", "00", "0"),
    ("BE", "32", "00", "0"),
    ("BF", "226", "00", ""),
    ("BG", "359", "00", "0"),
    ("BH", "973", "00", ""),
    ("BI", "257", "00", ""),
    ("BJ", "229", "00", ""),
    ("BL", "590", "00", "0"),
    ("BM", "1", "011", "1"),
    ("BN", "673", "00", ""),
    ("BO", "591", "", "0"),
    ("BQ", "599", "00", ""),
    ("BR", "55", "", "0"),
    ("BS", "1", "011", "1"),
    ("BT", "975", "00", ""),
    ("BW", "267", "00", ""),
    ("BY", "375", "810", "8"),
    ("BZ", "501", "00", ""),
    ("CA", "1", "011", "1"),
    ("CC", "61", "0011", "0"),
    ("CD", "243", "00", "0"),
    ("CF", "236", "00", ""),
    ("CG", "242", "00", ""),
    ("CH", "41", "00", "0"),
    ("CI", "225", "00", ""),
    ("CK", "682", "00", ""),
    ("CL", "56", "", ""),
    ("CM", "237", "00", ""),
    ("CN", "86", "00", "0"),
    ("CO", "57", "", "0"),
    ("CR", "506", "00", ""),
    ("CU", "53", "119", "0"),
    ("CV", "238", "0", ""),
    ("CW", "599", "00", ""),
    ("CX", "61", "0011", "0"),
    ("CY", "357", "00", ""),
    ("CZ", "420", "00", ""),
    ("DE", "49", "00", "0"),
    ("DJ", "253", "00", ""),
    ("DK", "45", "00", ""),
    ("DM", "1", "011", "1"),
    ("DO", "1", "011", "1"),
    ("DZ", "213", "00", "0"),
    ("EC", "593", "00", "0"),
    ("EE", "372", "00", ""),
    ("EG", "20", "00", "0"),
    ("EH", "212", "00", "0"),
    ("ER", "291", "00", "0"),
    ("ES", "34", "00", ""),
    ("ET", "251", "00", "0"),
    ("FI", "358", "00", "0"),
    ("FJ", "679", "00", ""),
    ("FK", "500", "00", ""),
    ("FM", "691", "00", ""),
    ("FO", "298", "00", ""),
    ("FR", "33", "00", "0"),
    ("GA", "241", "00", ""),
    ("GB", "44", "00", "0"),
    ("GD", "1", "011", "1"),
    ("GE", "995", "00", "0"),
    ("GF", "594", "00", "0"),
    ("GG", "44", "00", "0"),
    ("GH", "233", "00", "0"),
    ("GI", "350", "00", ""),
    ("GL", "299", "00", ""),
    ("GM", "220", "00", ""),
    ("GN", "224", "00", ""),
    ("GP", "590", "00", "0"),
    ("GQ", "240", "00", ""),
    ("GR", "30", "00", ""),
    ("GT", "502", "00", ""),
    ("GU", "1", "011", "1"),
    ("GW", "245", "00", ""),
    ("GY", "592", "001", ""),
    ("HK", "852", "00", ""),
    ("HN", "504", "00", ""),
    ("HR", "385", "00", "0"),
    ("HT", "509", "00", ""),
    ("HU", "36", "00", "06"),
    ("ID", "62", "", "0"),
    ("IE", "353", "00", "0"),
    ("IL", "972", "", "0"),
    ("IM", "44", "00", "0"),
    ("IN", "91", "00", "0"),
    ("IO", "246", "00", ""),
    ("IQ", "964", "00", "0"),
    ("IR", "98", "00", "0"),
    ("IS", "354", "00", ""),
    ("IT", "39", "00", ""),
    ("JE", "44", "00", "0"),
    ("JM", "1", "011", "1"),
    ("JO", "962", "00", "0"),
    ("JP", "81", "010", "0"),
    ("KE", "254", "000", "0"),
    ("KG", "996", "00", "0"),
    ("KH", "855", "", "0"),
    ("KI", "686", "00", "0"),
    ("KM", "269", "00", ""),
    ("KN", "1", "011", "1"),
    ("KP", "850", "", "0"),
    ("KR", "82", "", "0"),
    ("KW", "965", "00", ""),
    ("KY", "1", "011", "1"),
    ("KZ", "7", "810", "8"),
    ("LA", "856", "00", "0"),
    ("LB", "961", "00", "0"),
    ("LC", "1", "011", "1"),
    ("LI", "423", "00", "0"),
    ("LK", "94", "00", "0"),
    ("LR", "231", "00", "0"),
    ("LS", "266", "00", ""),
    ("LT", "370", "00", "0"),
    ("LU", "352", "00", ""),
    ("LV", "371", "00", ""),
    ("LY", "218", "00", "0"),
    ("MA", "212", "00", "0"),
    ("MC", "377", "00", "0"),
    ("MD", "373", "00", "0"),
    ("ME", "382", "00", "0"),
    ("MF", "590", "00", "0"),
    ("MG", "261", "00", "0"),
    ("MH", "692", "011", "1"),
    ("MK", "389", "00", "0"),
    ("ML", "223", "00", ""),
    ("MM", "95", "00", "0"),
    ("MN", "976", "001", "0"),
    ("MO", "853", "00", ""),
    ("MP", "1", "011", "1"),
    ("MQ", "596", "00", "0"),
    ("MR", "222", "00", ""),
    ("MS", "1", "011", "1"),
    ("MT", "356", "00", ""),
    ("MU", "230", "020", ""),
    ("MV", "960", "00", ""),
    ("MW", "265", "00", "0"),
    ("MX", "52", "00", ""),
    ("MY", "60", "00", "0"),
    ("MZ", "258", "00", ""),
    ("NA", "264", "00", "0"),
    ("NC", "687", "00", ""),
    ("NE", "227", "00", ""),
    ("NF", "672", "00", ""),
    ("NG", "234", "009", "0"),
    ("NI", "505", "00", ""),
    ("NL", "31", "00", "0"),
    ("NO", "47", "00", ""),
    ("NP", "977", "00", "0"),
    ("NR", "674", "00", ""),
    ("NU", "683", "00", ""),
    ("NZ", "64", "00", "0"),
    ("OM", "968", "00", ""),
    ("PA", "507", "00", ""),
    ("PE", "51", "00", "0"),
    ("PF", "689", "00", ""),
    ("PG", "675", "00", ""),
    ("PH", "63", "00", "0"),
    ("PK", "92", "00", "0"),
    ("PL", "48", "00", ""),
    ("PM", "508", "00", "0"),
    ("PR", "1", "011", "1"),
    ("PS", "970", "00", "0"),
    ("PT", "351", "00", ""),
    ("PW", "680", "", ""),
    ("PY", "595", "00", "0"),
    ("QA", "974", "00", ""),
    ("RE", "262", "00", "0"),
    ("RO", "40", "00", "0"),
    ("RS", "381", "00", "0"),
    ("RU", "7", "810", "8"),
    ("RW", "250", "00", "0"),
    ("SA", "966", "00", "0"),
    ("SB", "677", "", ""),
    ("SC", "248", "00", ""),
    ("SD", "249", "00", "0"),
    ("SE", "46", "00", "0"),
    ("SG", "65", "", ""),
    ("SH", "290", "00", ""),
    ("SI", "386", "00", "0"),
    ("SJ", "47", "00", ""),
    ("SK", "421", "00", "0"),
    ("SL", "232", "00", "0"),
    ("SM", "378", "00", ""),
    ("SN", "221", "00", ""),
    ("SO", "252", "00", "0"),
    ("SR", "597", "00", ""),
    ("SS", "211", "00", "0"),
    ("ST", "239", "00", ""),
    ("SV", "503", "00", ""),
    ("SX", "1", "011", "1"),
    ("SY", "963", "00", "0"),
    ("SZ", "268", "00", ""),
    ("TA", "290", "00", ""),
    ("TC", "1", "011", "1"),
    ("TD", "235", "00", ""),
    ("TG", "228", "00", ""),
    ("TH", "66", "", "0"),
    ("TJ", "992", "810", ""),
    ("TK", "690", "00", ""),
    ("TL", "670", "00", ""),
    ("TM", "993", "810", "8"),
    ("TN", "216", "00", ""),
    ("TO", "676", "00", ""),
    ("TR", "90", "00", "0"),
    ("TT", "1", "011", "1"),
    ("TV", "688", "00", ""),
    ("TW", "886", "", "0"),
    ("TZ", "255", "", "0"),
    ("UA", "380", "00", "0"),
    ("UG", "256", "", "0"),
    ("US", "1", "011", "1"),
    ("UY", "598", "00", "0"),
    ("UZ", "998", "00", ""),
    ("VA", "39", "00", ""),
    ("VC", "1", "011", "1"),
    ("VE", "58", "00", "0"),
    ("VG", "1", "011", "1"),
    ("VI", "1", "011", "1"),
    ("VN", "84", "00", "0"),
    ("VU", "678", "00", ""),
    ("WF", "681", "00", ""),
    ("WS", "685", "0", ""),
    ("XK", "383", "00", "0"),
    ("YE", "967", "00", "0"),
    ("YT", "262", "00", "0"),
    ("ZA", "27", "00", "0"),
    ("ZM", "260", "00", "0"),
    ("ZW", "263", "00", "0"),
];

/// E.164 needs at least this many digits after the `+` to be a subscriber number anywhere.
const MIN_DIGITS: usize = 7;
/// E.164 allows at most 15 digits.
const MAX_DIGITS: usize = 15;

/// The dialling codes of `region`.
fn codes(region: Region) -> Option<&'static (&'static str, &'static str, &'static str, &'static str)> {
    let code = region.to_string();
    REGIONS.binary_search_by(|entry| entry.0.cmp(code.as_str())).ok().map(|i| &REGIONS[i])
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
    let (_, calling_code, international_prefix, national_prefix) = *codes(region)?;
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
            format!("{calling_code}{national}")
        }
    };
    ((MIN_DIGITS..=MAX_DIGITS).contains(&full.len()) && !full.starts_with('0')).then(|| format!("+{full}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::PhoneE164;
    use phonenumber::metadata::DATABASE;

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
            let Some(&(id, calling_code, international_prefix, national_prefix)) = codes(region(meta.id())) else {
                panic!("{} is missing from REGIONS", meta.id());
            };
            assert_eq!(calling_code, meta.country_code().to_string(), "{id}");
            assert_eq!(national_prefix, meta.national_prefix().unwrap_or(""), "{id}");
            let plain = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            let expected = meta
                .international_prefix()
                .map(|p| p.as_str().to_owned())
                .filter(|p| plain(p))
                .or_else(|| meta.preferred_international_prefix().filter(|p| plain(p)).map(str::to_owned))
                .unwrap_or_default();
            assert_eq!(international_prefix, expected, "{id}");
            checked += 1;
        }
        assert_eq!(checked, REGIONS.len());
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
