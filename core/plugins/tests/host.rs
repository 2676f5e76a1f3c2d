//! The plugin host end to end, on the components built from `plugins/` in this very build:
//! the default plugins answer exactly as the native rules on fixtures, and hostile plugins are
//! refused at load or contained to the call they break, after which the plugin serves again
//! (or is disabled after repeated failures).

use crm_domain::contact::Region;
use crm_domain::money::{Hundredths, Money};
use crm_domain::order::{Discount, ItemType};
use crm_plugins::matching::{Candidate, Channel, Sender};
use crm_plugins::pricing::{PriceLine, PriceRequest, price_natively};
use crm_plugins::{CacheStats, CallError, FailureKind, HostConfig, LoadError, PluginHost, World, defaults};
use std::path::PathBuf;

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-artifacts")
}

fn host_with(config: HostConfig) -> PluginHost {
    PluginHost::new(HostConfig { cache_dir: Some(cache_dir()), ..config }).unwrap()
}

fn host() -> PluginHost {
    host_with(HostConfig::default())
}

fn built(stem: &str) -> Vec<u8> {
    std::fs::read(defaults::built_component(stem)).unwrap()
}

fn pct(v: i64) -> Option<Discount> {
    Some(Discount::Percentage { value: Hundredths::from_hundredths(v), reason: None })
}

fn fixed(v: i64) -> Option<Discount> {
    Some(Discount::Fixed { value: Money::from_minor(v), reason: None })
}

fn line(quantity: i64, unit_price: i64, discount: Option<Discount>, tax: Option<i64>) -> PriceLine {
    PriceLine {
        kind: ItemType::Product,
        product_id: None,
        quantity,
        unit_price: Money::from_minor(unit_price),
        discount,
        tax_rate: tax.map(Hundredths::from_hundredths),
    }
}

fn order(lines: Vec<PriceLine>, discount: Option<Discount>, tax: Option<i64>) -> PriceRequest {
    PriceRequest { currency: "EUR".into(), customer_id: None, lines, discount, tax_rate: tax.map(Hundredths::from_hundredths) }
}

/// Orders covering every rule of the pricing function, its errors included.
fn pricing_fixtures() -> Vec<PriceRequest> {
    vec![
        order(vec![], None, None),
        order(vec![line(3, 3_335, None, None)], pct(1_000), None),
        order(vec![line(1, 1_999, None, None)], pct(1_250), None),
        order(vec![line(2, 85_000, None, None), line(4, 1_250, None, None)], fixed(10_000), None),
        order(vec![line(2, 10_000, pct(1_000), None), line(1, 5_000, fixed(500), Some(1_300))], fixed(2_500), Some(2_400)),
        order(vec![line(7, 333, None, Some(2_400)), line(3, 1_001, pct(333), Some(600)), line(1, 1, None, None)], pct(1_750), Some(1_300)),
        order(vec![line(1, 100, None, None)], fixed(101), None),
        order(vec![line(1, 100, None, None)], pct(10_001), None),
        order(vec![line(0, 100, None, None)], None, None),
        order(vec![line(1, 100, fixed(200), None)], None, None),
        order(vec![line(1, 100, None, Some(-5))], None, None),
        order(vec![line(2, i64::MAX, None, None)], None, None),
    ]
}

#[test]
fn the_default_pricing_plugin_prices_exactly_as_the_native_rule() {
    let plugin = host().load("crm-pricing", "test", defaults::PRICING_WASM).unwrap();
    assert_eq!(plugin.info().world, World::Pricing);
    assert_eq!(plugin.info().wit_version, "0.1.0");
    for request in pricing_fixtures() {
        let native = price_natively(&request);
        let wasm = plugin.price(&request).map_err(|e| match e {
            CallError::Refused(rule) => rule,
            other => panic!("{other}"),
        });
        assert_eq!(wasm, native, "{request:?}");
    }
}

fn senders() -> Vec<Sender> {
    let s = |channel, address: &str, name: Option<&str>| Sender { channel, address: address.into(), display_name: name.map(Into::into) };
    vec![
        s(Channel::Email, "Stelios.Bimbis@Example.GR", Some("Στέλιος Μπίμπης")),
        s(Channel::Email, "\"Ιερός Ναός\" <naos@parish.gr>", None),
        s(Channel::Email, "not an address", Some("Someone")),
        s(Channel::Phone, "694 123 4567", None),
        s(Channel::Phone, "+30 210 123 4567", Some("Γραφείο")),
        s(Channel::Whatsapp, "306941234567@s.whatsapp.net", Some("Γιώργος Παπαδόπουλος")),
        s(Channel::Whatsapp, "whatsapp:+4930123456", None),
        s(Channel::Phone, "123", None),
        s(Channel::Other, "0030 6941234567", None),
        s(Channel::Other, "someone@example.com", None),
        s(Channel::Email, "office@example.com", Some("  Ｏﬃce   ΣΤΈΛΙΟΣ ")),
    ]
}

