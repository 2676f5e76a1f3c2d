//! One raw message (RFC 5322 bytes, as IMAP returns it) turned into what the connector publishes:
//! a [`MessageReceived`] for a message someone wrote, or [`DeliveryStatus`] reports for the
//! outbound message a bounce, delivery report or read receipt is about. Pure: no I/O.
//!
//! * Decoding is mail-parser's: RFC 2047 encoded words, RFC 2231 parameters, quoted-printable and
//!   base64, any charset (ISO-8859-7 Greek, KOI8-R and windows-1251 Cyrillic, ...). The body is
//!   the first text part, or the first HTML part converted to text.
//! * Ids keep their angle brackets (`<id@host>`), the form our own Message-IDs have
//!   ([`crm_connector::message::entry_message_id`]). A message without a Message-ID gets a stable
//!   synthetic one from a hash of its bytes, so a re-scan finds the same id.
//! * Reports: RFC 3464 `multipart/report; report-type=delivery-status` (action `failed` or
//!   `delivered`), RFC 8098 read receipts (`disposition-notification`, `displayed` → `read`), and
//!   the common non-standard bounce (from `MAILER-DAEMON` / an empty Return-Path, with the
//!   returned headers inline). The original Message-ID comes from the returned message or
//!   headers part, the report's fields, or the bounce's own In-Reply-To. A report whose original
//!   cannot be found is published as a message (`auto_reply`), never dropped.
//! * Auto-replies (`Auto-Submitted` other than `no`, `X-Autoreply`, `X-Autorespond`,
//!   `Precedence: auto_reply / bulk / junk`) are marked `auto_reply`.

use chrono::{DateTime, TimeZone as _, Utc};
use crm_connector::message::{
    Address, Bytes, Channel, DeliveryState, DeliveryStatus, InboundAttachment, MessageReceived, entry_of_message_id,
};
use mail_parser::{Addr, HeaderValue, Message, MessageParser, MimeHeaders, PartType};
use sha2::{Digest as _, Sha256};

/// The domain of synthetic Message-IDs (`<synthetic.<hash>@crm-hub.invalid>`).
pub const SYNTHETIC_DOMAIN: &str = "crm-hub.invalid";
/// The sender recorded when a message names none at all (no From, Sender, Reply-To or
/// Return-Path): the message still lands in the log, unmatched, for triage.
pub const UNKNOWN_SENDER: &str = "unknown-sender@invalid";

/// How to parse.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// Attachments up to this many bytes travel with the event; larger ones are listed with
    /// `refused` and no content.
    pub attachment_cap: u64,
    /// When the server received it (IMAP INTERNALDATE): the time of a message without a
    /// readable Date.
    pub received_at: Option<DateTime<Utc>>,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions { attachment_cap: 25 * 1024 * 1024, received_at: None }
    }
}

/// What a raw message becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A message someone sent.
    Message(Box<MessageReceived>),
    /// Reports on earlier outbound messages (a bounce, a delivery report, a read receipt). Empty
    /// for reports that change nothing (`delayed`, `relayed`, a receipt other than `displayed`).
    Reports(Vec<DeliveryStatus>),
}

/// Why a message could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Zero bytes.
    #[error("the message is empty")]
    Empty,
    /// Nothing that reads as a header.
    #[error("not an email message: no header could be read")]
    NoHeaders,
}

