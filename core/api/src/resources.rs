//! The REST surface of every record type, written once: list, create, get, replace (PUT),
//! merge-patch (PATCH, RFC 7396), soft delete and restore, with ETags for optimistic
//! concurrency. Each record type says how its input is parsed and which filters it takes.

use crate::AppState;
use crate::auth::{Ctx, Requirement, RouteRule};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Id, IfMatch, JsonBody, ListParams, body_limit, etag, list_query, strict_query, typed};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use chrono::Utc;
use crm_domain::access::{Action, Area, Scope};
use crm_domain::contact::phone_query_digits;
use crm_domain::customer::{self, Customer, CustomerInput, CustomerStatus};
use crm_domain::order::{self, Order, OrderInput, OrderStatus, PaymentStatus, ProductRef};
use crm_domain::product::{self, Product, ProductCategory, ProductInput};
use crm_domain::{Record, search_terms, strip_read_only};
use crm_store::{AuditEntry, AuditQuery, Created, CustomerFilter, IdempotencyKey, ListQuery, OrderFilter, Page, ProductFilter, Resource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use uuid::Uuid;

/// A record type served over HTTP.
pub(crate) trait ApiResource: Resource + Serialize + Clone + utoipa::ToSchema {
    /// Path segment under `/api/v1`, e.g. `customers`.
    const PATH: &'static str;
    /// Singular name for messages.
    const NAME: &'static str;
    /// Fields clients may echo back but never set.
    const READ_ONLY: &'static [&'static str];
    /// Names of the resource's filter parameters.
    const FILTERS: &'static [&'static str];
    /// What clients send.
    type Input: DeserializeOwned + utoipa::ToSchema;
    /// The filter parameters as sent.
    type FilterParams: DeserializeOwned + utoipa::IntoParams;

    /// The permission area.
    const AREA: Area;
    /// Whether records can be replaced and patched (else only created and deleted).
    const EDITABLE: bool = true;
    /// Whether deleted records can be restored.
    const RESTORABLE: bool = true;
    /// Whether creating also takes `multipart/form-data` uploads (documented as such).
    const UPLOADS: bool = false;
    /// The sort of a listing that names none.
    const DEFAULT_SORT: &'static str = "created_at";

    /// Validates input into data, looking up what it refers to. `current` is the record's data
    /// when the input replaces it (PUT, PATCH), absent on create.
    fn parse(state: &AppState, input: Self::Input, current: Option<&Self>) -> impl Future<Output = ApiResult<Self>> + Send;

    /// The store filter for the parameters.
    fn filter(params: Self::FilterParams) -> <Self as crm_store::Resource>::Filter;

    /// The largest JSON body of a create or an edit: a resource whose fields may hold more
    /// than [`crate::MAX_BODY_BYTES`] (escaped) raises it, so a field past its own limit is
    /// refused with its pointer rather than the whole request with a 413.
    const BODY_LIMIT: usize = crate::MAX_BODY_BYTES;

    /// The handlers of the collection path (list and create).
    fn collection() -> MethodRouter<AppState> {
        get(list::<Self>).post(create::<Self>)
    }

    /// Takes what clients may send back but never set out of a client's document, before it is
    /// typed. `current` is the record's data when the document replaces it (PUT, PATCH).
    fn prepare(body: &mut Value, current: Option<&Self>) -> ApiResult<()> {
        let _ = current;
        strip_read_only(body, Self::READ_ONLY);
        Ok(())
    }

    /// Refuses a record outside the principal's scope (for `Scope::Assigned`, one that is not
    /// theirs). By default, records assigned to someone else or to nobody.
    fn check_scope(ctx: &Ctx, scope: Scope, data: &Self) -> impl Future<Output = ApiResult<()>> + Send {
        let checked = check_assigned(ctx, scope, data);
        async move { checked }
    }

    /// Creates a record from a client's JSON, already checked for assignment by the caller.
    /// Resources that keep secrets beside the record (users' passwords, API keys) override it.
    fn create(ctx: &Ctx, state: &AppState, body: Value) -> impl Future<Output = ApiResult<Response>> + Send {
        async move {
            let scope = ctx.principal.require(Self::AREA, Action::Edit)?;
            let mut data = parse_body::<Self>(state, body, None).await?;
            check_assignment(ctx, scope, None, &mut data)?;
            check_assignee_exists(ctx, None, &data).await?;
            Self::check_write(ctx, None, Some(&data)).await?;
            let record = ctx.store.create(data).await?;
            Ok(created::<Self>(record))
        }
    }

    /// Checks rules that depend on who acts or on other records, before `next` replaces
    /// `current` (on create `current` is absent; on delete `next` is).
    fn check_write(ctx: &Ctx, current: Option<&Self>, next: Option<&Self>) -> impl Future<Output = ApiResult<()>> + Send {
        let _ = (ctx, current, next);
        async { Ok(()) }
    }

    /// For resources whose records are assigned to a user: to whom (`None`: no such notion).
    fn assignee(&self) -> Option<Option<Uuid>> {
        None
    }

    /// Assigns the record.
    fn set_assignee(&mut self, user: Option<Uuid>) {
        let _ = user;
    }

    /// Narrows a listing to records assigned to `user`.
    fn restrict(filter: &mut <Self as crm_store::Resource>::Filter, user: Uuid) {
        let _ = (filter, user);
    }
}

