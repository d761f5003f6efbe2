//! The processes under test: two API replicas, two sync workers and three
//! reference ingestors, each in a slot that can be killed and restarted on
//! the same port, the workers and ingestors each behind a fault proxy of
//! its own on the way to RabbitMQ.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keyward_tests::proxy::FaultProxy;
use keyward_tests::{Running, free_port, start_at};
use tokio::sync::Mutex;

/// How often an ingestor's AMQP connection sends heartbeats (`?heartbeat=`
/// in its URL): a link stalled for longer than two of these is dead to it.
pub const AMQP_HEARTBEAT_SECONDS: u64 = 5;

/// How long a (re)started process has to answer `/healthz`.
const READY_WITHIN: Duration = Duration::from_secs(60);

pub struct Slot {
    pub name: String,
    binary: &'static str,
    pub port: u16,
    env: Vec<(String, String)>,
    logs: PathBuf,
    running: Mutex<Option<Running>>,
    pub starts: AtomicU32,
    /// Between the proxy and the broker, for workers and ingestors.
    pub proxy: Option<FaultProxy>,
}

impl Slot {
    /// A slot for `binary` with `env` and the run's log settings (JSON
    /// lines at info: the soak reads the ingestors' `event applied`).
    fn new(
        name: String,
        binary: &'static str,
        mut env: Vec<(String, String)>,
        setup: &Setup<'_>,
        proxy: Option<FaultProxy>,
    ) -> Arc<Self> {
        env.push(("RUST_LOG".to_owned(), "info".to_owned()));
        env.push(("KEYWARD_LOG_FORMAT".to_owned(), "json".to_owned()));
        Arc::new(Self {
            name,
            binary,
            port: free_port(),
            env,
            logs: setup.logs.clone(),
            running: Mutex::new(None),
            starts: AtomicU32::new(0),
            proxy,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Starts the process (its output to a log file of this incarnation)
    /// and waits until it answers `/healthz`.
    pub async fn start(&self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut running = start_at(self.binary, self.port, &env);
        let n = self.starts.fetch_add(1, Ordering::Relaxed);
        let log = self.logs.join(format!("{}.{n}.log", self.name));
        for out in [
            running.child.stderr.take().map(Pipe::Err),
            running.child.stdout.take().map(Pipe::Out),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            tokio::spawn(async move { out.append_to(&log).await });
        }
        running.wait_ready("/healthz", READY_WITHIN).await;
        *self.running.lock().await = Some(running);
    }

    /// SIGKILL, and wait until the process is gone.
    pub async fn kill(&self) {
        if let Some(mut running) = self.running.lock().await.take() {
            if running.child.id().is_some() {
                running.signal("KILL");
            }
            let _ = running.exit_status(Duration::from_secs(10)).await;
        }
    }

    /// Starts the process again if it is not running.
    pub async fn ensure_up(&self) {
        let exited = match self.running.lock().await.as_mut() {
            None => true,
            Some(r) => r.child.try_wait().ok().flatten().is_some(),
        };
        if exited {
            eprintln!("soak: {} was not running; starting it", self.name);
            self.start().await;
        }
    }

    pub async fn pid(&self) -> Option<u32> {
        self.running.lock().await.as_ref()?.child.id()
    }

    /// Stops the process at the end of the run (SIGTERM, then SIGKILL).
    pub async fn stop(&self) {
        if let Some(mut running) = self.running.lock().await.take() {
            if running.child.id().is_some() {
                running.signal("TERM");
            }
            if tokio::time::timeout(Duration::from_secs(10), running.child.wait())
                .await
                .is_err()
            {
                let _ = running.child.kill().await;
            }
        }
    }
}

enum Pipe {
    Err(tokio::process::ChildStderr),
    Out(tokio::process::ChildStdout),
}

impl Pipe {
    /// Copies the pipe to the file until the process closes it (small
    /// blocking writes to a local file).
    async fn append_to(mut self, path: &std::path::Path) {
        use std::io::Write;
        use tokio::io::AsyncReadExt;
        let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        else {
            return;
        };
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let read = match &mut self {
                Self::Err(p) => p.read(&mut buf).await,
                Self::Out(p) => p.read(&mut buf).await,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if file.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Everything the fleet is started with.
pub struct Setup<'a> {
    pub database_url: &'a str,
    pub exchange: &'a str,
    pub acks_queue: &'a str,
    /// Prefix of the ingestors' ids (one per run: their queues are durable).
    pub prefix: &'a str,
    pub admin_password: &'a str,
    pub logs: PathBuf,
}

pub struct Fleet {
    pub apis: Vec<Arc<Slot>>,
    pub workers: Vec<Arc<Slot>>,
    pub ingestors: Vec<Arc<Slot>>,
}

impl Fleet {
    /// The APIs, started one after the other (the first one migrates and
    /// bootstraps `admin` on the empty database).
    pub async fn start_apis(setup: &Setup<'_>, count: usize) -> Vec<Arc<Slot>> {
        let mut apis = Vec::new();
        for i in 0..count {
            let name = format!("api-{i}");
            let settings = vec![
                env(
                    "KEYWARD_DATABASE_URL",
                    &with_app_name(setup.database_url, &name),
                ),
                env("KEYWARD_ADMIN_PASSWORD", setup.admin_password),
            ];
            let slot = Slot::new(name, "keyward-api", settings, setup, None);
            slot.start().await;
            apis.push(slot);
        }
        apis
    }

    /// Workers and ingestors, given the running APIs and the ingestors'
    /// `verifier` key.
    pub async fn start_rest(
        setup: &Setup<'_>,
        apis: Vec<Arc<Slot>>,
        workers: usize,
        ingestors: usize,
        verifier: &str,
    ) -> Self {
        let broker = keyward_tests::amqp::broker_addr();
        let mut worker_slots = Vec::new();
        for i in 0..workers {
            let name = format!("worker-{i}");
            let proxy = FaultProxy::start(broker).await;
            let settings = vec![
                env(
                    "KEYWARD_DATABASE_URL",
                    &with_app_name(setup.database_url, &name),
                ),
                env("KEYWARD_AMQP_URL", &amqp_url(&proxy)),
                env("KEYWARD_EXCHANGE", setup.exchange),
                env("KEYWARD_ACKS_QUEUE", setup.acks_queue),
                env("KEYWARD_WORKER_ID", &format!("{}-{name}", setup.prefix)),
                // Retries at most 2 s apart, so that the run heals
                // within seconds of its last fault; the schedule's
                // shape is the default's.
                env("KEYWARD_RETRY_MAX_MS", "2000"),
            ];
            let slot = Slot::new(name, "keyward-sync-worker", settings, setup, Some(proxy));
            worker_slots.push(slot);
        }
        let mut ingestor_slots = Vec::new();
        for i in 0..ingestors {
            let name = format!("ingestor-{i}");
            let proxy = FaultProxy::start(broker).await;
            // Ingestors ask the API replicas in turn: a killed replica
            // leaves some nodes without verification (503), not all.
            let api = &apis[i % apis.len()];
            let settings = vec![
                env("KEYWARD_API_URL", &api.url("")),
                env("KEYWARD_VERIFIER_KEY", verifier),
                env("KEYWARD_AMQP_URL", &amqp_url(&proxy)),
                env("KEYWARD_EXCHANGE", setup.exchange),
                env("KEYWARD_ACKS_QUEUE", setup.acks_queue),
                env("KEYWARD_INGESTOR_ID", &ingestor_id(setup.prefix, i)),
            ];
            let slot = Slot::new(name, "keyward-ingestor", settings, setup, Some(proxy));
            ingestor_slots.push(slot);
        }
        for slot in worker_slots.iter().chain(&ingestor_slots) {
            slot.start().await;
        }
        Self {
            apis,
            workers: worker_slots,
            ingestors: ingestor_slots,
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.apis.iter().chain(&self.workers).chain(&self.ingestors)
    }

    pub async fn stop(&self) {
        for slot in self.all() {
            slot.stop().await;
        }
    }
}

pub fn ingestor_id(prefix: &str, i: usize) -> String {
    format!("{prefix}-ingestor-{i}")
}

fn env(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// The database URL with `application_name` set, so that each process's
/// backends can be told apart (and terminated) in `pg_stat_activity`.
fn with_app_name(url: &str, name: &str) -> String {
    let mut url = url::Url::parse(url).expect("database url");
    url.query_pairs_mut()
        .append_pair("application_name", &format!("kw-soak-{name}"));
    url.to_string()
}

fn amqp_url(proxy: &FaultProxy) -> String {
    format!("{}?heartbeat={AMQP_HEARTBEAT_SECONDS}", proxy.amqp_url())
}
