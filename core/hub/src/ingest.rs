//! Ingest: the core's consumer of connector events. Inbound messages and calls become
//! communications-log entries (matched to a customer, or left in the unmatched inbox), delivery
//! reports and file-store results update the entries and media they concern, and heartbeats
//! update the connector list. Deliveries are taken in batches, written in one transaction and
//! acknowledged only after the commit; a redelivered event changes nothing. A malformed event is
//! dead-lettered with the reason and never stops the consumer; an unreachable database holds the
//! batch (unacknowledged) and retries until it is back; a batch the database refuses is written
//! in halves, so that only the messages that cannot be stored on their own are retried (and in
//! the end dead-lettered). U+0000, which PostgreSQL cannot store in text, becomes U+FFFD in every
//! text of an event, so that such a message is logged, the same way on both backends.

use crate::HubConfig;
use crate::matcher::index_kind;
use chrono::{SubsecRound as _, Utc};
use crm_bus::message::{
    Address, AddressKind as BusAddressKind, CallCompleted, CallDirection, Channel, DeliveryState, DeliveryStatus as StatusEvent,
    FileOutcome, FileResult, Heartbeat, InboundAttachment, MessageReceived, StoreFile,
};
use crm_bus::{Bus, Delivery, Envelope, Message, Subscriber, Trace};
use crm_domain::comms::{
    AddressKind, Attachment, ChannelAddress, CommsEntry, CommsType, DeliveryStatus, Direction, MatchInfo, Media, MediaDirection,
    MediaStatus, Triage, received_filename,
};
use crm_domain::customer::Customer;
use crm_domain::matching::Matcher;
use crm_domain::matching::{self, Candidate, KeyKind, LookupKey, Sender};
use crm_store::{ConnectorInstance, DeliveryRecorded, FileStored, InboundEntry, Logged, Store, StoreError};
use futures::FutureExt as _;
use std::borrow::Cow;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The longest body kept; longer bodies are cut with a note (the channel keeps the original).
const MAX_BODY_CHARS: usize = 200_000;
/// The most `References` kept per message: the last ones, the nearest ancestors. Threading needs
/// only `In-Reply-To` and the last few; a message with thousands would make every thread lookup
/// of its batch huge.
pub const MAX_REFERENCES: usize = 50;

#[derive(Clone)]
pub(crate) struct Ingest {
    pub(crate) store: Store,
    pub(crate) matcher: Arc<dyn Matcher>,
    pub(crate) config: HubConfig,
    pub(crate) relay: Arc<Notify>,
}

/// An inbound message or call, decoded, waiting for its customer.
struct Pending {
    sender: Sender,
    entry: CommsEntry,
    id: Uuid,
    answers: Vec<String>,
    answers_entries: Vec<Uuid>,
    files: Vec<(usize, InboundAttachment)>,
}

impl Ingest {
    pub(crate) async fn subscribe(bus: &Bus, config: &HubConfig) -> Result<Subscriber, crm_bus::BusError> {
        // Twice the batch: the broker delivers the next batch while this one is being written.
        let prefetch = config.batch_size.saturating_mul(2);
        bus.subscribe(crm_bus::message::core_events().with_prefetch(prefetch)).await
    }

    /// Consumes until `shutdown`; the batch in hand is finished first.
    pub(crate) async fn run(self, mut subscriber: Subscriber, shutdown: CancellationToken) {
        loop {
            let batch = tokio::select! {
                () = shutdown.cancelled() => break,
                batch = subscriber.next_batch(usize::from(self.config.batch_size.max(1))) => batch,
            };
            if batch.is_empty() {
                break;
            }
            self.handle_guarded(&subscriber, batch, &shutdown).await;
        }
        tracing::info!("ingest stopped");
    }

