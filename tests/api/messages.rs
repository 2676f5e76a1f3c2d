//! Sending messages to customers: the request is logged as a queued outbound entry and its
//! `crm.message.send.v1` command is written to the outbox in the same transaction, carrying the
//! request's id; recipients default to the customer's contacts; a reply joins the thread of the
//! message it answers; a refused request writes neither entry nor command.

use crate::{create, expect_json, expect_problem, get_query, header_value, id, item_ids, pointers};
use chrono::Utc;
use crm_domain::access::Role;
use crm_tests::TestApp;
use crm_tests::fixtures::{inbound_email, log_inbound};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

crm_tests::api_on_both_backends!(
    sending_logs_the_entry_and_queues_the_command,
    replies_join_the_thread,
    recipients_default_to_the_customers_contacts,
    refused_messages_write_nothing,
    the_longest_message_the_limits_allow_is_taken,
    a_retry_with_its_idempotency_key_sends_once,
    a_sent_message_keeps_what_was_sent,
);

async fn send_message(app: &TestApp, customer: &str, request_id: &str, body: &Value) -> reqwest::Response {
    send_with_header(app, customer, ("x-request-id", request_id), body).await
}

async fn send_with_key(app: &TestApp, customer: &str, key: &str, body: &Value) -> reqwest::Response {
    send_with_header(app, customer, ("idempotency-key", key), body).await
}

async fn send_with_header(app: &TestApp, customer: &str, (name, value): (&str, &str), body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/v1/customers/{customer}/messages")))
        .header(name, value)
        .json(body)
        .send()
        .await
        .expect("request")
}

/// The outbox messages not yet published (claimed, so a second call sees none of them).
async fn outbox(app: &TestApp) -> Vec<Value> {
    let claimed = app.db.store.claim_outbox(100, chrono::Duration::seconds(60)).await.expect("claim outbox");
    claimed.into_iter().map(|m| m.envelope).collect()
}

async fn customer(app: &TestApp) -> Value {
    create(
        app,
        "/api/v1/customers",
        &json!({
            "name": "Στέλιος Μπιμπης",
            "contacts": [
                {"type": "email", "value": "office@example.gr"},
                {"type": "email", "value": "Stelios@Example.gr", "primary": true},
                {"type": "phone", "value": "694 123 4567"},
                {"type": "whatsapp", "value": "+30 697 000 0001"}
            ]
        }),
    )
    .await
}

