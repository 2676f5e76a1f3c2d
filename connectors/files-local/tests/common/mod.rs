//! Helpers shared by the integration tests.

#![allow(dead_code)]

use crm_bus::Envelope;
use crm_bus::message::{FileContent, FileResult};
use sha2::{Digest, Sha256};

/// The `FileResult` in `envelope`.
pub(crate) fn file_result(envelope: &Envelope) -> FileResult {
    envelope.decode::<FileResult>().unwrap_or_else(|e| panic!("a file result: {e}"))
}

/// The `FileContent` in `envelope`.
pub(crate) fn file_content(envelope: &Envelope) -> FileContent {
    envelope.decode::<FileContent>().unwrap_or_else(|e| panic!("file content: {e}"))
}

/// Lower-case hex SHA-256.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
