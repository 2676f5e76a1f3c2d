//! Products over HTTP: unique SKUs, computed cost totals and stock, and the list filters.

use crate::{create, expect_json, expect_problem, get, get_query, id, item_ids, pointers, post};
use crm_tests::TestApp;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;

crm_tests::api_on_both_backends!(duplicate_sku_is_a_conflict, costs_and_stock_are_computed, category_and_active_filters);

async fn duplicate_sku_is_a_conflict(app: &TestApp) {
    let first =
        create(app, "/api/v1/products", &json!({"name": "Bell controller BC-4", "sku": "BC-4", "category": "controller", "price": 85_000}))
            .await;
    assert_eq!(first["sku"], "BC-4");

    // Same SKU, in another case and with spaces around it.
    for sku in ["BC-4", "bc-4", "  Bc-4 "] {
        let response = post(app, "/api/v1/products", &json!({"name": "Copy", "sku": sku, "category": "part", "price": 1})).await;
        let problem = expect_problem(response, StatusCode::CONFLICT).await;
        assert_eq!(pointers(&problem), ["/sku"], "{sku}");
        assert!(problem["detail"].as_str().unwrap().contains("SKU"), "{problem:#}");
    }

    // Renaming another product onto a taken SKU is a conflict too, and changes nothing.
    let second = create(app, "/api/v1/products", &json!({"name": "Striker", "sku": "ST-1", "category": "striker", "price": 12_000})).await;
    let path = format!("/api/v1/products/{}", id(&second));
    let response = app
        .client
        .patch(app.url(&path))
        .header(CONTENT_TYPE, "application/merge-patch+json")
        .body(r#"{"sku": "bc-4"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(pointers(&expect_problem(response, StatusCode::CONFLICT).await), ["/sku"]);
    assert_eq!(expect_json(get(app, &path).await, StatusCode::OK).await, second);

    // A deleted product keeps its SKU.
    let response = app.client.delete(app.url(&format!("/api/v1/products/{}", id(&first)))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = post(app, "/api/v1/products", &json!({"name": "Copy", "sku": "BC-4", "category": "part", "price": 1})).await;
    expect_problem(response, StatusCode::CONFLICT).await;

    let page = expect_json(get(app, "/api/v1/products").await, StatusCode::OK).await;
    assert_eq!(item_ids(&page), [id(&second).to_owned()]);
}

async fn costs_and_stock_are_computed(app: &TestApp) {
    let body = json!({
        "name": "Bell controller BC-4", "sku": "BC-4", "category": "controller", "price": 85_000,
        "costs": {"pcb": 1_200, "components": 4_550, "enclosure": 2_000, "labor_hours": 2.5, "labor_rate": 1_833, "shipping_in": 300, "total": 1},
        "stock": {"on_hand": 5, "reserved": 3, "available": 100}
    });
    let product = create(app, "/api/v1/products", &body).await;
    // 2.5 h × 18.33 = 45.825 → 45.83; the client's total is ignored.
    assert_eq!(product["costs"]["total"], 1_200 + 4_550 + 2_000 + 4_583 + 300);
    assert_eq!(product["costs"]["labor_hours"], 2.5);
    assert_eq!(product["stock"], json!({"on_hand": 5, "reserved": 0, "available": 5}));
    assert_eq!(product["currency"], "EUR");
    assert_eq!(product["active"], true);
    assert_eq!(product["price"], 85_000);

    // A patch of one cost recomputes the total; a patch of on_hand recomputes available.
    let path = format!("/api/v1/products/{}", id(&product));
    let patch =
        |body: &'static str| app.client.patch(app.url(&path)).header(CONTENT_TYPE, "application/merge-patch+json").body(body).send();
    let patched = expect_json(patch(r#"{"costs": {"pcb": 1500}}"#).await.unwrap(), StatusCode::OK).await;
    assert_eq!(patched["costs"]["total"], 1_500 + 4_550 + 2_000 + 4_583 + 300);
    assert_eq!(patched["costs"]["components"], 4_550);
    let patched = expect_json(patch(r#"{"stock": {"on_hand": 9, "reserved": 7}}"#).await.unwrap(), StatusCode::OK).await;
    assert_eq!(patched["stock"], json!({"on_hand": 9, "reserved": 0, "available": 9}));
    assert_eq!(expect_json(get(app, &path).await, StatusCode::OK).await, patched);

    // The record read back can be PUT back as it is.
    let response = app.client.put(app.url(&path)).json(&patched).send().await.unwrap();
    let replaced = expect_json(response, StatusCode::OK).await;
    assert_eq!(replaced["costs"], patched["costs"]);
    assert_eq!(replaced["stock"], patched["stock"]);
    assert_eq!(replaced["version"], 4);
}

async fn category_and_active_filters(app: &TestApp) {
    let mut ids = std::collections::HashMap::new();
    for (sku, category, active) in [
        ("BC-4", "controller", true),
        ("BC-2", "controller", false),
        ("ST-1", "striker", true),
        ("CL-1", "clock", true),
        ("RP-1", "repair_service", false),
    ] {
        let product = create(
            app,
            "/api/v1/products",
            &json!({"name": format!("Product {sku}"), "sku": sku, "category": category, "price": 100, "active": active}),
        )
        .await;
        assert_eq!(product["active"], active);
        ids.insert(sku, id(&product).to_owned());
    }
    let listed = |query: &'static [(&'static str, &'static str)]| async move {
        let page = expect_json(get_query(app, "/api/v1/products", query).await, StatusCode::OK).await;
        let mut skus: Vec<String> = page["items"].as_array().unwrap().iter().map(|p| p["sku"].as_str().unwrap().to_owned()).collect();
        skus.sort();
        skus
    };
    assert_eq!(listed(&[("category", "controller")]).await, ["BC-2", "BC-4"]);
    assert_eq!(listed(&[("category", "repair_service")]).await, ["RP-1"]);
    assert_eq!(listed(&[("active", "true")]).await, ["BC-4", "CL-1", "ST-1"]);
    assert_eq!(listed(&[("active", "false")]).await, ["BC-2", "RP-1"]);
    assert_eq!(listed(&[("category", "controller"), ("active", "true")]).await, ["BC-4"]);
    assert_eq!(listed(&[("category", "part")]).await, Vec::<String>::new());
    assert_eq!(listed(&[]).await.len(), 5);
    assert_eq!(listed(&[("search", "bc")]).await, ["BC-2", "BC-4"]);

    // Sorted by SKU and price.
    let page = expect_json(get(app, "/api/v1/products?sort=sku&direction=asc").await, StatusCode::OK).await;
    let skus: Vec<&str> = page["items"].as_array().unwrap().iter().map(|p| p["sku"].as_str().unwrap()).collect();
    assert_eq!(skus, ["BC-2", "BC-4", "CL-1", "RP-1", "ST-1"]);

    // Deactivating moves a product between the filters.
    let path = format!("/api/v1/products/{}", ids["ST-1"]);
    let response = app
        .client
        .patch(app.url(&path))
        .header(CONTENT_TYPE, "application/merge-patch+json")
        .body(r#"{"active": false}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(expect_json(response, StatusCode::OK).await["active"], false);
    assert_eq!(listed(&[("active", "false")]).await, ["BC-2", "RP-1", "ST-1"]);
    assert_eq!(listed(&[("active", "true")]).await, ["BC-4", "CL-1"]);
}
