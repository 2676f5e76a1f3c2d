//! Rule plugins through the HTTP API: orders priced by the active pricing plugin on create,
//! update and quote; a failing plugin fails the operation with a problem document and stores
//! nothing; plugin management is for admins; and a pricing plugin swapped 100 times while
//! orders are quoted continuously fails no quote, each quote priced wholly by one version.

use crm_domain::access::Role;
use crm_plugins::{HostConfig, Registry, RegistryConfig, defaults};
use crm_tests::http::{expect_json, expect_problem, id};
use crm_tests::{Backend, TestApp, TestDb, test_api_config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A registry in a fresh directory (the artifact cache is shared between tests: it is keyed by
/// the component's hash and the engine's settings).
fn registry() -> (Arc<Registry>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-artifacts");
    let host = HostConfig { cache_dir: Some(cache), max_consecutive_failures: 3, ..HostConfig::default() };
    let registry = Registry::open(RegistryConfig { dir: dir.path().to_owned(), host, install_defaults: true }).expect("registry");
    (Arc::new(registry), dir)
}

async fn spawn(backend: Backend) -> Option<(TestApp, Arc<Registry>, tempfile::TempDir)> {
    let db = TestDb::new(backend).await?;
    let (registry, dir) = tokio::task::spawn_blocking(registry).await.expect("registry");
    let plugins = registry.clone();
    let app = TestApp::spawn_customized(db, test_api_config(), move |state| state.with_plugins(plugins)).await;
    Some((app, registry, dir))
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (app, registry, _dir) = super::spawn(crm_tests::Backend::Sqlite).await.expect("sqlite");
                    super::$name(&app, &registry).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some((app, registry, _dir)) = super::spawn(crm_tests::Backend::Postgres).await else { return };
                    super::$name(&app, &registry).await;
                }
            )*
        }
    };
}

on_both_backends!(orders_are_priced_by_the_active_pricing_plugin, a_failing_pricing_plugin_fails_the_operation_and_stores_nothing);

fn built(stem: &str) -> Vec<u8> {
    std::fs::read(defaults::built_component(stem)).expect("component built by crm-plugins' build script")
}

async fn post(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.client.post(app.url(path)).json(body).send().await.expect("request")
}

async fn upload(client: &reqwest::Client, app: &TestApp, query: &str, bytes: Vec<u8>) -> reqwest::Response {
    client
        .post(app.url(&format!("/api/v1/plugins?{query}")))
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .expect("request")
}

async fn customer(app: &TestApp) -> String {
    id(&expect_json(post(app, "/api/v1/customers", &json!({"name": "Ιερός Ναός Αγίου Νικολάου"})).await, StatusCode::CREATED).await)
        .to_owned()
}

/// 12 × 10.00 and 1 × 50.00 with 10 % off, 24 % tax on the whole order.
fn order_body(customer: &str, currency: &str) -> Value {
    json!({
        "customer_id": customer,
        "currency": currency,
        "tax_rate": 24,
        "items": [
            {"type": "service", "description": "καμπάνα", "quantity": 12, "unit_price": 1_000},
            {"type": "custom", "description": "εγκατάσταση", "unit_price": 5_000, "discount": {"type": "percentage", "value": 10}}
        ]
    })
}

async fn orders(app: &TestApp) -> usize {
    let page = expect_json(app.client.get(app.url("/api/v1/orders")).send().await.expect("request"), StatusCode::OK).await;
    page["items"].as_array().map_or(0, Vec::len)
}

