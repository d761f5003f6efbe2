//! The library embedded in the smallest node there is: it receives
//! revocations on its own queue and checks one API key every second, as an
//! ingestion node would on each request. Revoke the key through the API and
//! watch the verdict change at once.
//!
//! ```sh
//! KEYWARD_VERIFIER_KEY=kw_… cargo run -p keyward-ingestor --example check_key -- <api key> <stream>
//! ```
//!
//! Reads `KEYWARD_API_URL` and `KEYWARD_AMQP_URL` (defaults: the local API
//! and RabbitMQ). Stop it with Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use keyward_core::token::ApiKeyToken;
use keyward_ingestor::client::{VERIFY_TIMEOUT, VerifyClient};
use keyward_ingestor::consumer::{ConsumerSettings, RevocationConsumer};
use keyward_ingestor::verifier::{Verdict, Verifier};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(api_key), Some(stream)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: check_key <api key> <stream>");
    };
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let api = url::Url::parse(&env("KEYWARD_API_URL", "http://127.0.0.1:8080"))?;
    let verifier_key = ApiKeyToken::parse(
        &std::env::var("KEYWARD_VERIFIER_KEY").context("KEYWARD_VERIFIER_KEY is required")?,
    )?;
    let client = VerifyClient::new(&api, verifier_key, VERIFY_TIMEOUT)?;
    let verifier = Arc::new(Verifier::new(client, 10_000));

    let consumer = RevocationConsumer::new(
        ConsumerSettings {
            amqp_url: env("KEYWARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
                .parse()
                .map_err(anyhow::Error::msg)?,
            exchange: "keyward.events".into(),
            ingestor_id: format!("example-{}", std::process::id()),
            binding: "#".into(),
            acks_queue: "keyward.acks".into(),
            quorum: false,
            prefetch: 64,
            heartbeat_every: Duration::from_secs(5),
        },
        Arc::clone(&verifier),
    );
    let connected = consumer.connected();
    let shutdown = CancellationToken::new();
    let consuming = tokio::spawn(consumer.run(shutdown.clone()));

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        let verdict = verifier.verify(&api_key).await;
        let answer = match &verdict {
            Verdict::Valid(_) if verdict.may_ingest(&stream) => "202 accepted",
            Verdict::Valid(_) => "403 forbidden (no privilege on this stream)",
            Verdict::Invalid(_) => "401 unauthenticated",
            Verdict::Unavailable => "503 unavailable",
        };
        let cache = if connected.load(Ordering::Acquire) {
            "revocations live, cache trusted"
        } else {
            "no broker: asking the API every time"
        };
        println!(
            "{answer}  ({cache}; {} API calls so far)",
            verifier.api_calls()
        );
    }
    shutdown.cancel();
    consuming.await?;
    Ok(())
}
