//! (1) Keys: one database grown to each step (1k … 1M keys across 1,000
//! tenants, half of them in one big tenant, each key with a role),
//! written through the store;
//! at each step a cold `keyward-api` (release, defaults) answers list
//! pages of the big tenant (first page, a cursor three quarters deep, every
//! status filter) and verifications on a hit and on a miss, next to its
//! own healthz; then its memory once 100,000 keys (or all) are cached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use keyward_core::digest::KeyDigest;
use keyward_core::ids::{KeyId, KeyName, RoleName, TenantId};
use keyward_core::privilege::{Privilege, PrivilegeKind, StreamPattern};
use keyward_core::store::{NewApiKey, Store};
use keyward_core::testing::{TestDatabase, change};
use keyward_core::token::{ApiKeyToken, KeyPrefix};
use keyward_tests::Running;
use keyward_tests::bench::wrk::{self, Wrk};
use keyward_tests::bench::{PASSWORD, metric, metrics, ms, quantile, rss_bytes, started};

use crate::report;

/// The tenant that holds half of the keys; the others share the rest.
const BIG: &str = "big";
/// A tenant with `SMALL_KEYS` keys whatever the step (`plan`).
const SMALL: &str = "small";
const SMALL_KEYS: usize = 60;
const OTHER_TENANTS: usize = 998;
/// `big`'s first keys, where a revoked and an expired page are dense.
const EARLY: usize = 200;
/// Of the big tenant's keys, one in this many is revoked and one expired:
/// the rare filters a scan would pay for.
const RARE: usize = 1_000;
/// The role every tenant's keys hold, as real keys hold one (a page of
/// keys reads their role links: a bench without them hid a listing that
/// read the links of every key between a page's first and last).
const ROLE: &str = "ingest";
/// Keys cached before the API's memory is read.
const CACHED: usize = 100_000;
/// Sequential requests per list figure, after `LIST_WARMUP` unmeasured
/// ones (the first proves the password; the API has just started).
const LIST_REQUESTS: usize = 2_000;
const LIST_WARMUP: usize = 50;
const WRK_SECONDS: u64 = 5;
const WRK: (usize, usize) = (2, 64);

/// What the growing database holds, as the bench needs it.
#[derive(Default)]
struct Seeded {
    /// Secrets of the keys that verify valid.
    active: Vec<String>,
    /// Ids of the big tenant's keys.
    big: Vec<String>,
    verifier: String,
}

/// Key `i`'s tenant and fate: which tenant, revoked, expired, expiring.
///
/// Every page measured is a full page at every step, so that the steps
/// compare like with like: `big`'s first `EARLY` keys hold a page of
/// revoked and a page of expired ones among them (what 1,000 keys can
/// show); past those, one in `RARE`, so that from 100k keys on the newest
/// page of each spans ~50,000 of the tenant's keys. `SMALL` gets the first
/// `SMALL_KEYS` of the other tenants' keys and no more: the same page at
/// any size.
fn plan(i: usize) -> (TenantId, bool, bool, bool) {
    let j = i / 2;
    if i.is_multiple_of(2) {
        let t = TenantId::parse(BIG).unwrap();
        let early = j < EARLY;
        (
            t,
            if early { j % 4 == 1 } else { j % RARE == 1 },
            if early { j % 4 == 2 } else { j % RARE == 2 },
            false,
        )
    } else if j < SMALL_KEYS {
        (TenantId::parse(SMALL).unwrap(), false, false, false)
    } else {
        let t = TenantId::parse(&format!("t{:03}", j % OTHER_TENANTS)).unwrap();
        (t, false, false, j.is_multiple_of(2))
    }
}

pub async fn run(stores: &[&str], steps: &[usize]) {
    let mut lists = Vec::new();
    let mut verify = Vec::new();
    for store in stores {
        let Some(db) = crate::database(store).await else {
            continue;
        };
        let s = db.store();
        let mut seeded = setup(&s).await;
        let mut have = 0;
        for &step in steps {
            let started_at = Instant::now();
            for chunk in (have..step).step_by(ANALYZE_EVERY) {
                seed(&s, chunk, (chunk + ANALYZE_EVERY).min(step), &mut seeded).await;
                // The keys that expired are marked as the API's minute
                // sweep (`expiry_sweep`) would have marked them by now.
                while s
                    .sweep_expired_keys(chrono::Utc::now(), 1_000)
                    .await
                    .unwrap()
                    > 0
                {}
                if *store == "postgres" {
                    crate::analyze(db.url.as_str()).await;
                }
            }
            let rate = (step - have) as f64 / started_at.elapsed().as_secs_f64();
            have = step;
            eprintln!("{store}: {step} keys ({rate:.0} keys/s through the store)");
            let (l, v) = measure(&db, store, step, &seeded).await;
            lists.push(l);
            verify.push(v);
            let text = format!(
                "{}\n{}",
                report::table(LIST_HEADER, &lists),
                report::table(VERIFY_HEADER, &verify)
            );
            println!("{text}");
            report::write("keys", &text);
        }
    }
}

