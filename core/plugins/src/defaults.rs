//! The default plugins, built from `plugins/` by `build.rs` and embedded in the binary, so that
//! `crm serve` with no configuration has a matcher and a pricing rule. The other components the
//! build makes (the template and the hostile test fixtures) are not embedded; their paths are
//! given for tests and benchmarks of this repository.

/// The default customer matcher (`plugins/matcher`), a `matcher-plugin` component.
pub const MATCHER_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/crm_plugin_matcher.wasm"));

/// The default pricing rule (`plugins/pricing`), a `pricing-plugin` component.
pub const PRICING_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/crm_plugin_pricing.wasm"));

/// The registry name of the default matcher.
pub const MATCHER_NAME: &str = "crm-matcher";

/// The registry name of the default pricing rule.
pub const PRICING_NAME: &str = "crm-pricing";

/// The version the default plugins are registered with: this crate's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the build left a component it made (`crm_plugin_template`, `crm_plugin_hostile`,
/// `crm_plugin_hostile_io`, ...), for tests and benchmarks run from this repository.
pub fn built_component(file_stem: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("OUT_DIR")).join(format!("{file_stem}.wasm"))
}
