//! Host bindings of each supported version of the `crm:rules` WIT package, generated from the
//! frozen WIT folders, and the conversions between them and the host's own types. A new WIT
//! version gets a module of its own here; plugins are dispatched by the version they target.

/// The package name every plugin's exports must belong to.
pub(crate) const PACKAGE: &str = "crm:rules";

/// The versions of the package this host can run.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.1.0"];

#[allow(missing_debug_implementations, unreachable_pub, missing_docs, clippy::all)]
pub(crate) mod v0_1_0 {
    wasmtime::component::bindgen!({ path: "../../wit/crm-rules/0.1.0", world: "rules-plugin" });
}

use crate::error::{FieldProblem, RuleError};
use crate::pricing::{PriceLine, PriceRequest};
use crm_domain::matching::{Candidate, Channel, Choice, KeyKind, LookupKey, Sender};
use crm_domain::money::Money;
use crm_domain::order::{Discount, ItemType, LineQuote, Quote};
use v0_1_0::crm::rules::types as wtypes;
use v0_1_0::exports::crm::rules::{matcher as wm, pricing as wp};

impl From<wtypes::RuleError> for RuleError {
    fn from(e: wtypes::RuleError) -> Self {
        match e {
            wtypes::RuleError::InvalidInput(problems) => {
                RuleError::InvalidInput(problems.into_iter().map(|p| FieldProblem { pointer: p.pointer, detail: p.detail }).collect())
            }
            wtypes::RuleError::Overflow => RuleError::Overflow,
            wtypes::RuleError::Unsupported(s) => RuleError::Unsupported(s),
            wtypes::RuleError::Other(s) => RuleError::Other(s),
        }
    }
}

fn discount(d: &Discount) -> wp::Discount {
    match d {
        Discount::Percentage { value, .. } => wp::Discount::Percentage(value.hundredths()),
        Discount::Fixed { value, .. } => wp::Discount::Fixed(value.minor()),
    }
}

fn line(l: &PriceLine) -> wp::Line {
    wp::Line {
        kind: match l.kind {
            ItemType::Product => wp::LineKind::Product,
            ItemType::Service => wp::LineKind::Service,
            ItemType::Custom => wp::LineKind::Custom,
        },
        product_id: l.product_id.clone(),
        quantity: l.quantity,
        unit_price: l.unit_price.minor(),
        discount: l.discount.as_ref().map(discount),
        tax_rate: l.tax_rate.map(|r| r.hundredths()),
    }
}

pub(crate) fn order(r: &PriceRequest) -> wp::Order {
    wp::Order {
        currency: r.currency.clone(),
        customer_id: r.customer_id.clone(),
        lines: r.lines.iter().map(line).collect(),
        discount: r.discount.as_ref().map(discount),
        tax_rate: r.tax_rate.map(|r| r.hundredths()),
    }
}

pub(crate) fn quote(q: wp::Quote) -> Quote {
    Quote {
        lines: q
            .lines
            .iter()
            .map(|l| LineQuote {
                gross: Money::from_minor(l.gross),
                discount: Money::from_minor(l.discount),
                net: Money::from_minor(l.net),
                tax: Money::from_minor(l.tax),
            })
            .collect(),
        subtotal: Money::from_minor(q.subtotal),
        discount: Money::from_minor(q.discount),
        tax: Money::from_minor(q.tax),
        total: Money::from_minor(q.total),
        explanation: q.explanation,
    }
}

pub(crate) fn sender(s: &Sender) -> wm::Sender {
    wm::Sender {
        channel: match s.channel {
            Channel::Email => wm::Channel::Email,
            Channel::Phone => wm::Channel::Phone,
            Channel::Whatsapp => wm::Channel::Whatsapp,
            Channel::Other => wm::Channel::Other,
        },
        address: s.address.clone(),
        display_name: s.display_name.clone(),
    }
}

pub(crate) fn settings(region: &str) -> wm::Settings {
    wm::Settings { default_region: region.to_owned() }
}

pub(crate) fn key_to_wit(k: &LookupKey) -> wm::LookupKey {
    let kind = match k.kind {
        KeyKind::Email => wm::KeyKind::Email,
        KeyKind::Phone => wm::KeyKind::Phone,
        KeyKind::Name => wm::KeyKind::Name,
        KeyKind::NameWords => wm::KeyKind::NameWords,
    };
    wm::LookupKey { kind, value: k.value.clone(), strength: k.strength }
}

pub(crate) fn key_from_wit(k: wm::LookupKey) -> LookupKey {
    let kind = match k.kind {
        wm::KeyKind::Email => KeyKind::Email,
        wm::KeyKind::Phone => KeyKind::Phone,
        wm::KeyKind::Name => KeyKind::Name,
        wm::KeyKind::NameWords => KeyKind::NameWords,
    };
    LookupKey { kind, value: k.value, strength: k.strength }
}

pub(crate) fn candidate(c: &Candidate) -> wm::Candidate {
    wm::Candidate { id: c.id.clone(), name: c.name.clone(), organization: c.organization.clone(), matched_keys: c.matched_keys.clone() }
}

pub(crate) fn choice(c: wm::Choice) -> Choice {
    Choice { candidate: c.candidate, confidence: c.confidence, reason: c.reason }
}
