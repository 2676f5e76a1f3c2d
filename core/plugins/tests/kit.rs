//! The developer kit: the template plugin passes its own cases file, and a wrong expectation
//! is reported as a failed case with what differed.

use crm_plugins::kit::{CaseFile, run_cases};
use crm_plugins::{HostConfig, PluginHost, defaults};

#[test]
fn the_template_passes_its_cases_and_wrong_expectations_fail() {
    let host = PluginHost::new(HostConfig {
        cache_dir: Some(std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-artifacts")),
        ..HostConfig::default()
    })
    .unwrap();
    let plugin = host.load_file("template", "1", &defaults::built_component("crm_plugin_template")).unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../plugins/template/cases.json")).unwrap();
    let cases: CaseFile = serde_json::from_str(&text).unwrap();
    let results = run_cases(&plugin, &cases);
    assert!(results.iter().all(|r| r.passed), "{results:#?}");
    let wrong: CaseFile = serde_json::from_str(
        r#"{"pricing": [{"name": "off by one", "order": {"lines": [{"unit_price": 100}]}, "expect": {"total": 101}}],
            "matching": [{"name": "not a matcher", "sender": {"channel": "email", "address": "a@b.gr"}}]}"#,
    )
    .unwrap();
    let results = run_cases(&plugin, &wrong);
    assert!(!results[0].passed && results[0].detail.contains("total 100, expected 101"), "{results:#?}");
    assert!(!results[1].passed && results[1].detail.contains("does not implement"), "{results:#?}");
}
