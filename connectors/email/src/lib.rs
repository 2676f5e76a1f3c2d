//! The email connector: IMAP in, SMTP out, on the connector SDK.
//!
//! * **Inbound** ([`imap`]): one watcher per configured account and folder publishes every new
//!   message as [`MessageReceived`](crm_connector::message::MessageReceived) (`email.message.received`),
//!   and bounces, delivery reports and read receipts as
//!   [`DeliveryStatus`] (`email.message.status`) for the original outbound message ([`parse`]).
//!   Its place in each folder (UIDVALIDITY, last UID) is recorded after the broker confirmed
//!   ([`state`]), so a restart neither loses nor repeats messages.
//! * **Outbound** ([`smtp`]): `email.message.send` ([`SendMessage`]) is sent over SMTP with the
//!   Message-ID `<crm.<entry id>@<domain>>`, copied to the Sent folder when configured, and
//!   answered with `DeliveryStatus` `sent` or `failed`. A redelivered command is answered from
//!   the record of what was sent, never sent twice.
//!
//! Inside `crm serve`: `crm_connector::spawn(Email::new(config)?, bus, token)`; as a process:
//! the `crm-connector-email` binary. Settings: [`EmailConfig`].

pub mod config;
pub mod imap;
pub mod parse;
pub mod smtp;
pub mod state;

pub use config::{DEFAULT_ATTACHMENT_CAP, EmailConfig, ImapAccount, Security, SmtpConfig};

use crm_connector::message::{Channel, DeliveryState, DeliveryStatus, SendMessage};
use crm_connector::{Command, Connector, HandlerError, Health, Hub, Outcome};
use imap::{FolderWatcher, WatchContext};
use parse::ParseOptions;
use smtp::{SendError, Sender};
use state::{SentRecord, StateDir};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long shutdown waits for the folder watchers to finish what they publish.
const WATCHER_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The connector.
#[derive(Debug)]
pub struct Email {
    config: EmailConfig,
    state: StateDir,
    sender: Option<Sender>,
    watchers: Mutex<Vec<JoinHandle<()>>>,
    /// The last failure (IMAP or SMTP), shown in heartbeats; cleared by the next success.
    last_error: Arc<Mutex<Option<String>>>,
}

impl Email {
    /// Checks `config`, opens (creating when missing) the state directory and prepares the SMTP
    /// transport. Connections are made in `init` (IMAP) and per message (SMTP).
    pub fn new(config: EmailConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let state = StateDir::open(&config.state_dir).map_err(|e| anyhow::anyhow!("state_dir {}: {e}", config.state_dir.display()))?;
        let sender = config.smtp.as_ref().map(Sender::new).transpose()?;
        Ok(Email { config, state, sender, watchers: Mutex::new(Vec::new()), last_error: Arc::new(Mutex::new(None)) })
    }

    /// The settings.
    pub fn config(&self) -> &EmailConfig {
        &self.config
    }

