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

use std::collections::HashMap;
use std::sync::Arc;

use keyward_core::ids::KeyId;
use keyward_core::store::{KeyCredentials, Store, StoreError};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most keys in one statement.
const MAX_BATCH: usize = 128;
/// Statements in flight at once.
const LOADERS: usize = 4;

/// A failed read as every waiter sees it; the loader logged the cause.
#[derive(Debug, Clone, Copy)]
pub enum ReadFailed {
    Unavailable,
    Internal,
}

type Reply = oneshot::Sender<Result<Option<KeyCredentials>, ReadFailed>>;

pub struct KeyLoader {
    queue: mpsc::UnboundedSender<(KeyId, Reply)>,
}

impl KeyLoader {
    /// Starts the loader tasks on the current tokio runtime; they end when
    /// the loader is dropped.
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..LOADERS {
            tokio::spawn(load(Arc::clone(&store), Arc::clone(&rx)));
        }
        Self { queue }
    }

    /// The key's row and grants, read together with whatever else is queued.
    pub async fn load(&self, key_id: KeyId) -> Result<Option<KeyCredentials>, ReadFailed> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((key_id, reply))
            .map_err(|_| ReadFailed::Internal)?;
        answer.await.map_err(|_| ReadFailed::Internal)?
    }
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
                let found: HashMap<KeyId, KeyCredentials> =
                    found.into_iter().map(|k| (k.key_id, k)).collect();
                for (id, reply) in batch {
                    let _ = reply.send(Ok(found.get(&id).cloned()));
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