async fn sending_logs_the_entry_and_queues_the_command(app: &TestApp) {
    let customer = customer(app).await;
    let body = json!({"channel": "email", "subject": "Προσφορά", "body": "Σας στέλνουμε την προσφορά.", "body_html": "<p>Σας στέλνουμε την προσφορά.</p>"});
    let response = send_message(app, id(&customer), "req-send-1", &body).await;
    assert_eq!(header_value(response.headers(), "x-request-id"), Some("req-send-1"));
    let location = header_value(response.headers(), "location").expect("location").to_owned();
    let entry = expect_json(response, StatusCode::ACCEPTED).await;
    assert_eq!(location, format!("/api/v1/comms/{}", id(&entry)));
    assert_eq!(
        (&entry["type"], &entry["direction"], &entry["delivery_status"], &entry["customer_id"]),
        (&json!("email"), &json!("outbound"), &json!("queued"), &json!(id(&customer)))
    );
    assert_eq!((&entry["subject"], &entry["body"]), (&body["subject"], &body["body"]));
    assert_eq!(entry["recipients"][0]["value"], "Stelios@Example.gr", "the primary email: {entry:#}");
    assert_eq!(entry["recipients"].as_array().map(Vec::len), Some(1));
    assert_eq!(entry["thread_id"], entry["id"], "a new message starts its thread");
    assert!(entry["logged_by"].as_str().is_some_and(|by| by.starts_with("api_key:")), "{entry:#}");
    tokio::time::timeout(Duration::from_secs(5), app.relay_wakeup.notified()).await.expect("the relay was woken");

    let messages = outbox(app).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let command = &messages[0];
    assert_eq!(command["type"], "crm.message.send.v1");
    assert_eq!(command["source"], "/crm/core");
    assert_eq!(command["crmexchange"], "commands");
    assert_eq!(command["crmroutingkey"], "email.message.send");
    assert_eq!(command["crmrequestid"], "req-send-1", "the command carries the request's id");
    assert!(command["traceparent"].as_str().is_some_and(|t| t.starts_with("00-") && t.len() == 55), "{command:#}");
    assert_eq!(command["subject"], entry["id"]);
    let data = &command["data"];
    assert_eq!(data["entry_id"], entry["id"]);
    assert_eq!(data["channel"], "email");
    assert_eq!(data["to"], json!([{"kind": "email", "value": "Stelios@Example.gr", "name": "Στέλιος Μπιμπης"}]));
    assert_eq!((&data["subject"], &data["body"], &data["body_html"]), (&body["subject"], &body["body"], &body["body_html"]));
    let decoded = crm_bus::Envelope::from_structured(command).expect("a valid envelope");
    let message: crm_bus::message::SendMessage = decoded.decode().expect("a SendMessage");
    assert_eq!(message.entry_id.to_string(), id(&entry));

    // Explicit recipients and copies.
    let body = json!({"channel": "email", "subject": "Re", "body": "x", "to": ["a@example.gr", "b@example.gr"], "cc": ["c@example.gr"]});
    let entry = expect_json(send_message(app, id(&customer), "req-send-2", &body).await, StatusCode::ACCEPTED).await;
    let recipients: Vec<&Value> = entry["recipients"].as_array().expect("recipients").iter().map(|r| &r["value"]).collect();
    assert_eq!(recipients, [&json!("a@example.gr"), &json!("b@example.gr"), &json!("c@example.gr")]);
    let messages = outbox(app).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["crmrequestid"], "req-send-2");
    assert_eq!(messages[0]["data"]["cc"], json!([{"kind": "email", "value": "c@example.gr"}]));
}

async fn replies_join_the_thread(app: &TestApp) {
    let customer = customer(app).await;
    let customer_id: uuid::Uuid = id(&customer).parse().expect("uuid");
    let mut question = inbound_email(Some(customer_id), "stelios@example.gr", "Ερώτηση", "<q1@mail.example.gr>", Utc::now());
    question.entry.references = vec!["<q0@mail.example.gr>".into()];
    let question = log_inbound(&app.db.store, question).await;
    let logged = expect_json(crate::get(app, &format!("/api/v1/comms/{question}")).await, StatusCode::OK).await;

    let body = json!({"channel": "email", "subject": "Re: Ερώτηση", "body": "Απάντηση", "in_reply_to": question});
    let reply = expect_json(send_message(app, id(&customer), "req-reply", &body).await, StatusCode::ACCEPTED).await;
    assert_eq!(reply["thread_id"], logged["thread_id"], "{reply:#}");
    assert_eq!(reply["in_reply_to"], "<q1@mail.example.gr>");
    assert_eq!(reply["references"], json!(["<q0@mail.example.gr>", "<q1@mail.example.gr>"]));
    let messages = outbox(app).await;
    assert_eq!(messages[0]["data"]["in_reply_to"], "<q1@mail.example.gr>");
    assert_eq!(messages[0]["data"]["references"], json!(["<q0@mail.example.gr>", "<q1@mail.example.gr>"]));
    let thread =
        expect_json(get_query(app, "/api/v1/comms", &[("thread_id", logged["thread_id"].as_str().expect("thread"))]).await, StatusCode::OK)
            .await;
    assert_eq!(item_ids(&thread), [id(&reply).to_owned(), question.to_string()]);
}

