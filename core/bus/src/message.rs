//! The message catalog: every event and command on the bus, shared by the core and the
//! connectors. Each message names its CloudEvents type (versioned), its exchange and its routing
//! key (`<channel>.<entity>.<verb>`). `docs/asyncapi.json`, generated from this file by
//! [`crate::asyncapi::document`], documents them; a test checks that it is up to date.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The two topic exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exchange {
    /// Facts published by connectors and the core (`<prefix>.events`).
    Events,
    /// Requests to connectors (`<prefix>.commands`).
    Commands,
}

impl Exchange {
    /// `events` or `commands`.
    pub fn kind(self) -> &'static str {
        match self {
            Exchange::Events => "events",
            Exchange::Commands => "commands",
        }
    }

    /// The inverse of [`Exchange::kind`].
    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "events" => Some(Exchange::Events),
            "commands" => Some(Exchange::Commands),
            _ => None,
        }
    }
}

/// A typed bus message.
pub trait Message: Serialize + for<'de> Deserialize<'de> + Send + Sync + 'static {
    /// CloudEvents type, with a version suffix.
    const TYPE: &'static str;
    /// The exchange it goes to.
    const EXCHANGE: Exchange;
    /// Its routing key.
    fn routing_key(&self) -> String;
    /// The CloudEvents subject, if any.
    fn subject(&self) -> Option<String> {
        None
    }
}

/// A channel a connector serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Email (IMAP in, SMTP out).
    Email,
    /// WhatsApp Cloud API.
    Whatsapp,
    /// Text messages.
    Sms,
    /// Telephone calls (Asterisk AMI).
    Call,
    /// File stores (local directory, Nextcloud).
    Files,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 5] = [Channel::Email, Channel::Whatsapp, Channel::Sms, Channel::Call, Channel::Files];

    /// The routing-key segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Whatsapp => "whatsapp",
            Channel::Sms => "sms",
            Channel::Call => "call",
            Channel::Files => "files",
        }
    }
}

/// The consumer group of a channel's connectors (`connector.<channel>.commands`): every
/// connector serving the channel (the local files connector or Nextcloud, say) shares its one
/// queue, so swapping one for another changes nothing in the core, and commands sent while no
/// connector runs wait there.
pub fn command_group(channel: Channel) -> String {
    format!("connector.{}.commands", channel.as_str())
}

/// The core's consumer group for connector events: one queue, `<prefix>.core.events`, shared by
/// every core replica.
pub const CORE_EVENTS_GROUP: &str = "core.events";

/// The events the core consumes: its group's bindings.
pub const CORE_EVENT_BINDINGS: &[&str] =
    &["*.message.received", "*.message.status", "call.completed", "files.file.stored", "files.file.failed", "connector.#"];

/// The core's event queue with its bindings. The core consumes it, and every connector declares
/// it when it starts, before it publishes anything: a topic exchange drops a message that no
/// queue binds, so without it what a connector publishes before the core has ever run on the
/// broker would be lost; with it, it waits for the core.
pub fn core_events() -> crate::Subscription {
    crate::Subscription::new(CORE_EVENTS_GROUP, Exchange::Events, CORE_EVENT_BINDINGS)
}

/// What kind of address a party has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AddressKind {
    /// An email address.
    Email,
    /// A telephone number (WhatsApp, SMS, calls), as the channel gives it.
    Phone,
}

/// A party to a message: an email address or a phone number, with a display name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Email or phone.
    pub kind: AddressKind,
    /// The address as the channel gave it; the core normalises it for matching.
    pub value: String,
    /// Display name, when the channel gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Address {
    /// An email address.
    pub fn email(value: impl Into<String>, name: Option<String>) -> Self {
        Self { kind: AddressKind::Email, value: value.into(), name }
    }

    /// A phone number.
    pub fn phone(value: impl Into<String>, name: Option<String>) -> Self {
        Self { kind: AddressKind::Phone, value: value.into(), name }
    }
}

