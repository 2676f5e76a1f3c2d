//! Outbound: a [`SendMessage`] command becomes an RFC 5322 message (lettre) sent over SMTP.
//!
//! * Message-ID `<crm.<entry id>@<domain>>`, so replies name the log entry; In-Reply-To and
//!   References (the conversation's ids, then the message answered) for replies.
//! * Text body, text + HTML alternative when `body_html` is given, attachments as
//!   `multipart/mixed`.
//! * The SMTP server's answer decides: accepted → `sent`; a 5xx refusal → `failed` with the
//!   reply; anything else (4xx, connection, timeout, TLS) → [`SendError::Transient`], so the
//!   command is retried with backoff.

use crate::config::{Security, SmtpConfig};
use crm_connector::message::{Address, SendMessage, entry_message_id};
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use secrecy::ExposeSecret as _;
use std::time::Duration;

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Might work later: retry.
    #[error("{0}")]
    Transient(String),
    /// Will never work: the reason (an SMTP 5xx reply, an invalid address).
    #[error("{0}")]
    Permanent(String),
}

/// A message ready to send: its id, envelope and bytes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Its Message-ID.
    pub message_id: String,
    /// The SMTP envelope.
    pub envelope: lettre::address::Envelope,
    /// The formatted message (what is sent, and what the Sent folder gets).
    pub raw: Vec<u8>,
}

/// The SMTP side: a transport and the sender address.
#[derive(Clone)]
pub struct Sender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
    port: u16,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("host", &self.host).field("port", &self.port).field("from", &self.from.to_string()).finish()
    }
}

impl Sender {
    /// A sender for `config` (validated).
    pub fn new(config: &SmtpConfig) -> anyhow::Result<Self> {
        let from: Mailbox = config.from.parse().map_err(|e| anyhow::anyhow!("smtp.from '{}': {e}", config.from))?;
        let parameters = || -> anyhow::Result<TlsParameters> {
            let mut builder = TlsParameters::builder(config.host.clone());
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("smtp.ca_file {}: {e}", path.display()))?;
                builder = builder.add_root_certificate(lettre::transport::smtp::client::Certificate::from_pem(&pem)?);
            }
            Ok(builder.build_rustls()?)
        };
        let tls = match config.security {
            Security::Plain => Tls::None,
            Security::Tls => Tls::Wrapper(parameters()?),
            Security::Starttls => Tls::Required(parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.clone())
            .port(config.port())
            .tls(tls)
            .timeout(Some(Duration::from_secs(config.timeout_seconds.max(1))));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.expose_secret().to_owned()));
        }
        Ok(Sender { transport: builder.build(), from, host: config.host.clone(), port: config.port() })
    }

    /// Builds the message for `send` with our Message-ID under `domain`.
    pub fn build(&self, send: &SendMessage, domain: &str) -> Result<Outgoing, SendError> {
        build(&self.from, send, domain)
    }

    /// Sends `outgoing`; returns the server's reply.
    pub async fn send(&self, outgoing: &Outgoing) -> Result<String, SendError> {
        match self.transport.send_raw(&outgoing.envelope, &outgoing.raw).await {
            Ok(response) => Ok(format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" ")).trim().to_owned()),
            Err(err) if err.is_permanent() => Err(SendError::Permanent(format!("refused by {}: {}", self.host, error_text(&err)))),
            Err(err) => Err(SendError::Transient(format!("{}:{}: {}", self.host, self.port, error_text(&err)))),
        }
    }
}

/// The error with its causes.
fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn mailbox(address: &Address) -> Result<Mailbox, SendError> {
    let email = address.value.trim().parse().map_err(|e| SendError::Permanent(format!("invalid recipient '{}': {e}", address.value)))?;
    Ok(Mailbox::new(address.name.clone().filter(|n| !n.trim().is_empty()), email))
}