async fn recipients_default_to_the_customers_contacts(app: &TestApp) {
    let customer = customer(app).await;
    let whatsapp =
        expect_json(send_message(app, id(&customer), "r1", &json!({"channel": "whatsapp", "body": "Γεια"})).await, StatusCode::ACCEPTED)
            .await;
    assert_eq!(whatsapp["type"], "whatsapp");
    assert_eq!(whatsapp["recipients"][0]["normalized"], "+306970000001", "the WhatsApp contact first");
    let sms =
        expect_json(send_message(app, id(&customer), "r2", &json!({"channel": "sms", "body": "Γεια"})).await, StatusCode::ACCEPTED).await;
    assert_eq!(sms["recipients"][0]["normalized"], "+306941234567");
    let typed = json!({"channel": "sms", "body": "Γεια", "to": ["210 123 4567"]});
    let sms = expect_json(send_message(app, id(&customer), "r3", &typed).await, StatusCode::ACCEPTED).await;
    assert_eq!((&sms["recipients"][0]["value"], &sms["recipients"][0]["normalized"]), (&json!("210 123 4567"), &json!("+302101234567")));
    let messages = outbox(app).await;
    let to: Vec<&Value> = messages.iter().map(|m| &m["data"]["to"][0]["value"]).collect();
    assert_eq!(to, [&json!("+306970000001"), &json!("+306941234567"), &json!("+302101234567")], "phones go out in E.164");
    let keys: Vec<&Value> = messages.iter().map(|m| &m["crmroutingkey"]).collect();
    assert_eq!(keys, [&json!("whatsapp.message.send"), &json!("sms.message.send"), &json!("sms.message.send")]);

    // Only a phone number: WhatsApp falls back to it.
    let phone_only = create(
        app,
        "/api/v1/customers",
        &json!({"name": "Νίκος", "contacts": [{"type": "phone", "value": "694 000 0002", "primary": true}]}),
    )
    .await;
    let whatsapp =
        expect_json(send_message(app, id(&phone_only), "r4", &json!({"channel": "whatsapp", "body": "Γεια"})).await, StatusCode::ACCEPTED)
            .await;
    assert_eq!(whatsapp["recipients"][0]["normalized"], "+306940000002");
    outbox(app).await;
}

