//! The AsyncAPI 3.0 document of the bus, generated from the message catalog ([`document`]) and
//! committed as `docs/asyncapi.json` (a test fails when the two differ; `CRM_REGENERATE=1 cargo
//! test -p crm-bus --lib asyncapi` rewrites the file).
//!
//! * One channel per routing-key pattern (`{channel}.message.received`, `call.completed`, ...)
//!   with its AMQP binding (the topic exchange) and, as the extension `x-crm-queue`, the consumer
//!   group queue that takes it. A `{channel}` parameter names where its value sits in the payload
//!   (`location`), so a validator can check that the routing key agrees with the data.
//! * Operations for both sides: the core receives events and sends commands, connectors do the
//!   opposite. `files.file.read` is a request whose reply (`files.file.content`) goes to the
//!   requester's reply address.
//! * One message per catalog type: `name` is the CloudEvents type, `headers` the binary-mode AMQP
//!   headers, `payload` the JSON Schema of the data, derived from the types' `utoipa` schemas and
//!   turned into plain JSON Schema (draft 7, AsyncAPI's default schema format) under
//!   `components.schemas`. `FileResult` is two messages (`FileStored`, `FileFailed`), one per
//!   routing key, each restricted to its outcome.
//! * `x-crm-structured` on each message points to the JSON Schema of its CloudEvents structured
//!   form ([`crate::Envelope::to_structured`], as kept in the outbox and with dead letters), under
//!   `components.schemas.<Message>Event`.
//!
//! Names use the default prefix `crm`; a bus configured with another prefix renames exchanges
//! and queues the same way.

use crate::envelope::{CONTENT_TYPE, SPEC_VERSION};
use crate::message::{
    CORE_EVENTS_GROUP, CallCompleted, Channel, DeliveryStatus, EnsureFolder, Exchange, FileContent, FileResult, Heartbeat, Message,
    MessageReceived, ReadFile, SendMessage, StoreFile, command_group,
};
use serde_json::{Map, Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

/// Where the generated document is committed, relative to the workspace root.
pub const DOCUMENT_PATH: &str = "docs/asyncapi.json";
/// The AsyncAPI version of the document.
pub const ASYNCAPI_VERSION: &str = "3.0.0";
/// The version of the AMQP bindings used.
pub const AMQP_BINDING_VERSION: &str = "0.3.0";
/// W3C trace context, version 00, as the `traceparent` header must look.
pub const TRACEPARENT_PATTERN: &str = "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$";
/// Canonical, padded base64 (RFC 4648), as binary content travels.
pub const BASE64_PATTERN: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";
/// Where a reply goes: the requester's AMQP `reply_to` property (RabbitMQ direct reply-to).
pub const REPLY_ADDRESS_LOCATION: &str = "$message.header#/reply_to";
/// Where the correlation id of every message is: the request that caused it.
pub const CORRELATION_LOCATION: &str = "$message.header#/x-request-id";

/// The prefix the document's names use (the bus's default).
const PREFIX: &str = "crm";

/// A message of the catalog as the document shows it.
struct MessageDoc {
    /// Its key under `components.messages`.
    key: &'static str,
    /// The CloudEvents type.
    kind: &'static str,
    exchange: Exchange,
    /// The data's schema under `components.schemas`.
    schema: String,
    /// The data type's own description.
    summary: String,
    /// `(property, value)`: the payload is restricted to this value of the property.
    only: Option<(&'static str, &'static str)>,
}

/// A routing-key pattern.
struct ChannelDoc {
    key: &'static str,
    /// The routing key, with `{channel}` where the channel's name goes.
    routing_key: &'static str,
    exchange: Exchange,
    /// A reply: it has no address of its own (it goes where the request's `reply_to` says).
    reply: bool,
    /// The channel of the replies to a request on this channel.
    replies_on: Option<&'static str>,
    /// The key of its message.
    message: &'static str,
    /// The consumer group that takes it, with `{channel}` as in the routing key.
    group: Option<String>,
    /// What the binding patterns of that group are.
    bindings: &'static [&'static str],
    description: &'static str,
}

/// Everything the catalog gives the document: the messages and the schemas they use.
struct Catalog {
    messages: Vec<MessageDoc>,
    schemas: Vec<(String, RefOr<Schema>)>,
}