/// The stable synthetic Message-ID of a message that has none: a hash of its bytes, with line
/// ends and trailing line breaks normalised (servers store and return `\r\n` or `\n`).
pub fn synthetic_message_id(raw: &[u8]) -> String {
    let mut hasher = Sha256::new();
    let mut end = raw.len();
    while end > 0 && matches!(raw[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    for chunk in raw[..end].split(|b| *b == b'\r') {
        hasher.update(chunk);
    }
    let digest = hasher.finalize();
    format!("<synthetic.{}@{SYNTHETIC_DOMAIN}>", hex::encode(&digest[..16]))
}

/// `<id>` from an id with or without brackets; `None` when empty.
pub fn bracketed(id: &str) -> Option<String> {
    let inner = id.trim().trim_start_matches('<').trim_end_matches('>').trim();
    (!inner.is_empty() && !inner.contains(char::is_whitespace)).then(|| format!("<{inner}>"))
}

/// Parses `raw` into what the connector publishes.
pub fn parse(raw: &[u8], options: &ParseOptions) -> Result<Inbound, ParseError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    let body = strip_mbox_line(raw);
    let message = MessageParser::default().parse(body).ok_or(ParseError::NoHeaders)?;
    if message.headers().is_empty() {
        return Err(ParseError::NoHeaders);
    }
    let occurred_at = message
        .date()
        .and_then(|d| Utc.timestamp_opt(d.to_timestamp(), 0).single())
        .filter(|d| d.timestamp() > 0)
        .or(options.received_at)
        .unwrap_or_else(Utc::now);
    if let Some(reports) = reports(&message, occurred_at) {
        return Ok(Inbound::Reports(reports));
    }
    Ok(Inbound::Message(Box::new(received(raw, &message, occurred_at, options))))
}

/// An mbox `From ` separator line before the headers is not part of the message.
fn strip_mbox_line(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"From ") {
        let first = raw.iter().position(|b| *b == b'\n').map_or(raw.len(), |i| i + 1);
        if !raw[..first].contains(&b':') || raw[..first].windows(2).any(|w| w == b"  ") {
            return &raw[first..];
        }
    }
    raw
}

fn received(raw: &[u8], message: &Message<'_>, occurred_at: DateTime<Utc>, options: &ParseOptions) -> MessageReceived {
    let channel_message_id = message.message_id().and_then(bracketed).unwrap_or_else(|| synthetic_message_id(raw));
    let from = [message.from(), message.sender(), message.reply_to()]
        .into_iter()
        .flatten()
        .flat_map(addresses)
        .next()
        .or_else(|| message.return_address().and_then(|a| bracketed(a).map(|_| Address::email(a.trim().to_owned(), None))))
        .unwrap_or_else(|| Address::email(UNKNOWN_SENDER, Some("(no sender)".into())));
    let to = message.to().map(addresses).unwrap_or_default();
    let cc = message.cc().map(addresses).unwrap_or_default();
    let subject = message.subject().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let body = message.body_text(0).map(|text| normalise_text(&text)).unwrap_or_default();
    let in_reply_to = ids(message.in_reply_to()).into_iter().next();
    let references = ids(message.references());
    MessageReceived {
        channel: Channel::Email,
        channel_message_id,
        from,
        to,
        cc,
        subject,
        body,
        occurred_at,
        in_reply_to,
        references,
        auto_reply: is_auto_reply(message),
        attachments: attachments(message, options.attachment_cap),
    }
}

/// Line ends as `\n`, no trailing blank space.
fn normalise_text(text: &str) -> String {
    text.replace("\r\n", "\n").trim_end().to_owned()
}

fn addresses(address: &mail_parser::Address<'_>) -> Vec<Address> {
    address.iter().filter_map(address_of).collect()
}

fn address_of(addr: &Addr<'_>) -> Option<Address> {
    let value = addr.address()?.trim();
    if value.is_empty() {
        return None;
    }
    let name = addr.name().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty() && n != value);
    Some(Address::email(value.to_owned(), name))
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => bracketed(id).into_iter().collect(),
        HeaderValue::TextList(list) => list.iter().filter_map(|id| bracketed(id)).collect(),
        _ => Vec::new(),
    }
}

