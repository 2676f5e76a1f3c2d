//! The envelope every bus message travels in: CloudEvents 1.0 attributes, the W3C
//! `traceparent` and the request id that started the work, and the JSON data. Transports carry
//! the attributes in message headers (CloudEvents "binary mode") and the data as the body; the
//! store keeps the structured JSON form ([`Envelope::to_structured`]) in the outbox and for dead
//! letters.

use crate::message::{Exchange, Message};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The CloudEvents version this envelope implements.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of every envelope's data.
pub const CONTENT_TYPE: &str = "application/json";

/// Where a piece of work came from, carried from the HTTP request across the bus into the
/// connector and back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// W3C trace context (`00-<trace id>-<span id>-<flags>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The `x-request-id` of the HTTP request (or the id of the event) that caused this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Trace {
    /// A trace for work started by `request_id`, with a fresh W3C trace context.
    pub fn new(request_id: impl Into<String>) -> Self {
        Self { traceparent: Some(new_traceparent()), request_id: Some(request_id.into()) }
    }

    /// The trace a message caused by `envelope` carries: the same request id and trace id, a new
    /// span id.
    pub fn follow(envelope: &Envelope) -> Self {
        let traceparent = envelope.trace.traceparent.as_deref().and_then(child_traceparent).or_else(|| Some(new_traceparent()));
        Self { traceparent, request_id: envelope.trace.request_id.clone().or_else(|| Some(envelope.id.clone())) }
    }
}

fn new_traceparent() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    let span = &Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

/// A child context of a valid `traceparent`: same trace id and flags, new span id.
fn child_traceparent(parent: &str) -> Option<String> {
    let parts: Vec<&str> = parent.split('-').collect();
    let valid = parts.len() == 4
        && parts[0] == "00"
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts[1..].iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    valid.then(|| format!("00-{}-{}-{}", parts[1], &Uuid::new_v4().simple().to_string()[..16], parts[3]))
}

/// A message on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// CloudEvents `id`: unique per message (a UUIDv7); a redelivery keeps it.
    pub id: String,
    /// CloudEvents `source`: who published it (`/crm/core`, `/connectors/email/<instance>`).
    pub source: String,
    /// CloudEvents `type`, versioned (`crm.message.received.v1`).
    pub kind: String,
    /// CloudEvents `time`.
    pub time: DateTime<Utc>,
    /// CloudEvents `subject`: the entity it is about, when there is one (a log entry id, a path).
    pub subject: Option<String>,
    /// The exchange it is published to.
    pub exchange: Exchange,
    /// The topic routing key (`<channel>.<entity>.<verb>`).
    pub routing_key: String,
    /// Request id and trace context.
    pub trace: Trace,
    /// The JSON data.
    pub data: Vec<u8>,
}

/// Data that does not decode as the message its envelope says it is.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The envelope's type is not the one asked for.
    #[error("expected a {expected} message, got {actual}")]
    WrongType {
        /// The type asked for.
        expected: &'static str,
        /// The envelope's type.
        actual: String,
    },
    /// The data is not valid for the type; `pointer` is where.
    #[error("invalid {kind} data at '{pointer}': {detail}")]
    Invalid {
        /// The envelope's type.
        kind: String,
        /// JSON Pointer of the offending field.
        pointer: String,
        /// What is wrong.
        detail: String,
    },
    /// A structured envelope lacks an attribute or has a bad one.
    #[error("invalid envelope: {0}")]
    Envelope(String),
}

impl Envelope {
    /// Wraps `message` for publishing by `source`.
    pub fn new<M: Message>(source: &str, message: &M, trace: Trace) -> Self {
        Self {
            id: Uuid::now_v7().to_string(),
            source: source.to_owned(),
            kind: M::TYPE.to_owned(),
            time: Utc::now().trunc_subsecs(6),
            subject: message.subject(),
            exchange: M::EXCHANGE,
            routing_key: message.routing_key(),
            trace,
            data: serde_json::to_vec(message).expect("bus messages serialize to JSON"),
        }
    }

