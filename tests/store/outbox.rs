//! The core's side of the bus: the transactional outbox (leases, retries, publishing, pruning),
//! dead letters (filed once, paged, resolved once, counted) and connector heartbeats.

use crate::common::{assert_conflict, assert_not_found};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use crm_store::{ConnectorInstance, DeadLetter, OutboxMessage, OutboxRetry, Store, StoreError};
use crm_tests::TestDb;
use serde_json::{Value, json};
use std::collections::HashSet;
use uuid::Uuid;

crm_tests::on_both_backends!(
    claims_are_leased_oldest_first,
    expired_leases_are_claimed_again,
    failed_messages_back_off_while_later_ones_flow,
    concurrent_claims_are_disjoint,
    backlog_and_pruning,
    pruning_goes_a_batch_at_a_time,
    dead_letters_are_filed_once,
    dead_letter_pages,
    resolving_dead_letters,
    a_replay_leases_its_dead_letter,
    heartbeats_keep_the_newest,
    concurrent_heartbeats,
);

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn command(label: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": Uuid::now_v7().to_string(),
        "type": "crm.test.command",
        "source": "crm-tests",
        "data": {"label": label, "nested": {"n": 1, "list": [1, 2, 3]}}
    })
}

/// Writes `n` commands to the outbox (with a media record, the way a file upload does).
async fn enqueue(store: &Store, n: usize) -> Vec<Value> {
    let commands: Vec<Value> = (0..n).map(|i| command(&format!("c{i}"))).collect();
    let file = crm_tests::pending_media(None, "f.jpg", "image/jpeg");
    store.create_with_commands(Uuid::now_v7(), file, &commands).await.unwrap();
    commands
}

fn envelopes(messages: &[OutboxMessage]) -> Vec<Value> {
    messages.iter().map(|m| m.envelope.clone()).collect()
}

fn seqs(messages: &[OutboxMessage]) -> Vec<i64> {
    messages.iter().map(|m| m.seq).collect()
}

fn minutes(n: i64) -> Duration {
    Duration::minutes(n)
}

async fn claims_are_leased_oldest_first(db: &TestDb) {
    let store = &db.store;
    assert!(store.claim_outbox(10, minutes(1)).await.unwrap().is_empty(), "an empty outbox");
    let mut commands = enqueue(store, 3).await;
    commands.extend(enqueue(store, 2).await);

    // Oldest first, never the same message twice while its lease runs.
    let first = store.claim_outbox(2, minutes(1)).await.unwrap();
    assert_eq!(envelopes(&first), commands[..2]);
    assert!(first.iter().all(|m| m.attempts == 0));
    let second = store.claim_outbox(2, minutes(1)).await.unwrap();
    assert_eq!(envelopes(&second), commands[2..4]);
    let third = store.claim_outbox(10, minutes(1)).await.unwrap();
    assert_eq!(envelopes(&third), commands[4..]);
    assert!(store.claim_outbox(10, minutes(1)).await.unwrap().is_empty());
    let all: Vec<i64> = [seqs(&first), seqs(&second), seqs(&third)].concat();
    assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
    assert_eq!(store.claim_outbox(0, minutes(1)).await.unwrap().len(), 0);
    // Claimed is not sent.
    assert_eq!(store.outbox_backlog().await.unwrap().0, 5);

    // A failed publish releases the messages at once, counting the attempt.
    store.outbox_failed(&seqs(&first), "broker unreachable", OutboxRetry::Now).await.unwrap();
    let again = store.claim_outbox(10, minutes(1)).await.unwrap();
    assert_eq!(seqs(&again), seqs(&first));
    assert!(again.iter().all(|m| m.attempts == 1));
    assert_eq!(envelopes(&again), commands[..2]);
    // A very long error is kept short, and attempts keep counting.
    store.outbox_failed(&seqs(&again)[..1], &"x".repeat(10_000), OutboxRetry::Now).await.unwrap();
    let once_more = store.claim_outbox(10, minutes(1)).await.unwrap();
    assert_eq!((seqs(&once_more), once_more[0].attempts), (seqs(&first)[..1].to_vec(), 2));

    // Sent messages are never claimed again, even when their lease would have ended.
    store.outbox_sent(&all).await.unwrap();
    assert!(store.claim_outbox(10, Duration::seconds(-60)).await.unwrap().is_empty());
    assert!(store.claim_outbox(10, minutes(1)).await.unwrap().is_empty());
    assert_eq!(store.outbox_backlog().await.unwrap(), (0, None));
    // A failure reported after the message was sent does not bring it back.
    store.outbox_failed(&all, "late", OutboxRetry::Now).await.unwrap();
    assert!(store.claim_outbox(10, minutes(1)).await.unwrap().is_empty(), "a sent message was released again");
    // Empty lists are fine.
    store.outbox_sent(&[]).await.unwrap();
    store.outbox_failed(&[], "nothing", OutboxRetry::Now).await.unwrap();
}