/// Room in a message for what surrounds a file's bytes (its path, type, ids, the envelope's
/// JSON).
const FILE_MESSAGE_ROOM: u64 = 64 * 1024;

/// The largest message a file of `file_bytes` makes (a `StoreFile` command, a `FileContent`
/// reply): its bytes as base64, and room for the rest.
pub fn message_bytes_for_file(file_bytes: u64) -> u64 {
    file_bytes.div_ceil(3).saturating_mul(4).saturating_add(FILE_MESSAGE_ROOM)
}

/// The largest file whose message ([`message_bytes_for_file`]) fits in `message_bytes`.
pub fn largest_file_in_message(message_bytes: u64) -> u64 {
    message_bytes.saturating_sub(FILE_MESSAGE_ROOM) / 4 * 3
}

/// Binary content, base64 in JSON.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Bytes)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

impl utoipa::PartialSchema for Bytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .content_encoding("base64")
            .description(Some("Binary content, base64 (RFC 4648)."))
            .into()
    }
}

impl utoipa::ToSchema for Bytes {}

/// A file that came with an inbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundAttachment {
    /// File name as sent.
    pub filename: String,
    /// MIME type as sent.
    pub mime_type: String,
    /// Size in bytes.
    pub size: u64,
    /// The bytes, when within the connector's cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Bytes>,
    /// Why the bytes are not here (over the cap, unreadable), when they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// A message a customer (or anyone) sent us on a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageReceived {
    /// The channel it came on.
    pub channel: Channel,
    /// The channel's own id (Message-ID, WhatsApp message id): with the channel, the key that
    /// makes a redelivery a duplicate.
    pub channel_message_id: String,
    /// The sender.
    pub from: Address,
    /// Recipients.
    #[serde(default)]
    pub to: Vec<Address>,
    /// Copied recipients.
    #[serde(default)]
    pub cc: Vec<Address>,
    /// Subject, when the channel has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Plain-text body.
    #[serde(default)]
    pub body: String,
    /// When it was sent.
    pub occurred_at: DateTime<Utc>,
    /// The channel id of the message it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// Channel ids of earlier messages in the conversation, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// An automatic reply (out of office, auto-responder).
    #[serde(default)]
    pub auto_reply: bool,
    /// Files that came with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<InboundAttachment>,
}

impl Message for MessageReceived {
    const TYPE: &'static str = "crm.message.received.v1";
    const EXCHANGE: Exchange = Exchange::Events;
    fn routing_key(&self) -> String {
        format!("{}.message.received", self.channel.as_str())
    }
}

/// Which way a call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    /// The customer called us.
    Inbound,
    /// We called the customer.
    Outbound,
    /// Between extensions.
    Internal,
}

/// A telephone call that ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallCompleted {
    /// The PBX's id for the call (Asterisk `Linkedid`).
    pub channel_message_id: String,
    /// Which way it went.
    pub direction: CallDirection,
    /// The outside party's number.
    pub party: Address,
    /// Our extension or agent, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    /// When it started ringing.
    pub started_at: DateTime<Utc>,
    /// Talk time in seconds (0 when unanswered).
    pub duration_seconds: u32,
    /// Whether anyone answered.
    pub answered: bool,
    /// The PBX's disposition (`ANSWERED`, `NO ANSWER`, `BUSY`, ...).
    pub disposition: String,
}

impl Message for CallCompleted {
    const TYPE: &'static str = "crm.call.completed.v1";
    const EXCHANGE: Exchange = Exchange::Events;
    fn routing_key(&self) -> String {
        "call.completed".into()
    }
}

/// Where an outbound message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Handed to the channel.
    Sent,
    /// The channel reports it delivered.
    Delivered,
    /// The recipient read it.
    Read,
    /// It could not be sent or delivered (the reason says why).
    Failed,
}

impl DeliveryState {
    /// How far along it is; a status never moves backwards except to `failed`.
    pub fn rank(self) -> u8 {
        match self {
            DeliveryState::Sent => 1,
            DeliveryState::Delivered => 2,
            DeliveryState::Read => 3,
            DeliveryState::Failed => 4,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Read => "read",
            DeliveryState::Failed => "failed",
        }
    }
}

