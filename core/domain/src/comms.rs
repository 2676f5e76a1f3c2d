//! The communications log and the media index: every email, WhatsApp message, call, text,
//! note and meeting with a customer in one timeline, and the files that came with them.
//!
//! Entries come from two places: connectors (through the bus, parsed by the core's ingest) and
//! people (notes and meetings entered through the API, [`CommsInput`]). An entry whose sender
//! matched no customer waits in the unmatched inbox ([`Triage::Unmatched`]) until someone
//! assigns or dismisses it.

use crate::error::{Violations, optional_text};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Fields of an entry that clients may send back but never set.
pub const READ_ONLY: &[&str] = &[
    "/customer_id",
    "/type",
    "/direction",
    "/attachments",
    "/ext_message_id",
    "/channel_address",
    "/recipients",
    "/logged_by",
    "/thread_id",
    "/in_reply_to",
    "/references",
    "/delivery_status",
    "/status_reason",
    "/raw_event_id",
    "/match",
    "/triage",
    "/auto_reply",
];

/// The kind of communication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommsType {
    /// Email.
    Email,
    /// WhatsApp message.
    Whatsapp,
    /// Telephone call.
    Call,
    /// Text message.
    Sms,
    /// A note written by a user.
    Note,
    /// A meeting in person.
    InPerson,
}

impl CommsType {
    /// The wire and column name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Whatsapp => "whatsapp",
            Self::Call => "call",
            Self::Sms => "sms",
            Self::Note => "note",
            Self::InPerson => "in_person",
        }
    }

    /// Whether the core can send a message of this type through a connector.
    pub fn is_sendable(self) -> bool {
        matches!(self, Self::Email | Self::Whatsapp | Self::Sms)
    }
}

/// Which way it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the customer to us.
    Inbound,
    /// From us to the customer.
    Outbound,
    /// Among ourselves (notes).
    Internal,
}

impl Direction {
    /// The wire and column name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Internal => "internal",
        }
    }
}

/// Where an outbound message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting to be handed to the connector.
    Queued,
    /// Handed to the channel.
    Sent,
    /// Delivered to the recipient.
    Delivered,
    /// Read by the recipient.
    Read,
    /// Could not be sent or delivered; `status_reason` says why.
    Failed,
}

impl DeliveryStatus {
    /// The wire and column name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }

    /// The status with this wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Queued, Self::Sent, Self::Delivered, Self::Read, Self::Failed].into_iter().find(|s| s.as_str() == name)
    }

    /// Its place in the order statuses advance in (`failed` last: it is final).
    pub fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Read => 3,
            Self::Failed => 4,
        }
    }

    /// Whether a report of `next` moves an entry in this state forward. Reports arrive out of
    /// order (a "read" can overtake "delivered"); a status never moves back, and `failed` is
    /// final.
    pub fn advances_to(self, next: DeliveryStatus) -> bool {
        self != Self::Failed && next.rank() > self.rank()
    }
}

/// Where an entry stands in triage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Triage {
    /// No customer matched its sender; waiting in the unmatched inbox.
    Unmatched,
    /// Was unmatched; a user assigned it to a customer.
    Assigned,
    /// Was unmatched; a user dismissed it (spam, not a customer).
    Dismissed,
}

impl Triage {
    /// The wire and column name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unmatched => "unmatched",
            Self::Assigned => "assigned",
            Self::Dismissed => "dismissed",
        }
    }
}

/// The kind of a channel address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AddressKind {
    /// Email address.
    Email,
    /// Telephone number.
    Phone,
}

/// A party's address on a channel: the sender of an inbound entry, a recipient of an outbound one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelAddress {
    /// Email or phone.
    pub kind: AddressKind,
    /// The address as the channel gave it.
    pub value: String,
    /// The normalised form used for matching (lower-case email, E.164 phone), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalized: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A file of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// File name.
    pub filename: String,
    /// MIME type.
    pub mime_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Its media record, once one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<Uuid>,
    /// Where the file store keeps it, once stored (the seed's `nextcloud_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nextcloud_path: Option<String>,
    /// Why the file was not kept (over the size cap, store failure), if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// How an inbound entry was matched to its customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchInfo {
    /// 0 to 100.
    pub confidence: u8,
    /// Why (`email`, `phone`, `name`, `assigned by a user`), from the matcher.
    pub reason: String,
    /// The matcher that decided (`built-in`, or a plugin's name and version).
    pub matcher: String,
}