#[test]
fn the_default_matcher_matches_exactly_as_the_native_rules() {
    let plugin = host().load("crm-matcher", "test", defaults::MATCHER_WASM).unwrap();
    assert_eq!(plugin.info().world, World::Matcher);
    // Names are folded by the host's own function, imported, so the keys equal the index's.
    assert!(plugin.info().imports.iter().any(|i| i == "crm:rules/text@0.1.0"), "{:?}", plugin.info().imports);
    for sender in senders() {
        let native = crm_domain::matching::match_keys(&sender, Region::GR);
        let keys = plugin.match_keys(&sender).unwrap();
        assert_eq!(keys, native, "{sender:?}");
        let candidates: Vec<Candidate> = (0..3)
            .map(|i| Candidate {
                id: format!("c{i}"),
                name: sender.display_name.clone().unwrap_or_else(|| format!("Customer {i}")),
                organization: None,
                matched_keys: (0..keys.len() as u32).filter(|k| (k + i) % 2 == 0).collect(),
            })
            .collect();
        let native = crm_domain::matching::choose(&sender, &keys, &candidates);
        assert_eq!(plugin.choose(&sender, &keys, &candidates).unwrap(), native, "{sender:?}");
    }
}

fn hostile_order(currency: &str) -> PriceRequest {
    PriceRequest { currency: currency.into(), ..order(vec![line(2, 150, None, None)], None, None) }
}

fn failure(result: Result<impl std::fmt::Debug, CallError>) -> (FailureKind, bool) {
    match result {
        Err(CallError::Failed { kind, disabled_now, .. }) => (kind, disabled_now),
        other => panic!("expected a contained failure, got {other:?}"),
    }
}

#[test]
fn hostile_plugins_are_contained_to_the_call_they_break() {
    let host = host_with(HostConfig { memory_limit_bytes: 32 * 1024 * 1024, ..HostConfig::default() });
    let plugin = host.load("hostile", "1", &built("crm_plugin_hostile")).unwrap();
    assert_eq!(plugin.info().world, World::Rules);
    for (currency, kind) in [
        ("LOP", FailureKind::Timeout),
        ("MEM", FailureKind::MemoryLimit),
        ("PAN", FailureKind::Trap),
        ("BIG", FailureKind::InvalidOutput),
        ("BAD", FailureKind::InvalidOutput),
    ] {
        assert_eq!(failure(plugin.price(&hostile_order(currency))), (kind, false), "{currency}");
        // The next call gets a fresh (or the still-good) instance and succeeds.
        assert_eq!(plugin.price(&hostile_order("EUR")).unwrap().total, Money::from_minor(300), "after {currency}");
    }
    let sender = Sender { channel: Channel::Email, address: "a@b.gr".into(), display_name: None };
    assert_eq!(failure(plugin.match_keys(&sender)).0, FailureKind::InvalidOutput, "strength 250 is refused");
    let candidates = vec![Candidate { id: "1".into(), name: "x".into(), organization: None, matched_keys: vec![] }; 2];
    assert_eq!(failure(plugin.choose(&sender, &[], &candidates)).0, FailureKind::InvalidOutput, "a made-up candidate");
    let looping = Sender { address: "loop".into(), ..sender };
    assert_eq!(failure(plugin.match_keys(&looping)).0, FailureKind::Timeout);
    assert!(plugin.is_enabled());
}

#[test]
fn a_plugin_failing_again_and_again_is_disabled() {
    let host = host_with(HostConfig { max_consecutive_failures: 3, ..HostConfig::default() });
    let plugin = host.load("hostile", "1", &built("crm_plugin_hostile")).unwrap();
    assert_eq!(failure(plugin.price(&hostile_order("PAN"))), (FailureKind::Trap, false));
    assert!(plugin.price(&hostile_order("EUR")).is_ok(), "a success resets the count");
    assert_eq!(failure(plugin.price(&hostile_order("PAN"))), (FailureKind::Trap, false));
    assert_eq!(failure(plugin.price(&hostile_order("BAD"))), (FailureKind::InvalidOutput, false));
    assert_eq!(failure(plugin.price(&hostile_order("LOP"))), (FailureKind::Timeout, true));
    assert!(!plugin.is_enabled());
    assert!(matches!(plugin.price(&hostile_order("EUR")), Err(CallError::Disabled(_))));
    plugin.set_enabled(true);
    assert!(plugin.price(&hostile_order("EUR")).is_ok());
}

