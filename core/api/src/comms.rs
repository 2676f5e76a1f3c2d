//! The communications log over HTTP: its entries as a resource (`/api/v1/comms`: notes and
//! meetings logged by people; only the subject, body and time of an entry can be edited), a
//! customer's timeline, the unmatched inbox, and outbound messages, which are logged together
//! with their `SendMessage` command in one transaction and sent by a connector.

use crate::auth::{Ctx, Requirement, RouteRule};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Id, IdempotencyKeyHeader, IfMatch, JsonBody, body_limit, list_query, request_digest, strict_query, typed};
use crate::resources::{
    ApiResource, create_with_commands, created, customer_is_mine, linkable_customer, list_request, not_found, nul_character, parse_body,
    readable, replay, with_etag,
};
use crate::telemetry::RequestId;
use crate::{AppState, CORE_SOURCE};
use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SubsecRound as _, Utc};
use crm_bus::Envelope;
use crm_bus::message::{Address, Channel, SendMessage};
use crm_domain::access::{Action, Area, Scope};
use crm_domain::comms::{self, AddressKind, ChannelAddress, CommsEntry, CommsInput, CommsType, DeliveryStatus, Direction, Triage};
use crm_domain::contact::{Contact, ContactType, Email, PhoneE164, Region};
use crm_domain::customer::Customer;
use crm_domain::error::optional_text;
use crm_domain::{Record, Violations, strip_read_only};
use crm_store::{CommsFilter, IdempotencyKey, ListQuery, Page, SortDirection};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Filter parameters for the communications log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CommsParams {
    /// About this customer.
    customer_id: Option<Uuid>,
    /// Of this type.
    #[serde(rename = "type")]
    #[param(rename = "type", inline)]
    kind: Option<CommsType>,
    /// In this direction: `inbound`, `outbound` or `internal`. As in every listing, `asc` or
    /// `desc` sort the listing instead; the parameter may be given once of each kind.
    #[param(value_type = Option<String>)]
    direction: Option<Direction>,
    /// Happened at or after this time (RFC 3339).
    #[serde(default, deserialize_with = "crm_domain::deserialize_storable_time")]
    occurred_from: Option<DateTime<Utc>>,
    /// Happened before this time (RFC 3339).
    #[serde(default, deserialize_with = "crm_domain::deserialize_storable_time")]
    occurred_to: Option<DateTime<Utc>>,
    /// In this conversation (the id of its first entry).
    thread_id: Option<Uuid>,
    /// In this triage state (`unmatched`: waiting in the inbox).
    #[param(inline)]
    triage: Option<Triage>,
}

/// The filter parameters of the log; a timeline takes them all but `customer_id`.
const COMMS_FILTERS: &[&str] = &["customer_id", "type", "direction", "occurred_from", "occurred_to", "thread_id", "triage"];

/// Read-only fields that are input on create (a new entry names its customer, type and
/// direction) and may not change afterwards.
const SET_ON_CREATE: [&str; 3] = ["/customer_id", "/type", "/direction"];

