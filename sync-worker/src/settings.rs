//! `keyward-sync-worker` command line and settings (`docs/operations.md`).

use std::net::SocketAddr;
use std::time::Duration;

use keyward_core::config::{
    AmqpSettings, DatabaseSettings, FileSettingError, LogSettings, ReadFiles, parse_amqp_name,
};
use keyward_core::events::DEFAULT_ACKS_QUEUE;

use crate::retry::RetrySchedule;

#[derive(Debug, clap::Parser)]
#[command(
    name = "keyward-sync-worker",
    version,
    about = "Keyward outbox → RabbitMQ delivery"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Deliver the outbox until SIGTERM/SIGINT (the default).
    Run,
    /// Put every dead-lettered event back in the outbox and exit.
    RetryDead,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub amqp: AmqpSettings,
    /// Address of the `/healthz`, `/readyz` and `/metrics` listener.
    #[arg(
        long = "listen",
        env = "KEYWARD_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub delivery: DeliverySettings,
    #[command(flatten)]
    pub retry: RetrySettings,
    #[command(flatten)]
    pub log: LogSettings,
}

impl ReadFiles for Cli {
    fn read_files(&mut self) -> Result<(), FileSettingError> {
        self.settings.database.read_files()?;
        self.settings.amqp.read_files()
    }
}

/// How the outbox is claimed and delivered.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliverySettings {
    /// Events claimed and published per batch.
    #[arg(long = "batch", env = "KEYWARD_OUTBOX_BATCH", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// How long a claimed batch is ours; a worker that dies holding one
    /// delays its events by at most this long.
    #[arg(long = "lease-seconds", env = "KEYWARD_OUTBOX_LEASE_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_seconds: u64,
    /// Poll interval in ms when no wake-up arrives (default: 5000 on
    /// PostgreSQL, which wakes the worker by NOTIFY; 250 on SQLite).
    #[arg(long = "poll-interval-ms", env = "KEYWARD_POLL_INTERVAL_MS",
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub poll_interval_ms: Option<u64>,
    /// How long the broker has to confirm a published batch.
    #[arg(long = "confirm-timeout-ms", env = "KEYWARD_CONFIRM_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub confirm_timeout_ms: u64,
    /// Published events and their acks are purged after this many hours.
    #[arg(long = "retention-hours", env = "KEYWARD_RETENTION_HOURS", default_value_t = 168,
          value_parser = clap::value_parser!(u64).range(1..=87_600))]
    pub retention_hours: u64,
    /// Audit records are purged after this many days.
    #[arg(long = "audit-retention-days", env = "KEYWARD_AUDIT_RETENTION_DAYS", default_value_t = 400,
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub audit_retention_days: u64,
    /// An ingestor seen within this many seconds counts as live.
    #[arg(long = "ingestor-liveness-seconds", env = "KEYWARD_INGESTOR_LIVENESS_SECONDS",
          default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ingestor_liveness_seconds: u64,
    /// Durable queue ingestors report heartbeats and applied events to.
    #[arg(long = "acks-queue", env = "KEYWARD_ACKS_QUEUE", default_value = DEFAULT_ACKS_QUEUE,
          value_parser = parse_amqp_name)]
    pub acks_queue: String,
    /// Lease owner name (default: host name and process id).
    #[arg(long = "worker-id", env = "KEYWARD_WORKER_ID", value_parser = parse_amqp_name)]
    pub worker_id: Option<String>,
}

