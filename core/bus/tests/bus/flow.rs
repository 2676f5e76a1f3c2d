//! Publishing, routing, competing consumers, prefetch, redelivery, batch acks, queue stats.

use crate::support::{Ctx, QUIET, WAIT, assert_quiet, command, event, queue_figures, recv, wait_until};
use crm_bus::{BusError, Exchange, Subscription};
use std::collections::BTreeSet;

pub(crate) async fn publish_and_consume_with_topic_bindings(ctx: Ctx) {
    assert_eq!(ctx.bus.transport(), if ctx.is_rabbit() { "rabbitmq" } else { "in-process" });
    assert!(ctx.bus.is_ready().await);
    let mut sub = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["email.#", "*.message.status"])).await.unwrap();
    let wanted = [event("email.message.received", 1), event("sms.message.status", 2)];
    ctx.bus.publish(&event("call.completed", 3)).await.unwrap();
    ctx.bus.publish(&wanted[0]).await.unwrap();
    ctx.bus.publish(&event("sms.message.received", 4)).await.unwrap();
    ctx.bus.publish(&wanted[1]).await.unwrap();
    // A command with the same routing key is on the other exchange.
    assert!(matches!(ctx.bus.publish(&command("email.message.received", 5)).await, Err(BusError::Rejected(_))));

    for expected in &wanted {
        let delivery = recv(&mut sub).await;
        assert_eq!(&delivery.envelope, expected, "the envelope arrives as it was sent");
        assert_eq!(delivery.attempt, 1);
        assert!(!delivery.redelivered);
        assert!(delivery.dead.is_none());
        assert!(!delivery.is_request());
        assert_eq!(delivery.group(), "core.events");
        delivery.ack().await.unwrap();
    }
    assert_quiet(&mut sub).await;
}

pub(crate) async fn competing_consumers_get_distinct_messages(ctx: Ctx) {
    let subscription = Subscription::new("core.events", Exchange::Events, &["#"]).with_prefetch(1);
    let mut a = ctx.bus.subscribe(subscription.clone()).await.unwrap();
    let mut b = ctx.bus.subscribe(subscription).await.unwrap();
    let sent: Vec<_> = (0..20).map(|n| event("email.message.received", n)).collect();
    ctx.bus.publish_all(&sent).await.unwrap();

    // `a` holds one unacknowledged with prefetch 1, so the next one must go to `b`.
    let first_a = recv(&mut a).await;
    let first_b = recv(&mut b).await;
    assert_ne!(first_a.envelope.id, first_b.envelope.id);
    let mut seen = vec![first_a.envelope.id.clone(), first_b.envelope.id.clone()];
    first_a.ack().await.unwrap();
    first_b.ack().await.unwrap();
    let (mut from_a, mut from_b) = (1, 1);
    while seen.len() < sent.len() {
        tokio::select! {
            Some(d) = a.next() => { from_a += 1; seen.push(d.envelope.id.clone()); d.ack().await.unwrap(); }
            Some(d) = b.next() => { from_b += 1; seen.push(d.envelope.id.clone()); d.ack().await.unwrap(); }
            () = tokio::time::sleep(WAIT) => panic!("only {} of {} delivered", seen.len(), sent.len()),
        }
    }
    let distinct: BTreeSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), sent.len(), "no message delivered twice");
    assert_eq!(distinct, sent.iter().map(|e| &e.id).collect());
    assert!(from_a >= 1 && from_b >= 1);
    assert_quiet(&mut a).await;
    assert_quiet(&mut b).await;
}

pub(crate) async fn every_group_gets_every_message(ctx: Ctx) {
    let mut core = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["email.#"])).await.unwrap();
    let mut audit = ctx.bus.subscribe(Subscription::new("audit.events", Exchange::Events, &["#"])).await.unwrap();
    let sent: Vec<_> = (0..5).map(|n| event("email.message.received", n)).collect();
    ctx.bus.publish_all(&sent).await.unwrap();
    for sub in [&mut core, &mut audit] {
        let mut got = BTreeSet::new();
        for _ in 0..sent.len() {
            let d = recv(sub).await;
            got.insert(d.envelope.id.clone());
            d.ack().await.unwrap();
        }
        assert_eq!(got, sent.iter().map(|e| e.id.clone()).collect());
        assert_quiet(sub).await;
    }
}

