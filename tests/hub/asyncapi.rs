//! The AsyncAPI document against the code: every catalog message validates, the validator the
//! harness uses refuses real mistakes, the document's queues are the hub's, and what goes over
//! RabbitMQ carries exactly the documented headers.

use super::*;
use crm_bus::Message as _;
use crm_bus::message::{
    Bytes, CallCompleted, CallDirection, ConnectorState, EnsureFolder, FileContent, FileOutcome, FileRead, FileResult, Heartbeat, ReadFile,
    StoreFile, command_group,
};
use crm_tests::asyncapi::{binary_headers, document, validate, validate_structured};
use serde_json::{Value, json};

fn samples() -> Vec<Envelope> {
    let now = Utc::now();
    let id = Uuid::now_v7();
    let mut inbound = email("a@example.gr", Some("A"), "<s1@example.gr>");
    inbound.attachments = vec![crm_bus::message::InboundAttachment {
        filename: "a.pdf".into(),
        mime_type: "application/pdf".into(),
        size: 3,
        content: Some(Bytes(vec![0, 1, 255])),
        refused: None,
    }];
    let trace = || Trace::new("req-1");
    vec![
        connector_envelope(&inbound),
        connector_envelope(&DeliveryStatus {
            channel: Channel::Whatsapp,
            entry_id: Some(id),
            channel_message_id: Some("wamid.1".into()),
            status: DeliveryState::Failed,
            reason: Some("blocked".into()),
            occurred_at: now,
        }),
        connector_envelope(&CallCompleted {
            channel_message_id: "1700000000.1".into(),
            direction: CallDirection::Inbound,
            party: Address::phone("+302101234567", None),
            extension: Some("201".into()),
            started_at: now,
            duration_seconds: 42,
            answered: true,
            disposition: "ANSWERED".into(),
        }),
        connector_envelope(&FileResult {
            media_id: Some(id),
            path: "a/b.pdf".into(),
            outcome: FileOutcome::Stored { size: 3, sha256: "ab".repeat(32) },
        }),
        connector_envelope(&FileResult { media_id: None, path: "a".into(), outcome: FileOutcome::Failed { reason: "denied".into() } }),
        connector_envelope(&FileContent { path: "a".into(), result: FileRead::Found { content: Bytes(b"hello".to_vec()) } }),
        connector_envelope(&FileContent { path: "a".into(), result: FileRead::NotFound }),
        connector_envelope(&Heartbeat {
            name: "files-local".into(),
            version: "0.1.0".into(),
            channel: Channel::Files,
            instance: "host-1".into(),
            started_at: now,
            state: ConnectorState::Degraded,
            detail: Some("disk full".into()),
            in_flight: 2,
            interval_seconds: 10,
        }),
        Envelope::new("/crm/core", &send_message(), trace()),
        Envelope::new("/crm/core", &EnsureFolder { path: "customers/x".into() }, trace()),
        Envelope::new("/crm/core", &ReadFile { path: "customers/x/a.pdf".into() }, trace()),
        Envelope::new(
            "/crm/core",
            &StoreFile {
                media_id: id,
                path: "customers/x/a.pdf".into(),
                mime_type: "application/pdf".into(),
                overwrite: true,
                content: Bytes(vec![7; 10]),
            },
            trace(),
        ),
    ]
}

fn send_message() -> SendMessage {
    SendMessage {
        entry_id: Uuid::now_v7(),
        channel: Channel::Sms,
        to: vec![Address::phone("+306912345678", None)],
        cc: Vec::new(),
        subject: None,
        body: "Γεια σας".into(),
        body_html: None,
        in_reply_to: None,
        references: Vec::new(),
        attachments: Vec::new(),
    }
}

#[test]
fn every_catalog_message_validates() {
    let samples = samples();
    let documented: std::collections::BTreeSet<&str> =
        document()["components"]["messages"].as_object().unwrap().values().map(|m| m["name"].as_str().unwrap()).collect();
    let sampled: std::collections::BTreeSet<&str> = samples.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(sampled, documented, "a sample of every documented message");
    for envelope in &samples {
        validate(envelope).unwrap_or_else(|problem| panic!("{problem}"));
        validate_structured(&envelope.to_structured()).unwrap_or_else(|problem| panic!("{problem}"));
    }
}

/// The validator's answer for `envelope` with its data changed by `change`.
fn with_data(envelope: &Envelope, change: impl FnOnce(&mut Value)) -> Result<(), String> {
    let mut data = envelope.data_json();
    change(&mut data);
    validate(&Envelope { data: serde_json::to_vec(&data).unwrap(), ..envelope.clone() })
}

#[track_caller]
fn refused(result: Result<(), String>, says: &str) {
    match result {
        Ok(()) => panic!("validated, but should be refused ({says})"),
        Err(problem) => assert!(problem.contains(says), "the problem should mention '{says}': {problem}"),
    }
}

