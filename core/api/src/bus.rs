//! Operations on the bus and the connectors: which connector instances are alive (from their
//! heartbeats), how full the queues and the outbox are, and the dead letters filed for ops,
//! which can be replayed (after a fix of their data, if need be) or discarded. A dead letter's
//! data may be any customer's: it is shown only to callers who may see every customer, and
//! replaced only by callers who may edit every customer.

use crate::AppState;
use crate::auth::{Ctx, Requirement, RouteRule};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Id, OptionalJsonBody, strict_query, typed};
use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use crm_bus::message::WaitingRecord;
use crm_bus::{Bus, BusError, Envelope, QueueStats};
use crm_domain::Violations;
use crm_domain::access::{Action, Area, Scope};
use crm_store::{ConnectorInstance, DeadLetter, OutboxFailure, Page, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use tracing::Instrument as _;
use uuid::Uuid;

/// The permission rules of the routes below.
pub(crate) fn rules() -> Vec<RouteRule> {
    let rule = |method: Method, path: &str, action: Action| RouteRule {
        method,
        path: path.to_owned(),
        requirement: Requirement::Permission(Area::Connectors, action),
    };
    vec![
        rule(Method::GET, "/api/v1/connectors", Action::View),
        rule(Method::GET, "/api/v1/bus", Action::View),
        rule(Method::GET, "/api/v1/bus/dead-letters", Action::View),
        rule(Method::GET, "/api/v1/bus/dead-letters/{id}", Action::View),
        rule(Method::POST, "/api/v1/bus/dead-letters/{id}/replay", Action::Edit),
        rule(Method::POST, "/api/v1/bus/dead-letters/{id}/discard", Action::Edit),
    ]
}

/// Connectors, the bus and its dead letters.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/connectors", get(connectors))
        .route("/bus", get(bus_status))
        .route("/bus/dead-letters", get(dead_letters))
        .route("/bus/dead-letters/{id}", get(dead_letter))
        .route("/bus/dead-letters/{id}/replay", post(replay))
        .route("/bus/dead-letters/{id}/discard", post(discard))
}

/// How a connector instance is doing, from its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum InstanceStatus {
    /// Heard from in time and ready.
    Up,
    /// Heard from in time, but starting or reporting trouble with its outside system.
    Degraded,
    /// Shutting down.
    Stopping,
    /// No heartbeat for three of its intervals.
    Lost,
}

/// One running (or lost) instance of a connector.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct InstanceView {
    /// Host and process.
    instance: String,
    /// Its version.
    version: String,
    /// When it started.
    started_at: DateTime<Utc>,
    /// Its last heartbeat.
    last_heartbeat: DateTime<Utc>,
    /// The state it reported (`starting`, `ready`, `degraded`, `stopping`).
    state: String,
    /// Detail it reported (its last error).
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// Commands it is working on.
    in_flight: i64,
    /// Seconds between its heartbeats.
    interval_seconds: i64,
    /// What ops should make of it.
    status: InstanceStatus,
}

/// A connector and its instances.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ConnectorView {
    /// Connector name (`email`, `files-local`).
    name: String,
    /// The channel it serves.
    channel: String,
    /// The best status of its instances (`up` if any is up).
    status: InstanceStatus,
    /// Versions its instances run, sorted.
    versions: Vec<String>,
    /// Its instances.
    instances: Vec<InstanceView>,
}

/// Every connector seen.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ConnectorList {
    /// By name.
    items: Vec<ConnectorView>,
}

fn instance_status(instance: &ConnectorInstance, now: DateTime<Utc>) -> InstanceStatus {
    let interval = chrono::Duration::seconds(instance.interval_seconds.max(1));
    if now - instance.last_heartbeat > interval * 3 {
        return InstanceStatus::Lost;
    }
    match instance.state.as_str() {
        "ready" => InstanceStatus::Up,
        "stopping" => InstanceStatus::Stopping,
        _ => InstanceStatus::Degraded,
    }
}