const LIST_HEADER: &[&str] = &[
    "store",
    "keys",
    "healthz p50",
    "first page",
    "cursor ¾ deep",
    "status=active",
    "status=revoked",
    "status=expired",
    "small tenant",
];
const VERIFY_HEADER: &[&str] = &[
    "store",
    "keys",
    "healthz (wrk)",
    "verify, hit (1,000 keys)",
    "verify, miss (cache off)",
    "API RSS: ready → keys cached",
];

/// Keys written between two `ANALYZE`s on PostgreSQL.
const ANALYZE_EVERY: usize = 100_000;

/// The tenants and the ingestors' verifier key.
async fn setup(store: &Arc<dyn Store>) -> Seeded {
    let now = change();
    let ingest = vec![Privilege::new(
        PrivilegeKind::Ingestor,
        Some(StreamPattern::parse("events-*").unwrap()),
    )];
    let tenants = [BIG.to_owned(), SMALL.to_owned()]
        .into_iter()
        .chain((0..OTHER_TENANTS).map(|t| format!("t{t:03}")));
    for t in tenants {
        let id = TenantId::parse(&t).unwrap();
        store.create_tenant(&id, None, &now).await.unwrap();
        let role = RoleName::parse(ROLE).unwrap();
        // A change each: a role's change is an event with its own id.
        store
            .put_role(&id, &role, &ingest, &change())
            .await
            .unwrap();
    }
    let verifier = new_key(&TenantId::platform(), "verifier", RoleName::VERIFIER, None);
    store.create_key(&verifier.0, &now).await.unwrap();
    Seeded {
        verifier: verifier.1,
        ..Seeded::default()
    }
}

