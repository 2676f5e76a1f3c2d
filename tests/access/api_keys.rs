//! Service credentials: the key is shown once, on creation; its scopes bound what it may do;
//! revoking it locks it out at once; its use is recorded; bad scopes are refused by field.

use crate::{
    admin_create, admin_get, expect_forbidden, expect_json, expect_problem, expect_unauthorized, get, id, item_ids, new_api_key, new_user,
    pointers, post, send,
};
use crm_domain::access::Role;
use crm_tests::{TestApp, client_with_token, sha256_hex};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

crm_tests::api_on_both_backends!(
    keys_are_shown_once,
    scopes_bound_what_a_key_may_do,
    revoked_keys_are_refused,
    key_use_is_recorded,
    invalid_scopes_are_refused,
);

async fn keys_are_shown_once(app: &TestApp) {
    let admin = new_user(app, Role::Admin).await;
    let response =
        post(app, &admin.client, "/api/v1/api-keys", &json!({"name": "email connector on mail01", "scopes": ["customers:view"]})).await;
    let location = crate::header_value(response.headers(), "location").map(str::to_owned);
    let created = expect_json(response, StatusCode::CREATED).await;
    let key = created["key"].as_str().unwrap_or_else(|| panic!("no key: {created:#}")).to_owned();
    assert!(key.starts_with("crm_"), "{key}");
    assert!(key.len() >= "crm_".len() + 40, "a key needs enough randomness: {key}");
    let prefix = created["prefix"].as_str().expect("prefix");
    assert!(key.starts_with(prefix) && prefix.len() > "crm_".len() && prefix.len() < key.len() / 2, "prefix {prefix:?} of {key:?}");
    assert_eq!(created["name"], "email connector on mail01");
    assert_eq!(created["scopes"], json!(["customers:view"]));
    assert_eq!(created["created_by"], json!(admin.id));
    assert!(created.get("last_used_at").is_none(), "{created:#}");
    let path = format!("/api/v1/api-keys/{}", id(&created));
    assert_eq!(location.as_deref(), Some(path.as_str()));

    // The key works.
    expect_json(get(app, &client_with_token(&key), "/api/v1/customers").await, StatusCode::OK).await;

    // Never shown again: not on reading it, not in the listing, not in /me, not in the audit
    // trail; nor is its hash.
    let hash = sha256_hex(&key);
    let texts = [
        ("GET the key", get(app, &admin.client, &path).await),
        ("list keys", get(app, &admin.client, "/api/v1/api-keys").await),
        ("/me as the key", get(app, &client_with_token(&key), "/api/v1/me").await),
        ("audit trail", get(app, &admin.client, "/api/v1/audit").await),
    ];
    for (what, response) in texts {
        assert_eq!(response.status(), StatusCode::OK, "{what}");
        let text = response.text().await.expect("body");
        assert!(!text.contains(&key), "{what} shows the key: {text}");
        assert!(!text.contains(&hash), "{what} shows the key's hash: {text}");
        assert!(!text.contains("\"key\""), "{what} has a `key` member: {text}");
    }
    let read = admin_get(app, &path).await;
    assert_eq!(read["prefix"], prefix);
    assert!(read.get("key").is_none() && read.get("key_hash").is_none(), "{read:#}");
    let listing = admin_get(app, "/api/v1/api-keys").await;
    let listed = listing["items"].as_array().expect("items").iter().find(|k| k["id"] == created["id"]).expect("the key is listed").clone();
    assert_eq!(listed["prefix"], prefix);
    assert!(listed.get("key").is_none(), "{listed:#}");

    // Keys are not edited: there is no PUT or PATCH.
    let response = send(app, &admin.client, Method::PATCH, &path, Some(&json!({"scopes": ["customers:edit"]}))).await;
    expect_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    // A client cannot choose its key or prefix.
    let response =
        post(app, &admin.client, "/api/v1/api-keys", &json!({"name": "chosen", "scopes": ["customers:view"], "key": "crm_chosen"})).await;
    assert_eq!(pointers(&expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await), ["/key"]);
    let chosen =
        admin_create(app, "/api/v1/api-keys", &json!({"name": "chosen prefix", "scopes": ["customers:view"], "prefix": "crm_aaaaaa"}))
            .await;
    assert_ne!(chosen["prefix"], "crm_aaaaaa");
    assert!(chosen["key"].as_str().unwrap().starts_with(chosen["prefix"].as_str().unwrap()));
}