async fn orders_are_priced_by_the_active_pricing_plugin(app: &TestApp, _registry: &Registry) {
    let customer = customer(app).await;
    let created = expect_json(post(app, "/api/v1/orders", &order_body(&customer, "EUR")).await, StatusCode::CREATED).await;
    // 12,000 + 4,500 = 16,500; tax 24 % = 3,960
    assert_eq!((&created["subtotal"], &created["tax_total"], &created["total"]), (&json!(16_500), &json!(3_960), &json!(20_460)));
    assert_eq!(created["items"][1]["line_total"], 4_500);
    assert_eq!(created["priced_by"]["plugin"], defaults::PRICING_NAME);
    assert_eq!(created["priced_by"]["hash"], crm_plugins::sha256_hex(defaults::PRICING_WASM));
    assert!(created["pricing_notes"].as_array().is_some_and(|n| n.len() == 3), "{created:#}");

    // A quote prices the same draft without saving it; the customer may be left out.
    let quoted = expect_json(post(app, "/api/v1/orders/quote", &order_body(&customer, "EUR")).await, StatusCode::OK).await;
    assert_eq!((&quoted["total"], &quoted["priced_by"]), (&created["total"], &created["priced_by"]));
    let mut anonymous = order_body(&customer, "EUR");
    anonymous.as_object_mut().unwrap().remove("customer_id");
    assert_eq!(expect_json(post(app, "/api/v1/orders/quote", &anonymous).await, StatusCode::OK).await["total"], 20_460);
    assert_eq!(orders(app).await, 1);

    // Switching to the template (a volume discount of 5 % from 10 units) reprices drafts on
    // update, and leaves confirmed orders as they were priced.
    let response = upload(&app.client, app, "name=volume&version=1.0.0", built("crm_plugin_template")).await;
    let summary = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(summary["active_for"], json!(["pricing"]));
    let order = id(&created).to_owned();
    let patched =
        app.client.patch(app.url(&format!("/api/v1/orders/{order}"))).json(&json!({"notes": "repriced"})).send().await.expect("request");
    let patched = expect_json(patched, StatusCode::OK).await;
    assert_eq!((&patched["subtotal"], &patched["priced_by"]["plugin"]), (&json!(11_400 + 4_500), &json!("volume")));
    let confirmed =
        app.client.patch(app.url(&format!("/api/v1/orders/{order}"))).json(&json!({"status": "confirmed"})).send().await.unwrap();
    let confirmed = expect_json(confirmed, StatusCode::OK).await;
    let enabled = app.client.post(app.url(&format!("/api/v1/plugins/{}/enable", defaults::PRICING_NAME))).send().await.unwrap();
    expect_json(enabled, StatusCode::OK).await;
    let paid = app.client.patch(app.url(&format!("/api/v1/orders/{order}"))).json(&json!({"payment_status": "paid"})).send().await.unwrap();
    let paid = expect_json(paid, StatusCode::OK).await;
    assert_eq!((&paid["total"], &paid["priced_by"]), (&confirmed["total"], &confirmed["priced_by"]));

    // The rule's refusal names the order's field.
    let mut bad = order_body(&customer, "EUR");
    bad["items"][1]["discount"] = json!({"type": "fixed", "value": 6_000});
    let problem = expect_problem(post(app, "/api/v1/orders/quote", &bad).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["pointer"], "/items/1/discount/value", "{problem:#}");
}

