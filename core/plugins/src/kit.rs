//! The rule developer's kit behind `crm plugin check` and `crm plugin test`: a file of cases
//! with expected results (JSON), run against a plugin, each case reported as passed or failed
//! with what differed. The format is described in `plugins/template/README.md`.

use crate::error::{CallError, RuleError};
use crate::plugin::LoadedPlugin;
use crate::pricing::{PriceLine, PriceRequest};
use crm_domain::matching::{Candidate, Channel, KeyKind, LookupKey, Sender};
use crm_domain::money::{Hundredths, Money};
use crm_domain::order::{Discount, ItemType};
use serde::Deserialize;

/// A file of cases.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// Cases for a pricing rule.
    #[serde(default)]
    pub pricing: Vec<PricingCase>,
    /// Cases for a matcher.
    #[serde(default)]
    pub matching: Vec<MatchingCase>,
}

/// An order to price and what must come out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingCase {
    /// What the case checks.
    pub name: String,
    /// The order.
    pub order: OrderSpec,
    /// Expected amounts (those given are compared).
    #[serde(default)]
    pub expect: Option<Amounts>,
    /// Expected refusal: a JSON Pointer the rule's error must name (`/lines/0/discount`).
    #[serde(default)]
    pub expect_error: Option<String>,
}

/// An order in a case file; amounts in minor units, rates in percent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderSpec {
    /// Currency (`EUR` when absent).
    #[serde(default = "eur")]
    pub currency: String,
    /// Customer id.
    #[serde(default)]
    pub customer_id: Option<String>,
    /// Lines.
    #[serde(default)]
    pub lines: Vec<LineSpec>,
    /// Order discount, as the API writes it (`{"type": "percentage", "value": 10}`).
    #[serde(default)]
    pub discount: Option<Discount>,
    /// Tax rate in percent.
    #[serde(default)]
    pub tax_rate: Option<Hundredths>,
}

fn eur() -> String {
    "EUR".into()
}

/// A line in a case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSpec {
    /// `product`, `service` or `custom` (`product` when absent).
    #[serde(default, rename = "type")]
    pub kind: ItemType,
    /// Product id.
    #[serde(default)]
    pub product_id: Option<String>,
    /// Units (1 when absent).
    #[serde(default = "one")]
    pub quantity: i64,
    /// Price per unit in minor units.
    pub unit_price: i64,
    /// The line's discount.
    #[serde(default)]
    pub discount: Option<Discount>,
    /// The line's tax rate in percent.
    #[serde(default)]
    pub tax_rate: Option<Hundredths>,
}

fn one() -> i64 {
    1
}

/// Expected amounts of a quote, in minor units; absent ones are not checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amounts {
    /// Subtotal.
    pub subtotal: Option<i64>,
    /// Order discount.
    pub discount: Option<i64>,
    /// Tax.
    pub tax: Option<i64>,
    /// Total.
    pub total: Option<i64>,
    /// Net amount of each line.
    pub lines: Option<Vec<i64>>,
}

/// A sender to match and what must come out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchingCase {
    /// What the case checks.
    pub name: String,
    /// The sender.
    pub sender: SenderSpec,
    /// Expected keys, in order (kind and value; strengths are not compared).
    #[serde(default)]
    pub expect_keys: Option<Vec<KeySpec>>,
    /// Candidates for `choose`; the keys given to it are the ones `match-keys` returned.
    #[serde(default)]
    pub candidates: Option<Vec<CandidateSpec>>,
    /// Expected choice: the candidate's index, or `null` for none.
    #[serde(default)]
    pub expect_choice: Option<Option<u32>>,
}

/// A sender in a case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderSpec {
    /// `email`, `phone`, `whatsapp` or `other`.
    pub channel: String,
    /// Address.
    pub address: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// A key in a case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// `email`, `phone`, `name` or `name_words`.
    pub kind: String,
    /// Normalised value.
    pub value: String,
}

/// A candidate in a case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateSpec {
    /// Id.
    #[serde(default)]
    pub id: String,
    /// Name.
    pub name: String,
    /// Organisation.
    #[serde(default)]
    pub organization: Option<String>,
    /// Indexes of the keys that found it.
    #[serde(default)]
    pub matched_keys: Vec<u32>,
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What came out, or what differed.
    pub detail: String,
}

impl OrderSpec {
    /// The request a pricing rule gets.
    pub fn request(&self) -> PriceRequest {
        PriceRequest {
            currency: self.currency.clone(),
            customer_id: self.customer_id.clone(),
            lines: self
                .lines
                .iter()
                .map(|l| PriceLine {
                    kind: l.kind,
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                    unit_price: Money::from_minor(l.unit_price),
                    discount: l.discount.clone(),
                    tax_rate: l.tax_rate,
                })
                .collect(),
            discount: self.discount.clone(),
            tax_rate: self.tax_rate,
        }
    }
}

