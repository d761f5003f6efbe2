//! The chaos soak: the whole system — two API replicas, two sync workers,
//! three reference ingestors, PostgreSQL and RabbitMQ, all on loopback —
//! under a mixed load at fixed rates while one fault is injected every few
//! seconds; the invariants are checked in the database and at the
//! ingestors every 30 s and at the end, and every broken one is printed
//! with ids. Exit status 1 when any broke.
//!
//! ```text
//! cargo run --release -p keyward-tests --bin soak -- --minutes 30
//! soak --seconds 60 --seed 7            # what CI runs (debug binaries)
//! soak --seconds 60 --faults none       # a clean run: the memory bounds' baseline
//! soak --faults kill,broker-stop-app    # only some kinds of fault
//! ```
//!
//! Options: `--seconds N` / `--minutes N` (60 s), `--seed N` (from the
//! clock; printed, replay a failing run with it), `--fault-every SECS` (6),
//! `--check-every SECS` (30), `--faults LIST|none` (every kind). Needs
//! PostgreSQL, RabbitMQ and `rabbitmqctl` (the broker is stopped and
//! started in place); the binaries beside this one are the ones run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod applied;
mod faults;
mod fleet;
mod invariants;
mod load;
mod observer;
mod resources;
mod rng;

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::testing::TestDatabase;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::faults::{Injector, Kind};
use crate::fleet::{Fleet, Setup};
use crate::invariants::Checks;
use crate::load::{Load, ROLES, Rates, TENANTS};
use crate::resources::Peaks;
use crate::rng::Rng;

const APIS: usize = 2;
const WORKERS: usize = 2;
const INGESTORS: usize = 3;
/// After the last fault healed, how long the system has to deliver and
/// apply everything, and then for every ingestor to answer as the
/// database says.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(120);
const CONVERGE_WITHIN: Duration = Duration::from_secs(15);

struct Args {
    run_for: Duration,
    seed: u64,
    fault_every: Duration,
    check_every: Duration,
    faults: Vec<Kind>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        run_for: Duration::from_secs(60),
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        fault_every: Duration::from_secs(6),
        check_every: Duration::from_secs(30),
        faults: Injector::kinds(None)?,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--seconds" => a.run_for = Duration::from_secs(number()?),
            "--minutes" => a.run_for = Duration::from_secs(60 * number()?),
            "--seed" => a.seed = number()?,
            "--fault-every" => a.fault_every = Duration::from_secs(number()?.max(1)),
            "--check-every" => a.check_every = Duration::from_secs(number()?.max(1)),
            "--faults" if value == "none" => a.faults = Vec::new(),
            "--faults" => a.faults = Injector::kinds(Some(&value))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    let broken = soak(&args).await;
    if broken {
        println!(
            "soak: INVARIANTS BROKEN. Replay: soak --seconds {} --seed {}",
            args.run_for.as_secs(),
            args.seed
        );
        std::process::exit(1);
    }
    println!("soak: every invariant held (seed {})", args.seed);
}

