//! A consumer of every event on the exchange, on a durable queue of its
//! own: what the broker delivered, independent of what the database says
//! was published, and how often each event came (duplicates).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::watch;

#[derive(Default)]
pub struct Seen(Mutex<HashMap<String, u32>>);

impl Seen {
    pub fn times(&self, event_id: &str) -> u32 {
        self.0
            .lock()
            .expect("seen lock")
            .get(event_id)
            .copied()
            .unwrap_or(0)
    }

    /// Deliveries beyond the first of each event.
    pub fn duplicates(&self) -> u64 {
        self.0
            .lock()
            .expect("seen lock")
            .values()
            .map(|n| u64::from(n.saturating_sub(1)))
            .sum()
    }

    pub fn distinct(&self) -> usize {
        self.0.lock().expect("seen lock").len()
    }
}

pub fn queue_name(exchange: &str) -> String {
    format!("{exchange}.soak-observer")
}

/// Declares the observer's queue (before any event is published) and
/// consumes it until `stop`, reconnecting whenever the broker goes away.
pub async fn declare(exchange: &str) {
    let conn = Connection::connect(
        &keyward_tests::amqp::amqp_url(),
        ConnectionProperties::default(),
    )
    .await
    .expect("connect to RabbitMQ");
    let ch = conn.create_channel().await.expect("channel");
    bind(&ch, exchange)
        .await
        .expect("declare the observer queue");
    let _ = conn.close(200, "declared".into()).await;
}

async fn bind(ch: &lapin::Channel, exchange: &str) -> lapin::Result<()> {
    let queue = queue_name(exchange);
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        queue.as_str().into(),
        exchange.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

pub async fn run(exchange: String, seen: Arc<Seen>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = consume(&exchange, &seen) => {}
            _ = crate::stopped(&mut stop) => return,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Until the connection fails.
async fn consume(exchange: &str, seen: &Seen) {
    let Ok(conn) = Connection::connect(
        &keyward_tests::amqp::amqp_url(),
        ConnectionProperties::default(),
    )
    .await
    else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    if bind(&ch, exchange).await.is_err() {
        return;
    }
    let Ok(mut deliveries) = ch
        .basic_consume(
            queue_name(exchange).as_str().into(),
            "soak-observer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    else {
        return;
    };
    while let Some(Ok(d)) = deliveries.next().await {
        if let Ok(event) = serde_json::from_slice::<serde_json::Value>(&d.data)
            && let Some(id) = event["eventId"].as_str()
        {
            // A message the broker hands this observer again (its own ack
            // was lost) is not a duplicate publish.
            let mut seen = seen.0.lock().expect("seen lock");
            let n = seen.entry(id.to_owned()).or_default();
            if !(d.redelivered && *n > 0) {
                *n += 1;
            }
        }
        if d.ack(BasicAckOptions::default()).await.is_err() {
            return;
        }
    }
}
