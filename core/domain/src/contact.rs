//! Contact details: e-mail addresses and phone numbers parsed into canonical forms, and the
//! contact entries a customer has. Phone and WhatsApp numbers are normalised to E.164 with a
//! configurable default region; what the user typed is kept beside the canonical form.

use crate::error::{Violations, optional_text, required_text};
use phonenumber::{Mode, country};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A syntactically valid e-mail address, kept as typed (trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Parses `addr-spec` syntax: one `@`, a non-empty local part without spaces, and a domain
    /// of dot-separated labels of letters, digits and hyphens (internationalised letters
    /// allowed), at most 254 characters in all.
    pub fn parse(input: &str) -> Result<Self, String> {
        let value = input.trim();
        let invalid = |why: &str| Err(format!("`{value}` is not a valid e-mail address: {why}"));
        if value.len() > 254 {
            return invalid("longer than 254 characters");
        }
        let Some((local, domain)) = value.rsplit_once('@') else {
            return invalid("missing @");
        };
        if local.is_empty() || local.len() > 64 {
            return invalid("the part before @ must have 1 to 64 characters");
        }
        if local.chars().any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\\\"@".contains(c))
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return invalid("the part before @ has characters that need quoting");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
        {
            return invalid("the domain must look like example.com");
        }
        Ok(Email(value.to_owned()))
    }

    /// The address as typed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used for matching: lower case.
    pub fn canonical(&self) -> String {
        self.0.to_lowercase()
    }
}

/// The region used to read phone numbers written without a country code: an ISO 3166 alpha-2
/// code that has a numbering plan ([`crate::dialling`] knows every such region).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region([u8; 2]);

impl Region {
    /// Greece, the default.
    pub const GR: Region = Region(*b"GR");

    /// Parses an ISO 3166 alpha-2 code such as `GR` or `de`.
    pub fn parse(code: &str) -> Result<Self, String> {
        let unknown = || format!("`{code}` is not a known ISO 3166 region code");
        let upper = code.trim().to_ascii_uppercase();
        let bytes: [u8; 2] = upper.as_bytes().try_into().map_err(|_| unknown())?;
        let region = Region(bytes);
        crate::dialling::is_known(region).then_some(region).ok_or_else(unknown)
    }

    /// The two-letter code, upper case.
    pub fn code(&self) -> &str {
        // Only ASCII letters are ever stored (see `parse`).
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The region as the numbering-plan library names it.
    fn country(self) -> Option<country::Id> {
        country::Id::from_str(self.code()).ok()
    }
}

impl Default for Region {
    fn default() -> Self {
        Region::GR
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Characters people put between the digits of a phone number.
pub(crate) const SEPARATORS: &str = " -./()\u{a0}";

/// A valid phone number in E.164 form (`+306912345678`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneE164(String);

impl PhoneE164 {
    /// Parses a number as a person would type it: with `+` or `00` and a country code, or in
    /// the national format of `region`. Spaces, dots, dashes and brackets are ignored. Numbers
    /// that the numbering plan says cannot exist are refused.
    pub fn parse(input: &str, region: Region) -> Result<Self, String> {
        let typed = input.trim();
        // The parser trips over some groupings ("+30690-000-000-0"): hand it bare digits when
        // the input is only digits and the usual separators.
        let bare: String = if typed.chars().all(|c| c.is_ascii_digit() || SEPARATORS.contains(c) || c == '+') {
            typed.chars().filter(|c| !SEPARATORS.contains(*c)).collect()
        } else {
            typed.to_owned()
        };
        let parsed = phonenumber::parse(region.country(), &bare).map_err(|_| format!("`{typed}` is not a phone number"))?;
        if !phonenumber::is_valid(&parsed) {
            return Err(format!("`{typed}` is not a valid phone number for its country (read with default region {region})"));
        }
        Ok(PhoneE164(parsed.format().mode(Mode::E164).to_string()))
    }

    /// The E.164 text, with the leading `+`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits alone (country code first), as the search index stores them.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }
}

/// If `query` reads as a phone number or a part of one, the digits to look for in the search
/// index: a whole valid number becomes its E.164 digits; a fragment keeps its digits with an
/// international prefix (`+` or `00`) removed. Anything else is not a phone query.
pub fn phone_query_digits(query: &str, region: Region) -> Option<String> {
    let q = query.trim();
    let digit_count = q.chars().filter(char::is_ascii_digit).count();
    let phone_like = q.chars().all(|c| c.is_ascii_digit() || c == '+' || SEPARATORS.contains(c));
    if !phone_like || digit_count < 3 {
        return None;
    }
    if let Ok(phone) = PhoneE164::parse(q, region) {
        return Some(phone.digits().to_owned());
    }
    let digits: String = q.chars().filter(char::is_ascii_digit).collect();
    let international = q.starts_with('+') || digits.starts_with("00");
    Some(if international { digits.trim_start_matches('0').to_owned() } else { digits })
}

/// What kind of address a contact entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContactType {
    /// An e-mail address.
    Email,
    /// A telephone number.
    Phone,
    /// A WhatsApp number (a phone number).
    Whatsapp,
    /// Anything else (a website, a post box...), kept as text.
    Other,
}

/// A contact entry as stored and returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contact {
    /// What the value is.
    #[serde(rename = "type")]
    pub kind: ContactType,
    /// Free label such as "office" or "priest's mobile".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The value as the user typed it.
    pub value: String,
    /// The canonical form used for matching (read-only): E.164 for phone and WhatsApp numbers,
    /// lower case for e-mail.
    pub normalized: String,
    /// The preferred contact of its type; at most one per type.
    #[serde(default)]
    pub primary: bool,
}

/// A contact entry as a client sends it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    /// What the value is.
    #[serde(rename = "type")]
    pub kind: ContactType,
    /// Free label.
    #[serde(default)]
    pub label: Option<String>,
    /// The address or number as typed.
    pub value: String,
    /// Whether this is the preferred contact of its type.
    #[serde(default)]
    pub primary: bool,
}

