//! `crm plugin check` and `crm plugin test`, run as a rule developer would, on the components
//! the build made: the template passes its own cases file, the default pricing rule fails the
//! template's volume-discount case, a component of no world is refused, and a dry run reads
//! the configured database without writing to it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CRM: &str = env!("CARGO_BIN_EXE_crm");

fn crm(dir: &Path) -> Command {
    let mut command = Command::new(CRM);
    command.current_dir(dir);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CRM_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command.env("CRM_DATABASE_URL", format!("sqlite://{}", dir.join("crm.db").display())).env("CRM_LOG_FORMAT", "json");
    command
}

fn run(command: &mut Command) -> (bool, String, String) {
    let Output { status, stdout, stderr } = command.output().expect("crm runs");
    (status.success(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

fn template() -> PathBuf {
    crm_plugins::defaults::built_component("crm_plugin_template")
}

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/template/cases.json")
}

#[test]
fn check_names_the_world_the_version_and_the_imports() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(crm(dir.path()).args(["plugin", "check"]).arg(template()));
    assert!(ok, "{out}{err}");
    assert!(out.contains("pricing-plugin of crm:rules@0.1.0"), "{out}");
    assert!(out.contains("wasi:cli/environment") && out.contains("loads and instantiates: ok"), "{out}");

    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, wat::parse_str("(component)").unwrap()).unwrap();
    let (ok, out, err) = run(crm(dir.path()).args(["plugin", "check"]).arg(&empty));
    assert!(!ok && err.contains("refused") && err.contains("crm:rules"), "{out}{err}");
}

#[test]
fn test_runs_cases_and_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(crm(dir.path()).args(["plugin", "test"]).arg(template()).arg(cases()));
    assert!(ok && out.contains("3 passed, 0 failed"), "{out}{err}");

    let pricing = dir.path().join("pricing.wasm");
    std::fs::write(&pricing, crm_plugins::defaults::PRICING_WASM).unwrap();
    let (ok, out, err) = run(crm(dir.path()).args(["plugin", "test"]).arg(&pricing).arg(cases()));
    assert!(!ok && out.contains("FAIL volume discount from 10 units") && out.contains("1 failed"), "{out}{err}");

    assert!(run(crm(dir.path()).arg("migrate")).0);
    let (ok, out, err) = run(crm(dir.path()).args(["plugin", "test", "--dry-run"]).arg(template()));
    assert!(ok && out.contains("dry run over 0 orders"), "{out}{err}");
    let matcher = dir.path().join("matcher.wasm");
    std::fs::write(&matcher, crm_plugins::defaults::MATCHER_WASM).unwrap();
    let (ok, out, err) = run(crm(dir.path()).args(["plugin", "test", "--dry-run"]).arg(&matcher));
    assert!(ok && out.contains("dry run over 0 customers"), "{out}{err}");
}
