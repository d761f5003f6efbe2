//! Keyward sync worker: claims outbox rows with leases and delivers them to
//! RabbitMQ with publisher confirms (DESIGN.md, Deliver), and records the
//! ingestors' acks.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod acks;
pub mod broker;
pub mod deliver;
pub mod housekeeping;
pub mod ops;
pub mod retry;
pub mod settings;
pub mod worker;