/// The value of a header as written (unfolded, trimmed), first occurrence.
fn header_text(message: &Message<'_>, name: &str) -> Option<String> {
    message.header_raw(name.to_owned()).map(|raw| raw.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Whether a message was sent automatically in reply (out of office, auto-responder, bulk).
pub fn is_auto_reply(message: &Message<'_>) -> bool {
    let first_word = |value: &str| value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if let Some(value) = header_text(message, "Auto-Submitted")
        && !matches!(first_word(&value).as_str(), "" | "no")
    {
        return true;
    }
    for name in ["X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Autogenerated"] {
        if let Some(value) = header_text(message, name)
            && !matches!(first_word(&value).as_str(), "no" | "false" | "0")
        {
            return true;
        }
    }
    for name in ["Precedence", "X-Precedence"] {
        if let Some(value) = header_text(message, name)
            && matches!(first_word(&value).as_str(), "auto_reply" | "auto-reply" | "bulk" | "junk")
        {
            return true;
        }
    }
    false
}

fn mime_type(part: &mail_parser::MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None if matches!(part.body, PartType::Message(_)) => "message/rfc822".into(),
        None => "application/octet-stream".into(),
    }
}

fn attachments(message: &Message<'_>, cap: u64) -> Vec<InboundAttachment> {
    message
        .attachments()
        // A text part without a name that is not marked as an attachment is another rendering
        // of the body (`text/watch-html` in an alternative), not a file.
        .filter(|part| {
            let named = part.attachment_name().is_some_and(|n| !n.trim().is_empty());
            let marked = part.content_disposition().is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
            let text = part.content_type().is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("text"));
            named || marked || !text
        })
        .enumerate()
        .map(|(index, part)| {
            let mime_type = mime_type(part);
            let filename =
                part.attachment_name().map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).unwrap_or_else(|| match part.body {
                    PartType::Message(_) => format!("message-{}.eml", index + 1),
                    _ => format!("attachment-{}", index + 1),
                });
            let bytes = part.contents();
            let size = bytes.len() as u64;
            let (content, refused) = if size > cap {
                (None, Some(format!("{size} bytes is over the email connector's cap of {cap} bytes")))
            } else {
                (Some(Bytes(bytes.to_vec())), None)
            };
            InboundAttachment { filename, mime_type, size, content, refused }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reports

/// Fields of a report part (`Name: value` lines, folded lines joined), in blocks separated by
/// blank lines.
fn field_blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    let mut block: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = block.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            block.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    if !block.is_empty() {
        blocks.push(block);
    }
    blocks
}

fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// `rfc822; user@example.com` → `user@example.com`.
fn typed_value(value: &str) -> &str {
    value.split_once(';').map_or(value, |(_, v)| v).trim()
}

/// What the parts of a report say.
#[derive(Default)]
struct ReportParts {
    /// The Message-ID of the returned message (message/rfc822 or text/rfc822-headers part).
    original: Option<String>,
    /// `message/delivery-status` text.
    delivery_status: Option<String>,
    /// `message/disposition-notification` text.
    disposition: Option<String>,
}

fn report_parts(message: &Message<'_>) -> ReportParts {
    let mut found = ReportParts::default();
    for part in message.parts.iter().skip(1) {
        let ct = mime_type(part);
        match ct.as_str() {
            "message/delivery-status" | "message/global-delivery-status" => {
                found.delivery_status.get_or_insert_with(|| String::from_utf8_lossy(part.contents()).into_owned());
            }
            "message/disposition-notification" | "message/global-disposition-notification" => {
                found.disposition.get_or_insert_with(|| String::from_utf8_lossy(part.contents()).into_owned());
            }
            "text/rfc822-headers" | "message/global-headers" => {
                if found.original.is_none() {
                    found.original = MessageParser::default()
                        .parse_headers(part.contents())
                        .and_then(|headers| headers.message_id().and_then(bracketed));
                }
            }
            _ => {
                if found.original.is_none()
                    && let PartType::Message(inner) = &part.body
                {
                    found.original = inner.message_id().and_then(bracketed);
                }
            }
        }
    }
    found
}

/// The reports this message makes, or `None` when it is not a report (or its original message
/// cannot be found: then it is published as a message).
fn reports(message: &Message<'_>, occurred_at: DateTime<Utc>) -> Option<Vec<DeliveryStatus>> {
    let report_type = message
        .content_type()
        .filter(|ct| ct.ctype().eq_ignore_ascii_case("multipart") && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report")))
        .map(|ct| ct.attribute("report-type").unwrap_or("").to_ascii_lowercase());
    let own_reference = || ids(message.in_reply_to()).into_iter().next().or_else(|| ids(message.references()).pop());
    let parts = report_parts(message);
    let status = |original: String, state: DeliveryState, reason: Option<String>| DeliveryStatus {
        channel: Channel::Email,
        entry_id: entry_of_message_id(&original),
        channel_message_id: Some(original),
        status: state,
        reason,
        occurred_at,
    };
    match report_type.as_deref() {
        Some("delivery-status") | Some("global-delivery-status") => {
            let text = parts.delivery_status.as_deref()?;
            let blocks = field_blocks(text);
            let original = parts
                .original
                .clone()
                .or_else(|| blocks.iter().find_map(|b| field(b, "original-envelope-id").and_then(bracketed)))
                .or_else(own_reference)?;
            let mut failed = Vec::new();
            let mut delivered = false;
            for block in &blocks {
                let Some(action) = field(block, "action") else { continue };
                match action.to_ascii_lowercase().as_str() {
                    "failed" => failed.push(recipient_reason(block)),
                    "delivered" => delivered = true,
                    _ => {}
                }
            }
            Some(if !failed.is_empty() {
                vec![status(original, DeliveryState::Failed, Some(failed.join("; ")))]
            } else if delivered {
                vec![status(original, DeliveryState::Delivered, None)]
            } else {
                Vec::new()
            })
        }
        Some("disposition-notification") => {
            let text = parts.disposition.as_deref()?;
            let blocks = field_blocks(text);
            let original = blocks
                .iter()
                .find_map(|b| field(b, "original-message-id").and_then(bracketed))
                .or(parts.original.clone())
                .or_else(own_reference)?;
            let disposition = blocks.iter().find_map(|b| field(b, "disposition")).unwrap_or("").to_ascii_lowercase();
            let kind = disposition.rsplit(';').next().unwrap_or("").trim().split('/').next().unwrap_or("").trim().to_owned();
            Some(if kind == "displayed" { vec![status(original, DeliveryState::Read, None)] } else { Vec::new() })
        }
        _ if looks_like_bounce(message) => {
            let body = message.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
            let original = parts.original.clone().or_else(|| message_id_in_text(&body)).or_else(own_reference)?;
            let failed_recipients = header_text(message, "X-Failed-Recipients");
            let detail = smtp_reply_line(&body).or_else(|| message.subject().map(str::to_owned)).unwrap_or_else(|| "bounced".into());
            let reason = match failed_recipients {
                Some(who) => format!("{who}: {detail}"),
                None => detail,
            };
            Some(vec![status(original, DeliveryState::Failed, Some(reason))])
        }
        _ => None,
    }
}

/// `user@aol.com: 5.2.2 (552 5.2.2 E4.12 user MAILBOX FULL)` from a recipient block.
fn recipient_reason(block: &[(String, String)]) -> String {
    let recipient = field(block, "final-recipient").or_else(|| field(block, "original-recipient")).map(typed_value);
    let status = field(block, "status");
    let diagnostic = field(block, "diagnostic-code").map(typed_value);
    let mut reason = String::new();
    if let Some(recipient) = recipient {
        reason.push_str(recipient);
        reason.push_str(": ");
    }
    match (status, diagnostic) {
        (Some(s), Some(d)) => reason.push_str(&format!("{s} ({d})")),
        (Some(s), None) => reason.push_str(s),
        (None, Some(d)) => reason.push_str(d),
        (None, None) => reason.push_str("failed"),
    }
    reason
}

/// A non-standard bounce: from the mail system, about a failed delivery.
fn looks_like_bounce(message: &Message<'_>) -> bool {
    let from = message.from().and_then(|a| a.first()).and_then(|a| a.address()).unwrap_or("").to_ascii_lowercase();
    let local = from.split('@').next().unwrap_or("");
    let system_sender = matches!(local, "mailer-daemon" | "postmaster" | "mail-daemon" | "mailerdaemon")
        || header_text(message, "Return-Path").is_some_and(|rp| rp.trim() == "<>");
    let subject = message.subject().unwrap_or("").to_ascii_lowercase();
    let about_failure = header_text(message, "X-Failed-Recipients").is_some()
        || ["undeliver", "delivery status notification", "returned mail", "delivery failure", "failure notice", "mail delivery failed"]
            .iter()
            .any(|s| subject.contains(s));
    system_sender && about_failure
}

/// The first `Message-ID:` header line quoted in a bounce's text.
fn message_id_in_text(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (name, value) = line.trim().split_once(':')?;
        name.trim().eq_ignore_ascii_case("message-id").then(|| bracketed(value)).flatten()
    })
}