/// Connector instances grouped by connector, with a status computed from their heartbeats.
async fn connectors(ctx: Ctx) -> ApiResult<Json<ConnectorList>> {
    let now = Utc::now();
    let mut grouped: BTreeMap<String, ConnectorView> = BTreeMap::new();
    for instance in ctx.store.connector_instances().await? {
        let status = instance_status(&instance, now);
        let view = grouped.entry(instance.name.clone()).or_insert_with(|| ConnectorView {
            name: instance.name.clone(),
            channel: instance.channel.clone(),
            status,
            versions: Vec::new(),
            instances: Vec::new(),
        });
        view.status = view.status.min(status);
        if !view.versions.contains(&instance.version) {
            view.versions.push(instance.version.clone());
            view.versions.sort();
        }
        view.instances.push(InstanceView {
            instance: instance.instance,
            version: instance.version,
            started_at: instance.started_at,
            last_heartbeat: instance.last_heartbeat,
            state: instance.state,
            detail: instance.detail,
            in_flight: instance.in_flight,
            interval_seconds: instance.interval_seconds,
            status,
        });
    }
    Ok(Json(ConnectorList { items: grouped.into_values().collect() }))
}

/// Dead letters waiting for ops in one consumer group.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeadLetterCount {
    /// The consumer group.
    consumer: String,
    /// Dead letters neither replayed nor discarded.
    waiting: i64,
}

/// Outbox messages not yet published.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OutboxStatus {
    /// How many.
    backlog: i64,
    /// When the oldest was written.
    oldest_at: Option<DateTime<Utc>>,
    /// Its age in seconds.
    oldest_age_seconds: Option<i64>,
    /// The oldest unsent messages that failed at least once (up to 20), with their attempts and
    /// last error: retried with backoff while the others are published.
    failing: Vec<OutboxFailure>,
}

/// The state of the bus.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BusStatus {
    /// `in-process` or `rabbitmq`.
    transport: String,
    /// Whether the bus can publish now.
    ready: bool,
    /// The queues this core knows of; null when the broker cannot be asked (`queues_error`).
    queues: Option<Vec<QueueStats>>,
    /// Why the queues could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    queues_error: Option<String>,
    /// Dead letters waiting for ops, per consumer group.
    dead_letters: Vec<DeadLetterCount>,
    /// The outbox.
    outbox: OutboxStatus,
    /// Delivery reports that arrived before the outbound entry they are about had their channel
    /// message id, waiting for it (dropped after 30 days).
    held_delivery_reports: i64,
}

async fn bus_status(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Json<BusStatus>> {
    let (queues, queues_error) = match state.bus.queue_stats().await {
        Ok(queues) => (Some(queues), None),
        Err(err) => (None, Some(err.to_string())),
    };
    let dead_letters =
        ctx.store.dead_letter_counts().await?.into_iter().map(|(consumer, waiting)| DeadLetterCount { consumer, waiting }).collect();
    let (backlog, oldest_at) = ctx.store.outbox_backlog().await?;
    let failing = ctx.store.outbox_failing(20).await?;
    Ok(Json(BusStatus {
        transport: state.bus.transport().to_owned(),
        ready: state.bus.is_ready().await,
        queues,
        queues_error,
        dead_letters,
        outbox: OutboxStatus { backlog, oldest_at, oldest_age_seconds: oldest_at.map(|t| (Utc::now() - t).num_seconds().max(0)), failing },
        held_delivery_reports: ctx.store.held_delivery_reports().await?,
    }))
}

/// Where a dead letter stands.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeadLetterStatus {
    /// Waiting for ops.
    Dead,
    /// Put back on its queue.
    Replayed,
    /// Given up on.
    Discarded,
}

