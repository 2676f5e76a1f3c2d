//! The plugin host and a loaded plugin. The host owns the one `Engine` and the artifact cache;
//! it inspects a component (which world, which WIT version, which imports) and loads it into a
//! [`LoadedPlugin`]: an `InstancePre` made once, warm instances reused across calls, and the
//! per-call machinery — fuel as the deadline, the memory cap, output checks, failure
//! classification by root cause, logging, metrics, and automatic disabling after repeated
//! failures. An instance that failed is always dropped; the next call instantiates a fresh one.

use crate::bindings::{self, SUPPORTED_VERSIONS, v0_1_0};
use crate::cache::{self, CacheStats};
use crate::config::HostConfig;
use crate::error::{CallError, FailureKind, LoadError, RuleError};
use crate::pricing::PriceRequest;
use crate::sandbox::{self, Sandbox};
use crm_domain::matching::{Candidate, Channel, Choice, LookupKey, Sender};
use crm_domain::order::Quote;
use crm_domain::sha256_hex;
use serde::Serialize;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use v0_1_0::exports::crm::rules::{matcher as wm, pricing as wp};
use wasmtime::component::{Component, InstancePre};
use wasmtime::{Cache, Engine, Store, Trap};

/// Which rule interfaces a component exports, named after the WIT world it fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum World {
    /// `matcher-plugin`: exports `matcher`.
    #[serde(rename = "matcher-plugin")]
    Matcher,
    /// `pricing-plugin`: exports `pricing`.
    #[serde(rename = "pricing-plugin")]
    Pricing,
    /// `rules-plugin`: exports both.
    #[serde(rename = "rules-plugin")]
    Rules,
}

impl World {
    /// The WIT world's name.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Matcher => "matcher-plugin",
            World::Pricing => "pricing-plugin",
            World::Rules => "rules-plugin",
        }
    }

    /// Whether it exports `pricing`.
    pub fn prices(self) -> bool {
        matches!(self, World::Pricing | World::Rules)
    }

    /// Whether it exports `matcher`.
    pub fn matches(self) -> bool {
        matches!(self, World::Matcher | World::Rules)
    }
}

/// What a component is, found without running it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentInfo {
    /// SHA-256 of the component, hex.
    pub hash: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// The world it implements.
    pub world: World,
    /// The `crm:rules` version it targets.
    pub wit_version: String,
    /// Everything it imports.
    pub imports: Vec<String>,
    /// Everything it exports.
    pub exports: Vec<String>,
}

/// The identity of a loaded plugin, as logged and as recorded on what it priced.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PluginId {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// SHA-256 of the component, hex.
    pub hash: String,
}

impl fmt::Display for PluginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (sha256:{})", self.name, self.version, &self.hash[..self.hash.len().min(12)])
    }
}

/// Runs plugins: one engine, one artifact cache.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    config: Arc<HostConfig>,
    cache: Option<Cache>,
}

impl fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginHost").field("config", &self.config).field("cache", &self.cache_stats()).finish_non_exhaustive()
    }
}

impl PluginHost {
    /// A host with `config` (checked first).
    pub fn new(config: HostConfig) -> Result<Self, String> {
        config.validate()?;
        let (engine, cache) = sandbox::engine(&config)?;
        Ok(PluginHost { engine, config: Arc::new(config), cache })
    }

