//! Request extractors that fail with precise problem documents: JSON bodies (media type, size,
//! syntax, and every field error with its JSON Pointer), `If-Match` versions, ids in paths, and
//! list query strings where an unknown parameter is an error rather than silently ignored.

use crate::error::ApiError;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::routing::MethodRouter;
use chrono::{DateTime, Utc};
use crm_domain::Violations;
use crm_domain::sha256_hex;
use crm_store::SortDirection;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

/// A JSON request body, parsed but not yet typed. Accepts `application/json` and any
/// `application/*+json` (such as `application/merge-patch+json`).
#[derive(Debug)]
pub(crate) struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(&media_type(req.headers())) {
            return Err(ApiError::UnsupportedMediaType("application/json"));
        }
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// An optional JSON request body: `None` when the request has no body at all.
#[derive(Debug)]
pub(crate) struct OptionalJsonBody(pub Option<Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let media_type = media_type(req.headers());
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        if !is_json(&media_type) {
            return Err(ApiError::UnsupportedMediaType("application/json"));
        }
        parse_json(&bytes).map(|value| OptionalJsonBody(Some(value)))
    }
}

/// The essence of the request's media type (`multipart/form-data`), in lower case; empty when
/// none is given.
pub(crate) fn media_type(headers: &axum::http::HeaderMap) -> String {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Whether a media type essence is JSON (`application/json`, `application/*+json`).
pub(crate) fn is_json(essence: &str) -> bool {
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A route's own body limit in place of [`crate::MAX_BODY_BYTES`], for a route whose fields may
/// hold more: enforced, and named in the 413.
pub(crate) fn body_limit<S: Clone + Send + Sync + 'static>(route: MethodRouter<S>, bytes: usize) -> MethodRouter<S> {
    route
        .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(bytes))
        .layer::<_, std::convert::Infallible>(Extension(BodyLimit(bytes)))
}

/// The body limit [`body_limit`] gave the route.
#[derive(Debug, Clone, Copy)]
struct BodyLimit(usize);

/// The whole body, within the route's body limit (413 beyond it).
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = req.extensions().get::<BodyLimit>().map_or(crate::MAX_BODY_BYTES, |limit| limit.0);
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(limit)
        } else {
            ApiError::BadRequest(format!("could not read the body: {rejection}"))
        }
    })
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
}

/// Types a JSON value, reporting a type error with the JSON Pointer of the offending field.
pub(crate) fn typed<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let mut pointer = String::new();
        for segment in err.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
                serde_path_to_error::Segment::Map { key } => pointer.push_str(&format!("/{}", key.replace('~', "~0").replace('/', "~1"))),
                serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
            }
        }
        ApiError::Invalid(Violations::one(pointer, err.into_inner().to_string()))
    })
}

/// The version in an `If-Match` header: `None` when absent or `*`. A value that is not one of
/// our ETags can never match and yields version -1, which fails the check with 412.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IfMatch(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else { return Ok(IfMatch(None)) };
        let text = value.to_str().unwrap_or("").trim();
        if text == "*" {
            return Ok(IfMatch(None));
        }
        Ok(IfMatch(Some(text.trim_start_matches("W/").trim_matches('"').parse().unwrap_or(-1))))
    }
}

/// The `Idempotency-Key` header, when the request has one: 1 to 255 visible ASCII characters,
/// bare or as a quoted string (the IETF draft's structured-field form, `"8e03…"`). A retry of a
/// request with the same key gets what the first one created (see
/// [`crm_store::Store::create_once_with_commands`]).
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyKeyHeader(pub Option<String>);

/// Its name.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else { return Ok(IdempotencyKeyHeader(None)) };
        let text = value.to_str().unwrap_or("").trim();
        let key = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) || key.contains('"') {
            return Err(ApiError::BadQuery(Violations::one("/Idempotency-Key", "must be 1 to 255 visible ASCII characters")));
        }
        Ok(IdempotencyKeyHeader(Some(key.to_owned())))
    }
}

/// A digest of a request's route and JSON body, the same whatever the order of the body's
/// members: what an idempotency key stands for.
pub(crate) fn request_digest(route: &str, body: &Value) -> String {
    fn canonical(value: &Value, out: &mut String) {
        match value {
            Value::Object(members) => {
                let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (name, member)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(name.clone()).to_string());
                    out.push(':');
                    canonical(member, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = format!("{route}\n");
    canonical(body, &mut text);
    sha256_hex(text.as_bytes())
}

/// The ETag for a record version.
pub(crate) fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// A record id from the path; anything but a UUID is a 404, as no such record can exist.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Id(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state).await.map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Uuid::parse_str(&raw).map(Id).map_err(|_| ApiError::NotFound(format!("`{raw}` is not a record id")))
    }
}

/// Query parameters every listing takes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Words to look for in names, organisations and contacts; case- and accent-insensitive.
    /// A phone number in any format finds the customer with that number.
    pub search: Option<String>,
    /// Sort key (`created_at` by default; the resource lists the others).
    pub sort: Option<String>,
    /// `asc` or `desc` (default).
    #[param(value_type = Option<String>)]
    pub direction: Option<SortDirection>,
    /// Cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1 to 200; 20 by default.
    pub limit: Option<u32>,
    /// Include soft-deleted records.
    pub include_deleted: Option<bool>,
    /// Created at or after this time (RFC 3339).
    #[serde(default, deserialize_with = "crm_domain::deserialize_storable_time")]
    pub created_from: Option<DateTime<Utc>>,
    /// Created before this time (RFC 3339).
    #[serde(default, deserialize_with = "crm_domain::deserialize_storable_time")]
    pub created_to: Option<DateTime<Utc>>,
}