/// The 201 answer for a new record, with its ETag and Location.
pub(crate) fn created<R: ApiResource>(record: Record<R>) -> Response {
    located(StatusCode::CREATED, record)
}

/// An answer carrying a record with its ETag and Location (201 Created, 202 Accepted).
pub(crate) fn located<R: ApiResource>(status: StatusCode, record: Record<R>) -> Response {
    let location = format!("/api/v1/{}/{}", R::PATH, record.id);
    let mut response = with_etag(status, record);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The record an earlier request with the same idempotency key created, answered as that
/// request was (202, its location), marked `Idempotent-Replayed: true`; `None` when the key is
/// new or there is none. The same key with another request is a 422 at `/Idempotency-Key`.
pub(crate) async fn replay<R: ApiResource>(ctx: &Ctx, key: Option<&IdempotencyKey>) -> ApiResult<Option<Response>> {
    let Some(key) = key else { return Ok(None) };
    Ok(ctx.store.created_with_key::<R>(key).await?.map(replayed))
}

fn replayed<R: ApiResource>(record: Record<R>) -> Response {
    let mut response = located(StatusCode::ACCEPTED, record);
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Creates a record whose creation asks a connector to act, with its commands, in one
/// transaction, and wakes the relay: 202 and its location. With an idempotency key, only the
/// first request creates; a retry that raced it gets that record ([`replay`]'s answer).
pub(crate) async fn create_with_commands<R: ApiResource>(
    state: &AppState,
    ctx: &Ctx,
    key: Option<&IdempotencyKey>,
    id: Uuid,
    data: R,
    commands: &[Value],
) -> ApiResult<Response> {
    let record = match key {
        None => ctx.store.create_with_commands(id, data, commands).await?,
        Some(key) => match ctx.store.create_once_with_commands(key, id, data, commands).await? {
            Created::New(record) => record,
            Created::Earlier(earlier) => return Ok(replayed(earlier)),
        },
    };
    state.wake_relay();
    Ok(located(StatusCode::ACCEPTED, record))
}

/// Refuses a record that the principal may reach only when it is assigned to them.
fn check_assigned<R: ApiResource>(ctx: &Ctx, scope: Scope, data: &R) -> ApiResult<()> {
    match (scope, data.assignee()) {
        (Scope::Assigned, Some(assignee)) if assignee.is_none() || assignee != ctx.principal.user_id() => {
            Err(ApiError::Forbidden(format!("this {} is not assigned to you", R::NAME)))
        }
        _ => Ok(()),
    }
}

/// A live customer that a new record names at `pointer`: 422 when there is none or, for those
/// who reach only their own customers, when it is not theirs (so its existence does not leak).
pub(crate) async fn linkable_customer(ctx: &Ctx, scope: Scope, id: Uuid, pointer: &str) -> ApiResult<Record<Customer>> {
    match ctx.store.get::<Customer>(id, false).await {
        Ok(customer)
            if scope == Scope::All || (customer.data.assigned_to.is_some() && customer.data.assigned_to == ctx.principal.user_id()) =>
        {
            Ok(customer)
        }
        Ok(_) => Err(ApiError::Invalid(crm_domain::Violations::one(pointer, format!("no customer {id} assigned to you")))),
        Err(crm_store::StoreError::NotFound) => Err(ApiError::Invalid(crm_domain::Violations::one(pointer, format!("no customer {id}")))),
        Err(other) => Err(other.into()),
    }
}

/// Whether `customer` exists (deleted or not) and is assigned to the principal.
pub(crate) async fn customer_is_mine(ctx: &Ctx, customer: Option<Uuid>) -> ApiResult<bool> {
    let (Some(customer), Some(user)) = (customer, ctx.principal.user_id()) else { return Ok(false) };
    match ctx.store.get::<Customer>(customer, true).await {
        Ok(found) => Ok(found.data.assigned_to == Some(user)),
        Err(crm_store::StoreError::NotFound) => Ok(false),
        Err(other) => Err(other.into()),
    }
}

/// A record may be assigned only to an existing, active user.
async fn check_assignee_exists<R: ApiResource>(ctx: &Ctx, current: Option<&R>, next: &R) -> ApiResult<()> {
    let Some(Some(user)) = next.assignee() else { return Ok(()) };
    if current.and_then(R::assignee).flatten() == Some(user) {
        return Ok(());
    }
    match ctx.store.get::<crm_domain::user::User>(user, false).await {
        Ok(found) if found.data.active => Ok(()),
        Ok(_) | Err(crm_store::StoreError::NotFound) => {
            Err(ApiError::Invalid(crm_domain::Violations::one("/assigned_to", format!("no active user {user}"))))
        }
        Err(other) => Err(other.into()),
    }
}

/// Applies the assignment rules to data about to be written over `current` (absent on
/// create): those who see only their own records create them for themselves, and changing
/// who a record is assigned to needs the area's admin permission.
fn check_assignment<R: ApiResource>(ctx: &Ctx, scope: Scope, current: Option<&R>, next: &mut R) -> ApiResult<()> {
    let Some(wanted) = next.assignee() else { return Ok(()) };
    if current.is_none() {
        if scope == Scope::Assigned {
            match wanted {
                None => next.set_assignee(ctx.principal.user_id()),
                Some(user) if Some(user) == ctx.principal.user_id() => {}
                Some(_) => return Err(ApiError::Forbidden(format!("you may only assign a new {} to yourself", R::NAME))),
            }
        }
        return Ok(());
    }
    if current.and_then(R::assignee).flatten() != wanted {
        ctx.principal.require(R::AREA, Action::Admin).map_err(|_| ApiError::Forbidden(format!("you may not reassign a {}", R::NAME)))?;
    }
    Ok(())
}

/// Routes for one record type.
pub(crate) fn routes<R: ApiResource>() -> Router<AppState> {
    let item = get(read::<R>).delete(delete::<R>);
    let item = if R::EDITABLE { item.put(replace::<R>).patch(patch::<R>) } else { item };
    let (collection, item) = match R::BODY_LIMIT {
        crate::MAX_BODY_BYTES => (R::collection(), item),
        limit => (body_limit(R::collection(), limit), body_limit(item, limit)),
    };
    let router = Router::new().route(&format!("/{}", R::PATH), collection).route(&format!("/{}/{{id}}", R::PATH), item);
    if R::RESTORABLE { router.route(&format!("/{}/{{id}}/restore", R::PATH), post(restore::<R>)) } else { router }
}

/// The permission rule of each route [`routes`] makes for `R`.
pub(crate) fn rules<R: ApiResource>() -> Vec<RouteRule> {
    let rule =
        |method: Method, path: String, action: Action| RouteRule { method, path, requirement: Requirement::Permission(R::AREA, action) };
    let collection = format!("/api/v1/{}", R::PATH);
    let item = format!("{collection}/{{id}}");
    let mut rules = vec![
        rule(Method::GET, collection.clone(), Action::View),
        rule(Method::POST, collection, Action::Edit),
        rule(Method::GET, item.clone(), Action::View),
        rule(Method::DELETE, item.clone(), Action::Delete),
    ];
    if R::EDITABLE {
        rules.push(rule(Method::PUT, item.clone(), Action::Edit));
        rules.push(rule(Method::PATCH, item.clone(), Action::Edit));
    }
    if R::RESTORABLE {
        rules.push(rule(Method::POST, format!("{item}/restore"), Action::Delete));
    }
    rules
}

/// A record with its ETag header.
pub(crate) fn with_etag<R: Serialize>(status: StatusCode, record: Record<R>) -> Response {
    let tag = etag(record.version);
    let mut response = (status, Json(record)).into_response();
    if let Ok(value) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

pub(crate) fn not_found<R: ApiResource>(err: crm_store::StoreError, id: Uuid) -> ApiError {
    match err {
        crm_store::StoreError::NotFound => ApiError::NotFound(format!("no {} {id}", R::NAME)),
        other => other.into(),
    }
}

/// Parses a client's JSON into the resource's data.
pub(crate) async fn parse_body<R: ApiResource>(state: &AppState, mut body: Value, current: Option<&R>) -> ApiResult<R> {
    if !body.is_object() {
        return Err(ApiError::Invalid(crm_domain::Violations::one("", format!("a {} must be a JSON object", R::NAME))));
    }
    R::prepare(&mut body, current)?;
    if let Some(pointer) = nul_character(&body, String::new()) {
        return Err(ApiError::Invalid(crm_domain::Violations::one(pointer, "must not contain the NUL character (U+0000)")));
    }
    let input: R::Input = typed(body)?;
    R::parse(state, input, current).await
}

/// The JSON Pointer of the first string (or member name) holding U+0000, which no text column
/// of PostgreSQL can store: refused up front so both backends answer alike.
pub(crate) fn nul_character(value: &Value, at: String) -> Option<String> {
    let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
    match value {
        Value::String(s) if s.contains('\0') => Some(at),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| nul_character(item, format!("{at}/{i}"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let at = format!("{at}/{}", escape(key));
            if key.contains('\0') { Some(at) } else { nul_character(item, at) }
        }),
        _ => None,
    }
}

/// The store query for a listing's parameters. Search terms are folded, and a term that reads
/// as a phone number is reduced to the digits the index holds, read in the default region.
pub(crate) fn list_request<F>(state: &AppState, params: ListParams, filter: F, default_sort: &str) -> ListQuery<F> {
    let region = state.default_region;
    ListQuery {
        filter,
        terms: params.search.as_deref().map(|q| search_terms(q, |q| phone_query_digits(q, region))).unwrap_or_default(),
        created_from: params.created_from,
        created_to: params.created_to,
        include_deleted: params.include_deleted.unwrap_or(false),
        sort: params.sort.or_else(|| Some(default_sort.to_owned())),
        direction: params.direction.unwrap_or_default(),
        cursor: params.cursor,
        limit: params.limit,
    }
}

#[derive(Debug, Deserialize)]
struct IncludeDeleted {
    #[serde(default)]
    include_deleted: bool,
}

pub(crate) async fn list<R: ApiResource>(
    State(state): State<AppState>,
    ctx: Ctx,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Page<Record<R>>>> {
    let scope = ctx.principal.require(R::AREA, Action::View)?;
    let (params, filter) = list_query::<R::FilterParams>(raw.as_deref(), R::FILTERS)?;
    let mut filter = R::filter(filter);
    if let (Scope::Assigned, Some(user)) = (scope, ctx.principal.user_id()) {
        R::restrict(&mut filter, user);
    }
    let query = list_request(&state, params, filter, R::DEFAULT_SORT);
    Ok(Json(ctx.store.list::<R>(&query).await?))
}

pub(crate) async fn create<R: ApiResource>(State(state): State<AppState>, ctx: Ctx, JsonBody(body): JsonBody) -> ApiResult<Response> {
    R::create(&ctx, &state, body).await
}

/// Reads a record the principal may `action`, or the reason they may not.
pub(crate) async fn readable<R: ApiResource>(ctx: &Ctx, id: Uuid, action: Action, include_deleted: bool) -> ApiResult<Record<R>> {
    let scope = ctx.principal.require(R::AREA, action)?;
    let record = ctx.store.get::<R>(id, include_deleted).await.map_err(|e| not_found::<R>(e, id))?;
    R::check_scope(ctx, scope, &record.data).await?;
    Ok(record)
}

pub(crate) async fn read<R: ApiResource>(ctx: Ctx, Id(id): Id, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let IncludeDeleted { include_deleted } = strict_query(raw.as_deref(), &["include_deleted"])?;
    Ok(with_etag(StatusCode::OK, readable::<R>(&ctx, id, Action::View, include_deleted).await?))
}

/// Validates `next` as a replacement for `current` and writes it, unless the record has moved
/// past `version`.
async fn write_over<R: ApiResource>(
    state: &AppState,
    ctx: &Ctx,
    current: Record<R>,
    version: Option<i64>,
    body: Value,
) -> ApiResult<Response> {
    let scope = ctx.principal.require(R::AREA, Action::Edit)?;
    let mut data = parse_body::<R>(state, body, Some(&current.data)).await?;
    check_assignment(ctx, scope, Some(&current.data), &mut data)?;
    check_assignee_exists(ctx, Some(&current.data), &data).await?;
    R::check_write(ctx, Some(&current.data), Some(&data)).await?;
    let record = ctx.store.update(current.id, version.or(Some(current.version)), data).await.map_err(|e| not_found::<R>(e, current.id))?;
    Ok(with_etag(StatusCode::OK, record))
}

pub(crate) async fn replace<R: ApiResource>(
    State(state): State<AppState>,
    ctx: Ctx,
    Id(id): Id,
    IfMatch(version): IfMatch,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let current = readable::<R>(&ctx, id, Action::Edit, false).await?;
    write_over(&state, &ctx, current, version, body).await
}

/// Applies a JSON merge patch to the record as clients see it, then validates the result as a
/// whole. The store checks that the record has not changed since it was read (or since the
/// `If-Match` version), so concurrent patches never overwrite each other unseen.
pub(crate) async fn patch<R: ApiResource>(
    State(state): State<AppState>,
    ctx: Ctx,
    Id(id): Id,
    IfMatch(version): IfMatch,
    JsonBody(patch): JsonBody,
) -> ApiResult<Response> {
    if !patch.is_object() {
        return Err(ApiError::Invalid(crm_domain::Violations::one("", "a merge patch must be a JSON object")));
    }
    let current = readable::<R>(&ctx, id, Action::Edit, false).await?;
    if version.is_some_and(|v| v != current.version) {
        return Err(ApiError::PreconditionFailed { current: current.version });
    }
    let mut document = serde_json::to_value(&current.data).map_err(ApiError::internal)?;
    json_patch::merge(&mut document, &patch);
    write_over(&state, &ctx, current, version, document).await
}

pub(crate) async fn delete<R: ApiResource>(ctx: Ctx, Id(id): Id, IfMatch(version): IfMatch) -> ApiResult<Response> {
    let current = readable::<R>(&ctx, id, Action::Delete, false).await?;
    R::check_write(&ctx, Some(&current.data), None).await?;
    let record = ctx.store.delete::<R>(id, version).await.map_err(|e| not_found::<R>(e, id))?;
    Ok(with_etag(StatusCode::OK, record))
}

pub(crate) async fn restore<R: ApiResource>(ctx: Ctx, Id(id): Id, IfMatch(version): IfMatch) -> ApiResult<Response> {
    readable::<R>(&ctx, id, Action::Delete, true).await?;
    let record = ctx.store.restore::<R>(id, version).await.map_err(|e| not_found::<R>(e, id))?;
    Ok(with_etag(StatusCode::OK, record))
}

/// Filter parameters for customers.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CustomerParams {
    /// Has this tag.
    tag: Option<String>,
    /// In this status.
    #[param(inline)]
    status: Option<CustomerStatus>,
    /// Assigned to this user.
    assigned_to: Option<Uuid>,
}

impl ApiResource for Customer {
    const PATH: &'static str = "customers";
    const NAME: &'static str = "customer";
    const READ_ONLY: &'static [&'static str] = customer::READ_ONLY;
    const FILTERS: &'static [&'static str] = &["tag", "status", "assigned_to"];
    const AREA: Area = Area::Customers;
    type Input = CustomerInput;
    type FilterParams = CustomerParams;

    async fn parse(state: &AppState, input: CustomerInput, _: Option<&Self>) -> ApiResult<Self> {
        Ok(input.parse(state.default_region, Utc::now())?)
    }

    fn filter(p: CustomerParams) -> CustomerFilter {
        CustomerFilter { tag: p.tag, status: p.status, assigned_to: p.assigned_to }
    }

    fn assignee(&self) -> Option<Option<Uuid>> {
        Some(self.assigned_to)
    }

    fn set_assignee(&mut self, user: Option<Uuid>) {
        self.assigned_to = user;
    }

    fn restrict(filter: &mut CustomerFilter, user: Uuid) {
        filter.assigned_to = Some(user);
    }
}

/// Filter parameters for products.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ProductParams {
    /// In this category.
    #[param(inline)]
    category: Option<ProductCategory>,
    /// On sale or not.
    active: Option<bool>,
}