    /// The settings.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// How many loads the artifact cache served and how many compiled, or `None` without a
    /// cache (`HostConfig::cache_dir`).
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(cache::stats)
    }

    fn compile(&self, bytes: &[u8]) -> Result<(String, Component), LoadError> {
        let hash = sha256_hex(bytes);
        if bytes.get(..4) != Some(b"\0asm") {
            return Err(LoadError::Invalid("the file is not WebAssembly (no \\0asm header)".into()));
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        Ok((hash, component))
    }

    fn describe(&self, hash: String, size: usize, component: &Component) -> Result<ComponentInfo, LoadError> {
        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_owned()).collect();
        let imports = sandbox::imports(&self.engine, component);
        sandbox::check_imports(&imports, &self.config)?;
        let prefix = format!("{}/", bindings::PACKAGE);
        let mut versions: Vec<&str> = Vec::new();
        let (mut pricing, mut matcher) = (false, false);
        for name in exports.iter().filter(|n| n.starts_with(&prefix)) {
            let (interface, version) = name[prefix.len()..].split_once('@').unwrap_or((&name[prefix.len()..], ""));
            versions.push(version);
            pricing |= interface == "pricing";
            matcher |= interface == "matcher";
        }
        versions.sort();
        versions.dedup();
        let supported = SUPPORTED_VERSIONS.iter().map(|v| format!("crm:rules@{v}")).collect::<Vec<_>>().join(", ");
        let version = match versions.as_slice() {
            [] => {
                return Err(LoadError::WrongWorld(format!(
                    "the component implements no crm:rules world: it exports [{}]; a plugin must export \
                     crm:rules/matcher or crm:rules/pricing (worlds matcher-plugin, pricing-plugin, rules-plugin of {supported})",
                    exports.join(", ")
                )));
            }
            [one] => (*one).to_owned(),
            many => {
                return Err(LoadError::UnsupportedVersion(format!(
                    "the component mixes crm:rules versions {}; build it against one",
                    many.join(", ")
                )));
            }
        };
        if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
            return Err(LoadError::UnsupportedVersion(format!(
                "the component targets crm:rules@{}; this host runs {supported}",
                if version.is_empty() { "(no version)" } else { &version }
            )));
        }
        let world = match (matcher, pricing) {
            (true, true) => World::Rules,
            (true, false) => World::Matcher,
            (false, true) => World::Pricing,
            (false, false) => {
                return Err(LoadError::WrongWorld(format!(
                    "the component exports [{}] but neither crm:rules/matcher nor crm:rules/pricing",
                    exports.join(", ")
                )));
            }
        };
        Ok(ComponentInfo { hash, size_bytes: size as u64, world, wit_version: version, imports, exports })
    }

    /// Compiles (or takes from the cache) and describes a component, refusing one that fits no
    /// supported world or asks for imports the sandbox does not grant. Does not run it.
    pub fn inspect(&self, bytes: &[u8]) -> Result<ComponentInfo, LoadError> {
        let (hash, component) = self.compile(bytes)?;
        self.describe(hash, bytes.len(), &component)
    }

    /// Inspects, then loads a component as plugin `name` `version`: links the sandbox, checks
    /// its exports against the WIT by instantiating it once (that instance is kept warm).
    pub fn load(&self, name: &str, version: &str, bytes: &[u8]) -> Result<LoadedPlugin, LoadError> {
        let (hash, component) = self.compile(bytes)?;
        self.load_component(name, version, hash, bytes.len(), component)
    }

    /// Loads the component stored at `path` (see [`PluginHost::load`]).
    pub fn load_file(&self, name: &str, version: &str, path: &Path) -> Result<LoadedPlugin, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        self.load(name, version, &bytes)
    }

    fn load_component(
        &self,
        name: &str,
        version: &str,
        hash: String,
        size: usize,
        component: Component,
    ) -> Result<LoadedPlugin, LoadError> {
        let info = self.describe(hash.clone(), size, &component)?;
        let linker = sandbox::linker(&self.engine, &component)?;
        let pre = linker.instantiate_pre(&component).map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        let mismatch = |what: &str, e: wasmtime::Error| {
            LoadError::WrongWorld(format!("the export crm:rules/{what}@{} does not match the WIT: {e:#}", info.wit_version))
        };
        let pricing = if info.world.prices() { Some(wp::GuestIndices::new(&pre).map_err(|e| mismatch("pricing", e))?) } else { None };
        let matcher = if info.world.matches() { Some(wm::GuestIndices::new(&pre).map_err(|e| mismatch("matcher", e))?) } else { None };
        let plugin = LoadedPlugin {
            id: PluginId { name: name.to_owned(), version: version.to_owned(), hash },
            info,
            pre,
            pricing,
            matcher,
            idle: Mutex::new(Vec::new()),
            enabled: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            engine: self.engine.clone(),
            config: self.config.clone(),
        };
        // Instantiate once: checks the exports' types and that start-up code runs.
        let warm = plugin.instantiate().map_err(|(kind, detail)| match kind {
            FailureKind::Instantiate if detail.contains("type mismatch") => LoadError::WrongWorld(detail),
            _ => LoadError::Instantiate(detail),
        })?;
        plugin.idle.lock().unwrap_or_else(|p| p.into_inner()).push(warm);
        Ok(plugin)
    }
}

