//! IMAP: connecting (implicit TLS, STARTTLS, or plain when allowed) and watching one folder.
//!
//! A [`FolderWatcher`] keeps one connection to its folder. Each round it asks for the UIDs above
//! the last one published, fetches those messages in batches (`BODY.PEEK[]`, so nothing is
//! marked read), parses them, publishes the events with broker confirmation and only then
//! records the new last UID ([`crate::state`]). Between rounds it waits with IDLE when the server
//! offers it (renewed every `idle_renew_seconds`), or sleeps `poll_interval_seconds`. A lost
//! connection or a failed login is retried with exponential backoff (1 s doubling to 60 s); a
//! changed UIDVALIDITY restarts the folder from UID 1.

use crate::config::{ImapAccount, Security};
use crate::parse::{self, Inbound, ParseOptions};
use crate::state::{FolderState, StateDir};
use anyhow::{Context as _, anyhow, bail};
use async_imap::extensions::idle::IdleResponse;
use chrono::Utc;
use crm_connector::message::Channel;
use crm_connector::{Envelope, Hub, Trace};
use futures::TryStreamExt as _;
use secrecy::ExposeSecret as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Time allowed to open a connection and log in.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one command (a fetch of a batch included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// A connection to an IMAP server, plain or TLS.
#[derive(Debug)]
pub struct ImapStream {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for ImapStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ImapStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.inner {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A logged-in IMAP session.
pub type Session = async_imap::Session<ImapStream>;

/// The public web roots, plus the certificates in `ca_file` (PEM) when given.
pub fn root_store(ca_file: Option<&std::path::Path>) -> anyhow::Result<tokio_rustls::rustls::RootCertStore> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    let mut roots = tokio_rustls::rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).with_context(|| format!("ca_file {}", path.display()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.with_context(|| format!("ca_file {}", path.display()))?)?;
            added += 1;
        }
        anyhow::ensure!(added > 0, "ca_file {} holds no certificate", path.display());
    }
    Ok(roots)
}

fn tls_connector(ca_file: Option<&std::path::Path>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_file)?)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn tls(account: &ImapAccount, tcp: TcpStream) -> anyhow::Result<ImapStream> {
    let host = &account.host;
    let name =
        tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned()).with_context(|| format!("'{host}' is not a host name"))?;
    let stream = tls_connector(account.ca_file.as_deref())?.connect(name, tcp).await.with_context(|| format!("TLS with {host}"))?;
    Ok(ImapStream { inner: Inner::Tls(Box::new(stream)) })
}

/// Opens a connection to `account`'s server and logs in.
pub async fn connect(account: &ImapAccount) -> anyhow::Result<Session> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(account))
        .await
        .map_err(|_| anyhow!("no answer from {}:{} within {CONNECT_TIMEOUT:?}", account.host, account.port()))?
}

async fn connect_inner(account: &ImapAccount) -> anyhow::Result<Session> {
    let address = (account.host.as_str(), account.port());
    let tcp = TcpStream::connect(address).await.with_context(|| format!("cannot connect to {}:{}", account.host, account.port()))?;
    tcp.set_nodelay(true).ok();
    let (mut client, greeted) = match account.security {
        Security::Plain => (async_imap::Client::new(ImapStream { inner: Inner::Plain(tcp) }), false),
        Security::Tls => (async_imap::Client::new(tls(account, tcp).await?), false),
        Security::Starttls => {
            let mut plain = async_imap::Client::new(ImapStream { inner: Inner::Plain(tcp) });
            plain.read_response().await?.context("the server closed the connection before its greeting")?;
            plain.run_command_and_check_ok("STARTTLS", None).await.context("STARTTLS refused")?;
            let Inner::Plain(tcp) = plain.into_inner().inner else { bail!("STARTTLS on a TLS connection") };
            // No second greeting after STARTTLS.
            (async_imap::Client::new(tls(account, tcp).await?), true)
        }
    };
    if !greeted {
        client.read_response().await?.context("the server closed the connection before its greeting")?;
    }
    let password = account.password.as_ref().map(|p| p.expose_secret().to_owned()).unwrap_or_default();
    client.login(&account.username, &password).await.map_err(|(err, _)| anyhow!("login as {} refused: {err}", account.username))
}

