//! Customer matching rules: which normalised keys identify the sender of a message, and which
//! customer to pick when the keys find several. These are the default matcher plugin's rules
//! (the plugin in `plugins/matcher` calls these functions) and the host's native fallback, so
//! both behave identically. The types mirror `crm:rules/matcher` in `wit/`.

use crate::contact::{Email, Region};
use crate::dialling;
use crate::fold_for_search;

/// The channel a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// E-mail.
    Email,
    /// A telephone call or SMS.
    Phone,
    /// WhatsApp.
    Whatsapp,
    /// Anything else.
    Other,
}

/// Who sent a message, as the connector saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The channel.
    pub channel: Channel,
    /// The address on that channel, as received (`"Name" <a@b.gr>`, `+30 694…`,
    /// `306941234567@s.whatsapp.net`).
    pub address: String,
    /// The display name, when the channel gives one.
    pub display_name: Option<String>,
}

/// Which index a lookup key is resolved through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    /// A lower-case e-mail address, equal to a contact's `normalized` e-mail.
    Email,
    /// An E.164 number with its `+`, equal to a phone or WhatsApp contact's `normalized`.
    Phone,
    /// A folded name ([`fold_for_search`]), equal to a customer's folded name.
    Name,
    /// Folded words that must all occur in a customer's name (fuzzy; weaker).
    NameWords,
}

impl KeyKind {
    /// The name used in reasons and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Email => "e-mail",
            KeyKind::Phone => "phone number",
            KeyKind::Name => "name",
            KeyKind::NameWords => "similar name",
        }
    }
}

/// A normalised key to look customers up by, with how strongly a hit identifies one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LookupKey {
    /// The index to use.
    pub kind: KeyKind,
    /// The normalised value.
    pub value: String,
    /// 0 (says nothing) to 100 (certain).
    pub strength: u8,
}

/// A customer some lookup keys found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The customer's id, opaque to the rule.
    pub id: String,
    /// The customer's name.
    pub name: String,
    /// The customer's organisation.
    pub organization: Option<String>,
    /// Indexes into the key list of the keys that found this customer.
    pub matched_keys: Vec<u32>,
}

/// The pick among candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Index of the chosen candidate.
    pub candidate: u32,
    /// 0 to 100.
    pub confidence: u8,
    /// Why, for the person who triages.
    pub reason: String,
}

/// Strength of an exact e-mail match.
pub const EMAIL_STRENGTH: u8 = 100;
/// Strength of an exact phone or WhatsApp number match (numbers are sometimes shared).
pub const PHONE_STRENGTH: u8 = 90;
/// Strength of an exact folded-name match.
pub const NAME_STRENGTH: u8 = 50;
/// Strength of a fuzzy name match (every word occurs).
pub const NAME_WORDS_STRENGTH: u8 = 25;

/// Splits `"Name" <addr>` into the address and the name before it.
fn split_mailbox(address: &str) -> (&str, Option<&str>) {
    let text = address.trim();
    match (text.rfind('<'), text.ends_with('>')) {
        (Some(open), true) => {
            let name = text[..open].trim().trim_matches('"').trim();
            (&text[open + 1..text.len() - 1], (!name.is_empty()).then_some(name))
        }
        _ => (text.strip_prefix("mailto:").unwrap_or(text), None),
    }
}

/// A phone number as a channel gives it, in E.164. WhatsApp always gives international numbers,
/// bare digits without the `+` (`306941234567`, `306941234567@s.whatsapp.net`) or with it
/// (`whatsapp:+30…`).
fn phone_key(address: &str, channel: Channel, region: Region) -> Option<String> {
    let mut text = address.trim();
    for prefix in ["whatsapp:", "tel:", "sms:"] {
        if text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix) {
            text = &text[prefix.len()..];
        }
    }
    let international = channel == Channel::Whatsapp;
    if let Some((number, _)) = text.split_once('@') {
        text = number;
    }
    let text = text.trim();
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let candidate = if international && digits_only { format!("+{text}") } else { text.to_owned() };
    dialling::e164(&candidate, region)
}

