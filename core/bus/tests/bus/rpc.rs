//! Request and reply.

use crate::support::{Ctx, command, event, recv};
use crm_bus::{BusError, Exchange, Subscription};
use std::time::Duration;

pub(crate) async fn request_gets_the_reply(ctx: Ctx) {
    let mut server = ctx.bus.subscribe(Subscription::new("connector.files.commands", Exchange::Commands, &["files.#"])).await.unwrap();
    let bus = ctx.bus.clone();
    let responder = tokio::spawn(async move {
        for n in 0..3 {
            let request = recv(&mut server).await;
            assert!(request.is_request());
            let mut reply = event("files.file.content", 100 + n);
            reply.data = request.envelope.data.clone();
            reply.subject = Some(request.envelope.id.clone());
            bus.reply(&request, &reply).await.unwrap();
            request.ack().await.unwrap();
        }
        server
    });
    for n in 0..3 {
        let request = command("files.file.read", n);
        let reply = ctx.bus.request(&request, crate::support::WAIT).await.unwrap();
        assert_eq!(reply.subject.as_deref(), Some(request.id.as_str()), "each request gets its own reply");
        assert_eq!(reply.data, request.data);
        assert_eq!(reply.exchange, Exchange::Events);
        assert_eq!(reply.routing_key, "files.file.content");
        assert_eq!(reply.kind, "crm.test.ping.v1");
    }
    let mut server = responder.await.unwrap();

    // A plain command is not a request, and cannot be replied to.
    ctx.bus.publish(&command("files.folder.ensure", 9)).await.unwrap();
    let plain = recv(&mut server).await;
    assert!(!plain.is_request());
    assert!(matches!(ctx.bus.reply(&plain, &event("files.file.content", 9)).await, Err(BusError::Invalid(_))));
    plain.ack().await.unwrap();
}

pub(crate) async fn request_without_a_queue_is_rejected_and_without_a_reply_times_out(ctx: Ctx) {
    let err = ctx.bus.request(&command("files.file.read", 1), Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(err, BusError::Rejected(_)), "{err:?}");

    let mut server = ctx.bus.subscribe(Subscription::new("connector.files.commands", Exchange::Commands, &["files.#"])).await.unwrap();
    let err = ctx.bus.request(&command("files.file.read", 2), Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, BusError::Timeout(_)), "{err:?}");
    // A late reply to a requester that gave up is dropped without an error.
    let late = recv(&mut server).await;
    ctx.bus.reply(&late, &event("files.file.content", 2)).await.unwrap();
    late.ack().await.unwrap();
}
