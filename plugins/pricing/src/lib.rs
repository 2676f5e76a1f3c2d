//! The default pricing rule as a component: `crm:rules/pricing@0.1.0` implemented by calling
//! `crm_domain::order::quote`, the same function the core uses natively, so that native and
//! plugin results can be compared exactly.

wit_bindgen::generate!({ path: "../../wit/crm-rules/0.1.0", world: "pricing-plugin" });

use crm::rules::types::{FieldProblem, RuleError};
use crm_domain::money::{Hundredths, Money};
use crm_domain::order::{Discount, PricingError, QuoteLine, quote};
use exports::crm::rules::pricing::{self, Guest, Order, PricedLine, Quote};

struct Pricing;

fn discount(d: &pricing::Discount) -> Discount {
    match *d {
        pricing::Discount::Percentage(v) => Discount::Percentage { value: Hundredths::from_hundredths(v), reason: None },
        pricing::Discount::Fixed(v) => Discount::Fixed { value: Money::from_minor(v), reason: None },
    }
}

/// The error's field in the WIT input record (`/lines/2/discount`).
fn problem(err: PricingError) -> RuleError {
    match err.rule_pointer() {
        Some(pointer) => RuleError::InvalidInput(vec![FieldProblem { pointer, detail: err.to_string() }]),
        None => RuleError::Overflow,
    }
}

impl Guest for Pricing {
    fn price(order: Order) -> Result<Quote, RuleError> {
        let lines: Vec<QuoteLine> = order
            .lines
            .iter()
            .map(|l| QuoteLine {
                quantity: l.quantity,
                unit_price: Money::from_minor(l.unit_price),
                discount: l.discount.as_ref().map(discount),
                tax_rate: l.tax_rate.map(Hundredths::from_hundredths),
            })
            .collect();
        let q = quote(&lines, order.discount.as_ref().map(discount).as_ref(), order.tax_rate.map(Hundredths::from_hundredths))
            .map_err(problem)?;
        Ok(Quote {
            lines: q
                .lines
                .iter()
                .map(|l| PricedLine { gross: l.gross.minor(), discount: l.discount.minor(), net: l.net.minor(), tax: l.tax.minor() })
                .collect(),
            subtotal: q.subtotal.minor(),
            discount: q.discount.minor(),
            tax: q.tax.minor(),
            total: q.total.minor(),
            explanation: q.explanation,
        })
    }
}

export!(Pricing);