/// What happened to an outbound message: the result of a [`SendMessage`] command, or a later
/// report from the channel (delivered, read, bounced).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryStatus {
    /// The channel.
    pub channel: Channel,
    /// The log entry of the outbound message, when the connector knows it (from the command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<Uuid>,
    /// The channel's id of the outbound message (assigned on send; a bounce names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_message_id: Option<String>,
    /// The new state.
    pub status: DeliveryState,
    /// Why it failed (an SMTP reply, an API error), or other detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

impl Message for DeliveryStatus {
    const TYPE: &'static str = "crm.message.status.v1";
    const EXCHANGE: Exchange = Exchange::Events;
    fn routing_key(&self) -> String {
        format!("{}.message.status", self.channel.as_str())
    }
    fn subject(&self) -> Option<String> {
        self.entry_id.map(|id| id.to_string())
    }
}

/// A file to send with an outbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundAttachment {
    /// File name.
    pub filename: String,
    /// MIME type.
    pub mime_type: String,
    /// The bytes.
    pub content: Bytes,
}

/// Command: send a message to a customer on a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The outbound log entry this message is; the connector echoes it in [`DeliveryStatus`],
    /// and email carries it in the Message-ID so replies find their thread.
    pub entry_id: Uuid,
    /// The channel to send on.
    pub channel: Channel,
    /// Recipients.
    pub to: Vec<Address>,
    /// Copied recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<Address>,
    /// Subject (email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Plain-text body.
    pub body: String,
    /// HTML body (email), optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_html: Option<String>,
    /// The channel id of the message this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// Channel ids of earlier messages in the conversation, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// Files to send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<OutboundAttachment>,
}

impl Message for SendMessage {
    const TYPE: &'static str = "crm.message.send.v1";
    const EXCHANGE: Exchange = Exchange::Commands;
    fn routing_key(&self) -> String {
        format!("{}.message.send", self.channel.as_str())
    }
    fn subject(&self) -> Option<String> {
        Some(self.entry_id.to_string())
    }
}

/// The Message-ID of our outbound message for a log entry (`<crm.<entry id>@<domain>>`): a
/// reply names it in In-Reply-To or References, which finds the thread even when the subject
/// changed.
pub fn entry_message_id(entry_id: Uuid, domain: &str) -> String {
    format!("<crm.{entry_id}@{domain}>")
}

/// The log entry an outbound Message-ID of ours names, if it is one.
pub fn entry_of_message_id(message_id: &str) -> Option<Uuid> {
    let inner = message_id.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, _) = inner.split_once('@')?;
    Uuid::parse_str(local.strip_prefix("crm.")?).ok()
}

/// The record a command is for, which waits on it: what a command given up on fails, and what
/// a replay of it puts back in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitingRecord {
    /// The media record whose file a `files.file.store` command stores.
    Media(Uuid),
    /// The outbound log entry a `message.send` command sends.
    Entry(Uuid),
}

impl WaitingRecord {
    /// The record `command` is for, read from its data even when the rest of it is malformed
    /// (a dead letter's data may be).
    pub fn of(command: &crate::Envelope) -> Option<Self> {
        let id = |name: &str| -> Option<Uuid> {
            let data: serde_json::Value = serde_json::from_slice(&command.data).ok()?;
            data.get(name)?.as_str()?.parse().ok()
        };
        match command.kind.as_str() {
            StoreFile::TYPE => id("media_id").map(Self::Media),
            SendMessage::TYPE => id("entry_id").map(Self::Entry),
            _ => None,
        }
    }
}

/// Command: make sure a folder exists in the file store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnsureFolder {
    /// Relative path, `/`-separated.
    pub path: String,
}

impl Message for EnsureFolder {
    const TYPE: &'static str = "crm.files.folder.ensure.v1";
    const EXCHANGE: Exchange = Exchange::Commands;
    fn routing_key(&self) -> String {
        "files.folder.ensure".into()
    }
    fn subject(&self) -> Option<String> {
        Some(self.path.clone())
    }
}

