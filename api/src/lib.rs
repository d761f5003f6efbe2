//! Keyward admin API: the actix-web application behind `keyward-api`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin_cli;
pub mod auth;
pub mod bootstrap;
pub mod caller_memo;
pub mod denied;
pub mod embed;
pub mod error;
pub mod expiry_sweep;
pub mod extract;
pub mod failed_proofs;
pub mod fill_gate;
pub mod first_look;
pub mod fixed_window;
pub mod generations;
pub mod interned;
pub mod key_loader;
pub mod observe;
pub mod proof_turns;
pub mod provision;
pub mod request_id;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod usage;
pub mod verify;
pub mod verify_cache;
