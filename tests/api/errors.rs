//! Errors: every client mistake is an RFC 9457 problem document with the right status and, for
//! field problems, the JSON Pointer of the field; bad input never causes a 500.

use crate::{PROBLEM_JSON, create, create_customer, create_product, expect_problem, get, id, pointers, post};
use crm_tests::TestApp;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

crm_tests::api_on_both_backends!(
    validation_names_every_field,
    type_errors_name_the_field,
    unknown_fields_are_refused,
    malformed_bodies,
    oversized_body_is_413,
    routes_methods_and_ids,
    query_parameters_are_checked,
    bad_input_is_never_a_server_error,
);

async fn validation_names_every_field(app: &TestApp) {
    let problem =
        expect_problem(post(app, "/api/v1/customers", &json!({"organization": "Ιερός Ναός"})).await, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
    assert_eq!(pointers(&problem), ["/name"]);
    assert!(problem["type"].as_str().unwrap().ends_with("validation"), "{problem:#}");

    let body = json!({"name": "Στέλιος", "contacts": [{"type": "phone", "value": "694 123 4567"}, {"type": "email", "value": "stelios at example"}]});
    let problem = expect_problem(post(app, "/api/v1/customers", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/contacts/1/value"]);

    // Every problem at once, each at its own path.
    let body = json!({
        "name": "  ",
        "contacts": [{"type": "email", "value": "ok@example.gr"}, {"type": "phone", "value": "12"}],
        "location": {"country": "Hellas"},
        "language": "greek!",
        "notes": [{"text": ""}]
    });
    let problem = expect_problem(post(app, "/api/v1/customers", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/name", "/contacts/1/value", "/notes/0/text", "/location/country", "/language"]);

    // Nothing was created by any of them.
    let page = crate::expect_json(get(app, "/api/v1/customers").await, StatusCode::OK).await;
    assert_eq!(page["items"], json!([]));

    // A body that is JSON but not an object.
    let problem = expect_problem(post(app, "/api/v1/customers", &json!(["Στέλιος"])).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), [""]);

    // Products and orders report their fields the same way.
    let problem = expect_problem(
        post(app, "/api/v1/products", &json!({"name": "x", "price": -1, "costs": {"pcb": -5}})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pointers(&problem), ["/sku", "/category", "/price", "/costs/pcb"]);
    let customer = create_customer(app, "Μαρία").await;
    let body = json!({"customer_id": id(&customer), "items": [{"type": "service", "quantity": 0, "unit_price": 100}, {"product_id": uuid::Uuid::now_v7()}]});
    let problem = expect_problem(post(app, "/api/v1/orders", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/items/0/quantity", "/items/1/product_id", "/items/1/unit_price"]);

    // U+0000 cannot be stored by PostgreSQL: both backends refuse it, naming the field.
    let problem = expect_problem(
        post(app, "/api/v1/customers", &json!({"name": "Στέλιος", "notes": [{"text": "a\u{0}b"}]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pointers(&problem), ["/notes/0/text"]);
    let path = app.url(&format!("/api/v1/customers/{}", id(&customer)));
    let response = app
        .client
        .patch(&path)
        .header(CONTENT_TYPE, "application/merge-patch+json")
        .body(r#"{"tags": ["ok", "a\u0000"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(pointers(&expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await), ["/tags/1"]);
    assert_eq!(crate::expect_json(app.client.get(&path).send().await.unwrap(), StatusCode::OK).await, customer);

    // Times outside the years 1 to 9999 (PostgreSQL refused some with a 500 before).
    let body =
        json!({"name": "Στέλιος", "notes": [{"text": "x", "at": "-5000-01-01T00:00:00Z"}], "next_follow_up_at": "+10000-01-01T00:00:00Z"});
    let problem = expect_problem(post(app, "/api/v1/customers", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/notes/0/at", "/next_follow_up_at"]);
    let body = json!({"customer_id": id(&customer), "shipping": {"shipped_at": "-0001-01-01T00:00:00Z", "delivered_at": "+10000-01-01T00:00:00Z"}});
    let problem = expect_problem(post(app, "/api/v1/orders", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/shipping/shipped_at", "/shipping/delivered_at"]);
}

async fn type_errors_name_the_field(app: &TestApp) {
    for (body, pointer) in [
        (json!({"name": "Στέλιος", "contacted": "yes"}), "/contacted"),
        (json!({"name": "Στέλιος", "contacts": "stelios@example.gr"}), "/contacts"),
        (
            json!({"name": "Στέλιος", "contacts": [{"type": "email", "value": "a@example.gr"}, {"type": "email", "value": "b@example.gr", "primary": "yes"}]}),
            "/contacts/1/primary",
        ),
        (json!({"name": "Στέλιος", "contacts": [{"type": "pigeon", "value": "x"}]}), "/contacts/0/type"),
        (json!({"name": "Στέλιος", "tags": ["ok", 7]}), "/tags/1"),
        (json!({"name": "Στέλιος", "location": {"city": 12}}), "/location/city"),
        (json!({"name": "Στέλιος", "status": "vip"}), "/status"),
        (json!({"name": "Στέλιος", "assigned_to": "not-a-uuid"}), "/assigned_to"),
        // Inside an internally tagged item serde can tell the item, not the field.
        (
            json!({"name": "Στέλιος", "owned_items": [{"type": "product", "product_id": "0190a0b0-0000-7000-8000-000000000000", "quantity": "two"}]}),
            "/owned_items/0",
        ),
        (json!({"name": 42}), "/name"),
    ] {
        let problem = expect_problem(post(app, "/api/v1/customers", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(pointers(&problem), [pointer], "{body}");
    }
    for (body, pointer) in [
        (json!({"name": "BC-4", "sku": "BC-4", "category": "controller", "price": "850.00"}), "/price"),
        (
            json!({"name": "BC-4", "sku": "BC-4", "category": "controller", "price": 85_000, "costs": {"labor_hours": 1.255}}),
            "/costs/labor_hours",
        ),
        (json!({"name": "BC-4", "sku": "BC-4", "category": "controller", "price": 85_000, "currency": "EURO"}), "/currency"),
        (json!({"name": "BC-4", "sku": "BC-4", "category": "controller", "price": 1.5}), "/price"),
    ] {
        let problem = expect_problem(post(app, "/api/v1/products", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(pointers(&problem), [pointer], "{body}");
    }
}

async fn unknown_fields_are_refused(app: &TestApp) {
    let problem = expect_problem(
        post(app, "/api/v1/customers", &json!({"name": "Στέλιος", "organisation": "typo"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let errors = problem["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{problem:#}");
    assert!(errors[0]["detail"].as_str().unwrap().contains("organisation"), "{problem:#}");
    assert_eq!(errors[0]["pointer"], "/organisation", "{problem:#}");

    let body = json!({"name": "Στέλιος", "contacts": [{"type": "email", "value": "a@example.gr", "lable": "office"}]});
    let problem = expect_problem(post(app, "/api/v1/customers", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/contacts/0/lable"]);

    // Read-only fields may be echoed back; they are ignored, not refused.
    let body = json!({"name": "Στέλιος", "id": "whatever", "version": 99, "contacts": [{"type": "phone", "value": "694 123 4567", "normalized": "+1"}]});
    let created = create(app, "/api/v1/customers", &body).await;
    assert_eq!(created["version"], 1);
    assert_ne!(created["id"], "whatever");
    assert_eq!(created["contacts"][0]["normalized"], "+306941234567");
}

async fn malformed_bodies(app: &TestApp) {
    let url = app.url("/api/v1/customers");
    let send = |content_type: Option<&'static str>, body: &'static str| {
        let mut request = app.client.post(&url).body(body);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        request.send()
    };
    let problem = expect_problem(send(Some("application/json"), r#"{"name": "Στέλιος""#).await.unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(problem["detail"].as_str().unwrap().contains("JSON"), "{problem:#}");
    expect_problem(send(Some("application/json"), r#"{"name": "Στέλιος",}"#).await.unwrap(), StatusCode::BAD_REQUEST).await;
    expect_problem(send(Some("application/json"), "").await.unwrap(), StatusCode::BAD_REQUEST).await;
    expect_problem(send(Some("application/json; charset=utf-8"), "{]").await.unwrap(), StatusCode::BAD_REQUEST).await;

    let problem =
        expect_problem(send(Some("text/plain"), r#"{"name": "Στέλιος"}"#).await.unwrap(), StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert!(problem["detail"].as_str().unwrap().contains("application/json"), "{problem:#}");
    expect_problem(send(None, r#"{"name": "Στέλιος"}"#).await.unwrap(), StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    expect_problem(send(Some("application/x-www-form-urlencoded"), "name=x").await.unwrap(), StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // A JSON media type with parameters or a +json suffix is fine.
    let response = send(Some("application/json; charset=utf-8"), r#"{"name": "Στέλιος"}"#).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    // Merge patches are checked the same way.
    let created = create_customer(app, "Μαρία").await;
    let path = app.url(&format!("/api/v1/customers/{}", id(&created)));
    let response = app.client.patch(&path).header(CONTENT_TYPE, "text/plain").body(r#"{"name": "x"}"#).send().await.unwrap();
    expect_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let response = app.client.patch(&path).header(CONTENT_TYPE, "application/merge-patch+json").body(r#"{"name": "#).send().await.unwrap();
    expect_problem(response, StatusCode::BAD_REQUEST).await;
    let response =
        app.client.patch(&path).header(CONTENT_TYPE, "application/merge-patch+json").body(r#"{"contacted": "yes"}"#).send().await.unwrap();
    assert_eq!(pointers(&expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await), ["/contacted"]);
    let response =
        app.client.patch(&path).header(CONTENT_TYPE, "application/merge-patch+json").body(r#"{"name": null}"#).send().await.unwrap();
    assert_eq!(pointers(&expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await), ["/name"]);
    let response = app.client.patch(&path).header(CONTENT_TYPE, "application/merge-patch+json").body("[1]").send().await.unwrap();
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    // None of which changed the record.
    let current = crate::expect_json(app.client.get(&path).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(current, created);
}

async fn oversized_body_is_413(app: &TestApp) {
    // Valid JSON, just over 1 MiB.
    let body = format!(r#"{{"name": "Στέλιος", "notes": [{{"text": "{}"}}]}}"#, "x".repeat(crm_api::MAX_BODY_BYTES));
    let response =
        app.client.post(app.url("/api/v1/customers")).header(CONTENT_TYPE, "application/json").body(body).send().await.expect("request");
    let problem = expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(problem["detail"].as_str().unwrap().contains(&crm_api::MAX_BODY_BYTES.to_string()), "{problem:#}");

    // Just under the limit is accepted as far as size goes (the note is then too long: 422).
    let filler = crm_api::MAX_BODY_BYTES - 1_000;
    let body = format!(r#"{{"name": "Στέλιος", "notes": [{{"text": "{}"}}]}}"#, "x".repeat(filler));
    let response =
        app.client.post(app.url("/api/v1/customers")).header(CONTENT_TYPE, "application/json").body(body).send().await.expect("request");
    assert_eq!(pointers(&expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await), ["/notes/0/text"]);
}

async fn routes_methods_and_ids(app: &TestApp) {
    for path in ["/api/v1/nothing", "/api/v2/customers", "/", "/api/v1/customers/0190a0b0-0000-7000-8000-000000000000/nothing"] {
        let problem = expect_problem(get(app, path).await, StatusCode::NOT_FOUND).await;
        assert!(problem["type"].as_str().unwrap().ends_with("not-found"), "{path}: {problem:#}");
    }
    for (method, path) in [
        (Method::DELETE, "/api/v1/customers"),
        (Method::PUT, "/api/v1/products"),
        (Method::POST, "/api/v1/customers/0190a0b0-0000-7000-8000-000000000000"),
        (Method::GET, "/api/v1/orders/0190a0b0-0000-7000-8000-000000000000/restore"),
        (Method::POST, "/health"),
    ] {
        let response = app.client.request(method.clone(), app.url(path)).send().await.unwrap();
        expect_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    }

    // Ids: not a UUID, or a UUID of nothing, is a 404 on every item route.
    let missing = uuid::Uuid::now_v7();
    for resource in ["customers", "products", "orders"] {
        for bad in ["not-a-uuid", "123", &missing.to_string()] {
            let path = format!("/api/v1/{resource}/{bad}");
            expect_problem(get(app, &path).await, StatusCode::NOT_FOUND).await;
            expect_problem(app.client.delete(app.url(&path)).send().await.unwrap(), StatusCode::NOT_FOUND).await;
            expect_problem(app.client.post(app.url(&format!("{path}/restore"))).send().await.unwrap(), StatusCode::NOT_FOUND).await;
            let response =
                app.client.patch(app.url(&path)).header(CONTENT_TYPE, "application/merge-patch+json").body("{}").send().await.unwrap();
            expect_problem(response, StatusCode::NOT_FOUND).await;
        }
    }
    let response = app.client.put(app.url(&format!("/api/v1/customers/{missing}"))).json(&json!({"name": "x"})).send().await.unwrap();
    expect_problem(response, StatusCode::NOT_FOUND).await;
    expect_problem(get(app, &format!("/api/v1/customers/{missing}/orders")).await, StatusCode::NOT_FOUND).await;
    expect_problem(get(app, "/api/v1/customers/zzz/orders").await, StatusCode::NOT_FOUND).await;
}

async fn query_parameters_are_checked(app: &TestApp) {
    let cases: &[(&str, &[&str])] = &[
        ("/api/v1/customers?colour=red", &["/colour"]),
        ("/api/v1/customers?limit=500", &["/limit"]),
        ("/api/v1/customers?limit=0", &["/limit"]),
        ("/api/v1/customers?limit=-1", &["/limit"]),
        ("/api/v1/customers?limit=ten", &["/limit"]),
        ("/api/v1/customers?sort=colour", &["/sort"]),
        ("/api/v1/customers?direction=sideways", &["/direction"]),
        ("/api/v1/customers?cursor=not-a-cursor", &["/cursor"]),
        ("/api/v1/customers?include_deleted=maybe", &["/include_deleted"]),
        ("/api/v1/customers?created_from=yesterday", &["/created_from"]),
        ("/api/v1/customers?status=vip", &["/status"]),
        ("/api/v1/customers?assigned_to=bob", &["/assigned_to"]),
        ("/api/v1/customers?category=clock", &["/category"]),
        ("/api/v1/products?category=bells", &["/category"]),
        ("/api/v1/products?active=sometimes", &["/active"]),
        ("/api/v1/products?sort=total", &["/sort"]),
        ("/api/v1/orders?status=lost", &["/status"]),
        ("/api/v1/orders?customer_id=nobody", &["/customer_id"]),
        ("/api/v1/customers?search=%00", &["/search"]),
        ("/api/v1/customers?tag=bells%00&search=x", &["/tag"]),
        ("/api/v1/orders?search=ORD%00", &["/search"]),
        // A range that ends before it starts.
        ("/api/v1/customers?created_from=2026-02-01T00:00:00Z&created_to=2026-01-01T00:00:00Z", &["/created_to"]),
        ("/api/v1/comms?occurred_from=2026-02-01T00:00:00Z&occurred_to=2026-01-31T23:59:59Z", &["/occurred_to"]),
        ("/api/v1/audit?from=2026-02-01T00:00:00%2B02:00&to=2026-01-31T21:00:00Z", &["/to"]),
    ];
    for (path, expected) in cases {
        let problem = expect_problem(get(app, path).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(pointers(&problem), *expected, "{path}");
        assert!(problem["type"].as_str().unwrap().ends_with("invalid-query"), "{path}: {problem:#}");
    }
    // A cursor belongs to its listing's sort.
    for _ in 0..3 {
        create_customer(app, "Μαρία").await;
    }
    let page = crate::expect_json(get(app, "/api/v1/customers?limit=1").await, StatusCode::OK).await;
    let cursor = page["next_cursor"].as_str().expect("a next page").to_owned();
    let problem = expect_problem(
        crate::get_query(app, "/api/v1/customers", &[("limit", "1"), ("sort", "name"), ("cursor", &cursor)]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(pointers(&problem), ["/cursor"]);
    // ... and to its filters and search: continuing another listing would skip records.
    let problem = expect_problem(
        crate::get_query(app, "/api/v1/customers", &[("limit", "1"), ("search", "μαρια"), ("cursor", &cursor)]).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(pointers(&problem), ["/cursor"], "{problem:#}");
    let same =
        crate::expect_json(crate::get_query(app, "/api/v1/customers", &[("limit", "1"), ("cursor", &cursor)]).await, StatusCode::OK).await;
    assert_eq!(same["items"].as_array().map(Vec::len), Some(1), "{same:#}");
    // Times are compared as instants, whatever their zones.
    let zoned = [("created_from", "2026-02-01T00:00:00+02:00"), ("created_to", "2026-01-31T23:00:00Z")];
    crate::expect_json(crate::get_query(app, "/api/v1/customers", &zoned).await, StatusCode::OK).await;
    // Unknown parameters on item routes are refused too.
    let problem =
        expect_problem(get(app, &format!("/api/v1/customers/{}?expand=orders", uuid::Uuid::now_v7())).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(pointers(&problem), ["/expand"]);
    // The limits themselves are fine.
    for ok in ["/api/v1/customers?limit=1", "/api/v1/customers?limit=200", "/api/v1/customers?include_deleted=true&direction=asc&sort=name"]
    {
        assert_eq!(get(app, ok).await.status(), StatusCode::OK, "{ok}");
    }
}

/// A sweep of hostile or nonsensical requests: each gets a 4xx problem document.
async fn bad_input_is_never_a_server_error(app: &TestApp) {
    let customer = create_customer(app, "Μαρία").await;
    let product = create_product(app, "BC-4", 85_000, 1).await;
    let (customer_id, product_id) = (id(&customer).to_owned(), id(&product).to_owned());
    let max = i64::MAX;
    let bodies: Vec<(&str, Value)> = vec![
        ("/api/v1/customers", json!(null)),
        ("/api/v1/customers", json!(17)),
        ("/api/v1/customers", json!("Στέλιος")),
        ("/api/v1/customers", json!({"name": "x".repeat(201)})),
        ("/api/v1/customers", json!({"name": "Στέλιος\u{0}"})),
        ("/api/v1/customers", json!({"name": "Στέλιος", "notes": [{"text": "a\u{0}b"}]})),
        ("/api/v1/customers", json!({"name": "x", "contacts": [{"type": "phone", "value": "+30 999"}]})),
        ("/api/v1/customers", json!({"name": "x", "contacts": [{"type": "phone", "value": "\u{0}\u{1}"}]})),
        ("/api/v1/customers", json!({"name": "x", "contacts": [{"value": "a@example.gr"}]})),
        (
            "/api/v1/customers",
            json!({"name": "x", "contacts": [{"type": "email", "value": "a@example.gr", "primary": true}, {"type": "email", "value": "b@example.gr", "primary": true}]}),
        ),
        ("/api/v1/customers", json!({"name": "x", "owned_items": [{"type": "product", "product_id": product_id, "quantity": 0}]})),
        ("/api/v1/customers", json!({"name": "x", "owned_items": [{"type": "spaceship"}]})),
        ("/api/v1/customers", json!({"name": "x", "owned_items": [{"device_id": "d"}]})),
        ("/api/v1/customers", json!({"name": "x", "next_follow_up_at": "tomorrow"})),
        ("/api/v1/customers", json!({"name": "x", "notes": [{"text": "ok", "at": 12}]})),
        ("/api/v1/customers", json!({"name": "x", "linked_user_ids": ["a"]})),
        ("/api/v1/products", json!({"name": "x", "sku": "S", "category": "part", "price": 1e30})),
        ("/api/v1/products", json!({"name": "x", "sku": "S", "category": "part", "price": max, "costs": {"pcb": max, "components": max}})),
        (
            "/api/v1/products",
            json!({"name": "x", "sku": "S", "category": "part", "price": 1, "costs": {"labor_rate": max, "labor_hours": 1e15}}),
        ),
        ("/api/v1/products", json!({"name": "x", "sku": "S", "category": "part", "price": 1, "costs": {"labor_hours": -1}})),
        ("/api/v1/products", json!({"name": "x", "sku": "S", "category": "part", "price": 1, "stock": {"on_hand": -3}})),
        ("/api/v1/products", json!({"name": "x", "sku": "S", "category": "part", "price": 1, "stock": {"on_hand": 1.5}})),
        ("/api/v1/orders", json!({})),
        ("/api/v1/orders", json!({"customer_id": "nobody"})),
        ("/api/v1/orders", json!({"customer_id": customer_id, "status": "shipped"})),
        ("/api/v1/orders", json!({"customer_id": customer_id, "items": [{"product_id": product_id, "quantity": max}]})),
        (
            "/api/v1/orders",
            json!({"customer_id": customer_id, "items": [{"type": "service", "unit_price": max}, {"type": "service", "unit_price": max}]}),
        ),
        ("/api/v1/orders", json!({"customer_id": customer_id, "items": [{"type": "service", "unit_price": -5}]})),
        ("/api/v1/orders", json!({"customer_id": customer_id, "items": [{"type": "custom", "unit_price": 5}]})),
        (
            "/api/v1/orders",
            json!({"customer_id": customer_id, "items": [{"type": "service", "unit_price": 5}], "discount": {"type": "percentage", "value": 150}}),
        ),
        (
            "/api/v1/orders",
            json!({"customer_id": customer_id, "items": [{"type": "service", "unit_price": 5}], "discount": {"type": "percentage", "value": 12.345}}),
        ),
        (
            "/api/v1/orders",
            json!({"customer_id": customer_id, "items": [{"type": "service", "unit_price": 5}], "discount": {"type": "fixed", "value": 6}}),
        ),
        (
            "/api/v1/orders",
            json!({"customer_id": customer_id, "items": [{"type": "service", "unit_price": 5}], "discount": {"type": "fixed", "value": -1}}),
        ),
        (
            "/api/v1/orders",
            json!({"customer_id": customer_id, "items": [{"type": "service", "unit_price": 5}], "discount": {"type": "bogus"}}),
        ),
        ("/api/v1/orders", json!({"customer_id": customer_id, "items": [{"product_id": product_id}], "currency": "USD"})),
        ("/api/v1/orders", json!({"customer_id": customer_id, "items": "lots"})),
        ("/api/v1/orders", json!({"customer_id": customer_id, "shipping": {"method": "courier\u{0}"}})),
        ("/api/v1/products", json!({"name": "x", "sku": "S\u{0}", "category": "part", "price": 1})),
    ];
    for (path, body) in &bodies {
        let response = post(app, path, body).await;
        let status = response.status();
        assert!(status.is_client_error(), "POST {path} {body}: {status}");
        let problem = expect_problem(response, status).await;
        assert!(problem["status"].as_u64().is_some_and(|s| (400..500).contains(&s)), "{problem:#}");
    }
    // Deep nesting: refused by the JSON parser, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let response = app.client.post(app.url("/api/v1/customers")).header(CONTENT_TYPE, "application/json").body(deep).send().await.unwrap();
    assert_eq!(response.headers().get(CONTENT_TYPE).unwrap(), PROBLEM_JSON);
    assert!(response.status().is_client_error(), "{}", response.status());
    // Invalid UTF-8 in a JSON body and in the query.
    let response = app
        .client
        .post(app.url("/api/v1/customers"))
        .header(CONTENT_TYPE, "application/json")
        .body(vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'])
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::BAD_REQUEST).await;
    for path in [
        "/api/v1/customers?search=%FF%FE",
        "/api/v1/customers?search=%00",
        "/api/v1/customers?search=%25%5F%5C",
        "/api/v1/customers?search=",
        "/api/v1/customers?search=+",
        "/api/v1/products?search=%27%3B%20DROP%20TABLE%20products%3B--",
    ] {
        let response = get(app, path).await;
        assert!(!response.status().is_server_error(), "{path}: {}", response.status());
    }
    // The records are still there and unchanged.
    assert_eq!(crate::expect_json(get(app, &format!("/api/v1/products/{product_id}")).await, StatusCode::OK).await, product);
}