#[test]
fn components_of_the_wrong_world_or_version_are_refused() {
    let host = host();
    let refuse = |bytes: &[u8]| host.load("x", "1", bytes).err().unwrap_or_else(|| panic!("loaded"));
    assert!(matches!(refuse(b"hello"), LoadError::Invalid(_)));
    let empty = wat::parse_str("(component)").unwrap();
    let err = refuse(&empty);
    assert!(matches!(err, LoadError::WrongWorld(_)) && err.to_string().contains("crm:rules/pricing"), "{err}");
    let future = wat::parse_str(
        r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (instance $api (export "price" (func $f)))
            (export "crm:rules/pricing@0.2.0" (instance $api)))"#,
    )
    .unwrap();
    let err = refuse(&future);
    assert!(matches!(err, LoadError::UnsupportedVersion(_)) && err.to_string().contains("crm:rules@0.2.0"), "{err}");
    let wrong_shape = wat::parse_str(
        r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (instance $api (export "price" (func $f)))
            (export "crm:rules/pricing@0.1.0" (instance $api)))"#,
    )
    .unwrap();
    let err = refuse(&wrong_shape);
    assert!(matches!(err, LoadError::WrongWorld(_)), "{err}");
    // A module, not a component.
    assert!(matches!(refuse(&wat::parse_str("(module)").unwrap()), LoadError::Invalid(_)));
    // A matcher asked to price.
    let matcher = host.load("m", "1", defaults::MATCHER_WASM).unwrap();
    assert!(matches!(matcher.price(&order(vec![], None, None)), Err(CallError::NotImplemented(..))));
}

#[test]
fn imports_beyond_the_sandbox_are_refused_and_io_is_contained() {
    let http = wat::parse_str(r#"(component (import "wasi:http/outgoing-handler@0.2.0" (instance)))"#).unwrap();
    let err = host().load("x", "1", &http).unwrap_err();
    assert!(matches!(err, LoadError::ForbiddenImport(_)) && err.to_string().contains("wasi:http"), "{err}");
    let custom = wat::parse_str(r#"(component (import "acme:db/query@1.0.0" (instance)))"#).unwrap();
    assert!(matches!(host().load("x", "1", &custom), Err(LoadError::ForbiddenImport(_))));

    let snoop = built("crm_plugin_hostile_io");
    let strict = host_with(HostConfig { deny_io_imports: true, ..HostConfig::default() });
    let err = strict.load("snoop", "1", &snoop).unwrap_err();
    assert!(matches!(err, LoadError::ForbiddenImport(_)) && err.to_string().contains("wasi:"), "{err}");

    // By default the same component loads, and finds nothing outside: no files, no
    // environment, no network, a clock standing at zero. (A socket call traps: contained.)
    let plugin = host().load("snoop", "1", &snoop).unwrap();
    assert!(plugin.info().imports.iter().any(|i| i.starts_with("wasi:filesystem/")), "{:?}", plugin.info().imports);
    match plugin.price(&order(vec![], None, None)) {
        Ok(quote) => {
            let text = quote.explanation.join("\n");
            assert!(text.contains("no file") && text.contains("env: 0 vars") && text.contains("no net"), "{text}");
        }
        Err(CallError::Failed { kind: FailureKind::Trap, .. }) => {}
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn compiled_components_are_cached_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig { cache_dir: Some(dir.path().to_owned()), ..HostConfig::default() };
    let stats = |host: &PluginHost| host.cache_stats().expect("a host with a cache directory has a cache");
    let first = PluginHost::new(config.clone()).unwrap();
    assert_eq!(stats(&first), CacheStats { hits: 0, misses: 0 });
    first.load("p", "1", defaults::PRICING_WASM).unwrap();
    assert_eq!(stats(&first), CacheStats { hits: 0, misses: 1 }, "compiled and written");
    first.load("p", "2", defaults::PRICING_WASM).unwrap();
    assert_eq!(stats(&first), CacheStats { hits: 1, misses: 1 }, "the same component again");
    // Another host (a restart) loads the artifact instead of compiling.
    let second = PluginHost::new(config.clone()).unwrap();
    let plugin = second.load("p", "1", defaults::PRICING_WASM).unwrap();
    assert_eq!(stats(&second), CacheStats { hits: 1, misses: 0 });
    assert_eq!(plugin.price(&order(vec![line(1, 5, None, None)], None, None)).unwrap().total, Money::from_minor(5));
    // Artifacts that are not ones are compiled again, not loaded.
    let mut artifacts = 0;
    for entry in walk(dir.path()) {
        std::fs::write(&entry, b"garbage").unwrap();
        artifacts += 1;
    }
    assert_eq!(artifacts, 1, "one artifact for one component and engine configuration");
    let third = PluginHost::new(config).unwrap();
    let plugin = third.load("p", "1", defaults::PRICING_WASM).unwrap();
    assert_eq!(stats(&third), CacheStats { hits: 0, misses: 1 });
    assert_eq!(plugin.price(&order(vec![line(2, 5, None, None)], None, None)).unwrap().total, Money::from_minor(10));
}

/// The artifact files under `dir` (wasmtime keeps its own statistics files beside them).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_none() {
            files.push(path);
        }
    }
    files
}