impl DeliverySettings {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }

    pub fn poll_interval(&self, sqlite: bool) -> Duration {
        let default = if sqlite { 250 } else { 5_000 };
        Duration::from_millis(self.poll_interval_ms.unwrap_or(default))
    }

    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.confirm_timeout_ms)
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_hours * 3600)
    }

    pub fn audit_retention(&self) -> Duration {
        Duration::from_secs(self.audit_retention_days * 24 * 3600)
    }

    pub fn ingestor_liveness(&self) -> Duration {
        Duration::from_secs(self.ingestor_liveness_seconds)
    }

    pub fn worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| {
            let host = keyward_core::config::host_name().unwrap_or_else(|| "worker".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// The retry schedule of events the broker did not confirm (`retry.rs`).
#[derive(Debug, Clone, clap::Args)]
pub struct RetrySettings {
    /// Delay before the second attempt.
    #[arg(long = "retry-initial-ms", env = "KEYWARD_RETRY_INITIAL_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub initial_ms: u64,
    /// Each further delay is this many times the one before.
    #[arg(long = "retry-multiplier", env = "KEYWARD_RETRY_MULTIPLIER", default_value_t = 2.0,
          value_parser = parse_multiplier)]
    pub multiplier: f64,
    /// No delay is longer than this.
    #[arg(long = "retry-max-ms", env = "KEYWARD_RETRY_MAX_MS", default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub max_ms: u64,
    /// Each delay is spread by up to this fraction either way.
    #[arg(long = "retry-jitter", env = "KEYWARD_RETRY_JITTER", default_value_t = 0.2,
          value_parser = parse_jitter)]
    pub jitter: f64,
    /// Attempts before an event is dead-lettered.
    #[arg(long = "retry-max-attempts", env = "KEYWARD_RETRY_MAX_ATTEMPTS", default_value_t = 25,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_attempts: u32,
    /// Age (hours since the revoke) after which a failing event is
    /// dead-lettered whatever its attempts.
    #[arg(long = "retry-max-age-hours", env = "KEYWARD_RETRY_MAX_AGE_HOURS", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(1..=87_600))]
    pub max_age_hours: u64,
}

impl RetrySettings {
    pub fn schedule(&self) -> RetrySchedule {
        RetrySchedule {
            initial: Duration::from_millis(self.initial_ms),
            multiplier: self.multiplier,
            max_interval: Duration::from_millis(self.max_ms.max(self.initial_ms)),
            jitter: self.jitter,
            max_attempts: self.max_attempts,
            max_age: Duration::from_secs(self.max_age_hours * 3600),
        }
    }
}

fn parse_multiplier(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(m) if (1.0..=10.0).contains(&m) => Ok(m),
        _ => Err("must be a number from 1 to 10".into()),
    }
}

fn parse_jitter(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(j) if (0.0..=1.0).contains(&j) => Ok(j),
        _ => Err("must be a number from 0 to 1".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("keyward-sync-worker").chain(args.iter().copied()))
    }

    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_follow_the_contract() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.settings.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(cli.settings.amqp.exchange, "keyward.events");
        assert_eq!(
            cli.settings.amqp.amqp_url.as_str(),
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
        let d = &cli.settings.delivery;
        assert_eq!(d.batch, 256);
        assert_eq!(d.acks_queue, "keyward.acks");
        assert_eq!(d.poll_interval(true), Duration::from_millis(250));
        assert_eq!(d.poll_interval(false), Duration::from_secs(5));
        assert_eq!(d.retention(), Duration::from_secs(7 * 24 * 3600));
        assert_eq!(d.audit_retention(), Duration::from_secs(400 * 24 * 3600));
        assert_eq!(
            parse(&["retry-dead"]).unwrap().command,
            Some(Command::RetryDead)
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(parse(&["--amqp-url", "http://x"]).is_err());
        assert!(parse(&["--exchange", ""]).is_err());
        assert!(parse(&["--listen", "x:y"]).is_err());
        assert!(parse(&["--batch", "0"]).is_err());
        assert!(parse(&["--retry-jitter", "1.5"]).is_err());
        assert!(parse(&["--retry-multiplier", "0.5"]).is_err());
        assert!(parse(&["--acks-queue", "a b"]).is_err());
    }

    #[test]
    fn every_setting_is_in_operations_md() {
        let command = <Cli as clap::CommandFactory>::command();
        keyward_core::config::assert_settings_documented(&command);
    }
}
