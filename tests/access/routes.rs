//! The route × principal table. Every operation the OpenAPI document describes has exactly one
//! permission rule and every rule is documented, so a route added without a rule (or without
//! documentation) fails here; then every rule is exercised with real requests from an anonymous
//! client, an admin, a manager, an agent and a narrowly scoped API key, and each answer must be
//! what the permission table says.

use crate::{PROBLEM_JSON, SignedIn, admin_create, expect_json, header_value, id, new_api_key, new_user, send};
use crm_api::{Requirement, RouteRule, route_rules};
use crm_domain::access::{Action, Area, Role, Scope, parse_grant, scope_of};
use crm_tests::TestApp;
use crm_tests::fixtures::{file_dead_letter, log_unmatched, received_email};
use reqwest::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;

crm_tests::api_on_both_backends!(every_documented_operation_has_one_rule, public_endpoints_need_no_credentials);

/// The route table runs on a server with plugins, so that the plugin routes answer.
mod with_plugins {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn route_role_table_sqlite() {
        let db = crm_tests::TestDb::new(crm_tests::Backend::Sqlite).await.expect("sqlite is always available");
        super::route_role_table(&crm_tests::TestApp::spawn_with_plugins(db).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn route_role_table_postgres() {
        let Some(db) = crm_tests::TestDb::new(crm_tests::Backend::Postgres).await else { return };
        super::route_role_table(&crm_tests::TestApp::spawn_with_plugins(db).await).await;
    }
}

/// Endpoints outside `/api/v1` that are public on purpose and have no rule.
const PUBLIC_OUTSIDE_API: [&str; 5] = ["/health", "/ready", "/metrics", "/api/openapi.json", "/api/docs"];

/// The HTTP methods an OpenAPI path item can hold.
const OPENAPI_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Every operation of the served document: (method, path) -> operation.
async fn documented_operations(app: &TestApp) -> Vec<(Method, String, Value)> {
    let response = app.anonymous.get(app.url("/api/openapi.json")).send().await.expect("request");
    let document = expect_json(response, StatusCode::OK).await;
    let paths = document["paths"].as_object().unwrap_or_else(|| panic!("no paths in the document: {document:#}"));
    let mut operations = Vec::new();
    for (path, item) in paths {
        let item = item.as_object().unwrap_or_else(|| panic!("path item of {path} is not an object"));
        for (key, operation) in item {
            if OPENAPI_METHODS.contains(&key.as_str()) {
                let method = Method::from_bytes(key.to_ascii_uppercase().as_bytes()).expect("method");
                operations.push((method, path.clone(), operation.clone()));
            }
        }
    }
    assert!(!operations.is_empty(), "the document describes no operation");
    operations
}

fn rules_for<'r>(method: &Method, path: &str) -> Vec<&'r RouteRule> {
    route_rules().iter().filter(|r| r.method == method && r.path == path).collect()
}

async fn every_documented_operation_has_one_rule(app: &TestApp) {
    let operations = documented_operations(app).await;
    let mut problems = Vec::new();

    // Each documented API operation has exactly one rule, and its documented security matches:
    // public rules say `security: [{}]` (no credentials), the others inherit the bearer scheme.
    for (method, path, operation) in &operations {
        if !path.starts_with("/api/v1/") {
            if !PUBLIC_OUTSIDE_API.contains(&path.as_str()) {
                problems.push(format!("{method} {path} is documented outside /api/v1 and is not a known public endpoint"));
            }
            continue;
        }
        let rules = rules_for(method, path);
        if rules.len() != 1 {
            problems.push(format!("{method} {path} is documented and has {} permission rules (want exactly 1)", rules.len()));
            continue;
        }
        let documented_public = operation.get("security") == Some(&json!([{}]));
        let public = rules[0].requirement == Requirement::Public;
        if documented_public != public {
            problems.push(format!(
                "{method} {path}: rule {:?} but the document's security is {}",
                rules[0].requirement,
                operation.get("security").map_or("inherited".to_owned(), Value::to_string)
            ));
        }
        if !public && !operation["responses"].get("401").is_some_and(|r| r.is_object()) {
            problems.push(format!("{method} {path} needs credentials but documents no 401"));
        }
        if matches!(rules[0].requirement, Requirement::Permission(..) | Requirement::PermissionOnAll(..))
            && !operation["responses"].get("403").is_some_and(|r| r.is_object())
        {
            problems.push(format!("{method} {path} needs a permission but documents no 403"));
        }
    }

    // Each rule is for an API route and is documented.
    let documented: BTreeSet<(String, String)> = operations.iter().map(|(m, p, _)| (m.to_string(), p.clone())).collect();
    for rule in route_rules() {
        if !rule.path.starts_with("/api/v1/") {
            problems.push(format!("rule for {} {} is outside /api/v1", rule.method, rule.path));
        }
        if !documented.contains(&(rule.method.to_string(), rule.path.clone())) {
            problems
                .push(format!("rule for {} {} ({:?}) has no operation in the OpenAPI document", rule.method, rule.path, rule.requirement));
        }
    }
    let api_operations = operations.iter().filter(|(_, p, _)| p.starts_with("/api/v1/")).count();
    if api_operations != route_rules().len() {
        problems.push(format!("{api_operations} documented API operations but {} rules", route_rules().len()));
    }
    assert!(problems.is_empty(), "route rules and the OpenAPI document disagree:\n{}", problems.join("\n"));
}

async fn public_endpoints_need_no_credentials(app: &TestApp) {
    for path in PUBLIC_OUTSIDE_API {
        let response = app.anonymous.get(app.url(path)).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::OK, "anonymous GET {path}");
    }
    // Without configured origins, no browser origin is allowed.
    let preflight = app
        .anonymous
        .request(Method::OPTIONS, app.url("/api/v1/customers"))
        .header("origin", "https://console.example.gr")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("request");
    assert!(preflight.headers().get("access-control-allow-origin").is_none(), "{:?}", preflight.headers());
}

/// Who sends a request in the table.
#[derive(Debug)]
enum Who {
    Anonymous,
    User(Role),
    ApiKey(Vec<(Area, Action)>),
}

/// What the table says must happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// 401 with a Bearer challenge.
    Unauthorized,
    /// 403.
    Forbidden,
    /// Anything but 401 or 403 (the body may still be refused).
    Allowed,
}