async fn refused_messages_write_nothing(app: &TestApp) {
    let customer = customer(app).await;
    let other =
        create(app, "/api/v1/customers", &json!({"name": "Μαρία", "contacts": [{"type": "email", "value": "maria@example.gr"}]})).await;
    let no_contacts = create(app, "/api/v1/customers", &json!({"name": "Νίκος"})).await;
    let note = create(app, "/api/v1/comms", &json!({"customer_id": id(&other), "type": "note", "body": "x"})).await;
    let cases = [
        (id(&customer), json!({"channel": "email", "body": "χωρίς θέμα"}), vec!["/subject"]),
        (id(&customer), json!({"channel": "email", "subject": "x", "body": " "}), vec!["/body"]),
        (id(&customer), json!({"subject": "x", "body": "x"}), vec!["/channel"]),
        (id(&customer), json!({"channel": "call", "body": "x"}), vec!["/channel"]),
        (id(&customer), json!({"channel": "email", "subject": "x", "body": "x", "to": ["not an address", "ok@example.gr"]}), vec!["/to/0"]),
        (id(&customer), json!({"channel": "email", "subject": "x", "body": "x", "to": []}), vec!["/to"]),
        (id(&customer), json!({"channel": "sms", "body": "x", "cc": ["694 123 4567"], "body_html": "<p>x</p>"}), vec!["/body_html", "/cc"]),
        (id(&customer), json!({"channel": "sms", "body": "x", "to": ["12"]}), vec!["/to/0"]),
        (id(&customer), json!({"channel": "email", "subject": "x", "body": "x", "in_reply_to": id(&note)}), vec!["/in_reply_to"]),
        (id(&customer), json!({"channel": "email", "subject": "x", "body": "x", "attachments": []}), vec!["/attachments"]),
        (id(&no_contacts), json!({"channel": "sms", "body": "x"}), vec!["/to"]),
        (id(&no_contacts), json!({"channel": "email", "subject": "x", "body": "x"}), vec!["/to"]),
        // Past the limits, in Greek (two bytes a character): refused with their pointers, not
        // with a 413 for the size of the request.
        (id(&customer), json!({"channel": "email", "subject": "x", "body": "α".repeat(100_001)}), vec!["/body"]),
        (id(&customer), json!({"channel": "email", "subject": "x", "body": "x", "body_html": "ά".repeat(1_000_001)}), vec!["/body_html"]),
    ];
    for (customer, body, expected) in cases {
        let problem = expect_problem(send_message(app, customer, "refused", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(pointers(&problem), expected, "{body}: {problem:#}");
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    expect_problem(send_message(app, &unknown, "refused", &json!({"channel": "sms", "body": "x"})).await, StatusCode::NOT_FOUND).await;

    // An agent may write only to their own customers.
    let (_, agent) = app.user(Role::Agent).await;
    let response = agent
        .post(app.url(&format!("/api/v1/customers/{}/messages", id(&customer))))
        .json(&json!({"channel": "sms", "body": "x"}))
        .send()
        .await;
    expect_problem(response.expect("request"), StatusCode::FORBIDDEN).await;

    assert!(outbox(app).await.is_empty(), "a refused message wrote a command");
    for customer in [&customer, &no_contacts] {
        let page = expect_json(get_query(app, "/api/v1/comms", &[("customer_id", id(customer))]).await, StatusCode::OK).await;
        assert!(item_ids(&page).is_empty(), "a refused message was logged: {page:#}");
    }
}

/// The text and HTML bodies at their limits, in Greek with quotes JSON must escape: several
/// megabytes of request, taken whole (the route's body limit is above what the fields allow).
async fn the_longest_message_the_limits_allow_is_taken(app: &TestApp) {
    let customer = customer(app).await;
    let html = format!("<p class=\"x\">{}</p>", "ά\"".repeat(499_990));
    assert!(html.chars().count() <= 1_000_000 && html.len() > crm_api::MAX_BODY_BYTES, "{}", html.len());
    let body = json!({"channel": "email", "subject": "Προσφορά", "body": "α".repeat(100_000), "body_html": html});
    let entry = expect_json(send_message(app, id(&customer), "r-long", &body).await, StatusCode::ACCEPTED).await;
    assert_eq!(entry["body"], body["body"]);
    let commands = outbox(app).await;
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0]["data"]["body_html"].as_str(), Some(html.as_str()), "the HTML travels whole");

    // Past the route's own limit (16 MiB), the 413 names that limit.
    let huge = json!({"channel": "email", "subject": "x", "body": "x", "body_html": "x".repeat(16 * 1024 * 1024)});
    let problem = expect_problem(send_message(app, id(&customer), "r-huge", &huge).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains(&(16 * 1024 * 1024).to_string())), "{problem:#}");
}

