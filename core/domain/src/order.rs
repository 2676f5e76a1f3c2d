//! Orders: the items a customer buys, how they are priced, and the life of an order from draft
//! to delivery. [`price`] is the pure pricing arithmetic (a pricing plugin runs the same rules);
//! [`OrderStatus::transition`] is the status machine and names the stock movement each step
//! causes.

use crate::error::{Violations, optional_text, required_text};
use crate::money::{Currency, Hundredths, Money, Overflow};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

/// Fields of an order that clients may send back but the server computes.
pub const READ_ONLY: &[&str] =
    &["/order_number", "/subtotal", "/discount_total", "/tax_total", "/total", "/items/*/line_total", "/pricing_notes", "/priced_by"];

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Being put together; items and prices may change.
    #[default]
    Draft,
    /// Agreed with the customer; stock is reserved.
    Confirmed,
    /// Being made.
    InProduction,
    /// Sent; stock is consumed.
    Shipped,
    /// Received by the customer (final).
    Delivered,
    /// Called off (final); reserved stock is released.
    Cancelled,
}

/// The stock movement a status change causes, for every product line of the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockEffect {
    /// No movement.
    None,
    /// `reserved += quantity`.
    Reserve,
    /// `on_hand -= quantity; reserved -= quantity`; refused if `on_hand` is short.
    Consume,
    /// `reserved -= quantity`.
    Release,
}

/// A status change the machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an order cannot go from {from} to {to}")]
pub struct TransitionRefused {
    /// Current status.
    pub from: &'static str,
    /// Requested status.
    pub to: &'static str,
}

impl OrderStatus {
    /// Every status, in life order.
    pub const ALL: [OrderStatus; 6] = [Self::Draft, Self::Confirmed, Self::InProduction, Self::Shipped, Self::Delivered, Self::Cancelled];

    /// The name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Confirmed => "confirmed",
            Self::InProduction => "in_production",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether nothing can follow this status.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Cancelled)
    }

    /// Checks the step `self → to` (staying put is allowed and moves nothing) and returns the
    /// stock movement it causes. Allowed: draft → confirmed → in_production → shipped →
    /// delivered, and cancelled from any non-final status.
    pub fn transition(self, to: OrderStatus) -> Result<StockEffect, TransitionRefused> {
        use OrderStatus::*;
        match (self, to) {
            (from, to) if from == to => Ok(StockEffect::None),
            (Draft, Confirmed) => Ok(StockEffect::Reserve),
            (Confirmed, InProduction) | (Shipped, Delivered) | (Draft, Cancelled) | (Shipped, Cancelled) => Ok(StockEffect::None),
            (InProduction, Shipped) => Ok(StockEffect::Consume),
            (Confirmed | InProduction, Cancelled) => Ok(StockEffect::Release),
            (from, to) => Err(TransitionRefused { from: from.as_str(), to: to.as_str() }),
        }
    }
}

/// Payment state of an order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Nothing paid.
    #[default]
    Pending,
    /// Partly paid.
    Partial,
    /// Fully paid.
    Paid,
    /// Paid back.
    Refunded,
}

/// What an order line is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemType {
    /// One of our products (`product_id` required); moves stock.
    #[default]
    Product,
    /// Work such as installation or repair.
    Service,
    /// Anything else, described in words.
    Custom,
}

/// A discount on the whole order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Discount {
    /// A percentage of the subtotal (two decimals, 0 to 100), rounded half away from zero.
    Percentage {
        /// Percent, e.g. 12.5.
        value: Hundredths,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A fixed amount in minor units, at most the subtotal.
    Fixed {
        /// Amount in minor units.
        value: Money,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// One priced line: quantity × unit price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// Units.
    pub quantity: i64,
    /// Price per unit.
    pub unit_price: Money,
}

/// The result of pricing an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Sum of line totals.
    pub subtotal: Money,
    /// Amount taken off by the discount.
    pub discount: Money,
    /// `subtotal - discount`.
    pub total: Money,
}

/// Why an order could not be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// A number outgrew the money range.
    #[error("amounts are too large to add up")]
    Overflow(#[from] Overflow),
    /// A fixed discount larger than the subtotal.
    #[error("the discount ({discount}) is larger than the subtotal ({subtotal})")]
    DiscountExceedsSubtotal {
        /// The discount.
        discount: Money,
        /// The subtotal.
        subtotal: Money,
    },
    /// A percentage outside 0..=100 or a negative amount.
    #[error("a discount must be between 0 and 100 percent, or a non-negative amount")]
    DiscountOutOfRange,
    /// A line with no units or a negative price.
    #[error("line {0} needs a positive quantity and a non-negative unit price")]
    BadLine(usize),
    /// A line's own discount is out of range or larger than the line.
    #[error("the discount of line {0} must be between 0 and 100 percent, or an amount between 0 and the line's total")]
    BadLineDiscount(usize),
    /// A tax rate outside 0..=100 percent (`None`: the order's rate, `Some(i)`: line `i`'s).
    #[error("a tax rate must be between 0 and 100 percent")]
    TaxRateOutOfRange(Option<usize>),
}

