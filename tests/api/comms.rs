//! The communications log over HTTP: notes, calls and meetings logged by hand, the log's
//! filters and a customer's timeline (type, direction, time range, cursor pages), edits of the
//! subject, body and time only (every other field refused with its pointer, read-only fields
//! sent back unchanged ignored), soft deletion and restore, and agents confined to their
//! customers' entries.

use crate::{create, create_customer, expect_json, expect_problem, get, get_query, header_value, id, item_ids, pointers, post, send};
use crm_domain::access::Role;
use crm_tests::TestApp;
use reqwest::header::{CONTENT_TYPE, IF_MATCH};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

crm_tests::api_on_both_backends!(
    manual_entries_list_and_timeline,
    invalid_entries_are_refused_with_pointers,
    edits_change_only_subject_body_and_time,
    edits_check_only_what_changes,
    deleted_entries_can_be_restored,
    agents_see_only_their_customers_entries,
    a_body_at_its_limit_is_taken_however_it_is_escaped,
);

async fn patch(app: &TestApp, path: &str, if_match: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = app.client.patch(app.url(path)).header(CONTENT_TYPE, "application/merge-patch+json").body(body.to_string());
    if let Some(tag) = if_match {
        request = request.header(IF_MATCH, tag);
    }
    request.send().await.expect("request")
}

/// Logs an entry for `customer` as the admin key.
async fn log(app: &TestApp, customer: &str, kind: &str, direction: Option<&str>, occurred_at: &str, body: &str) -> Value {
    let mut entry = json!({"customer_id": customer, "type": kind, "body": body, "occurred_at": occurred_at});
    if let Some(direction) = direction {
        entry["direction"] = json!(direction);
    }
    create(app, "/api/v1/comms", &entry).await
}

async fn listed(app: &TestApp, path: &str, query: &[(&str, &str)]) -> Value {
    expect_json(get_query(app, path, query).await, StatusCode::OK).await
}

