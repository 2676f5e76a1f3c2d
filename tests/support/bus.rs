//! Buses for tests: the in-process bus, or RabbitMQ with a name prefix of its own so test runs
//! never see each other's messages. RabbitMQ tests use `CRM_TEST_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`); when no broker answers they are skipped with a
//! notice, unless `CRM_REQUIRE_RABBITMQ=1` (set by `.ci/run`) makes that a failure.

use crm_bus::{Bus, BusConfig, RetryPolicy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The transports a bus test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The embedded in-process bus.
    InProcess,
    /// The RabbitMQ server on this machine.
    RabbitMq,
}

/// The broker URL for tests.
pub fn amqp_url() -> String {
    std::env::var("CRM_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn rabbitmq_required() -> bool {
    std::env::var("CRM_REQUIRE_RABBITMQ").is_ok_and(|v| v == "1")
}

static SKIP_NOTED: AtomicBool = AtomicBool::new(false);

/// A bus config with a unique prefix and short retry backoffs (so retry tests finish quickly).
pub fn test_bus_config() -> BusConfig {
    BusConfig {
        prefix: format!("test-{}", uuid::Uuid::now_v7().simple()),
        retry: RetryPolicy { max_attempts: 3, backoff: vec![Duration::from_millis(50), Duration::from_millis(100)] },
        confirm_timeout: Duration::from_secs(10),
        ..BusConfig::default()
    }
}

/// A bus on `transport` with a unique prefix, or `None` when RabbitMQ is unreachable and not
/// required. Delete its topology with [`TestBus::cleanup`] at the end of a RabbitMQ test.
#[derive(Debug)]
pub struct TestBus {
    /// The bus.
    pub bus: Bus,
    /// Its config (the prefix is what a connector process must be given).
    pub config: BusConfig,
}

impl TestBus {
    /// A fresh bus.
    pub async fn new(transport: Transport) -> Option<TestBus> {
        Self::with_config(transport, test_bus_config()).await
    }

    /// A fresh bus with `config`.
    pub async fn with_config(transport: Transport, config: BusConfig) -> Option<TestBus> {
        match transport {
            Transport::InProcess => Some(TestBus { bus: Bus::in_process(config.clone()), config }),
            Transport::RabbitMq => match Bus::connect(&amqp_url(), config.clone()).await {
                Ok(bus) => Some(TestBus { bus, config }),
                Err(err) => {
                    if rabbitmq_required() {
                        panic!("CRM_REQUIRE_RABBITMQ=1 but RabbitMQ at {} is unreachable: {err}", crm_bus::redact_url(&amqp_url()));
                    }
                    if !SKIP_NOTED.swap(true, Ordering::SeqCst) {
                        crate::notice(&format!(
                            "NOTICE: RabbitMQ tests SKIPPED: no broker at {} ({err}). Set CRM_REQUIRE_RABBITMQ=1 to make this a failure.",
                            crm_bus::redact_url(&amqp_url())
                        ));
                    }
                    None
                }
            },
        }
    }

    /// Deletes the exchanges and queues of this bus's prefix and closes it.
    pub async fn cleanup(self) {
        let _ = self.bus.delete_topology().await;
        self.bus.close().await;
    }
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
