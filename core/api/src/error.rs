//! One error type for every handler, rendered as RFC 9457 `application/problem+json`. Clients
//! get a precise, actionable message for their own mistakes and a generic one for ours; the
//! real cause of a server error is logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crm_domain::{FieldError, Violations};
use crm_store::StoreError;
use serde::Serialize;

/// Problem `type` URIs are relative references into the API documentation.
const TYPE_BASE: &str = "/api/docs#problem-";

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// What a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body or query failed validation: 422 with every field's problem.
    #[error("validation failed")]
    Invalid(Violations),
    /// A query parameter is malformed: 400.
    #[error("invalid query parameter")]
    BadQuery(Violations),
    /// The request is malformed in a way no field explains (bad JSON syntax): 400.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or invalid credentials: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed: 403.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed attempts: 429.
    #[error("too many requests")]
    TooManyRequests {
        /// Seconds until the client may try again.
        retry_after: u64,
    },
    /// No such resource: 404.
    #[error("{0}")]
    NotFound(String),
    /// Method not allowed on this path: 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Clashes with the current state: 409.
    #[error("{detail}")]
    Conflict {
        /// Field concerned.
        pointer: Option<String>,
        /// What clashes.
        detail: String,
    },
    /// `If-Match` does not match the current version: 412.
    #[error("precondition failed")]
    PreconditionFailed {
        /// The current version.
        current: i64,
    },
    /// Body larger than allowed: 413.
    #[error("body too large")]
    TooLarge(usize),
    /// Body not in a media type the route accepts: 415.
    #[error("unsupported media type")]
    UnsupportedMediaType(&'static str),
    /// Anything on our side: 500, logged with its cause.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store is unreachable: 503.
    #[error("service unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A rule plugin gave no answer (it failed, is disabled, or none is active): 503. Nothing
    /// was stored.
    #[error("{0}")]
    PluginUnavailable(String),
    /// The request's body did not arrive in time: 408.
    #[error("{0}")]
    RequestTimeout(String),
    /// The server has as much of this kind of work in hand as it takes (file transfers): 503
    /// with `Retry-After`.
    #[error("{detail}")]
    Busy {
        /// What is busy, for the client.
        detail: String,
        /// Seconds after which trying again makes sense.
        retry_after: u64,
    },
    /// A connector answered with a refusal that trying again will not change: 502.
    #[error("{0}")]
    ConnectorRefused(String),
    /// A connector (or the bus to it) does not answer: 503 with `Retry-After`.
    #[error("{detail}")]
    ConnectorUnavailable {
        /// What does not answer, for the client.
        detail: String,
        /// Seconds after which trying again makes sense.
        retry_after: u64,
    },
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// URI reference naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// Field-level problems, each with the JSON Pointer of its field (body) or the name of its
    /// query parameter (as `/name`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The current version of the record, on 412.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i64>,
}