/// Everything a watcher needs besides its folder.
#[derive(Debug, Clone)]
pub struct WatchContext {
    /// The hub (publisher, shutdown, sources).
    pub hub: Hub,
    /// The state directory.
    pub state: StateDir,
    /// Parsing options (attachment cap).
    pub parse: ParseOptions,
    /// Messages over this size are read by their headers only.
    pub max_message_bytes: u64,
    /// Messages fetched per round trip.
    pub fetch_batch: u32,
    /// Messages whose events are published together.
    pub publish_batch: usize,
    /// The last error of any watcher, shown in heartbeats; cleared by the next success.
    pub last_error: Arc<Mutex<Option<String>>>,
}

/// Watches one folder of one account until shutdown.
#[derive(Debug)]
pub struct FolderWatcher {
    account: ImapAccount,
    folder: String,
    context: WatchContext,
}

/// How a round ended.
enum Wait {
    /// Look again now.
    Again,
    /// Shut down.
    Stop,
}

impl FolderWatcher {
    /// A watcher of `folder` in `account`.
    pub fn new(account: ImapAccount, folder: String, context: WatchContext) -> Self {
        FolderWatcher { account, folder, context }
    }

    fn note(&self, error: Option<String>) {
        *self.context.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// Runs until the hub's shutdown fires.
    pub async fn run(self) {
        let shutdown = self.context.hub.shutdown().clone();
        let mut failures = 0u32;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let result = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                session = connect(&self.account) => session,
            };
            let error = match result {
                Ok(session) => {
                    tracing::info!(account = %self.account.name, folder = %self.folder, "connected");
                    match self.watch(session, &mut failures).await {
                        Ok(()) => return,
                        Err(err) => err,
                    }
                }
                Err(err) => err,
            };
            failures += 1;
            let delay = Duration::from_secs(1u64 << failures.min(6).saturating_sub(1)).min(Duration::from_secs(60));
            let reason = format!("{}/{}: {error:#}", self.account.name, self.folder);
            tracing::warn!(account = %self.account.name, folder = %self.folder, error = %format!("{error:#}"), retry_in_ms = delay.as_millis() as u64, "IMAP failed; reconnecting");
            self.note(Some(reason));
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Catches up and waits for more until shutdown (`Ok`) or a failure (`Err`: reconnect).
    async fn watch(&self, mut session: Session, failures: &mut u32) -> anyhow::Result<()> {
        let shutdown = self.context.hub.shutdown().clone();
        let capabilities = command(session.capabilities()).await?;
        let idle = self.account.idle && capabilities.has_str("IDLE");
        let mailbox = command(session.select(&self.folder)).await.with_context(|| format!("cannot select '{}'", self.folder))?;
        let uid_validity = mailbox.uid_validity.context("the server gave no UIDVALIDITY")?;
        let mut state = self.load(uid_validity).await?;
        tracing::info!(account = %self.account.name, folder = %self.folder, uid_validity, last_uid = state.last_uid, idle, "watching");
        loop {
            drain_unsolicited(&session);
            state = self.catch_up(&mut session, state).await?;
            *failures = 0;
            self.note(None);
            if shutdown.is_cancelled() {
                let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
                return Ok(());
            }
            let (next, wait) = if idle { self.idle(session).await? } else { self.poll(session).await? };
            session = next;
            if let Wait::Stop = wait {
                let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
                return Ok(());
            }
            // A changed UIDVALIDITY (folder recreated) shows on a fresh SELECT.
            let mailbox = command(session.select(&self.folder)).await?;
            let current = mailbox.uid_validity.context("the server gave no UIDVALIDITY")?;
            if current != state.uid_validity {
                state = self.load(current).await?;
            }
        }
    }

    /// The recorded state, or a fresh one when the folder is new or its UIDVALIDITY changed.
    async fn load(&self, uid_validity: u32) -> anyhow::Result<FolderState> {
        let (store, account, folder) = (self.context.state.clone(), self.account.name.clone(), self.folder.clone());
        let recorded = tokio::task::spawn_blocking(move || store.folder(&account, &folder)).await??;
        Ok(match recorded {
            Some(state) if state.uid_validity == uid_validity => state,
            Some(state) => {
                tracing::warn!(
                    account = %self.account.name, folder = %self.folder, old = state.uid_validity, new = uid_validity,
                    "UIDVALIDITY changed: reading the folder again from the start (the core deduplicates by Message-ID)"
                );
                FolderState { uid_validity, last_uid: 0 }
            }
            None => FolderState { uid_validity, last_uid: 0 },
        })
    }

    async fn save(&self, state: FolderState) -> anyhow::Result<()> {
        let (store, account, folder) = (self.context.state.clone(), self.account.name.clone(), self.folder.clone());
        tokio::task::spawn_blocking(move || store.save_folder(&account, &folder, state)).await??;
        Ok(())
    }

    /// Publishes every message above `state.last_uid`; returns the new state.
    async fn catch_up(&self, session: &mut Session, mut state: FolderState) -> anyhow::Result<FolderState> {
        let listing: Vec<async_imap::types::Fetch> =
            command(async { session.uid_fetch(format!("{}:*", state.last_uid + 1), "(UID RFC822.SIZE)").await?.try_collect().await })
                .await?;
        let mut new: Vec<(u32, u64)> = listing
            .iter()
            .filter_map(|f| f.uid.map(|uid| (uid, u64::from(f.size.unwrap_or(0)))))
            .filter(|(uid, _)| *uid > state.last_uid)
            .collect();
        new.sort_unstable();
        new.dedup_by_key(|(uid, _)| *uid);
        if new.is_empty() {
            return Ok(state);
        }
        tracing::debug!(account = %self.account.name, folder = %self.folder, count = new.len(), "new messages");
        for chunk in new.chunks(self.context.fetch_batch as usize) {
            let small: Vec<u32> = chunk.iter().filter(|(_, size)| *size <= self.context.max_message_bytes).map(|(uid, _)| *uid).collect();
            let large: Vec<(u32, u64)> = chunk.iter().filter(|(_, size)| *size > self.context.max_message_bytes).copied().collect();
            let mut fetched: Vec<(u32, Vec<Inbound>)> = Vec::with_capacity(chunk.len());
            if !small.is_empty() {
                let set = uid_set(small.iter().copied());
                let items: Vec<async_imap::types::Fetch> =
                    command(async { session.uid_fetch(&set, "(UID INTERNALDATE BODY.PEEK[])").await?.try_collect().await }).await?;
                for item in &items {
                    let Some(uid) = item.uid else { continue };
                    fetched.push((uid, self.parse(uid, item.body().unwrap_or_default(), item, None)));
                }
            }
            for (uid, size) in large {
                let items: Vec<async_imap::types::Fetch> = command(async {
                    session.uid_fetch(uid.to_string(), "(UID INTERNALDATE BODY.PEEK[HEADER])").await?.try_collect().await
                })
                .await?;
                for item in items.iter().filter(|f| f.uid == Some(uid)) {
                    let note = format!(
                        "(the message is {size} bytes, over the connector's cap of {} bytes: only its headers were read)",
                        self.context.max_message_bytes
                    );
                    fetched.push((uid, self.parse(uid, item.header().unwrap_or_default(), item, Some(note))));
                }
            }
            fetched.sort_by_key(|(uid, _)| *uid);
            // A UID listed but not fetched (expunged meanwhile) is passed over.
            let last_of_chunk = chunk.last().map(|(uid, _)| *uid).unwrap_or(state.last_uid);
            let mut batch: Vec<Envelope> = Vec::new();
            let mut messages = 0usize;
            let mut pending = fetched.into_iter().peekable();
            while let Some((uid, events)) = pending.next() {
                batch.extend(events.iter().flat_map(|e| self.envelopes(e)));
                messages += 1;
                if messages >= self.context.publish_batch || pending.peek().is_none() {
                    self.publish(&batch).await?;
                    batch.clear();
                    messages = 0;
                    state.last_uid = uid;
                    self.save(state).await?;
                    if self.context.hub.shutdown().is_cancelled() {
                        // Stop between batches: the place is recorded, the rest comes next run.
                        return Ok(state);
                    }
                }
            }
            if state.last_uid < last_of_chunk {
                state.last_uid = last_of_chunk;
                self.save(state).await?;
            }
        }
        Ok(state)
    }

    fn parse(&self, uid: u32, raw: &[u8], item: &async_imap::types::Fetch, note: Option<String>) -> Vec<Inbound> {
        let options = ParseOptions { received_at: item.internal_date().map(|d| d.with_timezone(&Utc)), ..self.context.parse.clone() };
        match parse::parse(raw, &options) {
            Ok(Inbound::Message(mut message)) => {
                if let Some(note) = note {
                    message.body = note;
                    message.attachments.clear();
                }
                vec![Inbound::Message(message)]
            }
            Ok(reports) => vec![reports],
            Err(err) => {
                tracing::error!(account = %self.account.name, folder = %self.folder, uid, error = %err, "unreadable message passed over");
                self.note(Some(format!("{}/{} UID {uid}: {err}", self.account.name, self.folder)));
                Vec::new()
            }
        }
    }

    fn envelopes(&self, inbound: &Inbound) -> Vec<Envelope> {
        let hub = &self.context.hub;
        match inbound {
            Inbound::Message(message) => vec![hub.event(message.as_ref(), Trace::new(message.channel_message_id.clone()))],
            Inbound::Reports(reports) => reports
                .iter()
                .map(|r| hub.event(r, Trace::new(r.channel_message_id.clone().unwrap_or_else(|| Channel::Email.as_str().to_owned()))))
                .collect(),
        }
    }

    async fn publish(&self, envelopes: &[Envelope]) -> anyhow::Result<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        self.context.hub.publisher().publish_all(envelopes).await.context("publishing")?;
        tracing::debug!(account = %self.account.name, folder = %self.folder, count = envelopes.len(), "published");
        Ok(())
    }