async fn a_failing_pricing_plugin_fails_the_operation_and_stores_nothing(app: &TestApp, registry: &Registry) {
    let customer = customer(app).await;
    expect_json(upload(&app.client, app, "name=crm-pricing&version=evil", built("crm_plugin_hostile")).await, StatusCode::CREATED).await;
    for currency in ["PAN", "LOP", "BAD"] {
        let problem =
            expect_problem(post(app, "/api/v1/orders", &order_body(&customer, currency)).await, StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(problem["type"].as_str().unwrap().ends_with("plugin-unavailable"), "{problem:#}");
        assert!(problem["detail"].as_str().unwrap().contains("crm-pricing evil"), "{problem:#}");
    }
    assert_eq!(orders(app).await, 0, "nothing was stored");
    // Three failures in a row disabled it: pricing stops rather than falling back.
    assert!(!registry.get("crm-pricing").unwrap().enabled);
    let problem = expect_problem(post(app, "/api/v1/orders", &order_body(&customer, "EUR")).await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(problem["detail"].as_str().unwrap().contains("disabled"), "{problem:#}");
    // The core keeps serving, and a rollback restores pricing.
    expect_json(app.client.get(app.url("/api/v1/customers")).send().await.unwrap(), StatusCode::OK).await;
    let rolled = app.client.post(app.url("/api/v1/plugins/crm-pricing/rollback")).send().await.unwrap();
    assert_eq!(expect_json(rolled, StatusCode::OK).await["current"]["version"], defaults::VERSION);
    expect_json(post(app, "/api/v1/orders", &order_body(&customer, "EUR")).await, StatusCode::CREATED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_management_is_for_admins_and_refuses_what_does_not_fit() {
    let (app, _registry, _dir) = spawn(Backend::Sqlite).await.expect("sqlite");
    let list = expect_json(app.client.get(app.url("/api/v1/plugins")).send().await.unwrap(), StatusCode::OK).await;
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, [defaults::MATCHER_NAME, defaults::PRICING_NAME]);
    let (_, manager) = app.user(Role::Manager).await;
    assert_eq!(manager.get(app.url("/api/v1/plugins")).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let refused = upload(&manager, &app, "name=x&version=1", built("crm_plugin_template")).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // An agent may quote.
    let (_, agent) = app.user(Role::Agent).await;
    let body = json!({"items": [{"type": "service", "description": "x", "unit_price": 100}]});
    assert_eq!(agent.post(app.url("/api/v1/orders/quote")).json(&body).send().await.unwrap().status(), StatusCode::OK);

    let empty = wat::parse_str("(component)").unwrap();
    let problem = expect_problem(upload(&app.client, &app, "name=x&version=1", empty).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(problem["errors"][0]["detail"].as_str().unwrap().contains("crm:rules"), "{problem:#}");
    let problem =
        expect_problem(upload(&app.client, &app, "name=Bad%20Name&version=1", built("crm_plugin_template")).await, StatusCode::BAD_REQUEST)
            .await;
    assert_eq!(problem["errors"][0]["pointer"], "/name");
    let problem = expect_problem(upload(&app.client, &app, "version=1", built("crm_plugin_template")).await, StatusCode::BAD_REQUEST).await;
    assert!(!problem["errors"].as_array().unwrap().is_empty(), "{problem:#}");

    let added = expect_json(
        upload(&app.client, &app, "name=volume&version=1&activate=false", built("crm_plugin_template")).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!((&added["world"], &added["current"]["world"], &added["active_for"]), (&Value::Null, &json!("pricing-plugin"), &json!([])));
    let disabled = expect_json(app.client.post(app.url("/api/v1/plugins/volume/disable")).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(disabled["enabled"], false);
    let conflict = app.client.delete(app.url(&format!("/api/v1/plugins/{}", defaults::PRICING_NAME))).send().await.unwrap();
    expect_problem(conflict, StatusCode::CONFLICT).await;
    assert_eq!(app.client.delete(app.url("/api/v1/plugins/volume")).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    expect_problem(app.client.get(app.url("/api/v1/plugins/volume")).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    expect_problem(app.client.post(app.url("/api/v1/plugins/crm-matcher/rollback")).send().await.unwrap(), StatusCode::CONFLICT).await;
}

/// The load test: two clients quote without pause while the pricing plugin is swapped 100
/// times between the built-in rule and the template (by upload, then by rollback). No quote
/// may fail, and every quote's total must be the one its `priced_by` version computes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_the_pricing_plugin_100_times_under_load_fails_no_quote() {
    let (app, _registry, _dir) = spawn(Backend::Sqlite).await.expect("sqlite");
    let app = Arc::new(app);
    let body = json!({"items": [{"type": "service", "description": "καμπάνα", "quantity": 12, "unit_price": 1_000}]});
    let done = Arc::new(AtomicBool::new(false));
    let (quotes, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (app, body, done, quotes, failures) = (app.clone(), body.clone(), done.clone(), quotes.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let mut versions = std::collections::HashSet::new();
            while !done.load(Ordering::Acquire) {
                let response = app.client.post(app.url("/api/v1/orders/quote")).json(&body).send().await.expect("request");
                if response.status() != StatusCode::OK {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let quote: Value = response.json().await.expect("json");
                let version = quote["priced_by"]["version"].as_str().unwrap_or_default().to_owned();
                let expected = if version.starts_with("volume") { 11_400 } else { 12_000 };
                assert_eq!(quote["total"], expected, "a quote priced by {version}: {quote:#}");
                versions.insert(version);
                quotes.fetch_add(1, Ordering::Relaxed);
            }
            versions
        }));
    }
    let (template, default) = (built("crm_plugin_template"), defaults::PRICING_WASM.to_vec());
    for swap in 0..100 {
        let response = if swap % 4 == 3 {
            app.client.post(app.url("/api/v1/plugins/crm-pricing/rollback")).send().await.expect("request")
        } else if swap % 2 == 0 {
            upload(&app.client, &app, &format!("name=crm-pricing&version=volume-{swap}"), template.clone()).await
        } else {
            upload(&app.client, &app, &format!("name=crm-pricing&version=builtin-{swap}"), default.clone()).await
        };
        assert!(response.status().is_success(), "swap {swap}: {}", response.text().await.unwrap_or_default());
        // Let some quotes through on each version.
        let seen = quotes.load(Ordering::Relaxed);
        while quotes.load(Ordering::Relaxed) < seen + 2 {
            tokio::task::yield_now().await;
        }
    }
    done.store(true, Ordering::Release);
    let mut versions = std::collections::HashSet::new();
    for client in clients {
        versions.extend(client.await.expect("client"));
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "failed quotes");
    assert!(quotes.load(Ordering::Relaxed) >= 200, "{} quotes", quotes.load(Ordering::Relaxed));
    assert!(versions.len() > 20, "quotes were priced by {} versions", versions.len());
}