    /// Handles a batch; when handling panics (a bug an event triggers), the deliveries not
    /// settled yet are handled again one by one, and one that panics alone is retried with the
    /// panic as its reason (dead-lettered after the last attempt), like a command whose handler
    /// panics in a connector. The consumer goes on either way.
    async fn handle_guarded(&self, subscriber: &Subscriber, batch: Vec<Delivery>, shutdown: &CancellationToken) {
        let mut slots: Vec<Option<Delivery>> = batch.into_iter().map(Some).collect();
        let Err(panic) = AssertUnwindSafe(self.handle(subscriber, &mut slots, shutdown)).catch_unwind().await else { return };
        let reason = format!("ingest panicked: {}", crm_bus::panic_reason(&*panic));
        let left: Vec<Delivery> = slots.into_iter().flatten().collect();
        tracing::error!(%reason, unsettled = left.len(), "ingest panicked on a batch; handling its events one by one");
        metrics::counter!("ingest_panics_total").increment(1);
        let left = match <[Delivery; 1]>::try_from(left) {
            Ok([only]) => return settle_failure(only, &reason).await,
            Err(left) => left,
        };
        for delivery in left {
            let mut slot = [Some(delivery)];
            if let Err(panic) = AssertUnwindSafe(self.handle(subscriber, &mut slot, shutdown)).catch_unwind().await
                && let [Some(delivery)] = slot
            {
                metrics::counter!("ingest_panics_total").increment(1);
                let reason = format!("ingest panicked: {}", crm_bus::panic_reason(&*panic));
                tracing::error!(%reason, id = %delivery.envelope.id, kind = %delivery.envelope.kind, "ingest panicked on this event");
                settle_failure(delivery, &reason).await;
            }
        }
    }

    /// Handles the deliveries in `slots`, taking each out when it is settled: what a panic
    /// leaves there is unsettled.
    async fn handle(&self, subscriber: &Subscriber, slots: &mut [Option<Delivery>], shutdown: &CancellationToken) {
        let started = std::time::Instant::now();
        let mut inbound: Vec<(usize, Pending)> = Vec::new();
        let mut done: Vec<usize> = Vec::new();
        for index in 0..slots.len() {
            let Some(delivery) = &slots[index] else { continue };
            let envelope = &delivery.envelope;
            tracing::debug!(id = %envelope.id, kind = %envelope.kind, request_id = envelope.trace.request_id.as_deref().unwrap_or(""), "event");
            match self.decode(envelope) {
                Ok(Decoded::Inbound(pending)) => inbound.push((index, *pending)),
                Ok(Decoded::Other(action)) => match self.until_stored(shutdown, || self.apply(&action)).await {
                    Some(Ok(())) => done.push(index),
                    Some(Err(reason)) => settle_failure(take(slots, index), &reason).await,
                    None => requeue(take(slots, index)).await,
                },
                Ok(Decoded::Ignored(why)) => {
                    tracing::debug!(why, "event ignored");
                    metrics::counter!("ingest_events_total", "outcome" => "ignored").increment(1);
                    done.push(index);
                }
                Err(reason) => {
                    let delivery = take(slots, index);
                    tracing::warn!(%reason, id = %delivery.envelope.id, kind = %delivery.envelope.kind, request_id = delivery.envelope.trace.request_id.as_deref().unwrap_or(""), "malformed event: dead-lettered");
                    metrics::counter!("ingest_events_total", "outcome" => "malformed").increment(1);
                    if let Err(err) = delivery.dead_letter(&reason).await {
                        tracing::warn!(%err, "could not dead-letter an event; the bus puts it back in the queue");
                    }
                }
            }
        }
        if !inbound.is_empty() {
            let (indices, pending): (Vec<usize>, Vec<Pending>) = inbound.into_iter().unzip();
            let entries = match self.until_stored(shutdown, || self.resolve(&pending)).await {
                Some(Ok(entries)) => entries,
                Some(Err(reason)) => {
                    for index in indices {
                        settle_failure(take(slots, index), &reason).await;
                    }
                    return self.ack(subscriber, slots, &done).await;
                }
                None => {
                    for index in indices {
                        requeue(take(slots, index)).await;
                    }
                    return self.ack(subscriber, slots, &done).await;
                }
            };
            let has_commands = entries.iter().any(|e| !e.commands.is_empty());
            // One outcome per entry: a batch the database refuses is written in halves, so one
            // message that cannot be stored costs only itself.
            match self.until_stored(shutdown, || self.store.log_inbound_each(entries.clone())).await {
                Some(Ok(outcomes)) => {
                    for ((outcome, entry), index) in outcomes.into_iter().zip(&entries).zip(indices) {
                        let label = match outcome {
                            Ok(Logged::Duplicate(_)) => "duplicate",
                            Ok(Logged::Created(_)) if entry.entry.triage == Some(Triage::Unmatched) => "unmatched",
                            Ok(Logged::Created(_)) => "matched",
                            Err(err) => {
                                settle_failure(take(slots, index), &format!("{err}: {err:?}")).await;
                                continue;
                            }
                        };
                        metrics::counter!("ingest_events_total", "outcome" => label).increment(1);
                        done.push(index);
                    }
                    if has_commands {
                        self.relay.notify_one();
                    }
                }
                Some(Err(reason)) => {
                    for index in indices {
                        settle_failure(take(slots, index), &reason).await;
                    }
                }
                None => {
                    for index in indices {
                        requeue(take(slots, index)).await;
                    }
                }
            }
        }
        self.ack(subscriber, slots, &done).await;
        metrics::histogram!("ingest_batch_seconds").record(started.elapsed().as_secs_f64());
    }