impl ApiResource for Product {
    const PATH: &'static str = "products";
    const NAME: &'static str = "product";
    const READ_ONLY: &'static [&'static str] = product::READ_ONLY;
    const FILTERS: &'static [&'static str] = &["category", "active"];
    const AREA: Area = Area::Products;
    type Input = ProductInput;
    type FilterParams = ProductParams;

    async fn parse(_: &AppState, input: ProductInput, _: Option<&Self>) -> ApiResult<Self> {
        Ok(input.parse()?)
    }

    fn filter(p: ProductParams) -> ProductFilter {
        ProductFilter { category: p.category, active: p.active }
    }
}

/// Filter parameters for orders.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct OrderParams {
    /// For this customer.
    customer_id: Option<Uuid>,
    /// In this status.
    #[param(inline)]
    status: Option<OrderStatus>,
    /// In this payment status.
    #[param(inline)]
    payment_status: Option<PaymentStatus>,
    /// Assigned to this user.
    assigned_to: Option<Uuid>,
}

impl ApiResource for Order {
    const PATH: &'static str = "orders";
    const NAME: &'static str = "order";
    const READ_ONLY: &'static [&'static str] = order::READ_ONLY;
    const FILTERS: &'static [&'static str] = &["customer_id", "status", "payment_status", "assigned_to"];
    const AREA: Area = Area::Orders;
    type Input = OrderInput;
    type FilterParams = OrderParams;

    /// Looks up the products the lines name and prices the order. New lines need live
    /// products; a product the order already holds may have been deleted since, and the order
    /// must still be able to move on (be cancelled, shipped...).
    async fn parse(state: &AppState, input: OrderInput, current: Option<&Self>) -> ApiResult<Self> {
        let ids = input.product_ids();
        let mut products = state.store.get_many::<Product>(&ids).await?;
        let held = |id: &Uuid| current.is_some_and(|c| c.items.iter().any(|item| item.product_id == Some(*id)));
        let deleted: Vec<Uuid> = ids.into_iter().filter(|id| !products.iter().any(|p| p.id == *id) && held(id)).collect();
        for id in deleted {
            match state.store.get::<Product>(id, true).await {
                Ok(product) => products.push(product),
                Err(crm_store::StoreError::NotFound) => {}
                Err(err) => return Err(err.into()),
            }
        }
        let refs: HashMap<Uuid, ProductRef> = products
            .into_iter()
            .map(|p| (p.id, ProductRef { name: p.data.name, price: p.data.price, currency: p.data.currency }))
            .collect();
        let mut order = input.parse(&refs)?;
        crate::plugins::price_order(state, &mut order, current).await?;
        Ok(order)
    }

    fn filter(p: OrderParams) -> OrderFilter {
        OrderFilter { customer_id: p.customer_id, status: p.status, payment_status: p.payment_status, assigned_to: p.assigned_to }
    }

    fn assignee(&self) -> Option<Option<Uuid>> {
        Some(self.assigned_to)
    }

    fn set_assignee(&mut self, user: Option<Uuid>) {
        self.assigned_to = user;
    }

    fn restrict(filter: &mut OrderFilter, user: Uuid) {
        filter.assigned_to = Some(user);
    }

    /// Those who see only their own customers may order only for them. A customer they cannot
    /// see is reported like a missing one, so its existence is not revealed.
    async fn check_write(ctx: &Ctx, current: Option<&Self>, next: Option<&Self>) -> ApiResult<()> {
        let Some(next) = next else { return Ok(()) };
        if current.is_some_and(|c| c.customer_id == next.customer_id)
            || ctx.principal.scope(Area::Customers, Action::View) != Some(Scope::Assigned)
        {
            return Ok(());
        }
        match ctx.store.get::<Customer>(next.customer_id, false).await {
            Ok(customer) if customer.data.assigned_to.is_some() && customer.data.assigned_to == ctx.principal.user_id() => Ok(()),
            Ok(_) | Err(crm_store::StoreError::NotFound) => Err(ApiError::Invalid(crm_domain::Violations::one(
                "/customer_id",
                format!("no customer {} assigned to you", next.customer_id),
            ))),
            Err(other) => Err(other.into()),
        }
    }
}