/// The lookup keys for a sender, strongest first, without duplicates: the e-mail address
/// (lower case), the phone or WhatsApp number (E.164, read with `region` when it has no country
/// code), then the display name folded (exact) and, for names of two words or more, its words
/// (fuzzy). Nothing usable gives no keys.
pub fn match_keys(sender: &Sender, region: Region) -> Vec<LookupKey> {
    match_keys_folding(sender, region, &fold_for_search)
}

/// [`match_keys`] with `fold` as the name folding: a matcher plugin passes the host's
/// (`crm:rules/text.fold`, the same [`fold_for_search`]) so that it need not carry Unicode
/// tables of its own.
pub fn match_keys_folding(sender: &Sender, region: Region, fold: &dyn Fn(&str) -> String) -> Vec<LookupKey> {
    let mut keys = Vec::new();
    let mut display = sender.display_name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let email = |text: &str| Email::parse(text).ok().map(|e| e.canonical());
    match sender.channel {
        Channel::Email => {
            let (address, name) = split_mailbox(&sender.address);
            display = display.or(name);
            if let Some(value) = email(address) {
                keys.push(LookupKey { kind: KeyKind::Email, value, strength: EMAIL_STRENGTH });
            }
        }
        Channel::Phone | Channel::Whatsapp => {
            if let Some(value) = phone_key(&sender.address, sender.channel, region) {
                keys.push(LookupKey { kind: KeyKind::Phone, value, strength: PHONE_STRENGTH });
            }
        }
        Channel::Other => {
            let (address, name) = split_mailbox(&sender.address);
            if let Some(value) = email(address) {
                display = display.or(name);
                keys.push(LookupKey { kind: KeyKind::Email, value, strength: EMAIL_STRENGTH });
            } else if let Some(value) = phone_key(&sender.address, sender.channel, region) {
                keys.push(LookupKey { kind: KeyKind::Phone, value, strength: PHONE_STRENGTH });
            }
        }
    }
    if let Some(name) = display {
        let folded = fold(name);
        if folded.chars().any(char::is_alphabetic) {
            let words = folded.split(' ').filter(|w| w.chars().any(char::is_alphabetic)).count();
            keys.push(LookupKey { kind: KeyKind::Name, value: folded.clone(), strength: NAME_STRENGTH });
            if words >= 2 {
                keys.push(LookupKey { kind: KeyKind::NameWords, value: folded, strength: NAME_WORDS_STRENGTH });
            }
        }
    }
    keys
}

/// Picks among candidates: each scores the strength of its strongest key, plus 5 for each other
/// kind of key that found it and 5 when the sender's folded display name equals its folded name
/// or organisation, at most 100. The best wins if it scores strictly more than the next; a tie
/// (or no candidate) gives none, and the message goes to triage.
pub fn choose(sender: &Sender, keys: &[LookupKey], candidates: &[Candidate]) -> Option<Choice> {
    choose_folding(sender, keys, candidates, &fold_for_search)
}

/// [`choose`] with `fold` as the name folding (see [`match_keys_folding`]).
pub fn choose_folding(sender: &Sender, keys: &[LookupKey], candidates: &[Candidate], fold: &dyn Fn(&str) -> String) -> Option<Choice> {
    let display = sender
        .display_name
        .as_deref()
        .or_else(|| split_mailbox(&sender.address).1.filter(|_| sender.channel == Channel::Email))
        .map(fold)
        .filter(|n| !n.is_empty());
    // The best candidate so far (the first of equals wins) and the best score of the others.
    let mut leader: Option<(u32, u8, String)> = None;
    let mut runner_up: Option<u8> = None;
    for (index, candidate) in candidates.iter().enumerate() {
        let mut found: Vec<&LookupKey> = candidate.matched_keys.iter().filter_map(|&k| keys.get(k as usize)).collect();
        sort_few(&mut found, |a, b| b.strength.cmp(&a.strength).then(a.kind.cmp(&b.kind)));
        found.dedup_by_key(|k| k.kind);
        let Some(best) = found.first() else { continue };
        let mut score = u32::from(best.strength) + 5 * (found.len() as u32 - 1);
        let mut why: Vec<String> = found.iter().map(|k| k.kind.as_str().to_owned()).collect();
        let same_name = display
            .as_ref()
            .is_some_and(|d| *d == fold(&candidate.name) || candidate.organization.as_deref().is_some_and(|o| *d == fold(o)));
        if same_name && !found.iter().any(|k| k.kind == KeyKind::Name) {
            score += 5;
            why.push("same display name".to_owned());
        }
        let Ok(index) = u32::try_from(index) else { break };
        let score = score.min(100) as u8;
        match &leader {
            Some((_, top, _)) if score <= *top => runner_up = runner_up.max(Some(score)),
            _ => {
                runner_up = runner_up.max(leader.as_ref().map(|l| l.1));
                leader = Some((index, score, format!("matched by {}", why.join(", "))));
            }
        }
    }
    match leader {
        Some((_, top, _)) if runner_up == Some(top) => None,
        Some((candidate, confidence, reason)) => Some(Choice { candidate, confidence, reason }),
        None => None,
    }
}

