//! The plugin registry of an installation: which plugins exist, their versions (the last is
//! current, the ones before it are what a rollback returns to), whether each is enabled, and
//! which plugin serves each rule (its role). The state and the component blobs live in a
//! directory (`registry.json`, `blobs/<sha256>.wasm`), so they survive restarts; compiled
//! artifacts go to `cache/`. Components dropped into `autoload/` are registered at start.
//!
//! The plugin serving each rule sits behind an `ArcSwap`: a call takes the current
//! `Arc<LoadedPlugin>` and finishes on it, while an upload, rollback or enable swaps in the new
//! one for the calls that start after it. No call fails because of a swap.

use crate::config::HostConfig;
use crate::defaults;
use crate::error::{CallError, LoadError, RegistryError};
use crate::plugin::{ComponentInfo, LoadedPlugin, PluginHost, PluginId, World};
use crate::pricing::PriceRequest;
use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use crm_domain::matching::{Candidate, Choice, LookupKey, Sender};
use crm_domain::order::Quote;
use crm_domain::sha256_hex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Versions kept per plugin (the current one and those a rollback can return to).
const MAX_VERSIONS: usize = 10;

/// A rule a plugin can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Order pricing (`crm:rules/pricing`).
    Pricing,
    /// Customer matching (`crm:rules/matcher`).
    Matcher,
}

impl Role {
    /// Name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Pricing => "pricing",
            Role::Matcher => "matcher",
        }
    }

    fn served_by(self, world: World) -> bool {
        match self {
            Role::Pricing => world.prices(),
            Role::Matcher => world.matches(),
        }
    }
}

/// Where the registry keeps its state and how it runs plugins.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The plugins data directory.
    pub dir: PathBuf,
    /// How plugins run; `cache_dir` defaults to `<dir>/cache`.
    pub host: HostConfig,
    /// Install (or upgrade) the embedded default plugins at start.
    pub install_defaults: bool,
}

/// One version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionInfo {
    /// The version as uploaded.
    pub version: String,
    /// SHA-256 of the component, hex.
    pub hash: String,
    /// The WIT world it implements.
    #[schema(value_type = String, example = "pricing-plugin")]
    pub world: World,
    /// The `crm:rules` version it targets.
    pub wit_version: String,
    /// Size of the component in bytes.
    pub size_bytes: u64,
    /// When it was added.
    pub added_at: DateTime<Utc>,
    /// Where it came from: `builtin`, `upload` or `autoload`.
    pub source: String,
}

impl VersionInfo {
    fn new(version: &str, hash: String, info: &ComponentInfo, source: &str) -> Self {
        VersionInfo {
            version: version.to_owned(),
            hash,
            world: info.world,
            wit_version: info.wit_version.clone(),
            size_bytes: info.size_bytes,
            added_at: Utc::now(),
            source: source.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    name: String,
    enabled: bool,
    /// Oldest first; the last is current.
    versions: Vec<VersionInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    plugins: Vec<Entry>,
    pricing: Option<String>,
    matcher: Option<String>,
}

impl State {
    fn entry(&self, name: &str) -> Option<&Entry> {
        self.plugins.iter().find(|e| e.name == name)
    }

    fn entry_mut(&mut self, name: &str) -> Option<&mut Entry> {
        self.plugins.iter_mut().find(|e| e.name == name)
    }

    /// Makes `record` the current version of `name` (a new plugin is enabled); keeps at most
    /// `MAX_VERSIONS` versions.
    fn add_version(&mut self, name: &str, record: VersionInfo) -> &mut Entry {
        let index = match self.plugins.iter().position(|e| e.name == name) {
            Some(index) => index,
            None => {
                self.plugins.push(Entry { name: name.to_owned(), enabled: true, versions: Vec::new() });
                self.plugins.len() - 1
            }
        };
        let entry = &mut self.plugins[index];
        entry.versions.retain(|v| !(v.hash == record.hash && v.version == record.version));
        entry.versions.push(record);
        if entry.versions.len() > MAX_VERSIONS {
            let excess = entry.versions.len() - MAX_VERSIONS;
            entry.versions.drain(..excess);
        }
        entry
    }

    fn role(&self, role: Role) -> Option<&str> {
        match role {
            Role::Pricing => self.pricing.as_deref(),
            Role::Matcher => self.matcher.as_deref(),
        }
    }

    fn set_role(&mut self, role: Role, name: Option<String>) {
        match role {
            Role::Pricing => self.pricing = name,
            Role::Matcher => self.matcher = name,
        }
    }

    fn roles_of(&self, name: &str) -> Vec<Role> {
        [Role::Pricing, Role::Matcher].into_iter().filter(|r| self.role(*r) == Some(name)).collect()
    }
}

/// A plugin as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PluginSummary {
    /// Name.
    pub name: String,
    /// Whether it serves calls.
    pub enabled: bool,
    /// The rules it is the active plugin for.
    pub active_for: Vec<Role>,
    /// The current version.
    pub current: VersionInfo,
    /// Earlier versions, newest first (a rollback returns to the first).
    pub previous: Vec<VersionInfo>,
    /// What the component imports (all denied or contained by the sandbox).
    pub imports: Vec<String>,
    /// Failures in a row of the current version.
    pub consecutive_failures: u32,
    /// Why the current version could not be loaded, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
}

/// The registry (see the module documentation).
pub struct Registry {
    host: PluginHost,
    dir: PathBuf,
    state: Mutex<State>,
    loaded: Mutex<HashMap<String, Arc<LoadedPlugin>>>,
    load_errors: Mutex<HashMap<String, String>>,
    pricing: ArcSwapOption<LoadedPlugin>,
    matcher: ArcSwapOption<LoadedPlugin>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("dir", &self.dir).field("host", &self.host).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks a plugin name: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub(crate) fn check_name(name: &str) -> Result<(), RegistryError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok { Ok(()) } else { Err(RegistryError::Invalid(format!("`{name}` is not a plugin name: use 1 to 64 of a-z, 0-9, '.', '_', '-'"))) }
}

fn check_version(version: &str) -> Result<(), RegistryError> {
    let ok = (1..=64).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!("`{version}` is not a version: use 1 to 64 of A-Z, a-z, 0-9, '.', '_', '+', '-'")))
    }
}

