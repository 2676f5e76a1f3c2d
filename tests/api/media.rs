//! The media index over HTTP: metadata of files already in the file store, uploads (a pending
//! record and a `crm.files.file.store.v1` command carrying the exact bytes, written together;
//! over the size cap nothing is written), and a stored file's content, asked of a stand-in for
//! the files connector on the in-process bus (found, missing, and no answer in time).

use crate::{create, create_customer, expect_json, expect_problem, get, get_query, header_value, id, item_ids, pointers, post, send};
use base64::Engine as _;
use crm_bus::message::{Bytes, FileContent, FileRead, ReadFile};
use crm_bus::{Envelope, Exchange, Subscription, Trace};
use crm_domain::access::Role;
use crm_store::FileStored;
use crm_tests::{TestApp, test_api_config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

crm_tests::configured_api_on_both_backends!(
    metadata_list_and_delete => small_uploads,
    uploads_write_the_record_and_the_command_together => small_uploads,
    oversized_uploads_are_refused_and_write_nothing => small_uploads,
    stored_content_comes_from_the_files_connector => small_uploads,
    agents_reach_their_customers_files => small_uploads,
    a_retried_upload_with_its_key_is_stored_once => small_uploads,
    file_transfers_take_turns => one_transfer_at_a_time,
    an_upload_that_does_not_arrive_in_time_is_a_408 => one_transfer_at_a_time,
);

/// One turn each for uploads and downloads, a short wait for it, a read timeout far beyond the
/// test (the download holding the turn is answered only when the test says so), and a second
/// for an upload's body to arrive.
fn one_transfer_at_a_time() -> crm_api::ApiConfig {
    crm_api::ApiConfig {
        max_file_transfers: 1,
        file_transfer_wait: Duration::from_millis(300),
        file_read_timeout: Duration::from_secs(60),
        upload_read_timeout: Duration::from_secs(1),
        ..small_uploads()
    }
}

/// The upload cap of these tests.
const CAP: usize = 4096;

fn small_uploads() -> crm_api::ApiConfig {
    crm_api::ApiConfig { max_upload_bytes: CAP, file_read_timeout: Duration::from_millis(500), ..test_api_config() }
}

/// One part of a `multipart/form-data` body.
enum Part<'a> {
    Text(&'a str, &'a str),
    File { filename: &'a str, content_type: Option<&'a str>, bytes: &'a [u8] },
}

/// A `multipart/form-data` body and its content type.
fn form(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = format!("crm-test-{}", uuid::Uuid::now_v7().simple());
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
            }
            Part::File { filename, content_type, bytes } => {
                body.extend_from_slice(format!("Content-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n").as_bytes());
                if let Some(content_type) = content_type {
                    body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
                }
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(bytes);
                body.extend_from_slice(b"\r\n");
            }
        }
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload_as(app: &TestApp, client: &reqwest::Client, parts: &[Part<'_>]) -> reqwest::Response {
    upload_request(app, client, parts).send().await.expect("request")
}

fn upload_request(app: &TestApp, client: &reqwest::Client, parts: &[Part<'_>]) -> reqwest::RequestBuilder {
    let (content_type, body) = form(parts);
    client.post(app.url("/api/v1/media")).header("content-type", content_type).header("x-request-id", "req-upload").body(body)
}

async fn upload(app: &TestApp, parts: &[Part<'_>]) -> reqwest::Response {
    upload_as(app, &app.client, parts).await
}

async fn outbox(app: &TestApp) -> Vec<Value> {
    let claimed = app.db.store.claim_outbox(100, chrono::Duration::seconds(60)).await.expect("claim outbox");
    claimed.into_iter().map(|m| m.envelope).collect()
}

/// Bytes of every value, so that nothing is lost to a text encoding.
fn every_byte(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 256) as u8).collect()
}

async fn metadata_list_and_delete(app: &TestApp) {
    let customer = create_customer(app, "Στέλιος Μπιμπης").await;
    let other = create_customer(app, "Μαρία Οικονόμου").await;
    let order = create(app, "/api/v1/orders", &json!({"customer_id": id(&customer)})).await;
    let body = json!({
        "customer_id": id(&customer),
        "order_id": id(&order),
        "filename": "σχέδιο.pdf",
        "nextcloud_path": "Customers/Μπιμπης/σχέδιο.pdf",
        "mime_type": "application/pdf",
        "direction": "sent",
        "tags": ["Σχέδια", "σχέδια", "PDF"],
        "status": "stored",
        "uploaded_by": "someone"
    });
    let response = post(app, "/api/v1/media", &body).await;
    let location = header_value(response.headers(), "location").expect("location").to_owned();
    let media = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(location, format!("/api/v1/media/{}", id(&media)));
    assert_eq!((&media["status"], &media["filename"], &media["direction"]), (&json!("external"), &json!("σχέδιο.pdf"), &json!("sent")));
    assert_eq!(media["tags"], json!(["σχέδια", "pdf"]));
    assert!(media["uploaded_by"].as_str().is_some_and(|by| by.starts_with("api_key:")), "read-only fields are ignored: {media:#}");
    assert!(outbox(app).await.is_empty(), "metadata asks nothing of the files connector");
    let theirs = create(app, "/api/v1/media", &json!({"customer_id": id(&other), "filename": "a.jpg", "nextcloud_path": "x/a.jpg"})).await;
    assert_eq!(theirs["mime_type"], "application/octet-stream");

    let refused = [
        (json!({"filename": "a.jpg", "nextcloud_path": "x"}), vec!["/customer_id"]),
        (json!({"customer_id": id(&customer), "filename": "a.jpg"}), vec!["/nextcloud_path"]),
        (
            json!({"customer_id": id(&customer), "filename": "../a.jpg", "nextcloud_path": "x", "mime_type": "jpeg"}),
            vec!["/filename", "/mime_type"],
        ),
        (json!({"customer_id": uuid::Uuid::now_v7(), "filename": "a.jpg", "nextcloud_path": "x"}), vec!["/customer_id"]),
        (json!({"customer_id": id(&customer), "filename": "invoice\u{202E}fdp.exe", "nextcloud_path": "x"}), vec!["/filename"]),
        (json!({"order_id": uuid::Uuid::now_v7(), "filename": "a.jpg", "nextcloud_path": "x"}), vec!["/order_id"]),
        (json!({"customer_id": id(&other), "order_id": id(&order), "filename": "a.jpg", "nextcloud_path": "x"}), vec!["/order_id"]),
    ];
    for (body, expected) in refused {
        let problem = expect_problem(post(app, "/api/v1/media", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(pointers(&problem), expected, "{body}: {problem:#}");
    }
    let problem = expect_problem(
        app.client.post(app.url("/api/v1/media")).header("content-type", "text/plain").body("x").send().await.expect("request"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("multipart/form-data")), "{problem:#}");

    // Listing by customer and by order; media are not edited in place.
    let listed = |query: Vec<(&'static str, String)>| async move {
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        item_ids(&expect_json(get_query(app, "/api/v1/media", &query).await, StatusCode::OK).await)
    };
    assert_eq!(listed(vec![]).await, [id(&theirs), id(&media)]);
    assert_eq!(listed(vec![("customer_id", id(&customer).to_owned())]).await, [id(&media)]);
    assert_eq!(listed(vec![("order_id", id(&order).to_owned())]).await, [id(&media)]);
    assert_eq!(expect_json(get(app, &location).await, StatusCode::OK).await, media);
    expect_problem(send(app, Method::PUT, &location, &media).await, StatusCode::METHOD_NOT_ALLOWED).await;

    // Only metadata: there is no content to give.
    let problem = expect_problem(get(app, &format!("{location}/content")).await, StatusCode::CONFLICT).await;
    assert_eq!(pointers(&problem), ["/status"]);

    // Soft delete and restore.
    let deleted = expect_json(send(app, Method::DELETE, &location, &json!(null)).await, StatusCode::OK).await;
    assert!(deleted["deleted_at"].is_string());
    assert_eq!(listed(vec![("customer_id", id(&customer).to_owned())]).await, Vec::<String>::new());
    expect_problem(get(app, &location).await, StatusCode::NOT_FOUND).await;
    expect_json(post(app, &format!("{location}/restore"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(listed(vec![("customer_id", id(&customer).to_owned())]).await, [id(&media)]);
}

async fn uploads_write_the_record_and_the_command_together(app: &TestApp) {
    let customer = create_customer(app, "Στέλιος Μπιμπης").await;
    let bytes = every_byte(3000);
    let response = upload(
        app,
        &[
            Part::Text("customer_id", id(&customer)),
            Part::File { filename: "καμπάνα.jpg", content_type: Some("image/jpeg"), bytes: &bytes },
            Part::Text("tags", "Καμπαναριό"),
            Part::Text("tags", "βόρειο"),
            Part::Text("direction", "received"),
        ],
    )
    .await;
    let location = header_value(response.headers(), "location").expect("location").to_owned();
    let media = expect_json(response, StatusCode::ACCEPTED).await;
    assert_eq!(location, format!("/api/v1/media/{}", id(&media)));
    assert_eq!(
        (&media["status"], &media["filename"], &media["mime_type"]),
        (&json!("pending"), &json!("καμπάνα.jpg"), &json!("image/jpeg"))
    );
    assert_eq!((&media["size"], &media["direction"], &media["tags"]), (&json!(3000), &json!("received"), &json!(["καμπαναριό", "βόρειο"])));
    assert_eq!(media["customer_id"], json!(id(&customer)));
    assert!(media["uploaded_by"].as_str().is_some_and(|by| by.starts_with("api_key:")));
    tokio::time::timeout(Duration::from_secs(5), app.relay_wakeup.notified()).await.expect("the relay was woken");

    let messages = outbox(app).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let command = &messages[0];
    assert_eq!((&command["type"], &command["crmroutingkey"]), (&json!("crm.files.file.store.v1"), &json!("files.file.store")));
    assert_eq!(command["crmrequestid"], "req-upload");
    let data = &command["data"];
    assert_eq!(data["media_id"], media["id"]);
    assert_eq!(data["path"], json!(format!("customers/{}/media/{}-καμπάνα.jpg", id(&customer), id(&media))));
    assert_eq!(data["mime_type"], "image/jpeg");
    let content = base64::engine::general_purpose::STANDARD.decode(data["content"].as_str().expect("base64 content")).expect("base64");
    assert_eq!(content, bytes, "the command carries the exact bytes");

    // Not stored yet: no content.
    let problem = expect_problem(get(app, &format!("{location}/content")).await, StatusCode::CONFLICT).await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("not stored yet")), "{problem:#}");

    // An order's file, named by a field, typed by default.
    let order = create(app, "/api/v1/orders", &json!({"customer_id": id(&customer)})).await;
    let response = upload(
        app,
        &[
            Part::Text("order_id", id(&order)),
            Part::Text("filename", "τιμολόγιο.bin"),
            Part::File { filename: "x", content_type: None, bytes: b"abc" },
        ],
    )
    .await;
    let media = expect_json(response, StatusCode::ACCEPTED).await;
    assert_eq!(
        (&media["filename"], &media["mime_type"], &media["direction"]),
        (&json!("τιμολόγιο.bin"), &json!("application/octet-stream"), &json!("internal"))
    );
    let messages = outbox(app).await;
    assert_eq!(messages[0]["data"]["path"], json!(format!("orders/{}/media/{}-τιμολόγιο.bin", id(&order), id(&media))));

    // A long name (220 bytes, 257 with the media id) and characters other stores refuse: the
    // stored name is shortened and portable, the record keeps the name.
    let long = format!("?{}.pdf", "λ".repeat(108));
    let response =
        upload(app, &[Part::Text("customer_id", id(&customer)), Part::File { filename: &long, content_type: None, bytes: b"abc" }]).await;
    let media = expect_json(response, StatusCode::ACCEPTED).await;
    assert_eq!(media["filename"], json!(long));
    let messages = outbox(app).await;
    let path = messages[0]["data"]["path"].as_str().expect("a path").to_owned();
    let segment = path.rsplit('/').next().expect("a name");
    assert_eq!(segment, crm_domain::comms::stored_file_name(id(&media), &long));
    assert!(segment.len() <= 255 && segment.starts_with(&format!("{}-_λ", id(&media))) && segment.ends_with("λ.pdf"), "{segment}");

    // Refused forms write nothing.
    let cases: Vec<(Vec<Part<'_>>, Vec<&str>)> = vec![
        (vec![Part::Text("customer_id", id(&customer))], vec!["/file"]),
        (vec![Part::File { filename: "a.jpg", content_type: None, bytes: b"x" }], vec!["/customer_id"]),
        (
            vec![Part::Text("customer_id", "nope"), Part::File { filename: "a.jpg", content_type: None, bytes: b"x" }],
            vec!["/customer_id", "/customer_id"],
        ),
        (
            vec![
                Part::Text("customer_id", id(&customer)),
                Part::Text("colour", "red"),
                Part::File { filename: "../a", content_type: None, bytes: b"x" },
            ],
            vec!["/colour", "/filename"],
        ),
        // Shown as "invoiceexe.pdf": invisible formatting characters are refused.
        (
            vec![
                Part::Text("customer_id", id(&customer)),
                Part::File { filename: "invoice\u{202E}fdp.exe", content_type: None, bytes: b"x" },
            ],
            vec!["/filename"],
        ),
        (
            vec![
                Part::Text("customer_id", id(&customer)),
                Part::Text("filename", "a\u{200B}b.pdf"),
                Part::File { filename: "a.pdf", content_type: None, bytes: b"x" },
            ],
            vec!["/filename"],
        ),
        (
            vec![
                Part::Text("customer_id", id(&customer)),
                Part::Text("direction", "up"),
                Part::File { filename: "a", content_type: None, bytes: b"x" },
            ],
            vec!["/direction"],
        ),
    ];
    for (parts, expected) in cases {
        let problem = expect_problem(upload(app, &parts).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(pointers(&problem), expected, "{problem:#}");
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    let problem = expect_problem(
        upload(app, &[Part::Text("customer_id", &unknown), Part::File { filename: "a", content_type: None, bytes: b"x" }]).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pointers(&problem), ["/customer_id"]);
    assert!(outbox(app).await.is_empty(), "a refused upload wrote a command");
    let page = expect_json(get_query(app, "/api/v1/media", &[("customer_id", id(&customer))]).await, StatusCode::OK).await;
    assert_eq!(item_ids(&page).len(), 2, "only the first and the long-named uploads are indexed for the customer: {page:#}");
}

async fn oversized_uploads_are_refused_and_write_nothing(app: &TestApp) {
    let customer = create_customer(app, "Στέλιος Μπιμπης").await;
    let bytes = every_byte(CAP + 1);
    let response =
        upload(app, &[Part::Text("customer_id", id(&customer)), Part::File { filename: "big.bin", content_type: None, bytes: &bytes }])
            .await;
    let problem = expect_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains(&CAP.to_string())), "{problem:#}");
    // Exactly the cap is fine.
    let response = upload(
        app,
        &[Part::Text("customer_id", id(&customer)), Part::File { filename: "cap.bin", content_type: None, bytes: &bytes[..CAP] }],
    )
    .await;
    let media = expect_json(response, StatusCode::ACCEPTED).await;
    let messages = outbox(app).await;
    assert_eq!(messages.len(), 1, "only the upload within the cap: {messages:#?}");
    assert_eq!(messages[0]["data"]["media_id"], media["id"]);
    let page = expect_json(get(app, "/api/v1/media").await, StatusCode::OK).await;
    assert_eq!(item_ids(&page), [id(&media)]);
    // JSON bodies keep the API's own limit.
    let huge = json!({"customer_id": id(&customer), "filename": "a", "nextcloud_path": "x".repeat(crm_api::MAX_BODY_BYTES)});
    expect_problem(post(app, "/api/v1/media", &huge).await, StatusCode::PAYLOAD_TOO_LARGE).await;
}

/// Answers `ReadFile` requests on the test's bus: `files` says what to answer for each path
/// (the bytes, or a refusal); any other path is missing.
async fn files_connector(app: &TestApp, files: Vec<(String, FileRead)>) -> tokio::task::JoinHandle<()> {
    let subscription = Subscription::new("connector.files.commands", Exchange::Commands, &["files.file.read"]);
    let mut subscriber = app.bus.subscribe(subscription).await.expect("subscribe");
    let bus = app.bus.clone();
    tokio::spawn(async move {
        while let Some(delivery) = subscriber.next().await {
            let request: ReadFile = delivery.envelope.decode().expect("a ReadFile");
            let result = match files.iter().find(|(path, _)| *path == request.path) {
                Some((_, answer)) => answer.clone(),
                None => FileRead::NotFound,
            };
            let reply = Envelope::new(
                "/connectors/files-local/test",
                &FileContent { path: request.path, result },
                Trace::follow(&delivery.envelope),
            );
            bus.reply(&delivery, &reply).await.expect("reply");
            delivery.ack().await.expect("ack");
        }
    })
}

async fn stored_content_comes_from_the_files_connector(app: &TestApp) {
    let customer = create_customer(app, "Στέλιος Μπιμπης").await;
    let bytes = every_byte(1000);
    let upload_file = |name: &'static str| {
        let customer = id(&customer).to_owned();
        let bytes = bytes.clone();
        async move {
            let response = upload(
                app,
                &[Part::Text("customer_id", &customer), Part::File { filename: name, content_type: Some("image/png"), bytes: &bytes }],
            )
            .await;
            expect_json(response, StatusCode::ACCEPTED).await
        }
    };
    let found = upload_file("καμπάνα 1.png").await;
    let missing = upload_file("lost.png").await;
    let failed = upload_file("failed.png").await;
    let changed = upload_file("changed.png").await;
    let refused = upload_file("refused.png").await;
    outbox(app).await;
    let hash: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
    };
    // A pending upload shows where its file goes and the hash of the bytes sent.
    let path_of = |media: &Value| media["nextcloud_path"].as_str().expect("a path").to_owned();
    for media in [&found, &missing, &failed, &changed, &refused] {
        assert_eq!(
            (media["status"].as_str(), media["sha256"].as_str(), media["size"].as_u64()),
            (Some("pending"), Some(hash.as_str()), Some(1000))
        );
        let folder = format!("customers/{}/media/{}-", id(&customer), id(media));
        assert!(path_of(media).starts_with(&folder), "{media:#}");
    }
    let store = &app.db.store;
    for media in [&found, &missing, &changed, &refused] {
        let stored = FileStored::Stored { path: path_of(media), size: 1000, sha256: hash.clone() };
        store.record_file_result(id(media).parse().expect("uuid"), stored).await.expect("record file result");
    }
    let failure = FileStored::Failed { reason: "disk full".into(), path: Some(path_of(&failed)) };
    store.record_file_result(id(&failed).parse().expect("uuid"), failure).await.expect("record file result");

    // Storing failed: the reason.
    let problem = expect_problem(get(app, &format!("/api/v1/media/{}/content", id(&failed))).await, StatusCode::CONFLICT).await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("disk full")), "{problem:#}");

    // No files connector: 503 with Retry-After, at once when nothing is bound for the request.
    let response = get(app, &format!("/api/v1/media/{}/content", id(&found))).await;
    assert!(header_value(response.headers(), "retry-after").is_some(), "{:?}", response.headers());
    expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;

    // The connector answers: the bytes, typed and named, with their hash as ETag.
    // `changed`'s file has other bytes now than when it was stored.
    let other_bytes: Vec<u8> = bytes.iter().rev().copied().collect();
    let found_bytes = |bytes: Vec<u8>| FileRead::Found { content: Bytes(bytes) };
    let refusal = FileRead::Failed { reason: format!("'{}' is a folder", path_of(&refused)) };
    let connector = files_connector(
        app,
        vec![(path_of(&found), found_bytes(bytes.clone())), (path_of(&changed), found_bytes(other_bytes)), (path_of(&refused), refusal)],
    )
    .await;
    let response = get(app, &format!("/api/v1/media/{}/content", id(&found))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(header_value(&headers, "content-type"), Some("image/png"));
    assert_eq!(header_value(&headers, "content-length"), Some("1000"));
    assert_eq!(header_value(&headers, "etag"), Some(format!("\"{hash}\"").as_str()));
    assert_eq!(
        header_value(&headers, "content-disposition"),
        Some("attachment; filename=\"_______ 1.png\"; filename*=UTF-8''%CE%BA%CE%B1%CE%BC%CF%80%CE%AC%CE%BD%CE%B1%201.png")
    );
    assert_eq!(response.bytes().await.expect("body").as_ref(), bytes.as_slice());
    let response = app
        .client
        .get(app.url(&format!("/api/v1/media/{}/content", id(&found))))
        .header("if-none-match", format!("\"{hash}\""))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);

    // The store's bytes are not the ones recorded: not served as the record's.
    let problem = expect_problem(get(app, &format!("/api/v1/media/{}/content", id(&changed))).await, StatusCode::CONFLICT).await;
    assert_eq!(pointers(&problem), ["/sha256"], "{problem:#}");

    // The file store does not have it.
    expect_problem(get(app, &format!("/api/v1/media/{}/content", id(&missing))).await, StatusCode::NOT_FOUND).await;

    // The file store refuses for good: 502 with its reason, and no Retry-After.
    let response = get(app, &format!("/api/v1/media/{}/content", id(&refused))).await;
    assert_eq!(header_value(response.headers(), "retry-after"), None);
    let problem = expect_problem(response, StatusCode::BAD_GATEWAY).await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("is a folder")), "{problem:#}");

    // The connector stops answering: 503 after the configured wait.
    connector.abort();
    let _ = connector.await;
    let started = std::time::Instant::now();
    let response = get(app, &format!("/api/v1/media/{}/content", id(&found))).await;
    assert!(header_value(response.headers(), "retry-after").is_some());
    expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(started.elapsed() >= Duration::from_millis(450), "answered after {:?}", started.elapsed());
}