impl Catalog {
    fn new() -> Self {
        let mut catalog = Catalog { messages: Vec::new(), schemas: Vec::new() };
        catalog.add::<MessageReceived>("MessageReceived", None);
        catalog.add::<DeliveryStatus>("DeliveryStatus", None);
        catalog.add::<CallCompleted>("CallCompleted", None);
        catalog.add::<FileResult>("FileStored", Some(("outcome", "stored")));
        catalog.add::<FileResult>("FileFailed", Some(("outcome", "failed")));
        catalog.add::<FileContent>("FileContent", None);
        catalog.add::<Heartbeat>("Heartbeat", None);
        catalog.add::<SendMessage>("SendMessage", None);
        catalog.add::<EnsureFolder>("EnsureFolder", None);
        catalog.add::<StoreFile>("StoreFile", None);
        catalog.add::<ReadFile>("ReadFile", None);
        catalog
    }

    fn add<M: Message + utoipa::ToSchema>(&mut self, key: &'static str, only: Option<(&'static str, &'static str)>) {
        let schema = <M as utoipa::PartialSchema>::schema();
        let summary = match &schema {
            RefOr::T(Schema::Object(o)) => o.description.clone(),
            RefOr::T(Schema::AllOf(o)) => o.description.clone(),
            RefOr::T(Schema::OneOf(o)) => o.description.clone(),
            _ => None,
        };
        let summary = summary.map(|text| clean_description(&text)).unwrap_or_default();
        let name = M::name().into_owned();
        self.schemas.push((name.clone(), schema));
        M::schemas(&mut self.schemas);
        self.messages.push(MessageDoc { key, kind: M::TYPE, exchange: M::EXCHANGE, schema: name, summary, only });
    }

    fn message(&self, key: &str) -> &MessageDoc {
        self.messages.iter().find(|m| m.key == key).unwrap_or_else(|| panic!("no message '{key}' in the catalog"))
    }
}

fn channels() -> Vec<ChannelDoc> {
    let connector_group = || Some(command_group_pattern());
    vec![
        ChannelDoc {
            key: "messageReceived",
            routing_key: "{channel}.message.received",
            exchange: Exchange::Events,
            reply: false,
            replies_on: None,
            message: "MessageReceived",
            group: Some(CORE_EVENTS_GROUP.into()),
            bindings: &["*.message.received"],
            description: "A message someone sent on a channel (an email, a WhatsApp or SMS message), published by the channel's connector.",
        },
        ChannelDoc {
            key: "messageStatus",
            routing_key: "{channel}.message.status",
            exchange: Exchange::Events,
            reply: false,
            replies_on: None,
            message: "DeliveryStatus",
            group: Some(CORE_EVENTS_GROUP.into()),
            bindings: &["*.message.status"],
            description: "What happened to an outbound message: the result of a send command, or a later report (delivered, read, bounced).",
        },
        ChannelDoc {
            key: "callCompleted",
            routing_key: "call.completed",
            exchange: Exchange::Events,
            reply: false,
            replies_on: None,
            message: "CallCompleted",
            group: Some(CORE_EVENTS_GROUP.into()),
            bindings: &["call.completed"],
            description: "A telephone call that ended, published by the telephony connector.",
        },
        ChannelDoc {
            key: "fileStored",
            routing_key: "files.file.stored",
            exchange: Exchange::Events,
            reply: false,
            replies_on: None,
            message: "FileStored",
            group: Some(CORE_EVENTS_GROUP.into()),
            bindings: &["files.file.stored"],
            description: "A store-file or ensure-folder command succeeded.",
        },
        ChannelDoc {
            key: "fileFailed",
            routing_key: "files.file.failed",
            exchange: Exchange::Events,
            reply: false,
            replies_on: None,
            message: "FileFailed",
            group: Some(CORE_EVENTS_GROUP.into()),
            bindings: &["files.file.failed"],
            description: "A store-file or ensure-folder command failed; the reason says why.",
        },
        ChannelDoc {
            key: "fileContent",
            routing_key: "files.file.content",
            exchange: Exchange::Events,
            reply: true,
            replies_on: None,
            message: "FileContent",
            group: None,
            bindings: &[],
            description: "The reply to a read-file request. It goes to the requester's reply address (RabbitMQ direct \
                          reply-to, the request's `reply_to` property, with its `correlation_id`), not through an exchange; \
                          the envelope names exchange `events` and routing key `files.file.content` \
                          (`x-crm-exchange`, `x-crm-routing-key` headers).",
        },
        ChannelDoc {
            key: "connectorHeartbeat",
            routing_key: "connector.{channel}.heartbeat",
            exchange: Exchange::Events,
            reply: false,
            replies_on: None,
            message: "Heartbeat",
            group: Some(CORE_EVENTS_GROUP.into()),
            bindings: &["connector.#"],
            description: "A connector instance announcing itself: at start, every interval and at shutdown.",
        },
        ChannelDoc {
            key: "messageSend",
            routing_key: "{channel}.message.send",
            exchange: Exchange::Commands,
            reply: false,
            replies_on: None,
            message: "SendMessage",
            group: connector_group(),
            bindings: &["{channel}.#"],
            description: "Send a message to a customer on a channel; the connector answers on `{channel}.message.status`.",
        },
        ChannelDoc {
            key: "folderEnsure",
            routing_key: "files.folder.ensure",
            exchange: Exchange::Commands,
            reply: false,
            replies_on: None,
            message: "EnsureFolder",
            group: Some(command_group(Channel::Files)),
            bindings: &["files.#"],
            description: "Make sure a folder exists in the file store; answered on `files.file.stored` or `files.file.failed`.",
        },
        ChannelDoc {
            key: "fileStore",
            routing_key: "files.file.store",
            exchange: Exchange::Commands,
            reply: false,
            replies_on: None,
            message: "StoreFile",
            group: Some(command_group(Channel::Files)),
            bindings: &["files.#"],
            description: "Store a file in the file store; answered on `files.file.stored` or `files.file.failed`.",
        },
        ChannelDoc {
            key: "fileRead",
            routing_key: "files.file.read",
            exchange: Exchange::Commands,
            reply: false,
            replies_on: Some("fileContent"),
            message: "ReadFile",
            group: Some(command_group(Channel::Files)),
            bindings: &["files.#"],
            description: "Read a stored file: a request, answered on the requester's reply address with `files.file.content`.",
        },
    ]
}