impl DeadLetterStatus {
    fn as_str(self) -> &'static str {
        match self {
            DeadLetterStatus::Dead => "dead",
            DeadLetterStatus::Replayed => "replayed",
            DeadLetterStatus::Discarded => "discarded",
        }
    }
}

/// Filters on dead letters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeadLetterParams {
    /// In this state.
    #[param(inline)]
    status: Option<DeadLetterStatus>,
    /// Given up on by this consumer group (`core.events`, `connector.email.commands`).
    consumer: Option<String>,
    /// Cursor from the previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1 to 200; 20 by default.
    limit: Option<u32>,
}

/// Whether the caller may act on every customer in `action`'s way.
fn on_every_customer(ctx: &Ctx, action: Action) -> bool {
    matches!(ctx.principal.require(Area::Customers, action), Ok(Scope::All))
}

/// `letter` as the caller may see it: unless the caller may see every customer, without the
/// message's data and subject (a file's path) and with its reason hidden (a refused address, a
/// file name, a panic's message may be in it).
fn shown(ctx: &Ctx, mut letter: DeadLetter) -> DeadLetter {
    if !on_every_customer(ctx, Action::View) {
        if let Some(envelope) = letter.envelope.as_object_mut() {
            for member in ["data", "data_base64", "subject"] {
                envelope.remove(member);
            }
        }
        letter.reason = "hidden: it may name a customer's address or file (needs customers:view on every customer)".into();
        letter.data_redacted = true;
    }
    letter
}

/// Dead letters, latest first.
async fn dead_letters(ctx: Ctx, RawQuery(raw): RawQuery) -> ApiResult<Json<Page<DeadLetter>>> {
    let params: DeadLetterParams = strict_query(raw.as_deref(), &["status", "consumer", "cursor", "limit"])?;
    let status = params.status.map(DeadLetterStatus::as_str);
    let mut page = ctx.store.dead_letters(status, params.consumer.as_deref(), params.cursor.as_deref(), params.limit).await?;
    page.items = page.items.into_iter().map(|letter| shown(&ctx, letter)).collect();
    Ok(Json(page))
}

fn no_dead_letter(err: crm_store::StoreError, id: Uuid) -> ApiError {
    match err {
        crm_store::StoreError::NotFound => ApiError::NotFound(format!("no dead letter {id}")),
        other => other.into(),
    }
}

async fn dead_letter(ctx: Ctx, Id(id): Id) -> ApiResult<Json<DeadLetter>> {
    Ok(Json(shown(&ctx, ctx.store.dead_letter(id).await.map_err(|e| no_dead_letter(e, id))?)))
}

/// What to replay: the message as it was, or with new data.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    /// Data to replace the message's data with (a JSON object), after fixing what made it fail.
    /// Only for callers who may edit every customer.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// Puts a dead letter back on its consumer group's queue (as a first attempt, with new data if
