//! How the ingest resolves matcher keys: which store index serves each kind of key. The rule
//! itself ([`crm_domain::matching::Matcher`]) is the built-in one or the active matcher plugin.

use crm_domain::matching::KeyKind;

/// The store index a key kind is resolved through (`None`: resolved by a name scan).
pub(crate) fn index_kind(kind: KeyKind) -> Option<&'static str> {
    match kind {
        KeyKind::Email => Some("email"),
        KeyKind::Phone => Some("phone"),
        KeyKind::Name => Some("name"),
        KeyKind::NameWords => None,
    }
}
