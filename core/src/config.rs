//! Settings every binary shares, parsed by clap from flags or `KEYWARD_*`.

use std::fmt;
use std::str::FromStr;

use crate::telemetry::LogFormat;

/// A database URL whose scheme Keyward supports. Its `Display` hides any
/// password, so it can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(url::Url);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_sqlite(&self) -> bool {
        self.0.scheme() == "sqlite"
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
        match url.scheme() {
            "sqlite" | "postgres" | "postgresql" => Ok(Self(url)),
            other => Err(format!(
                "unsupported scheme `{other}` (use sqlite: or postgres:)"
            )),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_redacted(&self.0, f)
    }
}

/// Writes a URL with its password, if any, replaced by `***`.
fn write_redacted(url: &url::Url, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    f.write_str(shown.as_str())
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// `KEYWARD_DATABASE_URL`.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseSettings {
    /// Database URL: `sqlite://file.db?mode=rwc` or `postgres://…`.
    #[arg(
        long = "database-url",
        env = "KEYWARD_DATABASE_URL",
        default_value = "sqlite://keyward.db?mode=rwc"
    )]
    pub database_url: DatabaseUrl,
}

/// Limits of an HTTP server that faces clients it does not trust: a slow
/// or idle client must not hold a connection (and the memory behind it)
/// for ever, nor may clients open connections without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct HttpLimits {
    /// Seconds a client has to send a request's head, and again to send
    /// its body; past either the answer is `408` and the connection closes.
    #[arg(long = "request-timeout-seconds", env = "KEYWARD_REQUEST_TIMEOUT_SECONDS",
          default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub request_timeout_seconds: u64,
    /// Connections served at once; more wait in the listen backlog until
    /// one closes.
    #[arg(long = "max-connections", env = "KEYWARD_MAX_CONNECTIONS",
          default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            request_timeout_seconds: 10,
            max_connections: 10_000,
        }
    }
}

impl HttpLimits {
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.request_timeout_seconds)
    }
}

/// `RUST_LOG` is read by the subscriber itself; the format is a setting.
#[derive(Debug, Clone, clap::Args)]
pub struct LogSettings {
    /// Log format: `pretty` or `json`.
    #[arg(long = "log-format", env = "KEYWARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(
            "sqlite://keyward.db?mode=rwc"
                .parse::<DatabaseUrl>()
                .unwrap()
                .is_sqlite()
        );
        assert!("postgres://u:p@h/db".parse::<DatabaseUrl>().is_ok());
        assert!("mysql://h/db".parse::<DatabaseUrl>().is_err());
        assert!("::".parse::<DatabaseUrl>().is_err());
        let shown = "postgres://u:hunter2@h/db"
            .parse::<DatabaseUrl>()
            .unwrap()
            .to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

/// Parses the command line and environment, or exits: help and version
/// print as usual (exit 0); a bad setting prints one line and exits 2,
/// never a usage screen or a backtrace.
pub fn parse_or_exit<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(parsed) => parsed,
        Err(e) => exit_with_clap_error(&e),
    }
}

fn exit_with_clap_error(e: &clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        std::process::exit(0);
    }
    eprintln!("{}", one_line(e));
    std::process::exit(2);
}

/// The first line of clap's message; for a rejected value, without the
/// value itself, which may be a password or an API key.
pub fn one_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::ValueValidation {
        let arg = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(arg)) => arg.clone(),
            _ => "a setting".to_owned(),
        };
        let why = std::error::Error::source(e)
            .map(ToString::to_string)
            .unwrap_or_default();
        return format!("error: invalid value for '{arg}': {why}");
    }
    let rendered = e.render().to_string();
    rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("error: bad settings")
        .to_owned()
}

/// This machine's host name, cut to what a queue or lease owner name may
/// hold (`[A-Za-z0-9._-]`, at most 64); `None` when it cannot be read.
pub fn host_name() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// An AMQP URL (`amqp://user:pass@host:port/vhost`). Its `Display` hides
/// the password.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl(url::Url);

impl AmqpUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for AmqpUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
        match url.scheme() {
            "amqp" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(Self(url)),
            "amqp" => Err("the URL names no host".into()),
            "amqps" => Err("amqps:// needs a build with TLS support, which this one lacks".into()),
            other => Err(format!("unsupported scheme `{other}` (use amqp:)")),
        }
    }
}

impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_redacted(&self.0, f)
    }
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmqpUrl({self})")
    }
}

/// An AMQP exchange or queue name: 1 to 255 of `[A-Za-z0-9._:-]`.
pub fn parse_amqp_name(value: &str) -> Result<String, String> {
    let ok = (1..=255).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(value.to_owned())
    } else {
        Err("must be 1 to 255 of A-Z a-z 0-9 . _ : -".into())
    }
}

/// `KEYWARD_AMQP_URL` and `KEYWARD_EXCHANGE`, shared by the worker and ingestors.
#[derive(Debug, Clone, clap::Args)]
pub struct AmqpSettings {
    /// RabbitMQ URL.
    #[arg(
        long = "amqp-url",
        env = "KEYWARD_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: AmqpUrl,
    /// Durable topic exchange revocation events are published to.
    #[arg(long = "exchange", env = "KEYWARD_EXCHANGE", default_value = "keyward.events",
          value_parser = parse_amqp_name)]
    pub exchange: String,
}

#[cfg(test)]
mod amqp_tests {
    use super::*;

    #[test]
    fn amqp_urls_and_names() {
        assert!(
            "amqp://guest:guest@127.0.0.1:5672/%2f"
                .parse::<AmqpUrl>()
                .is_ok()
        );
        assert!("amqps://h/".parse::<AmqpUrl>().is_err());
        assert!("http://h/".parse::<AmqpUrl>().is_err());
        let shown = "amqp://u:topsecret@h/"
            .parse::<AmqpUrl>()
            .unwrap()
            .to_string();
        assert!(!shown.contains("topsecret"));
        assert!(parse_amqp_name("keyward.events").is_ok());
        assert!(parse_amqp_name("").is_err());
        assert!(parse_amqp_name("a b").is_err());
    }
}
