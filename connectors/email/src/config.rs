//! The connector's settings ([`EmailConfig`]): the mailboxes to watch (IMAP accounts and their
//! folders), the SMTP server to send through, the domain of our Message-IDs, the state directory
//! and the attachment cap. As a process they come from the TOML file (`[[accounts]]`,
//! `[smtp]`) or `CRM_CONNECTOR_EMAIL_<KEY>` (`__` for nesting: `CRM_CONNECTOR_EMAIL_SMTP__HOST`);
//! inside `crm serve` the core fills the struct. Passwords are [`SecretString`]s.

use anyhow::{bail, ensure};
use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The default cap on an attachment carried in an event: 25 MiB.
pub const DEFAULT_ATTACHMENT_CAP: u64 = 25 * 1024 * 1024;

/// How a connection to a mail server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    #[default]
    Tls,
    /// Plain first, then STARTTLS, required (IMAP 143, SMTP submission 587).
    Starttls,
    /// No encryption at all: refused unless `allow_plaintext` is set (loopback tests).
    Plain,
}

/// One IMAP account and the folders watched in it.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImapAccount {
    /// A short name, unique among the accounts: names its state files and logs.
    pub name: String,
    /// Server host name.
    pub host: String,
    /// Port; default 993 for `tls`, 143 otherwise.
    pub port: Option<u16>,
    /// How the connection is secured.
    pub security: Security,
    /// Allow `security = "plain"`.
    pub allow_plaintext: bool,
    /// Extra trusted root certificates (PEM), for a server with a private CA; the public web
    /// roots are always trusted.
    pub ca_file: Option<PathBuf>,
    /// Login name.
    pub username: String,
    /// Password.
    pub password: Option<SecretString>,
    /// Folders watched (one connection each).
    pub folders: Vec<String>,
    /// Use IMAP IDLE when the server offers it (otherwise poll).
    pub idle: bool,
    /// Seconds between polls when IDLE is off or unsupported.
    pub poll_interval_seconds: u64,
    /// Seconds an IDLE lasts before it is renewed (servers drop idle clients after 30 minutes).
    pub idle_renew_seconds: u64,
}

impl Default for ImapAccount {
    fn default() -> Self {
        ImapAccount {
            name: "default".into(),
            host: String::new(),
            port: None,
            security: Security::Tls,
            allow_plaintext: false,
            ca_file: None,
            username: String::new(),
            password: None,
            folders: vec!["INBOX".into()],
            idle: true,
            poll_interval_seconds: 60,
            idle_renew_seconds: 20 * 60,
        }
    }
}

impl std::fmt::Debug for ImapAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapAccount")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port())
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("folders", &self.folders)
            .field("idle", &self.idle)
            .field("poll_interval_seconds", &self.poll_interval_seconds)
            .finish_non_exhaustive()
    }
}

impl ImapAccount {
    /// The port, with the default for the security mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.security == Security::Tls { 993 } else { 143 })
    }

    /// Time between polls.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_seconds.max(1))
    }

    /// Time an IDLE lasts before renewal.
    pub fn idle_renew(&self) -> Duration {
        Duration::from_secs(self.idle_renew_seconds.max(1))
    }
}

/// The SMTP server outbound mail goes through.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server host name.
    pub host: String,
    /// Port; default 465 for `tls`, 587 for `starttls`, 25 for `plain`.
    pub port: Option<u16>,
    /// How the connection is secured.
    pub security: Security,
    /// Allow `security = "plain"`.
    pub allow_plaintext: bool,
    /// Extra trusted root certificates (PEM), as for IMAP.
    pub ca_file: Option<PathBuf>,
    /// Login name (AUTH), when the server wants one.
    pub username: Option<String>,
    /// Password for AUTH.
    pub password: Option<SecretString>,
    /// The sender: `Bells Ltd <sales@bells.example>`.
    pub from: String,
    /// Seconds a conversation with the server may take.
    pub timeout_seconds: u64,
    /// IMAP account (by name) whose `sent_folder` gets a copy of what is sent; default the first.
    pub sent_account: Option<String>,
    /// Folder a copy of every sent message is appended to (`Sent`); none when absent.
    pub sent_folder: Option<String>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: String::new(),
            port: None,
            security: Security::Tls,
            allow_plaintext: false,
            ca_file: None,
            username: None,
            password: None,
            from: String::new(),
            timeout_seconds: 60,
            sent_account: None,
            sent_folder: None,
        }
    }
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port())
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("from", &self.from)
            .field("sent_folder", &self.sent_folder)
            .finish_non_exhaustive()
    }
}

impl SmtpConfig {
    /// The port, with the default for the security mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            Security::Tls => 465,
            Security::Starttls => 587,
            Security::Plain => 25,
        })
    }
}

