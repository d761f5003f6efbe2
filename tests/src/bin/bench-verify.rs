//! Verification figures measured as a user meets them: the real release
//! binaries at their default settings, load from this separate process or
//! from `wrk`, cold starts, runs longer than the cache TTL, each figure
//! next to its baseline in the same run.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/bench-verify all        # or one: cold hit rotating miss floor miss-pg basic propagation
//! target/release/bench-verify instructions   # user-space instructions per request, under valgrind
//! ```
//!
//! Needs `wrk` (`apt-get install wrk`) for the throughput figures, and
//! PostgreSQL and RabbitMQ (as the tests) for `miss-pg` and `propagation`.
//! `KEYWARD_BENCH_SETTINGS="NAME=value,…"` starts every binary with those
//! settings besides the bench's own (trials against the defaults).
//! `KEYWARD_BENCH_MISS_WARMUP` (s, 10; 0 for none): `miss`'s verify before
//! its turns. Each turn's p99 goes to stderr (the table has the worst).
//! Results go to stdout as Markdown table rows for `docs/BENCHMARKS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keyward_core::digest::KeyDigest;
use keyward_core::ids::{KeyId, KeyName, RoleName, TenantId};
use keyward_core::privilege::{Privilege, PrivilegeKind};
use keyward_core::store::{NewApiKey, Store};
use keyward_core::testing::TestDatabase;
use keyward_core::token::{ApiKeyToken, KeyPrefix};
use keyward_tests::Running;
use keyward_tests::bench::raw_client::{self, RawClient};
use keyward_tests::bench::wrk::{Wrk, latency, run as wrk_sized, run_get_cycling};
use keyward_tests::bench::{
    PASSWORD, admin, cpu_seconds, env_or, metric, metrics, ms, poll_pause, quantile, started,
    started_under, until_all,
};
use serde_json::{Value, json};

const CONNECTIONS: usize = 64;
/// wrk's threads.
const THREADS: usize = 2;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let all = what == "all";
    let run = |name: &str| all || what == name;
    println!(
        "# bench-verify, {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    if run("cold") {
        cold_start().await;
    }
    if run("hit") {
        hit_and_healthz().await;
    }
    if run("rotating") {
        rotating().await;
    }
    if run("miss") {
        miss_sqlite().await;
    }
    // Not part of `all`: minutes under valgrind, and needs it installed.
    if what == "instructions" {
        instructions().await;
    }
    if run("miss-pg") {
        miss_postgres().await;
    }
    if run("floor") {
        floor().await;
    }
    if run("basic") {
        basic_admin().await;
    }
    if run("propagation") {
        propagation().await;
    }
}

/// Keys of one tenant holding an `ingestor` role, and a `verifier` key of
/// `_platform`, written through the store with their SHA-256 digests.
struct Seeded {
    keys: Vec<String>,
    verifier: String,
}

async fn seed(store: &Arc<dyn Store>, n: usize) -> Seeded {
    let now = keyward_core::testing::change();
    let tenant = TenantId::parse("bench").unwrap();
    store.create_tenant(&tenant, None, &now).await.unwrap();
    let role = RoleName::parse("shippers").unwrap();
    let ingest = Privilege::new(PrivilegeKind::Ingestor, None);
    store
        .put_role(&tenant, &role, &[ingest], &now)
        .await
        .unwrap();
    let verifier = insert(store, &TenantId::platform(), "verifier", RoleName::VERIFIER).await;
    let started = Instant::now();
    // SQLite takes one writer at a time: more only wait on its lock.
    let writers = if store.backend() == "sqlite" { 1 } else { 8 };
    let keys = futures_util::future::join_all((0..writers).map(|_| {
        let (store, tenant) = (Arc::clone(store), tenant.clone());
        async move {
            let mut out = Vec::new();
            for _ in 0..n / writers {
                out.push(insert(&store, &tenant, "k", "shippers").await);
            }
            out
        }
    }))
    .await
    .concat();
    eprintln!("seeded {} keys in {:.1?}", keys.len(), started.elapsed());
    Seeded { keys, verifier }
}

async fn insert(store: &Arc<dyn Store>, tenant: &TenantId, name: &str, role: &str) -> String {
    let key_id = KeyId::new();
    let token = ApiKeyToken::generate(&KeyPrefix::default(), key_id).unwrap();
    let now = chrono::Utc::now();
    let key = NewApiKey {
        key_id,
        tenant_id: tenant.clone(),
        name: KeyName::parse(&format!("{name}-{key_id}")).unwrap(),
        roles: vec![RoleName::parse(role).unwrap()],
        start: token.start(),
        secret_hash: KeyDigest::of(token.expose_secret()).encode(),
        created_by: "bench".into(),
        created_at: now,
        expires_at: None,
    };
    store
        .create_key(&key, &keyward_core::testing::change())
        .await
        .unwrap();
    token.expose_secret().to_owned()
}

/// `keyward-api` at its defaults but for `env`; ready.
async fn api(db: &TestDatabase, env: &[(&str, &str)]) -> Running {
    api_under(&[], db, env).await
}

