//! Customers over HTTP: the sample Greek customer from creation to search, merge patch, soft
//! deletion and restore, and optimistic concurrency with ETags and `If-Match`.

use crate::{create, create_product, expect_json, expect_problem, get, get_query, header_value, id, item_ids, post};
use crm_tests::TestApp;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_MATCH};
use serde_json::{Value, json};

crm_tests::api_on_both_backends!(sample_customer_life_cycle, stale_if_match_is_refused, filters_and_replace);

const MERGE_PATCH: &str = "application/merge-patch+json";

async fn patch(app: &TestApp, path: &str, if_match: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = app.client.patch(app.url(path)).header(CONTENT_TYPE, MERGE_PATCH).body(serde_json::to_vec(body).unwrap());
    if let Some(tag) = if_match {
        request = request.header(IF_MATCH, tag);
    }
    request.send().await.expect("request")
}

/// The ids in the customer listing for these query parameters.
async fn listed(app: &TestApp, query: &[(&str, &str)]) -> Vec<String> {
    item_ids(&expect_json(get_query(app, "/api/v1/customers", query).await, StatusCode::OK).await)
}

fn sample(product_id: &str) -> Value {
    json!({
        "name": "Στέλιος Μπιμπης",
        "organization": "Ιερός Ναός Αγίου Νικολάου",
        "location": {"city": "Θεσσαλονίκη", "country": "GR"},
        "contacts": [
            {"type": "email", "value": "stelios@example.gr", "primary": true},
            {"type": "phone", "label": "κινητό", "value": "694 123 4567"}
        ],
        "tags": ["Bells", "VIP"],
        "notes": [{"text": "Θέλει δύο καμπάνες για το καμπαναριό", "by": "Γιώργος"}],
        "owned_items": [
            {"type": "console_device", "device_id": "dev-7f3a", "label": "βόρειο καμπαναριό"},
            {"type": "product", "product_id": product_id, "product_name": "Bell controller BC-4", "quantity": 2, "serial_numbers": ["BC4-0001", "BC4-0002"]},
            {"type": "freetext", "description": "Παλιό ρολόι καμπαναριού", "serial_number": "CLK-1961", "notes": "Χρειάζεται συντήρηση"}
        ]
    })
}

