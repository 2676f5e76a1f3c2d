//! Publishing events that are never dropped: [`Publisher`] retries with exponential backoff until
//! the broker confirms (through a RabbitMQ outage too), and gives up only when the message itself
//! is invalid, the bus is closed, or the connector is told to stop at once.

use crm_bus::{Bus, BusError, Envelope};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Exponential backoff between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5) }
    }
}

/// Runs `operation` until it succeeds, waiting with the default backoff while the bus is
/// unreachable (`Unavailable`, `Timeout`) and logging each failure as `what`. `Ok(None)` when
/// `stop` fires first; any other error is returned at once.
pub(crate) async fn retry_while_unreachable<T, F, Fut>(
    stop: &CancellationToken,
    what: &str,
    mut operation: F,
) -> Result<Option<T>, BusError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BusError>>,
{
    let backoff = Backoff::default();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(None),
            result = operation() => result,
        };
        match result {
            Ok(value) => return Ok(Some(value)),
            Err(err @ (BusError::Unavailable(_) | BusError::Timeout(_))) => {
                tracing::warn!(attempt, error = %err, "{what}: the bus is unreachable; retrying");
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return Ok(None),
                    () = tokio::time::sleep(backoff.delay(attempt)) => {}
                }
            }
            Err(err) => return Err(err),
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt + 1` (`attempt` ≥ 1), doubling from `initial` to `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Why a publish gave up.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The connector was told to stop before the broker confirmed.
    #[error("stopped before the broker confirmed")]
    Stopped,
    /// The bus is closed.
    #[error("the bus is closed")]
    Closed,
    /// The message is invalid; retrying cannot help.
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Publishes events, retrying until confirmed. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    bus: Bus,
    stop: CancellationToken,
    backoff: Backoff,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("transport", &self.bus.transport()).field("backoff", &self.backoff).finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher on `bus` that gives up when `stop` fires.
    pub fn new(bus: Bus, stop: CancellationToken) -> Self {
        Publisher { bus, stop, backoff: Backoff::default() }
    }

    /// The same, with another backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Publishes `envelope` and waits for the broker's confirmation, retrying transient failures
    /// (broker unreachable, not confirmed in time, refused) with backoff.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), PublishError> {
        self.publish_all(std::slice::from_ref(envelope)).await
    }

    /// Publishes `envelopes` and waits for all confirmations, retrying as [`Publisher::publish`]
    /// does (a retry may publish some of them twice: consumers deduplicate).
    pub async fn publish_all(&self, envelopes: &[Envelope]) -> Result<(), PublishError> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let mut attempt = 0u32;
        loop {
            if self.stop.is_cancelled() {
                return Err(PublishError::Stopped);
            }
            attempt += 1;
            let result = tokio::select! {
                biased;
                () = self.stop.cancelled() => return Err(PublishError::Stopped),
                result = self.bus.publish_all(envelopes) => result,
            };
            let err = match result {
                Ok(()) => {
                    if attempt > 1 {
                        tracing::info!(attempt, "published after retrying");
                    }
                    return Ok(());
                }
                Err(BusError::Closed) => return Err(PublishError::Closed),
                Err(BusError::Invalid(detail)) => return Err(PublishError::Invalid(detail)),
                Err(err) => err,
            };
            let delay = self.backoff.delay(attempt);
            if attempt == 1 || attempt.is_power_of_two() {
                tracing::warn!(attempt, error = %err, retry_in_ms = delay.as_millis() as u64, kinds = ?kinds(envelopes), "publish failed; retrying");
            }
            tokio::select! {
                biased;
                () = self.stop.cancelled() => return Err(PublishError::Stopped),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

fn kinds(envelopes: &[Envelope]) -> Vec<&str> {
    let mut kinds: Vec<&str> = envelopes.iter().map(|e| e.kind.as_str()).collect();
    kinds.dedup();
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        assert_eq!(backoff.delay(1), Duration::from_millis(100));
        assert_eq!(backoff.delay(2), Duration::from_millis(200));
        assert_eq!(backoff.delay(4), Duration::from_millis(800));
        assert_eq!(backoff.delay(5), Duration::from_secs(1));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
    }
}
