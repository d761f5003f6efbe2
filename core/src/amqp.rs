//! The AMQP topology, declared the same way by every party (feature
//! `amqp`): the durable topic exchange events go to, each ingestor's
//! durable queue bound to it, the durable reports queue (`applied` and
//! heartbeats) on the default exchange, and persistent JSON messages.
//! Declarations are idempotent: whoever connects first creates them, and
//! the others find them as they expect.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::events::CONTENT_TYPE;

/// `delivery_mode` 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// The durable topic exchange events are published to.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> lapin::Result<()> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

/// The durable queue ingestors report to (on the default exchange).
pub async fn declare_reports_queue(channel: &Channel, queue: &str) -> lapin::Result<()> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .map(drop)
}

/// How an ingestor's durable queue is kept by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// RabbitMQ's default (single node).
    Classic,
    /// Replicated across a RabbitMQ cluster.
    Quorum,
}

/// A durable queue bound to `exchange` with `binding` (`#` or a routing
/// pattern), as an ingestor consumes it.
pub async fn declare_bound_queue(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    binding: &str,
    kind: QueueType,
) -> lapin::Result<()> {
    let mut arguments = FieldTable::default();
    if kind == QueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            binding.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Every message: persistent, JSON.
pub fn message_properties() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(CONTENT_TYPE.into())
}
