//! The crm-hub plugin host: customer-matching and order-pricing rules that differ per business,
//! shipped as sandboxed WebAssembly components built against the versioned WIT package
//! `crm:rules` (`wit/crm-rules/<version>/`), so a developer changes a rule without forking the
//! core.
//!
//! * [`PluginHost`] owns the one wasmtime `Engine` and the on-disk artifact cache; it inspects
//!   components (world, WIT version, imports) and loads them into [`LoadedPlugin`]s, which run
//!   each call on a warm instance with a fuel deadline and a memory cap, check the answer,
//!   classify failures and disable a plugin that keeps failing.
//! * [`Registry`] keeps the plugins of an installation on disk (blobs and metadata), loads them
//!   at start, installs the embedded defaults ([`defaults`]), manages uploads, enabling,
//!   rollback and deletion, and swaps the active plugins atomically.
//! * [`Matcher`] is the host-side matching API for the ingest; [`Registry::price`] prices
//!   orders.
//!
//! ```no_run
//! use crm_plugins::{HostConfig, PluginHost, defaults, pricing::PriceRequest};
//! let host = PluginHost::new(HostConfig::default()).unwrap();
//! let plugin = host.load("crm-pricing", "0.1.0", defaults::PRICING_WASM).unwrap();
//! let request = PriceRequest { currency: "EUR".into(), customer_id: None, lines: vec![], discount: None, tax_rate: None };
//! assert_eq!(plugin.price(&request).unwrap().total.minor(), 0);
//! ```

mod bindings;
mod cache;
pub mod config;
pub mod defaults;
mod error;
pub mod kit;
pub mod matching;
mod plugin;
pub mod pricing;
mod registry;
mod sandbox;

pub use bindings::SUPPORTED_VERSIONS;
pub use cache::CacheStats;
pub use config::HostConfig;
pub use crm_domain::sha256_hex;
pub use error::{CallError, FailureKind, FieldProblem, LoadError, RegistryError, RuleError};
pub use matching::Matcher;
pub use plugin::{ComponentInfo, LoadedPlugin, PluginHost, PluginId, World};
pub use registry::{PluginSummary, Registry, RegistryConfig, Role, VersionInfo};
