//! The media index over HTTP: files of customers and orders as a resource (`/api/v1/media`),
//! created either as metadata of a file already in the file store (JSON) or by uploading it
//! (`multipart/form-data`: the record and the `StoreFile` command that hands the bytes to the
//! files connector are written in one transaction), and the content of a stored file, read
//! from the files connector over the bus.

use crate::auth::{Ctx, Requirement, RouteRule};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Id, IdempotencyKeyHeader, JsonBody, is_json, media_type, request_digest};
use crate::resources::{
    ApiResource, create_with_commands, created, customer_is_mine, linkable_customer, list, parse_body, readable, replay,
};
use crate::telemetry::RequestId;
use crate::{AppState, CORE_SOURCE, MAX_BODY_BYTES};
use axum::Router;
use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use crm_bus::message::{Bytes, FileContent, FileRead, ReadFile, StoreFile};
use crm_bus::{BusError, Envelope};
use crm_domain::Violations;
use crm_domain::access::{Action, Area, Scope};
use crm_domain::comms::{self, Media, MediaDirection, MediaInput, MediaStatus};
use crm_domain::order::Order;
use crm_domain::sha256_hex;
use crm_store::{IdempotencyKey, MediaFilter};
use http_body_util::Limited;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Room for the form fields beside the file, and the multipart framing.
const FORM_OVERHEAD: usize = 64 * 1024;

/// The longest text field of an upload form, in bytes.
const MAX_TEXT_FIELD: usize = 4 * 1024;

/// Seconds after which a client may try again to read a file the connector could not give.
const RETRY_AFTER: u64 = 10;

/// Filter parameters for media.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct MediaParams {
    /// Of this customer.
    customer_id: Option<Uuid>,
    /// Of this order.
    order_id: Option<Uuid>,
}

impl ApiResource for Media {
    const PATH: &'static str = "media";
    const NAME: &'static str = "media file";
    const READ_ONLY: &'static [&'static str] = comms::MEDIA_READ_ONLY;
    const FILTERS: &'static [&'static str] = &["customer_id", "order_id"];
    const AREA: Area = Area::Customers;
    const EDITABLE: bool = false;
    const UPLOADS: bool = true;
    type Input = MediaInput;
    type FilterParams = MediaParams;

    /// Metadata of a file already in the file store (JSON create).
    async fn parse(_: &AppState, input: MediaInput, _: Option<&Self>) -> ApiResult<Self> {
        Ok(input.parse(String::new(), MediaStatus::External)?)
    }

    fn filter(p: MediaParams) -> MediaFilter {
        MediaFilter { customer_id: p.customer_id, order_id: p.order_id, ..MediaFilter::default() }
    }

    fn restrict(filter: &mut MediaFilter, user: Uuid) {
        filter.customer_assigned_to = Some(user);
    }

    fn collection() -> MethodRouter<AppState> {
        // Uploads are limited by `max_upload_bytes` in the handler, not by the API's body limit.
        get(list::<Media>).merge(post(create_media).layer(DefaultBodyLimit::disable()))
    }

    /// Indexes a file already in the file store.
    async fn create(ctx: &Ctx, state: &AppState, body: Value) -> ApiResult<Response> {
        let scope = ctx.principal.require(Self::AREA, Action::Edit)?;
        let mut data = parse_body::<Self>(state, body, None).await?;
        data.uploaded_by = ctx.principal.label();
        check_links(ctx, scope, &data).await?;
        Ok(created(ctx.store.create(data).await?))
    }

    /// Those who reach only their own customers reach the files of those customers and of
    /// their orders.
    async fn check_scope(ctx: &Ctx, scope: Scope, data: &Self) -> ApiResult<()> {
        if scope == Scope::All || customer_is_mine(ctx, data.customer_id).await? {
            return Ok(());
        }
        if data.customer_id.is_none()
            && let Some(order) = data.order_id
        {
            let customer = match ctx.store.get::<Order>(order, true).await {
                Ok(order) => Some(order.data.customer_id),
                Err(crm_store::StoreError::NotFound) => None,
                Err(other) => return Err(other.into()),
            };
            if customer_is_mine(ctx, customer).await? {
                return Ok(());
            }
        }
        Err(ApiError::Forbidden("this media file's customer is not assigned to you".into()))
    }
}