pub(crate) async fn prefetch_bounds_unacked_deliveries(ctx: Ctx) {
    let mut sub = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["#"]).with_prefetch(3)).await.unwrap();
    let sent: Vec<_> = (0..10).map(|n| event("call.completed", n)).collect();
    ctx.bus.publish_all(&sent).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(recv(&mut sub).await);
    }
    assert_quiet(&mut sub).await;
    let bus = ctx.bus.clone();
    wait_until("7 messages wait in the queue", WAIT, || async { queue_figures(&bus, "core.events").await == Some((7, 1)) }).await;
    held.remove(0).ack().await.unwrap();
    held.push(recv(&mut sub).await);
    assert_quiet(&mut sub).await;
    for d in held {
        d.ack().await.unwrap();
    }
    for _ in 0..6 {
        recv(&mut sub).await.ack().await.unwrap();
    }
    assert_quiet(&mut sub).await;
}

pub(crate) async fn dropped_subscriber_gives_its_deliveries_back(ctx: Ctx) {
    let subscription = Subscription::new("core.events", Exchange::Events, &["#"]);
    let mut first = ctx.bus.subscribe(subscription.clone()).await.unwrap();
    let sent = [event("email.message.received", 1), event("email.message.received", 2)];
    ctx.bus.publish_all(&sent).await.unwrap();
    let a = recv(&mut first).await;
    let b = recv(&mut first).await;
    assert!(!a.redelivered && !b.redelivered);
    a.ack().await.unwrap();
    // `b` is dropped unacknowledged with its subscriber.
    drop(first);
    let acked_late = b.ack().await;
    assert!(acked_late.is_err(), "a delivery of a dropped subscriber cannot be acked");

    let mut second = ctx.bus.subscribe(subscription).await.unwrap();
    let again = recv(&mut second).await;
    assert_eq!(again.envelope, sent[1]);
    assert!(again.redelivered);
    assert_eq!(again.attempt, 1, "a redelivery is not a retry");
    again.ack().await.unwrap();
    assert_quiet(&mut second).await;
}

pub(crate) async fn requeue_redelivers_without_counting_an_attempt(ctx: Ctx) {
    let mut sub = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["#"])).await.unwrap();
    let sent = event("email.message.received", 1);
    ctx.bus.publish(&sent).await.unwrap();
    let first = recv(&mut sub).await;
    first.requeue().await.unwrap();
    let again = recv(&mut sub).await;
    assert_eq!(again.envelope, sent);
    assert!(again.redelivered);
    assert_eq!(again.attempt, 1);
    again.ack().await.unwrap();
    assert_quiet(&mut sub).await;
}

pub(crate) async fn ack_all_acknowledges_batches(ctx: Ctx) {
    let subscription = Subscription::new("core.events", Exchange::Events, &["#"]).with_prefetch(50);
    let mut sub = ctx.bus.subscribe(subscription.clone()).await.unwrap();
    let sent: Vec<_> = (0..120).map(|n| event("email.message.received", n)).collect();
    ctx.bus.publish_all(&sent).await.unwrap();

    let mut seen = BTreeSet::new();
    let mut round = 0;
    while seen.len() < sent.len() {
        let batch = tokio::time::timeout(WAIT, sub.next_batch(40)).await.expect("a batch");
        assert!(!batch.is_empty() && batch.len() <= 40);
        seen.extend(batch.iter().map(|d| d.envelope.id.clone()));
        round += 1;
        if round % 2 == 0 && batch.len() > 2 {
            // Not contiguous any more: settle one in the middle first.
            let mut batch = batch;
            batch.remove(1).ack().await.unwrap();
            sub.ack_all(batch).await.unwrap();
        } else {
            sub.ack_all(batch).await.unwrap();
        }
    }
    assert_eq!(seen, sent.iter().map(|e| e.id.clone()).collect());
    // Everything was acknowledged: a new subscriber of the group gets nothing back.
    drop(sub);
    let mut again = ctx.bus.subscribe(subscription).await.unwrap();
    assert_quiet(&mut again).await;
    let bus = ctx.bus.clone();
    wait_until("the group queue is empty", WAIT, || async { queue_figures(&bus, "core.events").await == Some((0, 1)) }).await;
}