/// One entry of the communications log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommsEntry {
    /// The customer; absent while the entry waits in the unmatched inbox.
    #[serde(default)]
    pub customer_id: Option<Uuid>,
    /// Kind.
    #[serde(rename = "type")]
    pub kind: CommsType,
    /// Direction.
    pub direction: Direction,
    /// Subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// Body (plain text).
    #[serde(default)]
    pub body: String,
    /// Files.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// The channel's own id of the message (Message-ID, WhatsApp id, call id).
    #[serde(default)]
    pub ext_message_id: Option<String>,
    /// The other party: the sender of an inbound entry.
    #[serde(default)]
    pub channel_address: Option<ChannelAddress>,
    /// Recipients of an outbound entry.
    #[serde(default)]
    pub recipients: Vec<ChannelAddress>,
    /// Who logged it: `user:<id>`, `api_key:<id>` or `connector:<name>`.
    pub logged_by: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The conversation it belongs to: the id of its first entry.
    #[serde(default)]
    pub thread_id: Option<Uuid>,
    /// The channel id of the message it answers.
    #[serde(default)]
    pub in_reply_to: Option<String>,
    /// Channel ids of earlier messages in the conversation.
    #[serde(default)]
    pub references: Vec<String>,
    /// Delivery state of an outbound message.
    #[serde(default)]
    pub delivery_status: Option<DeliveryStatus>,
    /// Why it failed, or other detail of the last status.
    #[serde(default)]
    pub status_reason: Option<String>,
    /// The id of the bus event it came from.
    #[serde(default)]
    pub raw_event_id: Option<String>,
    /// How it was matched to its customer.
    #[serde(default, rename = "match")]
    pub matched: Option<MatchInfo>,
    /// Triage state, for entries that went through the unmatched inbox.
    #[serde(default)]
    pub triage: Option<Triage>,
    /// An automatic reply (out of office).
    #[serde(default)]
    pub auto_reply: bool,
}

impl CommsEntry {
    /// Folded text for search: subject, body and the party's address.
    pub fn search_text(&self) -> String {
        let address = self.channel_address.as_ref().map(|a| format!("{} {}", a.value, a.name.as_deref().unwrap_or(""))).unwrap_or_default();
        crate::fold_for_search(&format!("{} {} {}", self.subject.as_deref().unwrap_or(""), address, truncate(&self.body, 2_000)))
    }
}

fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// What a client sends to log an entry by hand (a note, a meeting, a call taken on a mobile).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommsInput {
    /// Required on create.
    #[serde(default)]
    pub customer_id: Option<Uuid>,
    /// Required on create.
    #[serde(default, rename = "type")]
    pub kind: Option<CommsType>,
    /// Defaults to `internal` for notes, `outbound` otherwise.
    #[serde(default)]
    pub direction: Option<Direction>,
    /// Subject, up to 998 characters.
    #[serde(default)]
    pub subject: Option<String>,
    /// Body, up to 100,000 characters.
    #[serde(default)]
    pub body: Option<String>,
    /// When it happened; now when absent.
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
}

impl CommsInput {
    /// Validates a new manual entry logged by `logged_by`.
    pub fn parse_new(self, logged_by: String, now: DateTime<Utc>) -> Result<CommsEntry, Violations> {
        let mut errors = Violations::default();
        if self.customer_id.is_none() {
            errors.push("/customer_id", "is required");
        }
        if self.kind.is_none() {
            errors.push("/type", "is required");
        }
        let kind = self.kind.unwrap_or(CommsType::Note);
        let direction = self.direction.unwrap_or(if kind == CommsType::Note { Direction::Internal } else { Direction::Outbound });
        if kind == CommsType::Note && direction != Direction::Internal {
            errors.push("/direction", "a note is internal");
        }
        if kind != CommsType::Note && direction == Direction::Internal {
            errors.push("/direction", "only notes are internal");
        }
        let subject = parse_subject(self.subject.as_deref(), &mut errors);
        let body = parse_body(self.body.unwrap_or_default(), &mut errors);
        let occurred_at = parse_occurred_at(self.occurred_at, now, &mut errors);
        if body.is_empty() && subject.is_none() {
            errors.push("/body", "a subject or a body is required");
        }
        errors.finish(|| CommsEntry {
            customer_id: self.customer_id,
            kind,
            direction,
            subject,
            body,
            attachments: Vec::new(),
            ext_message_id: None,
            channel_address: None,
            recipients: Vec::new(),
            logged_by,
            occurred_at,
            thread_id: None,
            in_reply_to: None,
            references: Vec::new(),
            delivery_status: None,
            status_reason: None,
            raw_event_id: None,
            matched: None,
            triage: None,
            auto_reply: false,
        })
    }