async fn sample_customer_life_cycle(app: &TestApp) {
    let product = create_product(app, "BC-4", 85_000, 5).await;
    let product_id = id(&product).to_owned();

    // Create.
    let response = post(app, "/api/v1/customers", &sample(&product_id)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = header_value(response.headers(), "location").expect("location header").to_owned();
    let etag = header_value(response.headers(), "etag").expect("etag header").to_owned();
    let created = expect_json(response, StatusCode::CREATED).await;
    let customer_id = id(&created).to_owned();
    assert_eq!(location, format!("/api/v1/customers/{customer_id}"));
    assert_eq!(etag, "\"1\"");
    assert_eq!(created["version"], 1);
    assert!(uuid::Uuid::parse_str(&customer_id).is_ok(), "{customer_id}");
    assert_eq!(created["name"], "Στέλιος Μπιμπης");
    assert_eq!(created["organization"], "Ιερός Ναός Αγίου Νικολάου");
    assert_eq!(created["location"], json!({"city": "Θεσσαλονίκη", "country": "GR"}));
    assert_eq!(created["language"], "el", "language defaults to Greek");
    assert_eq!(created["status"], "lead");
    assert_eq!(created["contacted"], false);
    assert_eq!(created["tags"], json!(["bells", "vip"]));
    assert!(created.get("deleted_at").is_none(), "{created:#}");
    let email = &created["contacts"][0];
    assert_eq!(
        (&email["type"], &email["value"], &email["normalized"], &email["primary"]),
        (&json!("email"), &json!("stelios@example.gr"), &json!("stelios@example.gr"), &json!(true))
    );
    let phone = &created["contacts"][1];
    assert_eq!(phone["type"], "phone");
    assert_eq!(phone["value"], "694 123 4567", "the number is kept as typed");
    assert_eq!(phone["normalized"], "+306941234567");
    assert_eq!(phone["primary"], false);
    assert_eq!(phone["label"], "κινητό");
    assert_eq!(created["notes"][0]["text"], "Θέλει δύο καμπάνες για το καμπαναριό");
    assert!(created["notes"][0]["at"].is_string(), "a note is dated when saved: {created:#}");
    assert_eq!(
        created["owned_items"],
        json!([
            {"type": "console_device", "device_id": "dev-7f3a", "label": "βόρειο καμπαναριό"},
            {"type": "product", "product_id": product_id, "product_name": "Bell controller BC-4", "quantity": 2, "serial_numbers": ["BC4-0001", "BC4-0002"]},
            {"type": "freetext", "description": "Παλιό ρολόι καμπαναριού", "serial_number": "CLK-1961", "notes": "Χρειάζεται συντήρηση"}
        ])
    );

    // The Location header leads to the same record, with the same ETag.
    let response = get(app, &location).await;
    assert_eq!(header_value(response.headers(), "etag"), Some("\"1\""));
    assert_eq!(expect_json(response, StatusCode::OK).await, created);

    // Someone else, so that searching has something to leave out.
    let other =
        create(app, "/api/v1/customers", &json!({"name": "Μαρία Οικονόμου", "contacts": [{"type": "phone", "value": "210 123 4567"}]}))
            .await;

    // Search: lower case without accents or final sigma, and phone numbers however they are written.
    for search in ["στελιος μπιμπης", "ΣΤΈΛΙΟΣ", "ναος αγιου", "+30 694 123 4567", "0030694 1234567", "6941234567", "stelios@example"]
    {
        assert_eq!(listed(app, &[("search", search)]).await, [customer_id.as_str()], "search {search:?}");
    }
    // The same query written into the URL by hand, percent-encoded.
    let page = expect_json(
        get(app, "/api/v1/customers?search=%CF%83%CF%84%CE%B5%CE%BB%CE%B9%CE%BF%CF%82%20%CE%BC%CF%80%CE%B9%CE%BC%CF%80%CE%B7%CF%82").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(item_ids(&page), [customer_id.as_str()]);
    assert_eq!(listed(app, &[("search", "210 1234567")]).await, [id(&other).to_owned()]);
    assert_eq!(listed(app, &[("search", "στελιος οικονομου")]).await, Vec::<String>::new(), "every term must match");
    assert_eq!(listed(app, &[]).await.len(), 2);

    // Merge patch: change the organisation and add a tag; everything else stays.
    let response =
        patch(app, &location, None, &json!({"organization": "Μητρόπολη Θεσσαλονίκης", "tags": ["bells", "vip", "Μητρόπολη"]})).await;
    assert_eq!(header_value(response.headers(), "etag"), Some("\"2\""));
    let patched = expect_json(response, StatusCode::OK).await;
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["organization"], "Μητρόπολη Θεσσαλονίκης");
    assert_eq!(patched["tags"], json!(["bells", "vip", "μητρόπολη"]));
    for unchanged in ["id", "name", "contacts", "location", "language", "notes", "owned_items", "status", "contacted", "created_at"] {
        assert_eq!(patched[unchanged], created[unchanged], "{unchanged} changed");
    }
    assert_ne!(patched["updated_at"], created["updated_at"]);
    assert_eq!(expect_json(get(app, &location).await, StatusCode::OK).await, patched);
    assert_eq!(listed(app, &[("tag", "Μητρόπολη")]).await, [customer_id.as_str()]);
    assert_eq!(listed(app, &[("search", "μητροπολη")]).await, [customer_id.as_str()], "the search index follows the change");
    assert_eq!(listed(app, &[("search", "ιερος ναος")]).await, Vec::<String>::new());

    // Merge patch: null removes a field.
    let patched = expect_json(patch(app, &location, Some("\"2\""), &json!({"organization": null})).await, StatusCode::OK).await;
    assert!(patched.get("organization").is_none(), "{patched:#}");
    assert_eq!(patched["version"], 3);

    // Soft delete: gone from reads and lists, still there when asked for.
    let response = app.client.delete(app.url(&location)).send().await.unwrap();
    assert_eq!(header_value(response.headers(), "etag"), Some("\"4\""));
    let deleted = expect_json(response, StatusCode::OK).await;
    assert!(deleted["deleted_at"].is_string(), "{deleted:#}");
    expect_problem(get(app, &location).await, StatusCode::NOT_FOUND).await;
    expect_problem(patch(app, &location, None, &json!({"contacted": true})).await, StatusCode::NOT_FOUND).await;
    assert_eq!(listed(app, &[]).await, [id(&other).to_owned()]);
    assert_eq!(listed(app, &[("search", "στελιος")]).await, Vec::<String>::new());
    let found = expect_json(get(app, &format!("{location}?include_deleted=true")).await, StatusCode::OK).await;
    assert_eq!(found["deleted_at"], deleted["deleted_at"]);
    assert_eq!(found["name"], "Στέλιος Μπιμπης");
    let all = listed(app, &[("include_deleted", "true")]).await;
    assert!(all.contains(&customer_id) && all.len() == 2, "{all:?}");

    // Restore: visible again.
    let response = app.client.post(app.url(&format!("{location}/restore"))).send().await.unwrap();
    assert_eq!(header_value(response.headers(), "etag"), Some("\"5\""));
    let restored = expect_json(response, StatusCode::OK).await;
    assert!(restored.get("deleted_at").is_none(), "{restored:#}");
    let got = expect_json(get(app, &location).await, StatusCode::OK).await;
    assert_eq!(got["version"], 5);
    assert_eq!(got["name"], "Στέλιος Μπιμπης");
    assert!(listed(app, &[]).await.contains(&customer_id));
    assert_eq!(listed(app, &[("search", "+30 694 123 4567")]).await, [customer_id.as_str()]);
}

async fn stale_if_match_is_refused(app: &TestApp) {
    let created = create(app, "/api/v1/customers", &json!({"name": "Πάτερ Νικόλαος", "tags": ["bells"]})).await;
    let path = format!("/api/v1/customers/{}", id(&created));

    // Version 1 -> 2 with a matching If-Match.
    let response = patch(app, &path, Some("\"1\""), &json!({"contacted": true})).await;
    assert_eq!(header_value(response.headers(), "etag"), Some("\"2\""));
    let current = expect_json(response, StatusCode::OK).await;
    assert_eq!(current["contacted"], true);

    // A stale version is refused by PATCH and PUT alike, and nothing changes.
    let stale = patch(app, &path, Some("\"1\""), &json!({"name": "Lost update"})).await;
    let problem = expect_problem(stale, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(problem["current_version"], 2);
    let mut replacement = current.clone();
    replacement["name"] = json!("Lost update");
    let stale = app.client.put(app.url(&path)).header(IF_MATCH, "\"1\"").json(&replacement).send().await.unwrap();
    let problem = expect_problem(stale, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(problem["current_version"], 2);
    let stale = app.client.delete(app.url(&path)).header(IF_MATCH, "\"1\"").send().await.unwrap();
    assert_eq!(expect_problem(stale, StatusCode::PRECONDITION_FAILED).await["current_version"], 2);
    // An If-Match that is not one of our ETags can never match.
    let garbage = patch(app, &path, Some("\"not-a-version\""), &json!({"name": "Lost update"})).await;
    assert_eq!(expect_problem(garbage, StatusCode::PRECONDITION_FAILED).await["current_version"], 2);
    let response = get(app, &path).await;
    assert_eq!(header_value(response.headers(), "etag"), Some("\"2\""));
    assert_eq!(expect_json(response, StatusCode::OK).await, current);

    // With the current ETag: PUT the record as read (read-only fields included), then PATCH.
    let response = get(app, &path).await;
    let etag = header_value(response.headers(), ETAG.as_str()).expect("etag header").to_owned();
    let mut record = expect_json(response, StatusCode::OK).await;
    record["name"] = json!("Πάτερ Νικόλαος Παπαδόπουλος");
    let response = app.client.put(app.url(&path)).header(IF_MATCH, &etag).json(&record).send().await.unwrap();
    assert_eq!(header_value(response.headers(), "etag"), Some("\"3\""));
    let replaced = expect_json(response, StatusCode::OK).await;
    assert_eq!(replaced["name"], "Πάτερ Νικόλαος Παπαδόπουλος");
    assert_eq!(replaced["version"], 3);
    assert_eq!(replaced["tags"], json!(["bells"]));
    assert_eq!(replaced["id"], created["id"]);
    assert_eq!(replaced["created_at"], created["created_at"]);

    let response = patch(app, &path, Some("W/\"3\""), &json!({"status": "prospect"})).await;
    assert_eq!(header_value(response.headers(), "etag"), Some("\"4\""));
    assert_eq!(expect_json(response, StatusCode::OK).await["status"], "prospect");

    // The 412 after that names the new version.
    let stale = patch(app, &path, Some(&etag), &json!({"status": "active"})).await;
    assert_eq!(expect_problem(stale, StatusCode::PRECONDITION_FAILED).await["current_version"], 4);

    // A PUT replaces the whole record: what it leaves out is gone.
    let response = app.client.put(app.url(&path)).header(IF_MATCH, "\"4\"").json(&json!({"name": "Νέο όνομα"})).send().await.unwrap();
    let replaced = expect_json(response, StatusCode::OK).await;
    assert_eq!(replaced["tags"], json!([]));
    assert_eq!(replaced["status"], "lead");
    assert_eq!(replaced["contacted"], false);
    assert_eq!(replaced["version"], 5);
}

async fn filters_and_replace(app: &TestApp) {
    // Customers are assigned to real, active users.
    let agent = create(app, "/api/v1/users", &json!({"email": "filters@example.gr", "display_name": "Agent", "role": "agent"})).await;
    let user = id(&agent).to_owned();
    let a = create(app, "/api/v1/customers", &json!({"name": "Alpha", "tags": ["bells"], "status": "active", "assigned_to": user})).await;
    let b = create(app, "/api/v1/customers", &json!({"name": "Beta", "tags": ["clocks"], "status": "prospect"})).await;
    let c = create(app, "/api/v1/customers", &json!({"name": "Gamma", "tags": ["Bells", "clocks"]})).await;
    let (a, b, c) = (id(&a).to_owned(), id(&b).to_owned(), id(&c).to_owned());

    // Newest first by default; ascending on request; by name.
    assert_eq!(listed(app, &[]).await, [c.clone(), b.clone(), a.clone()]);
    assert_eq!(listed(app, &[("direction", "asc")]).await, [a.clone(), b.clone(), c.clone()]);
    assert_eq!(listed(app, &[("sort", "name"), ("direction", "desc")]).await, [c.clone(), b.clone(), a.clone()]);

    let mut with_bells = listed(app, &[("tag", "BELLS")]).await;
    with_bells.sort();
    let mut expected = vec![a.clone(), c.clone()];
    expected.sort();
    assert_eq!(with_bells, expected);
    assert_eq!(listed(app, &[("status", "prospect")]).await, [b.as_str()]);
    assert_eq!(listed(app, &[("assigned_to", &user)]).await, [a.as_str()]);
    assert_eq!(listed(app, &[("tag", "clocks"), ("status", "lead")]).await, [c.as_str()]);
    assert_eq!(listed(app, &[("tag", "nothing")]).await, Vec::<String>::new());
}
