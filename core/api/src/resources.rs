//! The REST surface of every record type, written once: list, create, get, replace (PUT),
//! merge-patch (PATCH, RFC 7396), soft delete and restore, with ETags for optimistic
//! concurrency. Each record type says how its input is parsed and which filters it takes.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Id, IfMatch, JsonBody, ListParams, etag, list_query, strict_query, typed};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use crm_domain::contact::phone_query_digits;
use crm_domain::customer::{self, Customer, CustomerInput, CustomerStatus};
use crm_domain::order::{self, Order, OrderInput, OrderStatus, PaymentStatus, ProductRef};
use crm_domain::product::{self, Product, ProductCategory, ProductInput};
use crm_domain::{Record, search_terms, strip_read_only};
use crm_store::{CustomerFilter, ListQuery, OrderFilter, Page, ProductFilter, Resource};
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

    /// Validates input into data, looking up what it refers to.
    fn parse(state: &AppState, input: Self::Input) -> impl Future<Output = ApiResult<Self>> + Send;

    /// The store filter for the parameters.
    fn filter(params: Self::FilterParams) -> <Self as crm_store::Resource>::Filter;
}

/// Routes for one record type.
pub(crate) fn routes<R: ApiResource>() -> Router<AppState> {
    Router::new()
        .route(&format!("/{}", R::PATH), get(list::<R>).post(create::<R>))
        .route(&format!("/{}/{{id}}", R::PATH), get(read::<R>).put(replace::<R>).patch(patch::<R>).delete(delete::<R>))
        .route(&format!("/{}/{{id}}/restore", R::PATH), post(restore::<R>))
}