#[test]
fn validator_refuses_wrong_payloads() {
    let received = connector_envelope(&email("a@example.gr", None, "<n1@example.gr>"));
    validate(&received).expect("the original is valid");
    refused(
        with_data(&received, |d| {
            d.as_object_mut().unwrap().remove("from");
        }),
        "\"from\" is a required property",
    );
    refused(
        with_data(&received, |d| {
            d.as_object_mut().unwrap().remove("occurred_at");
        }),
        "occurred_at",
    );
    refused(with_data(&received, |d| d["colour"] = json!("blue")), "colour");
    refused(with_data(&received, |d| d["from"]["phone"] = json!("+30")), "phone");
    refused(with_data(&received, |d| d["from"]["kind"] = json!("fax")), "fax");
    refused(with_data(&received, |d| d["channel"] = json!("telegram")), "telegram");
    refused(with_data(&received, |d| d["occurred_at"] = json!("yesterday")), "date-time");
    refused(with_data(&received, |d| d["to"] = json!("someone@example.gr")), "array");
    refused(with_data(&received, |d| d["auto_reply"] = json!("no")), "boolean");

    let heartbeat = samples().into_iter().find(|e| e.routing_key == "connector.files.heartbeat").unwrap();
    refused(with_data(&heartbeat, |d| d["state"] = json!("sleeping")), "sleeping");
    refused(with_data(&heartbeat, |d| d["in_flight"] = json!(-1)), "minimum");

    let store = samples().into_iter().find(|e| e.routing_key == "files.file.store").unwrap();
    refused(with_data(&store, |d| d["content"] = json!("not base64!")), "content");
    refused(with_data(&store, |d| d["media_id"] = json!(12)), "media_id");

    let stored = samples().into_iter().find(|e| e.routing_key == "files.file.stored").unwrap();
    refused(with_data(&stored, |d| d["outcome"] = json!("failed")), "outcome");
    refused(
        with_data(&stored, |d| {
            d.as_object_mut().unwrap().remove("sha256");
        }),
        "/",
    );
}

#[test]
fn validator_refuses_wrong_envelopes() {
    let received = connector_envelope(&email("a@example.gr", None, "<n2@example.gr>"));
    // A type the channel does not carry, and a type nobody documents.
    refused(validate(&Envelope { kind: DeliveryStatus::TYPE.into(), ..received.clone() }), "carries no 'crm.message.status.v1'");
    refused(validate(&Envelope { kind: "crm.message.received.v2".into(), ..received.clone() }), "carries no");
    // A routing key that disagrees with the payload, one no channel has, the wrong exchange.
    refused(validate(&Envelope { routing_key: "sms.message.received".into(), ..received.clone() }), "payload's /channel");
    refused(validate(&Envelope { routing_key: "email.message.lost".into(), ..received.clone() }), "no channel");
    refused(validate(&Envelope { exchange: Exchange::Commands, ..received.clone() }), "no channel");
    // Headers: a bad trace context, an empty source.
    let bad_trace = Trace { traceparent: Some("00-XYZ-00f067aa0ba902b7-01".into()), request_id: None };
    refused(validate(&Envelope { trace: bad_trace, ..received.clone() }), "headers at '/traceparent'");
    refused(validate(&Envelope { source: String::new(), ..received.clone() }), "cloudEvents:source");
    // Data that is not JSON.
    refused(validate(&Envelope { data: b"<xml/>".to_vec(), ..received.clone() }), "not JSON");
    // The structured form: an attribute too many, a wrong content type.
    let mut structured = received.to_structured();
    validate_structured(&structured).expect("the original is valid");
    structured["colour"] = json!("blue");
    refused(validate_structured(&structured), "colour");
    let mut structured = received.to_structured();
    structured["datacontenttype"] = json!("text/plain");
    refused(validate_structured(&structured), "datacontenttype");
}

/// The harness validates against the committed file; make sure it is the generated one, and
/// that its queues are those the hub and the connectors use.
#[test]
fn document_agrees_with_the_code() {
    assert!(
        *document() == crm_bus::asyncapi::document(),
        "docs/asyncapi.json is stale: `CRM_REGENERATE=1 cargo test -p crm-bus --lib asyncapi`"
    );
    let mut bound = 0;
    for (key, channel) in document()["channels"].as_object().unwrap() {
        let Some(queue) = channel.pointer("/bindings/amqp/x-crm-queue") else {
            assert!(channel["address"].is_null(), "{key}: only a reply channel has no queue");
            continue;
        };
        let pattern = channel["x-crm-routing-key"].as_str().unwrap();
        for name in Channel::ALL {
            let routing_key = pattern.replace("{channel}", name.as_str());
            let group = queue["group"].as_str().unwrap().replace("{channel}", name.as_str());
            match channel["x-crm-exchange"].as_str().unwrap() {
                "events" => {
                    assert_eq!(group, crm_bus::message::CORE_EVENTS_GROUP, "{key}");
                    assert!(
                        crm_bus::message::CORE_EVENT_BINDINGS.contains(&queue["bindings"][0].as_str().unwrap()),
                        "{key}: the hub binds it"
                    );
                    assert!(
                        crm_bus::message::CORE_EVENT_BINDINGS.iter().any(|b| topic_matches(b, &routing_key)),
                        "{key}: the hub receives {routing_key}"
                    );
                }
                _ => {
                    assert_eq!(group, command_group(if pattern.contains("{channel}") { name } else { Channel::Files }), "{key}");
                    let binding = queue["bindings"][0].as_str().unwrap().replace("{channel}", name.as_str());
                    assert!(topic_matches(&binding, &routing_key), "{key}: {binding} takes {routing_key}");
                }
            }
            bound += 1;
        }
    }
    assert!(bound > 0);
}

