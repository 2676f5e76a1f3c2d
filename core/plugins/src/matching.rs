//! The host-side matching API the ingest uses: which normalised keys identify a sender (the
//! host resolves them through its own indexes) and, when the keys find several customers,
//! which one to pick. [`Matcher`] asks the active matcher plugin and falls back to the built-in
//! rules (`crm_domain::matching`, which the default plugin also runs, so the answers are the
//! same) when no matcher is active or the plugin fails: matching may degrade, an unmatched
//! message still lands in the log for triage.
//!
//! ```
//! use crm_plugins::Matcher;
//! use crm_plugins::matching::{Channel, KeyKind, Sender};
//! let matcher = Matcher::native(crm_domain::contact::Region::GR);
//! let sender = Sender { channel: Channel::Whatsapp, address: "306941234567@s.whatsapp.net".into(), display_name: None };
//! let keys = matcher.match_keys(&sender);
//! assert_eq!((keys[0].kind, keys[0].value.as_str()), (KeyKind::Phone, "+306941234567"));
//! ```

use crate::Registry;
use crate::error::CallError;
use crm_domain::contact::Region;
use std::sync::Arc;

pub use crm_domain::matching::{Candidate, Channel, Choice, KeyKind, LookupKey, Sender};

/// Who answered a matching call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnsweredBy {
    /// The active matcher plugin.
    Plugin(crate::PluginId),
    /// The built-in rules, with the reason the plugin was not used.
    Native(String),
}

/// Matching for the ingest: the active matcher plugin with the built-in rules as fallback.
#[derive(Debug, Clone)]
pub struct Matcher {
    registry: Option<Arc<Registry>>,
    region: Region,
}

impl Matcher {
    /// Matching through `registry`'s active matcher, falling back to the built-in rules with
    /// `region` for phone numbers written without a country code.
    pub fn new(registry: Arc<Registry>, region: Region) -> Self {
        Matcher { registry: Some(registry), region }
    }

    /// The built-in rules alone (no plugin).
    pub fn native(region: Region) -> Self {
        Matcher { registry: None, region }
    }

    /// The lookup keys for a sender, strongest first, and who gave them. An empty list means
    /// the sender cannot be matched.
    pub fn match_keys_by(&self, sender: &Sender) -> (Vec<LookupKey>, AnsweredBy) {
        let reason = match self.registry.as_ref().map(|r| r.match_keys(sender)) {
            Some(Ok((keys, id))) => return (keys, AnsweredBy::Plugin(id)),
            Some(Err(err)) => fallback_reason(&err),
            None => "no plugin registry".to_owned(),
        };
        (crm_domain::matching::match_keys(sender, self.region), AnsweredBy::Native(reason))
    }

    /// The lookup keys for a sender, strongest first (see [`Matcher::match_keys_by`]).
    pub fn match_keys(&self, sender: &Sender) -> Vec<LookupKey> {
        self.match_keys_by(sender).0
    }

    /// Picks among the candidates that `keys` (from [`Matcher::match_keys`]) found: the index of
    /// the chosen candidate with a confidence (0 to 100) and a reason, or none when they cannot
    /// be told apart. Call it only with two or more candidates; with one, take it.
    pub fn choose_by(&self, sender: &Sender, keys: &[LookupKey], candidates: &[Candidate]) -> (Option<Choice>, AnsweredBy) {
        let reason = match self.registry.as_ref().map(|r| r.choose(sender, keys, candidates)) {
            Some(Ok((choice, id))) => return (choice, AnsweredBy::Plugin(id)),
            Some(Err(err)) => fallback_reason(&err),
            None => "no plugin registry".to_owned(),
        };
        (crm_domain::matching::choose(sender, keys, candidates), AnsweredBy::Native(reason))
    }

    /// See [`Matcher::choose_by`].
    pub fn choose(&self, sender: &Sender, keys: &[LookupKey], candidates: &[Candidate]) -> Option<Choice> {
        self.choose_by(sender, keys, candidates).0
    }
}

/// The ingest's matching rule (`crm_domain::matching::Matcher`): the active matcher plugin,
/// with the built-in rules when no matcher is active or the plugin gives no answer, so this
/// implementation never fails a message. `name` is the active plugin (`crm-matcher 0.1.0
/// (sha256:…)`) or `built-in`.
impl crm_domain::matching::Matcher for Matcher {
    fn name(&self) -> String {
        self.registry
            .as_ref()
            .and_then(|r| r.active(crate::Role::Matcher))
            .filter(|p| p.is_enabled())
            .map_or_else(|| "built-in".to_owned(), |p| p.id().to_string())
    }

    fn keys(&self, sender: &Sender) -> Result<Vec<LookupKey>, String> {
        Ok(self.match_keys(sender))
    }

    fn choose(&self, sender: &Sender, keys: &[LookupKey], candidates: &[Candidate]) -> Result<Option<Choice>, String> {
        Ok(Matcher::choose(self, sender, keys, candidates))
    }
}

fn fallback_reason(err: &CallError) -> String {
    match err {
        CallError::NoPlugin(_) => {}
        other => tracing::warn!(error = %other, "matcher plugin gave no answer; using the built-in rules"),
    }
    metrics::counter!("crm_plugin_match_fallbacks_total").increment(1);
    err.to_string()
}