impl ApiResource for CommsEntry {
    const PATH: &'static str = "comms";
    const NAME: &'static str = "log entry";
    const READ_ONLY: &'static [&'static str] = comms::READ_ONLY;
    const FILTERS: &'static [&'static str] = COMMS_FILTERS;
    const AREA: Area = Area::Customers;
    const DEFAULT_SORT: &'static str = "occurred_at";
    /// A body of 100,000 characters, each JSON-escaped (12 bytes beyond the BMP), and a subject.
    const BODY_LIMIT: usize = MAX_ENTRY_REQUEST_BYTES;
    type Input = CommsInput;
    type FilterParams = CommsParams;

    /// A new entry is logged by nobody yet ([`ApiResource::create`] names the principal); an
    /// edit changes only the subject, body and time.
    async fn parse(_: &AppState, input: CommsInput, current: Option<&Self>) -> ApiResult<Self> {
        Ok(match current {
            None => input.parse_new(String::new(), Utc::now())?,
            Some(current) => input.parse_edit(current, Utc::now())?,
        })
    }

    fn filter(p: CommsParams) -> CommsFilter {
        CommsFilter {
            customer_id: p.customer_id,
            kind: p.kind,
            direction: p.direction,
            occurred_from: p.occurred_from,
            occurred_to: p.occurred_to,
            triage: p.triage,
            thread_id: p.thread_id,
            ..CommsFilter::default()
        }
    }

    fn restrict(filter: &mut CommsFilter, user: Uuid) {
        filter.customer_assigned_to = Some(user);
    }

    /// On create, the read-only fields other than customer, type and direction are dropped. On
    /// an edit every read-only field may be sent back unchanged (and is dropped); a changed one
    /// is refused with its pointer.
    fn prepare(body: &mut Value, current: Option<&Self>) -> ApiResult<()> {
        strip_read_only(body, &[]);
        let Some(fields) = body.as_object_mut() else { return Ok(()) };
        let Some(current) = current else {
            for pointer in comms::READ_ONLY.iter().filter(|p| !SET_ON_CREATE.contains(p)) {
                fields.remove(&pointer[1..]);
            }
            return Ok(());
        };
        let echoed = serde_json::to_value(current).map_err(ApiError::internal)?;
        let mut errors = Violations::default();
        for pointer in comms::READ_ONLY {
            let name = &pointer[1..];
            let Some(sent) = fields.remove(name) else { continue };
            if sent != *echoed.get(name).unwrap_or(&Value::Null) {
                let detail = match *pointer {
                    "/customer_id" => "cannot be changed (an unmatched entry is assigned through the inbox)",
                    _ => "cannot be changed: only subject, body and occurred_at can (and not those of a message sent through crm-hub)",
                };
                errors.push(*pointer, detail);
            }
        }
        errors.finish(|| ()).map_err(ApiError::Invalid)
    }

    /// Logs an entry by hand for a customer the principal may edit, as theirs.
    async fn create(ctx: &Ctx, state: &AppState, body: Value) -> ApiResult<Response> {
        let scope = ctx.principal.require(Self::AREA, Action::Edit)?;
        let mut data = parse_body::<Self>(state, body, None).await?;
        data.logged_by = ctx.principal.label();
        if let Some(customer) = data.customer_id {
            linkable_customer(ctx, scope, customer, "/customer_id").await?;
        }
        Ok(created(ctx.store.create(data).await?))
    }

    /// Those who reach only their own customers reach only their customers' entries.
    async fn check_scope(ctx: &Ctx, scope: Scope, data: &Self) -> ApiResult<()> {
        if scope == Scope::All || customer_is_mine(ctx, data.customer_id).await? {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this log entry's customer is not assigned to you".into()))
        }
    }
}

/// The permission rules of the routes below.
pub(crate) fn rules() -> Vec<RouteRule> {
    let rule = |method: Method, path: &str, requirement: Requirement| RouteRule { method, path: path.to_owned(), requirement };
    let triage = Requirement::PermissionOnAll(Area::Customers, Action::Edit);
    vec![
        rule(Method::GET, "/api/v1/customers/{id}/timeline", Requirement::Permission(Area::Customers, Action::View)),
        rule(Method::POST, "/api/v1/customers/{id}/messages", Requirement::Permission(Area::Customers, Action::Edit)),
        rule(Method::GET, "/api/v1/inbox", triage),
        rule(Method::POST, "/api/v1/inbox/{id}/assign", triage),
        rule(Method::POST, "/api/v1/inbox/{id}/dismiss", triage),
    ]
}

/// The longest body and HTML body of an outbound message, in characters.
const MAX_BODY_CHARS: usize = 100_000;
const MAX_HTML_CHARS: usize = 1_000_000;

/// The largest request to log or edit an entry: its body at its limit fits even with every
/// character JSON-escaped.
const MAX_ENTRY_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The largest request to send a message: both bodies at their limits fit even with every
/// character JSON-escaped (`\uXXXX`, twice for one beyond the BMP: 12 bytes), so that a body past
/// its limit is refused with its pointer rather than the whole request with a 413.
const MAX_MESSAGE_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// A customer's timeline, outbound messages and the unmatched inbox.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/customers/{id}/timeline", get(timeline))
        .route("/customers/{id}/messages", body_limit(post(send_message), MAX_MESSAGE_REQUEST_BYTES))
        .route("/inbox", get(inbox))
        .route("/inbox/{id}/assign", post(assign))
        .route("/inbox/{id}/dismiss", post(dismiss))
}

/// The filter parameters a timeline takes.
pub(crate) fn timeline_filters() -> &'static [&'static str] {
    &COMMS_FILTERS[1..]
}

