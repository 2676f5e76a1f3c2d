//! The unmatched inbox: messages whose sender matched no customer, latest first a page at a
//! time; assigning one to a customer adds the sender's address to the customer's contacts and
//! takes the other messages from that address along; dismissing one takes it out; neither
//! works twice; managers triage, agents may not.

use crate::{create_customer, expect_json, expect_problem, get, get_query, header_value, id, item_ids, pointers, post};
use chrono::{Duration, Utc};
use crm_domain::access::Role;
use crm_tests::TestApp;
use crm_tests::fixtures::log_unmatched;
use reqwest::StatusCode;
use serde_json::json;

crm_tests::api_on_both_backends!(assigning_adds_the_contact_and_the_siblings, dismissing_and_refusals, managers_triage_agents_do_not);

async fn inbox(app: &TestApp, query: &[(&str, &str)]) -> serde_json::Value {
    expect_json(get_query(app, "/api/v1/inbox", query).await, StatusCode::OK).await
}

async fn assigning_adds_the_contact_and_the_siblings(app: &TestApp) {
    let store = &app.db.store;
    let now = Utc::now();
    let first = log_unmatched(store, "Maria@Example.gr", "Τιμή καμπάνας;", now - Duration::hours(3)).await.to_string();
    let stranger = log_unmatched(store, "spam@example.com", "Κερδίσατε!", now - Duration::hours(2)).await.to_string();
    let second = log_unmatched(store, "maria@example.gr", "Ξέχασα κάτι", now - Duration::hours(1)).await.to_string();
    let customer = create_customer(app, "Μαρία Οικονόμου").await;
    assert!(customer["contacts"].as_array().is_some_and(Vec::is_empty));

    // Latest first, a page at a time.
    let page = inbox(app, &[("limit", "2")]).await;
    assert_eq!(item_ids(&page), [second.clone(), stranger.clone()]);
    let cursor = page["next_cursor"].as_str().expect("a second page").to_owned();
    let page = inbox(app, &[("limit", "2"), ("cursor", &cursor)]).await;
    assert_eq!(item_ids(&page), [first.as_str()]);
    assert!(page["next_cursor"].is_null());
    assert_eq!(inbox(app, &[]).await["items"][0]["triage"], "unmatched");

    // Assign the first: the second from the same address goes with it.
    let response = post(app, &format!("/api/v1/inbox/{first}/assign"), &json!({"customer_id": id(&customer)})).await;
    assert_eq!(header_value(response.headers(), "etag"), Some("\"2\""));
    let assigned = expect_json(response, StatusCode::OK).await;
    assert_eq!(assigned["contact_added"], true, "{assigned:#}");
    assert_eq!(assigned["also_assigned"], 1, "{assigned:#}");
    let entry = &assigned["entry"];
    assert_eq!((&entry["id"], &entry["customer_id"], &entry["triage"]), (&json!(first), &json!(id(&customer)), &json!("assigned")));
    assert_eq!(entry["match"]["confidence"], 100, "{entry:#}");
    let sibling = expect_json(get(app, &format!("/api/v1/comms/{second}")).await, StatusCode::OK).await;
    assert_eq!((&sibling["customer_id"], &sibling["triage"]), (&json!(id(&customer)), &json!("assigned")));

    // The customer now has the address, and the messages on their timeline.
    let customer = expect_json(get(app, &format!("/api/v1/customers/{}", id(&customer))).await, StatusCode::OK).await;
    let contacts = customer["contacts"].as_array().expect("contacts");
    assert_eq!(contacts.len(), 1, "{customer:#}");
    assert_eq!((&contacts[0]["type"], &contacts[0]["normalized"]), (&json!("email"), &json!("maria@example.gr")));
    let timeline = expect_json(get(app, &format!("/api/v1/customers/{}/timeline", id(&customer))).await, StatusCode::OK).await;
    assert_eq!(item_ids(&timeline), [second.clone(), first.clone()]);

    // Only the stranger is left; assigning again is a conflict.
    assert_eq!(item_ids(&inbox(app, &[]).await), [stranger.as_str()]);
    let problem = expect_problem(
        post(app, &format!("/api/v1/inbox/{first}/assign"), &json!({"customer_id": id(&customer)})).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(pointers(&problem), ["/triage"]);

    // A later message from the known address is assigned without adding the contact twice.
    let third = log_unmatched(store, "MARIA@example.gr", "Και κάτι ακόμα", now).await.to_string();
    let assigned =
        expect_json(post(app, &format!("/api/v1/inbox/{third}/assign"), &json!({"customer_id": id(&customer)})).await, StatusCode::OK)
            .await;
    assert_eq!((&assigned["contact_added"], &assigned["also_assigned"]), (&json!(false), &json!(0)));
    let customer = expect_json(get(app, &format!("/api/v1/customers/{}", id(&customer))).await, StatusCode::OK).await;
    assert_eq!(customer["contacts"].as_array().map(Vec::len), Some(1));
}

async fn dismissing_and_refusals(app: &TestApp) {
    let store = &app.db.store;
    let spam = log_unmatched(store, "spam@example.com", "Κερδίσατε!", Utc::now()).await.to_string();
    let customer = create_customer(app, "Μαρία Οικονόμου").await;

    // Refusals first: nothing changes.
    let assign = format!("/api/v1/inbox/{spam}/assign");
    let problem = expect_problem(post(app, &assign, &json!({})).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/customer_id"]);
    let problem =
        expect_problem(post(app, &assign, &json!({"customer_id": uuid::Uuid::now_v7()})).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/customer_id"]);
    let problem =
        expect_problem(post(app, &assign, &json!({"customer_id": id(&customer), "note": "x"})).await, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
    assert_eq!(pointers(&problem), ["/note"]);
    let unknown = format!("/api/v1/inbox/{}/assign", uuid::Uuid::now_v7());
    expect_problem(post(app, &unknown, &json!({"customer_id": id(&customer)})).await, StatusCode::NOT_FOUND).await;
    let stale = app.client.post(app.url(&assign)).header("if-match", "\"7\"").json(&json!({"customer_id": id(&customer)})).send().await;
    expect_problem(stale.expect("request"), StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(item_ids(&inbox(app, &[]).await), [spam.as_str()]);

    // Dismiss: out of the inbox, kept in the log without a customer.
    let dismissed = expect_json(post(app, &format!("/api/v1/inbox/{spam}/dismiss"), &json!({})).await, StatusCode::OK).await;
    assert_eq!((&dismissed["triage"], &dismissed["customer_id"]), (&json!("dismissed"), &json!(null)));
    assert!(item_ids(&inbox(app, &[]).await).is_empty());
    let dismissed_ones = expect_json(get_query(app, "/api/v1/comms", &[("triage", "dismissed")]).await, StatusCode::OK).await;
    assert_eq!(item_ids(&dismissed_ones), [spam.as_str()]);
    expect_problem(post(app, &format!("/api/v1/inbox/{spam}/dismiss"), &json!({})).await, StatusCode::CONFLICT).await;
    expect_problem(post(app, &assign, &json!({"customer_id": id(&customer)})).await, StatusCode::CONFLICT).await;

    // An entry that never was in the inbox cannot be triaged.
    let note = crate::create(app, "/api/v1/comms", &json!({"customer_id": id(&customer), "type": "note", "body": "x"})).await;
    expect_problem(post(app, &format!("/api/v1/inbox/{}/dismiss", id(&note)), &json!({})).await, StatusCode::CONFLICT).await;
    let problem = expect_problem(get_query(app, "/api/v1/inbox", &[("triage", "assigned")]).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(pointers(&problem), ["/triage"]);
}

async fn managers_triage_agents_do_not(app: &TestApp) {
    let store = &app.db.store;
    let first = log_unmatched(store, "maria@example.gr", "Γεια", Utc::now()).await.to_string();
    let second = log_unmatched(store, "nikos@example.gr", "Γεια", Utc::now()).await.to_string();
    let (agent_id, agent) = app.user(Role::Agent).await;
    let (_, manager) = app.user(Role::Manager).await;
    let customer = crate::create(app, "/api/v1/customers", &json!({"name": "Μαρία", "assigned_to": agent_id})).await;
    let body = json!({"customer_id": id(&customer)});

    for response in [
        agent.get(app.url("/api/v1/inbox")).send().await,
        agent.post(app.url(&format!("/api/v1/inbox/{first}/assign"))).json(&body).send().await,
        agent.post(app.url(&format!("/api/v1/inbox/{first}/dismiss"))).send().await,
    ] {
        expect_problem(response.expect("request"), StatusCode::FORBIDDEN).await;
    }
    let page = expect_json(manager.get(app.url("/api/v1/inbox")).send().await.expect("request"), StatusCode::OK).await;
    assert_eq!(item_ids(&page).len(), 2);
    let response = manager.post(app.url(&format!("/api/v1/inbox/{first}/assign"))).json(&body).send().await.expect("request");
    let assigned = expect_json(response, StatusCode::OK).await;
    assert_eq!(assigned["entry"]["customer_id"], json!(id(&customer)));
    let response = manager.post(app.url(&format!("/api/v1/inbox/{second}/dismiss"))).send().await.expect("request");
    expect_json(response, StatusCode::OK).await;
    // The agent now sees the assigned message: its customer is theirs.
    let response = agent.get(app.url(&format!("/api/v1/comms/{first}"))).send().await.expect("request");
    assert_eq!(expect_json(response, StatusCode::OK).await["triage"], "assigned");
}