/// Insertion sort, stable like `sort_by`: for the few keys that found one candidate (at most
/// one per key kind), in a fraction of the standard sort's code in a WebAssembly rule.
fn sort_few<T>(items: &mut [T], compare: impl Fn(&T, &T) -> std::cmp::Ordering) {
    for i in 1..items.len() {
        let mut j = i;
        while j > 0 && compare(&items[j - 1], &items[j]) == std::cmp::Ordering::Greater {
            items.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// A customer-matching rule as the core's ingest uses it: the built-in rules
/// ([`NativeMatcher`]) or the active matcher plugin. The ingest resolves the keys through the
/// store's indexes for a whole batch, and asks the rule to choose only when the keys found
/// several customers. An error sends the message to the unmatched inbox with the error as the
/// reason; it never loses the message.
pub trait Matcher: Send + Sync + std::fmt::Debug {
    /// Who decides (`built-in`, `matcher-default 0.1.0`), recorded on the entry.
    fn name(&self) -> String;
    /// The lookup keys for a sender, strongest first.
    fn keys(&self, sender: &Sender) -> Result<Vec<LookupKey>, String>;
    /// Picks among several candidates; `None` sends the message to triage.
    fn choose(&self, sender: &Sender, keys: &[LookupKey], candidates: &[Candidate]) -> Result<Option<Choice>, String>;
}

/// The built-in rules of this module, reading phone numbers without a country code in a
/// default region (the same rules the default matcher plugin runs).
#[derive(Debug, Clone, Copy)]
pub struct NativeMatcher {
    region: Region,
}

impl NativeMatcher {
    /// Reads phone numbers without a country code in `region`.
    pub fn new(region: Region) -> Self {
        Self { region }
    }
}

impl Matcher for NativeMatcher {
    fn name(&self) -> String {
        "built-in".into()
    }

    fn keys(&self, sender: &Sender) -> Result<Vec<LookupKey>, String> {
        Ok(match_keys(sender, self.region))
    }

    fn choose(&self, sender: &Sender, keys: &[LookupKey], candidates: &[Candidate]) -> Result<Option<Choice>, String> {
        Ok(choose(sender, keys, candidates))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(channel: Channel, address: &str, name: Option<&str>) -> Sender {
        Sender { channel, address: address.into(), display_name: name.map(Into::into) }
    }

    fn kinds(keys: &[LookupKey]) -> Vec<(KeyKind, &str)> {
        keys.iter().map(|k| (k.kind, k.value.as_str())).collect()
    }

    #[test]
    fn emails_match_case_insensitively_with_the_name_as_a_weaker_key() {
        let keys = match_keys(&sender(Channel::Email, "\"Στέλιος Μπίμπης\" <Stelios@Example.GR>", None), Region::GR);
        assert_eq!(
            kinds(&keys),
            [(KeyKind::Email, "stelios@example.gr"), (KeyKind::Name, "στελιοσ μπιμπησ"), (KeyKind::NameWords, "στελιοσ μπιμπησ")]
        );
        assert_eq!(keys.iter().map(|k| k.strength).collect::<Vec<_>>(), [100, 50, 25]);
        assert!(match_keys(&sender(Channel::Email, "not an address", None), Region::GR).is_empty());
    }

    #[test]
    fn phones_and_whatsapp_ids_become_e164() {
        let gr = Region::GR;
        for (channel, address) in [
            (Channel::Phone, "694 123 4567"),
            (Channel::Phone, "+30 694 123 4567"),
            (Channel::Whatsapp, "306941234567@s.whatsapp.net"),
            (Channel::Whatsapp, "whatsapp:+306941234567"),
            (Channel::Whatsapp, "306941234567"),
            (Channel::Other, "0030 6941234567"),
        ] {
            assert_eq!(kinds(&match_keys(&sender(channel, address, None), gr)), [(KeyKind::Phone, "+306941234567")], "{address}");
        }
        let de = Region::parse("DE").unwrap();
        assert_eq!(match_keys(&sender(Channel::Phone, "030 123456", Some("Hans")), de)[0].value, "+4930123456");
    }

    #[test]
    fn choose_prefers_the_strongest_key_and_refuses_ties() {
        let s = sender(Channel::Email, "a@b.gr", Some("Ιερός Ναός Αγίου Νικολάου"));
        let keys = match_keys(&s, Region::GR);
        let cand = |id: &str, name: &str, matched: &[u32]| Candidate {
            id: id.into(),
            name: name.into(),
            organization: None,
            matched_keys: matched.to_vec(),
        };
        let picked = choose(&s, &keys, &[cand("1", "Other", &[2]), cand("2", "Ιερός Ναός Αγίου Νικολάου", &[0, 1, 2])]).unwrap();
        assert_eq!((picked.candidate, picked.confidence), (1, 100));
        assert!(picked.reason.contains("e-mail"), "{}", picked.reason);
        assert_eq!(choose(&s, &keys, &[cand("1", "x", &[0]), cand("2", "y", &[0])]), None);
        assert_eq!(choose(&s, &keys, &[]), None);
        // a key index out of range is ignored rather than trusted
        assert_eq!(choose(&s, &keys, &[cand("1", "x", &[99])]), None);
    }

    /// The choice as first written: every candidate scored, sorted by score then position.
    fn choose_by_sorting(sender: &Sender, keys: &[LookupKey], candidates: &[Candidate]) -> Option<Choice> {
        let display = sender.display_name.as_deref().map(fold_for_search).filter(|n| !n.is_empty());
        let mut scored: Vec<(u32, u8, String)> = Vec::new();
        for (index, candidate) in candidates.iter().enumerate() {
            let mut found: Vec<&LookupKey> = candidate.matched_keys.iter().filter_map(|&k| keys.get(k as usize)).collect();
            found.sort_by(|a, b| b.strength.cmp(&a.strength).then(a.kind.cmp(&b.kind)));
            found.dedup_by_key(|k| k.kind);
            let Some(best) = found.first() else { continue };
            let mut score = u32::from(best.strength) + 5 * (found.len() as u32 - 1);
            let mut why: Vec<String> = found.iter().map(|k| k.kind.as_str().to_owned()).collect();
            if display.as_deref() == Some(fold_for_search(&candidate.name).as_str()) && !found.iter().any(|k| k.kind == KeyKind::Name) {
                score += 5;
                why.push("same display name".to_owned());
            }
            scored.push((index as u32, score.min(100) as u8, format!("matched by {}", why.join(", "))));
        }
        scored.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        match scored.as_slice() {
            [] => None,
            [(_, first, _), (_, second, _), ..] if first == second => None,
            [(c, confidence, reason), ..] => Some(Choice { candidate: *c, confidence: *confidence, reason: reason.clone() }),
        }
    }

    proptest::proptest! {
        /// Picking the best and the runner-up in one pass chooses exactly as sorting every
        /// candidate did.
        #[test]
        fn choosing_in_one_pass_equals_sorting(
            matched in proptest::collection::vec(proptest::collection::vec(0u32..5, 0..4), 0..8),
            named in proptest::collection::vec(proptest::bool::ANY, 8),
        ) {
            let s = sender(Channel::Email, "\"Ναός Αγίου Νικολάου\" <naos@example.gr>", Some("Ναός Αγίου Νικολάου"));
            let keys = match_keys(&s, Region::GR);
            let candidates: Vec<Candidate> = matched
                .iter()
                .enumerate()
                .map(|(i, m)| Candidate {
                    id: i.to_string(),
                    name: if named[i] { "ΝΑΟΣ Αγίου Νικολάου".into() } else { format!("Πελάτης {i}") },
                    organization: None,
                    matched_keys: m.clone(),
                })
                .collect();
            proptest::prop_assert_eq!(choose(&s, &keys, &candidates), choose_by_sorting(&s, &keys, &candidates));
        }
    }
}