/// The customer and order a new media record names must exist, be within the principal's
/// reach, and agree with each other.
async fn check_links(ctx: &Ctx, scope: Scope, media: &Media) -> ApiResult<()> {
    let mut errors = Violations::default();
    if let Some(customer) = media.customer_id {
        match linkable_customer(ctx, scope, customer, "/customer_id").await {
            Ok(_) => {}
            Err(ApiError::Invalid(found)) => errors.0.extend(found.0),
            Err(other) => return Err(other),
        }
    }
    if let Some(order) = media.order_id {
        match ctx.store.get::<Order>(order, false).await {
            Ok(found) => {
                if scope == Scope::Assigned && !customer_is_mine(ctx, Some(found.data.customer_id)).await? {
                    errors.push("/order_id", format!("no order {order} of a customer assigned to you"));
                } else if media.customer_id.is_some_and(|c| c != found.data.customer_id) {
                    errors.push("/order_id", "the order belongs to another customer");
                }
            }
            Err(crm_store::StoreError::NotFound) => errors.push("/order_id", format!("no order {order}")),
            Err(other) => return Err(other.into()),
        }
    }
    errors.finish(|| ()).map_err(ApiError::Invalid)
}

/// The permission rules of the routes below.
pub(crate) fn rules() -> Vec<RouteRule> {
    vec![RouteRule {
        method: Method::GET,
        path: "/api/v1/media/{id}/content".into(),
        requirement: Requirement::Permission(Area::Customers, Action::View),
    }]
}

/// A stored file's content.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/media/{id}/content", get(content))
}

/// `POST /api/v1/media`: JSON metadata (201) or a `multipart/form-data` upload (202).
async fn create_media(
    State(state): State<AppState>,
    ctx: Ctx,
    request_id: RequestId,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    request: Request,
) -> ApiResult<Response> {
    let essence = media_type(request.headers());
    if essence == "multipart/form-data" {
        return upload(&state, &ctx, &request_id, key, request).await;
    }
    if !is_json(&essence) {
        return Err(ApiError::UnsupportedMediaType("application/json (metadata) or multipart/form-data (an upload)"));
    }
    let request = request.map(|body| Body::new(Limited::new(body, MAX_BODY_BYTES)));
    let JsonBody(body) = JsonBody::from_request(request, &state).await?;
    Media::create(&ctx, &state, body).await
}

/// What an upload form holds.
#[derive(Debug, Default)]
struct UploadForm {
    file: Option<(Option<String>, Option<String>, Vec<u8>)>,
    input: MediaInput,
}

fn multipart_error(err: MultipartError, limit: usize) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(limit)
    } else {
        ApiError::BadRequest(format!("the multipart/form-data body cannot be read: {}", err.body_text()))
    }
}