impl Registry {
    /// Opens the registry in `config.dir` (created if missing): reads its state, installs or
    /// upgrades the embedded defaults, registers what `autoload/` holds, and loads the current
    /// version of every plugin. A plugin that fails to load is kept, reported in its summary,
    /// and serves nothing.
    pub fn open(config: RegistryConfig) -> Result<Registry, RegistryError> {
        let mut host_config = config.host.clone();
        if host_config.cache_dir.is_none() {
            host_config.cache_dir = Some(config.dir.join("cache"));
        }
        let host = PluginHost::new(host_config).map_err(RegistryError::Invalid)?;
        std::fs::create_dir_all(config.dir.join("blobs"))?;
        let state_path = config.dir.join("registry.json");
        let state: State = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| RegistryError::Invalid(format!("{} is not a plugin registry: {e}", state_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e.into()),
        };
        let registry = Registry {
            host,
            dir: config.dir.clone(),
            state: Mutex::new(state),
            loaded: Mutex::new(HashMap::new()),
            load_errors: Mutex::new(HashMap::new()),
            pricing: ArcSwapOption::empty(),
            matcher: ArcSwapOption::empty(),
        };
        if config.install_defaults {
            registry.install(defaults::MATCHER_NAME, defaults::VERSION, defaults::MATCHER_WASM, "builtin")?;
            registry.install(defaults::PRICING_NAME, defaults::VERSION, defaults::PRICING_WASM, "builtin")?;
        }
        registry.autoload()?;
        let entries = lock(&registry.state).plugins.clone();
        for entry in entries {
            let Some(current) = entry.versions.last() else { continue };
            match registry.load_version(&entry.name, current) {
                Ok(plugin) => {
                    plugin.set_enabled(entry.enabled);
                    lock(&registry.loaded).insert(entry.name.clone(), Arc::new(plugin));
                }
                Err(err) => {
                    tracing::error!(plugin = %entry.name, version = %current.version, hash = %current.hash, error = %err, "cannot load plugin");
                    lock(&registry.load_errors).insert(entry.name.clone(), err.to_string());
                }
            }
        }
        {
            let mut state = lock(&registry.state);
            for role in [Role::Pricing, Role::Matcher] {
                if state.role(role).is_none() {
                    let name = match role {
                        Role::Pricing => defaults::PRICING_NAME,
                        Role::Matcher => defaults::MATCHER_NAME,
                    };
                    if state.entry(name).is_some() {
                        state.set_role(role, Some(name.to_owned()));
                    }
                }
            }
            registry.save(&state)?;
        }
        registry.refresh();
        Ok(registry)
    }