/// (1) Cold start: 10,000 fresh keys, 64 connections of this process
/// against an API that has just started; four requests in a row ask for
/// the same key (clients of one key arrive together). Until every key has
/// been answered valid once.
async fn cold_start() {
    let n: usize = env_or("KEYWARD_BENCH_KEYS", 10_000);
    let db = TestDatabase::sqlite().await;
    let seeded = seed(&db.store(), n).await;
    let node = api(&db, &[]).await;
    // Formatted before the clock starts, as wrk's script does.
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        seeded
            .keys
            .iter()
            .map(|k| {
                let body = json!({ "apiKey": k }).to_string();
                raw_client::post_json(node.port, "/api/v1/verify", &seeded.verifier, &body)
            })
            .collect(),
    );
    let seen: Arc<Vec<AtomicBool>> = Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
    let remaining = Arc::new(AtomicUsize::new(n));
    let cursor = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(RawClient::connect(node.port).await);
    }
    // What the window cost the API and this process (the 64 clients share
    // the two cores with it): where the seconds went.
    let api_pid = node.child.id().unwrap();
    let (api_cpu, own_cpu) = (cpu_seconds(api_pid), cpu_seconds(std::process::id()));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (requests, seen, remaining, cursor) = (
                Arc::clone(&requests),
                Arc::clone(&seen),
                Arc::clone(&remaining),
                Arc::clone(&cursor),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while remaining.load(Ordering::Acquire) > 0 {
                    let k = (cursor.fetch_add(1, Ordering::Relaxed) / 4) % requests.len();
                    let t = Instant::now();
                    let answer = client.send(&requests[k]).await;
                    assert_eq!(answer.status, 200, "verify answered");
                    let valid = answer.body.starts_with(br#"{"valid":true"#);
                    latencies.push(t.elapsed());
                    if valid && !seen[k].swap(true, Ordering::AcqRel) {
                        remaining.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let all_valid = started.elapsed();
    let (api_cpu, own_cpu) = (
        cpu_seconds(api_pid) - api_cpu,
        cpu_seconds(std::process::id()) - own_cpu,
    );
    latencies.sort();
    let text = metrics(&node).await;
    let reads = metric(&text, "keyward_verify_store_reads_total", &[]);
    // One of them was the verifier key's own.
    let per_key = (reads - 1.0) / n as f64;
    println!(
        "| cold start: {n} fresh keys, {CONNECTIONS} connections, until every key answered valid | \
         **{:.2} s**, {} requests ({:.0} req/s), p50 {}, p99 {}; store reads per key **{per_key:.3}**; \
         CPU: the API {api_cpu:.2} s ({:.1} µs a request), the bench's clients {own_cpu:.2} s ({:.1} µs) |",
        all_valid.as_secs_f64(),
        latencies.len(),
        latencies.len() as f64 / all_valid.as_secs_f64(),
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.99)),
        api_cpu * 1e6 / latencies.len() as f64,
        own_cpu * 1e6 / latencies.len() as f64,
    );
}

/// A reqwest client that keeps one connection.
fn one_connection() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap()
}

/// `wrk` with 2 threads and 64 connections for `seconds` against `node`;
/// with `keys`, `POST /api/v1/verify` cycling through them (requests
/// formatted once in each thread's `init`), else `GET path`.
fn wrk(node: &Running, path: &str, seconds: u64, keys: Option<(&[String], &str)>) -> Wrk {
    wrk_sized((THREADS, CONNECTIONS), node, path, seconds, keys)
}

/// Verify answers that `node` counted: all, valid, from the cache.
#[derive(Default, Clone, Copy)]
struct Mix {
    all: f64,
    valid: f64,
    hits: f64,
}

impl Mix {
    fn add(&mut self, other: Mix) {
        self.all += other.all;
        self.valid += other.valid;
        self.hits += other.hits;
    }

    /// What `node` has counted since it started.
    async fn counted(node: &Running) -> Mix {
        let text = metrics(node).await;
        let n = |with: &[&str]| metric(&text, "keyward_verify_total", with);
        Mix {
            all: n(&[]),
            valid: n(&["result=\"valid\""]),
            hits: n(&["cache=\"hit\""]),
        }
    }

    fn since(self, before: Mix) -> Mix {
        Mix {
            all: self.all - before.all,
            valid: self.valid - before.valid,
            hits: self.hits - before.hits,
        }
    }

    /// "x % valid, y % from the cache"
    fn summary(&self) -> String {
        format!(
            "{:.1} % valid, {:.1} % from the cache",
            100.0 * self.valid / self.all,
            100.0 * self.hits / self.all
        )
    }
}

/// wrk on `POST /api/v1/verify` over `keys`, with the answers `node`
/// counted meanwhile.
async fn measured_verify(
    node: &Running,
    seconds: u64,
    keys: &[String],
    verifier: &str,
) -> (Wrk, Mix) {
    let before = Mix::counted(node).await;
    let run = wrk(node, "/api/v1/verify", seconds, Some((keys, verifier)));
    (run, Mix::counted(node).await.since(before))
}

/// Turns of 10 s: a baseline run, then a verify run. This machine's speed
/// drifts (seen: healthz from 79k to 100k req/s in consecutive 10 s runs);
/// in turns, the drift weighs on both alike, where one long run after the
/// other credits or charges it to whichever came second.
const TURNS: usize = 3;
const TURN_SECONDS: u64 = 10;

