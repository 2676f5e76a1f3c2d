//! Retry with backoff, dead letters and replay.

use crate::support::{Ctx, assert_quiet, event, recv};
use crm_bus::{BusError, DEAD_LETTER_GROUP, Exchange, Subscription};

pub(crate) async fn retry_backs_off_then_dead_letters_with_reason_and_attempts(ctx: Ctx) {
    let mut sub = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["#"])).await.unwrap();
    let sent = event("email.message.received", 1);
    ctx.bus.publish(&sent).await.unwrap();
    // max_attempts 3 (see support::test_config).
    for attempt in 1..=3 {
        let d = recv(&mut sub).await;
        assert_eq!(d.envelope, sent, "a retried message is the same message");
        assert_eq!(d.attempt, attempt);
        assert!(!d.redelivered);
        d.retry(&format!("store down ({attempt})")).await.unwrap();
    }
    assert_quiet(&mut sub).await;

    let mut dead = ctx.bus.dead_letters().await.unwrap();
    let d = recv(&mut dead).await;
    assert_eq!(d.envelope, sent, "the dead letter keeps the envelope");
    assert_eq!(d.group(), DEAD_LETTER_GROUP);
    let info = d.dead.clone().expect("dead info");
    assert_eq!(info.group, "core.events");
    assert_eq!(info.reason, "store down (3)");
    assert_eq!(info.attempts, 3);
    assert!(info.dead_at <= chrono::Utc::now());
    assert_eq!(d.attempt, 3);
    d.ack().await.unwrap();
    assert_quiet(&mut dead).await;
}

pub(crate) async fn dead_letter_goes_straight_to_the_dead_letter_queue(ctx: Ctx) {
    let mut sub = ctx.bus.subscribe(Subscription::new("connector.files.commands", Exchange::Commands, &["files.#"])).await.unwrap();
    let sent = crate::support::command("files.folder.ensure", 1);
    ctx.bus.publish(&sent).await.unwrap();
    recv(&mut sub).await.dead_letter("path is not relative").await.unwrap();
    assert_quiet(&mut sub).await;

    let mut dead = ctx.bus.dead_letters().await.unwrap();
    let d = recv(&mut dead).await;
    assert_eq!(d.envelope, sent);
    let info = d.dead.clone().unwrap();
    assert_eq!((info.group.as_str(), info.reason.as_str(), info.attempts), ("connector.files.commands", "path is not relative", 1));
    d.ack().await.unwrap();
    let bus = ctx.bus.clone();
    crate::support::wait_until("the dead-letter queue is empty", crate::support::WAIT, || async {
        crate::support::queue_figures(&bus, DEAD_LETTER_GROUP).await.is_some_and(|(ready, _)| ready == 0)
    })
    .await;
}

pub(crate) async fn replay_puts_a_dead_letter_back_into_its_group(ctx: Ctx) {
    let mut sub = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["#"])).await.unwrap();
    let sent = event("call.completed", 1);
    ctx.bus.publish(&sent).await.unwrap();
    let first = recv(&mut sub).await;
    first.retry("flaky").await.unwrap();
    recv(&mut sub).await.dead_letter("gave up").await.unwrap();

    let mut dead = ctx.bus.dead_letters().await.unwrap();
    let d = recv(&mut dead).await;
    let info = d.dead.clone().unwrap();
    assert_eq!(info.attempts, 2);
    ctx.bus.replay(&info.group, &d.envelope).await.unwrap();
    d.ack().await.unwrap();

    let replayed = recv(&mut sub).await;
    assert_eq!(replayed.envelope, sent, "the replayed message is the original");
    assert_eq!(replayed.attempt, 1, "replay resets the attempts");
    assert!(replayed.dead.is_none());
    replayed.ack().await.unwrap();
    assert_quiet(&mut sub).await;
    assert_quiet(&mut dead).await;

    let err = ctx.bus.replay("nobody.here", &sent).await.unwrap_err();
    assert!(matches!(err, BusError::Invalid(_)), "{err:?}");
}

pub(crate) async fn dead_letters_cannot_be_retried(ctx: Ctx) {
    let mut sub = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["#"])).await.unwrap();
    ctx.bus.publish(&event("call.completed", 1)).await.unwrap();
    recv(&mut sub).await.dead_letter("bad").await.unwrap();
    let mut dead = ctx.bus.dead_letters().await.unwrap();
    let d = recv(&mut dead).await;
    let id = d.envelope.id.clone();
    assert!(matches!(d.retry("again").await, Err(BusError::Invalid(_))));
    // It went back to the dead-letter queue.
    let again = recv(&mut dead).await;
    assert_eq!(again.envelope.id, id);
    assert!(again.redelivered);
    again.ack().await.unwrap();
}
