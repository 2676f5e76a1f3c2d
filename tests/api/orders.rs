//! Orders over HTTP: customers must exist, numbers are assigned by the server, totals are
//! priced by the server, status changes follow the status machine and move stock, and a
//! customer's orders page with cursors. Concurrent orders get consecutive numbers.

use crate::{
    create, create_customer, create_product, expect_json, expect_problem, get, get_query, header_value, id, item_ids, pointers, post, year,
};
use crm_tests::TestApp;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, IF_MATCH};
use serde_json::{Value, json};
use std::collections::HashSet;

crm_tests::api_on_both_backends!(
    customer_must_exist,
    numbers_and_totals,
    status_transitions_move_stock,
    customer_orders_and_pagination,
    concurrent_orders_get_consecutive_numbers,
    orders_outlive_their_products,
);

async fn patch(app: &TestApp, order: &str, body: Value) -> reqwest::Response {
    let request = app.client.patch(app.url(&format!("/api/v1/orders/{order}"))).header(CONTENT_TYPE, "application/merge-patch+json");
    request.body(serde_json::to_vec(&body).unwrap()).send().await.expect("request")
}

async fn set_status(app: &TestApp, order: &str, status: &str) -> reqwest::Response {
    patch(app, order, json!({"status": status})).await
}

/// The product's stock as the API shows it.
async fn stock(app: &TestApp, product: &str) -> Value {
    expect_json(get(app, &format!("/api/v1/products/{product}")).await, StatusCode::OK).await["stock"].clone()
}

fn order_number(n: u32) -> String {
    format!("ORD-{}-{n:03}", year())
}

