//! The fault injector: every few seconds one fault, picked by the seeded
//! generator, on a process no other fault holds; each heals by itself
//! after a random delay (a killed process is restarted on its port).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_tests::proxy::Mode;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::fleet::{AMQP_HEARTBEAT_SECONDS, Fleet, Slot};
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// SIGKILL of an API replica, a worker or an ingestor; restarted
    /// after 0.5–4 s.
    Kill,
    /// A worker's or ingestor's broker connection closed, and new ones
    /// refused for 1–4 s.
    BrokerCut,
    /// A worker's or ingestor's broker connection stalled (nothing
    /// forwarded either way) for 2–6 s.
    BrokerStall,
    /// An ingestor's link to the broker stalled for longer than its AMQP
    /// heartbeat window (three heartbeats).
    IngestorLinkDown,
    /// `rabbitmqctl stop_app`, 1–4 s, `start_app`: every connection lost.
    BrokerStopApp,
    /// The PostgreSQL backends of one API replica or one worker
    /// terminated.
    PgTerminate,
}

const KINDS: [Kind; 6] = [
    Kind::Kill,
    Kind::BrokerCut,
    Kind::BrokerStall,
    Kind::IngestorLinkDown,
    Kind::BrokerStopApp,
    Kind::PgTerminate,
];

pub struct Injector {
    fleet: Arc<Fleet>,
    pool: PgPool,
    rng: Rng,
    started: Instant,
    /// Slots a fault holds until it has healed.
    busy: Arc<Mutex<HashSet<String>>>,
    heals: JoinSet<()>,
    pub injected: BTreeMap<Kind, u32>,
    /// Kinds left out (`KEYWARD_SOAK_FAULTS` names the ones to use).
    kinds: Vec<Kind>,
}

impl Injector {
    pub fn new(
        fleet: Arc<Fleet>,
        pool: PgPool,
        rng: Rng,
        started: Instant,
        kinds: Vec<Kind>,
    ) -> Self {
        Self {
            fleet,
            pool,
            rng,
            started,
            busy: Arc::default(),
            heals: JoinSet::new(),
            injected: BTreeMap::new(),
            kinds,
        }
    }

    /// The kinds named in `list` (comma-separated, `kill,broker-cut,…`),
    /// or all of them.
    pub fn kinds(list: Option<&str>) -> Result<Vec<Kind>, String> {
        let Some(list) = list else {
            return Ok(KINDS.to_vec());
        };
        list.split(',')
            .map(|name| {
                KINDS
                    .iter()
                    .copied()
                    .find(|k| k.name() == name.trim())
                    .ok_or_else(|| format!("unknown fault kind {name:?}"))
            })
            .collect()
    }

