//! Bus operations over HTTP: connectors and their status from heartbeats, the state of the bus
//! (transport, queues, dead letters waiting, outbox backlog), and dead letters: listed a page at
//! a time, read, discarded, and replayed onto their consumer group's queue (with fixed data or
//! as they were), each only once. A letter's data is shown, and replaced, only by those who
//! may see, and edit, every customer.

use crate::{expect_json, expect_problem, get, get_query, id, item_ids, pointers, post};
use chrono::{Duration, Utc};
use crm_bus::message::{Address, Channel, SendMessage, command_group};
use crm_bus::{Envelope, Exchange, Subscription, Trace};
use crm_domain::access::Role;
use crm_domain::comms::{CommsEntry, DeliveryStatus};
use crm_store::ConnectorInstance;
use crm_tests::TestApp;
use crm_tests::fixtures::{file_dead_letter, received_email};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

crm_tests::api_on_both_backends!(
    connectors_show_their_instances,
    bus_status_counts_queues_dead_letters_and_backlog,
    dead_letters_are_listed_and_discarded_once,
    replay_puts_the_message_back_on_its_queue,
    replaying_a_failed_send_puts_its_entry_back_in_line,
    replays_of_one_dead_letter_at_once_publish_it_once,
    only_those_with_the_connectors_permission,
    dead_letter_data_only_for_those_who_reach_every_customer,
);

fn instance(name: &str, instance: &str, version: &str, state: &str, heard: Duration) -> ConnectorInstance {
    ConnectorInstance {
        name: name.into(),
        instance: instance.into(),
        version: version.into(),
        channel: "email".into(),
        started_at: Utc::now() - Duration::hours(1),
        last_heartbeat: Utc::now() - heard,
        state: state.into(),
        detail: (state == "degraded").then(|| "IMAP login failed".into()),
        in_flight: 2,
        interval_seconds: 30,
    }
}

async fn connectors_show_their_instances(app: &TestApp) {
    let store = &app.db.store;
    for heartbeat in [
        instance("email", "host-a/1", "1.0.0", "ready", Duration::seconds(5)),
        instance("email", "host-b/7", "1.1.0", "ready", Duration::seconds(95)),
        instance("whatsapp", "host-a/2", "0.3.0", "degraded", Duration::seconds(10)),
        instance("sms", "host-c/3", "0.1.0", "stopping", Duration::seconds(1)),
    ] {
        store.record_heartbeat(&heartbeat).await.expect("heartbeat");
    }
    let listed = expect_json(get(app, "/api/v1/connectors").await, StatusCode::OK).await;
    let connectors = listed["items"].as_array().expect("items");
    let names: Vec<&str> = connectors.iter().map(|c| c["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["email", "sms", "whatsapp"]);
    let email = &connectors[0];
    assert_eq!((&email["status"], &email["versions"], &email["channel"]), (&json!("up"), &json!(["1.0.0", "1.1.0"]), &json!("email")));
    let statuses: Vec<(&str, &str)> = email["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| (i["instance"].as_str().unwrap(), i["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [("host-a/1", "up"), ("host-b/7", "lost")], "no heartbeat for three intervals is lost");
    assert_eq!(email["instances"][0]["in_flight"], 2);
    assert_eq!((&connectors[1]["status"], &connectors[1]["instances"][0]["state"]), (&json!("stopping"), &json!("stopping")));
    assert_eq!((&connectors[2]["status"], &connectors[2]["instances"][0]["detail"]), (&json!("degraded"), &json!("IMAP login failed")));
}

async fn bus_status_counts_queues_dead_letters_and_backlog(app: &TestApp) {
    let _subscriber =
        app.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["*.message.received"])).await.expect("subscribe");
    let status = expect_json(get(app, "/api/v1/bus").await, StatusCode::OK).await;
    assert_eq!((&status["transport"], &status["ready"]), (&json!("in-process"), &json!(true)));
    let queues = status["queues"].as_array().expect("queues");
    let core = queues.iter().find(|q| q["group"] == "core.events").unwrap_or_else(|| panic!("no core.events queue: {status:#}"));
    assert_eq!((&core["queue"], &core["consumers"], &core["messages"]), (&json!("crm.core.events"), &json!(1), &json!(0)));
    assert_eq!(status["dead_letters"], json!([]));
    assert_eq!((&status["outbox"]["backlog"], &status["outbox"]["oldest_at"]), (&json!(0), &json!(null)));
    assert_eq!(status["outbox"]["failing"], json!([]));
    assert_eq!(status["held_delivery_reports"], 0);

    // Two dead letters of one group, one of another; a message waiting in the outbox.
    let store = &app.db.store;
    for consumer in ["core.events", "core.events", "connector.email.commands"] {
        file_dead_letter(store, consumer, &received_email("a@example.gr", "x"), "invalid data").await;
    }
    let customer =
        crate::create(app, "/api/v1/customers", &json!({"name": "Στέλιος", "contacts": [{"type": "phone", "value": "694 123 4567"}]}))
            .await;
    let response = post(app, &format!("/api/v1/customers/{}/messages", id(&customer)), &json!({"channel": "sms", "body": "Γεια"})).await;
    expect_json(response, StatusCode::ACCEPTED).await;
    let status = expect_json(get(app, "/api/v1/bus").await, StatusCode::OK).await;
    assert_eq!(
        status["dead_letters"],
        json!([{"consumer": "connector.email.commands", "waiting": 1}, {"consumer": "core.events", "waiting": 2}])
    );
    assert_eq!(status["outbox"]["backlog"], 1);
    // A delivery report for a channel id no entry has yet is held, and counted.
    let held = store.record_delivery(None, Some(("whatsapp", "wamid.early")), crm_domain::comms::DeliveryStatus::Read, None).await.unwrap();
    assert_eq!(held, crm_store::DeliveryRecorded::Held);
    let status = expect_json(get(app, "/api/v1/bus").await, StatusCode::OK).await;
    assert_eq!(status["held_delivery_reports"], 1);
    assert!(status["outbox"]["oldest_age_seconds"].as_i64().is_some_and(|age| (0..60).contains(&age)), "{status:#}");
}

