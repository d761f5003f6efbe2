//! Whole-system tests — the real binaries as processes, or their
//! `startup::Application`s in-process — in one binary: one link instead of
//! four.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abandoned_transactions;
mod binaries;
mod ingestor_cache_races;
mod ingestors;
mod secret_scan;
mod tls;
mod worker;
