//! The registry: default plugins installed on a fresh directory, uploads, enabling, rollback
//! and deletion, all kept on disk across a restart, and automatic disabling recorded there.

use crm_domain::money::Money;
use crm_domain::order::ItemType;
use crm_plugins::pricing::{PriceLine, PriceRequest};
use crm_plugins::{CallError, HostConfig, Registry, RegistryConfig, RegistryError, Role, defaults};
use std::path::{Path, PathBuf};

fn open(dir: &Path) -> Registry {
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-artifacts");
    let host = HostConfig { cache_dir: Some(cache), max_consecutive_failures: 2, ..HostConfig::default() };
    Registry::open(RegistryConfig { dir: dir.to_owned(), host, install_defaults: true }).unwrap()
}

/// 12 units at 10.00: the template's volume discount takes 5 % off, the default rule does not.
fn bulk() -> PriceRequest {
    let line = PriceLine {
        kind: ItemType::Product,
        product_id: None,
        quantity: 12,
        unit_price: Money::from_minor(1_000),
        discount: None,
        tax_rate: None,
    };
    PriceRequest { currency: "EUR".into(), customer_id: None, lines: vec![line], discount: None, tax_rate: None }
}

fn template() -> Vec<u8> {
    std::fs::read(defaults::built_component("crm_plugin_template")).unwrap()
}

#[test]
fn a_fresh_directory_gets_the_default_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    let names: Vec<String> = registry.list().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["crm-matcher", "crm-pricing"]);
    assert_eq!(registry.get("crm-pricing").unwrap().active_for, [Role::Pricing]);
    let (quote, by) = registry.price(&bulk()).unwrap();
    assert_eq!((quote.total.minor(), by.name.as_str(), by.version.as_str()), (12_000, "crm-pricing", defaults::VERSION));
    assert!(dir.path().join("registry.json").is_file());
}

#[test]
fn uploads_rollbacks_and_switches_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let registry = open(dir.path());
        let summary = registry.upload("crm-pricing", "2.0.0", &template(), true).unwrap();
        assert_eq!((summary.current.version.as_str(), summary.previous.len()), ("2.0.0", 1));
        let (quote, by) = registry.price(&bulk()).unwrap();
        assert_eq!((quote.total.minor(), by.version.as_str()), (11_400, "2.0.0"));
        assert!(quote.explanation[0].contains("volume discount"), "{:?}", quote.explanation);
        // Same name and version with other content is refused; the same upload again is a no-op.
        assert!(matches!(registry.upload("crm-pricing", "2.0.0", defaults::PRICING_WASM, true), Err(RegistryError::Conflict(_))));
        assert_eq!(registry.upload("crm-pricing", "2.0.0", &template(), true).unwrap().previous.len(), 1);
        // A wrong world is refused with a clear error.
        let err = registry.upload("crm-pricing", "3", b"\0asm\x0d\0\x01\0", true).unwrap_err();
        assert!(matches!(err, RegistryError::Load(_)), "{err}");
        registry.upload("other", "1", &template(), false).unwrap();
        assert_eq!(registry.get("other").unwrap().active_for, []);
        registry.disable("crm-matcher").unwrap();
    }
    let registry = open(dir.path());
    assert_eq!(registry.get("crm-pricing").unwrap().current.version, "2.0.0");
    assert!(!registry.get("crm-matcher").unwrap().enabled);
    assert_eq!(registry.price(&bulk()).unwrap().1.version, "2.0.0");
    let back = registry.rollback("crm-pricing").unwrap();
    assert_eq!((back.current.version.as_str(), back.previous.len()), (defaults::VERSION, 0));
    assert_eq!(registry.price(&bulk()).unwrap().0.total.minor(), 12_000);
    assert!(matches!(registry.rollback("crm-pricing"), Err(RegistryError::Conflict(_))));
    registry.disable("crm-pricing").unwrap();
    assert!(matches!(registry.price(&bulk()), Err(CallError::Disabled(_))), "pricing is never done another way");
    // Enabling `other` makes it the active pricing plugin; the default can then be deleted.
    registry.enable("other").unwrap();
    assert_eq!(registry.price(&bulk()).unwrap().1.name, "other");
    assert!(matches!(registry.delete("other"), Err(RegistryError::Conflict(_))));
    registry.delete("crm-pricing").unwrap();
    assert!(matches!(registry.get("crm-pricing"), Err(RegistryError::NotFound(_))));
    drop(registry);
    // A deleted default comes back at the next start, without taking the role back.
    let registry = open(dir.path());
    assert_eq!(registry.get("crm-pricing").unwrap().active_for, []);
    assert_eq!(registry.price(&bulk()).unwrap().1.name, "other");
}

#[test]
fn a_failing_pricing_plugin_is_disabled_and_stays_disabled() {
    let dir = tempfile::tempdir().unwrap();
    {
        let registry = open(dir.path());
        let hostile = std::fs::read(defaults::built_component("crm_plugin_hostile")).unwrap();
        registry.upload("crm-pricing", "evil", &hostile, true).unwrap();
        let request = PriceRequest { currency: "PAN".into(), ..bulk() };
        assert!(matches!(registry.price(&request), Err(CallError::Failed { disabled_now: false, .. })));
        assert!(matches!(registry.price(&request), Err(CallError::Failed { disabled_now: true, .. })));
        assert!(matches!(registry.price(&bulk()), Err(CallError::Disabled(_))));
    }
    let registry = open(dir.path());
    assert!(!registry.get("crm-pricing").unwrap().enabled);
    registry.rollback("crm-pricing").unwrap();
    assert_eq!(registry.price(&bulk()).unwrap().0.total.minor(), 12_000);
}

#[test]
fn components_in_the_autoload_directory_are_registered_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("autoload")).unwrap();
    std::fs::write(dir.path().join("autoload/volume@1.2.wasm"), template()).unwrap();
    std::fs::write(dir.path().join("autoload/broken.wasm"), b"nope").unwrap();
    let registry = open(dir.path());
    let volume = registry.get("volume").unwrap();
    assert_eq!((volume.current.version.as_str(), volume.current.source.as_str()), ("1.2", "autoload"));
    assert!(matches!(registry.get("broken"), Err(RegistryError::NotFound(_))));
}

#[test]
fn the_ingest_matcher_asks_the_active_plugin_and_falls_back_to_the_built_in_rules() {
    use crm_domain::matching::{Channel, Matcher as _, Sender};
    let dir = tempfile::tempdir().unwrap();
    let registry = std::sync::Arc::new(open(dir.path()));
    let matcher = crm_plugins::Matcher::new(registry.clone(), crm_domain::contact::Region::GR);
    let sender = Sender { channel: Channel::Phone, address: "694 123 4567".into(), display_name: None };
    assert!(matcher.name().starts_with("crm-matcher 0.1.0"), "{}", matcher.name());
    let (keys, by) = matcher.match_keys_by(&sender);
    assert!(matches!(by, crm_plugins::matching::AnsweredBy::Plugin(_)), "{by:?}");
    assert_eq!(keys[0].value, "+306941234567");
    registry.disable("crm-matcher").unwrap();
    assert_eq!(matcher.name(), "built-in");
    let (fallback, by) = matcher.match_keys_by(&sender);
    assert!(matches!(by, crm_plugins::matching::AnsweredBy::Native(_)), "{by:?}");
    assert_eq!(fallback, keys);
    assert_eq!(matcher.keys(&sender).unwrap(), keys);
}