    /// Applies an edit to `current`: only subject, body and time may change; sending a
    /// different customer, type or direction is refused. A message sent through crm-hub (it
    /// has a delivery status) keeps what was sent: its subject, body and time are refused too,
    /// since the command on its way, or the message delivered, would no longer match the log.
    pub fn parse_edit(self, current: &CommsEntry, now: DateTime<Utc>) -> Result<CommsEntry, Violations> {
        let mut errors = Violations::default();
        if self.customer_id.is_some_and(|id| Some(id) != current.customer_id) {
            errors.push("/customer_id", "cannot be changed (assign an unmatched entry through the inbox)");
        }
        if self.kind.is_some_and(|k| k != current.kind) {
            errors.push("/type", "cannot be changed");
        }
        if self.direction.is_some_and(|d| d != current.direction) {
            errors.push("/direction", "cannot be changed");
        }
        // Only what changes is checked: an inbound entry may hold what the API would not take
        // (a longer body, a date from a sender's wrong clock) and must stay editable.
        let subject = if self.subject.as_deref() == current.subject.as_deref() {
            current.subject.clone()
        } else {
            parse_subject(self.subject.as_deref(), &mut errors)
        };
        let body = match self.body.unwrap_or_default() {
            body if body == current.body => body,
            body => parse_body(body, &mut errors),
        };
        let occurred_at = match self.occurred_at {
            Some(at) if at != current.occurred_at => parse_occurred_at(Some(at), now, &mut errors),
            _ => current.occurred_at,
        };
        if body.is_empty() && subject.is_none() && (body != current.body || subject != current.subject) {
            errors.push("/body", "a subject or a body is required");
        }
        if current.delivery_status.is_some() {
            let sent = "cannot be changed: crm-hub sent the message (or tried to) as it is logged";
            for (pointer, changed) in [
                ("/subject", subject != current.subject),
                ("/body", body != current.body),
                ("/occurred_at", occurred_at != current.occurred_at),
            ] {
                if changed {
                    errors.push(pointer, sent);
                }
            }
        }
        errors.finish(|| CommsEntry { subject, body, occurred_at, ..current.clone() })
    }
}

fn parse_subject(subject: Option<&str>, errors: &mut Violations) -> Option<String> {
    errors.check("/subject", optional_text(subject.unwrap_or(""), 998)).flatten()
}

fn parse_body(body: String, errors: &mut Violations) -> String {
    if body.chars().count() > 100_000 {
        errors.push("/body", "must be at most 100000 characters");
    }
    body
}

/// When it happened (now when not given), to the microsecond: what both databases keep, so
/// the JSON and the indexed column agree.
fn parse_occurred_at(occurred_at: Option<DateTime<Utc>>, now: DateTime<Utc>, errors: &mut Violations) -> DateTime<Utc> {
    let occurred_at = errors.check("/occurred_at", crate::storable_time(occurred_at)).flatten();
    let occurred_at = chrono::SubsecRound::trunc_subsecs(occurred_at.unwrap_or(now), 6);
    if occurred_at > now + chrono::Duration::days(366) {
        errors.push("/occurred_at", "is more than a year in the future");
    }
    occurred_at
}

/// Which way a file went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaDirection {
    /// Came from the customer.
    Received,
    /// Sent to the customer.
    Sent,
    /// Ours (photos of an installation, drawings).
    Internal,
}

impl MediaDirection {
    /// The wire and column name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Sent => "sent",
            Self::Internal => "internal",
        }
    }
}

/// Where a file's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaStatus {
    /// On the way to the file store.
    Pending,
    /// In the file store at `nextcloud_path`.
    Stored,
    /// The file store refused it; `status_reason` says why.
    Failed,
    /// Only metadata: the file lives elsewhere.
    External,
}

