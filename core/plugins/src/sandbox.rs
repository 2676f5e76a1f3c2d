//! The sandbox every plugin runs in: the one `Engine` (fuel metering, pooling allocator), the
//! per-store memory limiter, and the deny-all stand-in for the WASI imports that Rust's and
//! other languages' toolchains put into every component.
//!
//! No ambient capability is granted. Besides the rule package's own `types` and `text` (the
//! host's search folding, a pure function), a component may import only `wasi:io`, `wasi:cli`,
//! `wasi:clocks`, `wasi:random` and (unless [`HostConfig::deny_io_imports`]) `wasi:filesystem`
//! and `wasi:sockets`, all at 0.2.x; anything else (`wasi:http`, a made-up host interface) is
//! refused at load. Those imports are not linked to the host's WASI at all: the environment and
//! the argument list are empty, the clocks stand still at zero, "random" numbers are a fixed
//! sequence (so rules are deterministic), no directory is preopened, and every other function
//! (streams, sockets, files, exit) traps when called. A rule's only output is its return value.

use crate::cache;
use crate::config::HostConfig;
use crate::error::LoadError;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, Val};
use wasmtime::{Cache, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store};

/// Interfaces a component may import (before `@version`), besides the rule package's own types.
const ALLOWED: &[&str] = &["wasi:io/", "wasi:cli/", "wasi:clocks/", "wasi:random/"];
/// The rule package's own interfaces a component may import: shared types, and the host's pure
/// text functions.
const OWN: &[&str] = &["types", "text"];
/// Interfaces allowed, and contained, unless `deny_io_imports`.
const IO: &[&str] = &["wasi:filesystem/", "wasi:sockets/"];

/// Builds the one engine: Cranelift, fuel metering, the pooling allocator sized by `config`, and
/// the artifact cache in `config.cache_dir` (returned too, for its counters).
pub(crate) fn engine(config: &HostConfig) -> Result<(Engine, Option<Cache>), String> {
    let mut pool = PoolingAllocationConfig::default();
    let instances = config.max_instances;
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(16))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        .max_core_instances_per_component(64)
        .table_elements(200_000)
        .max_memory_size(usize::try_from(config.memory_limit_bytes).unwrap_or(usize::MAX));
    let mut wasm = Config::new();
    wasm.consume_fuel(true).allocation_strategy(InstanceAllocationStrategy::Pooling(pool)).max_wasm_stack(1024 * 1024);
    // Rules are small (tens of KB of data), and loading one should cost well under a
    // millisecond: copy the data segments at instantiation (microseconds) rather than build a
    // copy-on-write memory image for every load, and leave out native unwind tables, which only
    // external profilers and debuggers read (wasmtime's own traps and backtraces do not need
    // them). Each saves about a tenth of a millisecond per load (docs/benchmarks.md).
    wasm.memory_init_cow(false).native_unwind_info(false);
    let cache = config.cache_dir.as_deref().map(cache::artifact_cache).transpose()?;
    wasm.cache(cache.clone());
    let engine = Engine::new(&wasm).map_err(|e| format!("cannot create the WebAssembly engine: {e:#}"))?;
    Ok((engine, cache))
}

/// What each store holds: the memory limiter.
#[derive(Debug)]
pub(crate) struct Sandbox {
    pub(crate) limits: Limits,
}

impl Sandbox {
    /// A store for one instance, limited by `config`.
    pub(crate) fn store(engine: &Engine, config: &HostConfig) -> Store<Sandbox> {
        let limit = usize::try_from(config.memory_limit_bytes).unwrap_or(usize::MAX);
        let mut store = Store::new(engine, Sandbox { limits: Limits { memory_bytes: limit, memory_exceeded: false } });
        store.limiter(|s| &mut s.limits);
        store
    }
}

/// The memory cap of one store; remembers when a plugin hit it, so that the trap that usually
/// follows (Rust aborts when an allocation fails) is classified as a memory failure.
#[derive(Debug)]
pub(crate) struct Limits {
    memory_bytes: usize,
    pub(crate) memory_exceeded: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 200_000)
    }
}

/// The imports a component asks for, by name.
pub(crate) fn imports(engine: &Engine, component: &Component) -> Vec<String> {
    component.component_type().imports(engine).map(|(name, _)| name.to_owned()).collect()
}