    /// Acknowledges the deliveries at `done` in `slots` at once.
    async fn ack(&self, subscriber: &Subscriber, slots: &mut [Option<Delivery>], done: &[usize]) {
        let done: Vec<Delivery> = done.iter().filter_map(|&index| slots[index].take()).collect();
        if done.is_empty() {
            return;
        }
        if let Err(err) = subscriber.ack_all(done).await {
            // The channel went away: the broker redelivers, and the log already has them.
            tracing::warn!(%err, "acknowledging a batch failed; it will be redelivered and found logged");
        }
    }

    /// Runs a store operation, waiting out an unreachable database (the deliveries stay
    /// unacknowledged meanwhile). `None` when shut down while waiting; `Some(Err)` for an error
    /// the database will not get over by waiting.
    async fn until_stored<T, F, Fut>(&self, shutdown: &CancellationToken, mut op: F) -> Option<Result<T, String>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            match op().await {
                Ok(value) => return Some(Ok(value)),
                Err(err) if err.is_unavailable() => {
                    tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "database unavailable; holding the batch");
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(err) => return Some(Err(format!("{err}: {err:?}"))),
            }
        }
    }

    fn decode(&self, envelope: &Envelope) -> Result<Decoded, String> {
        let envelope = &*without_nul(envelope);
        let logged_by = connector_of(&envelope.source);
        match envelope.kind.as_str() {
            MessageReceived::TYPE => {
                let message: MessageReceived = envelope.decode().map_err(|e| e.to_string())?;
                self.inbound_message(envelope, message, logged_by).map(|p| Decoded::Inbound(Box::new(p)))
            }
            CallCompleted::TYPE => {
                let call: CallCompleted = envelope.decode().map_err(|e| e.to_string())?;
                self.inbound_call(envelope, call, logged_by)
            }
            StatusEvent::TYPE => {
                let status: StatusEvent = envelope.decode().map_err(|e| e.to_string())?;
                if status.entry_id.is_none() && status.channel_message_id.as_deref().is_none_or(str::is_empty) {
                    return Err("a delivery status needs entry_id or channel_message_id".into());
                }
                Ok(Decoded::Other(Action::Status(status)))
            }
            FileResult::TYPE => {
                let result: FileResult = envelope.decode().map_err(|e| e.to_string())?;
                Ok(match result.media_id {
                    Some(_) => Decoded::Other(Action::File(result)),
                    None => Decoded::Ignored("a folder result"),
                })
            }
            Heartbeat::TYPE => {
                let beat: Heartbeat = envelope.decode().map_err(|e| e.to_string())?;
                Ok(Decoded::Other(Action::Heartbeat(beat)))
            }
            other => Err(format!("the core does not handle events of type `{other}`")),
        }
    }

    fn inbound_message(&self, envelope: &Envelope, mut m: MessageReceived, logged_by: String) -> Result<Pending, String> {
        let kind = match m.channel {
            Channel::Email => CommsType::Email,
            Channel::Whatsapp => CommsType::Whatsapp,
            Channel::Sms => CommsType::Sms,
            Channel::Call | Channel::Files => return Err(format!("/channel: `{}` does not carry messages", m.channel.as_str())),
        };
        let channel_message_id = m.channel_message_id.trim();
        if channel_message_id.is_empty() {
            return Err("/channel_message_id: must not be empty".into());
        }
        if m.from.value.trim().is_empty() {
            return Err("/from/value: must not be empty".into());
        }
        let sender = sender_of(kind, &m.from);
        m.references.drain(..m.references.len().saturating_sub(MAX_REFERENCES));
        let answers: Vec<String> =
            m.in_reply_to.iter().chain(m.references.iter().rev()).map(|id| crm_store::ext_key(kind.as_str(), id)).collect();
        let answers_entries =
            m.in_reply_to.iter().chain(m.references.iter()).filter_map(|id| crm_bus::message::entry_of_message_id(id)).collect();
        let mut recipients: Vec<ChannelAddress> = m.to.iter().chain(m.cc.iter()).map(|a| address(a, None)).collect();
        recipients.truncate(100);
        let mut attachments = Vec::with_capacity(m.attachments.len());
        let mut files = Vec::new();
        for (index, attachment) in m.attachments.into_iter().enumerate() {
            let filename = received_filename(&attachment.filename, &format!("attachment-{}", index + 1));
            let mut kept = Attachment {
                filename,
                mime_type: attachment.mime_type.clone(),
                size: attachment.size,
                media_id: None,
                nextcloud_path: None,
                refused: attachment.refused.clone(),
            };
            match &attachment.content {
                Some(content) if content.0.len() as u64 > self.config.attachment_cap => {
                    kept.refused =
                        Some(format!("{} bytes is over the core's cap of {} bytes", content.0.len(), self.config.attachment_cap));
                }
                Some(_) => files.push((index, attachment)),
                None if kept.refused.is_none() => kept.refused = Some("the connector sent no content".into()),
                None => {}
            }
            attachments.push(kept);
        }
        let entry = CommsEntry {
            customer_id: None,
            kind,
            direction: Direction::Inbound,
            subject: m.subject.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
            body: cut(m.body),
            attachments,
            ext_message_id: Some(channel_message_id.to_owned()),
            channel_address: None,
            recipients,
            logged_by,
            occurred_at: m.occurred_at.trunc_subsecs(6),
            thread_id: None,
            in_reply_to: m.in_reply_to,
            references: m.references,
            delivery_status: None,
            status_reason: None,
            raw_event_id: Some(envelope.id.clone()),
            matched: None,
            triage: None,
            auto_reply: m.auto_reply,
        };
        Ok(Pending { sender, entry, id: Uuid::now_v7(), answers, answers_entries, files })
    }

    fn inbound_call(&self, envelope: &Envelope, call: CallCompleted, logged_by: String) -> Result<Decoded, String> {
        if call.channel_message_id.trim().is_empty() {
            return Err("/channel_message_id: must not be empty".into());
        }
        let direction = match call.direction {
            CallDirection::Inbound => Direction::Inbound,
            CallDirection::Outbound => Direction::Outbound,
            CallDirection::Internal => return Ok(Decoded::Ignored("an internal call")),
        };
        let minutes = call.duration_seconds / 60;
        let seconds = call.duration_seconds % 60;
        let subject = match (call.answered, direction) {
            (true, _) => format!("Call, {minutes}:{seconds:02}"),
            (false, Direction::Inbound) => "Missed call".to_owned(),
            (false, _) => "Unanswered call".to_owned(),
        };
        let body = match &call.extension {
            Some(extension) => format!("{} (extension {extension})", call.disposition),
            None => call.disposition.clone(),
        };
        let entry = CommsEntry {
            customer_id: None,
            kind: CommsType::Call,
            direction,
            subject: Some(subject),
            body,
            attachments: Vec::new(),
            ext_message_id: Some(call.channel_message_id.trim().to_owned()),
            channel_address: None,
            recipients: Vec::new(),
            logged_by,
            occurred_at: call.started_at.trunc_subsecs(6),
            thread_id: None,
            in_reply_to: None,
            references: Vec::new(),
            delivery_status: None,
            status_reason: None,
            raw_event_id: Some(envelope.id.clone()),
            matched: None,
            triage: None,
            auto_reply: false,
        };
        let sender = sender_of(CommsType::Call, &call.party);
        Ok(Decoded::Inbound(Box::new(Pending {
            sender,
            entry,
            id: Uuid::now_v7(),
            answers: Vec::new(),
            answers_entries: Vec::new(),
            files: Vec::new(),
        })))
    }

    /// Matches a batch to customers (one index query for the batch) and builds the entries.
    async fn resolve(&self, pending: &[Pending]) -> Result<Vec<InboundEntry>, StoreError> {
        let matcher_name = self.matcher.name();
        let keys: Vec<Result<Vec<LookupKey>, String>> = pending.iter().map(|p| self.matcher.keys(&p.sender)).collect();
        let lookups: Vec<(&str, &str)> = keys
            .iter()
            .flat_map(|k| k.as_ref().map(|k| k.as_slice()).unwrap_or_default())
            .filter_map(|k| index_kind(k.kind).map(|kind| (kind, k.value.as_str())))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut hits: HashMap<(String, String), Vec<Uuid>> = HashMap::new();
        for (kind, value, customer) in self.store.customers_by_keys(&lookups).await? {
            hits.entry((kind, value)).or_default().push(customer);
        }
        let mut out = Vec::with_capacity(pending.len());
        for (p, keys) in pending.iter().zip(keys) {
            let mut entry = p.entry.clone();
            let keys = match keys {
                Ok(keys) => keys,
                Err(error) => {
                    tracing::warn!(matcher = %matcher_name, %error, "matcher failed; the message goes to the unmatched inbox");
                    entry.triage = Some(Triage::Unmatched);
                    entry.matched =
                        Some(MatchInfo { confidence: 0, reason: format!("matcher failed: {error}"), matcher: matcher_name.clone() });
                    entry.channel_address = Some(channel_address(&p.sender, &[]));
                    out.push(self.finish(p, entry));
                    continue;
                }
            };
            entry.channel_address = Some(channel_address(&p.sender, &keys));
            let mut found: Vec<(Uuid, Vec<u32>)> = Vec::new();
            for (i, key) in keys.iter().enumerate() {
                if let Some(kind) = index_kind(key.kind) {
                    for customer in hits.get(&(kind.to_owned(), key.value.clone())).into_iter().flatten() {
                        note(&mut found, *customer, i);
                    }
                }
            }
            if found.is_empty() {
                // The weakest signal costs a scan: only when nothing else found anyone.
                for (i, key) in keys.iter().enumerate().filter(|(_, k)| k.kind == KeyKind::NameWords) {
                    let words: Vec<&str> = key.value.split(' ').filter(|w| !w.is_empty()).collect();
                    for customer in self.store.customers_by_name_words(&words, 5).await? {
                        note(&mut found, customer, i);
                    }
                }
            }
            let decision = match found.len() {
                0 => None,
                1 => {
                    let (customer, matched) = &found[0];
                    let best = matched.iter().filter_map(|&k| keys.get(k as usize)).max_by_key(|k| k.strength).expect("a key found it");
                    Some((*customer, best.strength, format!("matched by {}", best.kind.as_str())))
                }
                _ => self.choose(&p.sender, &keys, &found).await?,
            };
            match decision {
                Some((customer, confidence, reason)) if confidence >= self.config.min_confidence => {
                    entry.customer_id = Some(customer);
                    entry.matched = Some(MatchInfo { confidence, reason, matcher: matcher_name.clone() });
                }
                decision => {
                    entry.triage = Some(Triage::Unmatched);
                    let reason = match (&decision, found.len()) {
                        (Some((_, confidence, reason)), _) => {
                            format!("{reason}, confidence {confidence} is below {}", self.config.min_confidence)
                        }
                        (None, 0) => "no customer has this address".to_owned(),
                        (None, n) => format!("{n} customers match equally"),
                    };
                    entry.matched = Some(MatchInfo { confidence: decision.map_or(0, |d| d.1), reason, matcher: matcher_name.clone() });
                }
            }
            out.push(self.finish(p, entry));
        }
        Ok(out)
    }

    /// Asks the matcher to pick among several customers.
    async fn choose(
        &self,
        sender: &Sender,
        keys: &[LookupKey],
        found: &[(Uuid, Vec<u32>)],
    ) -> Result<Option<(Uuid, u8, String)>, StoreError> {
        let ids: Vec<Uuid> = found.iter().map(|(id, _)| *id).collect();
        let customers = self.store.get_many::<Customer>(&ids).await?;
        let candidates: Vec<Candidate> = found
            .iter()
            .filter_map(|(id, matched)| {
                let customer = customers.iter().find(|c| c.id == *id)?;
                Some(Candidate {
                    id: id.to_string(),
                    name: customer.data.name.clone(),
                    organization: customer.data.organization.clone(),
                    matched_keys: matched.clone(),
                })
            })
            .collect();
        match self.matcher.choose(sender, keys, &candidates) {
            Ok(Some(choice)) => Ok(candidates
                .get(choice.candidate as usize)
                .and_then(|c| Uuid::parse_str(&c.id).ok())
                .map(|id| (id, choice.confidence.min(100), choice.reason))),
            Ok(None) => Ok(None),
            Err(error) => {
                tracing::warn!(%error, "matcher failed to choose; the message goes to the unmatched inbox");
                Ok(None)
            }
        }
    }

    /// Adds the files of an entry: a media record each, and a command to the file store.
    fn finish(&self, p: &Pending, mut entry: CommsEntry) -> InboundEntry {
        let mut media = Vec::new();
        let mut commands = Vec::new();
        let folder = match entry.customer_id {
            Some(customer) => format!("customers/{customer}/comms/{}", p.id),
            None => format!("inbox/{}", p.id),
        };
        for (index, attachment) in &p.files {
            let Some(content) = &attachment.content else { continue };
            let kept = &mut entry.attachments[*index];
            let media_id = Uuid::now_v7();
            kept.media_id = Some(media_id);
            let path = format!("{folder}/{}", crm_domain::comms::stored_file_name(&(index + 1).to_string(), &kept.filename));
            let record = Media {
                customer_id: entry.customer_id,
                order_id: None,
                comms_id: Some(p.id),
                filename: kept.filename.clone(),
                nextcloud_path: None,
                mime_type: crm_domain::comms::mime_type(&kept.mime_type).unwrap_or_else(|_| "application/octet-stream".into()),
                size: None,
                sha256: None,
                direction: MediaDirection::Received,
                tags: Vec::new(),
                uploaded_by: entry.logged_by.clone(),
                status: MediaStatus::Pending,
                status_reason: None,
            };
            media.push((media_id, record.awaiting(&path, &content.0)));
            let command = StoreFile { media_id, path, mime_type: kept.mime_type.clone(), overwrite: false, content: content.clone() };
            let trace = Trace { traceparent: None, request_id: entry.raw_event_id.clone() };
            commands.push(Envelope::new(&self.config.source, &command, trace).to_structured());
        }
        InboundEntry { id: p.id, entry, answers: p.answers.clone(), answers_entries: p.answers_entries.clone(), media, commands }
    }

    async fn apply(&self, action: &Action) -> Result<(), StoreError> {
        match action {
            Action::Status(status) => {
                let state = match status.status {
                    DeliveryState::Sent => DeliveryStatus::Sent,
                    DeliveryState::Delivered => DeliveryStatus::Delivered,
                    DeliveryState::Read => DeliveryStatus::Read,
                    DeliveryState::Failed => DeliveryStatus::Failed,
                };
                let key = status.channel_message_id.as_deref().map(|id| (status.channel.as_str(), id));
                let outcome = match self.store.record_delivery(status.entry_id, key, state, status.reason.clone()).await? {
                    DeliveryRecorded::Entry(_) => "status",
                    DeliveryRecorded::Held => {
                        tracing::info!(channel_message_id = ?status.channel_message_id, "a delivery report for a message id no entry has yet: held until one gets it");
                        "status_held"
                    }
                    DeliveryRecorded::Unknown => {
                        tracing::info!(entry_id = ?status.entry_id, "a delivery report for an entry not in the log");
                        "status_unknown_message"
                    }
                };
                metrics::counter!("ingest_events_total", "outcome" => outcome).increment(1);
            }
            Action::File(result) => {
                let media_id = result.media_id.expect("checked when decoded");
                let stored = match &result.outcome {
                    FileOutcome::Stored { size, sha256 } => {
                        FileStored::Stored { path: result.path.clone(), size: *size, sha256: sha256.clone() }
                    }
                    FileOutcome::Failed { reason } => FileStored::Failed { reason: reason.clone(), path: Some(result.path.clone()) },
                };
                self.store.record_file_result(media_id, stored).await?;
                metrics::counter!("ingest_events_total", "outcome" => "file_result").increment(1);
            }
            Action::Heartbeat(beat) => {
                self.store
                    .record_heartbeat(&ConnectorInstance {
                        name: beat.name.clone(),
                        instance: beat.instance.clone(),
                        version: beat.version.clone(),
                        channel: beat.channel.as_str().to_owned(),
                        started_at: beat.started_at,
                        last_heartbeat: Utc::now(),
                        state: serde_json::to_value(beat.state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                        detail: beat.detail.clone(),
                        in_flight: i64::from(beat.in_flight),
                        interval_seconds: i64::from(beat.interval_seconds),
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

/// Notes that lookup key `key` found `customer`.
fn note(found: &mut Vec<(Uuid, Vec<u32>)>, customer: Uuid, key: usize) {
    match found.iter_mut().find(|(c, _)| *c == customer) {
        Some((_, matched)) => matched.push(key as u32),
        None => found.push((customer, vec![key as u32])),
    }
}

enum Decoded {
    Inbound(Box<Pending>),
    Other(Action),
    Ignored(&'static str),
}

enum Action {
    Status(StatusEvent),
    File(FileResult),
    Heartbeat(Heartbeat),
}

/// The delivery at `index`, taken out of `slots` to be settled (each is settled once).
fn take(slots: &mut [Option<Delivery>], index: usize) -> Delivery {
    slots[index].take().expect("each delivery is settled once")
}

/// An event the store refused for a reason waiting will not fix: retried with backoff, then
/// dead-lettered by the bus.
async fn settle_failure(delivery: Delivery, reason: &str) {
    tracing::warn!(%reason, id = %delivery.envelope.id, "event failed; retrying later");
    metrics::counter!("ingest_events_total", "outcome" => "retried").increment(1);
    if let Err(err) = delivery.retry(reason).await {
        tracing::warn!(%err, "could not schedule a retry; the bus puts the event back in the queue");
    }
}

async fn requeue(delivery: Delivery) {
    if let Err(err) = delivery.requeue().await {
        tracing::debug!(%err, "requeue failed; the broker redelivers anyway");
    }
}

/// The character PostgreSQL cannot store in text (22021) or jsonb (22P05); SQLite can.
const NUL: char = '\u{0}';

/// `envelope` with U+0000 replaced by U+FFFD in its id, its source and every string (and key) of
/// its data, so that what ingest stores from it is storable, and the same, on both backends.
/// Borrowed unchanged when there is none: JSON can only carry it escaped, as `\u0000`.
fn without_nul(envelope: &Envelope) -> Cow<'_, Envelope> {
    let in_data = envelope.data.split(|&b| b == b'\\').skip(1).any(|after| after.starts_with(b"u0000"));
    if !in_data && !envelope.id.contains(NUL) && !envelope.source.contains(NUL) {
        return Cow::Borrowed(envelope);
    }
    let mut cleaned = envelope.clone();
    cleaned.id = clean(&envelope.id);
    cleaned.source = clean(&envelope.source);
    if in_data && let Ok(mut data) = serde_json::from_slice::<serde_json::Value>(&envelope.data) {
        replace_nul(&mut data);
        cleaned.data = serde_json::to_vec(&data).expect("a JSON value serializes");
    }
    Cow::Owned(cleaned)
}

fn clean(text: &str) -> String {
    text.replace(NUL, "\u{fffd}")
}

fn replace_nul(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) if text.contains(NUL) => *text = clean(text),
        serde_json::Value::Array(items) => items.iter_mut().for_each(replace_nul),
        serde_json::Value::Object(fields) => {
            if fields.keys().any(|k| k.contains(NUL)) {
                *fields = std::mem::take(fields).into_iter().map(|(k, v)| (clean(&k), v)).collect();
            }
            fields.values_mut().for_each(replace_nul);
        }
        _ => {}
    }
}

/// `connector:<name>` from a source such as `/connectors/email/host-123`.
fn connector_of(source: &str) -> String {
    let mut parts = source.trim_matches('/').split('/');
    match (parts.next(), parts.next()) {
        (Some("connectors"), Some(name)) if !name.is_empty() => format!("connector:{name}"),
        _ => format!("connector:{}", source.trim_matches('/')),
    }
}

fn sender_of(kind: CommsType, from: &Address) -> Sender {
    let channel = match (kind, from.kind) {
        (CommsType::Email, _) => matching::Channel::Email,
        (CommsType::Whatsapp, _) => matching::Channel::Whatsapp,
        (_, BusAddressKind::Phone) => matching::Channel::Phone,
        _ => matching::Channel::Other,
    };
    Sender { channel, address: from.value.clone(), display_name: from.name.clone() }
}

/// The sender as kept on the entry, with the normalised form the matcher derived.
fn channel_address(sender: &Sender, keys: &[LookupKey]) -> ChannelAddress {
    let strong = keys.iter().find(|k| matches!(k.kind, KeyKind::Email | KeyKind::Phone));
    let kind = match (strong.map(|k| k.kind), sender.channel) {
        (Some(KeyKind::Email), _) | (None, matching::Channel::Email) => AddressKind::Email,
        _ => AddressKind::Phone,
    };
    ChannelAddress { kind, value: sender.address.clone(), normalized: strong.map(|k| k.value.clone()), name: sender.display_name.clone() }
}

fn address(a: &Address, normalized: Option<String>) -> ChannelAddress {
    let kind = match a.kind {
        BusAddressKind::Email => AddressKind::Email,
        BusAddressKind::Phone => AddressKind::Phone,
    };
    ChannelAddress { kind, value: a.value.clone(), normalized, name: a.name.clone() }
}

fn cut(body: String) -> String {
    match body.char_indices().nth(MAX_BODY_CHARS) {
        Some((at, _)) => format!("{}\n[… cut: the message is longer than {MAX_BODY_CHARS} characters]", &body[..at]),
        None => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_names_come_from_the_source() {
        assert_eq!(connector_of("/connectors/email/host-1"), "connector:email");
        assert_eq!(connector_of("/somewhere"), "connector:somewhere");
    }

    #[test]
    fn nul_becomes_the_replacement_character_everywhere() {
        let message = MessageReceived {
            channel: Channel::Email,
            channel_message_id: "<a\u{0}@x>".into(),
            from: Address::email("a@x", Some("A\u{0}".into())),
            to: Vec::new(),
            cc: Vec::new(),
            subject: Some("a\u{0}b".into()),
            body: "\\u0000 is not U+0000".into(),
            occurred_at: Utc::now(),
            in_reply_to: None,
            references: vec!["<r\u{0}@x>".into()],
            auto_reply: false,
            attachments: Vec::new(),
        };
        let mut envelope = Envelope::new("/connectors/email/\u{0}", &message, Trace::default());
        envelope.id = "id\u{0}".into();
        let cleaned = without_nul(&envelope);
        assert!(matches!(cleaned, Cow::Owned(_)));
        assert_eq!((cleaned.id.as_str(), cleaned.source.as_str()), ("id\u{fffd}", "/connectors/email/\u{fffd}"));
        let decoded: MessageReceived = cleaned.decode().unwrap();
        assert_eq!(decoded.channel_message_id, "<a\u{fffd}@x>");
        assert_eq!(decoded.from.name.as_deref(), Some("A\u{fffd}"));
        assert_eq!(decoded.subject.as_deref(), Some("a\u{fffd}b"));
        assert_eq!(decoded.body, "\\u0000 is not U+0000", "an escaped backslash is not a NUL");
        assert_eq!(decoded.references, vec!["<r\u{fffd}@x>".to_owned()]);

        let plain = MessageReceived {
            channel_message_id: "<b@x>".into(),
            from: Address::email("a@x", None),
            subject: None,
            body: "nothing to replace".into(),
            references: Vec::new(),
            ..message
        };
        let plain = Envelope::new("/connectors/email/1", &plain, Trace::default());
        assert!(matches!(without_nul(&plain), Cow::Borrowed(_)), "no copy when there is nothing to replace");
    }

    #[test]
    fn long_bodies_are_cut_with_a_note() {
        let body = "α".repeat(MAX_BODY_CHARS + 5);
        let cut = cut(body);
        assert!(cut.starts_with(&"α".repeat(MAX_BODY_CHARS)));
        assert!(cut.ends_with("characters]"));
    }
}
