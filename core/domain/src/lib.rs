//! The crm-hub domain: validated value types, the records the CRM keeps, and the pure rules
//! that govern them (order pricing, order status transitions, search folding).
//!
//! Nothing here does I/O. Requests arrive as loosely typed inputs (`*Input`), are parsed once
//! into validated data with every problem reported by its JSON path, and the store persists that
//! data. The pricing function is deliberately pure so that a WASM pricing plugin can run the
//! same arithmetic.
//!
//! ```
//! use crm_domain::{fold_for_search, money::Money, order::{Line, price}};
//! assert_eq!(fold_for_search("Στέλιος ΜΠΙΜΠΗΣ"), "στελιοσ μπιμπησ");
//! let totals = price(&[Line { quantity: 2, unit_price: Money::from_minor(1_050) }], None).unwrap();
//! assert_eq!(totals.total.minor(), 2_100);
//! ```

pub mod access;
pub mod audit;
pub mod comms;
pub mod contact;
pub mod customer;
pub mod dialling;
pub mod error;
pub mod matching;
pub mod money;
pub mod order;
pub mod product;
pub mod record;
mod search;
pub mod user;

pub use error::{FieldError, Violations, deserialize_storable_time, storable_time};
pub use record::{Record, strip_read_only};
pub use search::{fold_for_search, search_terms};

/// SHA-256 of `bytes`, in lower-case hex: the one digest crm-hub records and compares (files,
/// token hashes, request digests, plugin hashes).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
