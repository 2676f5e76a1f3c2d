//! AMQP topic matching (`*` is exactly one word, `#` is zero or more) for the in-process bus,
//! and the validation of binding patterns for both transports.

use crate::BusError;

/// Whether `routing_key` matches the topic `pattern`.
pub(crate) fn matches(pattern: &str, routing_key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    match_words(&pattern, &key)
}

fn match_words(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| match_words(rest, &key[skip..])),
        Some((word, rest)) => match key.split_first() {
            Some((first, key_rest)) => (*word == "*" || word == first) && match_words(rest, key_rest),
            None => false,
        },
    }
}

/// Checks a binding pattern: non-empty dot-separated words, at most 255 bytes.
pub(crate) fn validate_pattern(pattern: &str) -> Result<(), BusError> {
    if pattern.is_empty() || pattern.len() > 255 || pattern.split('.').any(str::is_empty) {
        return Err(BusError::Invalid(format!("bad binding pattern '{pattern}'")));
    }
    Ok(())
}

/// Checks a routing key: at most 255 bytes (AMQP short string), no wildcards.
pub(crate) fn validate_routing_key(key: &str) -> Result<(), BusError> {
    if key.len() > 255 || key.split('.').any(|w| w == "*" || w == "#") {
        return Err(BusError::Invalid(format!("bad routing key '{key}'")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn topic_patterns() {
        assert!(matches("email.message.received", "email.message.received"));
        assert!(matches("*.message.received", "sms.message.received"));
        assert!(!matches("*.message.received", "message.received"));
        assert!(matches("#", "anything.at.all"));
        assert!(matches("#", ""));
        assert!(matches("email.#", "email"));
        assert!(matches("email.#", "email.message.status"));
        assert!(!matches("email.#", "sms.message"));
        assert!(matches("#.received", "email.message.received"));
        assert!(matches("email.#.received", "email.received"));
        assert!(matches("*.*.*", "a.b.c"));
        assert!(!matches("*.*", "a.b.c"));
        assert!(matches("connector.*.heartbeat", "connector.files.heartbeat"));
        assert!(!matches("call.completed", "call.completed.x"));
    }
}
