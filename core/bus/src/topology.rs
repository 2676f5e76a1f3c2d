//! Every name the bus gives the broker, in one place: exchanges, queues, retry queues and the
//! message headers the bus adds.

use crate::BusError;
use crate::message::Exchange;
use std::time::Duration;

/// The group name of the dead-letter queue in [`crate::QueueStats`] and [`crate::DeadInfo`]-less
/// listings.
pub const DEAD_LETTER_GROUP: &str = "dead-letters";

/// Header: the delivery number the message will have when it is delivered next (1-based).
pub(crate) const ATTEMPT: &str = "x-crm-attempt";
/// Header: why the last attempt failed.
pub(crate) const LAST_ERROR: &str = "x-crm-last-error";
/// Header of a dead letter: the group that gave up on it.
pub(crate) const DEAD_GROUP: &str = "x-crm-group";
/// Header of a dead letter: why.
pub(crate) const DEAD_REASON: &str = "x-crm-reason";
/// Header of a dead letter: how many times it was delivered.
pub(crate) const DEAD_ATTEMPTS: &str = "x-crm-attempts";
/// Header of a dead letter: when it was dead-lettered (RFC 3339).
pub(crate) const DEAD_AT: &str = "x-crm-dead-at";
/// Header of a re-published message (retry, dead letter, replay, reply): its exchange kind.
pub(crate) const ORIGINAL_EXCHANGE: &str = "x-crm-exchange";
/// Header of a re-published message: its routing key.
pub(crate) const ORIGINAL_ROUTING_KEY: &str = "x-crm-routing-key";

/// The names of one bus's topology.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Result<Self, BusError> {
        if prefix.is_empty() || prefix.len() > 100 || !prefix.bytes().all(name_byte) {
            return Err(BusError::Invalid(format!("bad bus prefix '{prefix}': use 1-100 of a-z, A-Z, 0-9, '.', '-', '_'")));
        }
        Ok(Self { prefix: prefix.to_owned() })
    }

    /// `<prefix>.events` or `<prefix>.commands`.
    pub(crate) fn exchange(&self, exchange: Exchange) -> String {
        format!("{}.{}", self.prefix, exchange.kind())
    }

    /// The inverse of [`Names::exchange`].
    pub(crate) fn exchange_kind(&self, name: &str) -> Option<Exchange> {
        name.strip_prefix(&self.prefix).and_then(|rest| rest.strip_prefix('.')).and_then(Exchange::from_kind)
    }

    /// The dead-letter exchange `<prefix>.dead` (topic, routing key = group).
    pub(crate) fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The dead-letter queue `<prefix>.dead-letters`.
    pub(crate) fn dead_letter_queue(&self) -> String {
        format!("{}.{DEAD_LETTER_GROUP}", self.prefix)
    }

    /// The queue of a consumer group, `<prefix>.<group>`, after checking the group name.
    pub(crate) fn group_queue(&self, group: &str) -> Result<String, BusError> {
        let valid = !group.is_empty()
            && group.len() <= 120
            && group.bytes().all(name_byte)
            && !group.starts_with('.')
            && !group.ends_with('.')
            && group != DEAD_LETTER_GROUP
            // Reserved for delay queues (earlier versions named their classic delay queues `.retry.`).
            && !group.contains(".delay.")
            && !group.contains(".retry.");
        if !valid {
            return Err(BusError::Invalid(format!("bad group name '{group}': use 1-120 of a-z, A-Z, 0-9, '.', '-', '_'")));
        }
        Ok(format!("{}.{group}", self.prefix))
    }

    /// The group a queue of this prefix belongs to (the name itself for another queue).
    pub(crate) fn group_of(&self, queue: &str) -> String {
        queue.strip_prefix(&self.prefix).and_then(|rest| rest.strip_prefix('.')).unwrap_or(queue).to_owned()
    }

    /// The delay queue of a group for one backoff step, `<prefix>.<group>.delay.<ms>`.
    pub(crate) fn retry_queue(&self, group: &str, delay: Duration) -> String {
        format!("{}.{group}.delay.{}", self.prefix, delay.as_millis())
    }
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let names = Names::new("crm").unwrap();
        assert_eq!(names.exchange(Exchange::Events), "crm.events");
        assert_eq!(names.exchange_kind("crm.commands"), Some(Exchange::Commands));
        assert_eq!(names.exchange_kind("other.commands"), None);
        assert_eq!(names.group_queue("core.events").unwrap(), "crm.core.events");
        assert_eq!(names.retry_queue("core.events", Duration::from_secs(5)), "crm.core.events.delay.5000");
        assert_eq!(names.dead_letter_queue(), "crm.dead-letters");
        assert!(names.group_queue("dead-letters").is_err());
        assert!(names.group_queue("a b").is_err());
        assert!(names.group_queue("core.events.delay.50").is_err());
        assert!(names.group_queue("core.events.retry.50").is_err());
        assert!(names.group_queue("").is_err());
        assert!(Names::new("").is_err());
    }
}
