//! How Keyward's cost grows with its work on this machine (issue #17): the
//! real release binaries at their defaults, load from this process or from
//! `wrk`, each figure next to a baseline of the same run. Each part prints
//! its table and writes it into `docs/BENCHMARKS.md` between its markers.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/scale all      # or some of: keys create storm fanout cluster
//! target/release/scale keys --steps 1000,10000 --stores sqlite
//! ```
//!
//! `--steps` (default 1000,10000,100000,1000000) are the key counts the
//! database grows through; `--stores` (default sqlite,postgres) for keys and
//! create (storm, fanout and cluster run on PostgreSQL). Needs `wrk`, and
//! PostgreSQL and RabbitMQ as the tests do; cluster starts three more
//! RabbitMQ nodes with `scripts/rabbitmq-cluster.sh` (and stops them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod create;
mod fanout;
mod fleet;
mod keys;
mod report;
mod storm;

const PARTS: &[&str] = &["keys", "create", "storm", "fanout", "cluster"];

struct Args {
    parts: Vec<String>,
    steps: Vec<usize>,
    stores: Vec<String>,
}

fn args() -> Args {
    let mut args = Args {
        parts: Vec::new(),
        steps: vec![1_000, 10_000, 100_000, 1_000_000],
        stores: vec!["sqlite".into(), "postgres".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut list = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--steps" => {
                args.steps = list()
                    .split(',')
                    .map(|s| s.parse().unwrap_or_else(|_| usage("--steps: numbers")))
                    .collect();
            }
            "--stores" => args.stores = list().split(',').map(str::to_owned).collect(),
            "all" => args.parts.extend(PARTS.iter().map(|p| (*p).to_owned())),
            part if PARTS.contains(&part) => args.parts.push(part.to_owned()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if args.parts.is_empty() {
        usage("name a part");
    }
    if args.steps.is_empty() || args.steps.windows(2).any(|w| w[0] >= w[1]) {
        usage("--steps must grow");
    }
    if let Some(s) = args
        .stores
        .iter()
        .find(|s| !["sqlite", "postgres"].contains(&s.as_str()))
    {
        usage(&format!("--stores: unknown store {s}"));
    }
    args
}

/// A fresh, migrated database of `store` (`sqlite` or `postgres`);
/// `None` when PostgreSQL is not there and services are optional.
async fn database(store: &str) -> Option<keyward_core::testing::TestDatabase> {
    use keyward_core::testing::TestDatabase;
    match store {
        "sqlite" => Some(TestDatabase::sqlite().await),
        _ => TestDatabase::postgres().await,
    }
}

/// PostgreSQL here runs with autovacuum off (this machine's CI
/// configuration). In production its autoanalyze keeps the statistics in
/// step with the tables, and new statistics make the store's prepared
/// statements plan again; without it a plan made while a table was small
/// stays. Seen here: a key's lookup by (tenant, id) planned on the
/// (tenant, status, key id) index while `api_keys` was nearly empty, then
/// reading the tenant's whole range per lookup — seeding fell from ~2,200
/// to ~600 keys/s by 300,000 keys; and the same lookup, planned while the
/// outbox and the acks were empty, scanned both whole once a storm had
/// filled them (a second storm's keys were created at ~140/s). Called
/// after each bulk write, as autovacuum would have run; it vacuums too, so
/// that index entries of rows a sweep or a storm rewrote are gone, as they
/// would be (without, each `status=expired` page visited the dead entries
/// the expiry sweep left in the unswept keys' index).
async fn analyze(url: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    // And a checkpoint: the bulk write's dirty pages are flushed before
    // the step is measured, not by a checkpoint in the middle of it (a
    // step's p99 then measured the seeding's I/O, not the API).
    for statement in ["VACUUM ANALYZE", "CHECKPOINT"] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
}

fn usage(why: &str) -> ! {
    eprintln!(
        "{why}\nusage: scale all|{} [--steps N,N,…] [--stores sqlite,postgres]",
        PARTS.join("|")
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let stores: Vec<&str> = args.stores.iter().map(String::as_str).collect();
    eprintln!(
        "# scale, {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    for part in &args.parts {
        match part.as_str() {
            "keys" => keys::run(&stores, &args.steps).await,
            "create" => create::run(&stores).await,
            "storm" => storm::run().await,
            "fanout" => fanout::run().await,
            "cluster" => cluster::run().await,
            _ => unreachable!("parts are checked in args()"),
        }
    }
}
