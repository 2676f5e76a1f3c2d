//! Checks bus messages against the committed AsyncAPI document (`docs/asyncapi.json`, generated
//! by `crm_bus::asyncapi::document()`): an envelope must be a message of a channel the document
//! describes (same exchange, a routing key of the channel's pattern, parameters that agree with
//! the payload), and its data, its binary-mode headers and its structured form must validate
//! against that message's schemas (JSON Schema draft 7, formats checked).

use crm_bus::Envelope;
use crm_bus::asyncapi::match_routing_key;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The committed document.
pub const DOCUMENT: &str = include_str!("../../docs/asyncapi.json");

/// The committed document, parsed.
pub fn document() -> &'static Value {
    static DOCUMENT_VALUE: OnceLock<Value> = OnceLock::new();
    DOCUMENT_VALUE.get_or_init(|| serde_json::from_str(DOCUMENT).expect("docs/asyncapi.json is JSON"))
}

/// The schema at `pointer` in the document, compiled once (its `$ref`s resolve in the document).
fn validator(pointer: &str) -> Result<Arc<jsonschema::Validator>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(found) = cache.lock().unwrap_or_else(PoisonError::into_inner).get(pointer) {
        return Ok(found.clone());
    }
    if document().pointer(pointer).is_none() {
        return Err(format!("docs/asyncapi.json has nothing at {pointer}"));
    }
    let schema = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "allOf": [{ "$ref": format!("#{pointer}") }],
        "components": document()["components"],
    });
    let compiled = jsonschema::draft7::options()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| format!("the schema at {pointer} does not compile: {e}"))?;
    let compiled = Arc::new(compiled);
    cache.lock().unwrap_or_else(PoisonError::into_inner).insert(pointer.to_owned(), compiled.clone());
    Ok(compiled)
}

/// Validates `instance` against the schema at `pointer`; one line per problem.
fn check(pointer: &str, what: &str, instance: &Value, problems: &mut Vec<String>) {
    match validator(pointer) {
        Ok(validator) => {
            problems.extend(validator.iter_errors(instance).map(|e| {
                let path = e.instance_path().to_string();
                format!("{what} at '{}': {e}", if path.is_empty() { "/" } else { &path })
            }));
        }
        Err(problem) => problems.push(problem),
    }
}

/// The binary-mode AMQP headers the bus sends with `envelope` (as `crm-bus` writes them).
pub fn binary_headers(envelope: &Envelope) -> Value {
    let mut headers = Map::new();
    headers.insert("cloudEvents:specversion".into(), crm_bus::envelope::SPEC_VERSION.into());
    headers.insert("cloudEvents:id".into(), envelope.id.clone().into());
    headers.insert("cloudEvents:source".into(), envelope.source.clone().into());
    headers.insert("cloudEvents:type".into(), envelope.kind.clone().into());
    headers.insert("cloudEvents:time".into(), envelope.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true).into());
    if let Some(subject) = &envelope.subject {
        headers.insert("cloudEvents:subject".into(), subject.clone().into());
    }
    if let Some(traceparent) = &envelope.trace.traceparent {
        headers.insert("traceparent".into(), traceparent.clone().into());
    }
    if let Some(request_id) = &envelope.trace.request_id {
        headers.insert("x-request-id".into(), request_id.clone().into());
    }
    Value::Object(headers)
}

/// The key under `components.messages` of the message `channel` carries with CloudEvents type
/// `kind`, if any.
fn message_of(channel: &Value, kind: &str) -> Option<String> {
    channel["messages"].as_object()?.values().find_map(|message| {
        let key = message["$ref"].as_str()?.strip_prefix("#/components/messages/")?;
        (document()["components"]["messages"][key]["name"] == kind).then(|| key.to_owned())
    })
}

/// Checks `envelope` (and its structured form) against the document; `Err` lists every problem
/// found.
pub fn validate(envelope: &Envelope) -> Result<(), String> {
    validate_with(envelope, &envelope.to_structured())
}

/// Checks a CloudEvents structured event (`Envelope::to_structured`, an outbox row, a dead
/// letter) against the document.
pub fn validate_structured(event: &Value) -> Result<(), String> {
    let envelope = Envelope::from_structured(event).map_err(|e| format!("not a structured envelope: {e}"))?;
    validate_with(&envelope, event)
}

fn validate_with(envelope: &Envelope, structured: &Value) -> Result<(), String> {
    let channels = document()["channels"].as_object().expect("channels");
    let routed: Vec<_> = channels
        .iter()
        .filter(|(_, channel)| channel["x-crm-exchange"] == envelope.exchange.kind())
        .filter_map(|(key, channel)| {
            let pattern = channel["x-crm-routing-key"].as_str()?;
            match_routing_key(pattern, &envelope.routing_key).map(|parameters| (key, channel, parameters))
        })
        .collect();
    let context = format!("{} {} on {} '{}'", envelope.kind, envelope.id, envelope.exchange.kind(), envelope.routing_key);
    if routed.is_empty() {
        return Err(format!("{context}: no channel of docs/asyncapi.json has this routing key on this exchange"));
    }
    let Some((channel_key, channel, parameters, message)) = routed
        .into_iter()
        .find_map(|(key, channel, parameters)| message_of(channel, &envelope.kind).map(|m| (key, channel, parameters, m)))
    else {
        return Err(format!("{context}: the channel of this routing key carries no '{}' message", envelope.kind));
    };

    let mut problems = Vec::new();
    let data: Value = match serde_json::from_slice(&envelope.data) {
        Ok(data) => data,
        Err(e) => return Err(format!("{context}: the data is not JSON: {e}")),
    };
    check(&format!("/components/messages/{message}/payload"), "data", &data, &mut problems);
    check(&format!("/components/messages/{message}/headers"), "headers", &binary_headers(envelope), &mut problems);
    for (name, word) in parameters {
        let parameter = &channel["parameters"][&name];
        if let Some(allowed) = parameter["enum"].as_array()
            && !allowed.iter().any(|a| a == word)
        {
            problems.push(format!("routing key: '{word}' is not a {name} of channel {channel_key}"));
        }
        if let Some(pointer) = parameter["location"].as_str().and_then(|l| l.strip_prefix("$message.payload#"))
            && data.pointer(pointer) != Some(&Value::from(word))
        {
            problems.push(format!("routing key: {name} '{word}' is not the payload's {pointer} ({:?})", data.pointer(pointer)));
        }
    }
    let structured_schema = document()["components"]["messages"][&message]["x-crm-structured"]["$ref"].as_str().unwrap_or_default();
    check(structured_schema.trim_start_matches('#'), "structured form", structured, &mut problems);

    if problems.is_empty() { Ok(()) } else { Err(format!("{context} on channel {channel_key}:\n  {}", problems.join("\n  "))) }
}
