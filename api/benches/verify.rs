//! In-process verification benchmark (rerun: `cargo bench -p keyward-api
//! --bench verify`). The figures a user meets — the real binaries, load
//! from another process, cold starts, runs longer than the cache TTL — come
//! from `bench-verify` (`tests/src/bin/bench-verify.rs`); this one isolates
//! the pieces:
//!
//! 1. In-process verify on a cache hit, one thread.
//! 2. In-process verify on a cache miss (a verifier that caches nothing:
//!    a SQLite read by primary key and a SHA-256 digest each time).
//! 3. HTTP `POST /api/v1/verify` with 64 concurrent keep-alive connections
//!    over 10,000 keys, next to `GET /healthz` on the same server in the
//!    same run, and next to an "HTTP floor" server (the same middleware and
//!    JSON body reading, a verify-sized answer, no verification). Load and
//!    server share this machine's cores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyward_api::fill_gate::FillGates;
use keyward_api::generations::Generations;
use keyward_api::settings::Settings;
use keyward_api::startup::Application;
use keyward_api::verify::{Outcome, VerifyService};
use keyward_api::verify_cache::KeyCache;
use keyward_core::digest::KeyDigest;
use keyward_core::ids::{KeyId, KeyName, Password, RoleName, TenantId};
use keyward_core::password::{Argon2Settings, PasswordHasher};
use keyward_core::store::{NewApiKey, Store};
use keyward_core::testing::TestDatabase;
use keyward_core::token::{ApiKeyToken, KeyPrefix};

/// As in `keyward-api`'s main: the server measured is the one shipped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PASSWORD: &str = "benchmark password";
const CONNECTIONS: usize = 64;
const KEYS: usize = 10_000;
const LOAD_SECONDS: u64 = 10;

async fn insert_key(store: &dyn Store, tenant: &TenantId) -> ApiKeyToken {
    let key_id = KeyId::new();
    let token = ApiKeyToken::generate(&KeyPrefix::default(), key_id).unwrap();
    let now = chrono::Utc::now();
    let key = NewApiKey {
        key_id,
        tenant_id: tenant.clone(),
        name: KeyName::parse(&format!("k-{key_id}")).unwrap(),
        roles: vec![RoleName::parse("shippers").unwrap()],
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
    token
}

async fn tenant_with_role(store: &dyn Store) -> TenantId {
    let tenant = TenantId::parse("bench").unwrap();
    store
        .create_tenant(&tenant, None, &keyward_core::testing::change())
        .await
        .unwrap();
    let ingest = keyward_core::privilege::Privilege::new(
        keyward_core::privilege::PrivilegeKind::Ingestor,
        None,
    );
    store
        .put_role(
            &tenant,
            &RoleName::parse("shippers").unwrap(),
            &[ingest],
            &keyward_core::testing::change(),
        )
        .await
        .unwrap();
    tenant
}

fn in_process() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = TestDatabase::sqlite().await;
        let store = db.store();
        let tenant = tenant_with_role(store.as_ref()).await;
        let token = insert_key(store.as_ref(), &tenant).await;
        let verifier_with = |ttl: u64| {
            let generations = Arc::new(Generations::default());
            VerifyService::new(
                store.clone(),
                PasswordHasher::new(Argon2Settings::default()).unwrap(),
                KeyCache::new(100_000, Duration::from_secs(ttl), Arc::clone(&generations)),
                generations,
                Arc::new(FillGates::default()),
            )
        };

        // Cache misses: a verifier that caches nothing (TTL 0) reads the
        // row and compares SHA-256 digests every time.
        let uncached = verifier_with(0);
        let misses = 20_000u32;
        let started = Instant::now();
        for _ in 0..misses {
            assert!(matches!(
                uncached.verify(token.expose_secret()).await.unwrap(),
                Outcome::Valid(_)
            ));
        }
        let miss = started.elapsed() / misses;
        println!(
            "in-process verify, cache miss (SQLite read + SHA-256): {:.1} us/op, {:.0} ops/s",
            miss.as_secs_f64() * 1e6,
            1.0 / miss.as_secs_f64()
        );
        let verifier = verifier_with(600);

        // Cache hits on one thread.
        let secret = token.expose_secret();
        let n = 2_000_000u32;
        let started = Instant::now();
        for _ in 0..n {
            let v = verifier.verify(secret).await.unwrap();
            std::hint::black_box(&v);
        }
        let elapsed = started.elapsed();
        println!(
            "in-process verify, cache hit (1 thread): {:.0} ns/op, {:.2} M ops/s",
            elapsed.as_nanos() as f64 / f64::from(n),
            f64::from(n) / elapsed.as_secs_f64() / 1e6
        );
    });
}

