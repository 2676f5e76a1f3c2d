//! The local-directory files connector: the embedded default file store. It keeps files under a
//! data directory and serves the files commands of the bus; the Nextcloud connector serves the
//! same commands and events, so one replaces the other without the core noticing.
//!
//! * `files.folder.ensure` ([`EnsureFolder`]) → [`FileResult`] `stored` (size 0) or `failed`.
//! * `files.file.store` ([`StoreFile`], bytes in the message up to
//!   [`FilesLocalConfig::max_file_bytes`]) → [`FileResult`] `stored {size, sha256}` or
//!   `failed {reason}`. The same bytes again are a success (a redelivered command); different
//!   bytes at the path are refused unless `overwrite` is set. Writes are atomic.
//! * `files.file.read` ([`ReadFile`], a request) → the reply [`FileContent`].
//!
//! A file-system error that retrying cannot fix (permission denied, a read-only file system, an
//! invalid name, not a directory, a file too large...: [`store::is_permanent`]) is a `failed`
//! result with the reason; one that may pass (disk full, interrupted, timed out...) is retried
//! with backoff and in the end dead-lettered, which the core records as a failure too.
//!
//! Paths are checked by [`paths`] and written by [`store`]. Run it inside `crm serve` with
//! [`crm_connector::spawn`]`(FilesLocal::new(config)?, bus, token)`, or as the
//! `crm-connector-files-local` process.

pub mod config;
pub mod paths;
pub mod store;

pub use config::{DEFAULT_MAX_FILE_BYTES, FilesLocalConfig};

use crm_connector::message::{Channel, EnsureFolder, FileContent, FileOutcome, FileRead, FileResult, ReadFile, StoreFile};
use crm_connector::{Command, Connector, HandlerError, Health, Outcome};
use paths::{RelativePath, Root};
use std::path::Path;
use std::sync::{Arc, Mutex};
use store::{FileError, ReadOutcome};

/// Temporary files older than this are left-overs of a crash, removed at start.
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The connector.
#[derive(Debug)]
pub struct FilesLocal {
    root: Arc<Root>,
    max_file_bytes: u64,
    /// The last file-system failure, cleared by the next success (shown in heartbeats).
    last_error: Mutex<Option<String>>,
}

impl FilesLocal {
    /// Opens (creating when missing) the data directory.
    pub fn new(config: FilesLocalConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let root = Root::open(&config.data_dir).map_err(|e| anyhow::anyhow!("data_dir {}: {e}", config.data_dir.display()))?;
        Ok(FilesLocal { root: Arc::new(root), max_file_bytes: config.max_file_bytes, last_error: Mutex::new(None) })
    }

    /// The data directory (canonical).
    pub fn data_dir(&self) -> &Path {
        self.root.path()
    }

    /// The file-size cap.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    fn note(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// Runs a blocking file operation (`what`, e.g. "cannot store the file", on `path`). An I/O
    /// failure that retrying cannot fix is a refusal (`Ok(Err(reason))`); any other is
    /// transient (retried with backoff). The health detail keeps the failure without the path:
    /// everyone who may list connectors sees it.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        path: &str,
        op: impl FnOnce(&Root) -> Result<T, FileError> + Send + 'static,
    ) -> Result<Result<T, String>, HandlerError> {
        let root = self.root.clone();
        let result =
            tokio::task::spawn_blocking(move || op(&root)).await.map_err(|e| HandlerError::Transient(format!("{what} '{path}': {e}")))?;
        match result {
            Ok(value) => {
                self.note(None);
                Ok(Ok(value))
            }
            Err(FileError::Refused(reason)) => Ok(Err(reason)),
            Err(FileError::Io(err)) => {
                let reason = format!("{what} '{path}': {err}");
                self.note(Some(format!("{what}: {err}")));
                if store::is_permanent(err.kind()) { Ok(Err(reason)) } else { Err(HandlerError::Transient(reason)) }
            }
        }
    }

    async fn ensure_folder(&self, command: Command<'_>) -> Result<Outcome, HandlerError> {
        let message: EnsureFolder = command.decode()?;
        let outcome = match RelativePath::parse(&message.path) {
            Err(err) => FileOutcome::Failed { reason: err.to_string() },
            Ok(path) => {
                match self.blocking("cannot create the folder", &message.path, move |root| store::ensure_folder(root, &path)).await? {
                    Ok(()) => FileOutcome::Stored { size: 0, sha256: String::new() },
                    Err(reason) => FileOutcome::Failed { reason },
                }
            }
        };
        log_outcome(&message.path, &outcome);
        Ok(Outcome::event(command.event(&FileResult { media_id: None, path: message.path, outcome })))
    }

    async fn store_file(&self, command: Command<'_>) -> Result<Outcome, HandlerError> {
        let StoreFile { media_id, path: shown, overwrite, content, .. } = command.decode()?;
        let size = content.0.len() as u64;
        let outcome = if size > self.max_file_bytes {
            FileOutcome::Failed {
                reason: format!("the file is {size} bytes, over the {}-byte cap for files in messages", self.max_file_bytes),
            }
        } else {
            match RelativePath::parse(&shown) {
                Err(err) => FileOutcome::Failed { reason: err.to_string() },
                Ok(path) => {
                    let bytes = content.0;
                    match self.blocking("cannot store the file", &shown, move |root| store::store(root, &path, &bytes, overwrite)).await? {
                        Ok(stored) => FileOutcome::Stored { size: stored.size, sha256: stored.sha256 },
                        Err(reason) => FileOutcome::Failed { reason },
                    }
                }
            }
        };
        log_outcome(&shown, &outcome);
        Ok(Outcome::event(command.event(&FileResult { media_id: Some(media_id), path: shown, outcome })))
    }

    async fn read_file(&self, command: Command<'_>) -> Result<Outcome, HandlerError> {
        let message: ReadFile = command.decode()?;
        let result = match RelativePath::parse(&message.path) {
            Err(err) => FileRead::Failed { reason: err.to_string() },
            Ok(path) => {
                // The reply carries the bytes as base64: a file the bus cannot carry is refused
                // here, with the reason, rather than handled and then refused by the bus.
                let message_bytes = u64::try_from(command.hub().bus().config().max_message_bytes).unwrap_or(u64::MAX);
                let fits = crm_connector::message::largest_file_in_message(message_bytes);
                let cap = self.max_file_bytes.min(fits);
                match self.blocking("cannot read the file", &message.path, move |root| store::read(root, &path, cap)).await? {
                    Ok(ReadOutcome::Found(bytes)) => FileRead::Found { content: crm_connector::message::Bytes(bytes) },
                    Ok(ReadOutcome::NotFound) => FileRead::NotFound,
                    Err(reason) => FileRead::Failed { reason },
                }
            }
        };
        tracing::debug!(path = %message.path, outcome = ?std::mem::discriminant(&result), "file read");
        Ok(Outcome::reply(command.event(&FileContent { path: message.path, result })))
    }
}