async fn customer_must_exist(app: &TestApp) {
    let missing = uuid::Uuid::now_v7();
    let body = json!({"customer_id": missing, "items": [{"type": "service", "description": "Εγκατάσταση", "unit_price": 10_000}]});
    let problem = expect_problem(post(app, "/api/v1/orders", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/customer_id"]);
    assert!(problem["errors"][0]["detail"].as_str().unwrap().contains(&missing.to_string()), "{problem:#}");

    // A deleted customer cannot order either.
    let customer = create_customer(app, "Μαρία").await;
    let response = app.client.delete(app.url(&format!("/api/v1/customers/{}", id(&customer)))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json!({"customer_id": id(&customer), "items": [{"type": "service", "description": "Εγκατάσταση", "unit_price": 10_000}]});
    let problem = expect_problem(post(app, "/api/v1/orders", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/customer_id"]);

    // No order was made, and no number was used up.
    let page = expect_json(get(app, "/api/v1/orders").await, StatusCode::OK).await;
    assert_eq!(page["items"], json!([]));
    let customer = create_customer(app, "Νίκος").await;
    let order = create(app, "/api/v1/orders", &json!({"customer_id": id(&customer)})).await;
    assert_eq!(order["order_number"], order_number(1));
}

async fn numbers_and_totals(app: &TestApp) {
    let customer = create_customer(app, "Στέλιος Μπιμπης").await;
    let product = create_product(app, "BC-4", 85_000, 5).await;
    let body = json!({
        "customer_id": id(&customer),
        "items": [
            {"product_id": id(&product), "quantity": 2, "line_total": 1},
            {"type": "custom", "description": "Βάση καμπάνας", "unit_price": 1_005}
        ],
        "discount": {"type": "percentage", "value": 10, "reason": "ενορία"},
        "order_number": "ORD-1999-999",
        "subtotal": 1,
        "discount_total": 2,
        "total": 3
    });
    let response = post(app, "/api/v1/orders", &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order_id_from_location =
        header_value(response.headers(), "location").expect("location header").rsplit('/').next().unwrap().to_owned();
    let order = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(order_id_from_location, id(&order));
    let number = order["order_number"].as_str().unwrap();
    let (prefix, sequence) = number.rsplit_once('-').unwrap();
    assert_eq!(prefix, format!("ORD-{}", year()));
    assert!(sequence.len() == 3 && sequence.bytes().all(|b| b.is_ascii_digit()), "{number}");
    assert_eq!(number, order_number(1));
    assert_eq!(order["status"], "draft");
    assert_eq!(order["payment_status"], "pending");
    assert_eq!(order["currency"], "EUR");
    // Lines: the product's name and price are filled in; line totals computed.
    assert_eq!(order["items"][0]["product_name"], "Product BC-4");
    assert_eq!(order["items"][0]["unit_price"], 85_000);
    assert_eq!(order["items"][0]["line_total"], 170_000);
    assert_eq!(order["items"][1]["line_total"], 1_005);
    // 171,005 × 10 % = 17,100.5 → 17,101 (half away from zero); the client's sums are ignored.
    assert_eq!(order["subtotal"], 171_005);
    assert_eq!(order["discount_total"], 17_101);
    assert_eq!(order["total"], 153_904);
    assert_eq!(order["discount"], json!({"type": "percentage", "value": 10.0, "reason": "ενορία"}));

    // The next order gets the next number.
    let second = create(app, "/api/v1/orders", &json!({"customer_id": id(&customer), "discount": {"type": "fixed", "value": 0}})).await;
    assert_eq!(second["order_number"], order_number(2));
    assert_eq!(second["total"], 0);

    // Drafts can be repriced by a patch; the number stays.
    let response =
        patch(app, id(&order), json!({"discount": {"type": "percentage", "value": 12.5}, "order_number": "X", "total": 1})).await;
    let repriced = expect_json(response, StatusCode::OK).await;
    // 171,005 × 12.5 % = 21,375.625 → 21,376.
    assert_eq!(repriced["discount_total"], 21_376);
    assert_eq!(repriced["total"], 171_005 - 21_376);
    assert_eq!(repriced["order_number"], order_number(1));
    let response = patch(
        app,
        id(&order),
        json!({"discount": {"type": "fixed", "value": 5_000}, "items": [{"product_id": id(&product), "quantity": 1}]}),
    )
    .await;
    let repriced = expect_json(response, StatusCode::OK).await;
    assert_eq!((&repriced["subtotal"], &repriced["discount_total"], &repriced["total"]), (&json!(85_000), &json!(5_000), &json!(80_000)));
    // Searching finds an order by its number.
    let page = expect_json(get_query(app, "/api/v1/orders", &[("search", &order_number(2))]).await, StatusCode::OK).await;
    assert_eq!(item_ids(&page), [id(&second).to_owned()]);
}

async fn status_transitions_move_stock(app: &TestApp) {
    let customer = create_customer(app, "Ιερός Ναός Αγίου Δημητρίου").await;
    let product = create_product(app, "BC-4", 85_000, 5).await;
    let product_id = id(&product).to_owned();
    let new_order = |quantity: i64| {
        let body = json!({"customer_id": id(&customer), "items": [{"product_id": product_id, "quantity": quantity}]});
        async move { create(app, "/api/v1/orders", &body).await }
    };
    assert_eq!(stock(app, &product_id).await, json!({"on_hand": 5, "reserved": 0, "available": 5}));

    let a = new_order(2).await;
    let a_id = id(&a).to_owned();
    // Drafts move no stock.
    assert_eq!(stock(app, &product_id).await, json!({"on_hand": 5, "reserved": 0, "available": 5}));

    // A draft cannot be shipped.
    let problem = expect_problem(set_status(app, &a_id, "shipped").await, StatusCode::CONFLICT).await;
    assert_eq!(pointers(&problem), ["/status"]);
    assert!(problem["detail"].as_str().unwrap().contains("draft"), "{problem:#}");
    let unchanged = expect_json(get(app, &format!("/api/v1/orders/{a_id}")).await, StatusCode::OK).await;
    assert_eq!(unchanged, a);
    assert_eq!(stock(app, &product_id).await, json!({"on_hand": 5, "reserved": 0, "available": 5}));

    // Confirming reserves.
    let response = set_status(app, &a_id, "confirmed").await;
    assert_eq!(header_value(response.headers(), "etag"), Some("\"2\""));
    assert_eq!(expect_json(response, StatusCode::OK).await["status"], "confirmed");
    assert_eq!(stock(app, &product_id).await, json!({"on_hand": 5, "reserved": 2, "available": 3}));

    // Confirmed orders keep their lines, and cannot be deleted while holding stock.
    let problem =
        expect_problem(patch(app, &a_id, json!({"items": [{"product_id": product_id, "quantity": 3}]})).await, StatusCode::CONFLICT).await;
    assert!(problem["detail"].as_str().unwrap().contains("items"), "{problem:#}");
    let problem =
        expect_problem(app.client.delete(app.url(&format!("/api/v1/orders/{a_id}"))).send().await.unwrap(), StatusCode::CONFLICT).await;
    assert_eq!(pointers(&problem), ["/status"]);
    // Going back to draft is refused.
    expect_problem(set_status(app, &a_id, "draft").await, StatusCode::CONFLICT).await;

    // Other fields still change, with the ETag checked.
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/orders/{a_id}")))
        .header(CONTENT_TYPE, "application/merge-patch+json")
        .header(IF_MATCH, "\"2\"");
    let response = response.body(r#"{"status": "in_production", "payment_status": "partial"}"#).send().await.unwrap();
    let in_production = expect_json(response, StatusCode::OK).await;
    assert_eq!((&in_production["status"], &in_production["payment_status"]), (&json!("in_production"), &json!("partial")));
    assert_eq!(stock(app, &product_id).await, json!({"on_hand": 5, "reserved": 2, "available": 3}));

    // Shipping consumes.
    let shipped = expect_json(set_status(app, &a_id, "shipped").await, StatusCode::OK).await;
    assert!(shipped["shipping"]["shipped_at"].is_string(), "{shipped:#}");
    assert_eq!(stock(app, &product_id).await, json!({"on_hand": 3, "reserved": 0, "available": 3}));
    let delivered = expect_json(set_status(app, &a_id, "delivered").await, StatusCode::OK).await;
    assert!(delivered["shipping"]["delivered_at"].is_string(), "{delivered:#}");
    assert_eq!(delivered["shipping"]["shipped_at"], shipped["shipping"]["shipped_at"]);
    // Delivered is final.
    expect_problem(set_status(app, &a_id, "cancelled").await, StatusCode::CONFLICT).await;
    assert_eq!(stock(app, &product_id).await, json!({"on_hand": 3, "reserved": 0, "available": 3}));

    // Cancelling a confirmed order releases; more than is on hand may be reserved.
    let b = new_order(4).await;
    expect_json(set_status(app, id(&b), "confirmed").await, StatusCode::OK).await;
    assert_eq!(stock(app, &product_id).await, json!({"on_hand": 3, "reserved": 4, "available": -1}));
    expect_json(set_status(app, id(&b), "cancelled").await, StatusCode::OK).await;
    assert_eq!(stock(app, &product_id).await, json!({"on_hand": 3, "reserved": 0, "available": 3}));
    let response = app.client.delete(app.url(&format!("/api/v1/orders/{}", id(&b)))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "a cancelled order may be deleted");

    // Shipping more than is on hand is refused, and moves nothing.
    let c = new_order(4).await;
    expect_json(set_status(app, id(&c), "confirmed").await, StatusCode::OK).await;
    expect_json(set_status(app, id(&c), "in_production").await, StatusCode::OK).await;
    let problem = expect_problem(set_status(app, id(&c), "shipped").await, StatusCode::CONFLICT).await;
    assert_eq!(pointers(&problem), ["/status"]);
    assert!(problem["detail"].as_str().unwrap().contains("BC-4"), "{problem:#}");
    assert_eq!(stock(app, &product_id).await, json!({"on_hand": 3, "reserved": 4, "available": -1}));
    let c_now = expect_json(get(app, &format!("/api/v1/orders/{}", id(&c))).await, StatusCode::OK).await;
    assert_eq!(c_now["status"], "in_production");
    // Restocking the product (a client PATCH of on_hand) keeps what orders reserved.
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/products/{product_id}")))
        .header(CONTENT_TYPE, "application/merge-patch+json")
        .body(r#"{"stock": {"on_hand": 10}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(expect_json(response, StatusCode::OK).await["stock"], json!({"on_hand": 10, "reserved": 4, "available": 6}));
    expect_json(set_status(app, id(&c), "shipped").await, StatusCode::OK).await;
    assert_eq!(stock(app, &product_id).await, json!({"on_hand": 6, "reserved": 0, "available": 6}));
    // Draft straight to cancelled moves nothing.
    let d = new_order(1).await;
    expect_json(set_status(app, id(&d), "cancelled").await, StatusCode::OK).await;
    assert_eq!(stock(app, &product_id).await, json!({"on_hand": 6, "reserved": 0, "available": 6}));
}

async fn customer_orders_and_pagination(app: &TestApp) {
    let mine = create_customer(app, "Στέλιος Μπιμπης").await;
    let other = create_customer(app, "Μαρία Οικονόμου").await;
    let mut expected = Vec::new();
    for i in 0..5 {
        if i == 2 {
            create(app, "/api/v1/orders", &json!({"customer_id": id(&other)})).await;
        }
        let order = create(
            app,
            "/api/v1/orders",
            &json!({"customer_id": id(&mine), "items": [{"type": "service", "description": "Service", "unit_price": 100 * (i + 1)}]}),
        )
        .await;
        expected.push(id(&order).to_owned());
    }
    expected.reverse(); // newest first

    // All of them at once.
    let path = format!("/api/v1/customers/{}/orders", id(&mine));
    let page = expect_json(get(app, &path).await, StatusCode::OK).await;
    assert_eq!(item_ids(&page), expected);
    assert!(page["items"].as_array().unwrap().iter().all(|o| o["customer_id"] == mine["id"]));
    assert!(page["next_cursor"].is_null(), "{page:#}");
    let theirs = expect_json(get(app, &format!("/api/v1/customers/{}/orders", id(&other))).await, StatusCode::OK).await;
    assert_eq!(theirs["items"].as_array().unwrap().len(), 1);
    assert_eq!(theirs["items"][0]["order_number"], order_number(3));

    // Two at a time, following the cursor, through both listings.
    for (listing, extra) in [(path.clone(), vec![]), ("/api/v1/orders".to_owned(), vec![("customer_id", id(&mine).to_owned())])] {
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query: Vec<(&str, String)> = vec![("limit", "2".into())];
            query.extend(extra.iter().cloned());
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            let page = expect_json(app.client.get(app.url(&listing)).query(&query).send().await.unwrap(), StatusCode::OK).await;
            let ids = item_ids(&page);
            sizes.push(ids.len());
            seen.extend(ids);
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
            assert!(sizes.len() < 10, "the cursor never ends");
        }
        assert_eq!(sizes, [2, 2, 1], "{listing}");
        assert_eq!(seen, expected, "{listing}");
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 5);
    }

    // Sorted by number, ascending, with a status filter.
    let page =
        expect_json(get_query(app, &path, &[("sort", "order_number"), ("direction", "asc"), ("status", "draft")]).await, StatusCode::OK)
            .await;
    let numbers: Vec<&str> = page["items"].as_array().unwrap().iter().map(|o| o["order_number"].as_str().unwrap()).collect();
    assert_eq!(numbers, [order_number(1), order_number(2), order_number(4), order_number(5), order_number(6)]);
    let page = expect_json(get_query(app, &path, &[("status", "confirmed")]).await, StatusCode::OK).await;
    assert_eq!(page["items"], json!([]));
    // The customer's listing does not take a customer_id of its own.
    let problem = expect_problem(get_query(app, &path, &[("customer_id", id(&other))]).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(pointers(&problem), ["/customer_id"]);
}

async fn concurrent_orders_get_consecutive_numbers(app: &TestApp) {
    let customer = create_customer(app, "Στέλιος Μπιμπης").await;
    let body = json!({"customer_id": id(&customer), "items": [{"type": "service", "description": "Συντήρηση", "unit_price": 5_000}]});
    let requests = (0..50).map(|_| {
        let request = app.client.post(app.url("/api/v1/orders")).json(&body);
        async move {
            let response = request.send().await.expect("request");
            expect_json(response, StatusCode::CREATED).await
        }
    });
    let orders = futures::future::join_all(requests).await;
    let mut numbers: Vec<String> = orders.iter().map(|o| o["order_number"].as_str().unwrap().to_owned()).collect();
    numbers.sort();
    let expected: Vec<String> = (1..=50).map(order_number).collect();
    assert_eq!(numbers, expected);
    let ids: HashSet<&str> = orders.iter().map(id).collect();
    assert_eq!(ids.len(), 50);

    // All of them are stored, under the customer.
    let page =
        expect_json(get_query(app, &format!("/api/v1/customers/{}/orders", id(&customer)), &[("limit", "200")]).await, StatusCode::OK)
            .await;
    let mut stored: Vec<String> =
        page["items"].as_array().unwrap().iter().map(|o| o["order_number"].as_str().unwrap().to_owned()).collect();
    stored.sort();
    assert_eq!(stored, expected);
    // And the next one continues the sequence.
    let next = create(app, "/api/v1/orders", &body).await;
    assert_eq!(next["order_number"], order_number(51));
}

/// A product deleted while an order holds it: the order can still move on (and release or
/// consume the stock), but no new line may name the product.
async fn orders_outlive_their_products(app: &TestApp) {
    let customer = create_customer(app, "Στέλιος Μπιμπης").await;
    let product = create_product(app, "BC-4", 85_000, 5).await;
    let product_id = id(&product).to_owned();
    let line = json!([{"product_id": product_id, "quantity": 2}]);
    let a = create(app, "/api/v1/orders", &json!({"customer_id": id(&customer), "items": line})).await;
    let b = create(app, "/api/v1/orders", &json!({"customer_id": id(&customer), "items": line})).await;
    expect_json(set_status(app, id(&a), "confirmed").await, StatusCode::OK).await;
    expect_json(set_status(app, id(&b), "confirmed").await, StatusCode::OK).await;
    expect_json(set_status(app, id(&b), "in_production").await, StatusCode::OK).await;
    let response = app.client.delete(app.url(&format!("/api/v1/products/{product_id}"))).send().await.unwrap();
    assert_eq!(expect_json(response, StatusCode::OK).await["stock"], json!({"on_hand": 5, "reserved": 4, "available": 1}));
    let deleted_stock = || async {
        let path = format!("/api/v1/products/{product_id}?include_deleted=true");
        expect_json(get(app, &path).await, StatusCode::OK).await["stock"].clone()
    };

    // Cancelling releases the stock of the deleted product; shipping consumes it.
    let cancelled = expect_json(set_status(app, id(&a), "cancelled").await, StatusCode::OK).await;
    assert_eq!(cancelled["items"], a["items"]);
    assert_eq!(deleted_stock().await, json!({"on_hand": 5, "reserved": 2, "available": 3}));
    expect_json(set_status(app, id(&b), "shipped").await, StatusCode::OK).await;
    assert_eq!(deleted_stock().await, json!({"on_hand": 3, "reserved": 0, "available": 3}));
    // A PUT of the order as read works too.
    let current = expect_json(get(app, &format!("/api/v1/orders/{}", id(&b))).await, StatusCode::OK).await;
    let mut delivered = current.clone();
    delivered["status"] = json!("delivered");
    let response = app.client.put(app.url(&format!("/api/v1/orders/{}", id(&b)))).json(&delivered).send().await.unwrap();
    assert_eq!(expect_json(response, StatusCode::OK).await["status"], "delivered");

    // New orders, and new lines on drafts, cannot use the deleted product (even priced).
    let line = json!([{"product_id": product_id, "quantity": 2, "unit_price": 85_000}]);
    let problem = expect_problem(
        post(app, "/api/v1/orders", &json!({"customer_id": id(&customer), "items": line})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pointers(&problem), ["/items/0/product_id"]);
    let draft = create(app, "/api/v1/orders", &json!({"customer_id": id(&customer)})).await;
    let problem = expect_problem(patch(app, id(&draft), json!({"items": line})).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/items/0/product_id"]);
}
