//! Keyward ingestor library: what an ingestion node embeds to authenticate
//! traffic with Keyward API keys and apply revocations at once.
//!
//! * [`Verifier`](verifier::Verifier): token shape and checksum (no I/O) →
//!   tombstones of revoked keys (refused from memory, API up or not) →
//!   local cache (bounded, TTL from the API's `cacheTtlSeconds`, expiry
//!   honoured locally) → on a miss `POST /api/v1/verify` with the node's
//!   `verifier` key; concurrent misses for one key share one call; the API
//!   unreachable on a miss gives [`Verdict::Unavailable`](verifier::Verdict)
//!   (answer 503), never "valid".
//! * [`RevocationConsumer`](consumer::RevocationConsumer): the node's own
//!   durable queue `keyward.ingestor.{id}` (bound `#`, or `*.*.{tenant}`
//!   for one tenant); applies each event, reports `applied` and waits for
//!   the broker's confirm, only then acks; heartbeats; reconnects on its own
//!   and empties the cache on every (re)connection. The three event types:
//!
//!   | event | what the node does |
//!   | --- | --- |
//!   | `key.revoked` | [`Verifier::bury`](verifier::Verifier::bury): a tombstone, the key refused from memory from now on, API up or not |
//!   | `key.updated` | [`Verifier::evict`](verifier::Verifier::evict): the key's cached answer dropped; the next request asks the API |
//!   | `rbac.changed` | [`Verifier::evict_tenant`](verifier::Verifier::evict_tenant): every cached key of the tenant dropped |
//!
//!   An embedding node that keeps its own state per key or tenant does the
//!   same to it before the report goes out. A message of an unknown type
//!   is logged and dropped, never guessed at.
//! * [`Verdict::may_ingest`](verifier::Verdict::may_ingest): "may this key
//!   ingest into stream S".
//!
//! A runnable program doing all of it against a live system is
//! `examples/check_key.rs` (`cargo run -p keyward-ingestor --example
//! check_key -- <api key> <stream>`); in short:
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use keyward_ingestor::client::{VERIFY_TIMEOUT, VerifyClient};
//! use keyward_ingestor::consumer::{ConsumerSettings, RevocationConsumer};
//! use keyward_ingestor::verifier::{Verdict, Verifier};
//!
//! # async fn example() -> anyhow::Result<()> {
//! let api = url::Url::parse("http://127.0.0.1:8080")?;
//! let verifier_key = keyward_core::token::ApiKeyToken::parse(&std::env::var("KEYWARD_VERIFIER_KEY")?)?;
//! let client = VerifyClient::new(&api, verifier_key, VERIFY_TIMEOUT)?;
//! let verifier = Arc::new(Verifier::new(client, 100_000));
//!
//! let consumer = RevocationConsumer::new(
//!     ConsumerSettings {
//!         amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".parse().map_err(anyhow::Error::msg)?,
//!         exchange: "keyward.events".into(),
//!         ingestor_id: "node-1".into(),
//!         binding: "#".into(),
//!         acks_queue: "keyward.acks".into(),
//!         quorum: false,
//!         prefetch: 64,
//!         heartbeat_every: Duration::from_secs(5),
//!     },
//!     Arc::clone(&verifier),
//! );
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(consumer.run(shutdown.clone()));
//!
//! // In the node's request handler, with the caller's bearer token:
//! # let bearer_token = "kw_...";
//! match verifier.verify(bearer_token).await {
//!     v @ Verdict::Valid(_) if v.may_ingest("clicks") => { /* 202: take the data */ }
//!     Verdict::Valid(_) => { /* 403 */ }
//!     Verdict::Invalid(_) => { /* 401 */ }
//!     Verdict::Unavailable => { /* 503: never let it through */ }
//! }
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod client;
pub mod consumer;
pub mod guard;
pub mod server;
pub mod settings;
pub mod startup;
pub mod verifier;