impl ApiError {
    /// An internal error from any cause.
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(err))
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadQuery(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::ConnectorRefused(_) => StatusCode::BAD_GATEWAY,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) | ApiError::ConnectorUnavailable { .. } | ApiError::PluginUnavailable(_) | ApiError::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The problem document for this error.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let (slug, title, detail, errors) = match self {
            ApiError::Invalid(v) => ("validation", "Invalid request body", format!("{} field(s) are invalid", v.0.len()), v.0.clone()),
            ApiError::BadQuery(v) => {
                ("invalid-query", "Invalid query parameter", format!("{} query parameter(s) are invalid", v.0.len()), v.0.clone())
            }
            ApiError::BadRequest(d) => ("bad-request", "Malformed request", d.clone(), vec![]),
            ApiError::Unauthorized(d) => ("unauthorized", "Authentication required", d.clone(), vec![]),
            ApiError::Forbidden(d) => ("forbidden", "Forbidden", d.clone(), vec![]),
            ApiError::TooManyRequests { retry_after } => {
                ("too-many-requests", "Too many requests", format!("too many failed attempts; try again in {retry_after} seconds"), vec![])
            }
            ApiError::NotFound(d) => ("not-found", "Not found", d.clone(), vec![]),
            ApiError::MethodNotAllowed => {
                ("method-not-allowed", "Method not allowed", "this path does not accept that method".into(), vec![])
            }
            ApiError::Conflict { pointer, detail } => {
                let errors = pointer.iter().map(|p| FieldError { pointer: p.clone(), detail: detail.clone() }).collect();
                ("conflict", "Conflict with the current state", detail.clone(), errors)
            }
            ApiError::PreconditionFailed { current } => (
                "precondition-failed",
                "Precondition failed",
                format!("the record has changed: it is at version {current}; fetch it again and retry"),
                vec![],
            ),
            ApiError::TooLarge(limit) => {
                ("too-large", "Request body too large", format!("the body exceeds the limit of {limit} bytes"), vec![])
            }
            ApiError::UnsupportedMediaType(expected) => {
                ("unsupported-media-type", "Unsupported media type", format!("send the body as {expected}"), vec![])
            }
            ApiError::Internal(_) => {
                ("internal", "Internal server error", "something went wrong on our side; it has been logged".into(), vec![])
            }
            ApiError::Unavailable(_) => {
                ("unavailable", "Service unavailable", "the database cannot be reached; try again shortly".into(), vec![])
            }
            ApiError::ConnectorRefused(detail) => ("connector-refused", "Connector refused", detail.clone(), vec![]),
            ApiError::Busy { detail, .. } => ("busy", "Server busy", detail.clone(), vec![]),
            ApiError::RequestTimeout(detail) => ("request-timeout", "Request timeout", detail.clone(), vec![]),
            ApiError::ConnectorUnavailable { detail, .. } => ("connector-unavailable", "Connector unavailable", detail.clone(), vec![]),
            ApiError::PluginUnavailable(detail) => ("plugin-unavailable", "Rule plugin unavailable", detail.clone(), vec![]),
        };
        Problem {
            kind: format!("{TYPE_BASE}{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            errors,
            current_version: match self {
                ApiError::PreconditionFailed { current } => Some(*current),
                _ => None,
            },
        }
    }
}

impl From<Violations> for ApiError {
    fn from(v: Violations) -> Self {
        ApiError::Invalid(v)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::NotFound("no such record".into()),
            StoreError::VersionMismatch { current } => ApiError::PreconditionFailed { current },
            StoreError::Conflict { pointer, detail } => ApiError::Conflict { pointer, detail },
            // Store-side checks of the query (cursor, sort, limit) name query parameters.
            StoreError::Invalid(v) if v.0.iter().any(|e| ["/cursor", "/sort", "/limit"].contains(&e.pointer.as_str())) => {
                ApiError::BadQuery(v)
            }
            StoreError::Invalid(v) => ApiError::Invalid(v),
            StoreError::Database(sqlx_err) if is_unavailable(&sqlx_err) => ApiError::Unavailable(Box::new(sqlx_err)),
            other => ApiError::internal(other),
        }
    }
}

fn is_unavailable(err: &crm_store::SqlxError) -> bool {
    matches!(err, crm_store::SqlxError::PoolTimedOut | crm_store::SqlxError::Io(_) | crm_store::SqlxError::PoolClosed)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // The cause chain goes to the log, not to the client.
            let mut causes = Vec::new();
            let mut source = std::error::Error::source(&self);
            while let Some(err) = source {
                causes.push(err.to_string());
                source = err.source();
            }
            tracing::error!(error = %self, causes = ?causes, "request failed");
        }
        let mut response = problem_response(status, &self.problem());
        match &self {
            ApiError::Unauthorized(_) => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after }
            | ApiError::ConnectorUnavailable { retry_after, .. }
            | ApiError::Busy { retry_after, .. } => {
                if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
            }
            _ => {}
        }
        response
    }
}

/// A problem document as a response.
pub(crate) fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}