/// A client that lost the answer retries with the same `Idempotency-Key`: it gets the entry the
/// first request logged, and the message goes out once, even when the retries race.
async fn a_retry_with_its_idempotency_key_sends_once(app: &TestApp) {
    let customer = customer(app).await;
    let body = json!({"channel": "email", "subject": "Προσφορά", "body": "Σας στέλνουμε την προσφορά."});
    let first = send_with_key(app, id(&customer), "order-42-offer", &body).await;
    assert_eq!(header_value(first.headers(), "idempotent-replayed"), None);
    let first = expect_json(first, StatusCode::ACCEPTED).await;
    // The same members in another order are the same request.
    let reordered = json!({"body": "Σας στέλνουμε την προσφορά.", "subject": "Προσφορά", "channel": "email"});
    let retry = send_with_key(app, id(&customer), "\"order-42-offer\"", &reordered).await;
    assert_eq!(header_value(retry.headers(), "idempotent-replayed"), Some("true"));
    assert_eq!(header_value(retry.headers(), "location"), Some(format!("/api/v1/comms/{}", id(&first)).as_str()));
    assert_eq!(expect_json(retry, StatusCode::ACCEPTED).await, first);
    assert_eq!(outbox(app).await.len(), 1, "one command");

    // The key stands for that request only.
    let changed = json!({"channel": "email", "subject": "Προσφορά", "body": "Άλλο κείμενο."});
    let problem =
        expect_problem(send_with_key(app, id(&customer), "order-42-offer", &changed).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/Idempotency-Key"], "{problem:#}");
    for bad in ["", "\"\"", "κλειδί", &"k".repeat(256)] {
        let problem = expect_problem(send_with_key(app, id(&customer), bad, &body).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(pointers(&problem), ["/Idempotency-Key"], "{bad}: {problem:#}");
    }

    // Retries racing each other.
    let racing = json!({"channel": "sms", "body": "Έρχεται ο τεχνικός αύριο."});
    let responses = futures::future::join_all((0..8).map(|_| send_with_key(app, id(&customer), "visit-reminder", &racing))).await;
    let mut entries = Vec::new();
    for response in responses {
        entries.push(expect_json(response, StatusCode::ACCEPTED).await["id"].clone());
    }
    assert!(entries.iter().all(|e| *e == entries[0]), "{entries:?}");
    assert_eq!(outbox(app).await.len(), 1, "one command for the eight");
    let page = expect_json(get_query(app, "/api/v1/comms", &[("customer_id", id(&customer))]).await, StatusCode::OK).await;
    assert_eq!(item_ids(&page).len(), 2, "two messages logged: {page:#}");

    // The customer deleted meanwhile: a retry still learns its message was taken; a new
    // request finds no customer.
    let response = app.client.delete(app.url(&format!("/api/v1/customers/{}", id(&customer)))).send().await.expect("request");
    assert!(response.status().is_success(), "{}", response.status());
    let retry = send_with_key(app, id(&customer), "order-42-offer", &body).await;
    assert_eq!(expect_json(retry, StatusCode::ACCEPTED).await, first);
    expect_problem(send_with_key(app, id(&customer), "a-new-key", &body).await, StatusCode::NOT_FOUND).await;
    expect_problem(send_message(app, id(&customer), "r-gone", &body).await, StatusCode::NOT_FOUND).await;
}

/// The log shows what went out: a message sent through crm-hub cannot be rewritten (its command
/// is on its way with the text it had), field by field with pointers; its time is kept to the
/// microsecond, as every stored time; sending back what it holds is taken.
async fn a_sent_message_keeps_what_was_sent(app: &TestApp) {
    let customer = customer(app).await;
    let body = json!({"channel": "email", "subject": "Προσφορά", "body": "Σας στέλνουμε την προσφορά."});
    let entry = expect_json(send_message(app, id(&customer), "r-sent", &body).await, StatusCode::ACCEPTED).await;
    let occurred_at = entry["occurred_at"].as_str().expect("a time");
    let fraction = occurred_at.split('.').nth(1).map_or(0, |f| f.trim_end_matches('Z').len());
    assert!(fraction <= 6, "to the microsecond: {occurred_at}");
    let path = format!("/api/v1/comms/{}", id(&entry));
    let patch = |change: Value| {
        let request = app.client.patch(app.url(&path)).header("content-type", "application/merge-patch+json").body(change.to_string());
        async move { request.send().await.expect("request") }
    };
    for (change, pointer) in [
        (json!({"body": "Άλλη προσφορά."}), "/body"),
        (json!({"subject": "Άλλο θέμα"}), "/subject"),
        (json!({"occurred_at": "2025-01-11T08:30:00Z"}), "/occurred_at"),
    ] {
        let problem = expect_problem(patch(change).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(pointers(&problem), [pointer], "{problem:#}");
    }
    let same = expect_json(patch(json!({"body": body["body"], "occurred_at": occurred_at})).await, StatusCode::OK).await;
    assert_eq!((&same["body"], &same["subject"]), (&body["body"], &body["subject"]));
    assert_eq!(outbox(app).await[0]["data"]["body"], body["body"]);
}
