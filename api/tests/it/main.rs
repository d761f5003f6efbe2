//! The API's integration tests, in one binary: one link instead of four
//! on a 2-core machine (`docs/BENCHMARKS.md` has the figure).

#![allow(clippy::unwrap_used, clippy::expect_used)]

// First: its `on_both_stores!` is used by the modules below.
#[macro_use]
mod support;

mod abuse_limits;
mod admin_api;
mod authz_matrix;
mod cache_races;
mod cli;
mod embedded;
mod keys_api;
mod lifecycle_api;