fn expected(who: &Who, requirement: Requirement) -> Expected {
    match (requirement, who) {
        (Requirement::Public, _) => Expected::Allowed,
        (_, Who::Anonymous) => Expected::Unauthorized,
        (Requirement::SignedIn, _) => Expected::Allowed,
        (Requirement::Permission(area, action), Who::User(role)) => {
            if scope_of(*role, area, action).is_some() {
                Expected::Allowed
            } else {
                Expected::Forbidden
            }
        }
        (Requirement::PermissionOnAll(area, action), Who::User(role)) => {
            // Those who may act only on what is assigned to them are refused.
            if scope_of(*role, area, action) == Some(Scope::All) { Expected::Allowed } else { Expected::Forbidden }
        }
        (Requirement::Permission(area, action) | Requirement::PermissionOnAll(area, action), Who::ApiKey(grants)) => {
            if grants.contains(&(area, action)) { Expected::Allowed } else { Expected::Forbidden }
        }
    }
}

struct Caller {
    label: String,
    who: Who,
    client: Client,
}

/// A fresh record for the `{id}` of `template`, of the kind the path names, made by the admin
/// key; customers and orders are assigned to `agent`, so that an agent's access to records in
/// their scope is observed. Fresh for every request, so that one request's deletion never
/// changes what the next one sees.
async fn concrete_path(app: &TestApp, template: &str, agent: &str) -> String {
    if template.contains("{name}") {
        // Plugins are named; the default matcher is there, active, and safe to poke at.
        return template.replace("{name}", crm_plugins::defaults::MATCHER_NAME);
    }
    if !template.contains("{id}") {
        assert!(!template.contains('{'), "route {template} has a parameter the table does not know how to fill");
        return template.to_owned();
    }
    let collection = template.strip_prefix("/api/v1/").and_then(|rest| rest.split('/').next()).unwrap_or("");
    let record = match collection {
        "customers" => admin_create(app, "/api/v1/customers", &json!({"name": "Πελάτης πίνακα", "assigned_to": agent})).await,
        "products" => {
            let sku = format!("T-{}", uuid::Uuid::now_v7().simple());
            admin_create(app, "/api/v1/products", &json!({"name": "Προϊόν", "sku": sku, "category": "controller", "price": 1_000})).await
        }
        "orders" => {
            let customer = admin_create(app, "/api/v1/customers", &json!({"name": "Πελάτης παραγγελίας", "assigned_to": agent})).await;
            admin_create(app, "/api/v1/orders", &json!({"customer_id": id(&customer), "assigned_to": agent})).await
        }
        "users" => {
            let email = format!("victim-{}@example.gr", uuid::Uuid::now_v7().simple());
            admin_create(app, "/api/v1/users", &json!({"email": email, "display_name": "Θύμα", "role": "agent"})).await
        }
        "api-keys" => admin_create(app, "/api/v1/api-keys", &json!({"name": "victim", "scopes": ["products:view"]})).await,
        "comms" => {
            let customer = admin_create(app, "/api/v1/customers", &json!({"name": "Πελάτης σημείωσης", "assigned_to": agent})).await;
            admin_create(app, "/api/v1/comms", &json!({"customer_id": id(&customer), "type": "note", "body": "Σημείωση"})).await
        }
        "media" => {
            let customer = admin_create(app, "/api/v1/customers", &json!({"name": "Πελάτης αρχείου", "assigned_to": agent})).await;
            let file = json!({"customer_id": id(&customer), "filename": "σχέδιο.pdf", "nextcloud_path": "Customers/σχέδιο.pdf"});
            admin_create(app, "/api/v1/media", &file).await
        }
        "inbox" => {
            let entry = log_unmatched(&app.db.store, "stranger@example.com", "Γεια", chrono::Utc::now()).await;
            json!({"id": entry})
        }
        "bus" => {
            let letter = file_dead_letter(&app.db.store, "core.events", &received_email("a@example.gr", "x"), "test").await;
            json!({"id": letter})
        }
        other => panic!("no fixture for records under /api/v1/{other}: teach the table how to make one so that {template} is tested"),
    };
    let path = template.replace("{id}", id(&record));
    assert!(!path.contains('{'), "route {template} has a parameter the table does not know how to fill");
    path
}

