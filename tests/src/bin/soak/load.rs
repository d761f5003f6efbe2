//! The load: creates, verifies, ingests, updates, rotations, RBAC changes
//! and revokes at fixed rates, through HTTP as clients send them, with
//! every answer tallied and what it changed remembered in the model.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::rng::Rng;

pub const TENANTS: [&str; 2] = ["soak-a", "soak-b"];
pub const ROLES: [&str; 4] = ["r0", "r1", "r2", "r3"];
/// The stream every ingest goes to; a withdrawn role grants only
/// `elsewhere-*`.
pub const STREAM: &str = "clicks";
/// Each request's own limit: past it the answer counts as `timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// An ingest accepted this long after its key's revoke was answered is
/// counted as late (during faults a revocation may wait for the broker).
const LATE_AFTER: Duration = Duration::from_secs(2);

pub fn grant() -> Value {
    json!({"privileges": [{"privilege": "ingestor"}]})
}

pub fn withdrawn() -> Value {
    json!({"privileges": [{"privilege": "ingestor", "resource": {"stream": "elsewhere-*"}}]})
}

/// A key whose secret the load knows (its create was answered 201).
#[derive(Clone)]
pub struct Key {
    pub tenant: &'static str,
    pub id: String,
    pub secret: String,
    /// When its revoke (or rotation with no grace) was answered.
    pub revoked: Option<Instant>,
    /// Rotated: the successor holds its name; no more changes to it.
    pub replaced: bool,
}

/// What the answers said happened.
#[derive(Default)]
pub struct Model {
    pub keys: Mutex<Vec<Key>>,
    /// Keys whose revoke (DELETE, or rotation with no grace) answered
    /// 202/201: each must be revoked in the database, with one event.
    pub revoked: Mutex<Vec<String>>,
    /// Revokes answered 503 or not at all: the database decides, but
    /// never half (revoked without its event or the reverse).
    pub unsure_revokes: Mutex<Vec<String>>,
}

impl Model {
    fn pick(&self, rng: &Rng, live_only: bool) -> Option<Key> {
        let keys = self.keys.lock().expect("model lock");
        let candidates: Vec<&Key> = keys
            .iter()
            .filter(|k| !live_only || (k.revoked.is_none() && !k.replaced))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[rng.below(candidates.len())].clone())
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Key)) {
        if let Some(k) = self
            .keys
            .lock()
            .expect("model lock")
            .iter_mut()
            .find(|k| k.id == id)
        {
            f(k);
        }
    }
}

/// Every answer by operation and outcome, and the answers that broke the
/// contract (a 5xx other than `503` with `Retry-After`).
#[derive(Default)]
pub struct Tally {
    counts: Mutex<BTreeMap<(&'static str, String), u64>>,
    pub violations: Mutex<Vec<String>>,
    late: Mutex<(u64, Duration)>,
}

impl Tally {
    fn count(&self, op: &'static str, outcome: String) {
        *self
            .counts
            .lock()
            .expect("tally lock")
            .entry((op, outcome))
            .or_default() += 1;
    }

    fn late_accept(&self, after: Duration) {
        let mut late = self.late.lock().expect("tally lock");
        late.0 += 1;
        late.1 = late.1.max(after);
    }

    pub fn requests(&self) -> u64 {
        self.counts.lock().expect("tally lock").values().sum()
    }

    /// Requests, by operation: `op: n (status×count, …)`.
    pub fn report(&self) -> String {
        let counts = self.counts.lock().expect("tally lock");
        let mut by_op: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for ((op, outcome), n) in counts.iter() {
            by_op.entry(op).or_default().push(format!("{outcome}×{n}"));
            *totals.entry(op).or_default() += n;
        }
        let mut out = String::new();
        for (op, outcomes) in by_op {
            out.push_str(&format!(
                "  {op}: {} ({})\n",
                totals[op],
                outcomes.join(", ")
            ));
        }
        let late = self.late.lock().expect("tally lock");
        out.push_str(&format!(
            "  ingests accepted more than {LATE_AFTER:?} after their key's revoke was answered \
             (faults delay revocations; not an invariant): {}, the latest {:.1} s after\n",
            late.0,
            late.1.as_secs_f64()
        ));
        out
    }
}

/// Operations per second, by kind.
#[derive(Clone, Copy)]
pub struct Rates {
    pub create: f64,
    pub ingest: f64,
    pub verify: f64,
    pub update: f64,
    pub rotate: f64,
    pub rbac: f64,
    pub revoke: f64,
}

impl Default for Rates {
    fn default() -> Self {
        Self {
            create: 4.0,
            ingest: 40.0,
            verify: 10.0,
            update: 1.0,
            rotate: 0.5,
            rbac: 0.5,
            revoke: 2.0,
        }
    }
}

pub struct Load {
    pub http: reqwest::Client,
    pub apis: Vec<String>,
    pub ingestors: Vec<String>,
    pub admin_key: String,
    pub verifier_key: String,
    pub model: Arc<Model>,
    pub tally: Arc<Tally>,
    names: std::sync::atomic::AtomicU64,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Load {
    pub fn new(
        apis: Vec<String>,
        ingestors: Vec<String>,
        admin_key: String,
        verifier_key: String,
    ) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("http client"),
            apis,
            ingestors,
            admin_key,
            verifier_key,
            model: Arc::default(),
            tally: Arc::default(),
            names: Default::default(),
        }
    }