/// Refuses imports the sandbox does not grant.
pub(crate) fn check_imports(imports: &[String], config: &HostConfig) -> Result<(), LoadError> {
    let own: Vec<String> = crate::bindings::SUPPORTED_VERSIONS
        .iter()
        .flat_map(|v| OWN.iter().map(move |interface| format!("{}/{interface}@{v}", crate::bindings::PACKAGE)))
        .collect();
    for name in imports {
        if own.contains(name) {
            continue;
        }
        let wasi_02 = name.contains("@0.2.");
        if IO.iter().any(|p| name.starts_with(p)) {
            if config.deny_io_imports {
                return Err(LoadError::ForbiddenImport(format!(
                    "the component imports `{name}`: plugins may not use files or the network (deny_io_imports is on)"
                )));
            }
            if wasi_02 {
                continue;
            }
        }
        if ALLOWED.iter().any(|p| name.starts_with(p)) && wasi_02 {
            continue;
        }
        return Err(LoadError::ForbiddenImport(format!(
            "the component imports `{name}`, which the plugin sandbox does not provide (a rule may import only \
             crm:rules types and text, and WASI 0.2 io, cli, clocks, random{})",
            if config.deny_io_imports { "" } else { ", filesystem and sockets, all denied" }
        )));
    }
    Ok(())
}

/// The host's text functions (`crm:rules/text`), without the version.
const TEXT: &str = "crm:rules/text";

/// A linker with the host's `crm:rules/text` functions and the deny-all stand-ins for the
/// component's WASI imports.
pub(crate) fn linker(engine: &Engine, component: &Component) -> Result<Linker<Sandbox>, LoadError> {
    let mut linker = Linker::<Sandbox>::new(engine);
    let err = |e: wasmtime::Error| LoadError::Instantiate(format!("{e:#}"));
    for (name, item) in component.component_type().imports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else { continue };
        let interface = name.split('@').next().unwrap_or(name);
        let functions: Vec<String> = instance.exports(engine).map(|(f, _)| f.to_owned()).collect();
        let mut scope = linker.instance(name).map_err(err)?;
        for function in functions {
            let result: Option<Val> = match (interface, function.as_str()) {
                ("wasi:cli/environment", "get-environment" | "get-arguments") => Some(Val::List(Vec::new())),
                ("wasi:cli/environment", "initial-cwd") => Some(Val::Option(None)),
                ("wasi:clocks/wall-clock", "now" | "resolution") => Some(Val::Record(vec![
                    ("seconds".into(), Val::U64(0)),
                    ("nanoseconds".into(), Val::U32(u32::from(function == "resolution"))),
                ])),
                ("wasi:clocks/monotonic-clock", "now") => Some(Val::U64(0)),
                ("wasi:clocks/monotonic-clock", "resolution") => Some(Val::U64(1)),
                ("wasi:random/insecure-seed", "insecure-seed") => {
                    Some(Val::Tuple(vec![Val::U64(0x243f_6a88_85a3_08d3), Val::U64(0x1319_8a2e_0370_7344)]))
                }
                ("wasi:random/random", "get-random-u64") | ("wasi:random/insecure", "get-insecure-random-u64") => {
                    Some(Val::U64(0x9e37_79b9_7f4a_7c15))
                }
                ("wasi:filesystem/preopens", "get-directories") => Some(Val::List(Vec::new())),
                _ => None,
            };
            if (interface, function.as_str()) == (TEXT, "fold") {
                scope.func_wrap(&function, |_, (text,): (String,)| Ok((crm_domain::fold_for_search(&text),))).map_err(err)?;
            } else if let Some(result) = result {
                scope
                    .func_new(&function, move |_, _, _, results| {
                        if let Some(slot) = results.first_mut() {
                            *slot = result.clone();
                        }
                        Ok(())
                    })
                    .map_err(err)?;
            } else if (interface, function.as_str()) == ("wasi:random/random", "get-random-bytes")
                || (interface, function.as_str()) == ("wasi:random/insecure", "get-insecure-random-bytes")
            {
                scope
                    .func_new(&function, |_, _, params, results| {
                        let len = match params.first() {
                            Some(Val::U64(n)) if *n <= 1024 * 1024 => *n as usize,
                            _ => wasmtime::bail!("random bytes: too many asked for"),
                        };
                        let bytes = (0..len).map(|i| Val::U8((i as u8).wrapping_mul(167).wrapping_add(13))).collect();
                        if let Some(slot) = results.first_mut() {
                            *slot = Val::List(bytes);
                        }
                        Ok(())
                    })
                    .map_err(err)?;
            }
        }
    }
    linker.define_unknown_imports_as_traps(component).map_err(err)?;
    Ok(linker)
}