async fn agents_reach_their_customers_files(app: &TestApp) {
    let (agent_id, agent) = app.user(Role::Agent).await;
    let mine = create(app, "/api/v1/customers", &json!({"name": "Στέλιος", "assigned_to": agent_id})).await;
    let theirs = create_customer(app, "Μαρία").await;
    let my_order = create(app, "/api/v1/orders", &json!({"customer_id": id(&mine)})).await;
    let my_file = create(app, "/api/v1/media", &json!({"customer_id": id(&mine), "filename": "a.jpg", "nextcloud_path": "x/a.jpg"})).await;
    let my_order_file =
        create(app, "/api/v1/media", &json!({"order_id": id(&my_order), "filename": "b.jpg", "nextcloud_path": "x/b.jpg"})).await;
    let their_file =
        create(app, "/api/v1/media", &json!({"customer_id": id(&theirs), "filename": "c.jpg", "nextcloud_path": "x/c.jpg"})).await;

    let page = expect_json(agent.get(app.url("/api/v1/media")).send().await.expect("request"), StatusCode::OK).await;
    assert_eq!(item_ids(&page), [id(&my_order_file), id(&my_file)]);
    let response = agent.get(app.url(&format!("/api/v1/media/{}", id(&my_order_file)))).send().await.expect("request");
    expect_json(response, StatusCode::OK).await;
    let response = agent.get(app.url(&format!("/api/v1/media/{}", id(&their_file)))).send().await.expect("request");
    expect_problem(response, StatusCode::FORBIDDEN).await;
    let response = agent.get(app.url(&format!("/api/v1/media/{}/content", id(&their_file)))).send().await.expect("request");
    expect_problem(response, StatusCode::FORBIDDEN).await;

    // A file of their customer stays theirs when its draft order moves to my customer: neither
    // listed nor readable (the file's own customer decides when it has one).
    let moving = create(app, "/api/v1/orders", &json!({"customer_id": id(&theirs)})).await;
    let their_order_file = create(
        app,
        "/api/v1/media",
        &json!({"customer_id": id(&theirs), "order_id": id(&moving), "filename": "d.jpg", "nextcloud_path": "x/d.jpg"}),
    )
    .await;
    let moved = app
        .client
        .patch(app.url(&format!("/api/v1/orders/{}", id(&moving))))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"customer_id": id(&mine)}).to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(expect_json(moved, StatusCode::OK).await["customer_id"], json!(id(&mine)));
    let page = expect_json(agent.get(app.url("/api/v1/media")).send().await.expect("request"), StatusCode::OK).await;
    assert_eq!(item_ids(&page), [id(&my_order_file), id(&my_file)]);
    let response = agent.get(app.url(&format!("/api/v1/media/{}", id(&their_order_file)))).send().await.expect("request");
    expect_problem(response, StatusCode::FORBIDDEN).await;

    // Uploads only for their own customers.
    let response =
        upload_as(app, &agent, &[Part::Text("customer_id", id(&theirs)), Part::File { filename: "a", content_type: None, bytes: b"x" }])
            .await;
    assert_eq!(pointers(&expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await), ["/customer_id"]);
    let response =
        upload_as(app, &agent, &[Part::Text("customer_id", id(&mine)), Part::File { filename: "a", content_type: None, bytes: b"x" }])
            .await;
    let uploaded = expect_json(response, StatusCode::ACCEPTED).await;
    assert_eq!(uploaded["uploaded_by"], json!(format!("user:{agent_id}")));
    let response = agent.delete(app.url(&format!("/api/v1/media/{}", id(&my_file)))).send().await.expect("request");
    expect_problem(response, StatusCode::FORBIDDEN).await;
}