/// Command: store a file in the file store. The [`FileResult`] names `path` as given and, when
/// stored, the SHA-256 of `content`: the core accepts a result for the media record only when
/// both are the ones it sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// The media record the file belongs to.
    pub media_id: Uuid,
    /// Relative path, `/`-separated, including the file name.
    pub path: String,
    /// MIME type.
    pub mime_type: String,
    /// Replace a different file already at `path` (otherwise that is a failure; the same bytes
    /// again are a success, so a redelivered command is harmless).
    #[serde(default)]
    pub overwrite: bool,
    /// The bytes.
    pub content: Bytes,
}

impl Message for StoreFile {
    const TYPE: &'static str = "crm.files.file.store.v1";
    const EXCHANGE: Exchange = Exchange::Commands;
    fn routing_key(&self) -> String {
        "files.file.store".into()
    }
    fn subject(&self) -> Option<String> {
        Some(self.media_id.to_string())
    }
}

/// Request (answered on the reply queue with [`FileContent`]): read a stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFile {
    /// Relative path.
    pub path: String,
}

impl Message for ReadFile {
    const TYPE: &'static str = "crm.files.file.read.v1";
    const EXCHANGE: Exchange = Exchange::Commands;
    fn routing_key(&self) -> String {
        "files.file.read".into()
    }
    fn subject(&self) -> Option<String> {
        Some(self.path.clone())
    }
}

/// Reply to [`ReadFile`]. (Unknown fields cannot be refused here: serde does not support that
/// beside a flattened field.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileContent {
    /// Relative path.
    pub path: String,
    /// The bytes, or why they could not be read.
    #[serde(flatten)]
    pub result: FileRead,
}

/// The outcome of a read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum FileRead {
    /// The file.
    Found {
        /// The bytes.
        content: Bytes,
    },
    /// No file there.
    NotFound,
    /// Refused for good: a folder, not a regular file, over the connector's size cap, an
    /// unusable path. (A failure that may pass gets no answer: the connector tries again, and
    /// the caller's wait ends first.)
    Failed {
        /// Why.
        reason: String,
    },
}

impl Message for FileContent {
    const TYPE: &'static str = "crm.files.file.content.v1";
    const EXCHANGE: Exchange = Exchange::Events;
    fn routing_key(&self) -> String {
        "files.file.content".into()
    }
}

/// The result of a [`StoreFile`] or [`EnsureFolder`] command. (Unknown fields cannot be refused
/// here: serde does not support that beside a flattened field.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileResult {
    /// The media record, for a stored file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<Uuid>,
    /// Relative path.
    pub path: String,
    /// Stored, or failed with a reason.
    #[serde(flatten)]
    pub outcome: FileOutcome,
}

/// Stored or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum FileOutcome {
    /// The file (or folder) is there.
    Stored {
        /// Size in bytes (0 for a folder).
        size: u64,
        /// SHA-256 of the content, hex (empty for a folder).
        sha256: String,
    },
    /// It is not.
    Failed {
        /// Why.
        reason: String,
    },
}

impl Message for FileResult {
    const TYPE: &'static str = "crm.files.result.v1";
    const EXCHANGE: Exchange = Exchange::Events;
    fn routing_key(&self) -> String {
        match self.outcome {
            FileOutcome::Stored { .. } => "files.file.stored".into(),
            FileOutcome::Failed { .. } => "files.file.failed".into(),
        }
    }
    fn subject(&self) -> Option<String> {
        self.media_id.map(|id| id.to_string())
    }
}

/// How a connector instance is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorState {
    /// Connecting to its outside system.
    Starting,
    /// Working.
    Ready,
    /// Running but its outside system is unreachable or failing.
    Degraded,
    /// Shutting down, finishing in-flight work.
    Stopping,
}

