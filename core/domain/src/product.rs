//! Products: what the business sells, what each unit costs to make, and how many are in stock.

use crate::error::{Violations, optional_text, required_text};
use crate::money::{Currency, Hundredths, Money, Overflow};
use serde::{Deserialize, Serialize};

/// Fields of a product that clients may send back but the server computes or owns.
pub const READ_ONLY: &[&str] = &["/costs/total", "/stock/reserved", "/stock/available"];

/// Kind of product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductCategory {
    /// A bell controller.
    Controller,
    /// A bell striker.
    Striker,
    /// A tower clock.
    Clock,
    /// A spare part.
    Part,
    /// A repair, sold as a service.
    RepairService,
}

impl ProductCategory {
    /// The name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Controller => "controller",
            Self::Striker => "striker",
            Self::Clock => "clock",
            Self::Part => "part",
            Self::RepairService => "repair_service",
        }
    }
}

/// What one unit costs to make, in minor units of the product's currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Costs {
    /// Printed circuit board.
    #[serde(default)]
    pub pcb: Money,
    /// Electronic components.
    #[serde(default)]
    pub components: Money,
    /// Enclosure.
    #[serde(default)]
    pub enclosure: Money,
    /// Hours of labour per unit (two decimals).
    #[serde(default)]
    pub labor_hours: Hundredths,
    /// Labour cost per hour.
    #[serde(default)]
    pub labor_rate: Money,
    /// Inbound shipping per unit.
    #[serde(default)]
    pub shipping_in: Money,
    /// Sum of the above, labour as hours × rate rounded to the minor unit (read-only).
    #[serde(default)]
    pub total: Money,
}

impl Costs {
    /// The total cost of one unit.
    pub fn compute_total(&self) -> Result<Money, Overflow> {
        self.pcb
            .checked_add(self.components)?
            .checked_add(self.enclosure)?
            .checked_add(self.labor_rate.mul_hundredths(self.labor_hours)?)?
            .checked_add(self.shipping_in)
    }
}

/// Units in stock. Only `on_hand` is set by clients; orders move `reserved`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stock {
    /// Units physically here.
    #[serde(default)]
    pub on_hand: i64,
    /// Units promised to confirmed orders not yet shipped (read-only).
    #[serde(default)]
    pub reserved: i64,
    /// `on_hand - reserved`; negative when confirmed orders need more than is here, which is
    /// what must still be made (read-only).
    #[serde(default)]
    pub available: i64,
}

impl Stock {
    /// Stock with `available` computed.
    pub fn new(on_hand: i64, reserved: i64) -> Self {
        Stock { on_hand, reserved, available: on_hand - reserved }
    }
}

/// A product as the store keeps it and the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    /// Name.
    pub name: String,
    /// Stock-keeping unit, unique (compared case-insensitively).
    pub sku: String,
    /// Category.
    pub category: ProductCategory,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Sale price per unit in minor units.
    pub price: Money,
    /// Currency of price and costs.
    pub currency: Currency,
    /// Cost breakdown per unit.
    pub costs: Costs,
    /// Stock levels.
    pub stock: Stock,
    /// The product's folder in the file store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nextcloud_folder: Option<String>,
    /// The console device type this product is, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linked_device_type: Option<String>,
    /// Whether it is on sale.
    pub active: bool,
}

/// A product as a client sends it.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    /// Required.
    #[serde(default)]
    pub name: Option<String>,
    /// Required, unique.
    #[serde(default)]
    pub sku: Option<String>,
    /// Required.
    #[serde(default)]
    pub category: Option<ProductCategory>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Price in minor units; required.
    #[serde(default)]
    pub price: Option<Money>,
    /// Currency, EUR when absent.
    #[serde(default)]
    pub currency: Option<Currency>,
    /// Cost breakdown.
    #[serde(default)]
    pub costs: Option<Costs>,
    /// Stock; only `on_hand` is read.
    #[serde(default)]
    pub stock: Option<Stock>,
    /// File store folder.
    #[serde(default)]
    pub nextcloud_folder: Option<String>,
    /// Console device type.
    #[serde(default)]
    pub linked_device_type: Option<String>,
    /// On sale; true when absent.
    #[serde(default)]
    pub active: Option<bool>,
}

