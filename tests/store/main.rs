//! Store conformance suite: the same scenarios run against SQLite and PostgreSQL through
//! [`crm_tests::on_both_backends!`], so the two backends are held to one behaviour.
//!
//! Each module lists its scenarios once; the macro turns every scenario into a `sqlite::name`
//! and a `postgres::name` test, each on a fresh, migrated database. PostgreSQL variants are
//! skipped when no server answers, unless `CRM_REQUIRE_POSTGRES=1`.

mod common;
mod comms;
mod customers;
mod orders;
mod outbox;
mod pagination;
mod products;
mod search;