/// Each kind of run a verify figure is measured with, merged over `TURNS`.
struct Turns {
    /// `GET /healthz`, one request formatted once by wrk.
    healthz: Wrk,
    /// `GET /healthz` made by the same Lua as verify's requests: the load
    /// costs wrk what verify's does, so the two differ by the server only.
    healthz_lua: Wrk,
    verify: Wrk,
    mix: Mix,
}

/// "server CPU x µs/request, wrk's y"
fn cpu(w: &Wrk) -> String {
    format!(
        "server CPU {:.1} µs/request, wrk's {:.1}",
        w.cpu_us(),
        w.load_cpu_us()
    )
}

impl Turns {
    /// The two healthz rows and verify's, as the tables show them.
    fn rows(&self, store: &str, verify: &str) {
        let Self {
            healthz,
            healthz_lua,
            verify: v,
            mix,
        } = self;
        println!(
            "| {store}wrk `GET /healthz`, {TURNS} × {TURN_SECONDS} s in turns | {}; {} |",
            healthz.summary(),
            cpu(healthz)
        );
        println!(
            "| {store}the same, each request made by the Lua that makes verify's | {}; {} |",
            healthz_lua.summary(),
            cpu(healthz_lua)
        );
        println!(
            "| {store}{verify}, {TURNS} × {TURN_SECONDS} s in turns | {}; {}; **{:.0} % of healthz**, \
             {:.0} % of the Lua-made healthz; {}; server CPU = {:.0} % of healthz's |",
            v.summary(),
            mix.summary(),
            100.0 * v.rps() / healthz.rps(),
            100.0 * v.rps() / healthz_lua.rps(),
            cpu(v),
            100.0 * v.cpu_us() / healthz.cpu_us()
        );
    }
}

/// `TURNS` turns of healthz (plain, then made by Lua) then verify over
/// `seeded` on `node`.
async fn healthz_and_verify_in_turns(node: &Running, seeded: &Seeded) -> Turns {
    let (mut health, mut health_lua, mut verify, mut mix) =
        (Vec::new(), Vec::new(), Vec::new(), Mix::default());
    for _ in 0..TURNS {
        health.push(wrk(node, "/healthz", TURN_SECONDS, None));
        health_lua.push(run_get_cycling(
            (THREADS, CONNECTIONS),
            node,
            "/healthz",
            TURN_SECONDS,
            seeded.keys.len(),
        ));
        let (run, m) = measured_verify(node, TURN_SECONDS, &seeded.keys, &seeded.verifier).await;
        verify.push(run);
        mix.add(m);
        // The table gives each figure's worst turn: each turn's, to see
        // whether one turn or all hold the tail.
        let p99 = |runs: &[Wrk]| runs.last().map_or(0.0, |r| r.p99_us);
        eprintln!(
            "turn {}: p99 healthz {}, Lua-made healthz {}, verify {}",
            verify.len(),
            latency(p99(&health)),
            latency(p99(&health_lua)),
            latency(p99(&verify))
        );
    }
    Turns {
        healthz: Wrk::merged(&health),
        healthz_lua: Wrk::merged(&health_lua),
        verify: Wrk::merged(&verify),
        mix,
    }
}

/// Turns of the cold-start figure: 7 × 10 s of verify, as long as the
/// one cold run, spanning the 60 s TTL.
const COLD_TURNS: usize = 7;

/// (2) Cache hits under wrk next to healthz on the same server: first a
/// run longer than the 60 s TTL from a cold start (entries expire and are
/// filled again), with healthz before and after it; then verify and
/// healthz in turns, warm; then the cold start again on a new process, in
/// turns.
async fn hit_and_healthz() {
    let n: usize = env_or("KEYWARD_BENCH_KEYS", 10_000);
    let seconds: u64 = env_or("KEYWARD_BENCH_SECONDS", 70);
    let db = TestDatabase::sqlite().await;
    let seeded = seed(&db.store(), n).await;
    let node = api(&db, &[]).await;
    let before = wrk(&node, "/healthz", TURN_SECONDS, None);
    let (cold, cold_mix) = measured_verify(&node, seconds, &seeded.keys, &seeded.verifier).await;
    let after = wrk(&node, "/healthz", TURN_SECONDS, None);
    let around = Wrk::merged(&[before, after]);
    let turns = healthz_and_verify_in_turns(&node, &seeded).await;
    println!(
        "| wrk `GET /healthz`, {CONNECTIONS} connections, 10 s before and 10 s after the cold run | {}; \
         server CPU {:.1} µs/request |",
        around.summary(),
        around.cpu_us()
    );
    println!(
        "| wrk `POST /api/v1/verify`, {n} keys, TTL 60 s, {seconds} s from a cold start | {}; {}; \
         **{:.0} % of healthz**; server CPU {:.1} µs/request |",
        cold.summary(),
        cold_mix.summary(),
        100.0 * cold.rps() / around.rps(),
        cold.cpu_us()
    );
    turns.rows("warm: ", "verify");
    drop(node);
    cold_in_turns(&db, &seeded).await;
}