/// An upload retried with its `Idempotency-Key` after a lost answer gets the first record and
/// writes no second record or command; the same key with other bytes is refused.
async fn a_retried_upload_with_its_key_is_stored_once(app: &TestApp) {
    let customer = create_customer(app, "Στέλιος Μπιμπης").await;
    let bytes = every_byte(1000);
    let parts =
        [Part::Text("customer_id", id(&customer)), Part::File { filename: "καμπάνα.jpg", content_type: Some("image/jpeg"), bytes: &bytes }];
    let keyed = |parts: &[Part<'_>]| upload_request(app, &app.client, parts).header("idempotency-key", "upload-7");
    let first = expect_json(keyed(&parts).send().await.expect("request"), StatusCode::ACCEPTED).await;
    let retry = keyed(&parts).send().await.expect("request");
    assert_eq!(header_value(retry.headers(), "idempotent-replayed"), Some("true"));
    assert_eq!(expect_json(retry, StatusCode::ACCEPTED).await, first);
    assert_eq!(outbox(app).await.len(), 1, "one store command");

    let other_bytes = every_byte(999);
    let other = [
        Part::Text("customer_id", id(&customer)),
        Part::File { filename: "καμπάνα.jpg", content_type: Some("image/jpeg"), bytes: &other_bytes },
    ];
    let problem = expect_problem(keyed(&other).send().await.expect("request"), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/Idempotency-Key"], "{problem:#}");
    let listed = expect_json(get_query(app, "/api/v1/media", &[("customer_id", id(&customer))]).await, StatusCode::OK).await;
    assert_eq!(item_ids(&listed), [id(&first)]);
}

/// Uploads and downloads hold their file in memory, so only so many run at once: with one turn,
/// a download held up by the files connector keeps the next download waiting, and it is told
/// to come back (503, Retry-After) once the wait runs out, never sent on to the connector.
/// Uploads have turns of their own, so one goes through meanwhile. The turn is free again once
/// the download is answered.
async fn file_transfers_take_turns(app: &TestApp) {
    let customer = create_customer(app, "Ιερός Ναός Αγίας Ειρήνης").await;
    let bytes = every_byte(1000);
    let file_part = || Part::File { filename: "καμπάνα.png", content_type: Some("image/png"), bytes: &bytes };
    let media = expect_json(upload(app, &[Part::Text("customer_id", id(&customer)), file_part()]).await, StatusCode::ACCEPTED).await;
    let path = media["nextcloud_path"].as_str().expect("a path").to_owned();
    let stored = FileStored::Stored { path: path.clone(), size: 1000, sha256: media["sha256"].as_str().expect("a hash").to_owned() };
    app.db.store.record_file_result(id(&media).parse().expect("uuid"), stored).await.expect("record file result");

    // A files connector that answers the first read only when told to.
    let subscription = Subscription::new("connector.files.commands", Exchange::Commands, &["files.file.read"]);
    let mut subscriber = app.bus.subscribe(subscription).await.expect("subscribe");
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let connector = {
        let (bus, release, bytes) = (app.bus.clone(), release.clone(), bytes.clone());
        tokio::spawn(async move {
            while let Some(delivery) = subscriber.next().await {
                let request: ReadFile = delivery.envelope.decode().expect("a ReadFile");
                seen_tx.send(request.path.clone()).expect("the test listens");
                release.acquire().await.expect("open").forget();
                let reply = Envelope::new(
                    "/connectors/files-local/test",
                    &FileContent { path: request.path, result: FileRead::Found { content: Bytes(bytes.clone()) } },
                    Trace::follow(&delivery.envelope),
                );
                bus.reply(&delivery, &reply).await.expect("reply");
                delivery.ack().await.expect("ack");
            }
        })
    };
    let content = format!("/api/v1/media/{}/content", id(&media));
    let first = tokio::spawn({
        let (client, url) = (app.client.clone(), app.url(&content));
        async move { client.get(url).send().await.expect("request") }
    });
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), seen.recv()).await.expect("the first read arrives"), Some(path));

    // The one download turn is taken: the next download waits, then is turned away; an upload
    // has its own turn.
    let response = get(app, &content).await;
    assert!(header_value(response.headers(), "retry-after").is_some(), "{:?}", response.headers());
    let problem = expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("too many downloads at once")), "{problem:#}");
    expect_json(upload(app, &[Part::Text("customer_id", id(&customer)), file_part()]).await, StatusCode::ACCEPTED).await;
    assert!(seen.try_recv().is_err(), "the turned-away download never reached the connector");

    // Answered, the first download frees its turn for the next.
    release.add_permits(2);
    let response = first.await.expect("the first download");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.expect("body").as_ref(), bytes.as_slice());
    let response = get(app, &content).await;
    assert_eq!(response.status(), StatusCode::OK);
    expect_json(upload(app, &[Part::Text("customer_id", id(&customer)), file_part()]).await, StatusCode::ACCEPTED).await;
    connector.abort();
}

/// An upload whose body stops arriving (a client gone quiet midway) holds an upload turn only
/// until its deadline: 408, and the next upload gets the turn.
async fn an_upload_that_does_not_arrive_in_time_is_a_408(app: &TestApp) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let customer = create_customer(app, "Ιερός Ναός Αγίου Γεωργίου").await;
    let (content_type, body) =
        form(&[Part::Text("customer_id", id(&customer)), Part::File { filename: "a.bin", content_type: None, bytes: &[1; 100] }]);
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST /api/v1/media HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        app.admin_key,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write the head");
    stream.write_all(&body[..body.len() / 2]).await.expect("write half the body");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buffer)).await.expect("an answer in time").expect("read");
        assert!(n > 0, "closed without an answer: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buffer[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.to_lowercase().contains("application/problem+json"), "{answer}");
    drop(stream);
    expect_json(
        upload(app, &[Part::Text("customer_id", id(&customer)), Part::File { filename: "b.bin", content_type: None, bytes: &[2; 100] }])
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
}
