//! Bus configuration: the name prefix, the retry policy, the publisher-confirm timeout and the
//! largest message, plus redaction of AMQP URLs for logs and errors.

use std::time::Duration;

/// How a bus is set up; the same for both transports.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Prefix of every exchange and queue name (`crm` gives `crm.events`, `crm.core.events`).
    pub prefix: String,
    /// How failed deliveries are retried before they are dead-lettered.
    pub retry: RetryPolicy,
    /// How long a publish waits for the broker's confirm before it is an error.
    pub confirm_timeout: Duration,
    /// The largest message data the bus publishes, in bytes; a larger message is refused as
    /// [`crate::BusError::Invalid`] before it reaches the broker, which would close the channel
    /// on it (so that every retry failed alike). Set it to the broker's `max_message_size`
    /// (RabbitMQ 3.x: 128 MiB, the default here; RabbitMQ 4.x: 16 MiB) or below.
    pub max_message_bytes: usize,
}

/// RabbitMQ 3.x's default `max_message_size`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            prefix: "crm".into(),
            retry: RetryPolicy::default(),
            confirm_timeout: Duration::from_secs(10),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// Retry with backoff: a delivery may be tried `max_attempts` times in all; retry `n` waits
/// `backoff[n - 1]` (the last entry repeats).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Deliveries in all, the first included, before a retry dead-letters instead.
    pub max_attempts: u32,
    /// The wait before each retry; the last one repeats. Empty means no wait.
    pub backoff: Vec<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: vec![Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(30), Duration::from_secs(120)],
        }
    }
}

impl RetryPolicy {
    /// The wait before redelivering a message whose delivery number `attempt` (1-based) failed.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let index = attempt.saturating_sub(1) as usize;
        self.backoff.get(index).or(self.backoff.last()).copied().unwrap_or(Duration::ZERO)
    }

    /// Whether a delivery numbered `attempt` that failed is out of attempts.
    pub fn exhausted(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }
}

/// `url` with its password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme_end], &userinfo[..colon], &rest[at..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_repeats_its_last_step() {
        let policy = RetryPolicy { max_attempts: 4, backoff: vec![Duration::from_millis(10), Duration::from_millis(20)] };
        assert_eq!(policy.delay_after(1), Duration::from_millis(10));
        assert_eq!(policy.delay_after(2), Duration::from_millis(20));
        assert_eq!(policy.delay_after(7), Duration::from_millis(20));
        assert!(!policy.exhausted(3));
        assert!(policy.exhausted(4));
        assert_eq!(RetryPolicy { max_attempts: 1, backoff: vec![] }.delay_after(1), Duration::ZERO);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("amqps://u:p@ss@host/vh?x=1"), "amqps://u:***@host/vh?x=1");
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact_url("amqp://user@host/"), "amqp://user@host/");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