/// Prices an order: subtotal is the sum of quantity × unit price; a percentage discount is
/// taken on the subtotal and rounded half away from zero to the minor unit; a fixed discount may
/// not exceed the subtotal. Pure and exact: integer arithmetic only. [`quote`] is the general
/// form with per-line discounts and tax; this is it without them.
pub fn price(lines: &[Line], discount: Option<&Discount>) -> Result<Totals, PricingError> {
    let lines: Vec<QuoteLine> =
        lines.iter().map(|l| QuoteLine { quantity: l.quantity, unit_price: l.unit_price, discount: None, tax_rate: None }).collect();
    let q = quote(&lines, discount, None)?;
    Ok(Totals { subtotal: q.subtotal, discount: q.discount, total: q.subtotal.checked_sub(q.discount)? })
}

/// A line as [`quote`] takes it: units, unit price, its own discount and tax rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteLine {
    /// Units, at least 1.
    pub quantity: i64,
    /// Price per unit, not negative.
    pub unit_price: Money,
    /// A discount on this line alone, taken before the order's.
    pub discount: Option<Discount>,
    /// The line's tax rate in percent; the order's rate when absent.
    pub tax_rate: Option<Hundredths>,
}

/// How [`quote`] priced one line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineQuote {
    /// quantity × unit price.
    pub gross: Money,
    /// Taken off by the line's own discount.
    pub discount: Money,
    /// `gross − discount`: the line's total.
    pub net: Money,
    /// Tax on `net` less the line's share of the order discount.
    pub tax: Money,
}

/// A priced order: per line and in all, with explanation lines for the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quote {
    /// One entry per line, in order.
    pub lines: Vec<LineQuote>,
    /// Sum of the lines' net amounts.
    pub subtotal: Money,
    /// Taken off by the order discount.
    pub discount: Money,
    /// Sum of the lines' tax.
    pub tax: Money,
    /// `subtotal − discount + tax`.
    pub total: Money,
    /// What was applied, in words (discounts and tax; nothing for a plain order).
    pub explanation: Vec<String>,
}

/// The amount a discount takes off `base`, or `None` when the discount is out of range
/// (a percentage outside 0..=100, a negative amount, or an amount larger than `base`).
fn discount_amount(discount: &Discount, base: Money) -> Result<Option<Money>, Overflow> {
    Ok(match discount {
        Discount::Percentage { value, .. } if (0..=10_000).contains(&value.hundredths()) => Some(base.percent_of(*value)?),
        Discount::Fixed { value, .. } if value.minor() >= 0 && *value <= base => Some(*value),
        _ => None,
    })
}

fn describe(discount: &Discount) -> String {
    let (what, reason) = match discount {
        Discount::Percentage { value, reason } => (format!("{value} %"), reason),
        Discount::Fixed { value, reason } => (value.to_string(), reason),
    };
    match reason {
        Some(reason) => format!("{what} ({reason})"),
        None => what,
    }
}

/// Prices an order in full. Each line is quantity × unit price less its own discount (a
/// percentage of the line rounded half away from zero, or a fixed amount at most the line);
/// the subtotal is the sum of the lines; the order discount is taken on the subtotal (a fixed
/// one may not exceed it). Tax is charged per line at the line's rate (else `tax_rate`, else
/// none) on the line's net less its share of the order discount — shared in proportion to the
/// lines' net amounts, the cents left over going to the largest remainders, earlier lines
/// first — and rounded half away from zero. Total = subtotal − discount + tax. Pure and exact.
pub fn quote(lines: &[QuoteLine], discount: Option<&Discount>, tax_rate: Option<Hundredths>) -> Result<Quote, PricingError> {
    let rate_ok = |rate: Hundredths| (0..=10_000).contains(&rate.hundredths());
    if tax_rate.is_some_and(|r| !rate_ok(r)) {
        return Err(PricingError::TaxRateOutOfRange(None));
    }
    let mut explanation = Vec::new();
    let mut priced = Vec::with_capacity(lines.len());
    let mut subtotal = Money::ZERO;
    for (i, line) in lines.iter().enumerate() {
        if line.quantity < 1 || line.unit_price.minor() < 0 {
            return Err(PricingError::BadLine(i));
        }
        if line.tax_rate.is_some_and(|r| !rate_ok(r)) {
            return Err(PricingError::TaxRateOutOfRange(Some(i)));
        }
        let gross = line.unit_price.checked_mul(line.quantity)?;
        let discount = match &line.discount {
            None => Money::ZERO,
            Some(d) => {
                let amount = discount_amount(d, gross)?.ok_or(PricingError::BadLineDiscount(i))?;
                explanation.push(format!("line {}: discount {} = -{amount}", i + 1, describe(d)));
                amount
            }
        };
        let net = gross.checked_sub(discount)?;
        subtotal = subtotal.checked_add(net)?;
        priced.push(LineQuote { gross, discount, net, tax: Money::ZERO });
    }
    let order_discount = match discount {
        None => Money::ZERO,
        Some(d) => {
            let amount = match discount_amount(d, subtotal)? {
                Some(amount) => amount,
                None => match d {
                    Discount::Fixed { value, .. } if value.minor() >= 0 => {
                        return Err(PricingError::DiscountExceedsSubtotal { discount: *value, subtotal });
                    }
                    _ => return Err(PricingError::DiscountOutOfRange),
                },
            };
            explanation.push(format!("order discount {} = -{amount}", describe(d)));
            amount
        }
    };
    let shares = share(order_discount, &priced);
    let mut tax = Money::ZERO;
    for (i, (line, share)) in priced.iter_mut().zip(shares).enumerate() {
        let Some(rate) = lines[i].tax_rate.or(tax_rate) else { continue };
        let base = line.net.checked_sub(share)?;
        line.tax = base.percent_of(rate)?;
        if rate.hundredths() != 0 {
            explanation.push(format!("line {}: tax {rate} % on {base} = {}", i + 1, line.tax));
        }
        tax = tax.checked_add(line.tax)?;
    }
    let total = subtotal.checked_sub(order_discount)?.checked_add(tax)?;
    Ok(Quote { lines: priced, subtotal, discount: order_discount, tax, total, explanation })
}

