//! Test support for connector authors (feature `testing`): a RabbitMQ bus on a prefix of its
//! own, a connector binary run as its own process with its log kept, waiting for its
//! heartbeats, and deleting what the test and the connector declared. The connectors in this repository test themselves with it, and a connector
//! written elsewhere can do the same.

use crm_bus::message::{Channel, ConnectorState, Heartbeat, command_group, core_events};
use crm_bus::{Bus, BusConfig, BusError, Delivery, Exchange, Subscriber, Subscription};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// The broker tests use: `CRM_TEST_AMQP_URL`, by default the local RabbitMQ as guest.
pub fn amqp_url() -> String {
    std::env::var("CRM_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A RabbitMQ bus on a fresh prefix (`t-<tag>-<random>`) and that prefix, or `None` when the
/// broker is unreachable: the test then skips, unless `CRM_REQUIRE_RABBITMQ=1`, when it fails.
pub async fn test_bus(tag: &str) -> Option<(Bus, String)> {
    let prefix = format!("t-{tag}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let config = BusConfig { prefix: prefix.clone(), ..BusConfig::default() };
    let why = match tokio::time::timeout(Duration::from_secs(15), Bus::connect(&amqp_url(), config)).await {
        Ok(Ok(bus)) => return Some((bus, prefix)),
        Ok(Err(err)) => err.to_string(),
        Err(_) => "timed out".into(),
    };
    if std::env::var("CRM_REQUIRE_RABBITMQ").as_deref() == Ok("1") {
        panic!("RabbitMQ is required (CRM_REQUIRE_RABBITMQ=1) but unreachable: {why}");
    }
    eprintln!("skipped: RabbitMQ unreachable at {}: {why}", crm_bus::redact_url(&amqp_url()));
    None
}

/// Deletes a test's queues and exchanges, with those its connector process declared on the
/// same prefix (the channel's command queue and the core's event queue), and closes the bus.
/// Best effort: a broker restarted by another test must not fail this one.
pub async fn clean_up(bus: &Bus, channel: Channel) {
    let command_queue = Subscription::new(command_group(channel), Exchange::Commands, &[]);
    // Declaring makes the bus know a queue, so that it deletes it too.
    for queue in [command_queue, core_events()] {
        if let Err(err) = bus.declare(&queue).await {
            eprintln!("clean-up: {err}");
        }
    }
    if let Err(err) = bus.delete_topology().await {
        eprintln!("clean-up: {err}");
    }
    bus.close().await;
}

/// Acknowledges `delivery`; one whose channel went away comes again, which tests allow for.
pub async fn ack(delivery: Delivery) {
    match delivery.ack().await {
        Ok(()) | Err(BusError::Unavailable(_)) => {}
        Err(err) => panic!("ack failed: {err}"),
    }
}

/// A connector binary running as its own process; killed if still running when dropped.
#[derive(Debug)]
pub struct ConnectorProcess {
    child: Child,
    log: PathBuf,
}

impl ConnectorProcess {
    /// The command that runs `binary` on the bus at `amqp_url` with `prefix`, as `instance`:
    /// an environment of `PATH` alone, heartbeats every second, JSON logs. Add the connector's
    /// own settings, then [`ConnectorProcess::spawn`] it.
    pub fn command(binary: impl AsRef<OsStr>, amqp_url: &str, prefix: &str, instance: &str) -> Command {
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CRM_CONNECTOR_AMQP_URL", amqp_url)
            .env("CRM_CONNECTOR_BUS_PREFIX", prefix)
            .env("CRM_CONNECTOR_INSTANCE", instance)
            .env("CRM_CONNECTOR_HEARTBEAT_INTERVAL_SECONDS", "1")
            .env("CRM_CONNECTOR_LOG_FORMAT", "json");
        command
    }

    /// Starts `command` with its output appended to `log`.
    pub fn spawn(command: &mut Command, log: &Path) -> ConnectorProcess {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("the connector's log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("the connector's log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {:?}: {err}", command.get_program()));
        ConnectorProcess { child, log: log.to_owned() }
    }

    /// What it has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asks it to stop (SIGTERM, through the `kill` command).
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for it to exit, at most `within` (then panics with its log).
    pub async fn exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("the connector's status") {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "the connector did not exit; log:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ConnectorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The next heartbeat of `instance` in `state` on `beats`, waiting at most `within` (then
/// panics with the process's log).
pub async fn heartbeat(
    beats: &mut Subscriber,
    instance: &str,
    state: ConnectorState,
    process: &ConnectorProcess,
    within: Duration,
) -> Heartbeat {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(delivery)) = tokio::time::timeout(left, beats.next()).await else {
            panic!("no {state:?} heartbeat from {instance}; log:\n{}", process.logs());
        };
        let beat: Heartbeat = delivery.envelope.decode().expect("a heartbeat");
        ack(delivery).await;
        if beat.instance == instance && beat.state == state {
            return beat;
        }
    }
}