/// A customer's entries, latest first unless sorted otherwise; 404 for an unknown customer.
async fn timeline(
    State(state): State<AppState>,
    ctx: Ctx,
    Id(id): Id,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Page<Record<CommsEntry>>>> {
    readable::<Customer>(&ctx, id, Action::View, true).await?;
    let (params, filter) = list_query::<CommsParams>(raw.as_deref(), timeline_filters())?;
    let filter = CommsFilter { customer_id: Some(id), ..CommsEntry::filter(filter) };
    let query = list_request(&state, params, filter, CommsEntry::DEFAULT_SORT);
    Ok(Json(ctx.store.list::<CommsEntry>(&query).await?))
}

/// Parameters of the unmatched inbox.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct InboxParams {
    /// Of this type.
    #[serde(rename = "type")]
    #[param(rename = "type", inline)]
    kind: Option<CommsType>,
    /// Cursor from the previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1 to 200; 20 by default.
    limit: Option<u32>,
}

/// Entries whose sender matched no customer, latest first.
async fn inbox(ctx: Ctx, RawQuery(raw): RawQuery) -> ApiResult<Json<Page<Record<CommsEntry>>>> {
    let params: InboxParams = strict_query(raw.as_deref(), &["type", "cursor", "limit"])?;
    let query = ListQuery {
        filter: CommsFilter { triage: Some(Triage::Unmatched), kind: params.kind, ..CommsFilter::default() },
        sort: Some("occurred_at".into()),
        direction: SortDirection::Desc,
        cursor: params.cursor,
        limit: params.limit,
        ..ListQuery::default()
    };
    Ok(Json(ctx.store.list::<CommsEntry>(&query).await?))
}

/// The customer an unmatched entry belongs to.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AssignRequest {
    /// The customer (required).
    #[serde(default)]
    customer_id: Option<Uuid>,
}

/// What assigning an unmatched entry did.
#[derive(Debug, Serialize)]
pub(crate) struct AssignResponse {
    entry: Record<CommsEntry>,
    contact_added: bool,
    also_assigned: u64,
}

/// Assigns an unmatched entry to a customer, adds the sender's address to the customer's
/// contacts, and assigns the other unmatched entries from that address with it.
async fn assign(ctx: Ctx, Id(id): Id, IfMatch(version): IfMatch, JsonBody(body): JsonBody) -> ApiResult<Response> {
    let request: AssignRequest = typed(body)?;
    let customer = request.customer_id.ok_or_else(|| ApiError::Invalid(Violations::one("/customer_id", "is required")))?;
    let assigned = ctx.store.assign_unmatched(id, customer, version).await.map_err(|e| not_found::<CommsEntry>(e, id))?;
    let tag = crate::extract::etag(assigned.entry.version);
    let mut response =
        Json(AssignResponse { entry: assigned.entry, contact_added: assigned.contact_added, also_assigned: assigned.also_assigned })
            .into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&tag) {
        response.headers_mut().insert(axum::http::header::ETAG, value);
    }
    Ok(response)
}

/// Takes an entry out of the unmatched inbox without a customer (spam, not a customer).
async fn dismiss(ctx: Ctx, Id(id): Id, IfMatch(version): IfMatch) -> ApiResult<Response> {
    let record = ctx.store.dismiss_unmatched(id, version).await.map_err(|e| not_found::<CommsEntry>(e, id))?;
    Ok(with_etag(StatusCode::OK, record))
}

/// The channels the core sends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutboundChannel {
    /// Email.
    Email,
    /// WhatsApp.
    Whatsapp,
    /// Text message.
    Sms,
}

impl OutboundChannel {
    fn bus(self) -> Channel {
        match self {
            OutboundChannel::Email => Channel::Email,
            OutboundChannel::Whatsapp => Channel::Whatsapp,
            OutboundChannel::Sms => Channel::Sms,
        }
    }

    fn kind(self) -> CommsType {
        match self {
            OutboundChannel::Email => CommsType::Email,
            OutboundChannel::Whatsapp => CommsType::Whatsapp,
            OutboundChannel::Sms => CommsType::Sms,
        }
    }

    /// The contact types a recipient is taken from, in order of preference.
    fn contact_types(self) -> &'static [ContactType] {
        match self {
            OutboundChannel::Email => &[ContactType::Email],
            OutboundChannel::Whatsapp => &[ContactType::Whatsapp, ContactType::Phone],
            OutboundChannel::Sms => &[ContactType::Phone],
        }
    }
}