/// An instance kept warm for reuse.
struct Warm {
    store: Store<Sandbox>,
    pricing: Option<wp::Guest>,
    matcher: Option<wm::Guest>,
}

/// What a call's answer was, before it is returned.
enum Checked<U> {
    Ok(U),
    Refused(RuleError),
    Invalid(String),
}

/// A plugin ready to be called: compiled, linked, with warm instances.
pub struct LoadedPlugin {
    id: PluginId,
    info: ComponentInfo,
    pre: InstancePre<Sandbox>,
    pricing: Option<wp::GuestIndices>,
    matcher: Option<wm::GuestIndices>,
    idle: Mutex<Vec<Warm>>,
    enabled: AtomicBool,
    failures: AtomicU32,
    engine: Engine,
    config: Arc<HostConfig>,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("id", &self.id)
            .field("world", &self.info.world)
            .field("enabled", &self.is_enabled())
            .finish_non_exhaustive()
    }
}

/// The first line of an error, at most 300 characters (wasm backtraces are long).
fn short(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    let line = text.lines().next().unwrap_or("").to_owned();
    if line.chars().count() > 300 { line.chars().take(300).collect::<String>() + "…" } else { line }
}

impl LoadedPlugin {
    /// Name, version and hash.
    pub fn id(&self) -> &PluginId {
        &self.id
    }

    /// World, WIT version, imports.
    pub fn info(&self) -> &ComponentInfo {
        &self.info
    }

    /// Whether calls are served.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Turns calls on or off; turning on clears the failure count.
    pub fn set_enabled(&self, enabled: bool) {
        if enabled {
            self.failures.store(0, Ordering::Release);
        }
        self.enabled.store(enabled, Ordering::Release);
        metrics::gauge!("crm_plugin_enabled", "plugin" => self.id.name.clone()).set(if enabled { 1.0 } else { 0.0 });
    }