    /// Injects a fault every `every` until `stop`, then waits for every
    /// fault to heal.
    pub async fn run(&mut self, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.inject_one().await,
                _ = crate::stopped(&mut stop) => break,
            }
        }
        while self.heals.join_next().await.is_some() {}
    }

    fn say(&self, what: &str) {
        println!(
            "soak: t={:>6.1}s fault: {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// A slot of `from` that no fault holds, marked as held.
    fn take(&self, from: &[&Arc<Slot>]) -> Option<Arc<Slot>> {
        let mut busy = self.busy.lock().expect("busy lock");
        let free: Vec<&Arc<Slot>> = from
            .iter()
            .copied()
            .filter(|s| !busy.contains(&s.name))
            .collect();
        if free.is_empty() {
            return None;
        }
        let slot = Arc::clone(free[self.rng.below(free.len())]);
        busy.insert(slot.name.clone());
        Some(slot)
    }

    /// Runs `heal` after `after`, then frees `slot`.
    fn heal_later<F>(&mut self, slot: Option<Arc<Slot>>, after: Duration, heal: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let busy = Arc::clone(&self.busy);
        self.heals.spawn(async move {
            tokio::time::sleep(after).await;
            heal.await;
            if let Some(slot) = slot {
                busy.lock().expect("busy lock").remove(&slot.name);
            }
        });
    }

    async fn inject_one(&mut self) {
        if self.kinds.is_empty() {
            return;
        }
        let kind = self.kinds[self.rng.below(self.kinds.len())];
        let fleet = Arc::clone(&self.fleet);
        let brokered: Vec<&Arc<Slot>> = fleet.workers.iter().chain(&fleet.ingestors).collect();
        let done = match kind {
            Kind::Kill => {
                let all: Vec<&Arc<Slot>> = fleet.all().collect();
                self.kill(&all).await
            }
            Kind::BrokerCut => {
                let after = self
                    .rng
                    .between(Duration::from_secs(1), Duration::from_secs(4));
                self.break_link(
                    &brokered,
                    Mode::Refuse,
                    after,
                    "cut, new connections refused",
                )
            }
            Kind::BrokerStall => {
                let after = self
                    .rng
                    .between(Duration::from_secs(2), Duration::from_secs(6));
                self.break_link(&brokered, Mode::Stall, after, "stalled")
            }
            Kind::IngestorLinkDown => {
                let ingestors: Vec<&Arc<Slot>> = fleet.ingestors.iter().collect();
                let after = Duration::from_secs(3 * AMQP_HEARTBEAT_SECONDS);
                self.break_link(
                    &ingestors,
                    Mode::Stall,
                    after,
                    "stalled, longer than its heartbeat window,",
                )
            }
            Kind::BrokerStopApp => self.broker_stop_app().await,
            Kind::PgTerminate => {
                let with_db: Vec<&Arc<Slot>> = fleet.apis.iter().chain(&fleet.workers).collect();
                self.pg_terminate(&with_db).await
            }
        };
        if done {
            *self.injected.entry(kind).or_default() += 1;
        }
    }

    async fn kill(&mut self, from: &[&Arc<Slot>]) -> bool {
        let Some(slot) = self.take(from) else {
            return false;
        };
        let after = self
            .rng
            .between(Duration::from_millis(500), Duration::from_secs(4));
        self.say(&format!(
            "SIGKILL {} (restart in {:.1} s)",
            slot.name,
            after.as_secs_f64()
        ));
        slot.kill().await;
        let restarted = Arc::clone(&slot);
        self.heal_later(Some(slot), after, async move { restarted.start().await });
        true
    }

    /// Puts `mode` on the broker link of a slot of `from` (closing its
    /// open connections first when the link refuses) for `after`, then
    /// lets it pass again.
    fn break_link(&mut self, from: &[&Arc<Slot>], mode: Mode, after: Duration, what: &str) -> bool {
        let Some(slot) = self.take(from) else {
            return false;
        };
        self.say(&format!(
            "broker link of {} {what} for {:.1} s",
            slot.name,
            after.as_secs_f64()
        ));
        let proxy = slot.proxy.as_ref().expect("a brokered slot");
        proxy.set(mode);
        if mode == Mode::Refuse {
            proxy.cut();
        }
        let healed = Arc::clone(&slot);
        self.heal_later(Some(slot), after, async move {
            healed.proxy.as_ref().expect("proxy").set(Mode::Pass);
        });
        true
    }

    /// Stops and starts the broker's application in place (the injector
    /// waits: nothing else happens to a broker that is down).
    async fn broker_stop_app(&mut self) -> bool {
        let after = self
            .rng
            .between(Duration::from_secs(1), Duration::from_secs(4));
        self.say(&format!(
            "rabbitmqctl stop_app, start_app after {:.1} s",
            after.as_secs_f64()
        ));
        rabbitmqctl("stop_app").await;
        tokio::time::sleep(after).await;
        rabbitmqctl("start_app").await;
        true
    }

    async fn pg_terminate(&mut self, from: &[&Arc<Slot>]) -> bool {
        let Some(slot) = self.take(from) else {
            return false;
        };
        let terminated: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1",
        )
        .bind(format!("kw-soak-{}", slot.name))
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        self.say(&format!(
            "{} PostgreSQL backends of {} terminated",
            terminated.len(),
            slot.name
        ));
        self.busy.lock().expect("busy lock").remove(&slot.name);
        true
    }
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::BrokerCut => "broker-cut",
            Self::BrokerStall => "broker-stall",
            Self::IngestorLinkDown => "ingestor-link-down",
            Self::BrokerStopApp => "broker-stop-app",
            Self::PgTerminate => "pg-terminate",
        }
    }
}

/// Runs `rabbitmqctl {command}`; the broker is the machine's, so the run
/// cannot go on without it: a failure ends the soak.
async fn rabbitmqctl(command: &str) {
    let status = tokio::process::Command::new("rabbitmqctl")
        .arg(command)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .unwrap_or_else(|e| panic!("rabbitmqctl {command}: {e}"));
    assert!(status.success(), "rabbitmqctl {command}: {status}");
}