    /// Runs every operation at its rate until `stop` turns true.
    pub async fn run(self: Arc<Self>, rates: Rates, rng: Rng, stop: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        let ops: [(f64, Op); 7] = [
            (rates.create, Op::Create),
            (rates.ingest, Op::Ingest),
            (rates.verify, Op::Verify),
            (rates.update, Op::Update),
            (rates.rotate, Op::Rotate),
            (rates.rbac, Op::Rbac),
            (rates.revoke, Op::Revoke),
        ];
        for (rate, op) in ops {
            if rate <= 0.0 {
                continue;
            }
            // Fast operations in several lanes, so one slow answer does
            // not hold back the rate.
            let lanes = (rate / 10.0).ceil().max(1.0) as usize;
            for _ in 0..lanes {
                let (load, rng, mut stop) = (Arc::clone(&self), rng.fork(), stop.clone());
                let period = Duration::from_secs_f64(lanes as f64 / rate);
                tasks.spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = tick.tick() => load.once(op, &rng).await,
                            _ = crate::stopped(&mut stop) => return,
                        }
                    }
                });
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn once(&self, op: Op, rng: &Rng) {
        match op {
            Op::Create => self.create(rng).await,
            Op::Ingest => self.ingest(rng).await,
            Op::Verify => self.verify(rng).await,
            Op::Update => self.update(rng).await,
            Op::Rotate => self.rotate(rng).await,
            Op::Rbac => self.rbac(rng).await,
            Op::Revoke => self.revoke(rng).await,
        }
    }

    /// Sends an admin request to one API replica, as a load balancer
    /// would: one whose port refuses the connection (killed) is skipped
    /// for the other, which is safe (nothing was sent).
    pub async fn admin(
        &self,
        op: &'static str,
        rng: &Rng,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<Answer> {
        let first = rng.below(self.apis.len());
        let mut last_error = None;
        for i in 0..self.apis.len() {
            let base = &self.apis[(first + i) % self.apis.len()];
            let mut req = self
                .http
                .request(method.clone(), format!("{base}{path}"))
                .bearer_auth(&self.admin_key);
            if let Some(b) = &body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(res) => return Some(self.answer(op, res).await),
                Err(e) if e.is_connect() => last_error = Some(e),
                Err(e) => {
                    self.failed(op, &e);
                    return None;
                }
            }
        }
        if let Some(e) = last_error {
            self.failed(op, &e);
        }
        None
    }

    fn failed(&self, op: &'static str, e: &reqwest::Error) {
        let outcome = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "refused"
        } else {
            "cut"
        };
        self.tally.count(op, outcome.to_owned());
    }

    /// Tallies an answer, and records a 5xx that is not a `503` with
    /// `Retry-After`.
    async fn answer(&self, op: &'static str, res: reqwest::Response) -> Answer {
        let status = res.status().as_u16();
        let retry_after = res.headers().contains_key("retry-after");
        let request_id = res
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let url = res.url().to_string();
        let text = res.text().await.unwrap_or_default();
        self.tally.count(op, status.to_string());
        if status >= 500 && !(status == 503 && retry_after) {
            self.tally.violations.lock().expect("tally lock").push(format!(
                "{op}: {status} (Retry-After: {retry_after}) from {url}, request id {request_id}: {text}"
            ));
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, body }
    }

    async fn create(&self, rng: &Rng) {
        let tenant = TENANTS[rng.below(TENANTS.len())];
        let n = self
            .names
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let role = ROLES[rng.below(ROLES.len())];
        let body = json!({"name": format!("k{n}"), "roles": [role]});
        let path = format!("/api/v1/tenants/{tenant}/apikeys");
        let Some(a) = self
            .admin("create", rng, reqwest::Method::POST, &path, Some(body))
            .await
        else {
            return;
        };
        if a.status == 201 {
            self.remember(tenant, &a.body);
        }
    }

    fn remember(&self, tenant: &'static str, created: &Value) {
        let (Some(id), Some(secret)) = (created["keyId"].as_str(), created["secret"].as_str())
        else {
            return;
        };
        self.model.keys.lock().expect("model lock").push(Key {
            tenant,
            id: id.to_owned(),
            secret: secret.to_owned(),
            revoked: None,
            replaced: false,
        });
    }

    async fn revoke(&self, rng: &Rng) {
        let Some(key) = self.model.pick(rng, true) else {
            return;
        };
        let path = format!("/api/v1/tenants/{}/apikeys/{}", key.tenant, key.id);
        let answer = self
            .admin("revoke", rng, reqwest::Method::DELETE, &path, None)
            .await;
        match answer.map(|a| a.status) {
            Some(202) => self.revoked(&key.id),
            Some(s) if s < 500 => {}
            _ => self
                .model
                .unsure_revokes
                .lock()
                .expect("model lock")
                .push(key.id),
        }
    }

    fn revoked(&self, id: &str) {
        let now = Instant::now();
        self.model.update(id, |k| k.revoked = Some(now));
        self.model
            .revoked
            .lock()
            .expect("model lock")
            .push(id.to_owned());
    }

    async fn update(&self, rng: &Rng) {
        let Some(key) = self.model.pick(rng, true) else {
            return;
        };
        let path = format!("/api/v1/tenants/{}/apikeys/{}", key.tenant, key.id);
        let role = ROLES[rng.below(ROLES.len())];
        self.admin(
            "update",
            rng,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"roles": [role]})),
        )
        .await;
    }

    async fn rotate(&self, rng: &Rng) {
        let Some(key) = self.model.pick(rng, true) else {
            return;
        };
        let path = format!("/api/v1/tenants/{}/apikeys/{}/rotate", key.tenant, key.id);
        // Half at once (the old key revoked), half with a grace period
        // (the old key expires at the ingestors by itself).
        let grace = if rng.chance(0.5) { 0 } else { 2 };
        let Some(a) = self
            .admin(
                "rotate",
                rng,
                reqwest::Method::POST,
                &path,
                Some(json!({"gracePeriodSeconds": grace})),
            )
            .await
        else {
            return;
        };
        if a.status == 201 {
            self.model.update(&key.id, |k| k.replaced = true);
            self.remember(key.tenant, &a.body);
            if grace == 0 {
                self.revoked(&key.id);
            }
        }
    }

    async fn rbac(&self, rng: &Rng) {
        let tenant = TENANTS[rng.below(TENANTS.len())];
        let role = ROLES[rng.below(ROLES.len())];
        let body = if rng.chance(0.5) {
            withdrawn()
        } else {
            grant()
        };
        let path = format!("/api/v1/tenants/{tenant}/roles/{role}");
        self.admin("rbac", rng, reqwest::Method::PUT, &path, Some(body))
            .await;
    }

    async fn verify(&self, rng: &Rng) {
        let Some(key) = self.model.pick(rng, false) else {
            return;
        };
        let base = &self.apis[rng.below(self.apis.len())];
        let req = self
            .http
            .post(format!("{base}/api/v1/verify"))
            .bearer_auth(&self.verifier_key)
            .json(&json!({"apiKey": key.secret}));
        self.send("verify", req).await;
    }

    async fn ingest(&self, rng: &Rng) {
        // Mostly live keys; some revoked ones, whose refusals the
        // ingestors' tombstones answer.
        let Some(key) = self.model.pick(rng, rng.chance(0.8)) else {
            return;
        };
        let base = &self.ingestors[rng.below(self.ingestors.len())];
        let req = self
            .http
            .post(format!("{base}/ingest/{STREAM}"))
            .bearer_auth(&key.secret)
            .body("{}");
        if let Some(a) = self.send("ingest", req).await
            && a.status == 202
            && let Some(at) = key.revoked
            && at.elapsed() > LATE_AFTER
        {
            self.tally.late_accept(at.elapsed());
        }
    }

    /// Sends one request and tallies what came of it.
    async fn send(&self, op: &'static str, req: reqwest::RequestBuilder) -> Option<Answer> {
        match req.send().await {
            Ok(res) => Some(self.answer(op, res).await),
            Err(e) => {
                self.failed(op, &e);
                None
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Create,
    Ingest,
    Verify,
    Update,
    Rotate,
    Rbac,
    Revoke,
}
