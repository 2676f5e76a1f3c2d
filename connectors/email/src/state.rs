//! What the connector remembers between runs, in small JSON files under the state directory,
//! each written atomically (temporary file, fsync, rename, fsync of the folder):
//!
//! * `imap/<account>/<folder>.json`: the folder's UIDVALIDITY and the last UID whose event the
//!   broker confirmed. A restart resumes after it; a different UIDVALIDITY means the UIDs were
//!   renumbered, and the folder is read again from the start (the core deduplicates by
//!   Message-ID).
//! * `sent/<entry id>.json`: the Message-ID and SMTP reply of every message sent, so a
//!   redelivered send command answers `sent` again instead of sending twice.
//!
//! Folder names are stored percent-encoded (`INBOX/Orders` → `INBOX%2FOrders`).

use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// Where the connector stands in one folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderState {
    /// The folder's UIDVALIDITY when `last_uid` was recorded.
    pub uid_validity: u32,
    /// The highest UID published (confirmed by the broker).
    pub last_uid: u32,
}

/// A message the connector sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentRecord {
    /// Its Message-ID.
    pub message_id: String,
    /// The SMTP server's reply.
    pub reply: String,
    /// When it was sent.
    pub sent_at: chrono::DateTime<chrono::Utc>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating when missing) the state directory.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("imap"))?;
        std::fs::create_dir_all(root.join("sent"))?;
        Ok(StateDir { root: root.to_owned() })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The file of `folder` in `account`.
    pub fn folder_file(&self, account: &str, folder: &str) -> PathBuf {
        self.root.join("imap").join(encode(account)).join(format!("{}.json", encode(folder)))
    }

    /// The recorded state of `folder`, if any.
    pub fn folder(&self, account: &str, folder: &str) -> std::io::Result<Option<FolderState>> {
        read_json(&self.folder_file(account, folder))
    }

    /// Records the state of `folder`.
    pub fn save_folder(&self, account: &str, folder: &str, state: FolderState) -> std::io::Result<()> {
        write_json(&self.folder_file(account, folder), &state)
    }

    fn sent_file(&self, entry_id: Uuid) -> PathBuf {
        self.root.join("sent").join(format!("{entry_id}.json"))
    }

    /// What was sent for `entry_id`, if anything.
    pub fn sent(&self, entry_id: Uuid) -> std::io::Result<Option<SentRecord>> {
        read_json(&self.sent_file(entry_id))
    }

    /// Records that `entry_id` was sent.
    pub fn record_sent(&self, entry_id: Uuid, record: &SentRecord) -> std::io::Result<()> {
        write_json(&self.sent_file(entry_id), record)
    }
}

/// Percent-encodes everything but ASCII letters, digits, `-` and `_`.
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Writes `value` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the
/// folder. A crash leaves the old file or the new one, never a mix.
fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let folder = path.parent().expect("state files live in a folder");
    std::fs::create_dir_all(folder)?;
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let temp = folder.join(format!(".tmp-{}-{}", std::process::id(), Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(folder)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_state_and_sent_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.folder("sales", "INBOX/Orders").unwrap(), None);
        state.save_folder("sales", "INBOX/Orders", FolderState { uid_validity: 7, last_uid: 3 }).unwrap();
        state.save_folder("sales", "INBOX/Orders", FolderState { uid_validity: 7, last_uid: 9 }).unwrap();
        assert_eq!(state.folder("sales", "INBOX/Orders").unwrap(), Some(FolderState { uid_validity: 7, last_uid: 9 }));
        assert!(state.folder_file("sales", "INBOX/Orders").ends_with("imap/sales/INBOX%2FOrders.json"));
        let files: Vec<_> = std::fs::read_dir(dir.path().join("imap/sales")).unwrap().collect();
        assert_eq!(files.len(), 1, "no temporary file is left behind");

        let id = Uuid::now_v7();
        assert_eq!(state.sent(id).unwrap(), None);
        let record = SentRecord { message_id: "<crm.x@y>".into(), reply: "250 OK".into(), sent_at: chrono::Utc::now() };
        state.record_sent(id, &record).unwrap();
        assert_eq!(state.sent(id).unwrap(), Some(record));
    }
}