/// Splits `amount` over the lines in proportion to their net amounts, exactly: each line gets
/// the floor of its share, and the cents left over go one each to the largest remainders
/// (earlier lines first on a tie).
fn share(amount: Money, lines: &[LineQuote]) -> Vec<Money> {
    let total: i128 = lines.iter().map(|l| i128::from(l.net.minor())).sum();
    if total == 0 || amount == Money::ZERO {
        return vec![Money::ZERO; lines.len()];
    }
    let amount = i128::from(amount.minor());
    let mut parts: Vec<(i128, i128)> =
        lines.iter().map(|l| (amount * i128::from(l.net.minor()) / total, amount * i128::from(l.net.minor()) % total)).collect();
    let mut left = amount - parts.iter().map(|(q, _)| q).sum::<i128>();
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|a, b| parts[*b].1.cmp(&parts[*a].1).then(a.cmp(b)));
    for i in order {
        if left == 0 {
            break;
        }
        parts[i].0 += 1;
        left -= 1;
    }
    // Each share is at most the amount, which fits in an i64.
    parts.into_iter().map(|(q, _)| Money::from_minor(i64::try_from(q).unwrap_or(i64::MAX))).collect()
}

/// Shipping details.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Shipping {
    /// Courier, pick-up, installation visit...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Carrier's tracking number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    /// Carrier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// When it was shipped; set when the order becomes shipped if not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped_at: Option<DateTime<Utc>>,
    /// When it was delivered; set when the order becomes delivered if not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// Where it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
}

/// An order line as stored and returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderItem {
    /// What the line is.
    #[serde(rename = "type")]
    pub kind: ItemType,
    /// The product, for product lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<Uuid>,
    /// The product's name when ordered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Units.
    pub quantity: i64,
    /// Price per unit in minor units.
    pub unit_price: Money,
    /// Serial numbers of the units delivered.
    pub serial_numbers: Vec<String>,
    /// A discount on this line alone, taken before the order's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<Discount>,
    /// The line's tax rate in percent (two decimals); the order's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_rate: Option<Hundredths>,
    /// quantity × unit_price less the line's discount (read-only).
    pub line_total: Money,
}

/// An order line as a client sends it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderItemInput {
    /// What the line is; `product` when absent.
    #[serde(default, rename = "type")]
    pub kind: ItemType,
    /// Required for product lines.
    #[serde(default)]
    pub product_id: Option<Uuid>,
    /// Defaults to the product's name.
    #[serde(default)]
    pub product_name: Option<String>,
    /// Required for custom lines.
    #[serde(default)]
    pub description: Option<String>,
    /// Units, 1 when absent.
    #[serde(default)]
    pub quantity: Option<i64>,
    /// Price per unit; defaults to the product's price.
    #[serde(default)]
    pub unit_price: Option<Money>,
    /// Serial numbers.
    #[serde(default)]
    pub serial_numbers: Vec<String>,
    /// A discount on this line alone.
    #[serde(default)]
    pub discount: Option<Discount>,
    /// The line's tax rate in percent; the order's when absent.
    #[serde(default)]
    pub tax_rate: Option<Hundredths>,
}

/// An order as the store keeps it and the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    /// The customer.
    pub customer_id: Uuid,
    /// `ORD-<year>-<NNN>`, assigned by the store on create, never reused (read-only).
    pub order_number: String,
    /// Status.
    pub status: OrderStatus,
    /// Lines.
    pub items: Vec<OrderItem>,
    /// Discount on the order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount: Option<Discount>,
    /// Sum of line totals (read-only).
    pub subtotal: Money,
    /// Amount taken off by the order discount (read-only).
    pub discount_total: Money,
    /// Tax rate in percent of lines without their own; no tax when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_rate: Option<Hundredths>,
    /// Sum of the lines' tax (read-only).
    #[serde(default)]
    pub tax_total: Money,
    /// subtotal − discount + tax (read-only).
    pub total: Money,
    /// What the pricing rule applied, in words (read-only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pricing_notes: Vec<String>,
    /// The pricing plugin that priced the order, when one did (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priced_by: Option<PricedBy>,
    /// Currency of every amount.
    pub currency: Currency,
    /// Shipping.
    pub shipping: Shipping,
    /// Payment state.
    pub payment_status: PaymentStatus,
    /// Path of the invoice in the file store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_path: Option<String>,
    /// Free notes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// The user responsible for the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<Uuid>,
}

