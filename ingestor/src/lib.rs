//! Keyward ingestor library: what an ingestion node embeds to authenticate
//! traffic with Keyward API keys and apply revocations at once.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod settings;