/// given: only by those who may edit every customer) and marks it replayed. A replayed send puts its failed log entry back to `queued`. The
/// letter is leased while it is published, so two replays of it at once publish it once.
async fn replay(
    State(state): State<AppState>,
    ctx: Ctx,
    Id(id): Id,
    OptionalJsonBody(body): OptionalJsonBody,
) -> ApiResult<Json<DeadLetter>> {
    let request: ReplayRequest = match body {
        Some(body) => typed(body)?,
        None => ReplayRequest { data: None },
    };
    if request.data.is_some() && !on_every_customer(&ctx, Action::Edit) {
        return Err(ApiError::Forbidden("replaying a message with new data needs customers:edit on every customer".into()));
    }
    let letter = ctx.store.dead_letter(id).await.map_err(|e| no_dead_letter(e, id))?;
    if letter.status != "dead" {
        return Err(ApiError::Conflict {
            pointer: Some("/status".into()),
            detail: format!("the dead letter was already {}", letter.status),
        });
    }
    let mut envelope = Envelope::from_structured(&letter.envelope)
        .map_err(|e| ApiError::Conflict { pointer: Some("/envelope".into()), detail: format!("the stored message cannot be read: {e}") })?;
    if let Some(data) = request.data {
        if !data.is_object() {
            return Err(ApiError::Invalid(Violations::one("/data", "must be a JSON object")));
        }
        envelope.data = serde_json::to_vec(&data).map_err(ApiError::internal)?;
    }
    // Leased first: a second replay of the letter at the same moment is refused, not published.
    // The rest runs as a task of its own, so a client that goes away midway cannot cut it off
    // between the publish and marking the letter replayed.
    let lease = ctx.store.lease_dead_letter(id, REPLAY_LEASE).await.map_err(|e| no_dead_letter(e, id))?;
    let (store, bus, by) = (ctx.store.clone(), state.bus.clone(), ctx.principal.label());
    let replayed = tokio::spawn(
        async move {
            if let Err(err) = publish_replay(&store, &bus, &lease.letter.consumer, &envelope).await {
                if let Err(release) = store.release_dead_letter(&lease).await {
                    tracing::warn!(dead_letter = %id, error = %release, "cannot release the replay's lease; it ends by itself");
                }
                return Err(err);
            }
            tracing::info!(dead_letter = %id, consumer = %lease.letter.consumer, envelope.id = %envelope.id, "dead letter replayed");
            Ok(store.mark_replayed(&lease, &by).await?)
        }
        .in_current_span(),
    );
    Ok(Json(shown(&ctx, replayed.await.map_err(ApiError::internal)??)))
}

/// How long a replay holds its dead letter: far beyond the bus's confirm timeout, so only a
/// replay cut off midway (the server stopped) lets its lease end by itself.
const REPLAY_LEASE: chrono::Duration = chrono::Duration::minutes(5);

/// Publishes a replayed message to its consumer group. A send the keeper failed waits again
/// (before the publish: the connector's "sent" may come at once); refused for sure, it is failed
/// again as it was; when the bus may have taken it (no confirm, connection lost), it stays
/// queued: a later discard fails it.
async fn publish_replay(store: &Store, bus: &Bus, consumer: &str, envelope: &Envelope) -> ApiResult<()> {
    let requeued = match WaitingRecord::of(envelope) {
        Some(WaitingRecord::Entry(entry_id)) => store.requeue_failed_delivery(entry_id).await?.map(|reason| (entry_id, reason)),
        Some(WaitingRecord::Media(_)) | None => None,
    };
    match bus.replay(consumer, envelope).await {
        Ok(()) => Ok(()),
        Err(BusError::Invalid(detail) | BusError::Rejected(detail)) => {
            if let Some((entry_id, reason)) = requeued {
                store.fail_queued_delivery(entry_id, reason).await?;
            }
            Err(ApiError::Conflict { pointer: Some("/consumer".into()), detail: format!("cannot replay to {consumer}: {detail}") })
        }
        Err(other) => {
            Err(ApiError::ConnectorUnavailable { detail: format!("the message bus cannot take the message: {other}"), retry_after: 10 })
        }
    }
}

/// Marks a dead letter discarded: ops give up on it (and on the send it was, if it was one).
async fn discard(ctx: Ctx, Id(id): Id) -> ApiResult<Json<DeadLetter>> {
    let letter = ctx.store.resolve_dead_letter(id, "discarded", &ctx.principal.label()).await.map_err(|e| no_dead_letter(e, id))?;
    // Giving up on a send fails its entry, should it still be queued (a replay that may not
    // have gone out left it so).
    if let Some(WaitingRecord::Entry(entry_id)) = Envelope::from_structured(&letter.envelope).ok().as_ref().and_then(WaitingRecord::of) {
        let reason = format!("discarded by {} after being dead-lettered by {}: {}", ctx.principal.label(), letter.consumer, letter.reason);
        ctx.store.fail_queued_delivery(entry_id, reason).await?;
    }
    Ok(Json(shown(&ctx, letter)))
}
