//! Pricing through plugins: the request a pricing rule gets (built from an order), and the
//! built-in rule run natively — the same `crm_domain::order::quote` the default pricing plugin
//! compiles to WebAssembly, with its errors named the way the plugin names them — for
//! comparisons and benchmarks.

use crate::error::{FieldProblem, RuleError};
use crm_domain::money::{Hundredths, Money};
use crm_domain::order::{Discount, ItemType, Order, Quote, QuoteLine, quote};

/// One line to price (`crm:rules/pricing.line`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceLine {
    /// What the line is.
    pub kind: ItemType,
    /// The product's id, for product lines.
    pub product_id: Option<String>,
    /// Units.
    pub quantity: i64,
    /// Price per unit.
    pub unit_price: Money,
    /// The line's own discount.
    pub discount: Option<Discount>,
    /// The line's tax rate.
    pub tax_rate: Option<Hundredths>,
}

/// An order to price (`crm:rules/pricing.order`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceRequest {
    /// ISO 4217 code.
    pub currency: String,
    /// The customer's id.
    pub customer_id: Option<String>,
    /// The lines.
    pub lines: Vec<PriceLine>,
    /// The order discount.
    pub discount: Option<Discount>,
    /// The order's tax rate.
    pub tax_rate: Option<Hundredths>,
}

impl PriceRequest {
    /// The request for an order as it stands.
    pub fn from_order(order: &Order) -> Self {
        PriceRequest {
            currency: order.currency.as_str().to_owned(),
            customer_id: (!order.customer_id.is_nil()).then(|| order.customer_id.to_string()),
            lines: order
                .items
                .iter()
                .map(|i| PriceLine {
                    kind: i.kind,
                    product_id: i.product_id.map(|p| p.to_string()),
                    quantity: i.quantity,
                    unit_price: i.unit_price,
                    discount: i.discount.clone(),
                    tax_rate: i.tax_rate,
                })
                .collect(),
            discount: order.discount.clone(),
            tax_rate: order.tax_rate,
        }
    }
}

/// The built-in rule, run natively, answering exactly as the default pricing plugin does.
pub fn price_natively(request: &PriceRequest) -> Result<Quote, RuleError> {
    let lines: Vec<QuoteLine> = request
        .lines
        .iter()
        .map(|l| QuoteLine { quantity: l.quantity, unit_price: l.unit_price, discount: l.discount.clone(), tax_rate: l.tax_rate })
        .collect();
    quote(&lines, request.discount.as_ref(), request.tax_rate).map_err(|err| match err.rule_pointer() {
        Some(pointer) => RuleError::InvalidInput(vec![FieldProblem { pointer, detail: err.to_string() }]),
        None => RuleError::Overflow,
    })
}

/// Maps a pointer into the WIT pricing input (`/lines/2/tax-rate`) to the order field it
/// stands for in the HTTP API (`/items/2/tax_rate`).
pub fn order_pointer(wit_pointer: &str) -> String {
    let mut out = String::new();
    for (i, segment) in wit_pointer.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(match segment {
            "lines" if i == 1 => "items",
            other => other,
        });
    }
    let out = out.replace('-', "_");
    if out == "/discount" || (out.starts_with("/items/") && out.ends_with("/discount")) { format!("{out}/value") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wit_pointers_map_to_order_fields() {
        assert_eq!(order_pointer("/lines/2/tax-rate"), "/items/2/tax_rate");
        assert_eq!(order_pointer("/lines/0/discount"), "/items/0/discount/value");
        assert_eq!(order_pointer("/discount"), "/discount/value");
        assert_eq!(order_pointer("/lines/1"), "/items/1");
    }
}
