//! What the bus scenarios share: a bus of either transport with a unique prefix (RabbitMQ
//! topology deleted afterwards), test messages, and waits with generous timeouts.
//!
//! RabbitMQ tests use `CRM_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! When no broker answers they are skipped with a NOTICE, unless `CRM_REQUIRE_RABBITMQ=1` (set by
//! `.ci/run`). Tests that restart the broker take [`RABBIT`] for writing; all others read it, so
//! a restart never runs alongside another RabbitMQ test of this binary.

use chrono::{SubsecRound as _, Utc};
use crm_bus::{Bus, BusConfig, Delivery, Envelope, Exchange, RetryPolicy, Subscriber, Trace};
use futures::FutureExt as _;
use std::future::Future;
use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::RwLock;

/// Long enough for any delivery on a loaded 2-core machine.
pub(crate) const WAIT: Duration = Duration::from_secs(20);
/// How long "nothing more arrives" is watched for.
pub(crate) const QUIET: Duration = Duration::from_millis(400);

/// Held for writing by broker restarts, for reading by every other RabbitMQ test.
pub(crate) static RABBIT: RwLock<()> = RwLock::const_new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    InProcess,
    /// The in-process bus with its journal (as `crm serve` runs it).
    InProcessJournaled,
    Rabbitmq,
}

/// What a scenario gets.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) bus: Bus,
    pub(crate) transport: Transport,
    pub(crate) prefix: String,
    /// The journal's directory, for [`Transport::InProcessJournaled`].
    pub(crate) journal: Option<std::sync::Arc<tempfile::TempDir>>,
}

pub(crate) fn amqp_url() -> String {
    std::env::var("CRM_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn rabbit_required() -> bool {
    std::env::var("CRM_REQUIRE_RABBITMQ").is_ok_and(|v| v == "1")
}

/// Writes straight to the terminal: libtest captures `eprintln!`, not the stderr handle.
pub(crate) fn notice(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

static SKIP_NOTED: AtomicBool = AtomicBool::new(false);

/// Whether the broker's port answers (asked once per binary).
async fn rabbit_reachable() -> Result<(), String> {
    static PROBE: tokio::sync::OnceCell<Result<(), String>> = tokio::sync::OnceCell::const_new();
    PROBE
        .get_or_init(|| async {
            let uri: lapin::uri::AMQPUri = amqp_url().parse().map_err(|e| format!("bad CRM_TEST_AMQP_URL: {e}"))?;
            let address = format!("{}:{}", uri.authority.host, uri.authority.port);
            match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(&address)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("{address}: {e}")),
                Err(_) => Err(format!("{address}: no answer in 3 s")),
            }
        })
        .await
        .clone()
}

/// `None` (after a notice) when RabbitMQ is not reachable and not required.
pub(crate) async fn rabbit_or_skip() -> Option<()> {
    match rabbit_reachable().await {
        Ok(()) => Some(()),
        Err(err) if rabbit_required() => panic!("CRM_REQUIRE_RABBITMQ=1 but RabbitMQ is unreachable: {err}"),
        Err(err) => {
            if !SKIP_NOTED.swap(true, Ordering::SeqCst) {
                notice(&format!("NOTICE: RabbitMQ bus tests SKIPPED: {err}. Set CRM_REQUIRE_RABBITMQ=1 to make this a failure."));
            }
            None
        }
    }
}

/// Short backoffs so retries finish quickly: 3 attempts, 50 ms then 100 ms.
pub(crate) fn test_config(prefix: &str) -> BusConfig {
    BusConfig {
        prefix: prefix.to_owned(),
        retry: RetryPolicy { max_attempts: 3, backoff: vec![Duration::from_millis(50), Duration::from_millis(100)] },
        confirm_timeout: Duration::from_secs(15),
        ..BusConfig::default()
    }
}

/// Logs to the test output when `RUST_LOG` is set.
fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
    }
}