/// The cold run again, on a process started afresh, in turns: 10 s of
/// verify then 10 s of healthz, `COLD_TURNS` times. The first turn holds
/// the cold start; the keys filled then expire in the fourth (60 s of wall
/// clock later) and are filled again. The one 70 s run compares verify
/// with healthz measured minutes apart, and this machine's speed drifts by
/// up to a third within two minutes (seen: healthz 113 k → 74 k req/s at
/// the same server CPU per second); in turns the drift weighs on both.
async fn cold_in_turns(db: &TestDatabase, seeded: &Seeded) {
    let node = api(db, &[]).await;
    let (mut health, mut verify, mut mix) = (Vec::new(), Vec::new(), Mix::default());
    for _ in 0..COLD_TURNS {
        let (run, m) = measured_verify(&node, TURN_SECONDS, &seeded.keys, &seeded.verifier).await;
        verify.push(run);
        mix.add(m);
        health.push(wrk(&node, "/healthz", TURN_SECONDS, None));
    }
    let (health, verify) = (Wrk::merged(&health), Wrk::merged(&verify));
    println!(
        "| cold, in turns: wrk `GET /healthz`, {COLD_TURNS} × {TURN_SECONDS} s, each after a verify turn | {}; {} |",
        health.summary(),
        cpu(&health)
    );
    println!(
        "| cold, in turns: verify from a new process, {COLD_TURNS} × {TURN_SECONDS} s (the TTL ends in the fourth) | {}; {}; \
         **{:.0} % of healthz**; {}; server CPU = {:.0} % of healthz's |",
        verify.summary(),
        mix.summary(),
        100.0 * verify.rps() / health.rps(),
        cpu(&verify),
        100.0 * verify.cpu_us() / health.cpu_us()
    );
}

/// (3) A rotating set: 100,000 keys with a 5 s TTL, from a cold start,
/// in turns with the all-hit figure of 10,000 keys (TTL 60 s, warm) on a
/// second server with a database of its own (one process owns a SQLite
/// file).
async fn rotating() {
    let hot_db = TestDatabase::sqlite().await;
    let hot = seed(&hot_db.store(), 10_000).await;
    let db = TestDatabase::sqlite().await;
    let seeded = seed(&db.store(), 100_000).await;
    let hot_node = api(&hot_db, &[]).await;
    let _ = wrk(
        &hot_node,
        "/api/v1/verify",
        3,
        Some((&hot.keys, &hot.verifier)),
    );
    let node = api(&db, &[("KEYWARD_VERIFY_CACHE_TTL_SECONDS", "5")]).await;
    let (mut all_hit, mut rot, mut mix) = (Vec::new(), Vec::new(), Mix::default());
    for _ in 0..TURNS {
        all_hit.push(wrk(
            &hot_node,
            "/api/v1/verify",
            TURN_SECONDS,
            Some((&hot.keys, &hot.verifier)),
        ));
        let (run, m) = measured_verify(&node, TURN_SECONDS, &seeded.keys, &seeded.verifier).await;
        rot.push(run);
        mix.add(m);
    }
    let (all_hit, rot) = (Wrk::merged(&all_hit), Wrk::merged(&rot));
    println!(
        "| all hits: 10,000 keys, TTL 60 s, warm, {TURNS} × {TURN_SECONDS} s in turns | {}; \
         server CPU {:.1} µs/request |",
        all_hit.summary(),
        all_hit.cpu_us()
    );
    println!(
        "| rotating: 100,000 keys, TTL 5 s, from cold, {TURNS} × {TURN_SECONDS} s in turns | {}; {}; \
         **{:.0} % of all hits**; server CPU {:.1} µs/request |",
        rot.summary(),
        mix.summary(),
        100.0 * rot.rps() / all_hit.rps(),
        rot.cpu_us()
    );
}

/// (4) Misses on SQLite: 100,000 keys and a 1 s TTL, so every key is gone
/// from the cache before wrk asks for it again (the verifier's own key,
/// asked on every request, stays cached), in turns with healthz, after a
/// warm-up of verify (`KEYWARD_BENCH_MISS_WARMUP` s, 10; its own row).
///
/// Why the warm-up: a steady state of misses, not the API's first pass
/// over the keys. Without it the first verify turn held one-off work —
/// the first `lastUsedAt` of 100,000 never-used keys (one big flush),
/// the caches' and the usage recorder's tables growing, the readers'
/// page caches filling: its p99 was 4.96–5.51 ms in four runs, the later
/// turns' 4.38–4.54 ms but for one at 5.55 ms. The first moments of a new
/// API are the cold-start figure's.
async fn miss_sqlite() {
    let db = TestDatabase::sqlite().await;
    let seeded = seed(&db.store(), 100_000).await;
    // TTL 1 s: no key comes round within a second, the caller's own key
    // stays cached. TTL 0: the cache off, so every verify reads both the
    // key asked about and the caller's own from the store (the issue's
    // "TTL 0 or the cache disabled").
    for (ttl, what) in [
        (
            "1",
            "TTL 1 s: every key asked about a miss, the caller's cached",
        ),
        (
            "0",
            "TTL 0 (cache off): the key asked about and the caller's own both read",
        ),
    ] {
        let node = api(&db, &[("KEYWARD_VERIFY_CACHE_TTL_SECONDS", ttl)]).await;
        let warmup: u64 = env_or("KEYWARD_BENCH_MISS_WARMUP", 10);
        if warmup > 0 {
            let (run, mix) = measured_verify(&node, warmup, &seeded.keys, &seeded.verifier).await;
            println!(
                "| SQLite: warm-up, wrk verify, {what}, {warmup} s | {}; {} |",
                run.summary(),
                mix.summary()
            );
        }
        let turns = healthz_and_verify_in_turns(&node, &seeded).await;
        turns.rows("SQLite: ", &format!("wrk verify, 100,000 keys, {what}"));
    }
}