/// The command group of a channel's connectors with `{channel}` for the channel.
fn command_group_pattern() -> String {
    command_group(Channel::Email).replacen(Channel::Email.as_str(), "{channel}", 1)
}

/// The AsyncAPI 3.0.0 document of the bus.
pub fn document() -> Value {
    let catalog = Catalog::new();
    let channels = channels();
    let mut channel_map = Map::new();
    let mut operations = Map::new();
    for channel in &channels {
        channel_map.insert(channel.key.into(), channel_object(channel, catalog.message(channel.message)));
        if !channel.reply {
            add_operations(&mut operations, channel, &channels);
        }
    }
    let mut messages = Map::new();
    for message in &catalog.messages {
        let routing_keys: Vec<&str> = channels.iter().filter(|c| c.message == message.key).map(|c| c.routing_key).collect();
        messages.insert(message.key.into(), message_object(message, &routing_keys));
    }
    let mut schemas = Map::new();
    for (name, schema) in &catalog.schemas {
        let value = serde_json::to_value(schema).expect("a utoipa schema serializes");
        schemas.insert(name.clone(), plain_schema(value));
    }
    for message in &catalog.messages {
        let routing_keys: Vec<&str> = channels.iter().filter(|c| c.message == message.key).map(|c| c.routing_key).collect();
        schemas.insert(format!("{}Event", message.key), structured_schema(message, &routing_keys));
    }
    json!({
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "crm-hub message bus",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Events and commands between the crm-hub core and its channel connectors. Every message is a \
                CloudEvents 1.0 event in binary mode: the attributes travel as `cloudEvents:*` AMQP headers (with the W3C \
                `traceparent` and the `x-request-id` of the request that caused it), the data as the JSON body, \
                `content_type` application/json, `message_id` the event id, persistent. Topic exchanges `crm.events` and \
                `crm.commands`; one durable queue per consumer group (`crm.<group>`); what fails is retried with \
                backoff and then dead-lettered to `crm.dead` (queue `crm.dead-letters`) with `x-crm-*` headers saying \
                why. `crm` is the default prefix (`bus.prefix`). The embedded in-process bus has the same \
                channels and semantics. Generated by `crm_bus::asyncapi::document()`: do not edit by hand.",
            "license": { "name": "Apache-2.0" },
            "tags": [
                { "name": "core", "description": "What the core does." },
                { "name": "connector", "description": "What a channel connector does." }
            ]
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The RabbitMQ broker named by the core's `amqp_url` setting (and each connector's); without \
                    one the core runs the in-process bus.",
                "bindings": { "amqp": {} }
            }
        },
        "channels": channel_map,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
        }
    })
}

/// The document as committed: pretty-printed, keys sorted, with a final newline.
pub fn to_pretty(document: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(document)).expect("a JSON value serializes");
    text.push('\n');
    text
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&map[k]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn exchange_name(exchange: Exchange) -> String {
    format!("{PREFIX}.{}", exchange.kind())
}

fn channel_parameter(routing_key: &str) -> Option<Value> {
    routing_key.contains("{channel}").then(|| {
        json!({
            "channel": {
                "description": "The channel (`crm_bus::message::Channel`); it is the payload's `channel`.",
                "enum": Channel::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "location": "$message.payload#/channel"
            }
        })
    })
}