/// Reads a field, refusing more than `max` bytes with `too_large`.
async fn read_field(field: &mut Field<'_>, max: usize, too_large: impl Fn() -> ApiError, limit: usize) -> ApiResult<Vec<u8>> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
        if bytes.len() + chunk.len() > max {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Reads the form: the `file` part and the text fields `customer_id`, `order_id`, `direction`,
/// `tags` (repeatable) and `filename`; every problem with a field is reported by its name.
async fn read_form(mut multipart: Multipart, limit: usize, errors: &mut Violations) -> ApiResult<UploadForm> {
    let mut form = UploadForm::default();
    while let Some(mut field) = multipart.next_field().await.map_err(|e| multipart_error(e, limit))? {
        let name = field.name().unwrap_or("").to_owned();
        if name == "file" {
            let filename = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(str::to_owned);
            let bytes = read_field(&mut field, limit, || ApiError::TooLarge(limit), limit).await?;
            if form.file.is_some() {
                errors.push("/file", "send one file per upload");
            }
            form.file = Some((filename, content_type, bytes));
            continue;
        }
        let pointer = format!("/{}", name.replace('~', "~0").replace('/', "~1"));
        let known = ["customer_id", "order_id", "direction", "tags", "filename"];
        if !known.contains(&name.as_str()) {
            errors.push(pointer, format!("unknown field; expected file, {}", known.join(", ")));
            continue;
        }
        let too_long = || ApiError::Invalid(Violations::one(pointer.clone(), format!("must be at most {MAX_TEXT_FIELD} bytes")));
        let bytes = read_field(&mut field, MAX_TEXT_FIELD, too_long, limit).await?;
        let Ok(text) = String::from_utf8(bytes) else {
            errors.push(pointer, "must be UTF-8 text");
            continue;
        };
        let uuid = |errors: &mut Violations| errors.check(pointer.clone(), Uuid::parse_str(text.trim()).map_err(|_| "must be a UUID"));
        match name.as_str() {
            "customer_id" => form.input.customer_id = uuid(errors),
            "order_id" => form.input.order_id = uuid(errors),
            "direction" => {
                form.input.direction = errors.check(
                    pointer.clone(),
                    serde_json::from_value::<MediaDirection>(Value::String(text.trim().to_owned()))
                        .map_err(|_| "must be received, sent or internal"),
                )
            }
            "tags" => form.input.tags.push(text),
            _ => form.input.filename = Some(text),
        }
    }
    Ok(form)
}

/// What an upload's idempotency key stands for: its fields and the file's name, type and digest.
fn upload_digest(input: &MediaInput, part_name: Option<&str>, part_type: Option<&str>, bytes: &[u8]) -> String {
    let file = sha256_hex(bytes);
    let form = serde_json::json!({
        "customer_id": input.customer_id,
        "order_id": input.order_id,
        "direction": input.direction,
        "tags": input.tags,
        "filename": input.filename,
        "file": {"name": part_name, "type": part_type, "sha256": file},
    });
    request_digest("POST /media", &form)
}

/// Uploads a file: a `pending` media record and the `StoreFile` command carrying the bytes,
/// written in one transaction; the files connector stores the file and reports back. With an
/// `Idempotency-Key`, a retry of an upload already taken gets its record back and stores
/// nothing again.
async fn upload(state: &AppState, ctx: &Ctx, request_id: &RequestId, key: Option<String>, request: Request) -> ApiResult<Response> {
    let scope = ctx.principal.require(Media::AREA, Action::Edit)?;
    let limit = state.max_upload_bytes;
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(FORM_OVERHEAD)) {
        return Err(ApiError::TooLarge(limit));
    }
    let request = request.map(|body| Body::new(Limited::new(body, limit.saturating_add(FORM_OVERHEAD))));
    let multipart =
        Multipart::from_request(request, state).await.map_err(|e| ApiError::BadRequest(format!("not a multipart/form-data body: {e}")))?;
    let _turn = transfer_turn(state, &state.upload_turns, "upload").await?;
    let mut errors = Violations::default();
    let form = tokio::time::timeout(state.upload_read_timeout, read_form(multipart, limit, &mut errors)).await.map_err(|_| {
        ApiError::RequestTimeout(format!("the upload did not arrive within {} seconds", state.upload_read_timeout.as_secs()))
    })?;
    let UploadForm { file, mut input } = form?;
    let Some((part_name, part_type, bytes)) = file else {
        errors.push("/file", "is required: the file to upload");
        return Err(ApiError::Invalid(errors));
    };
    let key = key.map(|key| IdempotencyKey { key, request: upload_digest(&input, part_name.as_deref(), part_type.as_deref(), &bytes) });
    if let Some(replayed) = replay::<Media>(ctx, key.as_ref()).await? {
        return Ok(replayed);
    }
    input.filename = input.filename.or(part_name);
    // The browser's type for the part; one that is not a MIME type is no reason to refuse the file.
    input.mime_type = part_type.filter(|t| comms::mime_type(t).is_ok());
    let media = match input.parse(ctx.principal.label(), MediaStatus::Pending) {
        Ok(media) if errors.is_empty() => media,
        Ok(_) => return Err(ApiError::Invalid(errors)),
        Err(found) => {
            errors.0.extend(found.0);
            return Err(ApiError::Invalid(errors));
        }
    };
    check_links(ctx, scope, &media).await?;
    let media_id = Uuid::now_v7();
    let folder = match (media.customer_id, media.order_id) {
        (Some(customer), _) => format!("customers/{customer}"),
        (None, Some(order)) => format!("orders/{order}"),
        (None, None) => return Err(ApiError::Internal("a media record without customer or order passed validation".into())),
    };
    let command = StoreFile {
        media_id,
        path: format!("{folder}/media/{}", comms::stored_file_name(&media_id.to_string(), &media.filename)),
        mime_type: media.mime_type.clone(),
        overwrite: false,
        content: Bytes(bytes),
    };
    let media = media.awaiting(&command.path, &command.content.0);
    let envelope = Envelope::new(CORE_SOURCE, &command, request_id.trace()).to_structured();
    create_with_commands(state, ctx, key.as_ref(), media_id, media, &[envelope]).await
}

/// A turn from `turns` (uploads' or downloads', see [`crate::ApiConfig::max_file_transfers`]):
/// each transfer holds its file in memory a few times over, so only so many run at once; a
/// request that gets no turn within [`crate::ApiConfig::file_transfer_wait`] is told to come
/// back.
async fn transfer_turn(state: &AppState, turns: &Arc<Semaphore>, what: &'static str) -> ApiResult<OwnedSemaphorePermit> {
    match tokio::time::timeout(state.file_transfer_wait, turns.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) | Err(_) => {
            metrics::counter!("file_transfers_turned_away_total", "transfer" => what).increment(1);
            Err(ApiError::Busy { detail: format!("too many {what}s at once; try again shortly"), retry_after: RETRY_AFTER })
        }
    }
}