pub(crate) async fn queue_stats_count_ready_messages_and_consumers(ctx: Ctx) {
    let stats = ctx.bus.queue_stats().await.unwrap();
    assert_eq!(stats.len(), 1, "only the dead-letter queue so far: {stats:?}");
    assert_eq!(stats[0].group, crm_bus::DEAD_LETTER_GROUP);
    assert_eq!(stats[0].queue, format!("{}.dead-letters", ctx.prefix));

    let sub =
        ctx.bus.subscribe(Subscription::new("connector.files.commands", Exchange::Commands, &["files.#"]).with_prefetch(1)).await.unwrap();
    let sent: Vec<_> = (0..5).map(|n| command("files.folder.ensure", n)).collect();
    ctx.bus.publish_all(&sent).await.unwrap();
    let bus = ctx.bus.clone();
    // One is with the subscriber (prefetch 1), four are ready.
    wait_until("4 ready, 1 consumer", WAIT, || async { queue_figures(&bus, "connector.files.commands").await == Some((4, 1)) }).await;
    let stats = ctx.bus.queue_stats().await.unwrap();
    let files = stats.iter().find(|s| s.group == "connector.files.commands").unwrap();
    assert_eq!(files.queue, format!("{}.connector.files.commands", ctx.prefix));
    drop(sub);
    wait_until("5 ready, no consumer", WAIT, || async { queue_figures(&bus, "connector.files.commands").await == Some((5, 0)) }).await;
    tokio::time::sleep(QUIET).await;
}

pub(crate) async fn commands_nobody_binds_are_rejected(ctx: Ctx) {
    // Events nobody binds are dropped: facts nobody asked for.
    ctx.bus.publish(&event("email.message.received", 1)).await.unwrap();
    let err = ctx.bus.publish(&command("email.message.send", 2)).await.unwrap_err();
    assert!(matches!(err, BusError::Rejected(_)), "{err:?}");
    let mut sub = ctx.bus.subscribe(Subscription::new("connector.email.commands", Exchange::Commands, &["email.#"])).await.unwrap();
    let third = command("email.message.send", 3);
    ctx.bus.publish(&third).await.unwrap();
    // In a batch, the others are still published and the first error is reported.
    let fifth = command("email.message.send", 5);
    let err = ctx.bus.publish_all(&[command("sms.message.send", 4), fifth.clone()]).await.unwrap_err();
    assert!(matches!(err, BusError::Rejected(_)), "{err:?}");
    for expected in [third, fifth] {
        let d = recv(&mut sub).await;
        assert_eq!(d.envelope, expected);
        d.ack().await.unwrap();
    }
    assert_quiet(&mut sub).await;
    assert!(matches!(ctx.bus.subscribe(Subscription::new("bad group!", Exchange::Events, &["#"])).await, Err(BusError::Invalid(_))));
    assert!(matches!(ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["a..b"])).await, Err(BusError::Invalid(_))));
}

pub(crate) async fn close_ends_subscribers_and_refuses_publishing(ctx: Ctx) {
    let mut sub = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["#"])).await.unwrap();
    let sent = event("email.message.received", 1);
    ctx.bus.publish(&sent).await.unwrap();
    recv(&mut sub).await.ack().await.unwrap();
    let waiting = tokio::spawn(async move { tokio::time::timeout(WAIT, sub.next()).await });
    tokio::time::sleep(QUIET).await;
    ctx.bus.close().await;
    assert!(!ctx.bus.is_ready().await);
    assert!(matches!(waiting.await.unwrap(), Ok(None)), "a subscriber ends when its bus closes");
    assert!(matches!(ctx.bus.publish(&sent).await, Err(BusError::Closed)));
    assert!(matches!(ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["#"])).await, Err(BusError::Closed)));
}

pub(crate) async fn declared_groups_park_messages_until_a_subscriber_comes(ctx: Ctx) {
    let subscription = Subscription::new("connector.email.commands", Exchange::Commands, &["email.#"]);
    ctx.bus.declare(&subscription).await.unwrap();
    ctx.bus.declare(&subscription).await.unwrap();
    let sent = command("email.message.send", 1);
    ctx.bus.publish(&sent).await.unwrap();
    let bus = ctx.bus.clone();
    wait_until("the command waits in its queue", WAIT, || async { queue_figures(&bus, "connector.email.commands").await == Some((1, 0)) })
        .await;
    let mut sub = ctx.bus.subscribe(subscription).await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!(d.envelope, sent);
    d.ack().await.unwrap();
    assert!(matches!(ctx.bus.declare(&Subscription::new("dead-letters", Exchange::Events, &["#"])).await, Err(BusError::Invalid(_))));
}