fn channel_object(channel: &ChannelDoc, message: &MessageDoc) -> Value {
    assert_eq!(channel.exchange, message.exchange, "channel {} and its message are on different exchanges", channel.key);
    let mut object = Map::new();
    object.insert("address".into(), if channel.reply { Value::Null } else { channel.routing_key.into() });
    object.insert("title".into(), channel.routing_key.into());
    object.insert("description".into(), channel.description.into());
    object.insert("messages".into(), json!({ message.key: { "$ref": format!("#/components/messages/{}", message.key) } }));
    if let Some(parameters) = channel_parameter(channel.routing_key) {
        object.insert("parameters".into(), parameters);
    }
    object.insert("x-crm-exchange".into(), channel.exchange.kind().into());
    object.insert("x-crm-routing-key".into(), channel.routing_key.into());
    if !channel.reply {
        let mut amqp = json!({
            "is": "routingKey",
            "exchange": { "name": exchange_name(channel.exchange), "type": "topic", "durable": true, "autoDelete": false, "vhost": "/" },
            "bindingVersion": AMQP_BINDING_VERSION,
        });
        if let Some(group) = &channel.group {
            amqp["x-crm-queue"] = json!({
                "group": group,
                "name": format!("{PREFIX}.{group}"),
                "durable": true,
                "type": "quorum",
                "bindings": channel.bindings,
                "deadLetterExchange": format!("{PREFIX}.dead"),
            });
        }
        object.insert("bindings".into(), json!({ "amqp": amqp }));
    }
    Value::Object(object)
}

fn capitalized(key: &str) -> String {
    let mut chars = key.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn add_operations(operations: &mut Map<String, Value>, channel: &ChannelDoc, all: &[ChannelDoc]) {
    let channel_ref = json!({ "$ref": format!("#/channels/{}", channel.key) });
    let messages = json!([{ "$ref": format!("#/channels/{}/messages/{}", channel.key, channel.message) }]);
    let reply = channel.replies_on.map(|key| all.iter().find(|c| c.key == key).expect("the reply channel is listed")).map(|reply| {
        json!({
            "address": {
                "location": REPLY_ADDRESS_LOCATION,
                "description": "The request's AMQP `reply_to` property (RabbitMQ direct reply-to); the reply carries the request's `correlation_id`."
            },
            "channel": { "$ref": format!("#/channels/{}", reply.key) },
            "messages": [{ "$ref": format!("#/channels/{}/messages/{}", reply.key, reply.message) }]
        })
    });
    let (core, connector) = match channel.exchange {
        Exchange::Events => ("receive", "send"),
        Exchange::Commands => ("send", "receive"),
    };
    for (role, action) in [("core", core), ("connector", connector)] {
        let key = format!("{role}{}{}", capitalized(action), capitalized(channel.key));
        let who = if role == "core" { "The core" } else { "A connector" };
        let verb = if action == "send" { "publishes" } else { "consumes" };
        let bindings = if action == "send" {
            json!({ "amqp": {
                "deliveryMode": 2,
                "mandatory": channel.exchange == Exchange::Commands,
                "timestamp": true,
                "bindingVersion": AMQP_BINDING_VERSION
            }})
        } else {
            json!({ "amqp": { "ack": true, "bindingVersion": AMQP_BINDING_VERSION } })
        };
        let mut operation = json!({
            "action": action,
            "channel": channel_ref,
            "summary": format!("{who} {verb} `{}`.", channel.routing_key),
            "messages": messages,
            "tags": [{ "name": role }],
            "bindings": bindings,
        });
        if let Some(reply) = &reply {
            operation["reply"] = reply.clone();
        }
        operations.insert(key, operation);
    }
}

/// The binary-mode headers of a message of type `kind`.
fn headers_schema(kind: &str) -> Value {
    json!({
        "type": "object",
        "required": ["cloudEvents:specversion", "cloudEvents:id", "cloudEvents:source", "cloudEvents:type", "cloudEvents:time"],
        "properties": {
            "cloudEvents:specversion": { "type": "string", "const": SPEC_VERSION, "description": "CloudEvents version." },
            "cloudEvents:id": { "type": "string", "minLength": 1, "description": "Unique per message (a UUIDv7); a redelivery keeps it. Also the AMQP `message_id`." },
            "cloudEvents:source": { "type": "string", "minLength": 1, "format": "uri-reference", "description": "Who published it (`/crm/core`, `/connectors/<name>/<instance>`)." },
            "cloudEvents:type": { "type": "string", "const": kind, "description": "The message type, versioned." },
            "cloudEvents:time": { "type": "string", "format": "date-time", "description": "When it was published (RFC 3339, UTC)." },
            "cloudEvents:subject": { "type": "string", "description": "The entity it is about, when there is one (a log entry, a media record, a path)." },
            "traceparent": { "type": "string", "pattern": TRACEPARENT_PATTERN, "description": "W3C trace context." },
            "x-request-id": { "type": "string", "description": "The request (or event) that caused it." },
            "x-crm-attempt": { "type": "integer", "minimum": 1, "description": "Set on a retried message: the delivery number it will have." },
            "x-crm-last-error": { "type": "string", "description": "Set on a retried message: why the last attempt failed." },
            "x-crm-exchange": { "type": "string", "enum": ["events", "commands"], "description": "Set on a re-published message (retry, replay, reply): its exchange." },
            "x-crm-routing-key": { "type": "string", "description": "Set on a re-published message: its routing key." },
            "x-delivery-count": { "type": "integer", "minimum": 0, "description": "Added by RabbitMQ (quorum queues) on delivery: earlier deliveries of the message." }
        }
    })
}

fn payload_schema(message: &MessageDoc) -> Value {
    let data = json!({ "$ref": format!("#/components/schemas/{}", message.schema) });
    match message.only {
        None => data,
        Some((property, value)) => json!({
            "allOf": [data, { "type": "object", "required": [property], "properties": { property: { "const": value } } }]
        }),
    }
}

fn message_object(message: &MessageDoc, routing_keys: &[&str]) -> Value {
    let title = match message.only {
        Some((_, value)) => format!("{} ({value})", message.schema),
        None => message.schema.clone(),
    };
    json!({
        "name": message.kind,
        "title": title,
        "summary": message.summary,
        "description": format!("CloudEvents type `{}` on `{}` with routing key {}.", message.kind, exchange_name(message.exchange),
            routing_keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" or ")),
        "contentType": CONTENT_TYPE,
        "correlationId": { "location": CORRELATION_LOCATION, "description": "The request that caused the message." },
        "headers": headers_schema(message.kind),
        "payload": payload_schema(message),
        "x-crm-exchange": message.exchange.kind(),
        "x-crm-structured": { "$ref": format!("#/components/schemas/{}Event", message.key) },
    })
}