async fn manual_entries_list_and_timeline(app: &TestApp) {
    let customer = create_customer(app, "Στέλιος Μπιμπης").await;
    let other = create_customer(app, "Μαρία Οικονόμου").await;
    let customer_id = id(&customer);

    // A note: internal by default, logged by whoever wrote it.
    let response = post(app, "/api/v1/comms", &json!({"customer_id": customer_id, "type": "note", "body": "Θέλει δύο καμπάνες"})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = header_value(response.headers(), "location").expect("location").to_owned();
    assert_eq!(header_value(response.headers(), "etag"), Some("\"1\""));
    let note = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(location, format!("/api/v1/comms/{}", id(&note)));
    assert_eq!((&note["type"], &note["direction"], &note["customer_id"]), (&json!("note"), &json!("internal"), &json!(customer_id)));
    assert_eq!(note["body"], "Θέλει δύο καμπάνες");
    assert!(note["logged_by"].as_str().is_some_and(|by| by.starts_with("api_key:")), "{note:#}");
    assert_eq!(expect_json(get(app, &location).await, StatusCode::OK).await, note);

    let call = log(app, customer_id, "call", Some("inbound"), "2025-01-10T09:00:00Z", "Ρώτησε για τιμές").await;
    let visit = log(app, customer_id, "in_person", None, "2025-02-01T10:00:00Z", "Επίσκεψη στο καμπαναριό").await;
    let email = log(app, customer_id, "email", Some("outbound"), "2025-03-01T12:00:00Z", "Στείλαμε προσφορά").await;
    assert_eq!(visit["direction"], "outbound", "a meeting logged by hand defaults to outbound");
    let elsewhere = log(app, id(&other), "call", Some("inbound"), "2025-01-15T09:00:00Z", "Άλλος πελάτης").await;

    // The log: latest first by occurred_at, filtered by customer, type, direction and time.
    let everything = item_ids(&listed(app, "/api/v1/comms", &[]).await);
    assert_eq!(everything, [id(&note), id(&email), id(&visit), id(&elsewhere), id(&call)]);
    let theirs = item_ids(&listed(app, "/api/v1/comms", &[("customer_id", customer_id)]).await);
    assert_eq!(theirs, [id(&note), id(&email), id(&visit), id(&call)]);
    assert_eq!(item_ids(&listed(app, "/api/v1/comms", &[("type", "call")]).await), [id(&elsewhere), id(&call)]);
    let inbound = listed(app, "/api/v1/comms", &[("customer_id", customer_id), ("direction", "inbound")]).await;
    assert_eq!(item_ids(&inbound), [id(&call)]);
    let range = [("occurred_from", "2025-01-10T09:00:00Z"), ("occurred_to", "2025-03-01T12:00:00Z")];
    assert_eq!(
        item_ids(&listed(app, "/api/v1/comms", &range).await),
        [id(&visit), id(&elsewhere), id(&call)],
        "from inclusive, to exclusive"
    );
    let oldest_first = listed(app, "/api/v1/comms", &[("customer_id", customer_id), ("direction", "asc")]).await;
    assert_eq!(item_ids(&oldest_first), [id(&call), id(&visit), id(&email), id(&note)]);
    let by_creation = listed(app, "/api/v1/comms", &[("customer_id", customer_id), ("sort", "created_at")]).await;
    assert_eq!(item_ids(&by_creation), [id(&email), id(&visit), id(&call), id(&note)]);
    assert_eq!(item_ids(&listed(app, "/api/v1/comms", &[("search", "προσφορα")]).await), [id(&email)], "search ignores accents");
    let problem =
        expect_problem(get_query(app, "/api/v1/comms", &[("type", "fax"), ("occurred_from", "yesterday")]).await, StatusCode::BAD_REQUEST)
            .await;
    assert!(!pointers(&problem).is_empty(), "{problem:#}");

    // The timeline: the customer's entries only, with the same filters, a page at a time.
    let timeline = format!("/api/v1/customers/{customer_id}/timeline");
    let first = listed(app, &timeline, &[("limit", "3")]).await;
    assert_eq!(item_ids(&first), [id(&note), id(&email), id(&visit)]);
    let cursor = first["next_cursor"].as_str().expect("a next page").to_owned();
    let second = listed(app, &timeline, &[("limit", "3"), ("cursor", &cursor)]).await;
    assert_eq!(item_ids(&second), [id(&call)]);
    assert!(second["next_cursor"].is_null(), "{second:#}");
    assert_eq!(item_ids(&listed(app, &timeline, &[("type", "call")]).await), [id(&call)]);
    assert_eq!(item_ids(&listed(app, &timeline, &[("direction", "internal")]).await), [id(&note)]);
    let early = [("occurred_from", "2025-01-01T00:00:00Z"), ("occurred_to", "2025-02-15T00:00:00Z")];
    assert_eq!(item_ids(&listed(app, &timeline, &early).await), [id(&visit), id(&call)]);
    let problem = expect_problem(get_query(app, &timeline, &[("customer_id", id(&other))]).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(pointers(&problem), ["/customer_id"], "a timeline is one customer's");
    let unknown = format!("/api/v1/customers/{}/timeline", uuid::Uuid::now_v7());
    expect_problem(get(app, &unknown).await, StatusCode::NOT_FOUND).await;
}

async fn invalid_entries_are_refused_with_pointers(app: &TestApp) {
    let customer = create_customer(app, "Στέλιος Μπιμπης").await;
    let cases = [
        (json!({"body": "χωρίς πελάτη"}), vec!["/customer_id", "/type"]),
        (json!({"customer_id": id(&customer), "type": "note", "direction": "inbound", "body": "x"}), vec!["/direction"]),
        (json!({"customer_id": id(&customer), "type": "call", "direction": "internal", "body": "x"}), vec!["/direction"]),
        (json!({"customer_id": id(&customer), "type": "note"}), vec!["/body"]),
        (json!({"customer_id": id(&customer), "type": "fax", "body": "x"}), vec!["/type"]),
        (json!({"customer_id": id(&customer), "type": "note", "body": "x", "occurred_at": "2999-01-01T00:00:00Z"}), vec!["/occurred_at"]),
        // Years PostgreSQL cannot store (a 500 there before) or SQLite cannot order as text.
        (json!({"customer_id": id(&customer), "type": "note", "body": "x", "occurred_at": "-5000-01-01T00:00:00Z"}), vec!["/occurred_at"]),
        (json!({"customer_id": id(&customer), "type": "note", "body": "x", "occurred_at": "0000-06-01T00:00:00Z"}), vec!["/occurred_at"]),
        (json!({"customer_id": id(&customer), "type": "note", "body": "x", "colour": "red"}), vec!["/colour"]),
        (json!({"customer_id": uuid::Uuid::now_v7(), "type": "note", "body": "x"}), vec!["/customer_id"]),
    ];
    for (body, expected) in cases {
        let problem = expect_problem(post(app, "/api/v1/comms", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(pointers(&problem), expected, "{body}: {problem:#}");
    }
    // Read-only fields sent on create are ignored, not stored.
    let note = create(
        app,
        "/api/v1/comms",
        &json!({"customer_id": id(&customer), "type": "note", "body": "x", "delivery_status": "read", "logged_by": "someone else", "id": "x"}),
    )
    .await;
    assert!(note["delivery_status"].is_null(), "{note:#}");
    assert!(note["logged_by"].as_str().is_some_and(|by| by.starts_with("api_key:")), "{note:#}");
    let page = expect_json(get_query(app, "/api/v1/comms", &[("customer_id", id(&customer))]).await, StatusCode::OK).await;
    assert_eq!(item_ids(&page), [id(&note)], "nothing else was logged");

    // Time filters outside the years 1 to 9999 are refused too (SQLite would compare them as
    // text and answer differently from PostgreSQL).
    for (path, name) in [("/api/v1/comms", "occurred_to"), ("/api/v1/comms", "occurred_from"), ("/api/v1/customers", "created_from")] {
        let problem = expect_problem(get_query(app, path, &[(name, "+10000-01-01T00:00:00Z")]).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(pointers(&problem), [format!("/{name}")], "{path}?{name}: {problem:#}");
    }
}

/// An edit checks only the fields it changes: an inbound entry may hold a body longer than the
/// API takes, or a date from a sender's wrong clock, and must stay editable. Emptying both the
/// subject and the body is refused, as on create.
async fn edits_check_only_what_changes(app: &TestApp) {
    let customer = create_customer(app, "Στέλιος Μπιμπης").await;
    let mut inbound = crm_domain::comms::CommsInput {
        customer_id: Some(id(&customer).parse().unwrap()),
        kind: Some(crm_domain::comms::CommsType::Email),
        direction: Some(crm_domain::comms::Direction::Inbound),
        body: Some("x".into()),
        ..Default::default()
    }
    .parse_new("email".into(), chrono::Utc::now())
    .expect("valid");
    inbound.body = "α".repeat(150_000);
    inbound.occurred_at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now() + chrono::Duration::days(800), 6);
    let stored = app.db.store.create(inbound).await.expect("logged as ingest would");
    let path = format!("/api/v1/comms/{}", stored.id);

    let edited = expect_json(patch(app, &path, None, &json!({"subject": "Καμπάνα"})).await, StatusCode::OK).await;
    assert_eq!(edited["subject"], "Καμπάνα");
    assert_eq!(edited["body"].as_str().map(|b| b.chars().count()), Some(150_000), "the body is kept as it was");
    let problem =
        expect_problem(patch(app, &path, None, &json!({"body": "β".repeat(100_001)})).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/body"], "a changed body is checked");
    let problem =
        expect_problem(patch(app, &path, None, &json!({"occurred_at": "2999-01-01T00:00:00Z"})).await, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
    assert_eq!(pointers(&problem), ["/occurred_at"], "a changed time is checked");
    let moved = expect_json(patch(app, &path, None, &json!({"occurred_at": "2025-01-11T08:30:00Z"})).await, StatusCode::OK).await;
    assert_eq!(moved["occurred_at"], "2025-01-11T08:30:00Z");

    let note = create(app, "/api/v1/comms", &json!({"customer_id": id(&customer), "type": "note", "body": "σημείωση"})).await;
    let path = format!("/api/v1/comms/{}", id(&note));
    let problem = expect_problem(patch(app, &path, None, &json!({"body": ""})).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/body"], "neither subject nor body left");
    let edited = expect_json(patch(app, &path, None, &json!({"body": "", "subject": "Θέμα"})).await, StatusCode::OK).await;
    assert_eq!((&edited["subject"], &edited["body"]), (&json!("Θέμα"), &json!("")));
}

async fn edits_change_only_subject_body_and_time(app: &TestApp) {
    let customer = create_customer(app, "Στέλιος Μπιμπης").await;
    let other = create_customer(app, "Μαρία Οικονόμου").await;
    let call = log(app, id(&customer), "call", Some("inbound"), "2025-01-10T09:00:00Z", "Ρώτησε για τιμές").await;
    let path = format!("/api/v1/comms/{}", id(&call));

    // PUT the record as read, with new text: the rest is sent back unchanged and ignored.
    let mut edited = call.clone();
    edited["subject"] = json!("Τιμές καμπανών");
    edited["body"] = json!("Ρώτησε για τιμές και χρόνους παράδοσης");
    let response = send(app, Method::PUT, &path, &edited).await;
    assert_eq!(header_value(response.headers(), "etag"), Some("\"2\""));
    let replaced = expect_json(response, StatusCode::OK).await;
    assert_eq!((&replaced["subject"], &replaced["body"]), (&edited["subject"], &edited["body"]));
    assert_eq!(
        (&replaced["type"], &replaced["direction"], &replaced["customer_id"]),
        (&call["type"], &call["direction"], &call["customer_id"])
    );
    assert_eq!((&replaced["occurred_at"], &replaced["logged_by"]), (&call["occurred_at"], &call["logged_by"]));

    // PATCH the time.
    let moved = expect_json(patch(app, &path, Some("\"2\""), &json!({"occurred_at": "2025-01-11T08:30:00Z"})).await, StatusCode::OK).await;
    assert_eq!(moved["occurred_at"], "2025-01-11T08:30:00Z");
    assert_eq!(moved["version"], 3);
    assert_eq!(moved["subject"], "Τιμές καμπανών", "a merge patch keeps what it does not name");

    // Anything else is refused, every field with its pointer, and nothing changes.
    let refused = [
        (json!({"type": "email"}), vec!["/type"]),
        (json!({"direction": "outbound", "customer_id": id(&other)}), vec!["/customer_id", "/direction"]),
        (json!({"delivery_status": "sent", "logged_by": "user:x", "body": "x"}), vec!["/logged_by", "/delivery_status"]),
        (
            json!({"thread_id": uuid::Uuid::now_v7(), "triage": "dismissed", "match": {"confidence": 1, "reason": "x", "matcher": "y"}}),
            vec!["/thread_id", "/match", "/triage"],
        ),
        (json!({"subject": "x".repeat(999)}), vec!["/subject"]),
        (json!({"colour": "red"}), vec!["/colour"]),
    ];
    for (body, expected) in refused {
        let problem = expect_problem(patch(app, &path, None, &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(pointers(&problem), expected, "{body}: {problem:#}");
    }
    let mut changed_customer = moved.clone();
    changed_customer["customer_id"] = json!(id(&other));
    let problem = expect_problem(send(app, Method::PUT, &path, &changed_customer).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/customer_id"]);
    assert_eq!(expect_json(get(app, &path).await, StatusCode::OK).await, moved, "refused edits changed nothing");

    // A stale version is refused.
    let problem = expect_problem(patch(app, &path, Some("\"2\""), &json!({"body": "late"})).await, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(problem["current_version"], 3);
}

async fn deleted_entries_can_be_restored(app: &TestApp) {
    let customer = create_customer(app, "Στέλιος Μπιμπης").await;
    let note = log(app, id(&customer), "note", None, "2025-01-10T09:00:00Z", "Σημείωση").await;
    let path = format!("/api/v1/comms/{}", id(&note));
    let query = [("customer_id", id(&customer))];

    let deleted = expect_json(send(app, Method::DELETE, &path, &json!(null)).await, StatusCode::OK).await;
    assert!(deleted["deleted_at"].is_string(), "{deleted:#}");
    expect_problem(get(app, &path).await, StatusCode::NOT_FOUND).await;
    assert!(item_ids(&expect_json(get_query(app, "/api/v1/comms", &query).await, StatusCode::OK).await).is_empty());
    let timeline = format!("/api/v1/customers/{}/timeline", id(&customer));
    assert!(item_ids(&expect_json(get(app, &timeline).await, StatusCode::OK).await).is_empty());
    let with_deleted = expect_json(get_query(app, "/api/v1/comms", &[query[0], ("include_deleted", "true")]).await, StatusCode::OK).await;
    assert_eq!(item_ids(&with_deleted), [id(&note)]);

    let restored = expect_json(post(app, &format!("{path}/restore"), &json!({})).await, StatusCode::OK).await;
    assert!(restored.get("deleted_at").is_none(), "{restored:#}");
    assert_eq!(item_ids(&expect_json(get(app, &timeline).await, StatusCode::OK).await), [id(&note)]);
}

async fn agents_see_only_their_customers_entries(app: &TestApp) {
    let (agent_id, agent) = app.user(Role::Agent).await;
    let mine = create(app, "/api/v1/customers", &json!({"name": "Στέλιος Μπιμπης", "assigned_to": agent_id})).await;
    let theirs = create_customer(app, "Μαρία Οικονόμου").await;
    let my_note = log(app, id(&mine), "note", None, "2025-01-10T09:00:00Z", "Δική μου").await;
    let their_note = log(app, id(&theirs), "note", None, "2025-01-11T09:00:00Z", "Άλλου").await;
    let agent_get = |path: String| {
        let agent = agent.clone();
        let url = app.url(&path);
        async move { agent.get(url).send().await.expect("request") }
    };

    // Listing shows only their customers' entries, whatever they ask for.
    let page = expect_json(agent_get("/api/v1/comms".into()).await, StatusCode::OK).await;
    assert_eq!(item_ids(&page), [id(&my_note)]);
    let page = expect_json(agent_get(format!("/api/v1/comms?customer_id={}", id(&theirs))).await, StatusCode::OK).await;
    assert!(item_ids(&page).is_empty(), "{page:#}");
    let page = expect_json(agent_get(format!("/api/v1/customers/{}/timeline", id(&mine))).await, StatusCode::OK).await;
    assert_eq!(item_ids(&page), [id(&my_note)]);

    // Another's entry or timeline: refused.
    expect_problem(agent_get(format!("/api/v1/comms/{}", id(&their_note))).await, StatusCode::FORBIDDEN).await;
    expect_problem(agent_get(format!("/api/v1/customers/{}/timeline", id(&theirs))).await, StatusCode::FORBIDDEN).await;
    let response =
        agent.patch(app.url(&format!("/api/v1/comms/{}", id(&their_note)))).json(&json!({"body": "x"})).send().await.expect("request");
    expect_problem(response, StatusCode::FORBIDDEN).await;

    // Logging: for their customers only (another customer looks missing), as themselves.
    let note = json!({"customer_id": id(&theirs), "type": "note", "body": "x"});
    let response = agent.post(app.url("/api/v1/comms")).json(&note).send().await.expect("request");
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/customer_id"]);
    let note = json!({"customer_id": id(&mine), "type": "note", "body": "Πήρα τηλέφωνο"});
    let response = agent.post(app.url("/api/v1/comms")).json(&note).send().await.expect("request");
    let logged = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(logged["logged_by"], json!(format!("user:{agent_id}")));
    let edited = agent.patch(app.url(&format!("/api/v1/comms/{}", id(&logged)))).json(&json!({"body": "Πήρα δύο φορές"})).send().await;
    assert_eq!(expect_json(edited.expect("request"), StatusCode::OK).await["body"], "Πήρα δύο φορές");

    // Agents neither delete entries nor triage the inbox.
    let response = agent.delete(app.url(&format!("/api/v1/comms/{}", id(&my_note)))).send().await.expect("request");
    expect_problem(response, StatusCode::FORBIDDEN).await;
    expect_problem(agent_get("/api/v1/inbox".into()).await, StatusCode::FORBIDDEN).await;
}

/// A body of 100,000 characters beyond the BMP, every one JSON-escaped as a client may send it
/// (`\ud83d\udd14`: 12 bytes), is over 1 MiB of request and is taken; one character more is a
/// 422 at `/body`, not a 413 for the whole request.
async fn a_body_at_its_limit_is_taken_however_it_is_escaped(app: &TestApp) {
    let customer = create_customer(app, "Ιερός Ναός Αγίου Νικολάου").await;
    let escaped = |n: usize| {
        let body = "\\ud83d\\udd14".repeat(n);
        format!(r#"{{"customer_id": "{}", "type": "note", "body": "{body}"}}"#, id(&customer))
    };
    let log_raw = |text: String| {
        let request = app.client.post(app.url("/api/v1/comms")).header(CONTENT_TYPE, "application/json").body(text);
        async move { request.send().await.expect("request") }
    };
    let at_limit = escaped(100_000);
    assert!(at_limit.len() > crm_api::MAX_BODY_BYTES, "{}", at_limit.len());
    let entry = expect_json(log_raw(at_limit).await, StatusCode::CREATED).await;
    assert_eq!(entry["body"].as_str().map(|b| b.chars().count()), Some(100_000));
    assert!(entry["body"].as_str().is_some_and(|b| b.chars().all(|c| c == '🔔')));
    let problem = expect_problem(log_raw(escaped(100_001)).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/body"], "{problem:#}");
}
