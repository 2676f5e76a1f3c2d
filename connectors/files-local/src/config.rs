//! The connector's settings: where files live and how large a file may travel in a message.
//! As a process they come from `data_dir` / `max_file_bytes` in the TOML file or
//! `CRM_CONNECTOR_FILES_LOCAL_DATA_DIR` / `CRM_CONNECTOR_FILES_LOCAL_MAX_FILE_BYTES`; inside
//! `crm serve` the core fills them from its own settings.

use anyhow::bail;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The default cap on a file carried in a message: 25 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 25 * 1024 * 1024;
/// The largest cap accepted: a message holds the whole file in memory (twice, base64 and bytes).
pub const MAX_MAX_FILE_BYTES: u64 = 1024 * 1024 * 1024;

/// The connector's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilesLocalConfig {
    /// Where files are kept; created when missing.
    pub data_dir: PathBuf,
    /// The largest file stored or read through a message, in bytes; larger ones fail with the
    /// reason.
    pub max_file_bytes: u64,
}

impl Default for FilesLocalConfig {
    fn default() -> Self {
        FilesLocalConfig { data_dir: PathBuf::from("./data/files"), max_file_bytes: DEFAULT_MAX_FILE_BYTES }
    }
}

impl FilesLocalConfig {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.data_dir.as_os_str().is_empty() {
            bail!("data_dir must not be empty");
        }
        if self.max_file_bytes == 0 || self.max_file_bytes > MAX_MAX_FILE_BYTES {
            bail!("max_file_bytes must be between 1 and {MAX_MAX_FILE_BYTES}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_refused() {
        let config = FilesLocalConfig::default();
        assert_eq!(config.max_file_bytes, 25 * 1024 * 1024);
        config.validate().unwrap();
        assert!(FilesLocalConfig { max_file_bytes: 0, ..config.clone() }.validate().is_err());
        assert!(FilesLocalConfig { data_dir: PathBuf::new(), ..config }.validate().is_err());
    }
}