/// A message to send to a customer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendRequest {
    /// The channel (required).
    #[serde(default)]
    channel: Option<OutboundChannel>,
    /// Recipients: email addresses, or phone numbers for WhatsApp and SMS. By default the
    /// customer's primary (else first) contact of the channel's kind: email; WhatsApp, else
    /// phone, for WhatsApp; phone for SMS.
    #[serde(default)]
    to: Option<Vec<String>>,
    /// Copied recipients (email only).
    #[serde(default)]
    cc: Vec<String>,
    /// Subject (required for email), up to 998 characters.
    #[serde(default)]
    subject: Option<String>,
    /// Plain-text body (required), up to 100,000 characters.
    #[serde(default)]
    body: Option<String>,
    /// HTML body (email only).
    #[serde(default)]
    body_html: Option<String>,
    /// A log entry of this customer that the message answers: the message joins its thread
    /// and refers to its channel message.
    #[serde(default)]
    in_reply_to: Option<Uuid>,
}

/// A recipient as the command names it and as the log keeps it.
fn recipient(channel: OutboundChannel, text: &str, region: Region) -> Result<(Address, ChannelAddress), String> {
    if channel == OutboundChannel::Email {
        let email = Email::parse(text)?;
        let kept =
            ChannelAddress { kind: AddressKind::Email, value: email.as_str().to_owned(), normalized: Some(email.canonical()), name: None };
        Ok((Address::email(email.as_str(), None), kept))
    } else {
        let phone = PhoneE164::parse(text, region)?;
        let kept = ChannelAddress {
            kind: AddressKind::Phone,
            value: text.trim().to_owned(),
            normalized: Some(phone.as_str().to_owned()),
            name: None,
        };
        Ok((Address::phone(phone.as_str(), None), kept))
    }
}

/// The customer's contact a message on `channel` goes to by default.
fn default_contact(customer: &Customer, channel: OutboundChannel) -> Option<&Contact> {
    channel.contact_types().iter().find_map(|kind| {
        let mut of_kind = customer.contacts.iter().filter(|c| c.kind == *kind);
        of_kind.clone().find(|c| c.primary).or_else(|| of_kind.next())
    })
}

fn contact_recipient(customer: &Customer, contact: &Contact) -> (Address, ChannelAddress) {
    let name = Some(customer.name.clone());
    let (kind, sent) = match contact.kind {
        ContactType::Email => (AddressKind::Email, Address::email(contact.value.clone(), name.clone())),
        _ => (AddressKind::Phone, Address::phone(contact.normalized.clone(), name.clone())),
    };
    (sent, ChannelAddress { kind, value: contact.value.clone(), normalized: Some(contact.normalized.clone()), name })
}

/// What a valid send request becomes.
struct Outbound {
    entry: CommsEntry,
    command: SendMessage,
}