/// A regular expression for routing keys of `pattern` (`{channel}` is any channel's name).
pub fn routing_key_regex(pattern: &str) -> String {
    let channels = Channel::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>().join("|");
    let words: Vec<String> =
        pattern.split('.').map(|word| if word == "{channel}" { format!("({channels})") } else { word.to_owned() }).collect();
    format!("^{}$", words.join("\\."))
}

/// The CloudEvents structured form ([`crate::Envelope::to_structured`]) of `message`.
fn structured_schema(message: &MessageDoc, routing_keys: &[&str]) -> Value {
    let routing_key = match routing_keys {
        [single] => json!({ "type": "string", "pattern": routing_key_regex(single) }),
        many => json!({ "anyOf": many.iter().map(|k| json!({ "type": "string", "pattern": routing_key_regex(k) })).collect::<Vec<_>>() }),
    };
    json!({
        "type": "object",
        "description": format!("`{}` in CloudEvents structured mode, as the outbox and the dead letters keep it.", message.kind),
        "required": ["specversion", "id", "source", "type", "time", "datacontenttype", "crmexchange", "crmroutingkey", "data"],
        "properties": {
            "specversion": { "type": "string", "const": SPEC_VERSION },
            "id": { "type": "string", "minLength": 1 },
            "source": { "type": "string", "minLength": 1, "format": "uri-reference" },
            "type": { "type": "string", "const": message.kind },
            "time": { "type": "string", "format": "date-time" },
            "datacontenttype": { "type": "string", "const": CONTENT_TYPE },
            "subject": { "type": "string" },
            "traceparent": { "type": "string", "pattern": TRACEPARENT_PATTERN },
            "crmrequestid": { "type": "string", "description": "The `x-request-id`." },
            "crmexchange": { "type": "string", "const": message.exchange.kind() },
            "crmroutingkey": routing_key,
            "data": payload_schema(message),
        },
        "additionalProperties": false
    })
}