/// A message that failed on its own waits out a backoff doubling by its attempts (capped), while
/// messages written after it are claimed; ops see it with its attempts and last error.
async fn failed_messages_back_off_while_later_ones_flow(db: &TestDb) {
    let store = &db.store;
    let commands = enqueue(store, 3).await;
    let claimed = store.claim_outbox(10, minutes(1)).await.unwrap();
    assert_eq!(envelopes(&claimed), commands);
    let (bad, good) = (claimed[1].seq, [claimed[0].seq, claimed[2].seq]);
    let hour = OutboxRetry::Backoff { first: Duration::hours(1), max: Duration::minutes(90) };
    let before = Utc::now();
    store.outbox_failed(&[bad], "rejected by the broker: no queue took 'call.message.send'", hour).await.unwrap();
    store.outbox_sent(&good).await.unwrap();
    assert!(store.outbox_failing(10).await.unwrap().iter().all(|f| f.seq == bad));

    // A message written later is claimed; the failed one waits.
    let later = enqueue(store, 1).await;
    assert_eq!(envelopes(&store.claim_outbox(10, minutes(1)).await.unwrap()), later);
    let failing = store.outbox_failing(10).await.unwrap();
    assert_eq!(failing.len(), 1);
    let failure = &failing[0];
    assert_eq!((failure.seq, failure.attempts), (bad, 1));
    assert_eq!(failure.envelope_id, commands[1]["id"].as_str().unwrap());
    assert_eq!(failure.event_type, "crm.test.command");
    assert!(failure.last_error.contains("no queue took"), "{failure:?}");
    let next = failure.next_attempt_at.expect("a next attempt");
    assert!(next >= before + Duration::minutes(59) && next <= Utc::now() + Duration::hours(1), "{next}");

    // The second failure doubles the wait, up to the cap.
    let before = Utc::now();
    store.outbox_failed(&[bad], "again", hour).await.unwrap();
    let failure = store.outbox_failing(10).await.unwrap().remove(0);
    assert_eq!((failure.attempts, failure.last_error.as_str()), (2, "again"));
    let next = failure.next_attempt_at.expect("a next attempt");
    assert!(next >= before + Duration::minutes(89) && next <= Utc::now() + Duration::minutes(90), "{next}");

    // Once the backoff is over it is claimed again.
    let short = OutboxRetry::Backoff { first: Duration::milliseconds(50), max: Duration::milliseconds(50) };
    store.outbox_failed(&[bad], "briefly", short).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let claimed = store.claim_outbox(10, minutes(1)).await.unwrap();
        if !claimed.is_empty() {
            assert_eq!((seqs(&claimed), claimed[0].attempts), (vec![bad], 3));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the failed message is claimed again after its backoff");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    store.outbox_sent(&[bad]).await.unwrap();
    assert!(store.outbox_failing(10).await.unwrap().is_empty(), "a sent message is no longer failing");
}

/// A relay that died holding a lease only delays its messages until the lease ends.
async fn expired_leases_are_claimed_again(db: &TestDb) {
    let store = &db.store;
    let commands = enqueue(store, 3).await;
    // A lease that has already ended.
    let dead_relay = store.claim_outbox(2, Duration::seconds(-1)).await.unwrap();
    assert_eq!(envelopes(&dead_relay), commands[..2]);
    let next = store.claim_outbox(10, minutes(5)).await.unwrap();
    assert_eq!(envelopes(&next), commands, "expired leases are claimable, still oldest first");
    assert!(next.iter().all(|m| m.attempts == 0), "an expired lease is not a failed attempt");
    assert!(store.claim_outbox(10, minutes(5)).await.unwrap().is_empty());

    // A short lease that ends while we wait.
    let more = enqueue(store, 1).await;
    let short = store.claim_outbox(10, Duration::milliseconds(50)).await.unwrap();
    assert_eq!(envelopes(&short), more);
    assert!(store.claim_outbox(10, minutes(5)).await.unwrap().is_empty(), "the lease still runs");
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    assert_eq!(envelopes(&store.claim_outbox(10, minutes(5)).await.unwrap()), more);
}

/// Several relays claiming at once never get the same message.
async fn concurrent_claims_are_disjoint(db: &TestDb) {
    let store = &db.store;
    let mut commands = Vec::new();
    for _ in 0..6 {
        commands.extend(enqueue(store, 10).await);
    }
    for round in 0..3 {
        let claims = futures::future::join_all((0..6).map(|_| store.claim_outbox(15, minutes(5)))).await;
        let mut seen = HashSet::new();
        let mut total = 0;
        for claim in claims {
            let claim = claim.unwrap();
            assert!(claim.len() <= 15);
            for message in claim {
                total += 1;
                assert!(seen.insert(message.seq), "round {round}: message {} claimed twice", message.seq);
            }
        }
        assert_eq!(total, 60, "round {round}: every message claimed once");
        assert!(store.claim_outbox(100, minutes(5)).await.unwrap().is_empty());
        // Release them all and race again.
        store.outbox_failed(&seen.into_iter().collect::<Vec<_>>(), "retry", OutboxRetry::Now).await.unwrap();
    }
    let last = store.claim_outbox(100, minutes(5)).await.unwrap();
    assert_eq!(envelopes(&last), commands);
    assert!(last.iter().all(|m| m.attempts == 3));
}

async fn backlog_and_pruning(db: &TestDb) {
    let store = &db.store;
    assert_eq!(store.outbox_backlog().await.unwrap(), (0, None));
    let before = Utc::now().trunc_subsecs(6);
    enqueue(store, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    enqueue(store, 1).await;
    let after = Utc::now();
    let (count, oldest) = store.outbox_backlog().await.unwrap();
    let oldest = oldest.expect("an oldest message");
    assert_eq!(count, 3);
    assert!(oldest >= before && oldest <= after, "{oldest} not in {before}..{after}");

    let claimed = store.claim_outbox(10, minutes(1)).await.unwrap();
    store.outbox_sent(&seqs(&claimed)[..2]).await.unwrap();
    let (count, newer) = store.outbox_backlog().await.unwrap();
    assert_eq!(count, 1);
    assert!(newer.expect("one left") > oldest, "the oldest waiting message is now the later one");

    // Only sent messages older than the age go.
    assert_eq!(store.prune_outbox(Duration::hours(1)).await.unwrap(), 0);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(store.prune_outbox(Duration::zero()).await.unwrap(), 2);
    assert_eq!(store.prune_outbox(Duration::zero()).await.unwrap(), 0);
    assert_eq!(store.outbox_backlog().await.unwrap().0, 1, "an unsent message is never pruned");
    store.outbox_failed(&seqs(&claimed)[2..], "retry", OutboxRetry::Now).await.unwrap();
    assert_eq!(seqs(&store.claim_outbox(10, minutes(1)).await.unwrap()), seqs(&claimed)[2..]);
}

/// More published messages than one pruning transaction takes: all go, the unsent one stays.
async fn pruning_goes_a_batch_at_a_time(db: &TestDb) {
    let store = &db.store;
    enqueue(store, 2_500).await;
    let claimed = store.claim_outbox(3_000, minutes(1)).await.unwrap();
    assert_eq!(claimed.len(), 2_500);
    store.outbox_sent(&seqs(&claimed)).await.unwrap();
    enqueue(store, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(store.prune_outbox(Duration::zero()).await.unwrap(), 2_500);
    assert_eq!(store.prune_outbox(Duration::zero()).await.unwrap(), 0);
    assert_eq!(store.outbox_backlog().await.unwrap().0, 1);
}

async fn file(store: &Store, consumer: &str, envelope_id: &str, dead_at: DateTime<Utc>) -> Value {
    let envelope =
        json!({"specversion": "1.0", "id": envelope_id, "type": "crm.test.event", "source": "crm-tests", "data": {"x": [1, "δ"]}});
    store.file_dead_letter(consumer, envelope_id, "crm.test.event", "crm.test.key", &envelope, "handler failed", 5, dead_at).await.unwrap();
    envelope
}

async fn all_letters(store: &Store) -> Vec<DeadLetter> {
    store.dead_letters(None, None, None, Some(crm_store::MAX_LIMIT)).await.unwrap().items
}

async fn dead_letters_are_filed_once(db: &TestDb) {
    let store = &db.store;
    let dead_at = at("2026-03-01T10:00:00.123456Z");
    let envelope = file(store, "core.events", "e1", dead_at).await;
    // The bus delivered the same dead letter twice.
    file(store, "core.events", "e1", dead_at).await;
    let letters = all_letters(store).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        (letter.consumer.as_str(), letter.envelope_id.as_str(), letter.event_type.as_str(), letter.routing_key.as_str()),
        ("core.events", "e1", "crm.test.event", "crm.test.key")
    );
    assert_eq!((&letter.envelope, letter.reason.as_str(), letter.attempts, letter.dead_at), (&envelope, "handler failed", 5, dead_at));
    assert_eq!((letter.status.as_str(), letter.resolved_at, letter.resolved_by.as_deref()), ("dead", None, None));
    assert_eq!(&store.dead_letter(letter.id).await.unwrap(), letter);
    assert_not_found(store.dead_letter(Uuid::now_v7()).await);

    // It died again after a replay: another letter. Another consumer gave up on it: another.
    file(store, "core.events", "e1", dead_at + Duration::minutes(5)).await;
    file(store, "connector.email.commands", "e1", dead_at).await;
    file(store, "core.events", "e2", dead_at).await;
    assert_eq!(all_letters(store).await.len(), 4);
    assert_eq!(store.dead_letter_counts().await.unwrap(), vec![("connector.email.commands".to_owned(), 1), ("core.events".to_owned(), 3)]);
}

async fn dead_letter_pages(db: &TestDb) {
    let store = &db.store;
    let dead_at = at("2026-03-01T10:00:00Z");
    let mut filed = Vec::new();
    for i in 0..8 {
        let consumer = if i < 6 { "a" } else { "b" };
        file(store, consumer, &format!("e{i}"), dead_at + Duration::seconds(i)).await;
        filed.push(format!("e{i}"));
    }
    // Pages, newest filed first; the cursor continues after the last page.
    let pages = |status: Option<&'static str>, consumer: Option<&'static str>, limit: u32| async move {
        let mut pages: Vec<Vec<String>> = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.dead_letters(status, consumer, cursor.as_deref(), Some(limit)).await.unwrap();
            assert!(page.items.len() <= limit as usize);
            pages.push(page.items.into_iter().map(|l| l.envelope_id).collect());
            match page.next_cursor {
                Some(next) => {
                    assert!(pages.len() < 100, "paging does not end");
                    cursor = Some(next);
                }
                None => return pages,
            }
        }
    };
    let page = |ids: &[usize]| ids.iter().map(|i| format!("e{i}")).collect::<Vec<_>>();
    assert_eq!(pages(None, None, 3).await, vec![page(&[7, 6, 5]), page(&[4, 3, 2]), page(&[1, 0])]);
    // A page that ends exactly at the last letter has no next page.
    assert_eq!(pages(None, None, 4).await, vec![page(&[7, 6, 5, 4]), page(&[3, 2, 1, 0])]);
    assert_eq!(pages(None, None, 8).await, vec![page(&[7, 6, 5, 4, 3, 2, 1, 0])]);
    assert_eq!(pages(None, None, 200).await, vec![page(&[7, 6, 5, 4, 3, 2, 1, 0])]);
    assert_eq!(pages(None, Some("a"), 3).await, vec![page(&[5, 4, 3]), page(&[2, 1, 0])]);
    assert_eq!(pages(None, Some("b"), 1).await, vec![page(&[7]), page(&[6])]);
    assert_eq!(pages(None, Some("nobody"), 3).await, vec![Vec::<String>::new()]);
    // Page sizes are bounded, as in every listing; a cursor continues only its own listing.
    for limit in [0, crm_store::MAX_LIMIT + 1] {
        let refused = store.dead_letters(None, None, None, Some(limit)).await.unwrap_err();
        assert!(matches!(&refused, StoreError::Invalid(v) if v.0[0].pointer == "/limit"), "{refused:?}");
    }
    assert_eq!(store.dead_letters(None, None, None, None).await.unwrap().items.len(), 8);
    let of_a = store.dead_letters(None, Some("a"), None, Some(2)).await.unwrap().next_cursor.expect("a next page");
    let refused = store.dead_letters(None, Some("b"), Some(&of_a), Some(2)).await.unwrap_err();
    assert!(matches!(&refused, StoreError::Invalid(v) if v.0[0].pointer == "/cursor"), "{refused:?}");

    // Status filters, with paging.
    let letters = all_letters(store).await;
    let by_envelope = |id: &str| letters.iter().find(|l| l.envelope_id == id).unwrap().id;
    store.resolve_dead_letter(by_envelope("e4"), "replayed", "user:x").await.unwrap();
    store.resolve_dead_letter(by_envelope("e1"), "discarded", "user:x").await.unwrap();
    store.resolve_dead_letter(by_envelope("e7"), "replayed", "user:x").await.unwrap();
    assert_eq!(pages(Some("dead"), Some("a"), 2).await, vec![page(&[5, 3]), page(&[2, 0])]);
    assert_eq!(pages(Some("dead"), None, 5).await, vec![page(&[6, 5, 3, 2, 0])]);
    assert_eq!(pages(Some("replayed"), None, 1).await, vec![page(&[7]), page(&[4])]);
    assert_eq!(pages(Some("discarded"), Some("a"), 1).await, vec![page(&[1])]);
    assert_eq!(filed.len(), 8);
}

async fn resolving_dead_letters(db: &TestDb) {
    let store = &db.store;
    let dead_at = at("2026-03-01T10:00:00Z");
    file(store, "core.events", "e1", dead_at).await;
    file(store, "core.events", "e2", dead_at).await;
    file(store, "connector.whatsapp.commands", "e3", dead_at).await;
    assert_eq!(
        store.dead_letter_counts().await.unwrap(),
        vec![("connector.whatsapp.commands".to_owned(), 1), ("core.events".to_owned(), 2)]
    );
    let letters = all_letters(store).await;
    let (e1, e3) =
        (letters.iter().find(|l| l.envelope_id == "e1").unwrap().clone(), letters.iter().find(|l| l.envelope_id == "e3").unwrap().clone());

    let started = Utc::now().trunc_subsecs(6);
    let replayed = store.resolve_dead_letter(e1.id, "replayed", "user:anna").await.unwrap();
    assert_eq!((replayed.status.as_str(), replayed.resolved_by.as_deref()), ("replayed", Some("user:anna")));
    let resolved_at = replayed.resolved_at.expect("resolved_at is set");
    assert!(resolved_at >= started && resolved_at <= Utc::now(), "{resolved_at}");
    assert_eq!(
        DeadLetter { status: e1.status.clone(), resolved_at: None, resolved_by: None, ..replayed.clone() },
        e1,
        "nothing else changes"
    );
    assert_eq!(store.dead_letter(e1.id).await.unwrap(), replayed);

    // Resolved once: a second replay or a discard is a conflict, and changes nothing.
    assert_conflict(store.resolve_dead_letter(e1.id, "discarded", "user:babis").await, Some("/status"));
    assert_conflict(store.resolve_dead_letter(e1.id, "replayed", "user:anna").await, Some("/status"));
    assert_eq!(store.dead_letter(e1.id).await.unwrap(), replayed);
    assert_not_found(store.resolve_dead_letter(Uuid::now_v7(), "replayed", "user:anna").await);
    assert_eq!(
        store.dead_letter_counts().await.unwrap(),
        vec![("connector.whatsapp.commands".to_owned(), 1), ("core.events".to_owned(), 1)]
    );

    // Two operators at once: one wins.
    let (a, b) = tokio::join!(
        store.resolve_dead_letter(e3.id, "replayed", "user:anna"),
        store.resolve_dead_letter(e3.id, "discarded", "user:babis")
    );
    let winner = match (a, b) {
        (Ok(w), Err(StoreError::Conflict { .. })) | (Err(StoreError::Conflict { .. }), Ok(w)) => w,
        (a, b) => panic!("expected one resolution and one conflict, got {a:?} / {b:?}"),
    };
    assert_eq!(store.dead_letter(e3.id).await.unwrap(), winner);
    // A consumer with nothing left waiting is not counted.
    assert_eq!(store.dead_letter_counts().await.unwrap(), vec![("core.events".to_owned(), 1)]);
}

/// A replay leases its dead letter while it publishes: a second replay or a discard meanwhile
/// is refused; a released lease, an ended lease or the replay's own resolution lets go of it,
/// and a replay whose lease ended and went to another cannot release or resolve that one's.
async fn a_replay_leases_its_dead_letter(db: &TestDb) {
    let store = &db.store;
    let dead_at = at("2026-03-01T10:00:00Z");
    for id in ["e1", "e2", "e3"] {
        file(store, "core.events", id, dead_at).await;
    }
    let letters = all_letters(store).await;
    let letter = |id: &str| letters.iter().find(|l| l.envelope_id == id).unwrap().clone();
    let (e1, e2, e3) = (letter("e1"), letter("e2"), letter("e3"));
    let lease = Duration::minutes(5);

    let leased = store.lease_dead_letter(e1.id, lease).await.unwrap();
    assert_eq!(leased.letter, e1, "a lease changes nothing that is shown");
    assert_conflict(store.lease_dead_letter(e1.id, lease).await, Some("/status"));
    assert_conflict(store.resolve_dead_letter(e1.id, "discarded", "user:babis").await, Some("/status"));
    assert_conflict(store.resolve_dead_letter(e1.id, "replayed", "user:babis").await, Some("/status"));
    assert_eq!(store.dead_letter(e1.id).await.unwrap(), e1, "still waiting for ops");
    assert_eq!(store.dead_letter_counts().await.unwrap(), vec![("core.events".to_owned(), 3)], "a leased letter still counts");
    assert_not_found(store.lease_dead_letter(Uuid::now_v7(), lease).await);

    // Released (the replay did not publish): leased again at once; the replay holding the lease
    // marks it replayed, and then nothing leases it again.
    store.release_dead_letter(&leased).await.unwrap();
    let again = store.lease_dead_letter(e1.id, lease).await.unwrap();
    let replayed = store.mark_replayed(&again, "user:anna").await.unwrap();
    assert_eq!((replayed.status.as_str(), replayed.resolved_by.as_deref()), ("replayed", Some("user:anna")));
    assert_conflict(store.lease_dead_letter(e1.id, lease).await, Some("/status"));
    assert_conflict(store.mark_replayed(&again, "user:anna").await, Some("/status"));
    store.release_dead_letter(&again).await.unwrap();
    assert_eq!(store.dead_letter(e1.id).await.unwrap(), replayed, "releasing a resolved letter changes nothing");

    // A lease that has ended (its replay was cut off) no longer holds the letter.
    store.lease_dead_letter(e2.id, Duration::seconds(-1)).await.unwrap();
    assert_eq!(store.resolve_dead_letter(e2.id, "discarded", "user:babis").await.unwrap().status, "discarded");

    // A replay that overran its lease, now another's, can neither release nor resolve it.
    let overran = store.lease_dead_letter(e3.id, Duration::seconds(-1)).await.unwrap();
    let current = store.lease_dead_letter(e3.id, lease).await.unwrap();
    store.release_dead_letter(&overran).await.unwrap();
    assert_conflict(store.resolve_dead_letter(e3.id, "discarded", "user:babis").await, Some("/status"));
    assert_conflict(store.mark_replayed(&overran, "user:anna").await, Some("/status"));
    assert_eq!(store.mark_replayed(&current, "user:babis").await.unwrap().resolved_by.as_deref(), Some("user:babis"));

    // Many replays at once: exactly one gets the lease.
    file(store, "core.events", "e4", dead_at).await;
    let e4 = all_letters(store).await.into_iter().find(|l| l.envelope_id == "e4").unwrap();
    let results = futures::future::join_all((0..8).map(|_| store.lease_dead_letter(e4.id, lease))).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(_) | Err(StoreError::Conflict { .. }))), "{results:?}");
}