    /// IDLE until the server reports a change, the renewal time passes, or shutdown.
    async fn idle(&self, session: Session) -> anyhow::Result<(Session, Wait)> {
        let shutdown = self.context.hub.shutdown().clone();
        let mut handle = session.idle();
        command(handle.init()).await.context("IDLE")?;
        let (wait, stop) = handle.wait_with_timeout(self.account.idle_renew());
        let outcome = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                drop(stop);
                None
            }
            response = wait => Some(response),
        };
        let outcome = match outcome {
            None => Wait::Stop,
            Some(Ok(IdleResponse::NewData(_) | IdleResponse::Timeout | IdleResponse::ManualInterrupt)) => Wait::Again,
            Some(Err(err)) => return Err(anyhow::Error::new(err).context("IDLE")),
        };
        let session = command(handle.done()).await.context("ending IDLE")?;
        Ok((session, outcome))
    }

    /// Sleeps a poll interval (or until shutdown), then pings the server.
    async fn poll(&self, mut session: Session) -> anyhow::Result<(Session, Wait)> {
        let shutdown = self.context.hub.shutdown().clone();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok((session, Wait::Stop)),
            () = tokio::time::sleep(self.account.poll_interval()) => {}
        }
        command(session.noop()).await?;
        Ok((session, Wait::Again))
    }
}

