//! The envelope on AMQP 0-9-1: CloudEvents binary mode (`cloudEvents:*` headers, the data as the
//! body, `content_type` application/json, `message_id` = the envelope id, persistent), the
//! `traceparent` and `x-request-id` headers, and the bus's own `x-crm-*` headers (attempt, dead
//! letter details, original exchange and routing key of re-published messages).

use crate::BusError;
use crate::delivery::DeadInfo;
use crate::envelope::{CONTENT_TYPE, Envelope, SPEC_VERSION, Trace};
use crate::message::Exchange;
use crate::topology::{self, Names};
use chrono::{DateTime, SecondsFormat, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

const CE_ID: &str = "cloudEvents:id";
const CE_SOURCE: &str = "cloudEvents:source";
const CE_TYPE: &str = "cloudEvents:type";
const CE_SPECVERSION: &str = "cloudEvents:specversion";
const CE_TIME: &str = "cloudEvents:time";
const CE_SUBJECT: &str = "cloudEvents:subject";
const TRACEPARENT: &str = "traceparent";
const REQUEST_ID: &str = "x-request-id";

pub(crate) fn short(value: &str) -> Result<ShortString, BusError> {
    ShortString::try_new(value).map_err(|e| BusError::Invalid(format!("'{}…': {e}", value.chars().take(40).collect::<String>())))
}

pub(crate) fn put_text(headers: &mut FieldTable, name: &str, value: &str) {
    headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
}

pub(crate) fn put_int(headers: &mut FieldTable, name: &str, value: u32) {
    headers.insert(name.into(), AMQPValue::LongLongInt(i64::from(value)));
}

/// The headers and properties of `envelope`, persistent.
pub(crate) fn properties(envelope: &Envelope) -> Result<BasicProperties, BusError> {
    Ok(BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(short(&envelope.id)?)
        .with_delivery_mode(2)
        .with_timestamp(u64::try_from(envelope.time.timestamp()).unwrap_or(0))
        .with_headers(headers(envelope)))
}

/// The CloudEvents and trace headers of `envelope`.
pub(crate) fn headers(envelope: &Envelope) -> FieldTable {
    let mut headers = FieldTable::default();
    put_text(&mut headers, CE_SPECVERSION, SPEC_VERSION);
    put_text(&mut headers, CE_ID, &envelope.id);
    put_text(&mut headers, CE_SOURCE, &envelope.source);
    put_text(&mut headers, CE_TYPE, &envelope.kind);
    put_text(&mut headers, CE_TIME, &envelope.time.to_rfc3339_opts(SecondsFormat::Micros, true));
    if let Some(subject) = &envelope.subject {
        put_text(&mut headers, CE_SUBJECT, subject);
    }
    if let Some(traceparent) = &envelope.trace.traceparent {
        put_text(&mut headers, TRACEPARENT, traceparent);
    }
    if let Some(request_id) = &envelope.trace.request_id {
        put_text(&mut headers, REQUEST_ID, request_id);
    }
    headers
}

/// Marks a re-published message with where it was first published.
pub(crate) fn put_origin(headers: &mut FieldTable, envelope: &Envelope) {
    put_text(headers, topology::ORIGINAL_EXCHANGE, envelope.exchange.kind());
    put_text(headers, topology::ORIGINAL_ROUTING_KEY, &envelope.routing_key);
}

/// Adds the dead-letter headers.
pub(crate) fn put_dead(headers: &mut FieldTable, group: &str, reason: &str, attempts: u32) {
    put_text(headers, topology::DEAD_GROUP, group);
    put_text(headers, topology::DEAD_REASON, reason);
    put_int(headers, topology::DEAD_ATTEMPTS, attempts);
    put_text(headers, topology::DEAD_AT, &Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true));
}

fn text(headers: &FieldTable, name: &str) -> Option<Result<String, String>> {
    let value = headers.inner().get(name)?;
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).map_err(|_| format!("header '{name}' is not UTF-8")),
        AMQPValue::ShortString(s) => Ok(s.as_str().to_owned()),
        other => Err(format!("header '{name}' is a {:?}, not a string", other.get_type())),
    })
}

fn required(headers: &FieldTable, name: &str) -> Result<String, String> {
    text(headers, name).unwrap_or_else(|| Err(format!("missing header '{name}'")))
}

fn optional(headers: &FieldTable, name: &str) -> Result<Option<String>, String> {
    text(headers, name).transpose()
}

fn int(headers: &FieldTable, name: &str) -> Option<i64> {
    match headers.inner().get(name)? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok(),
        _ => None,
    }
}

