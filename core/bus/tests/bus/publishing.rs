//! Each message's own outcome: concurrent publishes of a command nobody binds and of one a
//! group binds, per-message outcomes of a batch, and settling deliveries from several tasks at
//! once (requeues racing batch acks).

use crate::support::{Ctx, WAIT, assert_quiet, command, event, recv};
use crm_bus::{BusError, Exchange, Subscription};
use std::collections::BTreeSet;
use std::time::Duration;

/// How many rounds of concurrent publishes: enough for the broker to confirm the two messages of
/// a round together many times over.
const ROUNDS: usize = 300;

pub(crate) async fn concurrent_publishes_each_get_their_own_outcome(ctx: Ctx) {
    let mut sub = ctx.bus.subscribe(Subscription::new("connector.email.commands", Exchange::Commands, &["email.#"])).await.unwrap();
    let mut routed = BTreeSet::new();
    for round in 0..ROUNDS {
        let unroutable = command("sms.message.send", round);
        let routable = command("email.message.send", round);
        routed.insert(routable.id.clone());
        let (a, b) = (ctx.bus.clone(), ctx.bus.clone());
        // On their own tasks (a multi-thread runtime): truly at once, in either order.
        let nobody = tokio::spawn(async move { a.publish(&unroutable).await });
        let somebody = tokio::spawn(async move { b.publish(&routable).await });
        let (nobody, somebody) = if round % 2 == 0 {
            (nobody.await.unwrap(), somebody.await.unwrap())
        } else {
            let somebody = somebody.await.unwrap();
            (nobody.await.unwrap(), somebody)
        };
        assert!(matches!(nobody, Err(BusError::Rejected(_))), "round {round}: a command nobody binds: {nobody:?}");
        assert!(somebody.is_ok(), "round {round}: a command a group binds: {somebody:?}");
    }
    let mut arrived = BTreeSet::new();
    while arrived.len() < ROUNDS {
        let batch = tokio::time::timeout(WAIT, sub.next_batch(100)).await.expect("the routed commands arrive");
        for delivery in &batch {
            assert!(routed.contains(&delivery.envelope.id), "only routed commands arrive");
            assert!(arrived.insert(delivery.envelope.id.clone()), "each once");
        }
        sub.ack_all(batch).await.unwrap();
    }
    assert_quiet(&mut sub).await;
}

pub(crate) async fn publish_each_reports_every_message(ctx: Ctx) {
    let mut sub = ctx.bus.subscribe(Subscription::new("connector.email.commands", Exchange::Commands, &["email.#"])).await.unwrap();
    let mut events = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["#"])).await.unwrap();
    let batch = [
        command("email.message.send", 1),
        command("sms.message.send", 2),
        event("email.message.received", 3),
        command("email.#", 4),
        command("email.message.send", 5),
    ];
    let outcomes = ctx.bus.publish_each(&batch).await;
    assert_eq!(outcomes.len(), batch.len());
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(matches!(outcomes[1], Err(BusError::Rejected(_))), "{:?}", outcomes[1]);
    assert!(outcomes[2].is_ok(), "{:?}", outcomes[2]);
    assert!(matches!(outcomes[3], Err(BusError::Invalid(_))), "{:?}", outcomes[3]);
    assert!(outcomes[4].is_ok(), "{:?}", outcomes[4]);
    for expected in [&batch[0], &batch[4]] {
        let d = recv(&mut sub).await;
        assert_eq!(&d.envelope, expected);
        d.ack().await.unwrap();
    }
    let d = recv(&mut events).await;
    assert_eq!(d.envelope, batch[2]);
    d.ack().await.unwrap();
    assert_quiet(&mut sub).await;
    // `publish_all` is the same with the first error.
    let err = ctx.bus.publish_all(&batch[..2]).await.unwrap_err();
    assert!(matches!(err, BusError::Rejected(_)), "{err:?}");
    assert_eq!(recv(&mut sub).await.envelope, batch[0]);
}

/// Requeues on other tasks race batch acks of the same subscriber: every message is still acked
/// in the end, and every settle succeeds (a `multiple` ack that covered a delivery being
/// requeued would lose it, and make the late nack close the channel).
pub(crate) async fn requeues_racing_batch_acks_lose_nothing(ctx: Ctx) {
    const COUNT: usize = 2_000;
    let mut sub = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["#"]).with_prefetch(40)).await.unwrap();
    let sent: Vec<_> = (0..COUNT).map(|n| event("email.message.received", n)).collect();
    for chunk in sent.chunks(500) {
        ctx.bus.publish_all(chunk).await.unwrap();
    }
    let mut acked = BTreeSet::new();
    let mut requeued = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while acked.len() < COUNT {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {COUNT} acked", acked.len());
        let batch = tokio::time::timeout(WAIT, sub.next_batch(40)).await.expect("deliveries keep coming");
        assert!(!batch.is_empty());
        let (mut give_back, mut keep) = (Vec::new(), Vec::new());
        for (i, delivery) in batch.into_iter().enumerate() {
            // The oldest of a batch is given back now and then: a batch ack of the rest is then
            // a `multiple` ack only when that nack has gone out first.
            if i % 3 == 0 && requeued.insert(delivery.envelope.id.clone()) {
                give_back.push(delivery);
            } else {
                keep.push(delivery);
            }
        }
        let ids: Vec<String> = keep.iter().map(|d| d.envelope.id.clone()).collect();
        let requeues: Vec<_> = give_back.into_iter().map(|d| tokio::spawn(d.requeue())).collect();
        sub.ack_all(keep).await.expect("a batch ack");
        for requeue in requeues {
            requeue.await.unwrap().expect("a requeue");
        }
        for id in ids {
            assert!(acked.insert(id), "a message acked twice");
        }
    }
    assert_quiet(&mut sub).await;
}
