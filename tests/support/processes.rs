//! Connector processes for system tests: the real `crm-connector-files-local` binary, built if
//! needed, started against a test bus and killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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

/// A running files connector process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ConnectorProcess {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl ConnectorProcess {
    /// Starts the files connector on the RabbitMQ bus with `prefix`, keeping files in `data_dir`.
    pub fn files_local(amqp_url: &str, prefix: &str, data_dir: &Path, instance: &str) -> ConnectorProcess {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let log = data_dir.with_extension(format!("{instance}.log"));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let child = Command::new(files_local_binary())
            .env("CRM_CONNECTOR_AMQP_URL", amqp_url)
            .env("CRM_CONNECTOR_BUS_PREFIX", prefix)
            .env("CRM_CONNECTOR_INSTANCE", instance)
            .env("CRM_CONNECTOR_HEARTBEAT_INTERVAL_SECONDS", "1")
            .env("CRM_CONNECTOR_FILES_LOCAL_DATA_DIR", data_dir)
            .env("CRM_CONNECTOR_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start crm-connector-files-local");
        ConnectorProcess { child, log }
    }

    /// Kills it at once (no graceful shutdown), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ConnectorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `rabbitmqctl <args>` and panics if it fails.
pub fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl").args(args).output().expect("run rabbitmqctl");
    assert!(output.status.success(), "rabbitmqctl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}