impl MediaStatus {
    /// The wire and column name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Stored => "stored",
            Self::Failed => "failed",
            Self::External => "external",
        }
    }
}

/// A file in the media index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// The customer it belongs to.
    #[serde(default)]
    pub customer_id: Option<Uuid>,
    /// The order it belongs to.
    #[serde(default)]
    pub order_id: Option<Uuid>,
    /// The log entry it came with.
    #[serde(default)]
    pub comms_id: Option<Uuid>,
    /// File name.
    pub filename: String,
    /// Path in the file store (for a `pending` file: the path it is being stored at).
    #[serde(default)]
    pub nextcloud_path: Option<String>,
    /// MIME type.
    pub mime_type: String,
    /// Size in bytes, when known.
    #[serde(default)]
    pub size: Option<u64>,
    /// SHA-256 of the content, hex (for a `pending` file: of the bytes sent to the file store).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Which way it went.
    pub direction: MediaDirection,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Who added it (`user:<id>`, `connector:<name>`).
    pub uploaded_by: String,
    /// Where the bytes are.
    pub status: MediaStatus,
    /// Why storing failed.
    #[serde(default)]
    pub status_reason: Option<String>,
}

impl Media {
    /// This record, `pending` until the file store reports on `content` sent to be stored at
    /// `path`: it keeps the path, size and SHA-256, and accepts a report of that file alone.
    pub fn awaiting(self, path: &str, content: &[u8]) -> Media {
        Media {
            nextcloud_path: Some(path.to_owned()),
            size: Some(content.len() as u64),
            sha256: Some(crate::sha256_hex(content)),
            status: MediaStatus::Pending,
            status_reason: None,
            ..self
        }
    }

    /// Folded text for search.
    pub fn search_text(&self) -> String {
        crate::fold_for_search(&format!("{} {}", self.filename, self.tags.join(" ")))
    }
}

/// Fields of a media record that clients may send back but never set.
pub const MEDIA_READ_ONLY: &[&str] = &["/comms_id", "/size", "/sha256", "/uploaded_by", "/status", "/status_reason"];

/// What a client sends to index a file: metadata only as JSON, or the fields of an upload
/// (`multipart/form-data` on `POST /api/v1/media`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaInput {
    /// The customer (this or `order_id` is required).
    #[serde(default)]
    pub customer_id: Option<Uuid>,
    /// The order.
    #[serde(default)]
    pub order_id: Option<Uuid>,
    /// Required.
    #[serde(default)]
    pub filename: Option<String>,
    /// Path in the file store, for a file already there.
    #[serde(default)]
    pub nextcloud_path: Option<String>,
    /// Defaults to `application/octet-stream`.
    #[serde(default)]
    pub mime_type: Option<String>,
    /// Defaults to `internal`.
    #[serde(default)]
    pub direction: Option<MediaDirection>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl MediaInput {
    /// Validates a media record added by `uploaded_by` whose bytes are `status`.
    pub fn parse(self, uploaded_by: String, status: MediaStatus) -> Result<Media, Violations> {
        let mut errors = Violations::default();
        if self.customer_id.is_none() && self.order_id.is_none() {
            errors.push("/customer_id", "a customer or an order is required");
        }
        let filename = errors.check("/filename", safe_filename(self.filename.as_deref().unwrap_or(""))).unwrap_or_default();
        let mime_type =
            errors.check("/mime_type", mime_type(self.mime_type.as_deref().unwrap_or("application/octet-stream"))).unwrap_or_default();
        let nextcloud_path = errors.check("/nextcloud_path", optional_text(self.nextcloud_path.as_deref().unwrap_or(""), 1_000)).flatten();
        if status == MediaStatus::External && nextcloud_path.is_none() {
            errors.push("/nextcloud_path", "is required for a file already in the store");
        }
        let mut tags: Vec<String> = Vec::new();
        for (i, tag) in self.tags.iter().enumerate() {
            if let Some(tag) = errors.check(format!("/tags/{i}"), crate::error::required_text(tag, 50)) {
                let tag = tag.to_lowercase();
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
        }
        errors.finish(|| Media {
            customer_id: self.customer_id,
            order_id: self.order_id,
            comms_id: None,
            filename,
            nextcloud_path,
            mime_type,
            size: None,
            sha256: None,
            direction: self.direction.unwrap_or(MediaDirection::Internal),
            tags,
            uploaded_by,
            status,
            status_reason: None,
        })
    }
}

/// The longest file or folder name file stores accept, in bytes.
pub const MAX_FILENAME_BYTES: usize = 255;

/// The longest extension [`stored_file_name`] keeps when it shortens a name, in bytes.
const MAX_EXTENSION_BYTES: usize = 16;

/// Characters Windows (and so Nextcloud's clients and SMB shares) refuse in names.
const NOT_PORTABLE: &[char] = &['<', '>', ':', '"', '|', '?', '*', '/', '\\'];

/// Whether `c` is an invisible formatting character: bidirectional controls (with which
/// `invoice\u{202E}fdp.exe` displays as `invoiceexe.pdf`), zero-width spaces,
/// the soft hyphen, the byte-order mark and the like.
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            // Not the joiners U+200C and U+200D: Persian and Indic words and emoji need them.
            | '\u{200B}'
            | '\u{200E}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// `name` without its invisible formatting characters ([`is_invisible_format`]).
pub fn strip_invisible(name: &str) -> String {
    name.chars().filter(|&c| !is_invisible_format(c)).collect()
}

/// A file name safe to use as the last segment of a path in any file store: no separators,
/// no control or invisible formatting characters, not `.` or `..`, at most
/// [`MAX_FILENAME_BYTES`]. (The stored file's name is made from it by [`stored_file_name`].)
pub fn safe_filename(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err("must be a plain file name (no slashes, control characters, `.` or `..`)".into());
    }
    if let Some(c) = name.chars().find(|&c| is_invisible_format(c)) {
        return Err(format!("must not contain invisible formatting characters (found U+{:04X})", u32::from(c)));
    }
    if name.len() > MAX_FILENAME_BYTES {
        return Err(format!("must be at most {MAX_FILENAME_BYTES} bytes"));
    }
    Ok(name.to_owned())
}

