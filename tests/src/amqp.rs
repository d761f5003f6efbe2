//! RabbitMQ for tests: the real broker, with names unique to each test so
//! tests running at once never see each other's messages.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use keyward_core::events::EventMessage;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};

/// `KEYWARD_TEST_AMQP_URL`, or the local broker.
pub fn amqp_url() -> String {
    std::env::var("KEYWARD_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The broker's address, for a proxy in front of it.
pub fn broker_addr() -> SocketAddr {
    let url = url::Url::parse(&amqp_url()).expect("KEYWARD_TEST_AMQP_URL");
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port().unwrap_or(5672);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .expect("resolve the broker")
        .next()
        .expect("an address for the broker")
}

/// A prefix no other test uses: `kw_test_<ulid>`.
pub fn unique_prefix() -> String {
    format!(
        "kw_test_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    )
}

/// One test's corner of the broker: its exchange and acks queue names, and
/// a connection to bind and read queues with. `cleanup` deletes them.
pub struct TestBroker {
    pub exchange: String,
    pub acks_queue: String,
    pub conn: Connection,
    pub channel: Channel,
    queues: Vec<String>,
}

impl TestBroker {
    /// Deletes the durable queue of ingestor `id` and its dead-letter
    /// queue (they outlive the node; `cleanup` only knows the test's own).
    pub async fn delete_ingestor_queues(&self, id: &str) {
        let queue = keyward_core::events::ingestor_queue(id);
        let dead = keyward_core::amqp::dead_letter_queue(&queue);
        for q in [queue, dead] {
            let _ = self
                .channel
                .queue_delete(q.as_str().into(), Default::default())
                .await;
        }
    }

    /// `None` (with a loud message) when RabbitMQ is not there and
    /// services are optional; a panic when they are required.
    pub async fn new() -> Option<Self> {
        Self::with_prefix(&unique_prefix()).await
    }

    /// Names from `prefix` (`{prefix}.events`, `{prefix}.acks`).
    pub async fn with_prefix(prefix: &str) -> Option<Self> {
        Self::at(&amqp_url(), prefix).await
    }

    /// On the broker at `url` (one address), names from `prefix`.
    pub async fn at(url: &str, prefix: &str) -> Option<Self> {
        let conn = match Connection::connect(url, ConnectionProperties::default()).await {
            Ok(c) => c,
            Err(e) => return keyward_core::testing::missing_service("RabbitMQ", &e),
        };
        let channel = conn.create_channel().await.expect("channel");
        let broker = Self {
            exchange: format!("{prefix}.events"),
            acks_queue: format!("{prefix}.acks"),
            conn,
            channel,
            queues: Vec::new(),
        };
        // Declared as the worker declares it, so queues can be bound
        // before the worker first connects.
        keyward_core::amqp::declare_exchange(&broker.channel, &broker.exchange)
            .await
            .expect("declare exchange");
        Some(broker)
    }

    /// A queue bound to the exchange with `pattern`, consumed with manual
    /// acks. `arguments` are its `x-` arguments.
    pub async fn bind(&mut self, name: &str, pattern: &str, arguments: FieldTable) -> Consumer {
        let queue = format!("{}.{name}", self.exchange);
        self.channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                arguments,
            )
            .await
            .expect("declare queue");
        self.channel
            .queue_bind(
                queue.as_str().into(),
                self.exchange.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind queue");
        self.queues.push(queue.clone());
        self.channel
            .basic_consume(
                queue.as_str().into(),
                format!("test-{name}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume")
    }

    /// Deletes a queue `bind` made.
    pub async fn delete_queue(&mut self, name: &str) {
        let queue = format!("{}.{name}", self.exchange);
        self.channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("delete queue");
        self.queues.retain(|q| *q != queue);
    }

    /// Publishes `body` to the acks queue, as an ingestor would.
    pub async fn send_ack(&self, body: &serde_json::Value) {
        self.send_raw_ack(body.to_string().as_bytes()).await;
    }

    /// Publishes raw bytes to the acks queue (declared as the worker
    /// declares it, so it exists before the worker first connects).
    pub async fn send_raw_ack(&self, body: &[u8]) {
        keyward_core::amqp::declare_reports_queue(
            &self.channel,
            &self.acks_queue,
            keyward_core::amqp::QueueType::Classic,
        )
        .await
        .expect("declare the reports queue");
        self.channel
            .basic_publish(
                "".into(),
                self.acks_queue.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                lapin::BasicProperties::default(),
            )
            .await
            .expect("publish to the acks queue");
    }

    /// Publishes raw bytes to the exchange with `routing_key`, as the
    /// worker would (or as a forger could).
    pub async fn publish_event(&self, routing_key: &str, body: &[u8]) {
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                lapin::BasicProperties::default(),
            )
            .await
            .expect("publish to the exchange");
    }

    /// Takes every message from `queue`'s dead-letter queue: each one's
    /// `x-keyward-reason` and body length.
    pub async fn take_dead_letters(&self, queue: &str) -> Vec<(String, usize)> {
        let dead = keyward_core::amqp::dead_letter_queue(queue);
        let mut out = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(
                dead.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")
        {
            let reason = message
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-keyward-reason").cloned())
                .map(|v| match v {
                    lapin::types::AMQPValue::LongString(s) => s.to_string(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            out.push((reason, message.delivery.data.len()));
        }
        out
    }

    /// Deletes everything this test made on the broker.
    pub async fn cleanup(self) {
        let dead = keyward_core::amqp::dead_letter_queue(&self.acks_queue);
        for q in self.queues.iter().chain([&self.acks_queue, &dead]) {
            let _ = self
                .channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = self
            .channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// The next delivery within `timeout`, acknowledged.
pub async fn next_delivery(consumer: &mut Consumer, timeout: Duration) -> Option<Delivery> {
    let delivery = tokio::time::timeout(timeout, consumer.next())
        .await
        .ok()??
        .expect("delivery");
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
    Some(delivery)
}

/// Reads event messages until `n` distinct event ids were seen or nothing
/// came for `quiet`; returns every message in arrival order.
pub async fn collect_events(
    consumer: &mut Consumer,
    n: usize,
    quiet: Duration,
) -> Vec<EventMessage> {
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    while seen.len() < n {
        let Some(d) = next_delivery(consumer, quiet).await else {
            break;
        };
        let m: EventMessage = serde_json::from_slice(&d.data).expect("event body");
        seen.insert(m.event_id());
        all.push(m);
    }
    all
}
