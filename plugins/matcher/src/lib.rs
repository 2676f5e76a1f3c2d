//! The default customer matcher as a component: `crm:rules/matcher@0.1.0` implemented by
//! calling `crm_domain::matching`, the same rules the core's native fallback runs, with names
//! folded by the host (`crm:rules/text.fold`), so that the component carries no Unicode tables.

wit_bindgen::generate!({ path: "../../wit/crm-rules/0.1.0", world: "matcher-plugin" });

use crm::rules::text::fold;
use crm::rules::types::{FieldProblem, RuleError};
use crm_domain::contact::Region;
use crm_domain::matching::{self, Candidate, Channel, KeyKind, LookupKey, Sender};
use exports::crm::rules::matcher::{self as wit, Guest};

struct Matcher;

fn sender(s: wit::Sender) -> Sender {
    let channel = match s.channel {
        wit::Channel::Email => Channel::Email,
        wit::Channel::Phone => Channel::Phone,
        wit::Channel::Whatsapp => Channel::Whatsapp,
        wit::Channel::Other => Channel::Other,
    };
    Sender { channel, address: s.address, display_name: s.display_name }
}

fn kind_to_wit(kind: KeyKind) -> wit::KeyKind {
    match kind {
        KeyKind::Email => wit::KeyKind::Email,
        KeyKind::Phone => wit::KeyKind::Phone,
        KeyKind::Name => wit::KeyKind::Name,
        KeyKind::NameWords => wit::KeyKind::NameWords,
    }
}

fn kind_from_wit(kind: wit::KeyKind) -> KeyKind {
    match kind {
        wit::KeyKind::Email => KeyKind::Email,
        wit::KeyKind::Phone => KeyKind::Phone,
        wit::KeyKind::Name => KeyKind::Name,
        wit::KeyKind::NameWords => KeyKind::NameWords,
    }
}

impl Guest for Matcher {
    fn match_keys(s: wit::Sender, settings: wit::Settings) -> Result<Vec<wit::LookupKey>, RuleError> {
        let region = Region::parse(&settings.default_region)
            .map_err(|detail| RuleError::InvalidInput(vec![FieldProblem { pointer: "/default-region".into(), detail }]))?;
        Ok(matching::match_keys_folding(&sender(s), region, &fold)
            .into_iter()
            .map(|k| wit::LookupKey { kind: kind_to_wit(k.kind), value: k.value, strength: k.strength })
            .collect())
    }

    fn choose(s: wit::Sender, keys: Vec<wit::LookupKey>, candidates: Vec<wit::Candidate>) -> Result<Option<wit::Choice>, RuleError> {
        let keys: Vec<LookupKey> =
            keys.into_iter().map(|k| LookupKey { kind: kind_from_wit(k.kind), value: k.value, strength: k.strength }).collect();
        let candidates: Vec<Candidate> = candidates
            .into_iter()
            .map(|c| Candidate { id: c.id, name: c.name, organization: c.organization, matched_keys: c.matched_keys })
            .collect();
        Ok(matching::choose_folding(&sender(s), &keys, &candidates, &fold).map(|c| wit::Choice {
            candidate: c.candidate,
            confidence: c.confidence,
            reason: c.reason,
        }))
    }
}

export!(Matcher);