struct LoadResult {
    requests: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
}

/// Builds request number `i` on a connection's client.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync>;

async fn load(make: MakeRequest) -> LoadResult {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for c in 0..CONNECTIONS {
        let (stop, make) = (Arc::clone(&stop), Arc::clone(&make));
        tasks.push(tokio::spawn(async move {
            // One client per task: one keep-alive connection each.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut latencies = Vec::new();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let res = make(&client, i).send().await.unwrap();
                assert!(res.status().is_success(), "{}", res.status());
                let _ = res.bytes().await.unwrap();
                latencies.push(t.elapsed());
                i += CONNECTIONS;
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(LOAD_SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    LoadResult {
        requests: all.len(),
        seconds,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn over_http() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = TestDatabase::sqlite().await;
        let store = db.store();
        let tenant = tenant_with_role(store.as_ref()).await;
        let mut tokens = Vec::with_capacity(KEYS);
        for _ in 0..KEYS {
            tokens.push(insert_key(store.as_ref(), &tenant).await.expose_secret().to_owned());
        }
        let settings = Settings {
            admin_password: Some(Password::parse(PASSWORD).unwrap()),
            argon2: Argon2Settings::cheap(),
            ..Settings::local(db.url.clone())
        };
        let app = Application::build(settings).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        // The ingestor's own credential: a verifier key, cached after one proof.
        let platform = TenantId::platform();
        let verifier_token = {
            let key_id = KeyId::new();
            let token = ApiKeyToken::generate(&KeyPrefix::default(), key_id).unwrap();
            let now = chrono::Utc::now();
            store.create_key(&NewApiKey {
                key_id, tenant_id: platform, name: KeyName::parse("ingest").unwrap(),
                roles: vec![RoleName::parse("verifier").unwrap()], start: token.start(),
                secret_hash: KeyDigest::of(token.expose_secret()).encode(),
                created_by: "bench".into(), created_at: now, expires_at: None,
            }, &keyward_core::testing::change()).await.unwrap();
            token.expose_secret().to_owned()
        };
        // Warm: one proof per key. Entries live VERIFY_CACHE_TTL (60 s), so
        // every verify run below is preceded by a fresh warm-up: what is
        // measured is the hot path, not the periodic re-proof.
        let warm = || async {
            let client = reqwest::Client::new();
            for t in &tokens {
                let r = client
                    .post(format!("{base}/api/v1/verify"))
                    .bearer_auth(&verifier_token)
                    .json(&serde_json::json!({"apiKey": t}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
        };
        let shared_tokens = Arc::new(tokens.clone());
        let health_base = base.clone();
        let health = load(Arc::new(move |c: &reqwest::Client, _| c.get(format!("{health_base}/healthz")))).await;
        warm().await;
        let (vt, verify_base, toks) = (verifier_token.clone(), base.clone(), Arc::clone(&shared_tokens));
        let verify = load(Arc::new(move |c: &reqwest::Client, i| {
            c.post(format!("{verify_base}/api/v1/verify"))
                .bearer_auth(&vt)
                .json(&serde_json::json!({"apiKey": toks[i % toks.len()]}))
        })).await;
        let rate = |r: &LoadResult| r.requests as f64 / r.seconds;
        for (name, r) in [("GET /healthz", &health), ("POST /api/v1/verify", &verify)] {
            println!("HTTP {name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} requests, {CONNECTIONS} connections, {LOAD_SECONDS} s)",
                     rate(r), r.p50.as_secs_f64() * 1e3, r.p99.as_secs_f64() * 1e3, r.requests);
        }
        println!("verify / healthz throughput: {:.0}%", 100.0 * rate(&verify) / rate(&health));

        // The same with an external load generator, when `wrk` is installed
        // (`apt-get install wrk`): the client no longer shares this
        // process's runtime, only the machine's cores.
        if let Some(dir) = wrk_available() {
            let lua = dir.path().join("verify.lua");
            let list: Vec<String> = tokens.iter().map(|t| format!("\"{t}\"")).collect();
            // Every request is formatted once per wrk thread in `init`;
            // `request` only hands the next one out. Building each request
            // in Lua (a string concat and `wrk.format` per call) costs wrk
            // CPU that the server, on the same two cores, then lacks: the
            // healthz run, with wrk's static request, pays nothing alike.
            std::fs::write(&lua, format!(
                "local tokens = {{{}}}\nlocal requests = {{}}\nlocal i = 0\n\
                 init = function(args)\n  for k, t in ipairs(tokens) do\n    \
                 requests[k] = wrk.format('POST', '/api/v1/verify', {{['Content-Type'] = 'application/json', \
                 ['Authorization'] = 'Bearer {verifier_token}'}}, '{{\"apiKey\":\"' .. t .. '\"}}')\n  end\nend\n\
                 request = function()\n  i = i + 1\n  if i > #requests then i = 1 end\n  return requests[i]\nend\n",
                list.join(",")
            )).unwrap();
            let h = run_wrk(&format!("{base}/healthz"), None);
            warm().await;
            let v = run_wrk(&format!("{base}/api/v1/verify"), Some(&lua));
            for (name, (rps, p50, p99)) in [("GET /healthz", &h), ("POST /api/v1/verify", &v)] {
                println!("wrk {name}: {rps:.0} req/s, p50 {p50}, p99 {p99} ({CONNECTIONS} connections, 2 threads, {LOAD_SECONDS} s)");
            }
            println!("wrk verify / healthz throughput: {:.0}%", 100.0 * v.0 / h.0);
            let floor = floor_server();
            let f = run_wrk(&format!("{floor}/api/v1/verify"), Some(&lua));
            println!(
                "wrk HTTP floor (same middleware, body parsing and answer size, no verification): \
                 {:.0} req/s, p99 {}: {:.0}% of healthz; verify reaches {:.0}% of the floor",
                f.0, f.2, 100.0 * f.0 / h.0, 100.0 * v.0 / f.0
            );
        } else {
            println!("(wrk not installed: skipped the external-load run)");
        }
    });
}

/// What any verify-shaped request costs this HTTP stack: a server with the
/// API's request middleware and JSON body reading that answers a
/// verify-sized document without verifying anything. Verify can at best
/// reach this; the gap between the two is the verification itself.
fn floor_server() -> String {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    use keyward_api::error::ApiError;
    use keyward_api::routes::keys::ApiKeyBody;

    async fn answer(req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
        let body: ApiKeyBody = keyward_api::extract::read_json(&req, payload).await?;
        Ok(HttpResponse::Ok().json(serde_json::json!({
            "valid": true, "tenantId": "acme", "keyId": body.api_key.expose().get(3..29),
            "roles": ["shippers"],
            "privileges": [{"privilege": "ingestor", "resource": {"stream": "clicks-*"}}],
            "expiresAt": null, "cacheTtlSeconds": 60,
        })))
    }

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(|| {
        App::new()
            .wrap(actix_web::middleware::from_fn(
                keyward_api::observe::observe,
            ))
            .route("/api/v1/verify", web::post().to(answer))
    })
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    format!("http://127.0.0.1:{port}")
}

fn wrk_available() -> Option<tempfile::TempDir> {
    let ok = std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok();
    if ok { tempfile::tempdir().ok() } else { None }
}

/// Runs wrk; returns (requests/s, p50, p99) as wrk prints them.
fn run_wrk(url: &str, script: Option<&std::path::Path>) -> (f64, String, String) {
    let mut cmd = std::process::Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{CONNECTIONS}"),
        &format!("-d{LOAD_SECONDS}s"),
        "--latency",
    ]);
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    let out = cmd.arg(url).output().expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_owned()
    };
    let non2xx = text.lines().find(|l| l.contains("Non-2xx"));
    assert!(non2xx.is_none(), "wrk saw errors: {text}");
    (
        field("Requests/sec:").parse().unwrap_or(0.0),
        field("50%"),
        field("99%"),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would too.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    in_process();
    over_http();
}
