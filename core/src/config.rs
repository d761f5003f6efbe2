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
            other => Err(format!("unsupported scheme `{other}` (use sqlite: or postgres:)")),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        f.write_str(shown.as_str())
    }
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
    #[arg(long = "database-url", env = "KEYWARD_DATABASE_URL", default_value = "sqlite://keyward.db?mode=rwc")]
    pub url: DatabaseUrl,
}

/// `RUST_LOG` is read by the subscriber itself; the format is a setting.
#[derive(Debug, Clone, clap::Args)]
pub struct LogSettings {
    /// Log format: `pretty` or `json`.
    #[arg(long = "log-format", env = "KEYWARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!("sqlite://keyward.db?mode=rwc".parse::<DatabaseUrl>().unwrap().is_sqlite());
        assert!("postgres://u:p@h/db".parse::<DatabaseUrl>().is_ok());
        assert!("mysql://h/db".parse::<DatabaseUrl>().is_err());
        assert!("::".parse::<DatabaseUrl>().is_err());
        let shown = "postgres://u:hunter2@h/db".parse::<DatabaseUrl>().unwrap().to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
