//! Reference ingestor command line and settings (`docs/operations.md`).

use std::net::SocketAddr;

use keyward_core::config::{
    AmqpSettings, FileSettingError, HttpLimits, LogSettings, ReadFiles, parse_amqp_name,
    read_setting_file,
};
use keyward_core::events::{ALL_EVENTS, DEFAULT_ACKS_QUEUE};
use keyward_core::tls::ServerTlsSettings;
use keyward_core::token::ApiKeyToken;

#[derive(Debug, clap::Parser)]
#[command(
    name = "keyward-ingestor",
    version,
    about = "Keyward reference ingestor"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Base URL of the Keyward API, for `POST /api/v1/verify` on a cache miss.
    #[arg(long = "api-url", env = "KEYWARD_API_URL", default_value = "http://127.0.0.1:8080",
          value_parser = parse_http_url)]
    pub api_url: url::Url,
    /// This node's `verifier` API key.
    #[arg(long = "verifier-key", env = "KEYWARD_VERIFIER_KEY", hide_env_values = true,
          value_parser = parse_verifier_key)]
    pub verifier_key: Option<ApiKeyToken>,
    /// A file holding this node's `verifier` API key, instead of
    /// `--verifier-key` (e.g. written by `keyward-api keys create
    /// --secret-file`).
    #[arg(
        long = "verifier-key-file",
        env = "KEYWARD_VERIFIER_KEY_FILE",
        conflicts_with = "verifier_key"
    )]
    pub verifier_key_file: Option<std::path::PathBuf>,
    /// PEM file of the CA certificates that an `https://` API URL's
    /// certificate must chain to (a private CA); without it, the system's
    /// roots.
    #[arg(long = "api-ca-file", env = "KEYWARD_API_CA_FILE")]
    pub api_ca_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub amqp: AmqpSettings,
    /// This ingestor's id; its queue is `keyward.ingestor.{id}`. Default: host name.
    #[arg(long = "ingestor-id", env = "KEYWARD_INGESTOR_ID", value_parser = parse_ingestor_id)]
    pub ingestor_id: Option<String>,
    /// Address to serve `/ingest/{stream}`, `/healthz`, `/readyz`, `/metrics` on.
    #[arg(
        long = "listen",
        env = "KEYWARD_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub listen: SocketAddr,
    /// Durable queue heartbeats and `applied` reports go to.
    #[arg(long = "acks-queue", env = "KEYWARD_ACKS_QUEUE", default_value = DEFAULT_ACKS_QUEUE,
          value_parser = parse_amqp_name)]
    pub acks_queue: String,
    /// Which events this node receives: `#` (every event of every tenant)
    /// or `*.*.{tenant}` (one tenant's). The revocations-only patterns of
    /// earlier versions (`key.revoked.#`, `key.revoked.{tenant}`) are still
    /// accepted; such a node gets no `key.updated` or `rbac.changed`.
    #[arg(long = "binding", env = "KEYWARD_BINDING", default_value = ALL_EVENTS,
          value_parser = parse_binding)]
    pub binding: String,
    /// Seconds between heartbeats to the acks queue.
    #[arg(long = "heartbeat-seconds", env = "KEYWARD_HEARTBEAT_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub heartbeat_seconds: u64,
    /// Keys held in the local verification cache.
    #[arg(long = "cache-capacity", env = "KEYWARD_CACHE_CAPACITY", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub cache_capacity: u64,
    #[command(flatten)]
    pub tls: ServerTlsSettings,
    #[command(flatten)]
    pub http: HttpLimits,
    #[command(flatten)]
    pub log: LogSettings,
}

impl Settings {
    /// The configured id, else the host name (made queue-safe).
    pub fn ingestor_id(&self) -> String {
        self.ingestor_id.clone().unwrap_or_else(host_name)
    }
}

impl ReadFiles for Cli {
    fn read_files(&mut self) -> Result<(), FileSettingError> {
        let s = &mut self.settings;
        s.amqp.read_files()?;
        if let Some(path) = &s.verifier_key_file {
            s.verifier_key = Some(read_setting_file(
                "KEYWARD_VERIFIER_KEY_FILE",
                path,
                parse_verifier_key,
            )?);
        }
        Ok(())
    }
}

/// `#`, `*.*.{tenant}`, or the revocations-only `key.revoked.#`,
/// `key.revoked.*` and `key.revoked.{tenant}` of earlier versions.
fn parse_binding(value: &str) -> Result<String, String> {
    let tenant = |t: &str| keyward_core::ids::TenantId::parse(t).is_ok();
    let ok = value == "#"
        || value.strip_prefix("*.*.").is_some_and(tenant)
        || value
            .strip_prefix("key.revoked.")
            .is_some_and(|t| t == "#" || t == "*" || tenant(t));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(
            "must be # or *.*.<tenant> (or key.revoked.# / key.revoked.<tenant>: revocations only)"
                .into(),
        )
    }
}

fn parse_http_url(value: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(value).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(url),
        _ => Err("must be an http:// or https:// URL with a host".into()),
    }
}

fn parse_verifier_key(value: &str) -> Result<ApiKeyToken, String> {
    // Never echo the value: it is a secret.
    ApiKeyToken::parse(value).map_err(|e| e.to_string())
}

/// `[A-Za-z0-9._-]{1,64}`: it becomes part of a queue name.
pub fn parse_ingestor_id(value: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(value.to_owned())
    } else {
        Err("must be 1 to 64 of A-Z a-z 0-9 . _ -".into())
    }
}

fn host_name() -> String {
    keyward_core::config::host_name().unwrap_or_else(|| "ingestor".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("keyward-ingestor").chain(args.iter().copied()))
    }

    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = parse(&[]).unwrap().settings;
        assert_eq!(s.api_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(s.listen.to_string(), "127.0.0.1:8081");
        assert!(parse_ingestor_id(&s.ingestor_id()).is_ok());
        assert_eq!(s.binding, "#");
        assert_eq!(s.acks_queue, "keyward.acks");
        assert!(!s.amqp.quorum_queue);
    }

    #[test]
    fn bad_settings_are_refused_without_echoing_secrets() {
        let e = parse(&["--verifier-key", "kw_not-a-key"]).unwrap_err();
        let e = keyward_core::config::one_line(&e);
        assert!(!e.contains("not-a-key"), "{e}");
        assert!(parse(&["--api-url", "ftp://x"]).is_err());
        assert!(parse(&["--api-url", "https://x"]).is_ok());
        assert!(
            parse(&["--tls-cert", "c.pem"]).is_err(),
            "a certificate needs its key"
        );
        assert!(parse(&["--ingestor-id", "a b"]).is_err());
        assert!(parse(&["--binding", "*.*.acme"]).is_ok());
        assert!(
            parse(&["--binding", "key.revoked.acme"]).is_ok(),
            "as before"
        );
        assert!(parse(&["--binding", "key.revoked.#"]).is_ok(), "as before");
        assert!(parse(&["--binding", "key.#"]).is_err());
        assert!(parse(&["--binding", "*.*.a b"]).is_err());
        assert!(parse(&["--heartbeat-seconds", "0"]).is_err());
    }

    #[test]
    fn every_setting_is_in_operations_md() {
        let command = <Cli as clap::CommandFactory>::command();
        keyward_core::config::assert_settings_documented(&command);
    }
}