/// A customer's orders: the order listing filtered to the customer, 404 if the customer does
/// not exist.
pub(crate) async fn customer_orders(
    State(state): State<AppState>,
    ctx: Ctx,
    Id(id): Id,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Page<Record<Order>>>> {
    // Whoever may view customers must be able to view this one (an agent: theirs); a service
    // that reads only orders needs the customer to exist.
    if ctx.principal.scope(Area::Customers, Action::View).is_some() {
        readable::<Customer>(&ctx, id, Action::View, true).await?;
    } else {
        ctx.store.get::<Customer>(id, true).await.map_err(|e| not_found::<Customer>(e, id))?;
    }
    let scope = ctx.principal.require(Area::Orders, Action::View)?;
    let (params, mut filter) = list_query::<OrderParams>(raw.as_deref(), &["status", "payment_status", "assigned_to"])?;
    filter.customer_id = Some(id);
    let mut filter = Order::filter(filter);
    if let (Scope::Assigned, Some(user)) = (scope, ctx.principal.user_id()) {
        Order::restrict(&mut filter, user);
    }
    let query = list_request(&state, params, filter, Order::DEFAULT_SORT);
    Ok(Json(ctx.store.list::<Order>(&query).await?))
}

/// A customer's history: the audit trail of the customer record, newest first.
pub(crate) async fn customer_history(ctx: Ctx, Id(id): Id, RawQuery(raw): RawQuery) -> ApiResult<Json<Page<AuditEntry>>> {
    readable::<Customer>(&ctx, id, Action::View, true).await?;
    let Paging { cursor, limit } = strict_query(raw.as_deref(), &["cursor", "limit"])?;
    let query = AuditQuery { resource: Some("customers".into()), resource_id: Some(id), cursor, limit, ..AuditQuery::default() };
    Ok(Json(ctx.store.audit_trail(&query).await?))
}

#[derive(Debug, Deserialize)]
pub(crate) struct Paging {
    pub(crate) cursor: Option<String>,
    pub(crate) limit: Option<u32>,
}