/// The name a file is stored under: `{prefix}-{filename}`, portable to every file store
/// (characters Windows refuses, control and invisible formatting characters become `_`; no
/// trailing dot or space) and shortened on a character boundary to [`MAX_FILENAME_BYTES`],
/// keeping the extension. `prefix` (a media id, an attachment number) keeps names unique; the
/// media record keeps the original name for display and downloads.
pub fn stored_file_name(prefix: &str, filename: &str) -> String {
    let portable: String =
        filename.chars().map(|c| if c.is_control() || is_invisible_format(c) || NOT_PORTABLE.contains(&c) { '_' } else { c }).collect();
    let portable = portable.trim_end_matches(['.', ' ']);
    let portable = if portable.is_empty() { "_" } else { portable };
    format!("{prefix}-{}", shorten(portable, MAX_FILENAME_BYTES.saturating_sub(prefix.len() + 1)))
}

/// The name of a file received on a channel (an e-mail attachment), made a safe file name
/// ([`safe_filename`]) rather than refused: separators and control characters become `_`,
/// invisible formatting characters go, and a name too long is shortened on a character
/// boundary, keeping its extension. `fallback` when nothing is left of it.
pub fn received_filename(name: &str, fallback: &str) -> String {
    let plain: String = strip_invisible(name).chars().map(|c| if c == '/' || c == '\\' || c.is_control() { '_' } else { c }).collect();
    let plain = plain.trim();
    if plain.is_empty() || plain == "." || plain == ".." {
        return fallback.to_owned();
    }
    shorten(plain, MAX_FILENAME_BYTES)
}

/// `name` cut to at most `budget` bytes on a character boundary, keeping its extension (up to
/// [`MAX_EXTENSION_BYTES`]) when it has one; no trailing dot or space where the cut made one.
fn shorten(name: &str, budget: usize) -> String {
    let (stem, extension) = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= MAX_EXTENSION_BYTES && name.len() - dot < budget => name.split_at(dot),
        _ => (name, ""),
    };
    let mut end = stem.len().min(budget - extension.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    let stem = &stem[..end];
    let stem = if extension.is_empty() { stem.trim_end_matches(['.', ' ']) } else { stem };
    format!("{stem}{extension}")
}