fn new_key(
    tenant: &TenantId,
    name: &str,
    role: &str,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> (NewApiKey, String) {
    let key_id = KeyId::new();
    let token = ApiKeyToken::generate(&KeyPrefix::default(), key_id).unwrap();
    let roles = if role.is_empty() {
        Vec::new()
    } else {
        vec![RoleName::parse(role).unwrap()]
    };
    let key = NewApiKey {
        key_id,
        tenant_id: tenant.clone(),
        name: KeyName::parse(name).unwrap(),
        roles,
        start: token.start(),
        secret_hash: KeyDigest::of(token.expose_secret()).encode(),
        created_by: "scale".into(),
        created_at: chrono::Utc::now(),
        expires_at,
    };
    (key, token.expose_secret().to_owned())
}

/// Keys `from..to`, through the store: one writer on SQLite (it takes one
/// at a time), eight on PostgreSQL.
async fn seed(store: &Arc<dyn Store>, from: usize, to: usize, seeded: &mut Seeded) {
    let writers = if store.backend() == "sqlite" { 1 } else { 8 };
    let written = futures_util::future::join_all((0..writers).map(|w| {
        let store = Arc::clone(store);
        async move {
            let mut out = Vec::new();
            for i in (from + w..to).step_by(writers) {
                let (tenant, revoked, expired, expiring) = plan(i);
                let now = chrono::Utc::now();
                let expires_at = if expired {
                    Some(now - chrono::Duration::days(1))
                } else if expiring {
                    Some(now + chrono::Duration::days(365))
                } else {
                    None
                };
                let (key, secret) = new_key(&tenant, &format!("k{i}"), ROLE, expires_at);
                store.create_key(&key, &change()).await.unwrap();
                if revoked {
                    store
                        .revoke_key(&tenant, key.key_id, &change())
                        .await
                        .unwrap();
                }
                let valid = !revoked && !expired;
                out.push((
                    tenant.as_str() == BIG,
                    key.key_id.to_string(),
                    valid.then_some(secret),
                ));
            }
            out
        }
    }))
    .await;
    for (big, id, secret) in written.into_iter().flatten() {
        if big {
            seeded.big.push(id);
        }
        seeded.active.extend(secret);
    }
}

async fn api(db: &TestDatabase, extra: &[(&str, &str)]) -> Running {
    let mut env = vec![
        ("KEYWARD_DATABASE_URL", db.url.as_str()),
        ("KEYWARD_ADMIN_PASSWORD", PASSWORD),
    ];
    env.extend_from_slice(extra);
    started("keyward-api", &env).await
}

/// One step's rows: list latencies, and verification with memory.
async fn measure(
    db: &TestDatabase,
    store: &str,
    keys: usize,
    seeded: &Seeded,
) -> (Vec<String>, Vec<String>) {
    let node = api(db, &[]).await;
    let pid = node.child.id().unwrap();
    let rss_ready = rss_bytes(pid);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();

    // Lists, one connection, one request at a time.
    let mut big = seeded.big.clone();
    big.sort_unstable_by(|a, b| b.cmp(a));
    let deep = &big[big.len() * 3 / 4];
    let cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{deep}"));
    let healthz = sequential(&http, &node.url("/healthz"), None).await;
    let base = format!("/api/v1/tenants/{BIG}/apikeys");
    let mut list_row = vec![store.to_owned(), keys.to_string(), p50(&healthz)];
    for query in [
        String::new(),
        format!("?cursor={cursor}"),
        "?status=active".into(),
        "?status=revoked".into(),
        "?status=expired".into(),
    ] {
        let took = sequential(&http, &node.url(&format!("{base}{query}")), Some(deep)).await;
        list_row.push(p50_p99(&took));
    }
    let small = format!("/api/v1/tenants/{SMALL}/apikeys");
    let small = sequential(&http, &node.url(&small), None).await;
    list_row.push(p50_p99(&small));

    // Verification under wrk: healthz, then 1,000 keys cached.
    let healthz = wrk::run(WRK, &node, "/healthz", WRK_SECONDS, None);
    let hits = spread(&seeded.active, 1_000);
    wrk::run(WRK, &node, "/", 2, Some((&hits, &seeded.verifier)));
    let hit = wrk::run(
        WRK,
        &node,
        "/",
        WRK_SECONDS,
        Some((&hits, &seeded.verifier)),
    );

    // Memory once CACHED keys (or every valid one) have been verified.
    let cached = spread(&seeded.active, CACHED);
    // Every key verified so far was read from the store once (then
    // cached): done when that count covers the keys asked for.
    let mut read = 0.0;
    for _ in 0..10 {
        let secs = (cached.len() as u64 / 5_000).clamp(3, 30);
        wrk::run(WRK, &node, "/", secs, Some((&cached, &seeded.verifier)));
        read = metric(
            &metrics(&node).await,
            "keyward_verify_store_reads_total",
            &[],
        );
        if read >= cached.len() as f64 {
            break;
        }
    }
    let rss_cached = rss_bytes(pid);
    drop(node);

    // Misses: the cache off, so every verify reads its key (and the
    // caller's) from the store.
    let node = api(db, &[("KEYWARD_VERIFY_CACHE_TTL_SECONDS", "0")]).await;
    let misses = spread(&seeded.active, CACHED);
    let miss = wrk::run(
        WRK,
        &node,
        "/",
        WRK_SECONDS,
        Some((&misses, &seeded.verifier)),
    );
    drop(node);

    let verify_row = vec![
        store.to_owned(),
        keys.to_string(),
        healthz.summary(),
        ratio(&hit, &healthz),
        ratio(&miss, &healthz),
        format!(
            "{} → {} ({} keys read and cached)",
            mib(rss_ready),
            mib(rss_cached),
            read as u64
        ),
    ];
    (list_row, verify_row)
}

/// `LIST_REQUESTS` GETs of `url` one after another as the admin, after
/// `LIST_WARMUP` unmeasured ones; each answer must be a 200, and with
/// `below` every key it lists must sort before that id.
async fn sequential(http: &reqwest::Client, url: &str, below: Option<&str>) -> Vec<Duration> {
    let mut took = Vec::with_capacity(LIST_REQUESTS);
    for n in 0..LIST_REQUESTS + LIST_WARMUP {
        let began = Instant::now();
        let res = http
            .get(url)
            .basic_auth("admin", Some(PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{url}");
        let body = res.bytes().await.unwrap();
        let elapsed = began.elapsed();
        if n == 0
            && url.contains("cursor=")
            && let Some(below) = below
        {
            let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let first = page["items"][0]["keyId"].as_str().unwrap_or_default();
            assert!(!first.is_empty() && first < below, "{url}: {first}");
        }
        if n >= LIST_WARMUP {
            took.push(elapsed);
        }
    }
    took.sort();
    took
}

/// `n` items spread evenly over `all` (all of them when there are fewer).
fn spread(all: &[String], n: usize) -> Vec<String> {
    let step = (all.len() / n.max(1)).max(1);
    all.iter().step_by(step).take(n).cloned().collect()
}

fn p50(sorted: &[Duration]) -> String {
    ms(quantile(sorted, 0.5))
}

fn p50_p99(sorted: &[Duration]) -> String {
    format!(
        "{} / {}",
        ms(quantile(sorted, 0.5)),
        ms(quantile(sorted, 0.99))
    )
}

fn ratio(run: &Wrk, baseline: &Wrk) -> String {
    format!(
        "{} ({:.0} %)",
        run.summary(),
        100.0 * run.rps() / baseline.rps().max(1.0)
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}