async fn dead_letters_are_listed_and_discarded_once(app: &TestApp) {
    let store = &app.db.store;
    let first = received_email("a@example.gr", "first");
    let first_id = file_dead_letter(store, "core.events", &first, "no customer field").await;
    let second_id = file_dead_letter(store, "core.events", &received_email("b@example.gr", "second"), "invalid").await;
    let third_id = file_dead_letter(store, "connector.email.commands", &received_email("c@example.gr", "third"), "SMTP 550").await;

    // Latest first, a page at a time; filters by status and consumer.
    let page = expect_json(get_query(app, "/api/v1/bus/dead-letters", &[("limit", "2")]).await, StatusCode::OK).await;
    assert_eq!(item_ids(&page), [third_id.to_string(), second_id.to_string()]);
    let cursor = page["next_cursor"].as_str().expect("a next page").to_owned();
    let page = expect_json(get_query(app, "/api/v1/bus/dead-letters", &[("limit", "2"), ("cursor", &cursor)]).await, StatusCode::OK).await;
    assert_eq!(item_ids(&page), [first_id.to_string()]);
    assert!(page["next_cursor"].is_null());
    let page = expect_json(get_query(app, "/api/v1/bus/dead-letters", &[("consumer", "core.events")]).await, StatusCode::OK).await;
    assert_eq!(item_ids(&page), [second_id.to_string(), first_id.to_string()]);
    for (query, pointer) in
        [(("cursor", "nope"), "/cursor"), (("limit", "0"), "/limit"), (("status", "lost"), "/status"), (("colour", "x"), "/colour")]
    {
        let problem = expect_problem(get_query(app, "/api/v1/bus/dead-letters", &[query]).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(pointers(&problem), [pointer]);
    }

    // One dead letter, whole.
    let letter = expect_json(get(app, &format!("/api/v1/bus/dead-letters/{first_id}")).await, StatusCode::OK).await;
    assert_eq!(
        (&letter["consumer"], &letter["status"], &letter["reason"]),
        (&json!("core.events"), &json!("dead"), &json!("no customer field"))
    );
    assert_eq!((&letter["envelope_id"], &letter["event_type"]), (&json!(first.id), &json!("crm.message.received.v1")));
    assert_eq!(letter["envelope"], first.to_structured());
    expect_problem(get(app, &format!("/api/v1/bus/dead-letters/{}", uuid::Uuid::now_v7())).await, StatusCode::NOT_FOUND).await;

    // Discard: once.
    let discarded = expect_json(post(app, &format!("/api/v1/bus/dead-letters/{first_id}/discard"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(discarded["status"], "discarded");
    assert!(discarded["resolved_by"].as_str().is_some_and(|by| by.starts_with("api_key:")), "{discarded:#}");
    assert!(discarded["resolved_at"].is_string());
    let problem =
        expect_problem(post(app, &format!("/api/v1/bus/dead-letters/{first_id}/discard"), &json!({})).await, StatusCode::CONFLICT).await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("discarded")), "{problem:#}");
    expect_problem(post(app, &format!("/api/v1/bus/dead-letters/{first_id}/replay"), &json!({})).await, StatusCode::CONFLICT).await;
    expect_problem(
        post(app, &format!("/api/v1/bus/dead-letters/{}/discard", uuid::Uuid::now_v7()), &json!({})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let page = expect_json(get_query(app, "/api/v1/bus/dead-letters", &[("status", "dead")]).await, StatusCode::OK).await;
    assert_eq!(item_ids(&page), [third_id.to_string(), second_id.to_string()]);
    let page = expect_json(get_query(app, "/api/v1/bus/dead-letters", &[("status", "discarded")]).await, StatusCode::OK).await;
    assert_eq!(item_ids(&page), [first_id.to_string()]);
}

async fn replay_puts_the_message_back_on_its_queue(app: &TestApp) {
    let store = &app.db.store;
    let mut subscriber =
        app.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["*.message.received"])).await.expect("subscribe");
    let broken = received_email("a@example.gr", "broken");
    let broken_id = file_dead_letter(store, "core.events", &broken, "bad sender").await;
    let plain = received_email("b@example.gr", "plain");
    let plain_id = file_dead_letter(store, "core.events", &plain, "store unavailable").await;

    // With fixed data.
    let mut fixed = broken.data_json();
    fixed["subject"] = json!("fixed");
    let path = format!("/api/v1/bus/dead-letters/{broken_id}/replay");
    let problem = expect_problem(post(app, &path, &json!({"data": "not an object"})).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/data"]);
    let replayed = expect_json(post(app, &path, &json!({"data": fixed})).await, StatusCode::OK).await;
    assert_eq!(replayed["status"], "replayed");
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(5), subscriber.next()).await.expect("in time").expect("a delivery");
    assert_eq!((&delivery.envelope.id, &delivery.envelope.kind), (&broken.id, &broken.kind), "the same message");
    assert_eq!(delivery.envelope.data_json(), fixed, "with the fixed data");
    assert_eq!(delivery.envelope.trace.request_id, broken.trace.request_id);
    assert_eq!(delivery.attempt, 1, "replayed as a first attempt");
    delivery.ack().await.expect("ack");
    expect_problem(post(app, &path, &json!({})).await, StatusCode::CONFLICT).await;

    // As it was, with no body at all.
    let response = app.client.post(app.url(&format!("/api/v1/bus/dead-letters/{plain_id}/replay"))).send().await.expect("request");
    expect_json(response, StatusCode::OK).await;
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(5), subscriber.next()).await.expect("in time").expect("a delivery");
    assert_eq!(delivery.envelope.data_json(), plain.data_json());
    delivery.ack().await.expect("ack");

    // A group with no queue on this bus: refused, and the dead letter stays.
    let orphan = file_dead_letter(store, "connector.fax.commands", &received_email("c@example.gr", "x"), "no fax").await;
    let problem =
        expect_problem(post(app, &format!("/api/v1/bus/dead-letters/{orphan}/replay"), &json!({})).await, StatusCode::CONFLICT).await;
    assert_eq!(pointers(&problem), ["/consumer"]);
    let letter = expect_json(get(app, &format!("/api/v1/bus/dead-letters/{orphan}")).await, StatusCode::OK).await;
    assert_eq!(letter["status"], "dead");
    // The refused replay let go of it: ops can discard it at once.
    let discarded = expect_json(post(app, &format!("/api/v1/bus/dead-letters/{orphan}/discard"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(discarded["status"], "discarded");
}

/// Two operators (or a double click) replaying one dead letter at the same moment: one replay
/// publishes it, the others are refused, and its queue gets it once.
async fn replays_of_one_dead_letter_at_once_publish_it_once(app: &TestApp) {
    let mut subscriber =
        app.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["*.message.received"])).await.expect("subscribe");
    let message = received_email("a@example.gr", "twice?");
    let letter = file_dead_letter(&app.db.store, "core.events", &message, "store unavailable").await;
    let path = format!("/api/v1/bus/dead-letters/{letter}/replay");
    let body = json!({});
    let responses = futures::future::join_all((0..8).map(|_| post(app, &path, &body))).await;
    let statuses: Vec<StatusCode> = responses.iter().map(reqwest::Response::status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| [StatusCode::OK, StatusCode::CONFLICT].contains(s)), "{statuses:?}");
    let letter = expect_json(get(app, &format!("/api/v1/bus/dead-letters/{letter}")).await, StatusCode::OK).await;
    assert_eq!(letter["status"], "replayed");

    // Every replay has returned, so whatever they published is in the queue before this marker.
    let marker = received_email("b@example.gr", "marker");
    app.bus.publish(&marker).await.expect("marker published");
    let mut copies = 0;
    loop {
        let delivery =
            tokio::time::timeout(std::time::Duration::from_secs(5), subscriber.next()).await.expect("in time").expect("a delivery");
        let id = delivery.envelope.id.clone();
        delivery.ack().await.expect("ack");
        if id == marker.id {
            break;
        }
        assert_eq!(id, message.id);
        copies += 1;
    }
    assert_eq!(copies, 1, "the dead letter was published once");

    // While a replay holds the lease, another replay and a discard are refused (409 at /status);
    // once it is released, the letter replays.
    let letter = file_dead_letter(&app.db.store, "core.events", &received_email("c@example.gr", "held"), "x").await;
    let lease = app.db.store.lease_dead_letter(letter, Duration::minutes(5)).await.expect("leased");
    for action in ["replay", "discard"] {
        let problem =
            expect_problem(post(app, &format!("/api/v1/bus/dead-letters/{letter}/{action}"), &json!({})).await, StatusCode::CONFLICT).await;
        assert_eq!(pointers(&problem), ["/status"], "{action}: {problem:#}");
        assert!(problem["detail"].as_str().is_some_and(|d| d.contains("being replayed")), "{action}: {problem:#}");
    }
    app.db.store.release_dead_letter(&lease).await.expect("released");
    let replayed = expect_json(post(app, &format!("/api/v1/bus/dead-letters/{letter}/replay"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(replayed["status"], "replayed");
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(5), subscriber.next()).await.expect("in time").expect("a delivery");
    delivery.ack().await.expect("ack");
}

/// A send the keeper failed (its command dead-lettered) is `queued` again once ops replay the
/// command, so the connector's "sent" is not ignored; a replay refused for sure leaves it failed
/// with its reason; discarding the dead letter of a send still queued fails it.
async fn replaying_a_failed_send_puts_its_entry_back_in_line(app: &TestApp) {
    let store = &app.db.store;
    let mut commands =
        app.bus.subscribe(Subscription::new(command_group(Channel::Sms), Exchange::Commands, &["sms.#"])).await.expect("subscribe");
    let customer =
        crate::create(app, "/api/v1/customers", &json!({"name": "Στέλιος", "contacts": [{"type": "phone", "value": "694 123 4567"}]}))
            .await;
    let messages = format!("/api/v1/customers/{}/messages", id(&customer));
    let messages = &messages;
    let failed_send = |consumer: &'static str| async move {
        let response = post(app, messages, &json!({"channel": "sms", "body": "Γεια"})).await;
        let entry_id: Uuid = id(&expect_json(response, StatusCode::ACCEPTED).await).parse().unwrap();
        let command = SendMessage {
            entry_id,
            channel: Channel::Sms,
            to: vec![Address::phone("+306941234567", None)],
            cc: Vec::new(),
            subject: None,
            body: "Γεια".into(),
            body_html: None,
            in_reply_to: None,
            references: Vec::new(),
            attachments: Vec::new(),
        };
        let envelope = Envelope::new("/crm/core", &command, Trace::new("req-send"));
        let reason = format!("dead-lettered by {consumer} after 5 attempts: 400 invalid sender id");
        assert!(store.fail_queued_delivery(entry_id, reason.clone()).await.unwrap(), "queued, so failed");
        (entry_id, file_dead_letter(store, consumer, &envelope, "400 invalid sender id").await, reason)
    };
    let state = |entry_id| async move {
        let data = store.get::<CommsEntry>(entry_id, false).await.unwrap().data;
        (data.delivery_status, data.status_reason)
    };

    let (entry_id, letter, _) = failed_send("connector.sms.commands").await;
    expect_json(post(app, &format!("/api/v1/bus/dead-letters/{letter}/replay"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(state(entry_id).await, (Some(DeliveryStatus::Queued), None));
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(5), commands.next()).await.expect("in time").expect("a delivery");
    assert_eq!(delivery.envelope.decode::<SendMessage>().unwrap().entry_id, entry_id);
    delivery.ack().await.unwrap();
    // The connector's report now counts.
    store.record_delivery(Some(entry_id), Some(("sms", "sms-1")), DeliveryStatus::Sent, None).await.unwrap();
    assert_eq!(state(entry_id).await, (Some(DeliveryStatus::Sent), None));

    // Nobody takes the replay: the entry stays failed, with its reason.
    let (entry_id, letter, reason) = failed_send("connector.fax.commands").await;
    expect_problem(post(app, &format!("/api/v1/bus/dead-letters/{letter}/replay"), &json!({})).await, StatusCode::CONFLICT).await;
    assert_eq!(state(entry_id).await, (Some(DeliveryStatus::Failed), Some(reason)));

    // A replay that may not have gone out leaves the entry queued; discarding the dead letter
    // then fails it for good. Discarding one whose send was reported sent changes nothing.
    let (entry_id, letter, _) = failed_send("connector.sms.commands").await;
    store.requeue_failed_delivery(entry_id).await.unwrap().expect("was failed");
    expect_json(post(app, &format!("/api/v1/bus/dead-letters/{letter}/discard"), &json!({})).await, StatusCode::OK).await;
    let (status, reason) = state(entry_id).await;
    assert_eq!(status, Some(DeliveryStatus::Failed));
    assert!(reason.as_deref().is_some_and(|r| r.starts_with("discarded by ") && r.contains("400 invalid sender id")), "{reason:?}");
    let (entry_id, letter, _) = failed_send("connector.sms.commands").await;
    store.requeue_failed_delivery(entry_id).await.unwrap().expect("was failed");
    store.record_delivery(Some(entry_id), Some(("sms", "sms-3")), DeliveryStatus::Sent, None).await.unwrap();
    expect_json(post(app, &format!("/api/v1/bus/dead-letters/{letter}/discard"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(state(entry_id).await, (Some(DeliveryStatus::Sent), None));
}

async fn only_those_with_the_connectors_permission(app: &TestApp) {
    let letter = file_dead_letter(&app.db.store, "core.events", &received_email("a@example.gr", "x"), "x").await;
    let (_, manager) = app.user(Role::Manager).await;
    for path in [
        "/api/v1/connectors".to_owned(),
        "/api/v1/bus".to_owned(),
        "/api/v1/bus/dead-letters".to_owned(),
        format!("/api/v1/bus/dead-letters/{letter}"),
    ] {
        expect_problem(manager.get(app.url(&path)).send().await.expect("request"), StatusCode::FORBIDDEN).await;
    }
    let response = manager.post(app.url(&format!("/api/v1/bus/dead-letters/{letter}/discard"))).send().await.expect("request");
    expect_problem(response, StatusCode::FORBIDDEN).await;
    let (_, admin) = app.user(Role::Admin).await;
    let response = admin.post(app.url(&format!("/api/v1/bus/dead-letters/{letter}/discard"))).send().await.expect("request");
    let discarded = expect_json(response, StatusCode::OK).await;
    assert!(discarded["resolved_by"].as_str().is_some_and(|by| by.starts_with("user:")), "{discarded:#}");
}

/// A monitoring key with the connectors' permissions alone sees dead letters without their data
/// (any customer's messages, addresses, files) and may replay them only as they were; a key
/// that may also see and edit every customer sees the data and may replace it.
async fn dead_letter_data_only_for_those_who_reach_every_customer(app: &TestApp) {
    // Core's queue, for the replays to land in.
    let _queue = app.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["*.message.received"])).await.expect("subscribe");
    let email = received_email("papas@example.gr", "Η καμπάνα του Αγίου Νικολάου");
    let letter = file_dead_letter(&app.db.store, "core.events", &email, "SMTP 550: refused papas@example.gr").await;
    // A message whose CloudEvents subject is a customer's file.
    let read_file =
        Envelope::new("/crm/core", &crm_bus::message::ReadFile { path: "customers/x/media/σχέδιο.pdf".into() }, Trace::new("r"));
    assert_eq!(read_file.subject.as_deref(), Some("customers/x/media/σχέδιο.pdf"));
    let other = file_dead_letter(&app.db.store, "core.events", &read_file, "no files connector").await;
    let key = |scopes: &[&'static str]| {
        let scopes = scopes.to_vec();
        async move {
            let body = json!({"name": format!("key for {}", scopes.join(" ")), "scopes": scopes});
            let record = expect_json(post(app, "/api/v1/api-keys", &body).await, StatusCode::CREATED).await;
            crm_tests::client_with_token(record["key"].as_str().expect("a key"))
        }
    };
    let monitor = key(&["connectors:view", "connectors:edit"]).await;
    let viewer = key(&["connectors:view", "connectors:edit", "customers:view"]).await;
    let operator = key(&["connectors:view", "connectors:edit", "customers:view", "customers:edit"]).await;
    let read = |client: &reqwest::Client, path: String| {
        let request = client.get(app.url(&path));
        async move { expect_json(request.send().await.expect("request"), StatusCode::OK).await }
    };
    let one = format!("/api/v1/bus/dead-letters/{letter}");

    // Without the data, subject and reason, and saying so; the rest of the envelope stays.
    for shown in [read(&monitor, one.clone()).await, read(&monitor, "/api/v1/bus/dead-letters".into()).await["items"][1].clone()] {
        assert_eq!((&shown["id"], &shown["data_redacted"]), (&json!(letter.to_string()), &json!(true)), "{shown:#}");
        assert!(shown["envelope"].get("data").is_none() && shown["envelope"].get("data_base64").is_none(), "{shown:#}");
        assert!(shown["envelope"].get("subject").is_none(), "{shown:#}");
        assert_eq!((&shown["envelope"]["id"], &shown["consumer"]), (&json!(email.id), &json!("core.events")));
        for secret in ["καμπάνα", "papas@", "refused papas"] {
            assert!(!shown.to_string().contains(secret), "{secret}: {shown:#}");
        }
    }
    let shown = read(&monitor, format!("/api/v1/bus/dead-letters/{other}")).await;
    assert!(shown["envelope"].get("subject").is_none() && !shown.to_string().contains("σχέδιο"), "{shown:#}");
    for client in [&viewer, &operator] {
        let shown = read(client, one.clone()).await;
        assert_eq!((&shown["data_redacted"], &shown["envelope"]), (&json!(false), &email.to_structured()));
        assert_eq!(shown["reason"], "SMTP 550: refused papas@example.gr");
        let shown = read(client, format!("/api/v1/bus/dead-letters/{other}")).await;
        assert_eq!(shown["envelope"]["subject"], "customers/x/media/σχέδιο.pdf");
    }

    // New data only from those who may edit every customer; as it was, from the monitor.
    let replay = |client: &reqwest::Client, id: Uuid, body: serde_json::Value| {
        let request = client.post(app.url(&format!("/api/v1/bus/dead-letters/{id}/replay"))).json(&body);
        async move { request.send().await.expect("request") }
    };
    let fixed = json!({"data": email.data_json()});
    for client in [&monitor, &viewer] {
        let problem = expect_problem(replay(client, letter, fixed.clone()).await, StatusCode::FORBIDDEN).await;
        assert!(problem["detail"].as_str().is_some_and(|d| d.contains("customers:edit")), "{problem:#}");
    }
    let replayed = expect_json(replay(&monitor, other, json!({})).await, StatusCode::OK).await;
    assert_eq!((&replayed["status"], &replayed["data_redacted"]), (&json!("replayed"), &json!(true)));
    assert!(replayed["envelope"].get("data").is_none(), "{replayed:#}");
    let replayed = expect_json(replay(&operator, letter, fixed).await, StatusCode::OK).await;
    assert_eq!((&replayed["status"], &replayed["data_redacted"]), (&json!("replayed"), &json!(false)));
}