/// A MIME type of the form `type/subtype` (parameters allowed).
pub fn mime_type(value: &str) -> Result<String, String> {
    let value = value.trim();
    let essence = value.split(';').next().unwrap_or("").trim();
    let mut parts = essence.split('/');
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    match (parts.next(), parts.next(), parts.next()) {
        (Some(t), Some(s), None) if token(t) && token(s) && value.len() <= 255 => Ok(value.to_owned()),
        _ => Err(format!("`{value}` is not a MIME type such as image/jpeg")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_status_never_moves_back() {
        use DeliveryStatus::*;
        assert!(Queued.advances_to(Sent));
        assert!(Sent.advances_to(Read));
        assert!(!Read.advances_to(Delivered));
        assert!(Delivered.advances_to(Failed));
        assert!(!Failed.advances_to(Read));
        assert!(!Sent.advances_to(Sent));
    }

    #[test]
    fn notes_are_internal_and_need_text() {
        let now = Utc::now();
        let input = CommsInput {
            customer_id: Some(Uuid::nil()),
            kind: Some(CommsType::Note),
            body: Some("called back".into()),
            ..Default::default()
        };
        let entry = input.parse_new("user:x".into(), now).unwrap();
        assert_eq!(entry.direction, Direction::Internal);
        let bad = CommsInput { kind: Some(CommsType::Note), direction: Some(Direction::Inbound), ..Default::default() };
        let errors = bad.parse_new("user:x".into(), now).unwrap_err();
        let pointers: Vec<_> = errors.0.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/customer_id", "/direction", "/body"]);
    }

    #[test]
    fn edits_keep_identity() {
        let now = Utc::now();
        let entry =
            CommsInput { customer_id: Some(Uuid::nil()), kind: Some(CommsType::Call), body: Some("x".into()), ..Default::default() }
                .parse_new("user:x".into(), now)
                .unwrap();
        let edit = CommsInput { kind: Some(CommsType::Email), body: Some("y".into()), ..Default::default() };
        assert_eq!(edit.parse_edit(&entry, now).unwrap_err().0[0].pointer, "/type");
        let edit = CommsInput { body: Some("y".into()), ..Default::default() };
        let next = edit.parse_edit(&entry, now).unwrap();
        assert_eq!((next.body.as_str(), next.occurred_at, next.kind), ("y", entry.occurred_at, CommsType::Call));
    }

    #[test]
    fn a_message_sent_through_the_crm_keeps_what_was_sent() {
        let now = Utc::now();
        let mut sent = CommsInput {
            customer_id: Some(Uuid::nil()),
            kind: Some(CommsType::Email),
            direction: Some(Direction::Outbound),
            subject: Some("Προσφορά".into()),
            body: Some("Σας στέλνουμε την προσφορά.".into()),
            ..Default::default()
        }
        .parse_new("user:x".into(), now)
        .unwrap();
        sent.delivery_status = Some(DeliveryStatus::Queued);
        let pointers = |edit: CommsInput| -> Vec<String> {
            edit.parse_edit(&sent, now).map_or_else(|e| e.0.into_iter().map(|e| e.pointer).collect(), |_| Vec::new())
        };
        assert_eq!(
            pointers(CommsInput { body: Some("άλλο κείμενο".into()), subject: sent.subject.clone(), ..Default::default() }),
            ["/body"]
        );
        assert_eq!(pointers(CommsInput { body: Some(sent.body.clone()), subject: None, ..Default::default() }), ["/subject"]);
        let later = CommsInput {
            body: Some(sent.body.clone()),
            subject: sent.subject.clone(),
            occurred_at: Some(now + chrono::Duration::hours(1)),
            ..Default::default()
        };
        assert_eq!(pointers(later), ["/occurred_at"]);
        // Sending back what it holds is no change.
        let same = CommsInput {
            body: Some(sent.body.clone()),
            subject: sent.subject.clone(),
            occurred_at: Some(sent.occurred_at),
            ..Default::default()
        };
        assert_eq!(sent.clone(), same.parse_edit(&sent, now).unwrap());
    }

    #[test]
    fn filenames_and_mime_types() {
        assert!(safe_filename("../etc/passwd").is_err());
        assert!(safe_filename("a\u{0}b").is_err());
        assert!(safe_filename("..").is_err());
        assert_eq!(safe_filename(" καμπάνα.jpg ").unwrap(), "καμπάνα.jpg");
        for invisible in ["invoice\u{202E}fdp.exe", "a\u{200B}b", "\u{FEFF}a.txt", "soft\u{00AD}hyphen", "x\u{2066}y", "x\u{061C}y"] {
            let err = safe_filename(invisible).unwrap_err();
            assert!(err.contains("invisible"), "{invisible:?}: {err}");
        }
        assert_eq!(strip_invisible("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        // Joiners are part of words (Persian "می‌خواهم" has a ZWNJ) and emoji.
        assert_eq!(safe_filename("می\u{200C}خواهم.pdf").unwrap(), "می\u{200C}خواهم.pdf");
        assert!(safe_filename("👨\u{200D}👩\u{200D}👧.jpg").is_ok());
        assert_eq!(safe_filename(&"λ".repeat(127)).unwrap().len(), 254);
        assert!(mime_type("image/jpeg").is_ok());
        assert!(mime_type("text/plain; charset=utf-8").is_ok());
        assert!(mime_type("jpeg").is_err());
    }

    #[test]
    fn stored_file_names_fit_and_are_portable() {
        let id = "0195f2c1-7a4e-7c3d-9b1e-2f3a4b5c6d7e";
        assert_eq!(stored_file_name("1", "καμπάνα.jpg"), "1-καμπάνα.jpg");
        assert_eq!(stored_file_name(id, "a<b>c:d\"e|f?g*h.txt"), format!("{id}-a_b_c_d_e_f_g_h.txt"));
        assert_eq!(stored_file_name("2", "invoice\u{202E}fdp.exe"), "2-invoice_fdp.exe");
        assert_eq!(stored_file_name("3", "tab\there. . "), "3-tab_here");
        assert_eq!(stored_file_name("4", "..."), "4-_");
        // ~110 two-byte letters: 220 bytes + 37 = 257, over the limit by two.
        let greek = format!("{}.pdf", "λ".repeat(110));
        let name = stored_file_name(id, &greek);
        assert!(name.len() <= MAX_FILENAME_BYTES, "{}", name.len());
        assert_eq!(name.len(), MAX_FILENAME_BYTES);
        assert!(name.starts_with(&format!("{id}-λλλ")) && name.ends_with("λ.pdf"), "{name}");
        let name = stored_file_name(id, &format!("{}.pdf", "€".repeat(80)));
        assert_eq!(name.len(), 254, "cut on a character boundary (3-byte letters)");
        // Every length and mix of widths fits, keeps the extension and stays valid text.
        for letters in [1, 100, 200, 300] {
            for letter in ["a", "λ", "€", "😀"] {
                let filename = format!("{}.docx", letter.repeat(letters));
                let name = stored_file_name(id, &filename);
                assert!(name.len() <= MAX_FILENAME_BYTES && name.ends_with(".docx"), "{letter} x {letters}: {name}");
                assert!(name.starts_with(&format!("{id}-{letter}")));
            }
        }
        // No extension, or one too long to be one: cut as a whole, no trailing dot or space.
        let name = stored_file_name(id, &format!("{} {}", "a".repeat(217), "b".repeat(20)));
        assert_eq!(name, format!("{id}-{}", "a".repeat(217)));
        let long_extension = format!("report.{}", "x".repeat(300));
        assert_eq!(stored_file_name("5", &long_extension).len(), MAX_FILENAME_BYTES);
    }

    #[test]
    fn received_file_names_are_made_safe_not_refused() {
        assert_eq!(received_filename("Προσφορά 2026.pdf", "attachment-1"), "Προσφορά 2026.pdf");
        assert_eq!(received_filename(r"C:\Users\papas\σχέδιο.dwg", "attachment-1"), "C:_Users_papas_σχέδιο.dwg");
        assert_eq!(received_filename("a/b\tc.txt\u{202E}", "attachment-1"), "a_b_c.txt");
        assert_eq!(received_filename("  ..  ", "attachment-2"), "attachment-2");
        assert_eq!(received_filename("\u{200B}", "attachment-3"), "attachment-3");
        // Too long: cut on a character boundary, the extension kept.
        for letter in ["a", "λ", "€", "😀"] {
            let name = received_filename(&format!("{}.pdf", letter.repeat(300)), "attachment-1");
            assert!(name.len() <= MAX_FILENAME_BYTES && name.ends_with(".pdf") && name.starts_with(letter), "{letter}: {name}");
            assert_eq!(safe_filename(&name), Ok(name.clone()));
        }
    }
}