/// The bytes of a download as a response body that holds its turn until it is sent (or the
/// client goes away), in chunks, so that the file in memory stays counted while it goes out.
fn body_holding_turn(bytes: Vec<u8>, turn: OwnedSemaphorePermit) -> Body {
    const CHUNK: usize = 64 * 1024;
    let bytes = axum::body::Bytes::from(bytes);
    let chunks = (0..bytes.len()).step_by(CHUNK).map(move |start| {
        let _turn = &turn;
        Ok::<_, std::convert::Infallible>(bytes.slice(start..(start + CHUNK).min(bytes.len())))
    });
    Body::from_stream(futures::stream::iter(chunks))
}

/// The answer when the files connector cannot be asked or does not answer.
fn files_unavailable(err: BusError) -> ApiError {
    let detail = match err {
        BusError::Timeout(_) => "the files connector did not answer in time",
        BusError::Rejected(_) => "no files connector is running",
        BusError::Unavailable(_) => "the message bus cannot be reached",
        BusError::Closed => "the message bus is shutting down",
        BusError::Invalid(_) => return ApiError::internal(err),
    };
    ApiError::ConnectorUnavailable { detail: format!("{detail}; try again later"), retry_after: RETRY_AFTER }
}

/// `Content-Disposition: attachment` naming the file: the name itself when it is plain ASCII,
/// otherwise an ASCII stand-in and the real name in RFC 5987 / RFC 6266 `filename*` form.
fn content_disposition(filename: &str) -> String {
    let plain = |c: char| c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\';
    if filename.chars().all(plain) {
        return format!("attachment; filename=\"{filename}\"");
    }
    let fallback: String = filename.chars().map(|c| if plain(c) { c } else { '_' }).collect();
    let mut encoded = String::new();
    for byte in filename.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// Whether an `If-None-Match` header names `tag`.
fn none_match(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|candidate| matches!(candidate.trim().trim_start_matches("W/"), t if t == tag || t == "*"))
}