/// Runs the soak; whether an invariant broke.
async fn soak(args: &Args) -> bool {
    println!(
        "soak: {} s, seed {}, a fault every {} s ({})",
        args.run_for.as_secs(),
        args.seed,
        args.fault_every.as_secs(),
        if args.faults.is_empty() {
            "none".to_owned()
        } else {
            args.faults
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let Some(db) = TestDatabase::postgres_unmigrated().await else {
        eprintln!("soak: PostgreSQL is not reachable");
        std::process::exit(2);
    };
    let prefix = keyward_tests::amqp::unique_prefix();
    let Some(broker) = keyward_tests::amqp::TestBroker::with_prefix(&prefix).await else {
        eprintln!("soak: RabbitMQ is not reachable");
        std::process::exit(2);
    };
    observer::declare(&broker.exchange).await;
    let logs =
        std::env::temp_dir().join(format!("keyward-soak-{}-{}", args.seed, std::process::id()));
    std::fs::create_dir_all(&logs).expect("log directory");
    println!("soak: process logs in {}", logs.display());
    let admin_password = format!("soak admin {}", args.seed);
    let setup = Setup {
        database_url: db.url.as_str(),
        exchange: &broker.exchange,
        acks_queue: &broker.acks_queue,
        prefix: &prefix,
        admin_password: &admin_password,
        logs: logs.clone(),
    };
    let apis = Fleet::start_apis(&setup, APIS).await;
    let (admin_key, verifier_key) = provision(&apis[0].url(""), &admin_password).await;
    let fleet = Arc::new(Fleet::start_rest(&setup, apis, WORKERS, INGESTORS, &verifier_key).await);
    let pool = sqlx::PgPool::connect(db.url.as_str())
        .await
        .expect("connect the checks to PostgreSQL");
    let checks = Arc::new(Checks {
        pool: pool.clone(),
        ingestor_ids: (0..INGESTORS)
            .map(|i| fleet::ingestor_id(&prefix, i))
            .collect(),
    });
    let load = Arc::new(Load::new(
        fleet.apis.iter().map(|s| s.url("")).collect(),
        fleet.ingestors.iter().map(|s| s.url("")).collect(),
        admin_key,
        verifier_key,
    ));

    let rng = Rng::new(args.seed);
    let started = Instant::now();
    let (stop_tx, stop) = watch::channel(false);
    let seen = Arc::new(observer::Seen::default());
    let peaks = Arc::new(Peaks::default());
    let warm_until = started + (args.run_for / 4).min(Duration::from_secs(60));
    // The observer and the sampler go on through the heal and the final
    // checks; the load, the faults and the periodic checks stop at `stop`.
    let (finish_tx, finish) = watch::channel(false);
    let mut background = tokio::task::JoinSet::new();
    background.spawn(observer::run(
        broker.exchange.clone(),
        Arc::clone(&seen),
        finish.clone(),
    ));
    background.spawn(resources::sample(
        Arc::clone(&fleet),
        pool.clone(),
        Arc::clone(&peaks),
        warm_until,
        finish,
    ));
    let found = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    background.spawn(check_periodically(
        Arc::clone(&checks),
        Arc::clone(&load),
        Arc::clone(&peaks),
        Arc::clone(&found),
        args.check_every,
        started,
        stop.clone(),
    ));
    let load_task = tokio::spawn(Arc::clone(&load).run(Rates::default(), rng.fork(), stop.clone()));
    let mut injector = Injector::new(
        Arc::clone(&fleet),
        pool.clone(),
        rng.fork(),
        started,
        args.faults.clone(),
    );
    let (_, faults) = tokio::join!(
        async {
            tokio::time::sleep(args.run_for).await;
            stop_tx.send_replace(true);
        },
        async {
            injector.run(args.fault_every, stop.clone()).await;
            injector.injected.clone()
        }
    );
    let _ = load_task.await;
    let load_ended = Instant::now();

    // Heal: every process up and ready, every link passing.
    for slot in fleet.all() {
        if let Some(proxy) = &slot.proxy {
            proxy.set(keyward_tests::proxy::Mode::Pass);
        }
        slot.ensure_up().await;
    }
    let ready = all_ready(&load.http, &fleet, Duration::from_secs(60)).await;
    let healed_in = load_ended.elapsed();
    let caught_up = catch_up(&checks, &seen).await;
    let caught_up_in = load_ended.elapsed();

    let mut broken: Vec<String> = found.lock().expect("found lock").iter().cloned().collect();
    broken.extend(ready);
    broken.extend(checks.always(&load.model).await);
    broken.extend(checks.delivered(&seen).await);
    let (pairs, wrong) = checks.converged(&load, CONVERGE_WITHIN).await;
    broken.extend(wrong);
    broken.extend(
        load.tally
            .violations
            .lock()
            .expect("tally lock")
            .iter()
            .cloned(),
    );
    broken.extend(peaks.over_bounds());
    finish_tx.send_replace(true);
    while background.join_next().await.is_some() {}

    let unsure = load.model.unsure_revokes.lock().expect("model lock").len();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap_or(-1);
    println!(
        "\n## soak summary (seed {}, {} s)\n",
        args.seed,
        args.run_for.as_secs()
    );
    println!(
        "faults injected: {}",
        if faults.is_empty() {
            "none".to_owned()
        } else {
            faults
                .iter()
                .map(|(k, n)| format!("{} ×{n}", k.name()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!("requests: {}", load.tally.requests());
    print!("{}", load.tally.report());
    println!(
        "revokes answered 202: {}; answered 503 or not at all (the database decides, never half): {unsure}",
        load.model.revoked.lock().expect("model lock").len()
    );
    let (reapplied, extra) = applied::reapplied(&logs, INGESTORS);
    println!(
        "events: {events} in the outbox, {} seen on the broker; duplicates (reported, not a failure): \
         {} extra deliveries on the broker, {reapplied} events applied again by an ingestor ({extra} extra applications)",
        seen.distinct(),
        seen.duplicates()
    );
    println!(
        "healed: every process ready {:.1} s after the load stopped; caught up (every event published and applied by all {INGESTORS} ingestors) {}",
        healed_in.as_secs_f64(),
        if caught_up {
            format!("{:.1} s after", caught_up_in.as_secs_f64())
        } else {
            format!("NOT within {CATCH_UP_WITHIN:?}")
        }
    );
    println!("convergence: {pairs} (key, ingestor) answers checked against the database");
    print!("{}", peaks.report());
    if broken.is_empty() {
        println!("invariants: all held");
    } else {
        println!("invariants broken:");
        for b in &broken {
            println!("  ✘ {b}");
        }
    }

    fleet.stop().await;
    cleanup(&broker.exchange, &prefix).await;
    drop(broker);
    if !broken.is_empty() {
        // Kept for a look at what broke (CI drops leftover kw_test_ databases).
        println!("soak: database kept: {}", db.url.as_str());
        std::mem::forget(db);
        return true;
    }
    false
}

/// The load's superadmin key and the ingestors' verifier key, and the
/// tenants with their roles, made as an operator would.
async fn provision(api: &str, password: &str) -> (String, String) {
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{api}{path}"))
            .basic_auth("admin", Some(password))
            .json(&body)
    };
    let key = |name: &'static str, role: &'static str| {
        let req = call(
            reqwest::Method::POST,
            "/api/v1/tenants/_platform/apikeys",
            json!({"name": name, "roles": [role]}),
        );
        async move {
            let res = req.send().await.expect("create a key");
            assert_eq!(res.status(), 201, "create {name}");
            let body: Value = res.json().await.expect("key");
            body["secret"].as_str().expect("secret").to_owned()
        }
    };
    let admin = key("soak-admin", "superadmin").await;
    let verifier = key("soak-ingestors", "verifier").await;
    for tenant in TENANTS {
        let res = call(
            reqwest::Method::POST,
            "/api/v1/tenants",
            json!({"id": tenant}),
        )
        .send()
        .await
        .expect("create a tenant");
        assert_eq!(res.status(), 201, "create tenant {tenant}");
        for role in ROLES {
            let res = call(
                reqwest::Method::PUT,
                &format!("/api/v1/tenants/{tenant}/roles/{role}"),
                load::grant(),
            )
            .send()
            .await
            .expect("create a role");
            assert_eq!(res.status(), 201, "create role {tenant}/{role}");
        }
    }
    (admin, verifier)
}

/// Every process answers `/readyz` 200 within `within`; the ones that
/// did not.
async fn all_ready(http: &reqwest::Client, fleet: &Fleet, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut not_ready = Vec::new();
    for slot in fleet.all() {
        loop {
            let ok = http
                .get(slot.url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                not_ready.push(format!(
                    "{} not ready {within:?} after the last fault",
                    slot.name
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    not_ready
}

/// Waits until every event is published, applied everywhere and seen by
/// the observer.
async fn catch_up(checks: &Checks, seen: &observer::Seen) -> bool {
    let deadline = Instant::now() + CATCH_UP_WITHIN;
    while Instant::now() < deadline {
        if checks.backlog().await == (0, 0) && checks.unseen(seen).await == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Every `every`: what must hold at any moment, and the resource bounds.
async fn check_periodically(
    checks: Arc<Checks>,
    load: Arc<Load>,
    peaks: Arc<Peaks>,
    found: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    every: Duration,
    started: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::stopped(&mut stop) => return,
        }
        let mut now = checks.always(&load.model).await;
        now.extend(peaks.over_bounds());
        let (unpublished, unapplied) = checks.backlog().await;
        println!(
            "soak: t={:>6.1}s check: {} requests, {unpublished} events unpublished, {unapplied} (event, ingestor) reports missing, {}",
            started.elapsed().as_secs_f64(),
            load.tally.requests(),
            if now.is_empty() {
                "invariants hold".to_owned()
            } else {
                format!("BROKEN: {}", now.join("; "))
            }
        );
        found.lock().expect("found lock").extend(now);
    }
}

/// Deletes what the run made on the broker (the ingestors' durable
/// queues outlive them).
async fn cleanup(exchange: &str, prefix: &str) {
    let Some(broker) = keyward_tests::amqp::TestBroker::with_prefix(prefix).await else {
        return;
    };
    for i in 0..INGESTORS {
        broker
            .delete_ingestor_queues(&fleet::ingestor_id(prefix, i))
            .await;
    }
    let _ = broker
        .channel
        .queue_delete(
            observer::queue_name(exchange).as_str().into(),
            Default::default(),
        )
        .await;
    broker.cleanup().await;
}

/// Resolves once the run is told to stop (the receiver's guard is not
/// held across the caller's awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