/// Validates a send request for `customer`, reporting every problem with its pointer.
async fn outbound(ctx: &Ctx, region: Region, customer: &Record<Customer>, request: SendRequest, entry_id: Uuid) -> ApiResult<Outbound> {
    let mut errors = Violations::default();
    let channel = request.channel.unwrap_or(OutboundChannel::Email);
    if request.channel.is_none() {
        errors.push("/channel", "is required: email, whatsapp or sms");
    }
    let body = request.body.unwrap_or_default();
    if body.trim().is_empty() {
        errors.push("/body", "is required");
    } else if body.chars().count() > MAX_BODY_CHARS {
        errors.push("/body", format!("must be at most {MAX_BODY_CHARS} characters"));
    }
    let subject = errors.check("/subject", optional_text(request.subject.as_deref().unwrap_or(""), 998)).flatten();
    if subject.is_none() && channel == OutboundChannel::Email && request.channel.is_some() {
        errors.push("/subject", "is required for email");
    }
    let body_html = request.body_html.filter(|html| !html.trim().is_empty());
    if body_html.is_some() && channel != OutboundChannel::Email {
        errors.push("/body_html", "only email has an HTML body");
    }
    if body_html.as_ref().is_some_and(|html| html.chars().count() > MAX_HTML_CHARS) {
        errors.push("/body_html", format!("must be at most {MAX_HTML_CHARS} characters"));
    }
    let mut to = Vec::new();
    match &request.to {
        Some(addresses) if addresses.is_empty() => errors.push("/to", "name at least one recipient, or leave `to` out"),
        Some(addresses) => {
            for (i, text) in addresses.iter().enumerate() {
                if let Some(found) = errors.check(format!("/to/{i}"), recipient(channel, text, region)) {
                    to.push(found);
                }
            }
        }
        None => match default_contact(&customer.data, channel) {
            Some(contact) => to.push(contact_recipient(&customer.data, contact)),
            None if request.channel.is_some() => {
                let kinds = channel.contact_types().iter().map(|k| format!("{k:?}").to_lowercase()).collect::<Vec<_>>().join(" or ");
                errors.push("/to", format!("the customer has no {kinds} contact: name the recipients"));
            }
            None => {}
        },
    }
    let mut cc = Vec::new();
    if !request.cc.is_empty() && channel != OutboundChannel::Email {
        errors.push("/cc", "only email has copied recipients");
    } else {
        for (i, text) in request.cc.iter().enumerate() {
            if let Some(found) = errors.check(format!("/cc/{i}"), recipient(channel, text, region)) {
                cc.push(found);
            }
        }
    }
    let answered = match request.in_reply_to {
        None => None,
        Some(entry) => match ctx.store.get::<CommsEntry>(entry, false).await {
            Ok(found) if found.data.customer_id == Some(customer.id) => Some(found),
            Ok(_) | Err(crm_store::StoreError::NotFound) => {
                errors.push("/in_reply_to", format!("no log entry {entry} of this customer"));
                None
            }
            Err(other) => return Err(other.into()),
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let in_reply_to = answered.as_ref().and_then(|a| a.data.ext_message_id.clone());
    let mut references = answered.as_ref().map(|a| a.data.references.clone()).unwrap_or_default();
    if let Some(id) = &in_reply_to
        && !references.contains(id)
    {
        references.push(id.clone());
    }
    let thread_id = answered.as_ref().map_or(entry_id, |a| a.data.thread_id.unwrap_or(a.id));
    let entry = CommsEntry {
        customer_id: Some(customer.id),
        kind: channel.kind(),
        direction: Direction::Outbound,
        subject: subject.clone(),
        body: body.clone(),
        attachments: Vec::new(),
        ext_message_id: None,
        channel_address: None,
        recipients: to.iter().chain(&cc).map(|(_, kept)| kept.clone()).collect(),
        logged_by: ctx.principal.label(),
        occurred_at: Utc::now().trunc_subsecs(6),
        thread_id: Some(thread_id),
        in_reply_to: in_reply_to.clone(),
        references: references.clone(),
        delivery_status: Some(DeliveryStatus::Queued),
        status_reason: None,
        raw_event_id: None,
        matched: None,
        triage: None,
        auto_reply: false,
    };
    let command = SendMessage {
        entry_id,
        channel: channel.bus(),
        to: to.into_iter().map(|(sent, _)| sent).collect(),
        cc: cc.into_iter().map(|(sent, _)| sent).collect(),
        subject,
        body,
        body_html,
        in_reply_to,
        references,
        attachments: Vec::new(),
    };
    Ok(Outbound { entry, command })
}

/// Sends a message to a customer: logs it as a queued outbound entry and writes the
/// `SendMessage` command to the outbox in the same transaction (both or neither), then wakes
/// the relay. 202: the connector sends it, and its delivery reports update the entry.
async fn send_message(
    State(state): State<AppState>,
    ctx: Ctx,
    Id(id): Id,
    request_id: RequestId,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    // A retry of a request already taken gets its entry back, whatever changed since: even
    // when the customer was deleted meanwhile (the message is on its way all the same).
    let key = key.map(|key| IdempotencyKey { key, request: request_digest(&format!("POST /customers/{id}/messages"), &body) });
    let customer = readable::<Customer>(&ctx, id, Action::Edit, key.is_some()).await?;
    if let Some(replayed) = replay::<CommsEntry>(&ctx, key.as_ref()).await? {
        return Ok(replayed);
    }
    if customer.deleted_at.is_some() {
        return Err(not_found::<Customer>(crm_store::StoreError::NotFound, id));
    }
    if let Some(pointer) = nul_character(&body, String::new()) {
        return Err(ApiError::Invalid(Violations::one(pointer, "must not contain the NUL character (U+0000)")));
    }
    let request: SendRequest = typed(body)?;
    let entry_id = Uuid::now_v7();
    let Outbound { entry, command } = outbound(&ctx, state.default_region, &customer, request, entry_id).await?;
    let envelope = Envelope::new(CORE_SOURCE, &command, request_id.trace()).to_structured();
    create_with_commands(&state, &ctx, key.as_ref(), entry_id, entry, &[envelope]).await
}