impl Ctx {
    pub(crate) async fn new(transport: Transport) -> Option<Ctx> {
        init_logging();
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        let mut journal = None;
        let bus = match transport {
            Transport::InProcess => Bus::in_process(test_config(&prefix)),
            Transport::InProcessJournaled => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let bus = Bus::in_process_durable(test_config(&prefix), &dir.path().join("bus.journal")).expect("open the journal");
                journal = Some(std::sync::Arc::new(dir));
                bus
            }
            Transport::Rabbitmq => {
                rabbit_or_skip().await?;
                Bus::connect(&amqp_url(), test_config(&prefix)).await.expect("connect to RabbitMQ")
            }
        };
        Some(Ctx { bus, transport, prefix, journal })
    }

    pub(crate) fn is_rabbit(&self) -> bool {
        self.transport == Transport::Rabbitmq
    }
}

/// Runs `scenario` on `transport`, then deletes its topology and closes the bus, even when the
/// scenario panics.
pub(crate) async fn run<F, Fut>(transport: Transport, scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let _shared = match transport {
        Transport::Rabbitmq => Some(RABBIT.read().await),
        Transport::InProcess | Transport::InProcessJournaled => None,
    };
    run_unlocked(transport, scenario).await;
}

/// [`run`] without taking [`RABBIT`] (the caller holds it).
pub(crate) async fn run_unlocked<F, Fut>(transport: Transport, scenario: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(ctx) = Ctx::new(transport).await else { return };
    let bus = ctx.bus.clone();
    // The journal's directory outlives the scenario until the bus is closed.
    let journal = ctx.journal.clone();
    let outcome = AssertUnwindSafe(scenario(ctx)).catch_unwind().await;
    // Let dropped subscribers close their channels before their queues go; after a broker
    // restart, let the bus reconnect first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !bus.is_closed() && !bus.is_ready().await && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deleted = tokio::time::timeout(WAIT, bus.delete_topology()).await;
    bus.close().await;
    drop((bus, journal));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    match deleted {
        Ok(Ok(())) => {}
        Ok(Err(err)) => panic!("deleting the test topology failed: {err}"),
        Err(_) => panic!("deleting the test topology timed out"),
    }
}

/// A test message `n` on `exchange` with `routing_key`.
pub(crate) fn message(exchange: Exchange, routing_key: &str, n: usize) -> Envelope {
    Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        source: "/tests/bus".into(),
        kind: "crm.test.ping.v1".into(),
        time: Utc::now().trunc_subsecs(6),
        subject: Some(format!("subject-{n}")),
        exchange,
        routing_key: routing_key.to_owned(),
        trace: Trace::new(format!("request-{n}")),
        data: serde_json::to_vec(&serde_json::json!({ "n": n, "text": "καλημέρα" })).expect("json"),
    }
}

pub(crate) fn event(routing_key: &str, n: usize) -> Envelope {
    message(Exchange::Events, routing_key, n)
}

pub(crate) fn command(routing_key: &str, n: usize) -> Envelope {
    message(Exchange::Commands, routing_key, n)
}

/// The next delivery, failing the test when none comes within [`WAIT`].
pub(crate) async fn recv(subscriber: &mut Subscriber) -> Delivery {
    match tokio::time::timeout(WAIT, subscriber.next()).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => panic!("subscriber of {} ended", subscriber.group()),
        Err(_) => panic!("no delivery for {} within {WAIT:?}", subscriber.group()),
    }
}

/// Fails when a delivery arrives within [`QUIET`]. (It can only fail when something is wrong.)
pub(crate) async fn assert_quiet(subscriber: &mut Subscriber) {
    if let Ok(Some(delivery)) = tokio::time::timeout(QUIET, subscriber.next()).await {
        panic!(
            "unexpected delivery on {}: {} {} (attempt {})",
            subscriber.group(),
            delivery.envelope.routing_key,
            delivery.envelope.id,
            delivery.attempt
        );
    }
}

/// Polls `condition` until it holds, failing after `limit`.
pub(crate) async fn wait_until<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The (ready messages, consumers) of `group`'s queue.
pub(crate) async fn queue_figures(bus: &Bus, group: &str) -> Option<(u64, u32)> {
    bus.queue_stats().await.expect("queue stats").into_iter().find(|s| s.group == group).map(|s| (s.messages, s.consumers))
}