/// A connector instance announcing itself; sent at start, every interval, and at shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Connector name (`email`, `files-local`).
    pub name: String,
    /// Connector version.
    pub version: String,
    /// The channel it serves.
    pub channel: Channel,
    /// This instance (host and process).
    pub instance: String,
    /// When the instance started.
    pub started_at: DateTime<Utc>,
    /// How it is doing.
    pub state: ConnectorState,
    /// Detail for ops (last error), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Commands being worked on now.
    pub in_flight: u32,
    /// Seconds until the next heartbeat; the core calls the instance lost after three missed.
    pub interval_seconds: u32,
}

impl Message for Heartbeat {
    const TYPE: &'static str = "crm.connector.heartbeat.v1";
    const EXCHANGE: Exchange = Exchange::Events;
    fn routing_key(&self) -> String {
        format!("connector.{}.heartbeat", self.channel.as_str())
    }
    fn subject(&self) -> Option<String> {
        Some(format!("{}/{}", self.name, self.instance))
    }
}

#[cfg(test)]
mod tests {
    /// The core checks at start that its largest upload makes a message the bus takes; the files
    /// connector caps reads by the same rule: the two sizes must agree.
    #[test]
    fn the_largest_file_for_a_message_is_the_one_whose_message_fits() {
        for message in [64 * 1024, 200_000, 16 * 1024 * 1024, 128 * 1024 * 1024 + 1] {
            let largest = super::largest_file_in_message(message);
            assert!(super::message_bytes_for_file(largest) <= message, "{message}");
            assert!(super::message_bytes_for_file(largest + 3) > message, "{message}");
        }
        assert_eq!(super::largest_file_in_message(1000), 0);
    }

    use super::*;
    use crate::{Envelope, Trace};

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(message: M) {
        let envelope = Envelope::new("/test", &message, Trace::default());
        assert_eq!(envelope.decode::<M>().expect("decodes"), message, "{}", M::TYPE);
        let again = Envelope::from_structured(&envelope.to_structured()).expect("structured form reads back");
        assert_eq!(again.decode::<M>().expect("decodes"), message);
        assert_eq!(Envelope { data: Vec::new(), ..again }, Envelope { data: Vec::new(), ..envelope });
    }

    #[test]
    fn every_message_survives_the_trip() {
        let now = chrono::Utc::now();
        let id = Uuid::now_v7();
        round_trip(FileResult { media_id: Some(id), path: "a/b".into(), outcome: FileOutcome::Stored { size: 3, sha256: "00".into() } });
        round_trip(FileResult { media_id: None, path: "a".into(), outcome: FileOutcome::Failed { reason: "no".into() } });
        round_trip(FileContent { path: "a".into(), result: FileRead::Found { content: Bytes(vec![0, 255, 1]) } });
        round_trip(FileContent { path: "a".into(), result: FileRead::NotFound });
        round_trip(StoreFile {
            media_id: id,
            path: "a".into(),
            mime_type: "text/plain".into(),
            overwrite: false,
            content: Bytes(b"x".to_vec()),
        });
        round_trip(EnsureFolder { path: "a".into() });
        round_trip(ReadFile { path: "a".into() });
        round_trip(DeliveryStatus {
            channel: Channel::Email,
            entry_id: Some(id),
            channel_message_id: None,
            status: DeliveryState::Read,
            reason: None,
            occurred_at: now,
        });
        round_trip(Heartbeat {
            name: "files-local".into(),
            version: "0.1.0".into(),
            channel: Channel::Files,
            instance: "h-1".into(),
            started_at: now,
            state: ConnectorState::Ready,
            detail: None,
            in_flight: 0,
            interval_seconds: 10,
        });
    }

    #[test]
    fn our_message_ids_name_their_entry() {
        let id = Uuid::now_v7();
        let message_id = entry_message_id(id, "bells.example");
        assert_eq!(entry_of_message_id(&message_id), Some(id));
        assert_eq!(entry_of_message_id("<abc@example.gr>"), None);
        assert_eq!(entry_of_message_id("<crm.not-a-uuid@x>"), None);
    }
}
