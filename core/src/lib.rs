//! Keyward core: the domain (ids, privileges, RBAC), the API key format,
//! argon2id hashing, and the store with its SQLite and PostgreSQL backends.
//!
//! Core knows no HTTP and no AMQP: anything two binaries need lives here.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod events;
pub mod hashing;
pub mod ids;
pub mod privilege;
pub mod rbac;
pub mod reconnect;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