/// The first line that reads as an SMTP reply (`550 5.1.0 Recipient rejected`).
fn smtp_reply_line(text: &str) -> Option<String> {
    text.lines().map(str::trim).find_map(|line| {
        let bytes = line.as_bytes();
        let code = bytes.len() > 4
            && matches!(bytes[0], b'4' | b'5')
            && bytes[1].is_ascii_digit()
            && bytes[2].is_ascii_digit()
            && matches!(bytes[3], b' ' | b'-');
        code.then(|| line.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(raw: &str) -> MessageReceived {
        match parse(raw.as_bytes(), &ParseOptions::default()).unwrap() {
            Inbound::Message(m) => *m,
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn greek_in_every_encoding() {
        // ISO-8859-7 quoted-printable subject, UTF-8 base64 display name, windows-1253 body.
        let raw = b"From: =?UTF-8?B?zpPOuc+Oz4HOs86/z4IgzqDOsc+AzrHOtM+Mz4DOv8+FzrvOv8+C?= <giorgos@example.gr>\r\n\
To: =?ISO-8859-7?Q?=D0=F9=EB=DE=F3=E5=E9=F2?= <sales@bells.example>\r\n\
Subject: =?ISO-8859-7?Q?=D0=F1=EF=F3=F6=EF=F1=DC_=E3=E9=E1_=EA=E1=EC=F0=DC=ED=E5=F2?=\r\n\
Message-ID: <gr-1@example.gr>\r\n\
Date: Tue, 3 Mar 2026 10:00:00 +0200\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=windows-1253\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
=CA=E1=EB=E7=EC=DD=F1=E1 =F3=E1=F2!\r\n";
        let m = match parse(raw, &ParseOptions::default()).unwrap() {
            Inbound::Message(m) => *m,
            other => panic!("{other:?}"),
        };
        assert_eq!(m.from, Address::email("giorgos@example.gr", Some("Γιώργος Παπαδόπουλος".into())));
        assert_eq!(m.to, vec![Address::email("sales@bells.example", Some("Πωλήσεις".into()))]);
        assert_eq!(m.subject.as_deref(), Some("Προσφορά για καμπάνες"));
        assert_eq!(m.body, "Καλημέρα σας!");
        assert_eq!(m.channel_message_id, "<gr-1@example.gr>");
        assert_eq!(m.occurred_at.to_rfc3339(), "2026-03-03T08:00:00+00:00");
    }

    #[test]
    fn html_only_is_converted_to_text() {
        let m = message(
            "From: a@example.com\r\nSubject: x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello <b>world</b></p><p>Second&nbsp;line</p>\r\n",
        );
        assert!(m.body.contains("Hello world"), "{:?}", m.body);
        assert!(m.body.contains("Second"), "{:?}", m.body);
        assert!(!m.body.contains('<'), "{:?}", m.body);
    }

    #[test]
    fn missing_message_id_gets_a_stable_synthetic_one() {
        let raw = "From: a@example.com\r\nSubject: no id\r\n\r\nbody\r\n";
        let first = message(raw);
        assert_eq!(first.channel_message_id, message(raw).channel_message_id);
        assert!(first.channel_message_id.ends_with("@crm-hub.invalid>"), "{}", first.channel_message_id);
        assert_ne!(first.channel_message_id, message("From: a@example.com\r\nSubject: no id\r\n\r\nother\r\n").channel_message_id);
        assert_eq!(
            first.channel_message_id,
            message("From: a@example.com\nSubject: no id\n\nbody\n\n").channel_message_id,
            "line ends do not matter"
        );
    }

    #[test]
    fn auto_replies_are_marked() {
        for header in ["Auto-Submitted: auto-replied", "X-Autoreply: yes", "Precedence: bulk", "Precedence: auto_reply", "X-Autorespond: x"]
        {
            let m = message(&format!("From: a@example.com\r\n{header}\r\nSubject: Out of office\r\n\r\naway\r\n"));
            assert!(m.auto_reply, "{header}");
        }
        for header in ["Auto-Submitted: no", "Precedence: list", "X-Mailer: x"] {
            let m = message(&format!("From: a@example.com\r\n{header}\r\nSubject: hi\r\n\r\nhello\r\n"));
            assert!(!m.auto_reply, "{header}");
        }
    }

    #[test]
    fn threading_headers_keep_their_brackets() {
        let m = message(
            "From: a@example.com\r\nMessage-ID: <r1@example.com>\r\nIn-Reply-To: <crm.0192e4f5-8a6b-7cc0-9d5e-3f2a1b0c9d8e@bells.example>\r\nReferences: <a@x> <crm.0192e4f5-8a6b-7cc0-9d5e-3f2a1b0c9d8e@bells.example>\r\n\r\nok\r\n",
        );
        assert_eq!(m.in_reply_to.as_deref(), Some("<crm.0192e4f5-8a6b-7cc0-9d5e-3f2a1b0c9d8e@bells.example>"));
        assert_eq!(m.references, vec!["<a@x>".to_owned(), "<crm.0192e4f5-8a6b-7cc0-9d5e-3f2a1b0c9d8e@bells.example>".to_owned()]);
    }

    #[test]
    fn a_bounce_of_our_message_names_its_entry() {
        let entry = uuid::Uuid::now_v7();
        let ours = crm_connector::message::entry_message_id(entry, "bells.example");
        let raw = format!(
            "From: MAILER-DAEMON@mx.example.net\r\nTo: sales@bells.example\r\nSubject: Undelivered Mail Returned to Sender\r\n\
Message-ID: <b1@mx.example.net>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"BB\"\r\n\r\n\
--BB\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n\
--BB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n\
Final-Recipient: rfc822; nobody@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n\
--BB\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: sales@bells.example\r\nMessage-ID: {ours}\r\nSubject: Offer\r\n\r\n--BB--\r\n"
        );
        let Inbound::Reports(reports) = parse(raw.as_bytes(), &ParseOptions::default()).unwrap() else { panic!("a report") };
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].entry_id, Some(entry));
        assert_eq!(reports[0].channel_message_id.as_deref(), Some(ours.as_str()));
        assert_eq!(reports[0].status, DeliveryState::Failed);
        assert_eq!(reports[0].reason.as_deref(), Some("nobody@example.net: 5.1.1 (550 5.1.1 no such user)"));
    }

    #[test]
    fn attachments_over_the_cap_are_refused_with_a_reason() {
        let raw = "From: a@example.com\r\nSubject: files\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
--XX\r\nContent-Type: application/pdf; name=\"big.pdf\"\r\nContent-Disposition: attachment; filename=\"big.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAAAAAAAAAAAAAA\r\n\
--XX\r\nContent-Type: text/csv; name=\"small.csv\"\r\nContent-Disposition: attachment; filename=\"small.csv\"\r\n\r\na,b\r\n--XX--\r\n";
        let Inbound::Message(m) = parse(raw.as_bytes(), &ParseOptions { attachment_cap: 8, received_at: None }).unwrap() else { panic!() };
        assert_eq!(m.body, "see attached");
        assert_eq!(m.attachments.len(), 2);
        assert_eq!(m.attachments[0].filename, "big.pdf");
        assert_eq!(m.attachments[0].mime_type, "application/pdf");
        assert_eq!(m.attachments[0].size, 12);
        assert!(m.attachments[0].content.is_none());
        assert!(m.attachments[0].refused.as_deref().unwrap().contains("over the email connector's cap of 8 bytes"));
        assert_eq!(m.attachments[1].filename, "small.csv");
        assert_eq!(m.attachments[1].content.as_ref().unwrap().0, b"a,b");
        assert!(m.attachments[1].refused.is_none());
    }

    #[test]
    fn empty_input_is_an_error() {
        assert_eq!(parse(b"", &ParseOptions::default()), Err(ParseError::Empty));
        assert_eq!(parse(b"\r\n\r\n", &ParseOptions::default()), Err(ParseError::Empty));
    }
}