/// An order as a client sends it.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderInput {
    /// Required; the customer must exist.
    #[serde(default)]
    pub customer_id: Option<Uuid>,
    /// New orders are drafts; on update, a change moves the order through its life.
    #[serde(default)]
    pub status: Option<OrderStatus>,
    /// Lines.
    #[serde(default)]
    pub items: Vec<OrderItemInput>,
    /// Discount.
    #[serde(default)]
    pub discount: Option<Discount>,
    /// Tax rate in percent of lines without their own; no tax when absent.
    #[serde(default)]
    pub tax_rate: Option<Hundredths>,
    /// Currency, EUR when absent.
    #[serde(default)]
    pub currency: Option<Currency>,
    /// Shipping.
    #[serde(default)]
    pub shipping: Option<Shipping>,
    /// Payment state, pending when absent.
    #[serde(default)]
    pub payment_status: Option<PaymentStatus>,
    /// Invoice path.
    #[serde(default)]
    pub invoice_path: Option<String>,
    /// Notes.
    #[serde(default)]
    pub notes: Option<String>,
    /// Responsible user.
    #[serde(default)]
    pub assigned_to: Option<Uuid>,
}

/// The rule that priced an order: a plugin's name, version and the SHA-256 of its component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PricedBy {
    /// The plugin's name.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// SHA-256 of the component, hex.
    pub hash: String,
}

/// What an order line needs to know about its product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRef {
    /// Name.
    pub name: String,
    /// Price per unit.
    pub price: Money,
    /// Currency of the price.
    pub currency: Currency,
}

impl OrderInput {
    /// The products the lines refer to, for the caller to look up before [`OrderInput::parse`].
    pub fn product_ids(&self) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = self.items.iter().filter_map(|i| i.product_id).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Validates the input and prices it. `products` holds the products found for
    /// [`OrderInput::product_ids`]; an id missing from it is reported. The order number is left
    /// empty for the store to assign.
    pub fn parse(self, products: &HashMap<Uuid, ProductRef>) -> Result<Order, Violations> {
        let mut errors = Violations::default();
        if self.customer_id.is_none() {
            errors.push("/customer_id", "is required");
        }
        let currency = self.currency.unwrap_or_default();
        let mut items = Vec::with_capacity(self.items.len());
        for (i, input) in self.items.into_iter().enumerate() {
            if let Some(item) = parse_item(input, products, &currency, &format!("/items/{i}"), &mut errors) {
                items.push(item);
            }
        }
        if let Some(discount) = &self.discount {
            let (value_ok, reason) = match discount {
                Discount::Percentage { value, reason } => ((0..=10_000).contains(&value.hundredths()), reason),
                Discount::Fixed { value, reason } => (value.minor() >= 0, reason),
            };
            if !value_ok {
                errors.push("/discount/value", "a percentage must be between 0 and 100, an amount must not be negative");
            }
            errors.check("/discount/reason", optional_text(reason.as_deref().unwrap_or(""), 500));
        }
        if self.tax_rate.is_some_and(|r| !(0..=10_000).contains(&r.hundredths())) {
            errors.push("/tax_rate", "must be between 0 and 100");
        }
        let invoice_path = errors.check("/invoice_path", optional_text(self.invoice_path.as_deref().unwrap_or(""), 1_000)).flatten();
        let notes = errors.check("/notes", optional_text(self.notes.as_deref().unwrap_or(""), 20_000)).flatten();
        let mut shipping = self.shipping.unwrap_or_default();
        shipping.shipped_at = errors.check("/shipping/shipped_at", crate::storable_time(shipping.shipped_at)).flatten();
        shipping.delivered_at = errors.check("/shipping/delivered_at", crate::storable_time(shipping.delivered_at)).flatten();
        let mut order = Order {
            customer_id: self.customer_id.unwrap_or_default(),
            order_number: String::new(),
            status: self.status.unwrap_or_default(),
            items,
            discount: self.discount,
            subtotal: Money::ZERO,
            discount_total: Money::ZERO,
            tax_rate: self.tax_rate,
            tax_total: Money::ZERO,
            total: Money::ZERO,
            pricing_notes: Vec::new(),
            priced_by: None,
            currency,
            shipping,
            payment_status: self.payment_status.unwrap_or_default(),
            invoice_path,
            notes,
            assigned_to: self.assigned_to,
        };
        if errors.is_empty()
            && let Err(err) = order.reprice()
        {
            errors.push(err.pointer(), err.to_string());
        }
        errors.finish(|| order)
    }
}