/// The longest contact label, in characters.
pub const LABEL_MAX_CHARS: usize = 100;

/// A label for a contact taken from a message (the sender's display name): trimmed, cut to
/// [`LABEL_MAX_CHARS`], none when empty; so the customer stays savable as read.
pub fn label_from_name(name: Option<&str>) -> Option<String> {
    let name = name?.trim();
    let cut = name.char_indices().nth(LABEL_MAX_CHARS).map_or(name, |(at, _)| name[..at].trim_end());
    (!cut.is_empty()).then(|| cut.to_owned())
}

/// Parses contact entries, recording problems under `pointer` (e.g. `/contacts`).
pub fn parse_contacts(inputs: Vec<ContactInput>, region: Region, pointer: &str, errors: &mut Violations) -> Vec<Contact> {
    let mut contacts = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let at = format!("{pointer}/{i}");
        let label = errors.check(format!("{at}/label"), optional_text(input.label.as_deref().unwrap_or(""), LABEL_MAX_CHARS)).flatten();
        let Some(value) = errors.check(format!("{at}/value"), required_text(&input.value, 320)) else { continue };
        let normalized = match input.kind {
            ContactType::Email => errors.check(format!("{at}/value"), Email::parse(&value)).map(|e| e.canonical()),
            ContactType::Phone | ContactType::Whatsapp => {
                errors.check(format!("{at}/value"), PhoneE164::parse(&value, region)).map(|p| p.as_str().to_owned())
            }
            ContactType::Other => Some(crate::fold_for_search(&value)),
        };
        if let Some(normalized) = normalized {
            contacts.push(Contact { kind: input.kind, label, value, normalized, primary: input.primary });
        }
    }
    for kind in [ContactType::Email, ContactType::Phone, ContactType::Whatsapp, ContactType::Other] {
        let primaries: Vec<usize> = contacts.iter().enumerate().filter(|(_, c)| c.kind == kind && c.primary).map(|(i, _)| i).collect();
        if primaries.len() > 1 {
            errors.push(format!("{pointer}/{}/primary", primaries[1]), "only one contact of each type may be primary");
        }
    }
    contacts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    /// A sender's display name becomes a label the contact parser would accept.
    #[test]
    fn labels_from_display_names_fit_a_contact() {
        assert_eq!(label_from_name(Some("  Μαρία Οικονόμου ")), Some("Μαρία Οικονόμου".into()));
        assert_eq!(label_from_name(Some("   ")), None);
        assert_eq!(label_from_name(None), None);
        let long = format!("{} {}", "Ε".repeat(99), "ρ".repeat(60));
        let label = label_from_name(Some(&long)).expect("a label");
        assert_eq!(label, "Ε".repeat(99), "cut at 100 characters, the trailing space trimmed");
        let mut errors = Violations::default();
        let input = ContactInput { kind: ContactType::Email, label: Some(label), value: "maria@example.gr".into(), primary: false };
        assert_eq!(parse_contacts(vec![input], Region::GR, "/contacts", &mut errors).len(), 1);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn greek_numbers_in_every_usual_spelling_normalise_alike() {
        for typed in ["694 123 4567", "+30 694 123 4567", "0030 6941234567", "+30-694-123-4567", "(+30) 694.123.4567"] {
            assert_eq!(PhoneE164::parse(typed, Region::GR).unwrap().as_str(), "+306941234567", "{typed}");
        }
        assert_eq!(PhoneE164::parse("210 123 4567", Region::GR).unwrap().as_str(), "+302101234567");
    }

    #[test]
    fn default_region_is_configurable() {
        let de = Region::parse("de").unwrap();
        assert_eq!(PhoneE164::parse("030 123456", de).unwrap().as_str(), "+4930123456");
        assert!(Region::parse("XX").is_err());
    }

    #[test]
    fn impossible_numbers_are_refused() {
        assert!(PhoneE164::parse("123", Region::GR).is_err());
        assert!(PhoneE164::parse("hello", Region::GR).is_err());
        assert!(PhoneE164::parse("+30 999", Region::GR).is_err());
    }

    #[test]
    fn phone_queries_reduce_to_the_indexed_digits() {
        assert_eq!(phone_query_digits("+30 694 123 4567", Region::GR).unwrap(), "306941234567");
        assert_eq!(phone_query_digits("0030694", Region::GR).unwrap(), "30694");
        assert_eq!(phone_query_digits("+30 694", Region::GR).unwrap(), "30694");
        assert_eq!(phone_query_digits("694 12", Region::GR).unwrap(), "69412");
        assert_eq!(phone_query_digits("Στέλιος", Region::GR), None);
        assert_eq!(phone_query_digits("12", Region::GR), None);
    }

    #[test]
    fn emails() {
        assert_eq!(Email::parse(" Pater.Nikos@Example.GR ").unwrap().canonical(), "pater.nikos@example.gr");
        assert!(Email::parse("ναός@εκκλησία.gr").is_ok());
        for bad in ["", "nobody", "a@b", "a b@example.com", "a@-x.com", "a@@example.com", ".a@example.com"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn at_most_one_primary_per_type() {
        let input = |kind, value: &str, primary| ContactInput { kind, label: None, value: value.into(), primary };
        let mut errors = Violations::default();
        let contacts = parse_contacts(
            vec![
                input(ContactType::Email, "a@example.com", true),
                input(ContactType::Phone, "6941234567", true),
                input(ContactType::Email, "b@example.com", true),
                input(ContactType::Phone, "not a number", false),
            ],
            Region::GR,
            "/contacts",
            &mut errors,
        );
        assert_eq!(contacts.len(), 3);
        let pointers: Vec<_> = errors.0.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/contacts/3/value", "/contacts/2/primary"]);
    }

    /// Every example number that libphonenumber's metadata gives for a region parses, written
    /// nationally with that region as default, to "+" + calling code + the number.
    #[test]
    fn libphonenumber_example_numbers_normalise() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/contacts/libphonenumber/metadata");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            panic!("fixtures not found at {}", dir.display());
        };
        let mut checked = 0;
        let mut failures = Vec::new();
        for entry in entries {
            let entry = entry.unwrap();
            let calling_code = entry.file_name().to_string_lossy().into_owned();
            let Ok(csv) = std::fs::read_to_string(entry.path().join("examples.csv")) else { continue };
            for line in csv.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
                let fields: Vec<&str> = line.split(';').map(str::trim).collect();
                let [region, kind, number] = fields[..] else { continue };
                let number = number.trim_matches('"');
                if region == "Region" {
                    continue;
                }
                let expected = format!("+{calling_code}{number}");
                // Through the international form, which any region reads the same way.
                match PhoneE164::parse(&expected, Region::GR) {
                    Ok(p) if p.as_str() == expected => {}
                    other => failures.push(format!("{region} {kind} {expected}: {other:?}")),
                }
                // With the 00 prefix from Greece.
                match PhoneE164::parse(&format!("00{calling_code}{number}"), Region::GR) {
                    Ok(p) if p.as_str() == expected => {}
                    other => failures.push(format!("{region} {kind} 00{calling_code}{number}: {other:?}")),
                }
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} example numbers found");
        assert!(failures.is_empty(), "{} of {checked} failed:\n{}", failures.len(), failures.join("\n"));
    }

    proptest! {
        /// Any valid Greek mobile, however it is spaced and prefixed, normalises to one E.164
        /// value whose digits are the national digits after 30.
        #[test]
        fn greek_mobiles_normalise_whatever_the_spelling(rest in "[0-9]{8}", prefix in prop::sample::select(vec!["", "+30", "0030", "+30 ", "(+30) "]), sep in prop::sample::select(vec!["", " ", "-", "."])) {
            let national = format!("69{rest}");
            let groups: Vec<String> = national.as_bytes().chunks(3).map(|g| String::from_utf8_lossy(g).into_owned()).collect();
            let typed = format!("{prefix}{}", groups.join(sep));
            let phone = PhoneE164::parse(&typed, Region::GR).map_err(TestCaseError::fail)?;
            prop_assert_eq!(phone.as_str(), format!("+30{national}"));
            prop_assert_eq!(phone_query_digits(&typed, Region::GR).unwrap(), format!("30{national}"));
        }

        /// Normalisation is idempotent: an E.164 value parses to itself under any region.
        #[test]
        fn e164_is_a_fixed_point(rest in "[0-9]{8}", region in prop::sample::select(vec!["GR", "DE", "US", "GB", "CY"])) {
            let e164 = format!("+3069{rest}");
            let phone = PhoneE164::parse(&e164, Region::parse(region).unwrap()).unwrap();
            prop_assert_eq!(phone.as_str(), e164.as_str());
        }
    }
}