    /// The host that runs the plugins.
    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    fn blob_path(&self, hash: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{hash}.wasm"))
    }

    fn save(&self, state: &State) -> Result<(), RegistryError> {
        let json = serde_json::to_vec_pretty(state).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        write_file(&self.dir.join("registry.json"), &json)?;
        Ok(())
    }

    fn load_version(&self, name: &str, version: &VersionInfo) -> Result<LoadedPlugin, RegistryError> {
        let bytes = std::fs::read(self.blob_path(&version.hash))?;
        if sha256_hex(&bytes) != version.hash {
            return Err(RegistryError::Load(LoadError::Invalid(format!("the stored blob of {name} {} is corrupt", version.version))));
        }
        Ok(self.host.load(name, &version.version, &bytes)?)
    }

    /// Adds `bytes` as the current version of `name` at start (defaults, autoload) when it is
    /// not already known; the plugin is loaded later with the others.
    fn install(&self, name: &str, version: &str, bytes: &[u8], source: &str) -> Result<(), RegistryError> {
        let hash = sha256_hex(bytes);
        {
            let state = lock(&self.state);
            if let Some(entry) = state.entry(name) {
                let known = entry.versions.iter().any(|v| v.hash == hash);
                let replaceable = source != "builtin" || entry.versions.last().is_some_and(|v| v.source == "builtin");
                if known || !replaceable {
                    return Ok(());
                }
            }
        }
        let info = self.host.inspect(bytes)?;
        write_file(&self.blob_path(&hash), bytes)?;
        lock(&self.state).add_version(name, VersionInfo::new(version, hash, &info, source));
        tracing::info!(plugin = name, version, source, "plugin registered");
        Ok(())
    }

    /// Registers the components in `<dir>/autoload/`: `NAME@VERSION.wasm` or `NAME.wasm`
    /// (version `0`). A file that is refused is logged and skipped.
    fn autoload(&self) -> Result<(), RegistryError> {
        let dir = self.dir.join("autoload");
        let Ok(files) = std::fs::read_dir(&dir) else { return Ok(()) };
        let mut paths: Vec<PathBuf> =
            files.filter_map(|f| f.ok().map(|f| f.path())).filter(|p| p.extension().is_some_and(|e| e == "wasm")).collect();
        paths.sort();
        for path in paths {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let (name, version) = stem.split_once('@').unwrap_or((&stem, "0"));
            let result = check_name(name).and_then(|()| check_version(version)).and_then(|()| {
                let bytes = std::fs::read(&path)?;
                self.install(name, version, &bytes, "autoload")
            });
            if let Err(err) = result {
                tracing::error!(path = %path.display(), error = %err, "cannot register plugin from the autoload directory");
            }
        }
        Ok(())
    }

    /// Points the role slots at the loaded plugins the roles name.
    fn refresh(&self) {
        let state = lock(&self.state);
        let loaded = lock(&self.loaded);
        for (role, slot) in [(Role::Pricing, &self.pricing), (Role::Matcher, &self.matcher)] {
            let plugin = state.role(role).and_then(|name| loaded.get(name)).filter(|p| role.served_by(p.info().world)).cloned();
            slot.store(plugin);
        }
    }

    fn summary(&self, state: &State, entry: &Entry) -> Option<PluginSummary> {
        let current = entry.versions.last()?.clone();
        let loaded = lock(&self.loaded).get(&entry.name).cloned();
        Some(PluginSummary {
            name: entry.name.clone(),
            enabled: loaded.as_ref().map_or(entry.enabled, |p| p.is_enabled()),
            active_for: state.roles_of(&entry.name),
            previous: entry.versions.iter().rev().skip(1).cloned().collect(),
            imports: loaded.as_ref().map(|p| p.info().imports.clone()).unwrap_or_default(),
            consecutive_failures: loaded.as_ref().map_or(0, |p| p.consecutive_failures()),
            load_error: lock(&self.load_errors).get(&entry.name).cloned(),
            current,
        })
    }

