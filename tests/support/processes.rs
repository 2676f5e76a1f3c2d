//! Connector processes for system tests: the real `crm-connector-files-local` binary, built if
//! needed, started against a test bus (with the connector SDK's test support) and killed when
//! dropped.

pub use crm_connector::testing::ConnectorProcess;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The connector binary, built (once per test binary) with the cargo that runs the tests, so it
/// is never stale.
pub fn files_local_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable");
            let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/..").to_path_buf();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "--quiet", "-p", "crm-connector-files-local", "--bin", "crm-connector-files-local"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build for the files connector");
            assert!(status.success(), "building crm-connector-files-local failed");
            let binary = profile_dir.join("crm-connector-files-local");
            assert!(binary.exists(), "{} missing after the build", binary.display());
            binary
        })
        .clone()
}

/// Starts the files connector process on the RabbitMQ bus with `prefix`, keeping files in
/// `data_dir`; it logs (warnings and worse) beside that directory.
pub fn files_local(amqp_url: &str, prefix: &str, data_dir: &Path, instance: &str) -> ConnectorProcess {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let mut command = ConnectorProcess::command(files_local_binary(), amqp_url, prefix, instance);
    command.env("CRM_CONNECTOR_FILES_LOCAL_DATA_DIR", data_dir).env("CRM_CONNECTOR_LOG_FILTER", "warn");
    ConnectorProcess::spawn(&mut command, &data_dir.with_extension(format!("{instance}.log")))
}

/// Runs `rabbitmqctl <args>` and panics if it fails.
pub fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl").args(args).output().expect("run rabbitmqctl");
    assert!(output.status.success(), "rabbitmqctl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}