fn instance(name: &str, instance: &str, last_heartbeat: DateTime<Utc>, state: &str) -> ConnectorInstance {
    ConnectorInstance {
        name: name.into(),
        instance: instance.into(),
        version: "1.0.0".into(),
        channel: "email".into(),
        started_at: at("2026-03-01T08:00:00.000001Z"),
        last_heartbeat,
        state: state.into(),
        detail: None,
        in_flight: 0,
        interval_seconds: 30,
    }
}

async fn heartbeats_keep_the_newest(db: &TestDb) {
    let store = &db.store;
    let t = |s: i64| at("2026-03-01T09:00:00.000001Z") + Duration::seconds(s);
    assert!(store.connector_instances().await.unwrap().is_empty());
    store.record_heartbeat(&instance("email", "host-1", t(0), "starting")).await.unwrap();
    assert_eq!(store.connector_instances().await.unwrap(), vec![instance("email", "host-1", t(0), "starting")]);

    // A newer heartbeat replaces every field.
    let newer = ConnectorInstance {
        version: "1.0.1".into(),
        started_at: t(-5),
        detail: Some("IMAP slow".into()),
        in_flight: 7,
        interval_seconds: 15,
        ..instance("email", "host-1", t(60), "degraded")
    };
    store.record_heartbeat(&newer).await.unwrap();
    assert_eq!(store.connector_instances().await.unwrap(), vec![newer.clone()]);
    // A late, older one changes nothing.
    store.record_heartbeat(&instance("email", "host-1", t(30), "ready")).await.unwrap();
    store.record_heartbeat(&instance("email", "host-1", t(60) - Duration::microseconds(1), "ready")).await.unwrap();
    assert_eq!(store.connector_instances().await.unwrap(), vec![newer.clone()]);

    // Listed by name, then instance.
    let whatsapp = ConnectorInstance { channel: "whatsapp".into(), ..instance("whatsapp", "host-1", t(90), "ready") };
    let second = instance("email", "host-0", t(10), "ready");
    store.record_heartbeat(&whatsapp).await.unwrap();
    store.record_heartbeat(&second).await.unwrap();
    assert_eq!(store.connector_instances().await.unwrap(), vec![second.clone(), newer.clone(), whatsapp.clone()]);

    // Forgetting: strictly before the time given.
    assert_eq!(store.forget_connector_instances(t(10)).await.unwrap(), 0, "a heartbeat at the boundary is kept");
    assert_eq!(store.forget_connector_instances(t(60)).await.unwrap(), 1);
    assert_eq!(store.connector_instances().await.unwrap(), vec![newer, whatsapp]);
    assert_eq!(store.forget_connector_instances(t(60)).await.unwrap(), 0);
    assert_eq!(store.forget_connector_instances(t(1000)).await.unwrap(), 2);
    assert!(store.connector_instances().await.unwrap().is_empty());
}

/// Heartbeats of one instance handled by several consumers at once: the newest always wins.
async fn concurrent_heartbeats(db: &TestDb) {
    let store = &db.store;
    let base = at("2026-03-01T09:00:00Z");
    for round in 0..10 {
        let name = format!("c{round}");
        let beats: Vec<ConnectorInstance> =
            (0..5).map(|i| instance(&name, "host", base + Duration::seconds((i * 7 + round) % 5), &format!("s{i}"))).collect();
        let newest = beats.iter().max_by_key(|b| b.last_heartbeat).unwrap().clone();
        let results = futures::future::join_all(beats.iter().map(|b| store.record_heartbeat(b))).await;
        for result in results {
            result.unwrap();
        }
        let found = store.connector_instances().await.unwrap().into_iter().find(|i| i.name == name).unwrap();
        assert_eq!(found, newest, "round {round}");
    }
}
