//! Keyward sync worker: claims outbox rows with leases and delivers them to
//! RabbitMQ with publisher confirms (`docs/architecture.md`), and records the
//! ingestors' reports (`applied`, heartbeats).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod broker;
pub mod deliver;
pub mod health;
pub mod housekeeping;
pub mod reports;
pub mod retry;
pub mod settings;
pub mod startup;
pub mod worker;
