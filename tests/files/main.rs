//! Files through the files connector, end to end: a file uploaded over the HTTP API and an
//! attachment of an inbound message are stored by the local files connector and come back
//! byte-identical from `GET /api/v1/media/{id}/content`. On RabbitMQ the connector is the real
//! `crm-connector-files-local` process; on the in-process bus it runs as a task, as inside
//! `crm serve`. Long names (up to the 255 bytes a name may have), names with characters other
//! file stores refuse and names with invisible formatting characters are stored too: under a
//! shortened, portable name, while the record keeps the name to show.

use chrono::Utc;
use crm_bus::message::{Address, Bytes, Channel, InboundAttachment, MessageReceived};
use crm_bus::{Envelope, Trace};
use crm_domain::comms::{CommsEntry, Media, MediaStatus};
use crm_domain::contact::Region;
use crm_hub::{Hub, HubConfig, NativeMatcher};
use crm_tests::bus::{TestBus, Transport, amqp_url, wait_until};
use crm_tests::http::{expect_json, id};
use crm_tests::processes::{self, ConnectorProcess};
use crm_tests::{Backend, TestApp, TestDb, test_api_config};
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

/// Bytes that would show any re-encoding: every byte value, then pseudo-random noise.
fn payload(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..=255u8)
        .chain((0..len).map(move |_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        }))
        .collect()
}

enum Connector {
    Process(ConnectorProcess),
    Task(tokio::task::JoinHandle<anyhow::Result<()>>, crm_connector::CancellationToken),
}