fn channel(name: &str) -> Result<Channel, String> {
    Ok(match name {
        "email" => Channel::Email,
        "phone" => Channel::Phone,
        "whatsapp" => Channel::Whatsapp,
        "other" => Channel::Other,
        other => return Err(format!("`{other}` is not a channel (email, phone, whatsapp, other)")),
    })
}

fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Email => "email",
        KeyKind::Phone => "phone",
        KeyKind::Name => "name",
        KeyKind::NameWords => "name_words",
    }
}

fn describe_error(err: &CallError) -> String {
    match err {
        CallError::Refused(RuleError::InvalidInput(problems)) => {
            problems.iter().map(|p| format!("{}: {}", p.pointer, p.detail)).collect::<Vec<_>>().join("; ")
        }
        other => other.to_string(),
    }
}

/// Runs every case against `plugin`.
pub fn run_cases(plugin: &LoadedPlugin, cases: &CaseFile) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for case in &cases.pricing {
        let outcome = plugin.price(&case.order.request());
        let (passed, detail) = match (&outcome, &case.expect_error) {
            (Err(err @ CallError::Refused(RuleError::InvalidInput(problems))), Some(pointer)) => {
                (problems.iter().any(|p| p.pointer.starts_with(pointer.as_str())), describe_error(err))
            }
            (Err(err), _) => (false, describe_error(err)),
            (Ok(q), Some(pointer)) => (false, format!("expected a refusal naming {pointer}, got a total of {}", q.total)),
            (Ok(q), None) => {
                let e = case.expect.clone().unwrap_or_default();
                let nets: Vec<i64> = q.lines.iter().map(|l| l.net.minor()).collect();
                let mut wrong = Vec::new();
                for (what, want, got) in [
                    ("subtotal", e.subtotal, q.subtotal.minor()),
                    ("discount", e.discount, q.discount.minor()),
                    ("tax", e.tax, q.tax.minor()),
                    ("total", e.total, q.total.minor()),
                ] {
                    if want.is_some_and(|w| w != got) {
                        wrong.push(format!("{what} {got}, expected {}", want.unwrap_or_default()));
                    }
                }
                if e.lines.as_ref().is_some_and(|l| *l != nets) {
                    wrong.push(format!("lines {nets:?}, expected {:?}", e.lines.unwrap_or_default()));
                }
                let got = format!(
                    "subtotal {} discount {} tax {} total {}{}",
                    q.subtotal,
                    q.discount,
                    q.tax,
                    q.total,
                    if q.explanation.is_empty() { String::new() } else { format!(" ({})", q.explanation.join("; ")) }
                );
                if wrong.is_empty() { (true, got) } else { (false, wrong.join(", ")) }
            }
        };
        results.push(CaseResult { name: case.name.clone(), passed, detail });
    }
    for case in &cases.matching {
        results.push(run_matching(plugin, case));
    }
    results
}

fn run_matching(plugin: &LoadedPlugin, case: &MatchingCase) -> CaseResult {
    let fail = |detail: String| CaseResult { name: case.name.clone(), passed: false, detail };
    let channel = match channel(&case.sender.channel) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let sender = Sender { channel, address: case.sender.address.clone(), display_name: case.sender.display_name.clone() };
    let keys: Vec<LookupKey> = match plugin.match_keys(&sender) {
        Ok(keys) => keys,
        Err(err) => return fail(describe_error(&err)),
    };
    let got: Vec<(String, String)> = keys.iter().map(|k| (kind_name(k.kind).to_owned(), k.value.clone())).collect();
    let mut detail = got.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" ");
    if let Some(expected) = &case.expect_keys {
        let want: Vec<(String, String)> = expected.iter().map(|k| (k.kind.clone(), k.value.clone())).collect();
        if want != got {
            return fail(format!("keys [{detail}], expected {want:?}"));
        }
    }
    if let Some(candidates) = &case.candidates {
        let candidates: Vec<Candidate> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| Candidate {
                id: if c.id.is_empty() { i.to_string() } else { c.id.clone() },
                name: c.name.clone(),
                organization: c.organization.clone(),
                matched_keys: c.matched_keys.clone(),
            })
            .collect();
        let choice = match plugin.choose(&sender, &keys, &candidates) {
            Ok(choice) => choice,
            Err(err) => return fail(describe_error(&err)),
        };
        let index = choice.as_ref().map(|c| c.candidate);
        detail = match &choice {
            Some(c) => format!("{detail}; chose {} ({}%: {})", c.candidate, c.confidence, c.reason),
            None => format!("{detail}; chose none"),
        };
        if case.expect_choice.is_some_and(|want| want != index) {
            return fail(format!("{detail}, expected {:?}", case.expect_choice.flatten()));
        }
    }
    CaseResult { name: case.name.clone(), passed: true, detail }
}
