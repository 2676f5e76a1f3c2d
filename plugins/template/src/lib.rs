//! A template pricing rule for `crm:rules@0.1.0`. Copy this folder, rename the crate, change
//! the rule in `price`, and build it:
//!
//! ```sh
//! cargo build --release --target wasm32-wasip2
//! crm plugin check target/wasm32-wasip2/release/crm_plugin_template.wasm
//! crm plugin test  target/wasm32-wasip2/release/crm_plugin_template.wasm cases.json
//! ```
//!
//! The rule here is the standard one (lines, per-line and order discounts, tax shared out
//! over the lines) plus a volume discount: a line of 10 units or more that has no discount of
//! its own gets 5 % off. It depends on nothing but `wit-bindgen`, so it can live outside the
//! crm-hub repository; only the WIT folder is needed.

wit_bindgen::generate!({ path: "../../wit/crm-rules/0.1.0", world: "pricing-plugin" });

use crm::rules::types::{FieldProblem, RuleError};
use exports::crm::rules::pricing::{Discount, Guest, Order, PricedLine, Quote};

/// Units from which the volume discount applies.
const VOLUME_UNITS: i64 = 10;
/// The volume discount in hundredths of a percent (5 %).
const VOLUME_RATE: i64 = 500;

struct Rule;

/// `amount × rate / 10000`, rounded half away from zero; `None` on overflow.
fn percent(amount: i64, rate: i64) -> Option<i64> {
    let p = i128::from(amount) * i128::from(rate);
    let rounded = if p >= 0 { (p + 5_000) / 10_000 } else { (p - 5_000) / 10_000 };
    i64::try_from(rounded).ok()
}

fn invalid(pointer: String, detail: &str) -> RuleError {
    RuleError::InvalidInput(vec![FieldProblem { pointer, detail: detail.to_owned() }])
}

/// What a discount takes off `base`.
fn take(discount: &Discount, base: i64, at: String) -> Result<i64, RuleError> {
    match *discount {
        Discount::Percentage(rate) if (0..=10_000).contains(&rate) => percent(base, rate).ok_or(RuleError::Overflow),
        Discount::Fixed(amount) if (0..=base).contains(&amount) => Ok(amount),
        _ => Err(invalid(at, "a discount must be 0 to 100 percent, or an amount between 0 and what it applies to")),
    }
}

impl Guest for Rule {
    fn price(order: Order) -> Result<Quote, RuleError> {
        let mut explanation = Vec::new();
        let mut lines = Vec::with_capacity(order.lines.len());
        let mut subtotal: i64 = 0;
        for (i, line) in order.lines.iter().enumerate() {
            if line.quantity < 1 || line.unit_price < 0 {
                return Err(invalid(format!("/lines/{i}"), "needs a positive quantity and a non-negative unit price"));
            }
            let gross = line.unit_price.checked_mul(line.quantity).ok_or(RuleError::Overflow)?;
            let discount = match &line.discount {
                Some(d) => take(d, gross, format!("/lines/{i}/discount"))?,
                None if line.quantity >= VOLUME_UNITS => {
                    let amount = percent(gross, VOLUME_RATE).ok_or(RuleError::Overflow)?;
                    explanation.push(format!("line {}: volume discount 5 % = -{amount}", i + 1));
                    amount
                }
                None => 0,
            };
            let net = gross - discount;
            subtotal = subtotal.checked_add(net).ok_or(RuleError::Overflow)?;
            lines.push(PricedLine { gross, discount, net, tax: 0 });
        }
        let order_discount = match &order.discount {
            Some(d) => take(d, subtotal, "/discount".into())?,
            None => 0,
        };
        // Tax on each line's net less its share of the order discount (rounded down here; the
        // built-in rule shares the cents out exactly).
        let mut tax: i64 = 0;
        for (i, (priced, line)) in lines.iter_mut().zip(&order.lines).enumerate() {
            let Some(rate) = line.tax_rate.or(order.tax_rate) else { continue };
            if !(0..=10_000).contains(&rate) {
                return Err(invalid(format!("/lines/{i}/tax-rate"), "a tax rate must be between 0 and 100 percent"));
            }
            let share = if subtotal == 0 { 0 } else { (i128::from(order_discount) * i128::from(priced.net) / i128::from(subtotal)) as i64 };
            priced.tax = percent(priced.net - share, rate).ok_or(RuleError::Overflow)?;
            tax = tax.checked_add(priced.tax).ok_or(RuleError::Overflow)?;
        }
        let total = (subtotal - order_discount).checked_add(tax).ok_or(RuleError::Overflow)?;
        Ok(Quote { lines, subtotal, discount: order_discount, tax, total, explanation })
    }
}

export!(Rule);