fn parse_item(
    input: OrderItemInput,
    products: &HashMap<Uuid, ProductRef>,
    currency: &Currency,
    at: &str,
    errors: &mut Violations,
) -> Option<OrderItem> {
    let quantity = input.quantity.unwrap_or(1);
    if quantity < 1 {
        errors.push(format!("{at}/quantity"), "must be at least 1");
    }
    let product = match (input.kind, input.product_id) {
        (ItemType::Product, None) => {
            errors.push(format!("{at}/product_id"), "is required for a product line");
            None
        }
        (_, Some(id)) => match products.get(&id) {
            Some(p) => Some(p),
            None => {
                errors.push(format!("{at}/product_id"), format!("no product {id}"));
                None
            }
        },
        (_, None) => None,
    };
    let description = errors.check(format!("{at}/description"), optional_text(input.description.as_deref().unwrap_or(""), 2_000)).flatten();
    if input.kind == ItemType::Custom && description.is_none() {
        errors.push(format!("{at}/description"), "is required for a custom line");
    }
    let unit_price = match (input.unit_price, product) {
        (Some(price), _) => price,
        (None, Some(p)) if &p.currency == currency => p.price,
        (None, Some(p)) => {
            errors.push(
                format!("{at}/unit_price"),
                format!("is required: the product is priced in {}, the order in {}", p.currency.as_str(), currency.as_str()),
            );
            Money::ZERO
        }
        (None, None) => {
            errors.push(format!("{at}/unit_price"), "is required for a line without a product");
            Money::ZERO
        }
    };
    if unit_price.minor() < 0 {
        errors.push(format!("{at}/unit_price"), "must not be negative");
    }
    if let Some(discount) = &input.discount {
        let (ok, reason) = match discount {
            Discount::Percentage { value, reason } => ((0..=10_000).contains(&value.hundredths()), reason),
            Discount::Fixed { value, reason } => (value.minor() >= 0, reason),
        };
        if !ok {
            errors.push(format!("{at}/discount/value"), "a percentage must be between 0 and 100, an amount must not be negative");
        }
        errors.check(format!("{at}/discount/reason"), optional_text(reason.as_deref().unwrap_or(""), 500));
    }
    if input.tax_rate.is_some_and(|r| !(0..=10_000).contains(&r.hundredths())) {
        errors.push(format!("{at}/tax_rate"), "must be between 0 and 100");
    }
    let product_name = match input.product_name {
        Some(name) => errors.check(format!("{at}/product_name"), optional_text(&name, 200)).flatten(),
        None => product.map(|p| p.name.clone()),
    };
    let serial_numbers = input
        .serial_numbers
        .iter()
        .enumerate()
        .filter_map(|(j, s)| errors.check(format!("{at}/serial_numbers/{j}"), required_text(s, 100)))
        .collect();
    Some(OrderItem {
        kind: input.kind,
        product_id: input.product_id,
        product_name,
        description,
        quantity,
        unit_price,
        serial_numbers,
        discount: input.discount,
        tax_rate: input.tax_rate,
        line_total: Money::ZERO,
    })
}

impl PricingError {
    /// The JSON Pointer of the order field the error concerns.
    pub fn pointer(&self) -> String {
        match self {
            PricingError::DiscountExceedsSubtotal { .. } | PricingError::DiscountOutOfRange => "/discount/value".to_owned(),
            PricingError::BadLine(i) => format!("/items/{i}"),
            PricingError::BadLineDiscount(i) => format!("/items/{i}/discount/value"),
            PricingError::TaxRateOutOfRange(None) => "/tax_rate".to_owned(),
            PricingError::TaxRateOutOfRange(Some(i)) => format!("/items/{i}/tax_rate"),
            PricingError::Overflow(_) => "/items".to_owned(),
        }
    }

    /// The JSON Pointer of the field the error concerns in a pricing rule's input (the
    /// `crm:rules` pricing `order`: `/lines/2/tax-rate`); `None` for an overflow, which
    /// concerns no one field.
    pub fn rule_pointer(&self) -> Option<String> {
        Some(match self {
            PricingError::Overflow(_) => return None,
            PricingError::DiscountExceedsSubtotal { .. } | PricingError::DiscountOutOfRange => "/discount".to_owned(),
            PricingError::BadLine(i) => format!("/lines/{i}"),
            PricingError::BadLineDiscount(i) => format!("/lines/{i}/discount"),
            PricingError::TaxRateOutOfRange(None) => "/tax-rate".to_owned(),
            PricingError::TaxRateOutOfRange(Some(i)) => format!("/lines/{i}/tax-rate"),
        })
    }
}