async fn scopes_bound_what_a_key_may_do(app: &TestApp) {
    let customer = admin_create(app, "/api/v1/customers", &json!({"name": "Στέλιος Μπιμπης"})).await;
    let customer_path = format!("/api/v1/customers/{}", id(&customer));

    // customers:view reads customers, and nothing else.
    let (_, viewer) = new_api_key(app, &["customers:view"]).await;
    assert_eq!(item_ids(&expect_json(get(app, &viewer, "/api/v1/customers").await, StatusCode::OK).await), [id(&customer)]);
    assert_eq!(expect_json(get(app, &viewer, &customer_path).await, StatusCode::OK).await, customer);
    expect_forbidden(post(app, &viewer, "/api/v1/customers", &json!({"name": "Νέος"})).await).await;
    expect_forbidden(send(app, &viewer, Method::PATCH, &customer_path, Some(&json!({"name": "Άλλαξε"}))).await).await;
    expect_forbidden(send(app, &viewer, Method::DELETE, &customer_path, None).await).await;
    expect_forbidden(get(app, &viewer, "/api/v1/orders").await).await;
    expect_forbidden(get(app, &viewer, "/api/v1/products").await).await;
    expect_forbidden(get(app, &viewer, "/api/v1/users").await).await;
    expect_forbidden(get(app, &viewer, "/api/v1/api-keys").await).await;
    expect_forbidden(post(app, &viewer, "/api/v1/api-keys", &json!({"name": "escalate", "scopes": ["users:admin"]})).await).await;
    assert_eq!(item_ids(&admin_get(app, "/api/v1/customers").await), [id(&customer)], "nothing was created");
    assert_eq!(admin_get(app, &customer_path).await, customer, "nothing was changed");

    // orders:edit makes orders but cannot read customers (nor list orders).
    let (_, order_editor) = new_api_key(app, &["orders:edit"]).await;
    expect_forbidden(get(app, &order_editor, "/api/v1/customers").await).await;
    expect_forbidden(get(app, &order_editor, &customer_path).await).await;
    expect_forbidden(get(app, &order_editor, "/api/v1/orders").await).await;
    let order =
        expect_json(post(app, &order_editor, "/api/v1/orders", &json!({"customer_id": id(&customer)})).await, StatusCode::CREATED).await;
    assert_eq!(order["customer_id"], json!(id(&customer)));
    assert!(order.get("assigned_to").is_none(), "a key's orders are assigned to no one: {order:#}");
}

async fn revoked_keys_are_refused(app: &TestApp) {
    let (record, client) = new_api_key(app, &["customers:view"]).await;
    let path = format!("/api/v1/api-keys/{}", id(&record));
    expect_json(get(app, &client, "/api/v1/customers").await, StatusCode::OK).await;
    let deleted = expect_json(send(app, &app.client, Method::DELETE, &path, None).await, StatusCode::OK).await;
    assert!(deleted["deleted_at"].is_string(), "{deleted:#}");
    expect_unauthorized(get(app, &client, "/api/v1/customers").await).await;
    expect_unauthorized(get(app, &client, "/api/v1/me").await).await;
    // Revoked means revoked: it is gone from the listing and cannot be restored.
    assert!(!item_ids(&admin_get(app, "/api/v1/api-keys").await).contains(&id(&record).to_owned()));
    expect_problem(get(app, &app.client, &path).await, StatusCode::NOT_FOUND).await;
    let restore = send(app, &app.client, Method::POST, &format!("{path}/restore"), None).await;
    assert!(matches!(restore.status(), StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED), "restore: {}", restore.status());
    expect_unauthorized(get(app, &client, "/api/v1/customers").await).await;

    // Keys that never existed, and malformed credentials.
    expect_unauthorized(get(app, &client_with_token("crm_not-a-real-key"), "/api/v1/customers").await).await;
    let basic =
        app.anonymous.get(app.url("/api/v1/customers")).header("authorization", format!("Basic {}", app.admin_key)).send().await.unwrap();
    expect_unauthorized(basic).await;
    expect_unauthorized(get(app, &client_with_token("not.a.jwt"), "/api/v1/customers").await).await;
}

async fn key_use_is_recorded(app: &TestApp) {
    let (record, client) = new_api_key(app, &["customers:view"]).await;
    let path = format!("/api/v1/api-keys/{}", id(&record));
    assert!(admin_get(app, &path).await.get("last_used_at").is_none(), "unused yet");
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    expect_json(get(app, &client, "/api/v1/customers").await, StatusCode::OK).await;
    let after = chrono::Utc::now() + chrono::Duration::seconds(1);

    // Written in the background: wait for it, a bounded while.
    let mut last_used: Option<Value> = None;
    for _ in 0..50 {
        let read = admin_get(app, &path).await;
        if let Some(value) = read.get("last_used_at") {
            last_used = Some(value.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last_used = last_used.expect("last_used_at never appeared after the key was used");
    let at = chrono::DateTime::parse_from_rfc3339(last_used.as_str().expect("a time")).expect("RFC 3339").with_timezone(&chrono::Utc);
    assert!(before <= at && at <= after, "last_used_at {at} is not between {before} and {after}");
    // The key still works, and still shows no secret.
    expect_json(get(app, &client, "/api/v1/customers").await, StatusCode::OK).await;
    assert!(admin_get(app, &path).await.get("key").is_none());
}

async fn invalid_scopes_are_refused(app: &TestApp) {
    let count = || async { item_ids(&admin_get(app, "/api/v1/api-keys").await).len() };
    let before = count().await;
    for (scopes, want) in [
        (json!(["customers:fly"]), vec!["/scopes/0"]),
        (json!(["customers"]), vec!["/scopes/0"]),
        (json!(["spaceships:view"]), vec!["/scopes/0"]),
        (json!(["customers:view", "spaceships:view"]), vec!["/scopes/1"]),
        (json!([]), vec!["/scopes"]),
    ] {
        let response = post(app, &app.client, "/api/v1/api-keys", &json!({"name": "bad", "scopes": scopes})).await;
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(pointers(&problem), want, "scopes {scopes}: {problem:#}");
        assert!(problem.get("key").is_none());
    }
    assert_eq!(count().await, before, "no key was made");
}
