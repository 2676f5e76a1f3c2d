//! HTTP assertions shared by the suites that talk to a running server: status and media type
//! checks for JSON bodies and RFC 9457 problem documents (with the URL path and the body in every
//! failure message), and small readers for headers, field-error pointers and record ids.

use reqwest::header::{CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

/// The media type of every error.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The response's body as JSON, with the status and text in the panic message otherwise.
pub async fn json_body(response: Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("read body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text}"))
}

/// A header's value as text, if present (a value that is not text panics).
pub fn header_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().expect("header is text"))
}

/// Expects `status` and a JSON body, which it returns.
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let url = response.url().path().to_owned();
    let content_type = header_value(response.headers(), CONTENT_TYPE.as_str()).unwrap_or("").to_owned();
    let body = json_body(response).await;
    assert_eq!(got, status, "unexpected status from {url}; body: {body:#}");
    assert!(content_type.starts_with("application/json"), "content type {content_type:?} from {url} for {body:#}");
    body
}

/// Expects an RFC 9457 problem document with `status`, checks its required members, and
/// returns it.
pub async fn expect_problem(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let url = response.url().path().to_owned();
    let content_type = header_value(response.headers(), CONTENT_TYPE.as_str()).unwrap_or("").to_owned();
    let text = response.text().await.expect("read body");
    assert_eq!(got, status, "unexpected status from {url}; body: {text}");
    assert_eq!(content_type, PROBLEM_JSON, "problem content type from {url}; body: {text}");
    let problem: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("problem from {url} is not JSON ({e}): {text}"));
    assert_eq!(problem["status"], json!(status.as_u16()), "{problem:#}");
    for member in ["type", "title", "detail"] {
        let value = problem[member].as_str().unwrap_or_else(|| panic!("problem without `{member}`: {problem:#}"));
        assert!(!value.is_empty(), "empty `{member}`: {problem:#}");
    }
    problem
}

/// Expects 403 as a problem document.
pub async fn expect_forbidden(response: Response) -> Value {
    expect_problem(response, StatusCode::FORBIDDEN).await
}

/// Expects 401 as a problem document with `WWW-Authenticate: Bearer`.
pub async fn expect_unauthorized(response: Response) -> Value {
    let challenge = header_value(response.headers(), WWW_AUTHENTICATE.as_str()).map(str::to_owned);
    let problem = expect_problem(response, StatusCode::UNAUTHORIZED).await;
    assert_eq!(challenge.as_deref(), Some("Bearer"), "401 without the Bearer challenge: {problem:#}");
    problem
}

/// The JSON Pointers of a problem's field errors, in order; every field error must have a
/// non-empty detail.
pub fn pointers(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("problem without `errors`: {problem:#}"))
        .iter()
        .map(|e| {
            assert!(e["detail"].as_str().is_some_and(|d| !d.is_empty()), "field error without detail: {problem:#}");
            e["pointer"].as_str().unwrap_or_else(|| panic!("field error whose pointer is not a string: {problem:#}")).to_owned()
        })
        .collect()
}

/// A record's id as a string.
pub fn id(record: &Value) -> &str {
    record["id"].as_str().unwrap_or_else(|| panic!("record without id: {record:#}"))
}

/// The ids of a page's items, in order.
pub fn item_ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap_or_else(|| panic!("not a page: {page:#}")).iter().map(|r| id(r).to_owned()).collect()
}
