//! Where compiled components are kept between runs, so that a plugin is compiled once per
//! machine rather than at every start.
//!
//! This is wasmtime's own artifact cache: an artifact is named by a SHA-256 over the component
//! and the engine's settings and wasmtime version (so another version or configuration never
//! picks up an artifact it cannot run), written to a temporary file and renamed, and an artifact
//! that does not decompress or load is compiled again. Loading through it needs no `unsafe` in
//! this workspace, unlike `Component::deserialize_file`.

use std::path::Path;
use wasmtime::{Cache, CacheConfig};

/// How many artifacts came from the cache and how many were compiled (and then cached), since
/// the host started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads served by a cached artifact.
    pub hits: usize,
    /// Loads that compiled the component and wrote its artifact.
    pub misses: usize,
}

/// The artifact cache under `dir` (created if missing).
pub(crate) fn artifact_cache(dir: &Path) -> Result<Cache, String> {
    let problem = |e: &dyn std::fmt::Display| format!("plugin artifact cache {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| problem(&e))?;
    // wasmtime wants an absolute path; `plugins_dir` is usually given relative to the working
    // directory.
    let dir = dir.canonicalize().map_err(|e| problem(&e))?;
    let mut config = CacheConfig::new();
    config.with_directory(dir.join("wasmtime"));
    Cache::new(config).map_err(|e| problem(&format_args!("{e:#}")))
}

/// The counters of `cache`.
pub(crate) fn stats(cache: &Cache) -> CacheStats {
    CacheStats { hits: cache.cache_hits(), misses: cache.cache_misses() }
}
