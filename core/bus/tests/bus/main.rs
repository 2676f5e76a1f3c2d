//! The bus on both transports: every scenario runs on the in-process bus, without and with its
//! journal, and on RabbitMQ (`<scenario>::in_process`, `::in_process_journaled`, `::rabbitmq`),
//! plus RabbitMQ-only checks of raw messages and of riding out a broker restart, and checks that
//! the journaled in-process bus loses nothing across a restart or a crash.
//!
//! `cargo test -p crm-bus --test bus`

mod connect;
mod failures;
mod flow;
mod publishing;
mod rabbit;
mod restart;
mod rpc;
mod support;

/// Declares `<scenario>::in_process`, `<scenario>::in_process_journaled` and
/// `<scenario>::rabbitmq` for each scenario function of module `$module`.
macro_rules! on_both_transports {
    ($module:ident: $($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::support::{run, Transport};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_process() {
                run(Transport::InProcess, crate::$module::$name).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_process_journaled() {
                run(Transport::InProcessJournaled, crate::$module::$name).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rabbitmq() {
                run(Transport::Rabbitmq, crate::$module::$name).await;
            }
        }
    )*};
}

on_both_transports!(flow:
    publish_and_consume_with_topic_bindings,
    competing_consumers_get_distinct_messages,
    every_group_gets_every_message,
    prefetch_bounds_unacked_deliveries,
    dropped_subscriber_gives_its_deliveries_back,
    requeue_redelivers_without_counting_an_attempt,
    ack_all_acknowledges_batches,
    queue_stats_count_ready_messages_and_consumers,
    commands_nobody_binds_are_rejected,
    close_ends_subscribers_and_refuses_publishing,
    declared_groups_park_messages_until_a_subscriber_comes,
);

on_both_transports!(failures:
    retry_backs_off_then_dead_letters_with_reason_and_attempts,
    dead_letter_goes_straight_to_the_dead_letter_queue,
    replay_puts_a_dead_letter_back_into_its_group,
    dead_letters_cannot_be_retried,
);

on_both_transports!(publishing:
    concurrent_publishes_each_get_their_own_outcome,
    publish_each_reports_every_message,
    requeues_racing_batch_acks_lose_nothing,
);

on_both_transports!(rpc:
    request_gets_the_reply,
    request_without_a_queue_is_rejected_and_without_a_reply_times_out,
);