/// Runs an IMAP command with [`COMMAND_TIMEOUT`].
async fn command<T>(future: impl Future<Output = async_imap::error::Result<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, future).await {
        Ok(result) => result.map_err(anyhow::Error::new),
        Err(_) => bail!("no answer within {COMMAND_TIMEOUT:?}"),
    }
}

/// Unsolicited responses are not needed (every round looks again); keep the channel empty.
fn drain_unsolicited(session: &Session) {
    while session.unsolicited_responses.try_recv().is_ok() {}
}

/// `1:3,7,9:10` from ascending UIDs.
pub fn uid_set(uids: impl IntoIterator<Item = u32>) -> String {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for uid in uids {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == uid => *end = uid,
            _ => ranges.push((uid, uid)),
        }
    }
    ranges.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}:{b}") }).collect::<Vec<_>>().join(",")
}

/// Appends `raw` to `folder` (the Sent copy of an outbound message), marked seen.
pub async fn append(account: &ImapAccount, folder: &str, raw: &[u8]) -> anyhow::Result<()> {
    let mut session = connect(account).await?;
    command(session.append(folder, Some("(\\Seen)"), None, raw)).await.with_context(|| format!("APPEND to '{folder}'"))?;
    let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_are_compact() {
        assert_eq!(uid_set([1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set([5]), "5");
    }
}
