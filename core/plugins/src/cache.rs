//! Compiled components, cached on disk as precompiled artifacts so that a plugin is compiled
//! once. An artifact is named by the SHA-256 of the component and a hash of the engine's
//! settings (wasmtime's compatibility hash), so a different wasmtime version or configuration
//! never picks up an artifact it cannot run. Files are written to a temporary name and renamed,
//! so readers never see half an artifact and concurrent writers do not clash.

use crate::error::LoadError;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of precompiled artifacts for one engine configuration.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactCache {
    dir: Option<PathBuf>,
}

/// A stable fingerprint of the engine's settings, for artifact names.
fn engine_key(engine: &Engine) -> String {
    // The hasher is fixed by the binary: a different build may disagree and recompile, which
    // is correct as well as harmless.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

impl ArtifactCache {
    /// A cache under `dir` (created on first write), or none.
    pub(crate) fn new(dir: Option<&Path>, engine: &Engine) -> Self {
        ArtifactCache { dir: dir.map(|d| d.join(format!("wasmtime-{}", engine_key(engine)))) }
    }

    fn path(&self, hash: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{hash}.cwasm")))
    }

    /// Whether the artifact for `hash` is on disk.
    pub(crate) fn contains(&self, hash: &str) -> bool {
        self.path(hash).is_some_and(|p| p.is_file())
    }

    /// The component with SHA-256 `hash`: loaded from its artifact, or compiled (and the
    /// artifact written). Returns whether it came from the cache.
    pub(crate) fn load(&self, engine: &Engine, hash: &str, bytes: &[u8]) -> Result<(Component, bool), LoadError> {
        if let Some(path) = self.path(hash) {
            if path.is_file() {
                match load_artifact(engine, &path) {
                    Ok(component) => return Ok((component, true)),
                    Err(err) => {
                        tracing::warn!(path = %path.display(), error = %err, "unusable plugin artifact; compiling again");
                    }
                }
            }
            let artifact = engine.precompile_component(bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
            write_atomically(&path, &artifact).map_err(|e| LoadError::Cache(format!("cannot write {}: {e}", path.display())))?;
            let component = load_artifact(engine, &path).map_err(LoadError::Cache)?;
            return Ok((component, false));
        }
        let component = Component::new(engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        Ok((component, false))
    }
}

/// Loads a precompiled artifact written by [`ArtifactCache::load`].
#[allow(unsafe_code)]
fn load_artifact(engine: &Engine, path: &Path) -> Result<Component, String> {
    // SAFETY: wasmtime trusts a precompiled artifact to be one it produced. Only this module
    // writes into the cache directory, always from `Engine::precompile_component`, through a
    // temporary file renamed into place; the file name carries the engine's compatibility
    // hash, and wasmtime itself refuses artifacts from another version or configuration. The
    // cache directory must be as trusted as the binary (see docs/ARCHITECTURE.md, Plugins).
    unsafe { Component::deserialize_file(engine, path) }.map_err(|e| format!("{e:#}"))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), uuid::Uuid::now_v7()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Writes `bytes` to `path` through a temporary file and a rename (shared with the registry).
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically(path, bytes)
}
