//! The one error type of the bus.

/// What went wrong on the bus. `Unavailable` and `Timeout` are worth retrying later; `Rejected`
/// and `Invalid` are not (without a change).
#[derive(Debug, Clone, thiserror::Error)]
pub enum BusError {
    /// The broker cannot be reached (connecting, connection lost, reconnecting), or the channel a
    /// delivery came on is gone (the broker redelivers it; the error can be ignored).
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the message: a negative confirm, or a command no queue is bound for.
    #[error("rejected by the broker: {0}")]
    Rejected(String),
    /// No confirm or no reply in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The bus was closed.
    #[error("the bus is closed")]
    Closed,
    /// A bad argument: a group or routing key that cannot be a name, a reply to a delivery that
    /// is not a request, a replay to a group that has no queue.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl From<lapin::Error> for BusError {
    fn from(err: lapin::Error) -> Self {
        BusError::Unavailable(err.to_string())
    }
}