impl ProductInput {
    /// Validates the input and computes derived fields. `reserved` stays with the store.
    pub fn parse(self) -> Result<Product, Violations> {
        let mut errors = Violations::default();
        let name = errors.check("/name", required_text(self.name.as_deref().unwrap_or(""), 200));
        let sku = errors.check("/sku", required_text(self.sku.as_deref().unwrap_or(""), 64));
        if self.category.is_none() {
            errors.push("/category", "is required: one of controller, striker, clock, part, repair_service");
        }
        let description = errors.check("/description", optional_text(self.description.as_deref().unwrap_or(""), 20_000)).flatten();
        let price = self.price.unwrap_or_default();
        match self.price {
            None => errors.push("/price", "is required, in minor units (cents)"),
            Some(p) if p.minor() < 0 => errors.push("/price", "must not be negative"),
            Some(_) => {}
        }
        let mut costs = self.costs.unwrap_or_default();
        for (field, value) in [
            ("pcb", costs.pcb),
            ("components", costs.components),
            ("enclosure", costs.enclosure),
            ("labor_rate", costs.labor_rate),
            ("shipping_in", costs.shipping_in),
        ] {
            if value.minor() < 0 {
                errors.push(format!("/costs/{field}"), "must not be negative");
            }
        }
        if costs.labor_hours.hundredths() < 0 {
            errors.push("/costs/labor_hours", "must not be negative");
        }
        if let Some(total) = errors.check("/costs", costs.compute_total()) {
            costs.total = total;
        }
        let on_hand = self.stock.map(|s| s.on_hand).unwrap_or(0);
        if on_hand < 0 {
            errors.push("/stock/on_hand", "must not be negative");
        }
        let nextcloud_folder =
            errors.check("/nextcloud_folder", optional_text(self.nextcloud_folder.as_deref().unwrap_or(""), 1_000)).flatten();
        let linked_device_type =
            errors.check("/linked_device_type", optional_text(self.linked_device_type.as_deref().unwrap_or(""), 100)).flatten();
        errors.finish(|| Product {
            name: name.unwrap_or_default(),
            sku: sku.unwrap_or_default(),
            category: self.category.unwrap_or(ProductCategory::Part),
            description,
            price,
            currency: self.currency.unwrap_or_default(),
            costs,
            stock: Stock::new(on_hand, 0),
            nextcloud_folder,
            linked_device_type,
            active: self.active.unwrap_or(true),
        })
    }
}

impl Product {
    /// The key that makes SKUs unique: trimmed and upper case.
    pub fn sku_key(&self) -> String {
        self.sku.trim().to_uppercase()
    }

    /// The text the search index holds: name and SKU, folded.
    pub fn search_text(&self) -> String {
        crate::fold_for_search(&format!("{} {}", self.name, self.sku))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cost_total_includes_rounded_labour() {
        let p: ProductInput = serde_json::from_value(json!({
            "name": "Bell controller BC-4", "sku": "bc-4", "category": "controller", "price": 85_000,
            "costs": {"pcb": 1_200, "components": 4_550, "enclosure": 2_000, "labor_hours": 2.5, "labor_rate": 1_833, "shipping_in": 300},
            "stock": {"on_hand": 5}
        }))
        .unwrap();
        let p = p.parse().unwrap();
        // 2.5 h × 18.33 = 45.825 → 45.83
        assert_eq!(p.costs.total.minor(), 1_200 + 4_550 + 2_000 + 4_583 + 300);
        assert_eq!(p.stock, Stock::new(5, 0));
        assert_eq!(p.sku_key(), "BC-4");
        assert!(p.active);
    }

    #[test]
    fn required_and_negative_fields() {
        let errors =
            serde_json::from_value::<ProductInput>(json!({"costs": {"pcb": -1}, "stock": {"on_hand": -2}})).unwrap().parse().unwrap_err();
        let pointers: Vec<_> = errors.0.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/name", "/sku", "/category", "/price", "/costs/pcb", "/stock/on_hand"]);
    }
}