    /// Failures in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Acquire)
    }

    fn instantiate(&self) -> Result<Warm, (FailureKind, String)> {
        let mut store = Sandbox::store(&self.engine, &self.config);
        let fail = |store: &Store<Sandbox>, e: wasmtime::Error| {
            let kind = if store.data().limits.memory_exceeded { FailureKind::MemoryLimit } else { FailureKind::Instantiate };
            (kind, short(&e))
        };
        if let Err(e) = store.set_fuel(self.config.fuel_per_call) {
            return Err(fail(&store, e));
        }
        let instance = match self.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => return Err(fail(&store, e)),
        };
        let pricing = match self.pricing.as_ref().map(|i| i.load(&mut store, &instance)).transpose() {
            Ok(p) => p,
            Err(e) => return Err(fail(&store, e)),
        };
        let matcher = match self.matcher.as_ref().map(|i| i.load(&mut store, &instance)).transpose() {
            Ok(m) => m,
            Err(e) => return Err(fail(&store, e)),
        };
        if let Some(guest) = matcher.as_ref().filter(|_| self.config.warm_up) {
            // Warm up: lazy start-up work is paid here, from its own budget, not by a call.
            let settings = bindings::settings(&self.config.default_region);
            let warmed = store.set_fuel(self.config.warmup_fuel).and_then(|()| {
                for (channel, address) in
                    [(Channel::Phone, "+30 210 123 4567"), (Channel::Phone, "+30 694 123 4567"), (Channel::Email, "warm.up@example.com")]
                {
                    let sender = Sender { channel, address: address.into(), display_name: Some("Warm Up".into()) };
                    let _ = guest.call_match_keys(&mut store, &bindings::sender(&sender), &settings)?;
                }
                Ok(())
            });
            if let Err(e) = warmed {
                let timeout = e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel);
                let (kind, detail) = fail(&store, e);
                let kind = if timeout { FailureKind::Timeout } else { kind };
                return Err((kind, format!("warming up: {detail}")));
            }
        }
        Ok(Warm { store, pricing, matcher })
    }

    /// Runs one call on a warm (or fresh) instance and checks its answer.
    fn invoke<T, U>(
        &self,
        function: &'static str,
        call: impl FnOnce(&mut Warm) -> wasmtime::Result<T>,
        check: impl FnOnce(T) -> Checked<U>,
    ) -> Result<U, CallError> {
        if !self.is_enabled() {
            self.count(function, "disabled");
            return Err(CallError::Disabled(self.id.to_string()));
        }
        let started = Instant::now();
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut warm = match taken {
            Some(w) => w,
            None => match self.instantiate() {
                Ok(w) => w,
                Err((kind, detail)) => return Err(self.failed(function, kind, detail)),
            },
        };
        if let Err(e) = warm.store.set_fuel(self.config.fuel_per_call) {
            return Err(self.failed(function, FailureKind::Trap, short(&e)));
        }
        let result = call(&mut warm);
        metrics::histogram!("crm_plugin_call_duration_seconds", "plugin" => self.id.name.clone(), "function" => function)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(answer) => match check(answer) {
                Checked::Ok(value) => {
                    self.succeeded(function, warm, "ok");
                    Ok(value)
                }
                Checked::Refused(rule_error) => {
                    self.succeeded(function, warm, "refused");
                    Err(CallError::Refused(rule_error))
                }
                Checked::Invalid(detail) => Err(self.failed(function, FailureKind::InvalidOutput, detail)),
            },
            Err(e) => {
                let kind = if warm.store.data().limits.memory_exceeded {
                    FailureKind::MemoryLimit
                } else if e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
                    FailureKind::Timeout
                } else {
                    FailureKind::Trap
                };
                let detail = match kind {
                    FailureKind::Timeout => format!("it used up its fuel ({} units) for one call", self.config.fuel_per_call),
                    FailureKind::MemoryLimit => format!("it tried to grow its memory past {} bytes", self.config.memory_limit_bytes),
                    _ => short(&e),
                };
                // `warm` is dropped here: a trapped instance is dead.
                Err(self.failed(function, kind, detail))
            }
        }
    }

    fn count(&self, function: &'static str, outcome: &'static str) {
        metrics::counter!("crm_plugin_calls_total", "plugin" => self.id.name.clone(), "version" => self.id.version.clone(),
            "function" => function, "outcome" => outcome)
        .increment(1);
    }

    fn succeeded(&self, function: &'static str, warm: Warm, outcome: &'static str) {
        self.failures.store(0, Ordering::Release);
        self.count(function, outcome);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.config.max_idle_instances {
            idle.push(warm);
        }
    }

    fn failed(&self, function: &'static str, kind: FailureKind, detail: String) -> CallError {
        self.count(function, "failed");
        metrics::counter!("crm_plugin_failures_total", "plugin" => self.id.name.clone(), "version" => self.id.version.clone(),
            "kind" => kind.as_str())
        .increment(1);
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let disabled_now = failures >= self.config.max_consecutive_failures && self.enabled.swap(false, Ordering::AcqRel);
        tracing::error!(
            plugin = %self.id.name, version = %self.id.version, hash = %self.id.hash, function, kind = kind.as_str(),
            consecutive_failures = failures, detail = %detail, "plugin call failed"
        );
        if disabled_now {
            metrics::gauge!("crm_plugin_enabled", "plugin" => self.id.name.clone()).set(0.0);
            metrics::counter!("crm_plugin_auto_disabled_total", "plugin" => self.id.name.clone()).increment(1);
            tracing::error!(plugin = %self.id.name, version = %self.id.version, hash = %self.id.hash, failures,
                "plugin disabled after {failures} failures in a row");
        }
        CallError::Failed { plugin: self.id.to_string(), kind, detail, disabled_now }
    }

    /// Prices an order with the plugin's `pricing` export, checking that the answer adds up.
    pub fn price(&self, request: &PriceRequest) -> Result<Quote, CallError> {
        if self.pricing.is_none() {
            return Err(CallError::NotImplemented(self.id.to_string(), "crm:rules/pricing"));
        }
        let order = bindings::order(request);
        self.invoke(
            "price",
            |w| match &w.pricing {
                Some(g) => g.call_price(&mut w.store, &order),
                None => wasmtime::bail!("no pricing export"),
            },
            |answer| match answer {
                Err(e) => Checked::Refused(e.into()),
                Ok(q) => match check_quote(request, &q) {
                    Ok(()) => Checked::Ok(bindings::quote(q)),
                    Err(why) => Checked::Invalid(why),
                },
            },
        )
    }

    /// The lookup keys for a sender, from the plugin's `matcher` export.
    pub fn match_keys(&self, sender: &Sender) -> Result<Vec<LookupKey>, CallError> {
        if self.matcher.is_none() {
            return Err(CallError::NotImplemented(self.id.to_string(), "crm:rules/matcher"));
        }
        let input = bindings::sender(sender);
        let settings = bindings::settings(&self.config.default_region);
        self.invoke(
            "match_keys",
            |w| match &w.matcher {
                Some(g) => g.call_match_keys(&mut w.store, &input, &settings),
                None => wasmtime::bail!("no matcher export"),
            },
            |answer| match answer {
                Err(e) => Checked::Refused(e.into()),
                Ok(keys) if keys.len() > MAX_KEYS => Checked::Invalid(format!("{} lookup keys (at most {MAX_KEYS})", keys.len())),
                Ok(keys) => match keys.iter().find(|k| k.strength > 100 || k.value.is_empty() || k.value.len() > MAX_TEXT) {
                    Some(k) => Checked::Invalid(format!("a lookup key with strength {} and {} bytes of value", k.strength, k.value.len())),
                    None => Checked::Ok(keys.into_iter().map(bindings::key_from_wit).collect()),
                },
            },
        )
    }

    /// The plugin's pick among candidates, from its `matcher` export.
    pub fn choose(&self, sender: &Sender, keys: &[LookupKey], candidates: &[Candidate]) -> Result<Option<Choice>, CallError> {
        if self.matcher.is_none() {
            return Err(CallError::NotImplemented(self.id.to_string(), "crm:rules/matcher"));
        }
        let input = bindings::sender(sender);
        let keys: Vec<wm::LookupKey> = keys.iter().map(bindings::key_to_wit).collect();
        let wit_candidates: Vec<wm::Candidate> = candidates.iter().map(bindings::candidate).collect();
        self.invoke(
            "choose",
            |w| match &w.matcher {
                Some(g) => g.call_choose(&mut w.store, &input, &keys, &wit_candidates),
                None => wasmtime::bail!("no matcher export"),
            },
            |answer| match answer {
                Err(e) => Checked::Refused(e.into()),
                Ok(None) => Checked::Ok(None),
                Ok(Some(c)) if c.candidate as usize >= candidates.len() => {
                    Checked::Invalid(format!("it chose candidate {} of {}", c.candidate, candidates.len()))
                }
                Ok(Some(c)) if c.confidence > 100 || c.reason.len() > MAX_TEXT => {
                    Checked::Invalid(format!("confidence {} (at most 100), reason of {} bytes", c.confidence, c.reason.len()))
                }
                Ok(Some(c)) => Checked::Ok(Some(bindings::choice(c))),
            },
        )
    }
}