fn build(from: &Mailbox, send: &SendMessage, domain: &str) -> Result<Outgoing, SendError> {
    if send.to.is_empty() {
        return Err(SendError::Permanent("the message has no recipient".into()));
    }
    let message_id = entry_message_id(send.entry_id, domain);
    let mut builder = lettre::Message::builder().from(from.clone()).message_id(Some(message_id.clone())).date_now();
    for to in &send.to {
        builder = builder.to(mailbox(to)?);
    }
    for cc in &send.cc {
        builder = builder.cc(mailbox(cc)?);
    }
    if let Some(subject) = &send.subject {
        builder = builder.subject(subject.clone());
    }
    let clean = |id: &String| crate::parse::bracketed(id);
    let in_reply_to = send.in_reply_to.as_ref().and_then(clean);
    if let Some(parent) = &in_reply_to {
        builder = builder.in_reply_to(parent.clone());
    }
    let mut references: Vec<String> = send.references.iter().filter_map(clean).collect();
    if let Some(parent) = &in_reply_to
        && !references.contains(parent)
    {
        references.push(parent.clone());
    }
    if !references.is_empty() {
        builder = builder.references(references.join(" "));
    }
    let text = match &send.body_html {
        Some(html) => Body::Multi(MultiPart::alternative_plain_html(send.body.clone(), html.clone())),
        None => Body::Single(SinglePart::plain(send.body.clone())),
    };
    let message = if send.attachments.is_empty() {
        match text {
            Body::Single(part) => builder.singlepart(part),
            Body::Multi(part) => builder.multipart(part),
        }
    } else {
        let mut mixed = match text {
            Body::Single(part) => MultiPart::mixed().singlepart(part),
            Body::Multi(part) => MultiPart::mixed().multipart(part),
        };
        for attachment in &send.attachments {
            let content_type = ContentType::parse(&attachment.mime_type)
                .or_else(|_| ContentType::parse("application/octet-stream"))
                .map_err(|e| SendError::Permanent(format!("attachment '{}': {e}", attachment.filename)))?;
            mixed = mixed.singlepart(Attachment::new(attachment.filename.clone()).body(attachment.content.0.clone(), content_type));
        }
        builder.multipart(mixed)
    }
    .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))?;
    Ok(Outgoing { message_id, envelope: message.envelope().clone(), raw: message.formatted() })
}

enum Body {
    Single(SinglePart),
    Multi(MultiPart),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_connector::message::{Bytes, Channel, OutboundAttachment};

    fn send() -> SendMessage {
        SendMessage {
            entry_id: uuid::Uuid::now_v7(),
            channel: Channel::Email,
            to: vec![Address::email("maria@example.gr", Some("Μαρία Κ.".into()))],
            cc: vec![],
            subject: Some("Re: Προσφορά".into()),
            body: "Καλημέρα,\nη προσφορά επισυνάπτεται.".into(),
            body_html: None,
            in_reply_to: Some("<q1@example.gr>".into()),
            references: vec!["<q0@example.gr>".into()],
            attachments: vec![OutboundAttachment {
                filename: "προσφορά.pdf".into(),
                mime_type: "application/pdf".into(),
                content: Bytes(b"%PDF-1.4".to_vec()),
            }],
        }
    }

    #[test]
    fn a_reply_is_threaded_and_reads_back() {
        let from: Mailbox = "Bells <sales@bells.example>".parse().unwrap();
        let send = send();
        let outgoing = build(&from, &send, "bells.example").unwrap();
        assert_eq!(outgoing.message_id, format!("<crm.{}@bells.example>", send.entry_id));
        let crate::parse::Inbound::Message(back) = crate::parse::parse(&outgoing.raw, &Default::default()).unwrap() else { panic!() };
        assert_eq!(back.channel_message_id, outgoing.message_id);
        assert_eq!(back.in_reply_to.as_deref(), Some("<q1@example.gr>"));
        assert_eq!(back.references, vec!["<q0@example.gr>".to_owned(), "<q1@example.gr>".to_owned()]);
        assert_eq!(back.subject.as_deref(), Some("Re: Προσφορά"));
        assert_eq!(back.body, "Καλημέρα,\nη προσφορά επισυνάπτεται.");
        assert_eq!(back.to, vec![Address::email("maria@example.gr", Some("Μαρία Κ.".into()))]);
        assert_eq!(back.attachments.len(), 1);
        assert_eq!(back.attachments[0].filename, "προσφορά.pdf");
        assert_eq!(back.attachments[0].content.as_ref().unwrap().0, b"%PDF-1.4");
    }

    #[test]
    fn bad_recipients_are_permanent() {
        let from: Mailbox = "sales@bells.example".parse().unwrap();
        let mut bad = send();
        bad.to = vec![Address::email("not an address", None)];
        assert!(matches!(build(&from, &bad, "bells.example"), Err(SendError::Permanent(r)) if r.contains("invalid recipient")));
        bad.to.clear();
        assert!(matches!(build(&from, &bad, "bells.example"), Err(SendError::Permanent(_))));
    }
}
