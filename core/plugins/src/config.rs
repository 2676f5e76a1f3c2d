//! Settings of the plugin host: the per-call deadline (fuel), the memory cap, how many failures
//! in a row disable a plugin, where artifacts are cached, and which WASI imports are refused.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How the plugin host runs plugins. Every field has a default (`HostConfig::default()`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Fuel (roughly, WebAssembly instructions) one call may burn before it is stopped: the
    /// per-call deadline. Deterministic, unlike a wall-clock deadline.
    pub fuel_per_call: u64,
    /// Fuel for warming up a fresh instance before it serves calls: a matcher is asked once
    /// for the keys of a phone number and an e-mail address, so that lazy start-up work (the
    /// default matcher loads its phone-numbering tables on first use) is not charged to a call.
    pub warmup_fuel: u64,
    /// Warm up fresh matcher instances (see `warmup_fuel`). Off only to measure instantiation
    /// alone.
    pub warm_up: bool,
    /// Largest linear memory a plugin instance may grow to, in bytes.
    pub memory_limit_bytes: u64,
    /// Failures in a row (trap, timeout, memory, invalid output) after which a plugin is
    /// disabled automatically. A rule's typed refusal of its input is not a failure.
    pub max_consecutive_failures: u32,
    /// Warm instances kept per plugin for reuse.
    pub max_idle_instances: usize,
    /// Instances alive at once over all plugins (sizes the pooling allocator).
    pub max_instances: u32,
    /// Where compiled artifacts are kept; `None` compiles in memory on every load.
    pub cache_dir: Option<PathBuf>,
    /// Refuse components that import `wasi:filesystem` or `wasi:sockets` at all. When false
    /// (the default) such imports are linked to a deny-all context: no directory is preopened
    /// and every socket call traps, so language runtimes that import them (CPython) still load.
    pub deny_io_imports: bool,
    /// Region for phone numbers written without a country code, passed to matchers.
    pub default_region: String,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            fuel_per_call: 100_000_000,
            warmup_fuel: 10_000_000_000,
            warm_up: true,
            memory_limit_bytes: 128 * 1024 * 1024,
            max_consecutive_failures: 5,
            max_idle_instances: 8,
            max_instances: 128,
            cache_dir: None,
            deny_io_imports: false,
            default_region: "GR".into(),
        }
    }
}

impl HostConfig {
    /// Checks the settings before a host is built.
    pub fn validate(&self) -> Result<(), String> {
        if self.fuel_per_call == 0 || self.warmup_fuel == 0 {
            return Err("plugins.fuel_per_call and plugins.warmup_fuel must be positive".into());
        }
        if self.memory_limit_bytes < 1024 * 1024 || self.memory_limit_bytes > 4 * 1024 * 1024 * 1024 {
            return Err("plugins.memory_limit_bytes must be between 1 MiB and 4 GiB".into());
        }
        if self.max_consecutive_failures == 0 {
            return Err("plugins.max_consecutive_failures must be at least 1".into());
        }
        if self.max_instances < 4 {
            return Err("plugins.max_instances must be at least 4".into());
        }
        crm_domain::contact::Region::parse(&self.default_region).map(|_| ())
    }
}