/// AMQP topic matching (`*` one word, `#` any number).
fn topic_matches(pattern: &str, key: &str) -> bool {
    fn words(pattern: &[&str], key: &[&str]) -> bool {
        match (pattern.split_first(), key.split_first()) {
            (None, _) => key.is_empty(),
            (Some((&"#", rest)), _) => (0..=key.len()).any(|skip| words(rest, &key[skip..])),
            (Some((word, rest)), Some((first, key_rest))) => (*word == "*" || word == first) && words(rest, key_rest),
            (Some(_), None) => false,
        }
    }
    words(&pattern.split('.').collect::<Vec<_>>(), &key.split('.').collect::<Vec<_>>())
}

/// What RabbitMQ delivers carries the documented binary-mode headers and properties, exactly
/// as the validator reconstructs them from an envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_messages_carry_the_documented_headers() {
    use lapin::options::BasicGetOptions;
    use lapin::types::AMQPValue;

    let Some(bus) = TestBus::new(Transport::RabbitMq).await else { return };
    let group = "test.wire";
    bus.bus.declare(&Subscription::new(group, Exchange::Events, &["#"])).await.expect("declared");
    bus.bus.declare(&Subscription::new(group, Exchange::Commands, &["#"])).await.expect("declared");
    let sent = samples().into_iter().filter(|e| e.routing_key != "files.file.content").collect::<Vec<_>>();
    bus.bus.publish_all(&sent).await.expect("published");

    let connection =
        lapin::Connection::connect(&crm_tests::bus::amqp_url(), lapin::ConnectionProperties::default()).await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let queue = format!("{}.{group}", bus.config.prefix);
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < sent.len() && tokio::time::Instant::now() < deadline {
        match channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.expect("get") {
            Some(message) => got.push(message.delivery),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(got.len(), sent.len());
    for envelope in &sent {
        let delivery = got.iter().find(|d| d.data == envelope.data).expect("delivered");
        let properties = &delivery.properties;
        assert_eq!(properties.content_type().as_ref().map(|c| c.as_str()), Some(crm_bus::envelope::CONTENT_TYPE));
        assert_eq!(properties.message_id().as_ref().map(|m| m.as_str()), Some(envelope.id.as_str()));
        assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
        let mut headers = serde_json::Map::new();
        for (name, value) in properties.headers().as_ref().expect("headers").inner() {
            let value = match value {
                AMQPValue::LongString(s) => Value::from(String::from_utf8(s.as_bytes().to_vec()).expect("UTF-8")),
                AMQPValue::LongLongInt(n) => Value::from(*n),
                AMQPValue::LongInt(n) => Value::from(*n),
                other => panic!("header {name} is neither a string nor an integer: {other:?}"),
            };
            headers.insert(name.to_string(), value);
        }
        let headers = Value::Object(headers);
        // The bus's own headers are exactly those the validator reconstructs; the broker may add
        // its own (`x-delivery-count` on quorum queues), which the document lists too.
        let mut own = headers.clone();
        own.as_object_mut().unwrap().retain(|name, _| name != "x-delivery-count");
        assert_eq!(own, binary_headers(envelope), "{}", envelope.routing_key);
        let message = document()["channels"]
            .as_object()
            .unwrap()
            .values()
            .filter(|c| crm_bus::asyncapi::match_routing_key(c["x-crm-routing-key"].as_str().unwrap(), &envelope.routing_key).is_some())
            .find_map(|c| c["messages"].as_object().unwrap().values().next().cloned())
            .expect("a channel");
        let key = message["$ref"].as_str().unwrap().trim_start_matches("#/components/messages/");
        let schema = &document()["components"]["messages"][key]["headers"];
        assert!(jsonschema::draft7::is_valid(schema, &headers), "{} headers: {headers:#}", envelope.routing_key);
    }
    let _ = connection.close(200, "done".into()).await;
    bus.cleanup().await;
}