async fn files_come_back_byte_identical(transport: Transport, backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let Some(bus) = TestBus::new(transport).await else { return };
    let wakeup = Arc::new(Notify::new());
    let app = TestApp::spawn_customized(db, test_api_config(), {
        let (bus, wakeup) = (bus.bus.clone(), wakeup.clone());
        move |state| state.with_bus(bus).with_relay_wakeup(wakeup)
    })
    .await;
    let hub = Hub::start(app.db.store.clone(), bus.bus.clone(), Arc::new(NativeMatcher::new(Region::GR)), HubConfig::default(), wakeup)
        .await
        .expect("hub starts");
    let data_dir = std::env::temp_dir().join(format!("crm-files-{}", Uuid::now_v7()));
    let connector = match transport {
        Transport::RabbitMq => Connector::Process(processes::files_local(&amqp_url(), &bus.config.prefix, &data_dir, "files-e2e")),
        Transport::InProcess => {
            let config = crm_connector_files_local::FilesLocalConfig { data_dir: data_dir.clone(), ..Default::default() };
            let files = crm_connector_files_local::FilesLocal::new(config).expect("files connector");
            let stop = crm_connector::CancellationToken::new();
            Connector::Task(crm_connector::spawn(files, bus.bus.clone(), stop.clone()), stop)
        }
    };

    let customer = app
        .client
        .post(app.url("/api/v1/customers"))
        .json(&serde_json::json!({"name": "Ιερά Μονή Βατοπαιδίου", "contacts": [{"type": "email", "value": "monh@example.gr"}]}))
        .send()
        .await
        .unwrap();
    let customer = expect_json(customer, StatusCode::CREATED).await;
    let customer_id = id(&customer).to_owned();

    // An upload over the API: 228 bytes of name, 265 with the media id before it, and a ':'.
    let uploaded = payload(300_000, 7);
    let upload_name = format!("σχέδιο: {}.bin", "λ".repeat(105));
    let form = reqwest::multipart::Form::new().text("customer_id", customer_id.clone()).part(
        "file",
        reqwest::multipart::Part::bytes(uploaded.clone()).file_name(upload_name.clone()).mime_str("application/octet-stream").unwrap(),
    );
    let response = app.client.post(app.url("/api/v1/media")).multipart(form).send().await.unwrap();
    let media = expect_json(response, StatusCode::ACCEPTED).await;
    assert_eq!(media["filename"], upload_name.as_str());
    let upload_id: Uuid = id(&media).parse().unwrap();

    // An attachment of an inbound message.
    let attached = payload(120_000, 11);
    let message = MessageReceived {
        channel: Channel::Email,
        channel_message_id: "<with-attachment@example.gr>".into(),
        from: Address::email("monh@example.gr", None),
        to: Vec::new(),
        cc: Vec::new(),
        subject: Some("Φωτογραφίες".into()),
        body: "Σας στέλνουμε τις φωτογραφίες.".into(),
        occurred_at: Utc::now(),
        in_reply_to: None,
        references: Vec::new(),
        auto_reply: false,
        attachments: vec![
            InboundAttachment {
                filename: "καμπάνα.jpg".into(),
                mime_type: "image/jpeg".into(),
                size: attached.len() as u64,
                content: Some(Bytes(attached.clone())),
                refused: None,
            },
            // 254 bytes once the right-to-left override is taken out: 256 with "2-".
            InboundAttachment {
                filename: format!("{}\u{202E}.jpg", "λ".repeat(125)),
                mime_type: "image/jpeg".into(),
                size: 3,
                content: Some(Bytes(b"abc".to_vec())),
                refused: None,
            },
        ],
    };
    bus.bus.publish(&Envelope::new("/connectors/email/e2e", &message, Trace::new("req-attachment"))).await.unwrap();
    let store = &app.db.store;
    wait_until("the message logged", WAIT, || async {
        store
            .list::<CommsEntry>(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.data.ext_message_id.as_deref() == Some("<with-attachment@example.gr>"))
    })
    .await;
    let logged =
        store.list::<CommsEntry>(&Default::default()).await.unwrap().items.into_iter().find(|e| !e.data.attachments.is_empty()).unwrap();
    let attachment_id = logged.data.attachments[0].media_id.expect("the attachment has a media record");
    let long_id = logged.data.attachments[1].media_id.expect("the attachment has a media record");
    let long_name = format!("{}.jpg", "λ".repeat(125));
    assert_eq!(logged.data.attachments[1].filename, long_name, "the real name, without the invisible character");

    for media_id in [upload_id, attachment_id, long_id] {
        wait_until("the file stored", WAIT, || async {
            store.get::<Media>(media_id, false).await.unwrap().data.status == MediaStatus::Stored
        })
        .await;
    }
    let entry = store.get::<CommsEntry>(logged.id, false).await.unwrap();
    let path = entry.data.attachments[0].nextcloud_path.clone().expect("the entry knows where its attachment is");
    assert!(path.starts_with(&format!("customers/{customer_id}/")), "{path}");

    for (media_id, bytes, mime) in [(upload_id, &uploaded, "application/octet-stream"), (attachment_id, &attached, "image/jpeg")] {
        let response = app.client.get(app.url(&format!("/api/v1/media/{media_id}/content"))).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], mime);
        let body = response.bytes().await.unwrap();
        assert!(body.as_ref() == bytes.as_slice(), "{media_id}: {} bytes back for {} sent", body.len(), bytes.len());
    }
    // And the bytes on disk are the connector's, under the recorded path.
    let on_disk = std::fs::read(data_dir.join(&path)).expect("the file is where the log says");
    assert!(on_disk == attached);

    // Long names: stored under a shortened, portable name; the record keeps the name to show.
    for (media_id, name) in [(upload_id, &upload_name), (long_id, &long_name)] {
        let media = store.get::<Media>(media_id, false).await.unwrap().data;
        assert_eq!(&media.filename, name);
        let path = media.nextcloud_path.expect("a stored path");
        let segment = path.rsplit('/').next().unwrap();
        assert!(segment.len() <= 255 && !segment.contains(':'), "{segment}");
        let prefix = if media_id == upload_id { format!("{upload_id}-σχέδιο_ λλλ") } else { "2-λλλ".to_owned() };
        assert!(segment.starts_with(&prefix) && segment.ends_with(&name[name.len() - 4..]), "{segment}");
        assert!(data_dir.join(&path).is_file(), "{path}");
    }
    let response = app.client.get(app.url(&format!("/api/v1/media/{long_id}/content"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let disposition = response.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.ends_with(&format!("{}.jpg", "%CE%BB".repeat(125))), "{disposition}");
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"abc");

    match connector {
        Connector::Process(process) => drop(process),
        Connector::Task(task, stop) => {
            stop.cancel();
            task.await.unwrap().unwrap();
        }
    }
    hub.shutdown().await;
    bus.cleanup().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_files_come_back_byte_identical() {
    files_come_back_byte_identical(Transport::InProcess, Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_files_come_back_byte_identical() {
    files_come_back_byte_identical(Transport::RabbitMq, Backend::Postgres).await;
}