    /// Every plugin, by name.
    pub fn list(&self) -> Vec<PluginSummary> {
        let state = lock(&self.state);
        let mut list: Vec<PluginSummary> = state.plugins.iter().filter_map(|e| self.summary(&state, e)).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// One plugin.
    pub fn get(&self, name: &str) -> Result<PluginSummary, RegistryError> {
        let state = lock(&self.state);
        state.entry(name).and_then(|e| self.summary(&state, e)).ok_or_else(|| RegistryError::NotFound(name.to_owned()))
    }

    /// Adds a new version of plugin `name` (or a new plugin) from an uploaded component, after
    /// checking its world, WIT version and imports; it becomes current and enabled at once. With
    /// `activate` it also becomes the active plugin for each rule it implements; otherwise it
    /// keeps (or gets no) roles. Uploading the current version again changes nothing.
    pub fn upload(&self, name: &str, version: &str, bytes: &[u8], activate: bool) -> Result<PluginSummary, RegistryError> {
        check_name(name)?;
        check_version(version)?;
        let hash = sha256_hex(bytes);
        {
            let state = lock(&self.state);
            if let Some(current) = state.entry(name).and_then(|e| e.versions.last())
                && current.version == version
                && current.hash != hash
            {
                return Err(RegistryError::Conflict(format!(
                    "{name} {version} already exists with other content: upload it under a new version"
                )));
            }
        }
        let plugin = self.host.load(name, version, bytes)?;
        write_file(&self.blob_path(&hash), bytes)?;
        let info = plugin.info().clone();
        let mut state = lock(&self.state);
        let same = state.entry(name).and_then(|e| e.versions.last()).is_some_and(|v| v.hash == hash && v.version == version);
        if !same {
            state.add_version(name, VersionInfo::new(version, hash, &info, "upload")).enabled = true;
            lock(&self.loaded).insert(name.to_owned(), Arc::new(plugin));
            lock(&self.load_errors).remove(name);
        }
        self.assign_roles(&mut state, name, info.world, activate);
        self.save(&state)?;
        drop(state);
        self.refresh();
        tracing::info!(plugin = name, version, world = info.world.as_str(), "plugin uploaded");
        self.get(name)
    }

    /// Gives `name` the roles of its world (when `activate`) and drops roles its world no
    /// longer serves.
    fn assign_roles(&self, state: &mut State, name: &str, world: World, activate: bool) {
        for role in [Role::Pricing, Role::Matcher] {
            let holds = state.role(role) == Some(name);
            if role.served_by(world) && (activate || state.role(role).is_none()) {
                state.set_role(role, Some(name.to_owned()));
            } else if holds && !role.served_by(world) {
                state.set_role(role, None);
            }
        }
    }

    fn set_enabled(&self, name: &str, enabled: bool) -> Result<PluginSummary, RegistryError> {
        let mut state = lock(&self.state);
        let entry = state.entry_mut(name).ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        entry.enabled = enabled;
        let world = entry.versions.last().map(|v| v.world);
        if let Some(plugin) = lock(&self.loaded).get(name) {
            plugin.set_enabled(enabled);
        }
        if let (true, Some(world)) = (enabled, world) {
            self.assign_roles(&mut state, name, world, true);
        }
        self.save(&state)?;
        drop(state);
        self.refresh();
        tracing::info!(plugin = name, enabled, "plugin {}", if enabled { "enabled" } else { "disabled" });
        self.get(name)
    }

    /// Turns a plugin on (clearing its failure count) and makes it the active plugin for each
    /// rule it implements.
    pub fn enable(&self, name: &str) -> Result<PluginSummary, RegistryError> {
        self.set_enabled(name, true)
    }

    /// Turns a plugin off. If it is the active pricing plugin, orders cannot be priced until it
    /// is enabled again or another is activated: pricing is never silently done another way.
    pub fn disable(&self, name: &str) -> Result<PluginSummary, RegistryError> {
        self.set_enabled(name, false)
    }

    /// Makes the previous version current again (and enabled); the current one is dropped.
    pub fn rollback(&self, name: &str) -> Result<PluginSummary, RegistryError> {
        let previous = {
            let state = lock(&self.state);
            let entry = state.entry(name).ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
            if entry.versions.len() < 2 {
                return Err(RegistryError::Conflict(format!("{name} has no previous version to roll back to")));
            }
            entry.versions[entry.versions.len() - 2].clone()
        };
        let plugin = self.load_version(name, &previous)?;
        let mut state = lock(&self.state);
        let entry = state.entry_mut(name).ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        if entry.versions.len() < 2 || entry.versions[entry.versions.len() - 2].hash != previous.hash {
            return Err(RegistryError::Conflict(format!("{name} changed during the rollback; try again")));
        }
        let dropped = entry.versions.pop();
        entry.enabled = true;
        let world = previous.world;
        lock(&self.loaded).insert(name.to_owned(), Arc::new(plugin));
        lock(&self.load_errors).remove(name);
        self.assign_roles(&mut state, name, world, false);
        self.save(&state)?;
        if let Some(dropped) = dropped {
            self.forget_blob(&state, &dropped.hash);
        }
        drop(state);
        self.refresh();
        tracing::info!(plugin = name, version = %previous.version, "plugin rolled back");
        self.get(name)
    }

    /// Removes a plugin and its versions. The active plugin of a rule cannot be deleted: activate
    /// another first. (Deleted built-in defaults come back at the next start.)
    pub fn delete(&self, name: &str) -> Result<(), RegistryError> {
        let mut state = lock(&self.state);
        if state.entry(name).is_none() {
            return Err(RegistryError::NotFound(name.to_owned()));
        }
        if let Some(role) = state.roles_of(name).first() {
            return Err(RegistryError::Conflict(format!(
                "{name} is the active {} plugin: activate another one before deleting it",
                role.as_str()
            )));
        }
        let index = state.plugins.iter().position(|e| e.name == name).unwrap_or_default();
        let entry = state.plugins.remove(index);
        self.save(&state)?;
        for version in &entry.versions {
            self.forget_blob(&state, &version.hash);
        }
        lock(&self.loaded).remove(name);
        lock(&self.load_errors).remove(name);
        drop(state);
        self.refresh();
        tracing::info!(plugin = name, "plugin deleted");
        Ok(())
    }

    /// Deletes a blob no version refers to any more.
    fn forget_blob(&self, state: &State, hash: &str) {
        if !state.plugins.iter().any(|e| e.versions.iter().any(|v| v.hash == hash)) {
            let _ = std::fs::remove_file(self.blob_path(hash));
        }
    }

    /// The plugin active for a rule, if any.
    pub fn active(&self, role: Role) -> Option<Arc<LoadedPlugin>> {
        match role {
            Role::Pricing => self.pricing.load_full(),
            Role::Matcher => self.matcher.load_full(),
        }
    }

    /// Records that a plugin disabled itself after repeated failures, if it is still the
    /// loaded one.
    fn note_failure(&self, plugin: &Arc<LoadedPlugin>, err: &CallError) {
        if let CallError::Failed { disabled_now: true, .. } = err {
            let name = &plugin.id().name;
            let current = lock(&self.loaded).get(name).is_some_and(|p| Arc::ptr_eq(p, plugin));
            let mut state = lock(&self.state);
            if let (true, Some(entry)) = (current, state.entry_mut(name)) {
                entry.enabled = false;
                if let Err(e) = self.save(&state) {
                    tracing::error!(plugin = %name, error = %e, "cannot record that the plugin was disabled");
                }
            }
        }
    }

    fn with_active<R>(&self, role: Role, call: impl FnOnce(&LoadedPlugin) -> Result<R, CallError>) -> Result<(R, PluginId), CallError> {
        let Some(plugin) = self.active(role) else {
            let state = lock(&self.state);
            return Err(match state.role(role) {
                Some(name) => {
                    CallError::Disabled(format!("{name} (not loaded: {})", lock(&self.load_errors).get(name).map_or("unknown", |s| s)))
                }
                None => CallError::NoPlugin(role.as_str()),
            });
        };
        match call(&plugin) {
            Ok(value) => Ok((value, plugin.id().clone())),
            Err(err) => {
                self.note_failure(&plugin, &err);
                Err(err)
            }
        }
    }

    /// Prices an order with the active pricing plugin; returns the quote and who priced it.
    pub fn price(&self, request: &PriceRequest) -> Result<(Quote, PluginId), CallError> {
        self.with_active(Role::Pricing, |p| p.price(request))
    }

    /// The lookup keys for a sender from the active matcher (no fallback; see [`crate::Matcher`]).
    pub fn match_keys(&self, sender: &Sender) -> Result<(Vec<LookupKey>, PluginId), CallError> {
        self.with_active(Role::Matcher, |p| p.match_keys(sender))
    }

    /// The active matcher's pick among candidates (no fallback; see [`crate::Matcher`]).
    pub fn choose(&self, sender: &Sender, keys: &[LookupKey], candidates: &[Candidate]) -> Result<(Option<Choice>, PluginId), CallError> {
        self.with_active(Role::Matcher, |p| p.choose(sender, keys, candidates))
    }

    /// Where the registry keeps its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that readers never see a
/// half-written file and concurrent writers do not clash.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), uuid::Uuid::now_v7()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