/// (4b) The framework's floor: the cached verify and healthz of
/// `keyward-api`, then the same two loads (the same keys, caller and wrk
/// script) against `bench-floor`, a bare actix-web server that answers
/// verify's request shape without middleware, authentication or
/// verification. The floor's verify-shaped ÷ healthz is what the HTTP
/// exchange alone allows on this stack and machine; the gap between the
/// two servers' ratios is all Keyward does per request.
async fn floor() {
    let n: usize = env_or("KEYWARD_BENCH_KEYS", 10_000);
    let db = TestDatabase::sqlite().await;
    let seeded = seed(&db.store(), n).await;
    let node = api(&db, &[]).await;
    let _warm = wrk(
        &node,
        "/api/v1/verify",
        5,
        Some((&seeded.keys, &seeded.verifier)),
    );
    let keyward = healthz_and_verify_in_turns(&node, &seeded).await;
    drop(node);
    let bare = started("bench-floor", &[]).await;
    let (mut health, mut shaped) = (Vec::new(), Vec::new());
    for _ in 0..TURNS {
        health.push(wrk(&bare, "/healthz", TURN_SECONDS, None));
        shaped.push(wrk(
            &bare,
            "/api/v1/verify",
            TURN_SECONDS,
            Some((&seeded.keys, &seeded.verifier)),
        ));
    }
    let (health, shaped) = (Wrk::merged(&health), Wrk::merged(&shaped));
    keyward.rows("keyward-api: ", &format!("verify, {n} keys, cached"));
    println!(
        "| bare actix-web (`bench-floor`): wrk `GET /healthz`, {TURNS} × {TURN_SECONDS} s in turns | {}; {} |",
        health.summary(),
        cpu(&health)
    );
    println!(
        "| bare actix-web: verify's request shape, same keys and script, {TURNS} × {TURN_SECONDS} s in turns | \
         {}; **{:.0} % of its healthz**; {}; server CPU = {:.0} % of its healthz's |",
        shaped.summary(),
        100.0 * shaped.rps() / health.rps(),
        cpu(&shaped),
        100.0 * shaped.cpu_us() / health.cpu_us()
    );
}