    /// Reads the data as `M`, checking the type first.
    pub fn decode<M: Message>(&self) -> Result<M, DecodeError> {
        if self.kind != M::TYPE {
            return Err(DecodeError::WrongType { expected: M::TYPE, actual: self.kind.clone() });
        }
        let mut de = serde_json::Deserializer::from_slice(&self.data);
        serde_path_to_error_like(&mut de).map_err(|(pointer, detail)| DecodeError::Invalid { kind: self.kind.clone(), pointer, detail })
    }

    /// The data as a JSON value (an invalid body becomes a string, so nothing is lost).
    pub fn data_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.data).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&self.data).into_owned()))
    }

    /// The CloudEvents structured JSON form, with the routing key and trace as extension
    /// attributes (`crmexchange`, `crmroutingkey`, `traceparent`, `crmrequestid`).
    pub fn to_structured(&self) -> serde_json::Value {
        let mut event = serde_json::json!({
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.kind,
            "time": self.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "datacontenttype": CONTENT_TYPE,
            "crmexchange": self.exchange.kind(),
            "crmroutingkey": self.routing_key,
            "data": self.data_json(),
        });
        let map = event.as_object_mut().expect("an object");
        if let Some(subject) = &self.subject {
            map.insert("subject".into(), subject.clone().into());
        }
        if let Some(traceparent) = &self.trace.traceparent {
            map.insert("traceparent".into(), traceparent.clone().into());
        }
        if let Some(request_id) = &self.trace.request_id {
            map.insert("crmrequestid".into(), request_id.clone().into());
        }
        event
    }

    /// Reads the structured JSON form written by [`Envelope::to_structured`].
    pub fn from_structured(event: &serde_json::Value) -> Result<Self, DecodeError> {
        let text = |name: &str| -> Result<String, DecodeError> {
            event.get(name).and_then(|v| v.as_str()).map(str::to_owned).ok_or_else(|| DecodeError::Envelope(format!("missing '{name}'")))
        };
        let optional = |name: &str| event.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        if text("specversion")? != SPEC_VERSION {
            return Err(DecodeError::Envelope("unsupported specversion".into()));
        }
        let time = DateTime::parse_from_rfc3339(&text("time")?).map_err(|e| DecodeError::Envelope(format!("bad 'time': {e}")))?;
        let exchange = Exchange::from_kind(&text("crmexchange")?).ok_or_else(|| DecodeError::Envelope("bad 'crmexchange'".into()))?;
        let data = match event.get("data") {
            Some(serde_json::Value::String(raw)) => raw.clone().into_bytes(),
            Some(value) => serde_json::to_vec(value).expect("a JSON value serializes"),
            None => return Err(DecodeError::Envelope("missing 'data'".into())),
        };
        Ok(Self {
            id: text("id")?,
            source: text("source")?,
            kind: text("type")?,
            time: time.with_timezone(&Utc),
            subject: optional("subject"),
            exchange,
            routing_key: text("crmroutingkey")?,
            trace: Trace { traceparent: optional("traceparent"), request_id: optional("crmrequestid") },
            data,
        })
    }
}

/// Deserializes while tracking the JSON Pointer of the first error.
fn serde_path_to_error_like<'de, T: Deserialize<'de>>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
) -> Result<T, (String, String)> {
    match serde_path_to_error::deserialize(&mut *de) {
        Ok(value) => Ok(value),
        Err(err) => {
            let pointer = pointer_of(err.path());
            Err((pointer, err.into_inner().to_string()))
        }
    }
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        pointer.push('/');
        match segment {
            Segment::Seq { index } => pointer.push_str(&index.to_string()),
            Segment::Map { key } | Segment::Enum { variant: key } => pointer.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Segment::Unknown => pointer.push('?'),
        }
    }
    pointer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_traceparent_keeps_trace_id_and_flags() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let child = child_traceparent(parent).unwrap();
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(child.ends_with("-01"));
        assert_ne!(child, parent);
        assert_eq!(child_traceparent("00-XYZ-00f067aa0ba902b7-01"), None);
        assert_eq!(child_traceparent("garbage"), None);
    }
}