/// Turns a utoipa (OpenAPI 3.1) schema into plain JSON Schema draft 7: a `$ref` with siblings
/// becomes `allOf: [{$ref}]` beside them (draft 7 ignores a `$ref`'s siblings), OpenAPI-only
/// keywords go, `example` becomes `examples`, base64 strings get a pattern, and descriptions lose
/// rustdoc link brackets and line breaks.
fn plain_schema(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            let mut reference = None;
            for (key, value) in map {
                match key.as_str() {
                    "$ref" => reference = Some(value),
                    "discriminator" | "xml" | "externalDocs" => {}
                    "example" => {
                        out.insert("examples".into(), Value::Array(vec![value]));
                    }
                    "description" => {
                        out.insert(key, value.as_str().map_or(value.clone(), |text| clean_description(text).into()));
                    }
                    // Property names, not schemas: their values are schemas.
                    "properties" => {
                        let Value::Object(properties) = value else { continue };
                        out.insert(key, Value::Object(properties.into_iter().map(|(k, v)| (k, plain_schema(v))).collect()));
                    }
                    _ => {
                        out.insert(key, plain_schema(value));
                    }
                }
            }
            if out.get("contentEncoding").and_then(Value::as_str) == Some("base64") && !out.contains_key("pattern") {
                out.insert("pattern".into(), BASE64_PATTERN.into());
            }
            match reference {
                Some(reference) if out.is_empty() => json!({ "$ref": reference }),
                Some(reference) => {
                    out.insert("allOf".into(), json!([{ "$ref": reference }]));
                    Value::Object(out)
                }
                None => Value::Object(out),
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(plain_schema).collect()),
        other => other,
    }
}