/// A minimal body for methods that take one: never valid for creating anything, which is fine:
/// the table is about who gets past authorisation, not about validation.
fn body_for(method: &Method) -> Option<Value> {
    [Method::POST, Method::PUT, Method::PATCH].contains(method).then(|| json!({}))
}

async fn route_role_table(app: &TestApp) {
    let admin = new_user(app, Role::Admin).await;
    let manager = new_user(app, Role::Manager).await;
    let agent = new_user(app, Role::Agent).await;
    let scopes = ["customers:view"];
    let (_, key_client) = new_api_key(app, &scopes).await;
    let grants = scopes.iter().map(|s| parse_grant(s).expect("grant")).collect();
    let user = |signed_in: SignedIn| Caller {
        label: signed_in.role.as_str().to_owned(),
        who: Who::User(signed_in.role),
        client: signed_in.client,
    };
    let agent_id = agent.id.clone();
    let callers = [
        Caller { label: "anonymous".into(), who: Who::Anonymous, client: app.anonymous.clone() },
        user(admin),
        user(manager),
        user(agent),
        Caller { label: format!("API key {scopes:?}"), who: Who::ApiKey(grants), client: key_client },
    ];

    let mut failures = Vec::new();
    let mut seen = [0usize; 3];
    for rule in route_rules() {
        for caller in &callers {
            let path = concrete_path(app, &rule.path, &agent_id).await;
            let method = rule.method.clone();
            let response = send(app, &caller.client, method.clone(), &path, body_for(&method).as_ref()).await;
            let want = expected(&caller.who, rule.requirement);
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.text().await.expect("read body");
            let what =
                format!("{method} {} as {} (rule {:?}, want {want:?}): got {status} {body}", rule.path, caller.label, rule.requirement);
            let content_type = header_value(&headers, CONTENT_TYPE.as_str()).unwrap_or("");
            let is_problem = content_type == PROBLEM_JSON
                && serde_json::from_str::<Value>(&body).is_ok_and(|p| p["status"] == json!(status.as_u16()) && p["detail"].is_string());
            for (name, value) in [("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"), ("referrer-policy", "no-referrer")] {
                if header_value(&headers, name) != Some(value) {
                    failures.push(format!("{what}: header {name} is {:?}, want {value:?}", header_value(&headers, name)));
                }
            }
            match want {
                Expected::Unauthorized => {
                    seen[0] += 1;
                    if status != StatusCode::UNAUTHORIZED
                        || !is_problem
                        || header_value(&headers, WWW_AUTHENTICATE.as_str()) != Some("Bearer")
                    {
                        failures.push(format!("{what} (want 401 problem+json with WWW-Authenticate: Bearer)"));
                    }
                }
                Expected::Forbidden => {
                    seen[1] += 1;
                    if status != StatusCode::FORBIDDEN || !is_problem {
                        failures.push(format!("{what} (want 403 problem+json)"));
                    }
                }
                Expected::Allowed => {
                    seen[2] += 1;
                    // Past authorisation; with a real record behind every `{id}` the route exists
                    // and finds it, and a minimal body is at worst refused as invalid.
                    let refused = [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN, StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED];
                    if refused.contains(&status) || status.is_server_error() {
                        failures.push(what);
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of the route × principal table failed:\n{}", failures.len(), failures.join("\n"));
    // The table exercised every outcome (a broken fixture or principal would show here).
    assert!(seen.iter().all(|n| *n > 0), "outcomes seen (401, 403, allowed): {seen:?}");
}