/// A change to an order that its status does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateRefused {
    /// The status change is not allowed.
    #[error(transparent)]
    Transition(#[from] TransitionRefused),
    /// Items, discount, currency or customer changed after the draft stage.
    #[error("{0} can only change while the order is a draft")]
    Frozen(&'static str),
}

impl Order {
    /// Recomputes line totals, subtotal, discount, tax and total with the built-in rule
    /// ([`quote`]).
    pub fn reprice(&mut self) -> Result<(), PricingError> {
        let quote = quote(&self.quote_lines(), self.discount.as_ref(), self.tax_rate)?;
        self.apply_quote(&quote, None);
        Ok(())
    }

    /// The lines as a pricing rule takes them.
    pub fn quote_lines(&self) -> Vec<QuoteLine> {
        self.items
            .iter()
            .map(|i| QuoteLine { quantity: i.quantity, unit_price: i.unit_price, discount: i.discount.clone(), tax_rate: i.tax_rate })
            .collect()
    }

    /// Takes the amounts of a quote (one [`LineQuote`] per item, as [`quote`] returns) and
    /// records who priced the order.
    pub fn apply_quote(&mut self, quote: &Quote, priced_by: Option<PricedBy>) {
        for (item, line) in self.items.iter_mut().zip(&quote.lines) {
            item.line_total = line.net;
        }
        self.subtotal = quote.subtotal;
        self.discount_total = quote.discount;
        self.tax_total = quote.tax;
        self.total = quote.total;
        self.pricing_notes = quote.explanation.clone();
        self.priced_by = priced_by;
    }

    /// Takes the amounts `priced` was priced with (its lines' totals, the order's totals, the
    /// notes and who priced it); the items must be the same lines.
    pub fn keep_amounts_of(&mut self, priced: &Order) {
        for (item, kept) in self.items.iter_mut().zip(&priced.items) {
            item.line_total = kept.line_total;
        }
        self.subtotal = priced.subtotal;
        self.discount_total = priced.discount_total;
        self.tax_total = priced.tax_total;
        self.total = priced.total;
        self.pricing_notes = priced.pricing_notes.clone();
        self.priced_by = priced.priced_by.clone();
    }

    /// Units per product over all product lines.
    pub fn stock_lines(&self) -> Vec<(Uuid, i64)> {
        let mut lines: Vec<(Uuid, i64)> = Vec::new();
        for item in self.items.iter().filter(|i| i.kind == ItemType::Product) {
            let Some(id) = item.product_id else { continue };
            match lines.iter_mut().find(|(p, _)| *p == id) {
                Some((_, q)) => *q += item.quantity,
                None => lines.push((id, item.quantity)),
            }
        }
        lines
    }

    /// Checks that `next` may replace `self` and returns the stock movement it causes. Outside
    /// the draft stage the customer, lines, discount and currency are frozen. Stamps shipping
    /// dates when the order becomes shipped or delivered without them.
    pub fn check_update(&self, next: &mut Order, now: DateTime<Utc>) -> Result<StockEffect, UpdateRefused> {
        let effect = self.status.transition(next.status)?;
        if self.status != OrderStatus::Draft {
            if next.customer_id != self.customer_id {
                return Err(UpdateRefused::Frozen("the customer"));
            }
            if next.items != self.items {
                return Err(UpdateRefused::Frozen("the items"));
            }
            if next.discount != self.discount {
                return Err(UpdateRefused::Frozen("the discount"));
            }
            if next.currency != self.currency {
                return Err(UpdateRefused::Frozen("the currency"));
            }
            if next.tax_rate != self.tax_rate {
                return Err(UpdateRefused::Frozen("the tax rate"));
            }
        }
        if next.status == OrderStatus::Shipped && self.status != OrderStatus::Shipped && next.shipping.shipped_at.is_none() {
            next.shipping.shipped_at = Some(now);
        }
        if next.status == OrderStatus::Delivered && self.status != OrderStatus::Delivered && next.shipping.delivered_at.is_none() {
            next.shipping.delivered_at = Some(now);
        }
        next.order_number = self.order_number.clone();
        Ok(effect)
    }

    /// The text the search index holds: order number and product names, folded.
    pub fn search_text(&self) -> String {
        let mut parts = vec![self.order_number.as_str()];
        parts.extend(self.items.iter().filter_map(|i| i.product_name.as_deref()));
        crate::fold_for_search(&parts.join(" "))
    }
}

/// Formats an order number: `ORD-2026-007`, at least three digits.
pub fn order_number(year: i32, sequence: i64) -> String {
    format!("ORD-{year}-{sequence:03}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn line(quantity: i64, unit_price: i64) -> Line {
        Line { quantity, unit_price: Money::from_minor(unit_price) }
    }

    fn pct(text: &str) -> Discount {
        Discount::Percentage { value: Hundredths::parse(text).unwrap(), reason: None }
    }

    #[test]
    fn percentage_discounts_round_half_away_from_zero() {
        // 3 × 33.35 = 100.05; 10 % = 10.005 → 10.01
        let t = price(&[line(3, 3_335)], Some(&pct("10"))).unwrap();
        assert_eq!((t.subtotal.minor(), t.discount.minor(), t.total.minor()), (10_005, 1_001, 9_004));
        // 12.5 % of 19.99 = 2.49875 → 2.50
        let t = price(&[line(1, 1_999)], Some(&pct("12.5"))).unwrap();
        assert_eq!((t.discount.minor(), t.total.minor()), (250, 1_749));
        // 0.01 % of 1.00 = 0.0001 → 0.00
        assert_eq!(price(&[line(1, 100)], Some(&pct("0.01"))).unwrap().discount, Money::ZERO);
        assert_eq!(price(&[line(2, 500)], Some(&pct("100"))).unwrap().total, Money::ZERO);
    }

    #[test]
    fn fixed_discounts() {
        let fixed = |v| Discount::Fixed { value: Money::from_minor(v), reason: Some("loyal parish".into()) };
        let t = price(&[line(2, 85_000), line(4, 1_250)], Some(&fixed(10_000))).unwrap();
        assert_eq!((t.subtotal.minor(), t.total.minor()), (175_000, 165_000));
        assert_eq!(price(&[line(1, 100)], Some(&fixed(100))).unwrap().total, Money::ZERO);
        assert!(matches!(price(&[line(1, 100)], Some(&fixed(101))), Err(PricingError::DiscountExceedsSubtotal { .. })));
        assert_eq!(price(&[line(1, 100)], Some(&fixed(-1))), Err(PricingError::DiscountOutOfRange));
    }

    #[test]
    fn bad_lines_and_overflow() {
        assert_eq!(price(&[line(1, 1), line(0, 5)], None), Err(PricingError::BadLine(1)));
        assert_eq!(price(&[line(1, -5)], None), Err(PricingError::BadLine(0)));
        assert!(matches!(price(&[line(2, i64::MAX)], None), Err(PricingError::Overflow(_))));
        assert_eq!(price(&[line(1, 100)], Some(&pct("100.01"))), Err(PricingError::DiscountOutOfRange));
        assert_eq!(price(&[], None).unwrap().total, Money::ZERO);
    }

    fn qline(quantity: i64, unit_price: i64, discount: Option<Discount>, tax: Option<&str>) -> QuoteLine {
        QuoteLine { quantity, unit_price: Money::from_minor(unit_price), discount, tax_rate: tax.map(|t| Hundredths::parse(t).unwrap()) }
    }

    #[test]
    fn quotes_take_line_discounts_then_the_order_discount_then_tax() {
        let fixed = |v| Discount::Fixed { value: Money::from_minor(v), reason: None };
        // line 1: 2 × 100.00 − 10 % = 180.00; line 2: 1 × 50.00 − 5.00 = 45.00 → 225.00
        let lines = [qline(2, 10_000, Some(pct("10")), None), qline(1, 5_000, Some(fixed(500)), Some("13"))];
        let q = quote(&lines, Some(&fixed(2_500)), Some(Hundredths::parse("24").unwrap())).unwrap();
        assert_eq!(
            q.lines[0],
            LineQuote {
                gross: Money::from_minor(20_000),
                discount: Money::from_minor(2_000),
                net: Money::from_minor(18_000),
                tax: Money::from_minor(3_840)
            }
        );
        // the 25.00 order discount is shared 20.00 / 5.00; tax 24 % of 160.00, 13 % of 40.00
        assert_eq!(q.lines[1].tax, Money::from_minor(520));
        assert_eq!((q.subtotal.minor(), q.discount.minor(), q.tax.minor(), q.total.minor()), (22_500, 2_500, 4_360, 24_360));
        assert_eq!(q.explanation.len(), 5, "{:?}", q.explanation);
        assert_eq!(quote(&[qline(1, 100, Some(fixed(101)), None)], None, None), Err(PricingError::BadLineDiscount(0)));
        assert_eq!(quote(&[qline(1, 100, None, Some("100.01"))], None, None), Err(PricingError::TaxRateOutOfRange(Some(0))));
        assert_eq!(quote(&[], None, Some(Hundredths::from_hundredths(-1))), Err(PricingError::TaxRateOutOfRange(None)));
    }

    #[test]
    fn plain_quotes_agree_with_price() {
        let lines = [line(3, 3_335), line(1, 1)];
        let q =
            quote(&lines.iter().map(|l| qline(l.quantity, l.unit_price.minor(), None, None)).collect::<Vec<_>>(), Some(&pct("10")), None)
                .unwrap();
        let t = price(&lines, Some(&pct("10"))).unwrap();
        assert_eq!((q.subtotal, q.discount, q.total, q.tax), (t.subtotal, t.discount, t.total, Money::ZERO));
        assert_eq!(q.explanation, ["order discount 10 % = -10.01"]);
    }

    #[test]
    fn every_transition_is_allowed_or_refused_as_specified() {
        use OrderStatus::*;
        let allowed: &[(OrderStatus, OrderStatus, StockEffect)] = &[
            (Draft, Confirmed, StockEffect::Reserve),
            (Confirmed, InProduction, StockEffect::None),
            (InProduction, Shipped, StockEffect::Consume),
            (Shipped, Delivered, StockEffect::None),
            (Draft, Cancelled, StockEffect::None),
            (Confirmed, Cancelled, StockEffect::Release),
            (InProduction, Cancelled, StockEffect::Release),
            (Shipped, Cancelled, StockEffect::None),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                let expected = if from == to {
                    Some(StockEffect::None)
                } else {
                    allowed.iter().find(|(f, t, _)| *f == from && *t == to).map(|(_, _, e)| *e)
                };
                match (from.transition(to), expected) {
                    (Ok(effect), Some(e)) => assert_eq!(effect, e, "{from:?} → {to:?}"),
                    (Err(_), None) => {}
                    (got, want) => panic!("{from:?} → {to:?}: got {got:?}, expected {want:?}"),
                }
            }
        }
    }

    #[test]
    fn orders_parse_with_product_defaults_and_paths() {
        let product_id = Uuid::now_v7();
        let products = HashMap::from([(
            product_id,
            ProductRef { name: "BC-4".into(), price: Money::from_minor(85_000), currency: Currency::default() },
        )]);
        let input: OrderInput = serde_json::from_value(json!({
            "customer_id": Uuid::now_v7(),
            "items": [{"product_id": product_id, "quantity": 2}, {"type": "service", "description": "installation", "unit_price": 15_000}],
            "discount": {"type": "percentage", "value": 5}
        }))
        .unwrap();
        let order = input.parse(&products).unwrap();
        assert_eq!(order.items[0].product_name.as_deref(), Some("BC-4"));
        assert_eq!(order.items[0].line_total.minor(), 170_000);
        assert_eq!(order.subtotal.minor(), 185_000);
        assert_eq!(order.discount_total.minor(), 9_250);
        assert_eq!(order.total.minor(), 175_750);
        assert_eq!(order.stock_lines(), vec![(product_id, 2)]);

        let bad: OrderInput = serde_json::from_value(json!({
            "items": [{"product_id": Uuid::now_v7()}, {"type": "custom", "quantity": 0}],
            "discount": {"type": "fixed", "value": 10}
        }))
        .unwrap();
        let pointers: Vec<_> = bad.parse(&products).unwrap_err().0.into_iter().map(|e| e.pointer).collect();
        assert_eq!(
            pointers,
            [
                "/customer_id",
                "/items/0/product_id",
                "/items/0/unit_price",
                "/items/1/quantity",
                "/items/1/description",
                "/items/1/unit_price"
            ]
        );
    }

    #[test]
    fn confirmed_orders_freeze_their_lines() {
        let products = HashMap::new();
        let input = || {
            serde_json::from_value::<OrderInput>(
                json!({"customer_id": Uuid::nil(), "items": [{"type": "service", "description": "x", "unit_price": 100}]}),
            )
            .unwrap()
        };
        let mut current = input().parse(&products).unwrap();
        current.status = OrderStatus::Confirmed;
        let mut next = current.clone();
        next.items[0].quantity = 2;
        next.reprice().unwrap();
        assert_eq!(current.check_update(&mut next, Utc::now()), Err(UpdateRefused::Frozen("the items")));
        let mut next = current.clone();
        next.status = OrderStatus::Delivered;
        assert!(matches!(current.check_update(&mut next, Utc::now()), Err(UpdateRefused::Transition(_))));
        let mut next = current.clone();
        next.status = OrderStatus::InProduction;
        next.payment_status = PaymentStatus::Paid;
        assert_eq!(current.check_update(&mut next, Utc::now()), Ok(StockEffect::None));
    }

    #[test]
    fn an_order_keeps_the_amounts_it_was_priced_with() {
        let input: OrderInput = serde_json::from_value(json!({
            "customer_id": Uuid::nil(),
            "items": [{"type": "service", "description": "tuning", "unit_price": 12_000, "quantity": 2},
                      {"type": "service", "description": "visit", "unit_price": 4_500}],
            "discount": {"type": "percentage", "value": 10}
        }))
        .unwrap();
        let mut priced = input.parse(&HashMap::new()).unwrap();
        priced.priced_by = Some(PricedBy { plugin: "volume".into(), version: "1.0.0".into(), hash: "ab".into() });
        assert!(!priced.pricing_notes.is_empty());
        let mut next = priced.clone();
        let one_cent = QuoteLine { quantity: 1, unit_price: Money::from_minor(1), discount: None, tax_rate: None };
        next.apply_quote(&quote(&[one_cent.clone(), one_cent], None, None).unwrap(), None);
        assert_ne!(next, priced);
        next.keep_amounts_of(&priced);
        assert_eq!(next, priced, "line totals, totals, notes and who priced it all come back");
    }

    #[test]
    fn order_numbers() {
        assert_eq!(order_number(2026, 7), "ORD-2026-007");
        assert_eq!(order_number(2026, 1234), "ORD-2026-1234");
    }

    proptest! {
        /// Total = subtotal − discount, the discount never exceeds the subtotal, and the
        /// subtotal is exactly the sum of the lines.
        #[test]
        fn totals_add_up(lines in prop::collection::vec((1i64..1_000, 0i64..10_000_000), 0..20), bps in 0i64..=10_000) {
            let lines: Vec<Line> = lines.into_iter().map(|(q, p)| line(q, p)).collect();
            let discount = Discount::Percentage { value: Hundredths::from_hundredths(bps), reason: None };
            let t = price(&lines, Some(&discount)).unwrap();
            let exact: i128 = lines.iter().map(|l| i128::from(l.quantity) * i128::from(l.unit_price.minor())).sum();
            prop_assert_eq!(i128::from(t.subtotal.minor()), exact);
            prop_assert!(t.discount <= t.subtotal && t.discount.minor() >= 0);
            prop_assert_eq!(t.total.minor(), t.subtotal.minor() - t.discount.minor());
        }

        /// The order discount is shared out exactly: the taxable bases add up to subtotal −
        /// discount, so a single tax rate over all lines is never off by more than a cent a line.
        #[test]
        fn discount_shares_add_up(lines in prop::collection::vec((1i64..100, 0i64..1_000_000), 1..10), bps in 0i64..=10_000) {
            let lines: Vec<QuoteLine> = lines.into_iter().map(|(q, p)| qline(q, p, None, Some("100"))).collect();
            let discount = Discount::Percentage { value: Hundredths::from_hundredths(bps), reason: None };
            let q = quote(&lines, Some(&discount), None).unwrap();
            prop_assert_eq!(q.tax.minor(), q.subtotal.minor() - q.discount.minor());
            prop_assert_eq!(q.total.minor(), 2 * (q.subtotal.minor() - q.discount.minor()));
        }
    }
}