/// The connector's settings. (Unknown top-level keys are not refused: the SDK's common settings
/// share the file and the environment.)
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EmailConfig {
    /// The domain of our Message-IDs (`<crm.<entry id>@domain>`).
    pub domain: String,
    /// Where the connector remembers its place in each folder and the messages it sent.
    pub state_dir: PathBuf,
    /// Attachments up to this many bytes travel in events; larger ones are listed as refused.
    pub attachment_cap_bytes: u64,
    /// Messages over this size are read by their headers only (body replaced by a note).
    pub max_message_bytes: u64,
    /// Messages fetched from the server per round trip.
    pub fetch_batch: u32,
    /// Messages published together (one broker confirmation, one state write). After a crash at
    /// most this many are published again: 1 (the default) means only the one in flight;
    /// larger batches are faster (see the README's figures).
    pub publish_batch: usize,
    /// IMAP accounts watched for inbound mail (none: outbound only).
    pub accounts: Vec<ImapAccount>,
    /// The SMTP server (none: inbound only; send commands then fail for good).
    pub smtp: Option<SmtpConfig>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            domain: String::new(),
            state_dir: PathBuf::from("./data/email"),
            attachment_cap_bytes: DEFAULT_ATTACHMENT_CAP,
            max_message_bytes: 64 * 1024 * 1024,
            fetch_batch: 100,
            publish_batch: 1,
            accounts: Vec::new(),
            smtp: None,
        }
    }
}

impl EmailConfig {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.domain.is_empty() || self.domain.contains(['<', '>', '@', ' ']) {
            bail!("domain (of our Message-IDs) must be a host name such as bells.example");
        }
        ensure!(!self.state_dir.as_os_str().is_empty(), "state_dir must not be empty");
        ensure!(self.attachment_cap_bytes > 0, "attachment_cap_bytes must be at least 1");
        ensure!(self.max_message_bytes > 0, "max_message_bytes must be at least 1");
        ensure!(self.fetch_batch > 0, "fetch_batch must be at least 1");
        ensure!(self.publish_batch > 0, "publish_batch must be at least 1");
        let mut names = std::collections::HashSet::new();
        for account in &self.accounts {
            ensure!(
                !account.name.is_empty() && account.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "account names must be ASCII letters, digits, '-' or '_' (got '{}')",
                account.name
            );
            ensure!(names.insert(account.name.as_str()), "account name '{}' is used twice", account.name);
            ensure!(!account.host.is_empty(), "account '{}': host is required", account.name);
            ensure!(!account.username.is_empty(), "account '{}': username is required", account.name);
            ensure!(account.password.is_some(), "account '{}': password is required", account.name);
            ensure!(!account.folders.is_empty(), "account '{}': folders must not be empty", account.name);
            ensure!(
                account.security != Security::Plain || account.allow_plaintext,
                "account '{}': security = \"plain\" sends the password in clear; set allow_plaintext = true to allow it",
                account.name
            );
        }
        if let Some(smtp) = &self.smtp {
            ensure!(!smtp.host.is_empty(), "smtp.host is required");
            ensure!(!smtp.from.is_empty(), "smtp.from is required (Name <address>)");
            ensure!(smtp.from.parse::<lettre::message::Mailbox>().is_ok(), "smtp.from '{}' is not an address", smtp.from);
            ensure!(
                smtp.security != Security::Plain || smtp.allow_plaintext,
                "smtp: security = \"plain\" is unencrypted; set allow_plaintext = true to allow it"
            );
            ensure!(smtp.username.is_some() == smtp.password.is_some(), "smtp: username and password go together");
            if let Some(account) = &smtp.sent_account {
                ensure!(self.accounts.iter().any(|a| &a.name == account), "smtp.sent_account '{account}' is not an account");
            }
            ensure!(smtp.sent_folder.is_none() || !self.accounts.is_empty(), "smtp.sent_folder needs an IMAP account");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> ImapAccount {
        ImapAccount {
            name: "sales".into(),
            host: "imap.example".into(),
            username: "sales".into(),
            password: Some("hunter2".to_owned().into()),
            ..ImapAccount::default()
        }
    }

    #[test]
    fn validation_and_redaction() {
        let mut config = EmailConfig { domain: "bells.example".into(), accounts: vec![account()], ..EmailConfig::default() };
        config.validate().unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        config.accounts[0].security = Security::Plain;
        assert!(config.validate().unwrap_err().to_string().contains("allow_plaintext"));
        config.accounts[0].allow_plaintext = true;
        config.validate().unwrap();
        config.accounts.push(account());
        assert!(config.validate().unwrap_err().to_string().contains("twice"));
        config.accounts.pop();
        config.smtp = Some(SmtpConfig { host: "smtp.example".into(), from: "not an address".into(), ..SmtpConfig::default() });
        assert!(config.validate().unwrap_err().to_string().contains("not an address"));
        config.smtp = Some(SmtpConfig { host: "smtp.example".into(), from: "Bells <sales@bells.example>".into(), ..SmtpConfig::default() });
        config.validate().unwrap();
        assert!(EmailConfig::default().validate().is_err(), "a domain is required");
        assert_eq!(account().port(), 993);
    }
}