fn count(headers: &FieldTable, name: &str) -> Option<u32> {
    int(headers, name).map(|v| u32::try_from(v.max(1)).unwrap_or(u32::MAX))
}

/// What a consumer gets out of an AMQP delivery.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) envelope: Envelope,
    pub(crate) attempt: u32,
    pub(crate) dead: Option<DeadInfo>,
}

/// Reads a delivery of a group queue; `Err` says why it is not an envelope.
pub(crate) fn decode(names: &Names, delivery: &lapin::message::Delivery) -> Result<Decoded, String> {
    let empty = FieldTable::default();
    let headers = delivery.properties.headers().as_ref().unwrap_or(&empty);
    let specversion = required(headers, CE_SPECVERSION)?;
    if specversion != SPEC_VERSION {
        return Err(format!("unsupported CloudEvents specversion '{specversion}'"));
    }
    let time = required(headers, CE_TIME)?;
    let time = DateTime::parse_from_rfc3339(&time).map_err(|e| format!("bad header '{CE_TIME}': {e}"))?.with_timezone(&Utc);
    let (exchange, routing_key) = origin(names, headers, delivery)?;
    let envelope = Envelope {
        id: required(headers, CE_ID)?,
        source: required(headers, CE_SOURCE)?,
        kind: required(headers, CE_TYPE)?,
        time,
        subject: optional(headers, CE_SUBJECT)?,
        exchange,
        routing_key,
        trace: Trace { traceparent: optional(headers, TRACEPARENT)?, request_id: optional(headers, REQUEST_ID)? },
        data: delivery.data.clone(),
    };
    Ok(Decoded { envelope, attempt: count(headers, topology::ATTEMPT).unwrap_or(1), dead: None })
}

fn origin(names: &Names, headers: &FieldTable, delivery: &lapin::message::Delivery) -> Result<(Exchange, String), String> {
    let exchange = match optional(headers, topology::ORIGINAL_EXCHANGE)? {
        Some(kind) => Exchange::from_kind(&kind).ok_or_else(|| format!("bad header '{}': '{kind}'", topology::ORIGINAL_EXCHANGE))?,
        None => names
            .exchange_kind(delivery.exchange.as_str())
            .ok_or_else(|| format!("published to unknown exchange '{}'", delivery.exchange))?,
    };
    let routing_key = optional(headers, topology::ORIGINAL_ROUTING_KEY)?.unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
    Ok((exchange, routing_key))
}

/// Reads a dead letter, filling in what a garbled one lacks so it can still be filed.
pub(crate) fn decode_dead(names: &Names, delivery: &lapin::message::Delivery) -> Decoded {
    let empty = FieldTable::default();
    let headers = delivery.properties.headers().as_ref().unwrap_or(&empty);
    let get = |name: &str| text(headers, name).and_then(Result::ok);
    let attempts = count(headers, topology::DEAD_ATTEMPTS).or_else(|| count(headers, topology::ATTEMPT)).unwrap_or(1);
    let dead_at =
        get(topology::DEAD_AT).and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map_or_else(Utc::now, |t| t.with_timezone(&Utc));
    let group = get(topology::DEAD_GROUP)
        .or_else(|| get("x-first-death-queue").map(|queue| names.group_of(&queue)))
        .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
    let reason = get(topology::DEAD_REASON)
        .or_else(|| get("x-first-death-reason").map(|r| format!("broker: {r}")))
        .unwrap_or_else(|| "unknown".into());
    let (exchange, routing_key) =
        match (get(topology::ORIGINAL_EXCHANGE).as_deref().and_then(Exchange::from_kind), get(topology::ORIGINAL_ROUTING_KEY)) {
            (Some(exchange), Some(key)) => (exchange, key),
            _ => (Exchange::Events, String::new()),
        };
    let envelope = Envelope {
        id: get(CE_ID)
            .or_else(|| delivery.properties.message_id().as_ref().map(|m| m.as_str().to_owned()))
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        source: get(CE_SOURCE).unwrap_or_else(|| "unknown".into()),
        kind: get(CE_TYPE).unwrap_or_else(|| "unknown".into()),
        time: get(CE_TIME).and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map_or(dead_at, |t| t.with_timezone(&Utc)),
        subject: get(CE_SUBJECT),
        exchange,
        routing_key,
        trace: Trace { traceparent: get(TRACEPARENT), request_id: get(REQUEST_ID) },
        data: delivery.data.clone(),
    };
    Decoded { envelope, attempt: attempts, dead: Some(DeadInfo { group, reason, attempts, dead_at }) }
}
