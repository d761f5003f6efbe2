//! Keyward admin API: the actix-web application behind `keyward-api`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bootstrap;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