/// Most lookup keys a matcher may return.
const MAX_KEYS: usize = 64;
/// Longest text (key value, reason, explanation line) accepted from a plugin, in bytes.
const MAX_TEXT: usize = 2_000;
/// Most explanation lines a pricing rule may return.
const MAX_EXPLANATION_LINES: usize = 200;

/// Checks that a quote answers the request and adds up exactly.
fn check_quote(request: &PriceRequest, q: &wp::Quote) -> Result<(), String> {
    if q.lines.len() != request.lines.len() {
        return Err(format!("{} priced lines for {} lines", q.lines.len(), request.lines.len()));
    }
    if q.explanation.len() > MAX_EXPLANATION_LINES || q.explanation.iter().any(|l| l.len() > MAX_TEXT) {
        return Err(format!("{} explanation lines (at most {MAX_EXPLANATION_LINES}, each at most {MAX_TEXT} bytes)", q.explanation.len()));
    }
    let (mut subtotal, mut tax) = (0i64, 0i64);
    for (i, l) in q.lines.iter().enumerate() {
        if l.gross.checked_sub(l.discount) != Some(l.net) {
            return Err(format!("line {i}: net {} is not gross {} less discount {}", l.net, l.gross, l.discount));
        }
        subtotal = subtotal.checked_add(l.net).ok_or("the lines overflow")?;
        tax = tax.checked_add(l.tax).ok_or("the tax overflows")?;
    }
    if subtotal != q.subtotal || tax != q.tax {
        return Err(format!("subtotal {} / tax {} are not the sums of the lines ({subtotal} / {tax})", q.subtotal, q.tax));
    }
    if q.subtotal.checked_sub(q.discount).and_then(|v| v.checked_add(q.tax)) != Some(q.total) {
        return Err(format!("total {} is not subtotal {} − discount {} + tax {}", q.total, q.subtotal, q.discount, q.tax));
    }
    Ok(())
}
