//! Keyward core: the domain (ids, privileges, RBAC), the API key format,
//! SHA-256 key digests, argon2id passwords, and the store with its SQLite and PostgreSQL backends.
//!
//! Anything two binaries need lives here. The domain knows no HTTP and no
//! AMQP; the two places that do are behind features: `ops` (the health,
//! readiness and metrics routes every binary serves) and `amqp` (the one
//! declaration of the broker topology).

#![cfg_attr(test, allow(clippy::unwrap_used))]

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod cache_sweep;
pub mod config;
pub mod digest;
pub mod events;
pub mod http;
pub mod ids;
#[cfg(feature = "ops")]
pub mod ops;
pub mod password;
pub mod privilege;
pub mod rbac;
pub mod reconnect;
pub mod secret;
pub mod sharded;
pub mod single_flight;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod token;