/// A doc comment as a description: one paragraph per blank line, rustdoc links as code.
fn clean_description(text: &str) -> String {
    let joined = text.split("\n\n").map(|p| p.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n\n");
    joined.replace("[`", "`").replace("`]", "`")
}

/// Whether `routing_key` is one of `pattern` (`{name}` matches one word); the words each
/// parameter stood for.
pub fn match_routing_key<'k>(pattern: &str, routing_key: &'k str) -> Option<Vec<(String, &'k str)>> {
    let words: Vec<&str> = pattern.split('.').collect();
    let keys: Vec<&str> = routing_key.split('.').collect();
    if words.len() != keys.len() {
        return None;
    }
    let mut parameters = Vec::new();
    for (word, key) in words.iter().zip(keys) {
        match word.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
            Some(name) if !key.is_empty() => parameters.push((name.to_owned(), key)),
            Some(_) => return None,
            None if *word == key => {}
            None => return None,
        }
    }
    Some(parameters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{
        Address, Bytes, CallDirection, ConnectorState, DeliveryState, FileOutcome, FileRead, InboundAttachment, OutboundAttachment,
    };
    use crate::{Envelope, Trace};
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    fn committed_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(DOCUMENT_PATH)
    }

    /// `docs/asyncapi.json` is what the code generates; `CRM_REGENERATE=1` rewrites it.
    #[test]
    fn committed_document_is_up_to_date() {
        let generated = document();
        let path = committed_path();
        if std::env::var("CRM_REGENERATE").is_ok_and(|v| v == "1") {
            std::fs::write(&path, to_pretty(&generated)).expect("write docs/asyncapi.json");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let committed: Value = serde_json::from_str(&committed).unwrap_or(Value::Null);
        assert!(
            committed == generated,
            "{DOCUMENT_PATH} is not what crm_bus::asyncapi::document() generates: regenerate it with \
             `CRM_REGENERATE=1 cargo test -p crm-bus --lib asyncapi` and commit the result"
        );
    }

    fn resolve<'d>(document: &'d Value, reference: &Value) -> &'d Value {
        let reference = reference.as_str().unwrap_or_else(|| panic!("a $ref is a string: {reference}"));
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("only local references: {reference}"));
        document.pointer(pointer).unwrap_or_else(|| panic!("{reference} does not resolve"))
    }

    fn every_ref<'d>(value: &'d Value, found: &mut Vec<&'d Value>) {
        match value {
            Value::Object(map) => {
                if let Some(reference) = map.get("$ref") {
                    found.push(reference);
                }
                map.values().for_each(|v| every_ref(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| every_ref(v, found)),
            _ => {}
        }
    }

    #[test]
    fn document_is_structurally_valid_asyncapi_3() {
        let doc = document();
        assert_eq!(doc["asyncapi"], ASYNCAPI_VERSION);
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        assert_eq!(doc["servers"]["rabbitmq"]["protocol"], "amqp");

        let mut references = Vec::new();
        every_ref(&doc, &mut references);
        assert!(references.len() > 50);
        for reference in references {
            resolve(&doc, reference);
        }

        let channels = doc["channels"].as_object().unwrap();
        for (key, channel) in channels {
            assert!(channel["address"].is_string() || channel["address"].is_null(), "{key}");
            let messages = channel["messages"].as_object().unwrap();
            assert!(!messages.is_empty(), "{key} has messages");
            for message in messages.values() {
                let target = message["$ref"].as_str().unwrap();
                assert!(target.starts_with("#/components/messages/"), "{key}: {target}");
                assert!(resolve(&doc, &message["$ref"])["payload"].is_object());
            }
            if let Some(amqp) = channel.pointer("/bindings/amqp") {
                assert_eq!(amqp["is"], "routingKey");
                assert_eq!(amqp["exchange"]["type"], "topic");
                assert!(amqp.get("queue").is_none(), "a routingKey channel binding has no queue (AMQP binding 0.3.0)");
            }
        }

        let operations = doc["operations"].as_object().unwrap();
        let mut used_channels = BTreeSet::new();
        for (key, operation) in operations {
            assert!(matches!(operation["action"].as_str(), Some("send" | "receive")), "{key}");
            let channel_ref = operation["channel"]["$ref"].as_str().unwrap();
            let channel_key = channel_ref.strip_prefix("#/channels/").unwrap_or_else(|| panic!("{key}: {channel_ref}"));
            assert!(channels.contains_key(channel_key), "{key}: {channel_ref}");
            used_channels.insert(channel_key.to_owned());
            for message in operation["messages"].as_array().unwrap() {
                let target = message["$ref"].as_str().unwrap();
                assert!(target.starts_with(&format!("{channel_ref}/messages/")), "{key}: a message of its own channel, not {target}");
                resolve(&doc, &message["$ref"]);
            }
            if let Some(reply) = operation.get("reply") {
                let reply_channel = resolve(&doc, &reply["channel"]["$ref"]);
                assert!(reply_channel["address"].is_null(), "a reply with an address object has a channel without address");
                assert!(reply["address"]["location"].as_str().unwrap().starts_with("$message.header#/"));
                used_channels.insert(reply["channel"]["$ref"].as_str().unwrap().trim_start_matches("#/channels/").to_owned());
            }
        }
        assert_eq!(used_channels, channels.keys().cloned().collect(), "every channel is used by an operation");

        for (key, message) in doc["components"]["messages"].as_object().unwrap() {
            assert_eq!(message["contentType"], CONTENT_TYPE, "{key}");
            assert_eq!(message["headers"]["type"], "object", "{key}");
            assert_eq!(message["headers"]["properties"]["cloudEvents:type"]["const"], message["name"], "{key}");
            assert!(message["correlationId"]["location"].as_str().unwrap().starts_with("$message.header#/"), "{key}");
        }
    }

    /// Every type that implements `Message` in `message.rs` is in the document, by its
    /// CloudEvents type and its schema.
    #[test]
    fn every_catalog_message_is_documented() {
        let doc = document();
        let names: BTreeSet<&str> =
            doc["components"]["messages"].as_object().unwrap().values().map(|m| m["name"].as_str().unwrap()).collect();
        let types = [
            MessageReceived::TYPE,
            DeliveryStatus::TYPE,
            CallCompleted::TYPE,
            FileResult::TYPE,
            FileContent::TYPE,
            Heartbeat::TYPE,
            SendMessage::TYPE,
            EnsureFolder::TYPE,
            StoreFile::TYPE,
            ReadFile::TYPE,
        ];
        assert_eq!(names, types.into_iter().collect());

        let source = include_str!("message.rs");
        let implemented: Vec<&str> = source
            .lines()
            .filter_map(|line| line.strip_prefix("impl Message for "))
            .map(|rest| rest.trim_end_matches(" {").trim())
            .collect();
        assert_eq!(implemented.len(), types.len(), "a new Message type needs adding to the catalog here: {implemented:?}");
        let payloads = serde_json::to_string(&doc["components"]["messages"]).unwrap();
        for name in implemented {
            assert!(payloads.contains(&format!("\"#/components/schemas/{name}\"")), "{name} is a message's payload");
        }
    }

    #[test]
    fn payload_schemas_are_strict() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        for name in ["MessageReceived", "Address", "SendMessage", "StoreFile", "Heartbeat", "CallCompleted", "DeliveryStatus"] {
            assert_eq!(schemas[name]["additionalProperties"], false, "{name} refuses unknown fields");
        }
        assert_eq!(schemas["MessageReceived"]["required"], json!(["channel", "channel_message_id", "from", "occurred_at"]));
        assert_eq!(schemas["Channel"]["enum"], json!(["email", "whatsapp", "sms", "call", "files"]));
        assert_eq!(schemas["Bytes"]["pattern"], BASE64_PATTERN);
        // A `$ref` never has siblings (draft 7 would ignore them).
        let text = serde_json::to_string(schemas).unwrap();
        assert!(!text.contains("\"$ref\":\"#/components/schemas/Channel\",\""));
        assert_eq!(
            schemas["MessageReceived"]["properties"]["from"],
            json!({ "allOf": [{ "$ref": "#/components/schemas/Address" }], "description": "The sender." })
        );
    }

    /// The routing keys the catalog's messages produce are their channels' addresses, and the
    /// connectors' command groups are the ones the document names.
    #[test]
    fn routing_keys_match_the_channels() {
        let doc = document();
        let channel_of = |envelope: &Envelope| -> Vec<String> {
            doc["channels"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(_, c)| c["x-crm-exchange"] == envelope.exchange.kind())
                .filter(|(_, c)| match_routing_key(c["x-crm-routing-key"].as_str().unwrap(), &envelope.routing_key).is_some())
                .filter(|(_, c)| {
                    c["messages"].as_object().unwrap().values().any(|m| resolve(&doc, &m["$ref"])["name"] == envelope.kind.as_str())
                })
                .map(|(key, _)| key.clone())
                .collect()
        };
        let now = chrono::Utc::now();
        let id = uuid::Uuid::now_v7();
        for channel in Channel::ALL {
            let received = MessageReceived {
                channel,
                channel_message_id: "m".into(),
                from: Address::email("a@b", None),
                to: Vec::new(),
                cc: Vec::new(),
                subject: None,
                body: String::new(),
                occurred_at: now,
                in_reply_to: None,
                references: Vec::new(),
                auto_reply: false,
                attachments: vec![InboundAttachment {
                    filename: "a".into(),
                    mime_type: "text/plain".into(),
                    size: 1,
                    content: Some(Bytes(vec![1])),
                    refused: None,
                }],
            };
            let status = DeliveryStatus {
                channel,
                entry_id: None,
                channel_message_id: None,
                status: DeliveryState::Sent,
                reason: None,
                occurred_at: now,
            };
            let send = SendMessage {
                entry_id: id,
                channel,
                to: Vec::new(),
                cc: Vec::new(),
                subject: None,
                body: String::new(),
                body_html: None,
                in_reply_to: None,
                references: Vec::new(),
                attachments: vec![OutboundAttachment { filename: "a".into(), mime_type: "a/b".into(), content: Bytes(vec![]) }],
            };
            let heartbeat = Heartbeat {
                name: "x".into(),
                version: "1".into(),
                channel,
                instance: "i".into(),
                started_at: now,
                state: ConnectorState::Ready,
                detail: None,
                in_flight: 0,
                interval_seconds: 10,
            };
            for (envelope, expected) in [
                (Envelope::new("/t", &received, Trace::default()), "messageReceived"),
                (Envelope::new("/t", &status, Trace::default()), "messageStatus"),
                (Envelope::new("/t", &send, Trace::default()), "messageSend"),
                (Envelope::new("/t", &heartbeat, Trace::default()), "connectorHeartbeat"),
            ] {
                assert_eq!(channel_of(&envelope), [expected], "{}", envelope.routing_key);
            }
            assert_eq!(command_group_pattern().replace("{channel}", channel.as_str()), command_group(channel));
        }
        let call = CallCompleted {
            channel_message_id: "c".into(),
            direction: CallDirection::Inbound,
            party: Address::phone("+30", None),
            extension: None,
            started_at: now,
            duration_seconds: 0,
            answered: false,
            disposition: "NO ANSWER".into(),
        };
        let stored = FileResult { media_id: None, path: "a".into(), outcome: FileOutcome::Stored { size: 0, sha256: String::new() } };
        let failed = FileResult { media_id: None, path: "a".into(), outcome: FileOutcome::Failed { reason: "no".into() } };
        let content = FileContent { path: "a".into(), result: FileRead::NotFound };
        for (envelope, expected) in [
            (Envelope::new("/t", &call, Trace::default()), "callCompleted"),
            (Envelope::new("/t", &stored, Trace::default()), "fileStored"),
            (Envelope::new("/t", &failed, Trace::default()), "fileFailed"),
            (Envelope::new("/t", &content, Trace::default()), "fileContent"),
            (Envelope::new("/t", &EnsureFolder { path: "a".into() }, Trace::default()), "folderEnsure"),
            (Envelope::new("/t", &ReadFile { path: "a".into() }, Trace::default()), "fileRead"),
            (
                Envelope::new(
                    "/t",
                    &StoreFile { media_id: id, path: "a".into(), mime_type: "a/b".into(), overwrite: false, content: Bytes(vec![]) },
                    Trace::default(),
                ),
                "fileStore",
            ),
        ] {
            assert_eq!(channel_of(&envelope), [expected], "{}", envelope.routing_key);
        }
    }

    #[test]
    fn routing_key_patterns() {
        assert_eq!(match_routing_key("{channel}.message.send", "sms.message.send"), Some(vec![("channel".to_owned(), "sms")]));
        assert_eq!(match_routing_key("{channel}.message.send", "message.send"), None);
        assert_eq!(match_routing_key("call.completed", "call.completed"), Some(Vec::new()));
        assert_eq!(match_routing_key("call.completed", "call.completed.x"), None);
        assert_eq!(routing_key_regex("connector.{channel}.heartbeat"), "^connector\\.(email|whatsapp|sms|call|files)\\.heartbeat$");
    }
}