    fn note(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    async fn send(&self, command: Command<'_>) -> Result<Outcome, HandlerError> {
        let send: SendMessage = command.decode()?;
        if send.channel != Channel::Email {
            return Err(HandlerError::Permanent(format!("the email connector does not send on {}", send.channel.as_str())));
        }
        let status = |state: DeliveryState, message_id: Option<String>, reason: Option<String>| DeliveryStatus {
            channel: Channel::Email,
            entry_id: Some(send.entry_id),
            channel_message_id: message_id,
            status: state,
            reason,
            occurred_at: chrono::Utc::now(),
        };
        let store = self.state.clone();
        let entry_id = send.entry_id;
        let recorded = tokio::task::spawn_blocking(move || store.sent(entry_id))
            .await
            .map_err(HandlerError::transient)?
            .map_err(|e| HandlerError::Transient(format!("reading the sent record: {e}")))?;
        if let Some(record) = recorded {
            tracing::info!(entry_id = %send.entry_id, message_id = %record.message_id, "already sent: answering sent again");
            return Ok(Outcome::event(command.event(&status(DeliveryState::Sent, Some(record.message_id), None))));
        }
        let Some(sender) = &self.sender else {
            let reason = "no SMTP server is configured for the email connector".to_owned();
            tracing::warn!(entry_id = %send.entry_id, "{reason}");
            return Ok(Outcome::event(command.event(&status(DeliveryState::Failed, None, Some(reason)))));
        };
        let outgoing = match sender.build(&send, &self.config.domain) {
            Ok(outgoing) => outgoing,
            Err(err) => {
                tracing::warn!(entry_id = %send.entry_id, reason = %err, "not sendable");
                return Ok(Outcome::event(command.event(&status(DeliveryState::Failed, None, Some(err.to_string())))));
            }
        };
        match sender.send(&outgoing).await {
            Ok(reply) => {
                self.note(None);
                let record = SentRecord { message_id: outgoing.message_id.clone(), reply: reply.clone(), sent_at: chrono::Utc::now() };
                let store = self.state.clone();
                if let Err(err) =
                    tokio::task::spawn_blocking(move || store.record_sent(entry_id, &record)).await.map_err(std::io::Error::other).flatten()
                {
                    // Sent all the same: report it; a redelivery would send again (at least once).
                    tracing::error!(entry_id = %send.entry_id, error = %err, "cannot record the sent message");
                }
                tracing::info!(entry_id = %send.entry_id, message_id = %outgoing.message_id, reply = %reply, "sent");
                self.copy_to_sent(&outgoing.raw).await;
                Ok(Outcome::event(command.event(&status(DeliveryState::Sent, Some(outgoing.message_id), None))))
            }
            Err(SendError::Permanent(reason)) => {
                tracing::warn!(entry_id = %send.entry_id, reason = %reason, "refused by the SMTP server");
                Ok(Outcome::event(command.event(&status(DeliveryState::Failed, Some(outgoing.message_id), Some(reason)))))
            }
            Err(SendError::Transient(reason)) => {
                self.note(Some(format!("SMTP: {reason}")));
                tracing::warn!(entry_id = %send.entry_id, reason = %reason, attempt = command.attempt(), "not sent yet; will retry");
                Err(HandlerError::Transient(reason))
            }
        }
    }

    /// Appends a copy of a sent message to the Sent folder, when configured. A failure is
    /// logged: the message is sent, which is what counts.
    async fn copy_to_sent(&self, raw: &[u8]) {
        let Some(smtp) = &self.config.smtp else { return };
        let Some(folder) = &smtp.sent_folder else { return };
        let account = match &smtp.sent_account {
            Some(name) => self.config.accounts.iter().find(|a| &a.name == name),
            None => self.config.accounts.first(),
        };
        let Some(account) = account else { return };
        if let Err(err) = imap::append(account, folder, raw).await {
            tracing::warn!(account = %account.name, folder = %folder, error = %format!("{err:#}"), "cannot copy the sent message to the Sent folder");
        }
    }
}

impl Connector for Email {
    type Config = EmailConfig;
    const NAME: &'static str = "email";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CHANNEL: Channel = Channel::Email;

    fn bindings(&self) -> Vec<String> {
        vec!["email.message.send".into()]
    }

    async fn init(&self, hub: &Hub) -> anyhow::Result<()> {
        let context = WatchContext {
            hub: hub.clone(),
            state: self.state.clone(),
            parse: ParseOptions { attachment_cap: self.config.attachment_cap_bytes, received_at: None },
            max_message_bytes: self.config.max_message_bytes,
            fetch_batch: self.config.fetch_batch,
            publish_batch: self.config.publish_batch,
            last_error: self.last_error.clone(),
        };
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        for account in &self.config.accounts {
            for folder in &account.folders {
                let watcher = FolderWatcher::new(account.clone(), folder.clone(), context.clone());
                watchers.push(tokio::spawn(watcher.run()));
            }
        }
        tracing::info!(
            folders = watchers.len(),
            smtp = self.sender.is_some(),
            domain = %self.config.domain,
            state_dir = %self.state.path().display(),
            "email connector started"
        );
        Ok(())
    }

    async fn health(&self) -> Health {
        match self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(error) => Health::degraded(error),
            None => Health::ready(),
        }
    }

    async fn handle(&self, command: Command<'_>) -> Result<Outcome, HandlerError> {
        if command.is::<SendMessage>() { self.send(command).await } else { Err(command.unsupported()) }
    }

    async fn shutdown(&self) {
        let watchers: Vec<JoinHandle<()>> = std::mem::take(&mut *self.watchers.lock().unwrap_or_else(|p| p.into_inner()));
        for mut watcher in watchers {
            if tokio::time::timeout(WATCHER_STOP_TIMEOUT, &mut watcher).await.is_err() {
                tracing::warn!("a folder watcher did not stop in time; abandoning it (its place is kept at the last confirmed message)");
                watcher.abort();
            }
        }
    }
}
