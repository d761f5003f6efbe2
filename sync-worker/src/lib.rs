//! Keyward sync worker: claims outbox rows with leases and delivers them to
//! RabbitMQ with publisher confirms (DESIGN.md, Deliver).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod settings;
