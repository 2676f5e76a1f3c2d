//! Bus counters for Prometheus (`bus_*_total`, labelled by group or exchange and transport).

use crate::message::Exchange;

pub(crate) fn published(transport: &'static str, exchange: Exchange, count: u64) {
    metrics::counter!("bus_published_total", "exchange" => exchange.kind(), "transport" => transport).increment(count);
}

pub(crate) fn delivered(transport: &'static str, group: &str) {
    metrics::counter!("bus_delivered_total", "group" => group.to_owned(), "transport" => transport).increment(1);
}

pub(crate) fn acked(transport: &'static str, group: &str, count: u64) {
    metrics::counter!("bus_acked_total", "group" => group.to_owned(), "transport" => transport).increment(count);
}

pub(crate) fn retried(transport: &'static str, group: &str) {
    metrics::counter!("bus_retried_total", "group" => group.to_owned(), "transport" => transport).increment(1);
}

pub(crate) fn dead_lettered(transport: &'static str, group: &str) {
    metrics::counter!("bus_dead_lettered_total", "group" => group.to_owned(), "transport" => transport).increment(1);
}