/// A record with its ETag header.
fn with_etag<R: Serialize>(status: StatusCode, record: Record<R>) -> Response {
    let tag = etag(record.version);
    let mut response = (status, Json(record)).into_response();
    if let Ok(value) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

fn not_found<R: ApiResource>(err: crm_store::StoreError, id: Uuid) -> ApiError {
    match err {
        crm_store::StoreError::NotFound => ApiError::NotFound(format!("no {} {id}", R::NAME)),
        other => other.into(),
    }
}

/// Parses a client's JSON into the resource's data.
async fn parse_body<R: ApiResource>(state: &AppState, mut body: Value) -> ApiResult<R> {
    if !body.is_object() {
        return Err(ApiError::Invalid(crm_domain::Violations::one("", format!("a {} must be a JSON object", R::NAME))));
    }
    strip_read_only(&mut body, R::READ_ONLY);
    let input: R::Input = typed(body)?;
    R::parse(state, input).await
}

/// The store query for a listing's parameters. Search terms are folded, and a term that reads
/// as a phone number is reduced to the digits the index holds, read in the default region.
fn list_request<F>(state: &AppState, params: ListParams, filter: F) -> ListQuery<F> {
    let region = state.default_region;
    ListQuery {
        filter,
        terms: params.search.as_deref().map(|q| search_terms(q, |q| phone_query_digits(q, region))).unwrap_or_default(),
        created_from: params.created_from,
        created_to: params.created_to,
        include_deleted: params.include_deleted.unwrap_or(false),
        sort: params.sort,
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

pub(crate) async fn list<R: ApiResource>(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult<Json<Page<Record<R>>>> {
    let (params, filter) = list_query::<R::FilterParams>(raw.as_deref(), R::FILTERS)?;
    let query = list_request(&state, params, R::filter(filter));
    Ok(Json(state.store.list::<R>(&query).await?))
}

pub(crate) async fn create<R: ApiResource>(State(state): State<AppState>, JsonBody(body): JsonBody) -> ApiResult<Response> {
    let data = parse_body::<R>(&state, body).await?;
    let record = state.store.create(data).await?;
    let location = format!("/api/v1/{}/{}", R::PATH, record.id);
    let mut response = with_etag(StatusCode::CREATED, record);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

pub(crate) async fn read<R: ApiResource>(State(state): State<AppState>, Id(id): Id, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let IncludeDeleted { include_deleted } = strict_query(raw.as_deref(), &["include_deleted"])?;
    let record = state.store.get::<R>(id, include_deleted).await.map_err(|e| not_found::<R>(e, id))?;
    Ok(with_etag(StatusCode::OK, record))
}

pub(crate) async fn replace<R: ApiResource>(
    State(state): State<AppState>,
    Id(id): Id,
    IfMatch(version): IfMatch,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let data = parse_body::<R>(&state, body).await?;
    let record = state.store.update(id, version, data).await.map_err(|e| not_found::<R>(e, id))?;
    Ok(with_etag(StatusCode::OK, record))
}

/// Applies a JSON merge patch to the record as clients see it, then validates the result as a
/// whole. The store checks that the record has not changed since it was read (or since the
/// `If-Match` version), so concurrent patches never overwrite each other unseen.
pub(crate) async fn patch<R: ApiResource>(
    State(state): State<AppState>,
    Id(id): Id,
    IfMatch(version): IfMatch,
    JsonBody(patch): JsonBody,
) -> ApiResult<Response> {
    if !patch.is_object() {
        return Err(ApiError::Invalid(crm_domain::Violations::one("", "a merge patch must be a JSON object")));
    }
    let current = state.store.get::<R>(id, false).await.map_err(|e| not_found::<R>(e, id))?;
    if version.is_some_and(|v| v != current.version) {
        return Err(ApiError::PreconditionFailed { current: current.version });
    }
    let mut document = serde_json::to_value(&current.data).map_err(ApiError::internal)?;
    json_patch::merge(&mut document, &patch);
    let data = parse_body::<R>(&state, document).await?;
    let record = state.store.update(id, Some(current.version), data).await.map_err(|e| not_found::<R>(e, id))?;
    Ok(with_etag(StatusCode::OK, record))
}

pub(crate) async fn delete<R: ApiResource>(State(state): State<AppState>, Id(id): Id, IfMatch(version): IfMatch) -> ApiResult<Response> {
    let record = state.store.delete::<R>(id, version).await.map_err(|e| not_found::<R>(e, id))?;
    Ok(with_etag(StatusCode::OK, record))
}

pub(crate) async fn restore<R: ApiResource>(State(state): State<AppState>, Id(id): Id, IfMatch(version): IfMatch) -> ApiResult<Response> {
    let record = state.store.restore::<R>(id, version).await.map_err(|e| not_found::<R>(e, id))?;
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
    type Input = CustomerInput;
    type FilterParams = CustomerParams;

    async fn parse(state: &AppState, input: CustomerInput) -> ApiResult<Self> {
        Ok(input.parse(state.default_region, Utc::now())?)
    }

    fn filter(p: CustomerParams) -> CustomerFilter {
        CustomerFilter { tag: p.tag, status: p.status, assigned_to: p.assigned_to }
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
    type Input = ProductInput;
    type FilterParams = ProductParams;

    async fn parse(_: &AppState, input: ProductInput) -> ApiResult<Self> {
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
}

impl ApiResource for Order {
    const PATH: &'static str = "orders";
    const NAME: &'static str = "order";
    const READ_ONLY: &'static [&'static str] = order::READ_ONLY;
    const FILTERS: &'static [&'static str] = &["customer_id", "status", "payment_status"];
    type Input = OrderInput;
    type FilterParams = OrderParams;

    /// Looks up the products the lines name (live ones only) and prices the order.
    async fn parse(state: &AppState, input: OrderInput) -> ApiResult<Self> {
        let products = state.store.get_many::<Product>(&input.product_ids()).await?;
        let refs: HashMap<Uuid, ProductRef> = products
            .into_iter()
            .map(|p| (p.id, ProductRef { name: p.data.name, price: p.data.price, currency: p.data.currency }))
            .collect();
        Ok(input.parse(&refs)?)
    }

    fn filter(p: OrderParams) -> OrderFilter {
        OrderFilter { customer_id: p.customer_id, status: p.status, payment_status: p.payment_status }
    }
}

/// A customer's orders: the order listing filtered to the customer, 404 if the customer does
/// not exist.
pub(crate) async fn customer_orders(
    State(state): State<AppState>,
    Id(id): Id,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Page<Record<Order>>>> {
    state.store.get::<Customer>(id, true).await.map_err(|e| not_found::<Customer>(e, id))?;
    let (params, mut filter) = list_query::<OrderParams>(raw.as_deref(), &["status", "payment_status"])?;
    filter.customer_id = Some(id);
    let query = list_request(&state, params, Order::filter(filter));
    Ok(Json(state.store.list::<Order>(&query).await?))
}