/// The bytes of a stored file, asked of the files connector over the bus.
async fn content(State(state): State<AppState>, ctx: Ctx, Id(id): Id, request_id: RequestId, headers: HeaderMap) -> ApiResult<Response> {
    let media = readable::<Media>(&ctx, id, Action::View, false).await?.data;
    let conflict = |detail: String| ApiError::Conflict { pointer: Some("/status".into()), detail };
    match media.status {
        MediaStatus::Stored => {}
        MediaStatus::Pending => return Err(conflict("the file is not stored yet; try again shortly".into())),
        MediaStatus::Failed => {
            let reason = media.status_reason.as_deref().unwrap_or("no reason given");
            return Err(conflict(format!("storing the file failed: {reason}")));
        }
        MediaStatus::External => {
            return Err(conflict("only the file's metadata is indexed: it was not uploaded through crm-hub (see nextcloud_path)".into()));
        }
    }
    let path = media.nextcloud_path.clone().ok_or_else(|| ApiError::Internal("a stored media file without a path".into()))?;
    if let Some(tag) = media.sha256.as_ref().map(|hash| format!("\"{hash}\""))
        && none_match(&headers, &tag)
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(&tag) {
            response.headers_mut().insert(header::ETAG, value);
        }
        return Ok(response);
    }
    let turn = transfer_turn(&state, &state.download_turns, "download").await?;
    let envelope = Envelope::new(CORE_SOURCE, &ReadFile { path: path.clone() }, request_id.trace());
    let reply = state.bus.request(&envelope, state.file_read_timeout).await.map_err(files_unavailable)?;
    let reply: FileContent = reply.decode().map_err(ApiError::internal)?;
    let bytes = match reply.result {
        FileRead::Found { content } => content.0,
        FileRead::NotFound => return Err(ApiError::NotFound(format!("the file store has no file at {path}"))),
        FileRead::Failed { reason } => {
            tracing::warn!(media_id = %id, path = %path, %reason, "the files connector refuses to read a stored file");
            return Err(ApiError::ConnectorRefused(format!("the files connector refuses to read the file: {reason}")));
        }
    };
    let hash = sha256_hex(&bytes);
    // The bytes must be those stored: a file changed (or swapped) in the store since is not
    // served as this record's.
    if media.sha256.as_ref().is_some_and(|recorded| *recorded != hash) {
        tracing::error!(media_id = %id, path = %path, "the file store returned other bytes than the ones stored for this record");
        return Err(ApiError::Conflict {
            pointer: Some("/sha256".into()),
            detail: "the file in the file store is not the one stored (its SHA-256 differs): it was changed outside crm-hub".into(),
        });
    }
    let length = bytes.len();
    let mut response = Response::new(body_holding_turn(bytes, turn));
    let headers = response.headers_mut();
    let octets = HeaderValue::from_static("application/octet-stream");
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&media.mime_type).unwrap_or(octets));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(value) = HeaderValue::from_str(&content_disposition(&media.filename)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("\"{hash}\"")) {
        headers.insert(header::ETAG, value);
    }
    // The bytes are the customer's, not ours: never run them as a page of this origin.
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_encodes_non_ascii_names() {
        assert_eq!(content_disposition("plan.pdf"), "attachment; filename=\"plan.pdf\"");
        assert_eq!(
            content_disposition("καμπάνα 1.jpg"),
            "attachment; filename=\"_______ 1.jpg\"; filename*=UTF-8''%CE%BA%CE%B1%CE%BC%CF%80%CE%AC%CE%BD%CE%B1%201.jpg"
        );
        assert_eq!(content_disposition("a\"b.txt"), "attachment; filename=\"a_b.txt\"; filename*=UTF-8''a%22b.txt");
    }
}
