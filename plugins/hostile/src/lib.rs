//! A test fixture, never deployed: a rules-plugin that misbehaves when the order's currency
//! (or the sender's address) asks it to, so the host's containment can be tested.
//! `LOP` loops forever, `MEM` allocates without end, `PAN` panics, `BIG` answers with a huge
//! explanation, `BAD` answers with amounts that do not add up; anything else is priced as
//! quantity × price. The matcher's `choose` picks a candidate that does not exist.

wit_bindgen::generate!({ path: "../../wit/crm-rules/0.1.0", world: "rules-plugin" });

use crm::rules::types::RuleError;
use exports::crm::rules::matcher::{self, Candidate, Choice, LookupKey, Sender, Settings};
use exports::crm::rules::pricing::{self, Order, PricedLine, Quote};

struct Hostile;

impl pricing::Guest for Hostile {
    fn price(order: Order) -> Result<Quote, RuleError> {
        match order.currency.as_str() {
            "LOP" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "MEM" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "PAN" => panic!("the rule gave up"),
            "BIG" => {
                let explanation = (0..20_000).map(|i| format!("line of explanation number {i}")).collect();
                Ok(Quote { lines: vec![], subtotal: 0, discount: 0, tax: 0, total: 0, explanation })
            }
            _ => {
                let lines: Vec<PricedLine> = order
                    .lines
                    .iter()
                    .map(|l| {
                        let gross = l.quantity * l.unit_price;
                        PricedLine { gross, discount: 0, net: gross, tax: 0 }
                    })
                    .collect();
                let subtotal = lines.iter().map(|l| l.net).sum();
                let total = if order.currency == "BAD" { subtotal + 1 } else { subtotal };
                Ok(Quote { lines, subtotal, discount: 0, tax: 0, total, explanation: vec![] })
            }
        }
    }
}

impl matcher::Guest for Hostile {
    fn match_keys(sender: Sender, _: Settings) -> Result<Vec<LookupKey>, RuleError> {
        if sender.address == "loop" {
            loop {
                std::hint::black_box(());
            }
        }
        Ok(vec![LookupKey { kind: matcher::KeyKind::Email, value: sender.address, strength: 250 }])
    }

    fn choose(_: Sender, _: Vec<LookupKey>, candidates: Vec<Candidate>) -> Result<Option<Choice>, RuleError> {
        Ok(Some(Choice { candidate: candidates.len() as u32 + 7, confidence: 100, reason: "made up".into() }))
    }
}

export!(Hostile);
