//! Cache misses of *different* keys, batched: whoever misses queues its key
//! id; a few loader tasks each take what is queued (up to `MAX_BATCH`) and
//! read it in one statement (`Store::key_credentials_many`).
//!
//! Why: a read costs little in the database and much in the hand-offs
//! around it (sqlx runs each SQLite connection on a thread of its own; a
//! PostgreSQL statement is a round trip). Profiled under misses, two thirds
//! of the API's time was thread switches. One statement for the misses that
//! arrived together pays that once. At low load a batch is one key and
//! nothing waits: a loader takes a key as soon as it is queued.
//!
//! Each actix worker (a single-threaded runtime) gets loaders of its own,
//! started on its first miss: a request and the loader reading for it then
//! share a thread, so queueing the key and answering the request wake
//! nobody elsewhere. Elsewhere (a multi-threaded runtime) the loaders
//! started with the `KeyLoader` serve.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keyward_core::ids::KeyId;
use keyward_core::store::{KeyCredentials, Store, StoreError};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most keys in one statement.
const MAX_BATCH: usize = 128;
/// Statements in flight at once: shared loaders, and per worker thread.
const LOADERS: usize = 4;
const LOADERS_PER_WORKER: usize = 2;

type Sender = mpsc::UnboundedSender<(KeyId, Reply)>;

thread_local! {
    /// This thread's loaders, by the `KeyLoader` they belong to (tests run
    /// several APIs in one process).
    static WORKER_QUEUES: RefCell<HashMap<u64, Sender>> = RefCell::new(HashMap::new());
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A failed read as every waiter sees it; the loader logged the cause.
#[derive(Debug, Clone, Copy)]
pub enum ReadFailed {
    Unavailable,
    Internal,
}

type Reply = oneshot::Sender<Result<Option<KeyCredentials>, ReadFailed>>;

pub struct KeyLoader {
    id: u64,
    store: Arc<dyn Store>,
    queue: Sender,
}

impl KeyLoader {
    /// Starts the shared loader tasks on the current tokio runtime; they
    /// end when the loader is dropped. Per-worker loaders end with their
    /// worker's runtime.
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            queue: start(&store, LOADERS),
            store,
        }
    }

    /// The key's row and grants, read together with whatever else is queued.
    pub async fn load(&self, key_id: KeyId) -> Result<Option<KeyCredentials>, ReadFailed> {
        let (reply, answer) = oneshot::channel();
        let queued = match self.worker_queue() {
            Some(queue) => queue.send((key_id, reply)),
            None => self.queue.send((key_id, reply)),
        };
        queued.map_err(|_| ReadFailed::Internal)?;
        answer.await.map_err(|_| ReadFailed::Internal)?
    }

    /// This thread's loaders, started on first use, when this thread runs
    /// a single-threaded runtime (an actix worker).
    fn worker_queue(&self) -> Option<Sender> {
        let handle = Handle::try_current().ok()?;
        if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
            return None;
        }
        WORKER_QUEUES.with(|queues| {
            let mut queues = queues.borrow_mut();
            // A runtime that ended took its loaders with it.
            if let Some(queue) = queues.get(&self.id).filter(|q| !q.is_closed()) {
                return Some(queue.clone());
            }
            let queue = start(&self.store, LOADERS_PER_WORKER);
            queues.insert(self.id, queue.clone());
            Some(queue)
        })
    }
}

/// `n` loader tasks on the current runtime, sharing one queue.
fn start(store: &Arc<dyn Store>, n: usize) -> Sender {
    let (queue, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..n {
        tokio::spawn(load(Arc::clone(store), Arc::clone(&rx)));
    }
    queue
}

type Queue = Arc<Mutex<mpsc::UnboundedReceiver<(KeyId, Reply)>>>;

async fn load(store: Arc<dyn Store>, queue: Queue) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        let mut ids: Vec<KeyId> = batch.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        metrics::histogram!("keyward_verify_read_batch_keys").record(ids.len() as f64);
        match store.key_credentials_many(&ids).await {
            Ok(found) => {
                let mut found: HashMap<KeyId, KeyCredentials> =
                    found.into_iter().map(|k| (k.key_id, k)).collect();
                // Moved to its last waiter, copied for the others (a key
                // is asked for once per batch unless its flight was
                // superseded, so a copy is rare). `ids` is the batch
                // without repeats: the same length, no key waits twice.
                let repeats = ids.len() < batch.len();
                let mut waiting = batch.into_iter();
                while let Some((id, reply)) = waiting.next() {
                    let again = repeats && waiting.as_slice().iter().any(|(other, _)| *other == id);
                    let credentials = if again {
                        found.get(&id).cloned()
                    } else {
                        found.remove(&id)
                    };
                    let _ = reply.send(Ok(credentials));
                }
            }
            Err(e) => {
                tracing::error!(keys = ids.len(), error = %keyward_core::store::error::chain(&e), "verify read failed");
                let failed = match e {
                    StoreError::Unavailable(_) => ReadFailed::Unavailable,
                    _ => ReadFailed::Internal,
                };
                for (_, reply) in batch {
                    let _ = reply.send(Err(failed));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use keyward_core::testing::{TestDatabase, ensure_tenant, placeholder_key};

    use super::*;

    /// Loads queued together are one batch, and every waiter gets its own
    /// key's answer: a key asked for twice (both get it: one a copy, the
    /// last the original), another key, and an unknown one.
    #[tokio::test]
    async fn every_waiter_of_a_batch_gets_its_keys_answer() {
        let db = TestDatabase::sqlite().await;
        let store = db.store();
        let tenant = ensure_tenant(store.as_ref(), "acme").await;
        let (a, b) = (
            placeholder_key(store.as_ref(), &tenant).await,
            placeholder_key(store.as_ref(), &tenant).await,
        );
        let unknown = KeyId::new();
        let loader = KeyLoader::spawn(store);
        // One thread: all four are queued before a loader runs.
        let (a_first, b_once, a_again, none) = tokio::join!(
            loader.load(a),
            loader.load(b),
            loader.load(a),
            loader.load(unknown)
        );
        let id = |found: Result<Option<KeyCredentials>, ReadFailed>| {
            found.expect("read").map(|k| k.key_id)
        };
        assert_eq!(id(a_first), Some(a));
        assert_eq!(id(b_once), Some(b));
        assert_eq!(id(a_again), Some(a));
        assert_eq!(id(none), None);
    }
}
