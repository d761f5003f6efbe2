//! Keyward core: the domain (ids, privileges, RBAC), the API key format,
//! SHA-256 key digests, argon2id passwords, and the store with its SQLite and PostgreSQL backends.
//!
//! Core knows no HTTP and no AMQP: anything two binaries need lives here.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod digest;
pub mod events;
pub mod ids;
pub mod password;
pub mod privilege;
pub mod rbac;
pub mod reconnect;
pub mod single_flight;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