/// User-space instructions per request of healthz, a cached verify and a
/// verify that misses, counted by callgrind in the release API: unlike
/// time on this shared 2-core machine (±15 % between runs of one binary),
/// a count repeats to within a fraction of a percent, so a change to the
/// hot path can be judged on its own. The kernel's share (TCP, wake-ups)
/// is not counted; it is the same for every kind of request. valgrind hides
/// SHA-NI, so SHA-256 counts in software here.
async fn instructions() {
    const SECONDS: u64 = 6;
    let db = TestDatabase::sqlite().await;
    let seeded = seed(&db.store(), 10_000).await;
    // KEYWARD_BENCH_CALLGRIND=dir keeps the dumps for callgrind_annotate.
    let temp = tempfile::tempdir().unwrap();
    let out = std::env::var_os("KEYWARD_BENCH_CALLGRIND")
        .map_or_else(|| temp.path().to_owned(), std::path::PathBuf::from);
    std::fs::create_dir_all(&out).unwrap();
    // One file per process (`%p`), each dump numbered after it.
    let file = out.as_path().join("cg.%p");
    let file_arg = format!("--callgrind-out-file={}", file.display());
    let under = ["valgrind", "--tool=callgrind", file_arg.as_str()];
    // Zeroes the counts, runs `load`, dumps them; instructions per request.
    let count = |node: &Running, load: &dyn Fn() -> Wrk| {
        let pid = node.child.id().unwrap().to_string();
        let control = |flag: &str| {
            let done = std::process::Command::new("callgrind_control")
                .args([flag, pid.as_str()])
                .output()
                .expect("callgrind_control runs (apt-get install valgrind)");
            assert!(done.status.success(), "callgrind_control {flag}");
        };
        control("-z");
        let run = load();
        // Numbered from the dumps already written by this process.
        let n = std::fs::read_dir(out.as_path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with(&format!("cg.{pid}."))
            })
            .count();
        control("-d");
        // callgrind writes the dump when the program next runs: wait for
        // its summary line.
        let path = out.as_path().join(format!("cg.{pid}.{}", n + 1));
        let asked = Instant::now();
        let total: f64 = loop {
            let dump = std::fs::read_to_string(&path).unwrap_or_default();
            // Written whole once the totals line is there.
            if let Some(t) = dump.lines().find_map(|l| l.strip_prefix("totals: ")) {
                break t.trim().parse().expect("a count");
            }
            assert!(
                asked.elapsed() < Duration::from_secs(30),
                "no dump at {}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        (total / run.requests, run.requests)
    };
    let few = |node: &Running, path: &str, seconds: u64, keys: Option<(&[String], &str)>| {
        wrk_sized((1, 4), node, path, seconds, keys)
    };
    // Hits: 2,000 keys, all cached first.
    let hits = &seeded.keys[..2_000];
    let node = api_under(&under, &db, &[]).await;
    let _ = few(&node, "/api/v1/verify", 10, Some((hits, &seeded.verifier)));
    let (health, n_health) = count(&node, &|| few(&node, "/healthz", SECONDS, None));
    let before = Mix::counted(&node).await;
    let (hit, n_hit) = count(&node, &|| {
        few(
            &node,
            "/api/v1/verify",
            SECONDS,
            Some((hits, &seeded.verifier)),
        )
    });
    let hit_mix = Mix::counted(&node).await.since(before);
    drop(node);
    // Misses: a 1 s TTL over 10,000 keys at valgrind's pace (a few
    // thousand requests a second): no key comes round within its TTL.
    let node = api_under(&under, &db, &[("KEYWARD_VERIFY_CACHE_TTL_SECONDS", "1")]).await;
    let _ = few(&node, "/healthz", 2, None);
    let before = Mix::counted(&node).await;
    let (miss, n_miss) = count(&node, &|| {
        few(
            &node,
            "/api/v1/verify",
            SECONDS,
            Some((&seeded.keys, &seeded.verifier)),
        )
    });
    let miss_mix = Mix::counted(&node).await.since(before);
    println!(
        "| callgrind, user-space instructions per request (1 wrk thread, 4 connections, {SECONDS} s each) | |"
    );
    println!(
        "| `GET /healthz` | {:.1} k ({n_health:.0} requests) |",
        health / 1e3
    );
    println!(
        "| verify, cached (2,000 keys) | {:.1} k = {:.2} × healthz ({n_hit:.0} requests; {}) |",
        hit / 1e3,
        hit / health,
        hit_mix.summary()
    );
    println!(
        "| verify, every key a miss (10,000 keys, TTL 1 s) | {:.1} k = {:.2} × healthz ({n_miss:.0} requests; {}) |",
        miss / 1e3,
        miss / health,
        miss_mix.summary()
    );
}

/// `api`, run under `under`.
async fn api_under(under: &[&str], db: &TestDatabase, env: &[(&str, &str)]) -> Running {
    let mut all = vec![
        ("KEYWARD_DATABASE_URL", db.url.as_str()),
        ("KEYWARD_ADMIN_PASSWORD", PASSWORD),
    ];
    all.extend_from_slice(env);
    started_under(under, "keyward-api", &all).await
}

/// (5) Misses on PostgreSQL, next to a bare `SELECT 1` round trip from
/// this process over 16 connections (the API's pool size).
async fn miss_postgres() {
    let Some(db) = TestDatabase::postgres().await else {
        println!("| PostgreSQL: not reachable, skipped |");
        return;
    };
    let n: usize = env_or("KEYWARD_BENCH_KEYS", 100_000);
    let seeded = seed(&db.store(), n).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(db.url.as_str())
        .await
        .unwrap();
    // What autovacuum does after a bulk load, and what docs/operations.md
    // tells an operator without it to do: the planner's statistics. A
    // test server may run with autovacuum off; without them the batched
    // read's generic plan scans every role link (2.4 k req/s, not 25 k).
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    let node = api(&db, &[("KEYWARD_VERIFY_CACHE_TTL_SECONDS", "1")]).await;
    let (miss, mix) = measured_verify(&node, 20, &seeded.keys, &seeded.verifier).await;
    drop(node);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (pool, stop) = (pool.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    sqlx::query("SELECT 1").execute(&pool).await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    lat.sort();
    println!(
        "| PostgreSQL: bare `SELECT 1`, 16 connections, 64 callers, 10 s | {:.0} round trips/s, p50 {}, p99 {} |",
        lat.len() as f64 / elapsed.as_secs_f64(),
        ms(quantile(&lat, 0.5)),
        ms(quantile(&lat, 0.99)),
    );
    println!(
        "| PostgreSQL: wrk verify, every key a miss ({n} keys, TTL 1 s), 20 s | {}; {} |",
        miss.summary(),
        mix.summary()
    );
}

/// (6) Admin requests with Basic auth, one after another, default argon2.
async fn basic_admin() {
    let db = TestDatabase::sqlite().await;
    let node = api(&db, &[]).await;
    let client = one_connection();
    let mut lat = Vec::new();
    for _ in 0..501 {
        let t = Instant::now();
        let res = client
            .get(node.url("/api/v1/tenants"))
            .basic_auth("admin", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap();
        lat.push(t.elapsed());
    }
    let first = lat.remove(0);
    lat.sort();
    println!(
        "| Basic `GET /api/v1/tenants`, first request (argon2id proof) | {} |",
        ms(first)
    );
    println!(
        "| Basic `GET /api/v1/tenants`, the 500 after it | p50 **{}**, p99 {} |",
        ms(quantile(&lat, 0.5)),
        ms(quantile(&lat, 0.99))
    );
}

/// (7) Revoke → reject at two reference ingestors: the real API, sync
/// worker and two `keyward-ingestor` processes on PostgreSQL and RabbitMQ,
/// default settings; the clock starts when the `DELETE` has answered.
async fn propagation() {
    let keys: usize = env_or("KEYWARD_BENCH_KEYS", 200).min(2_000);
    let Some(db) = TestDatabase::postgres_unmigrated().await else {
        println!("| propagation: PostgreSQL not reachable, skipped |");
        return;
    };
    let Some(broker) = keyward_tests::amqp::TestBroker::new().await else {
        println!("| propagation: RabbitMQ not reachable, skipped |");
        return;
    };
    let node = api(&db, &[]).await;
    let amqp = keyward_tests::amqp::amqp_url();
    let worker = started(
        "keyward-sync-worker",
        &[
            ("KEYWARD_DATABASE_URL", db.url.as_str()),
            ("KEYWARD_AMQP_URL", &amqp),
            ("KEYWARD_EXCHANGE", &broker.exchange),
            ("KEYWARD_ACKS_QUEUE", &broker.acks_queue),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let admin =
        |m: reqwest::Method, path: &str, body: Option<Value>| admin(&http, &node, m, path, body);
    let verifier: Value = admin(
        reqwest::Method::POST,
        "/api/v1/tenants/_platform/apikeys",
        Some(json!({"name": "ingestors", "roles": ["verifier"]})),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let verifier = verifier["secret"].as_str().unwrap().to_owned();
    admin(
        reqwest::Method::POST,
        "/api/v1/tenants",
        Some(json!({"id": "acme"})),
    )
    .send()
    .await
    .unwrap();
    admin(
        reqwest::Method::PUT,
        "/api/v1/tenants/acme/roles/shippers",
        Some(json!({"privileges": [{"privilege": "ingestor"}]})),
    )
    .send()
    .await
    .unwrap();
    let prefix = broker.exchange.replace(".events", "");
    let api_url = node.url("");
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let id = format!("{prefix}-{name}");
        let n = started(
            "keyward-ingestor",
            &[
                ("KEYWARD_API_URL", api_url.as_str()),
                ("KEYWARD_VERIFIER_KEY", verifier.as_str()),
                ("KEYWARD_AMQP_URL", &amqp),
                ("KEYWARD_EXCHANGE", &broker.exchange),
                ("KEYWARD_ACKS_QUEUE", &broker.acks_queue),
                ("KEYWARD_INGESTOR_ID", &id),
            ],
        )
        .await;
        nodes.push(n);
    }
    // Per key: a role of its own granting every stream; the role narrowed
    // to a stream the key never uses (privilege withdrawal: both nodes
    // must answer 403 for the key they had cached), then the key revoked
    // (both must answer 401). Clocks start when the change's answer came.
    let mut withdrawal = Vec::new();
    let mut lat = Vec::new();
    let mut traced = Vec::new();
    for i in 0..keys {
        let role = format!("/api/v1/tenants/acme/roles/w{i}");
        let all = json!({"privileges": [{"privilege": "ingestor"}]});
        let res = admin(reqwest::Method::PUT, &role, Some(all))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let created: Value = admin(
            reqwest::Method::POST,
            "/api/v1/tenants/acme/apikeys",
            Some(json!({"name": format!("k{i}"), "roles": [format!("w{i}")]})),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let secret = created["secret"].as_str().unwrap();
        let key_id = created["keyId"].as_str().unwrap();
        assert_eq!(
            until_all(&http, &nodes, secret, 202).await,
            Duration::ZERO,
            "cached"
        );
        let narrowed = json!({"privileges": [{"privilege": "ingestor", "resource": {"stream": "elsewhere-*"}}]});
        let res = admin(reqwest::Method::PUT, &role, Some(narrowed))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let answered = chrono::Utc::now();
        let event = header(&res, "keyward-event-id");
        let took = until_all(&http, &nodes, secret, 403).await;
        withdrawal.push(took);
        traced.push((took, answered, event));
        let res = admin(
            reqwest::Method::DELETE,
            &format!("/api/v1/tenants/acme/apikeys/{key_id}"),
            None,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 202);
        let answered = chrono::Utc::now();
        let event = header(&res, "keyward-event-id");
        let took = until_all(&http, &nodes, secret, 401).await;
        lat.push(took);
        traced.push((took, answered, event));
    }
    explain_slowest(db.url.as_str(), traced).await;
    for (what, status, samples) in [
        ("revoke", 401, &mut lat),
        ("privilege withdrawn (role narrowed)", 403, &mut withdrawal),
    ] {
        samples.sort();
        println!(
            "| {what} → both reference ingestors answer {status}, {keys} keys, PostgreSQL, \
             real binaries, {} ms between rounds of calls | p50 {}, **p99 {}**, max {} |",
            poll_pause().as_millis(),
            ms(quantile(samples, 0.5)),
            ms(quantile(samples, 0.99)),
            ms(*samples.last().unwrap()),
        );
    }
    rotation_under_load(&http, &node, &nodes).await;
    drop(nodes);
    drop(worker);
    drop(node);
    let ch = &broker.channel;
    for name in ["a", "b"] {
        let queue = format!("keyward.ingestor.{prefix}-{name}");
        let _ = ch
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
    broker.cleanup().await;
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Where the slowest changes spent their time, from the database's own
/// record of each event (created, published, applied per node; all clocks
/// of this machine), relative to the moment the change's answer came: so a
/// tail can be put down to the worker, the broker and consumers, or the
/// nodes' calls to the API after applying.
async fn explain_slowest(
    db_url: &str,
    mut traced: Vec<(Duration, chrono::DateTime<chrono::Utc>, String)>,
) {
    use sqlx::Connection;
    traced.sort_by_key(|t| std::cmp::Reverse(t.0));
    let Ok(mut conn) = sqlx::PgConnection::connect(db_url).await else {
        return;
    };
    println!(
        "slowest changes (ms after the change's answer: committed → published → applied at each node → both answered):"
    );
    for (took, answered, event) in traced.iter().take(5) {
        let row: Option<(
            chrono::DateTime<chrono::Utc>,
            Option<chrono::DateTime<chrono::Utc>>,
            String,
        )> =
            sqlx::query_as("SELECT created_at, published_at, kind FROM outbox WHERE event_id = $1")
                .bind(event)
                .fetch_optional(&mut conn)
                .await
                .ok()
                .flatten();
        let applied: Vec<(chrono::DateTime<chrono::Utc>,)> = sqlx::query_as(
            "SELECT applied_at FROM event_acks WHERE event_id = $1 ORDER BY applied_at",
        )
        .bind(event)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        let rel = |t: chrono::DateTime<chrono::Utc>| {
            format!(
                "{:.1}",
                (t - *answered).num_microseconds().unwrap_or(0) as f64 / 1000.0
            )
        };
        let Some((created, published, kind)) = row else {
            continue;
        };
        // The event before it: a worker waiting for its confirm publishes
        // nothing else meanwhile.
        let before: Option<(
            chrono::DateTime<chrono::Utc>,
            Option<chrono::DateTime<chrono::Utc>>,
        )> = sqlx::query_as(
            "SELECT created_at, published_at FROM outbox \
                 WHERE id < (SELECT id FROM outbox WHERE event_id = $1) ORDER BY id DESC LIMIT 1",
        )
        .bind(event)
        .fetch_optional(&mut conn)
        .await
        .ok()
        .flatten();
        let before = before.map_or(String::new(), |(c, p)| {
            format!(
                " (the event before: committed {}, published {})",
                rel(c),
                p.map_or("-".into(), rel)
            )
        });
        println!(
            "  {kind} {event}: {} → {} → {} → {}{before}",
            rel(created),
            published.map_or("-".into(), rel),
            applied
                .iter()
                .map(|(t,)| rel(*t))
                .collect::<Vec<_>>()
                .join(", "),
            ms(*took),
        );
    }
}

/// Clients load both ingestor nodes with one key; the key is rotated with
/// a 5 s grace and each client switches to the new secret at its own moment
/// within the first 3 s of the grace; the load goes on past the grace's
/// end. Every answer must be 202: the figure is the count of the others.
async fn rotation_under_load(http: &reqwest::Client, api: &Running, nodes: &[Running]) {
    const CLIENTS: u32 = 16;
    const GRACE_SECONDS: u64 = 5;
    let admin = |m: reqwest::Method, path: &str, body: Value| admin(http, api, m, path, Some(body));
    let created: Value = admin(
        reqwest::Method::POST,
        "/api/v1/tenants/acme/apikeys",
        json!({"name": "rotating", "roles": ["shippers"]}),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let old = created["secret"].as_str().unwrap().to_owned();
    let key_id = created["keyId"].as_str().unwrap().to_owned();
    let (switch, switched) = tokio::sync::watch::channel(None::<(String, Instant)>);
    let urls: Vec<String> = nodes.iter().map(|n| n.url("/ingest/clicks")).collect();
    let stop = Instant::now() + Duration::from_secs(2 + GRACE_SECONDS + 3);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (http, urls, old, switched) =
                (http.clone(), urls.clone(), old.clone(), switched.clone());
            // Client c moves to the new key this long after the rotation.
            let delay = Duration::from_millis(u64::from(c) * 3_000 / u64::from(CLIENTS));
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0_u64, 0_u64);
                let mut i = 0_usize;
                while Instant::now() < stop {
                    let secret = match &*switched.borrow() {
                        Some((new, at)) if at.elapsed() >= delay => new.clone(),
                        _ => old.clone(),
                    };
                    let res = http
                        .post(&urls[i % urls.len()])
                        .bearer_auth(&secret)
                        .body("{}")
                        .send()
                        .await;
                    i += 1;
                    match res {
                        Ok(r) if r.status().as_u16() == 202 => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rotated: Value = admin(
        reqwest::Method::POST,
        &format!("/api/v1/tenants/acme/apikeys/{key_id}/rotate"),
        json!({"gracePeriodSeconds": GRACE_SECONDS}),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    switch.send_replace(Some((new, Instant::now())));
    let (mut ok, mut failed) = (0, 0);
    for c in clients {
        let (o, f) = c.await.unwrap();
        ok += o;
        failed += f;
    }
    // And the old key is refused once its grace is over.
    assert_eq!(
        until_all(http, nodes, &old, 401).await,
        Duration::ZERO,
        "old key after its grace"
    );
    println!(
        "| rotation with a {GRACE_SECONDS} s grace under load: {CLIENTS} clients on two reference \
         ingestors, each switching to the new key within 3 s of the rotation | {} requests, \
         **{failed} failed** |",
        ok + failed
    );
}
