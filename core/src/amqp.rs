//! The AMQP topology, declared the same way by every party (feature
//! `amqp`): the durable topic exchange events go to, each ingestor's
//! durable queue bound to it, the durable reports queue (`applied` and
//! heartbeats) on the default exchange, and persistent JSON messages.
//! Declarations are idempotent: whoever connects first creates them, and
//! the others find them as they expect.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use std::time::Duration;

use crate::config::AmqpUrl;

use crate::events::CONTENT_TYPE;

/// `delivery_mode` 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// How long one broker address may take to accept a connection before
/// the next one is tried (when there are several).
const PER_ADDRESS_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a connection named `name` to the first address of `url` that
/// takes one, in the order `AmqpUrl::in_turn` gives: plain for `amqp://`;
/// for `amqps://`, TLS (rustls) verifying the broker's certificate and
/// host name against the system's roots and the URL's extra CA, never
/// falling back to plain. The error is the last address's.
pub async fn connect(url: &AmqpUrl, name: &str) -> lapin::Result<Connection> {
    let several = url.len() > 1;
    let mut last = None;
    for (i, address) in url.in_turn() {
        let attempt = connect_to(address, url.ca_pem(), name);
        let outcome = if several {
            tokio::time::timeout(PER_ADDRESS_TIMEOUT, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(lapin::ErrorKind::IOError(std::sync::Arc::new(timed_out())).into())
                })
        } else {
            attempt.await
        };
        match outcome {
            Ok(conn) => {
                if several {
                    tracing::info!(broker = %url.shown(i), "connected to the broker");
                }
                return Ok(conn);
            }
            Err(e) => {
                if several {
                    tracing::warn!(broker = %url.shown(i), error = %e,
                        "cannot connect to this broker; trying the next");
                }
                last = Some(e);
            }
        }
    }
    Err(last.expect("an AmqpUrl has at least one address"))
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no connection within {PER_ADDRESS_TIMEOUT:?}"),
    )
}

async fn connect_to(address: &str, ca_pem: Option<&str>, name: &str) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: ca_pem.map(str::to_owned),
    };
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connect_with_config(address, props, tls, runtime).await
}

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
pub async fn declare_reports_queue(
    channel: &Channel,
    queue: &str,
    kind: QueueType,
) -> lapin::Result<()> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            of_type(kind, FieldTable::default()),
        )
        .await
        .map(drop)
}

/// The longest message a consumer reads; a longer one is dead-lettered
/// unread (ours are a few hundred bytes).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How many messages a dead-letter queue keeps: the oldest go first, so a
/// flood of garbage costs the broker a bounded amount of disk.
const DEAD_LETTER_MAX_LENGTH: i64 = 10_000;

/// Where a consumer of `queue` puts messages it cannot take.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

/// Declares `queue`'s dead-letter queue: durable, at most
/// `DEAD_LETTER_MAX_LENGTH` messages (the oldest dropped).
pub async fn declare_dead_letter_queue(
    channel: &Channel,
    queue: &str,
    kind: QueueType,
) -> lapin::Result<()> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(DEAD_LETTER_MAX_LENGTH),
    );
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("drop-head".into()),
    );
    channel
        .queue_declare(
            dead_letter_queue(queue).as_str().into(),
            QueueDeclareOptions::durable(),
            of_type(kind, arguments),
        )
        .await
        .map(drop)
}

/// Moves a message a consumer of `queue` cannot take to its dead-letter
/// queue, with why (`x-keyward-reason`) and at most `MAX_MESSAGE_BYTES` of
/// its body, for an operator to look at; then acknowledges it. The channel
/// must be in confirm mode: the original is acknowledged only once the
/// broker has the copy. On failure the original is rejected without
/// requeue: it must never come back for ever.
pub async fn dead_letter(
    channel: &Channel,
    queue: &str,
    delivery: &lapin::message::Delivery,
    reason: &str,
) -> lapin::Result<bool> {
    use lapin::options::{BasicAckOptions, BasicPublishOptions, BasicRejectOptions};
    let body = &delivery.data[..delivery.data.len().min(MAX_MESSAGE_BYTES)];
    let mut headers = FieldTable::default();
    headers.insert(
        "x-keyward-reason".into(),
        AMQPValue::LongString(reason.into()),
    );
    headers.insert(
        "x-keyward-bytes".into(),
        AMQPValue::LongLongInt(i64::try_from(delivery.data.len()).unwrap_or(i64::MAX)),
    );
    let properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers);
    let copied = async {
        channel
            .basic_publish(
                "".into(),
                dead_letter_queue(queue).as_str().into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?
            .await
    }
    .await;
    match copied {
        Ok(confirm) if confirm.is_ack() => delivery.ack(BasicAckOptions::default()).await,
        _ => delivery.reject(BasicRejectOptions { requeue: false }).await,
    }
}

/// How an ingestor's durable queue is kept by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// RabbitMQ's default (single node).
    Classic,
    /// Replicated across a RabbitMQ cluster.
    Quorum,
}

impl QueueType {
    /// Quorum when `quorum` (`KEYWARD_QUORUM_QUEUE`), else classic.
    pub fn quorum_if(quorum: bool) -> Self {
        if quorum { Self::Quorum } else { Self::Classic }
    }
}

/// `arguments` with the queue's type, for a quorum queue.
fn of_type(kind: QueueType, mut arguments: FieldTable) -> FieldTable {
    if kind == QueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    arguments
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
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            of_type(kind, FieldTable::default()),
        )
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