const LIST_PARAMS: &[&str] = &["search", "sort", "direction", "cursor", "limit", "include_deleted", "created_from", "created_to"];

/// Parses a listing's query string into the common parameters and the resource's filter
/// parameters `F` (whose names are `filter_names`). Unknown names are refused.
///
/// A filter may share its name with a common parameter: the log's `direction` (inbound,
/// outbound, internal) and the sort `direction` (asc, desc). Such a parameter is the sort
/// direction when its value is `asc` or `desc`, and the filter otherwise.
pub(crate) fn list_query<F: DeserializeOwned>(raw: Option<&str>, filter_names: &[&str]) -> Result<(ListParams, F), ApiError> {
    let pairs = query_pairs(raw)?;
    let known: Vec<&str> = LIST_PARAMS.iter().chain(filter_names).copied().collect();
    let mut errors = Violations::default();
    refuse_unknown(&pairs, &known, &mut errors);
    refuse_empty_ranges(&pairs, &mut errors);
    let sorting = |(name, value): &&(String, String)| name == "direction" && ["asc", "desc"].contains(&value.as_str());
    let shared = |name: &str| LIST_PARAMS.contains(&name) && filter_names.contains(&name);
    let (common_pairs, filter_pairs): (Vec<_>, Vec<_>) = if filter_names.iter().any(|n| shared(n)) {
        let common = pairs.iter().filter(|p| !shared(&p.0) || sorting(p)).cloned().collect();
        let filter = pairs.iter().filter(|p| !sorting(p)).cloned().collect();
        (common, filter)
    } else {
        (pairs.clone(), pairs)
    };
    let common = typed_subset::<ListParams>(&common_pairs, LIST_PARAMS, &mut errors);
    let filter = typed_subset::<F>(&filter_pairs, filter_names, &mut errors);
    match (common, filter) {
        (Some(common), Some(filter)) if errors.is_empty() => Ok((common, filter)),
        _ => Err(ApiError::BadQuery(errors)),
    }
}

/// Parses a query string into `T`, whose parameter names are `names`; unknown names are refused.
pub(crate) fn strict_query<T: DeserializeOwned>(raw: Option<&str>, names: &[&str]) -> Result<T, ApiError> {
    let pairs = query_pairs(raw)?;
    let mut errors = Violations::default();
    refuse_unknown(&pairs, names, &mut errors);
    refuse_empty_ranges(&pairs, &mut errors);
    match typed_subset::<T>(&pairs, names, &mut errors) {
        Some(value) if errors.is_empty() => Ok(value),
        _ => Err(ApiError::BadQuery(errors)),
    }
}

/// The decoded parameters. A value holding U+0000 is refused: PostgreSQL cannot compare text
/// with it, and no stored value contains it.
fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(raw.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let mut errors = Violations::default();
    for (name, value) in &pairs {
        if value.contains('\0') {
            errors.push(format!("/{name}"), "must not contain the NUL character (U+0000)");
        }
    }
    if errors.is_empty() { Ok(pairs) } else { Err(ApiError::BadQuery(errors)) }
}

fn refuse_unknown(pairs: &[(String, String)], known: &[&str], errors: &mut Violations) {
    for (name, _) in pairs {
        if !known.contains(&name.as_str()) {
            errors.push(format!("/{name}"), format!("unknown parameter; expected one of {}", known.join(", ")));
        }
    }
}

/// A time range that ends before it starts (`<x>_from` after `<x>_to`, or `from` after `to`)
/// selects nothing: a client's mistake, refused at the end's name rather than answered with an
/// empty page.
fn refuse_empty_ranges(pairs: &[(String, String)], errors: &mut Violations) {
    let time = |name: &str| pairs.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.parse::<DateTime<Utc>>().ok());
    for (start, _) in pairs {
        let Some(stem) = start.strip_suffix("from") else { continue };
        let end = format!("{stem}to");
        if let (Some(from), Some(to)) = (time(start), time(&end))
            && from > to
        {
            errors.push(format!("/{end}"), format!("is before {start}: the range holds nothing"));
        }
    }
}

/// Types the parameters named in `names`, recording a type error under the parameter's name.
fn typed_subset<T: DeserializeOwned>(pairs: &[(String, String)], names: &[&str], errors: &mut Violations) -> Option<T> {
    let query =
        form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs.iter().filter(|(n, _)| names.contains(&n.as_str()))).finish();
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    match serde_path_to_error::deserialize(deserializer) {
        Ok(value) => Some(value),
        Err(err) => {
            errors.push(format!("/{}", err.path()), err.into_inner().to_string());
            None
        }
    }
}