fn log_outcome(path: &str, outcome: &FileOutcome) {
    match outcome {
        FileOutcome::Stored { size, .. } => tracing::info!(path, size, "stored"),
        FileOutcome::Failed { reason } => tracing::warn!(path, reason = %reason, "refused"),
    }
}

impl Connector for FilesLocal {
    type Config = FilesLocalConfig;
    const NAME: &'static str = "files-local";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CHANNEL: Channel = Channel::Files;

    fn bindings(&self) -> Vec<String> {
        vec!["files.folder.ensure".into(), "files.file.store".into(), "files.file.read".into()]
    }

    async fn init(&self, _hub: &crm_connector::Hub) -> anyhow::Result<()> {
        let root = self.root.clone();
        let cleanup = tokio::task::spawn_blocking(move || store::remove_stale_temps(&root, STALE_TEMP_AGE)).await?;
        if cleanup.removed > 0 {
            tracing::info!(removed = cleanup.removed, "removed temporary files left by an earlier crash");
        }
        for error in &cleanup.errors {
            tracing::warn!(%error, "could not look at or remove a stale temporary file");
        }
        tracing::info!(data_dir = %self.root.path().display(), max_file_bytes = self.max_file_bytes, "serving files");
        Ok(())
    }

    async fn health(&self) -> Health {
        // The detail goes to everyone who may list connectors: it names the data directory's
        // trouble, not its place on the server (the log has that).
        let root = self.root.path().to_owned();
        match tokio::task::spawn_blocking(move || std::fs::metadata(root)).await {
            Ok(Ok(metadata)) if metadata.is_dir() => {}
            Ok(Ok(_)) => return Health::degraded("the data directory is not a directory"),
            Ok(Err(err)) => return Health::degraded(format!("the data directory cannot be reached: {err}")),
            Err(err) => return Health::degraded(format!("health check failed: {err}")),
        }
        match self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(error) => Health::degraded(error),
            None => Health::ready(),
        }
    }

    async fn handle(&self, command: Command<'_>) -> Result<Outcome, HandlerError> {
        if command.is::<StoreFile>() {
            self.store_file(command).await
        } else if command.is::<EnsureFolder>() {
            self.ensure_folder(command).await
        } else if command.is::<ReadFile>() {
            self.read_file(command).await
        } else {
            Err(command.unsupported())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_connector::message::ConnectorState;

    /// The health detail goes to everyone who may list connectors: it says what is wrong with
    /// the data directory without naming where it is on the server.
    #[tokio::test]
    async fn health_names_the_data_directorys_trouble_not_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("files");
        let connector = FilesLocal::new(FilesLocalConfig { data_dir: data.clone(), max_file_bytes: 10 }).unwrap();
        assert_eq!(connector.health().await.state, ConnectorState::Ready);
        std::fs::remove_dir_all(&data).unwrap();
        let health = connector.health().await;
        assert_eq!(health.state, ConnectorState::Degraded);
        let detail = health.detail.expect("a detail");
        assert!(detail.contains("data directory"), "{detail}");
        assert!(!detail.contains(&dir.path().display().to_string()), "{detail}");

        // A failed file operation shows in the detail without the customer's path.
        std::fs::create_dir_all(&data).unwrap();
        let failure = || Err::<(), _>(FileError::Io(std::io::Error::other("disk on fire")));
        let _ = connector.blocking("cannot store the file", "customers/x/media/σχέδιο.pdf", move |_| failure()).await;
        let detail = connector.health().await.detail.expect("a detail");
        assert!(detail.contains("cannot store the file: disk on fire") && !detail.contains("σχέδιο"), "{detail}");
    }
}
