//! Settings every binary shares, parsed by clap from flags or `KEYWARD_*`.

use std::fmt;
use std::path::{Path, PathBuf};
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
    /// A file holding the database URL (for a password in it: a Docker or
    /// Kubernetes secret), instead of `--database-url`.
    #[arg(
        long = "database-url-file",
        env = "KEYWARD_DATABASE_URL_FILE",
        conflicts_with = "database_url"
    )]
    pub database_url_file: Option<PathBuf>,
}

impl DatabaseSettings {
    pub fn new(database_url: DatabaseUrl) -> Self {
        Self {
            database_url,
            database_url_file: None,
        }
    }
}

impl ReadFiles for DatabaseSettings {
    fn read_files(&mut self) -> Result<(), FileSettingError> {
        if let Some(path) = &self.database_url_file {
            self.database_url = read_setting_file("KEYWARD_DATABASE_URL_FILE", path, |v| {
                v.parse::<DatabaseUrl>()
            })?;
        }
        Ok(())
    }
}

/// Settings some of whose values may be read from files: every secret
/// setting `KEYWARD_X` also takes `KEYWARD_X_FILE` (`--x-file`), the
/// convention of Docker and Kubernetes secrets. Read once, at start,
/// after the command line is parsed.
pub trait ReadFiles {
    fn read_files(&mut self) -> Result<(), FileSettingError>;
}

/// A `…_FILE` setting that could not be used. Its message names the
/// setting and the file, never what the file holds.
#[derive(Debug, thiserror::Error)]
pub enum FileSettingError {
    #[error("{setting}: cannot read {}: {source}", path.display())]
    Unreadable {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{setting}: {} is larger than {MAX_SETTING_FILE_BYTES} bytes", path.display())]
    TooLarge {
        setting: &'static str,
        path: PathBuf,
    },
    #[error("{setting}: the value in {} is invalid: {reason}", path.display())]
    Invalid {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A secret file is a password, a key or a URL: anything larger is a
/// mistake (a certificate, a log) and is refused rather than parsed.
pub const MAX_SETTING_FILE_BYTES: u64 = 16 * 1024;

/// Reads the value of `setting` from `path` and parses it with `parse`.
/// One trailing line break is dropped (`echo secret > file` writes one);
/// the text read is wiped from memory afterwards. The parser's reason must
/// not repeat the value: it is shown.
pub fn read_setting_file<T, E: fmt::Display>(
    setting: &'static str,
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, FileSettingError> {
    use std::io::Read;
    let unreadable = |source| FileSettingError::Unreadable {
        setting,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut raw = Vec::new();
    file.take(MAX_SETTING_FILE_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(unreadable)?;
    let raw = crate::secret::SecretBytes::new(raw);
    if raw.expose().len() as u64 > MAX_SETTING_FILE_BYTES {
        return Err(FileSettingError::TooLarge {
            setting,
            path: path.to_owned(),
        });
    }
    let text = std::str::from_utf8(raw.expose()).map_err(|_| FileSettingError::Invalid {
        setting,
        path: path.to_owned(),
        reason: "not UTF-8 text".into(),
    })?;
    let value = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    parse(value).map_err(|e| FileSettingError::Invalid {
        setting,
        path: path.to_owned(),
        reason: e.to_string(),
    })
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
pub fn parse_or_exit<T: clap::Parser + ReadFiles>() -> T {
    let mut parsed = match T::try_parse() {
        Ok(parsed) => parsed,
        Err(e) => exit_with_clap_error(&e),
    };
    if let Err(e) = parsed.read_files() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    parsed
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

/// Panics naming each flag and environment variable of `command` that
/// `docs/operations.md` does not name: each binary's test calls it, so a
/// setting cannot be added without its documentation.
pub fn assert_settings_documented(command: &clap::Command) {
    let page = include_str!("../../docs/operations.md");
    let missing = undocumented_settings(command, page);
    assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
}

/// Each flag (`--name`) and environment variable of `command` and its
/// subcommands that `page` (the operations guide) does not name in
/// backticks.
pub fn undocumented_settings(command: &clap::Command, page: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
        let names = arg
            .get_long()
            .filter(|l| !matches!(*l, "help" | "version"))
            .map(|l| format!("`--{l}`"))
            .into_iter()
            .chain(arg.get_env().map(|e| format!("`{}`", e.to_string_lossy())));
        missing.extend(names.filter(|n| !page.contains(n.as_str())));
    }
    for sub in command.get_subcommands() {
        missing.extend(undocumented_settings(sub, page));
    }
    missing.sort();
    missing.dedup();
    missing
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

/// One AMQP URL (`amqp://user:pass@host:port/vhost`, or `amqps://` for
/// TLS), or several separated by commas: the nodes of one RabbitMQ
/// cluster, tried in turn (`amqp::connect`). With the extra CA
/// certificates an `amqps://` connection trusts besides the system's
/// (`KEYWARD_AMQP_CA_FILE`). Its `Display` hides the passwords.
#[derive(Clone)]
pub struct AmqpUrl {
    /// At least one; all of one scheme.
    urls: Vec<url::Url>,
    ca_pem: Option<std::sync::Arc<str>>,
    /// Which address the next connection tries first; shared by clones.
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl AmqpUrl {
    /// The first address (the only one, for a single broker).
    pub fn as_str(&self) -> &str {
        self.urls[0].as_str()
    }

    /// How many addresses there are.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Never: there is always at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The addresses in the order the next connection tries them: from
    /// the one after where the previous connection started, so that after
    /// losing a node each reconnection leads with another one, and a node
    /// that hangs instead of refusing cannot hold every attempt.
    pub fn in_turn(&self) -> impl Iterator<Item = (usize, &str)> {
        use std::sync::atomic::Ordering;
        let n = self.urls.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n).map(move |k| {
            let i = (start + k) % n;
            (i, self.urls[i].as_str())
        })
    }

    /// Address `i` with its password hidden, for logs.
    pub fn shown(&self, i: usize) -> String {
        Redacted(&self.urls[i]).to_string()
    }

    pub fn is_tls(&self) -> bool {
        self.urls[0].scheme() == "amqps"
    }

    /// Trusts the certificates of `pem` too (a private CA), for `amqps://`.
    pub fn with_ca_pem(mut self, pem: String) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// The extra CA certificates (PEM), if any.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }
}

impl PartialEq for AmqpUrl {
    fn eq(&self, other: &Self) -> bool {
        self.urls == other.urls && self.ca_pem == other.ca_pem
    }
}

impl Eq for AmqpUrl {}

impl FromStr for AmqpUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let several = s.contains(',');
        let urls = s
            .split(',')
            .enumerate()
            .map(|(i, one)| {
                parse_amqp_address(one.trim()).map_err(|e| {
                    if several {
                        format!("address {}: {e}", i + 1)
                    } else {
                        e
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if urls.iter().any(|u| u.scheme() != urls[0].scheme()) {
            return Err("mixes amqp: and amqps: addresses (use one for every node)".into());
        }
        Ok(Self {
            urls,
            ca_pem: None,
            next: Default::default(),
        })
    }
}

fn parse_amqp_address(s: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "amqp" | "amqps" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        "amqp" | "amqps" => Err("the URL names no host".into()),
        other => Err(format!(
            "unsupported scheme `{other}` (use amqp: or amqps:)"
        )),
    }
}

/// A URL shown with its password hidden.
struct Redacted<'a>(&'a url::Url);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_redacted(self.0, f)
    }
}

impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, url) in self.urls.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write_redacted(url, f)?;
        }
        Ok(())
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
    /// RabbitMQ URL; or the nodes of one cluster, comma-separated, tried
    /// in turn (each reconnection leads with the next).
    #[arg(
        long = "amqp-url",
        env = "KEYWARD_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: AmqpUrl,
    /// A file holding the RabbitMQ URL (for a password in it), instead of
    /// `--amqp-url`.
    #[arg(
        long = "amqp-url-file",
        env = "KEYWARD_AMQP_URL_FILE",
        conflicts_with = "amqp_url"
    )]
    pub amqp_url_file: Option<PathBuf>,
    /// PEM file of CA certificates an `amqps://` connection trusts besides
    /// the system's (a private CA).
    #[arg(long = "amqp-ca-file", env = "KEYWARD_AMQP_CA_FILE")]
    pub amqp_ca_file: Option<PathBuf>,
    /// Durable topic exchange revocation events are published to.
    #[arg(long = "exchange", env = "KEYWARD_EXCHANGE", default_value = "keyward.events",
          value_parser = parse_amqp_name)]
    pub exchange: String,
    /// Declare the queues this process declares (an ingestor's own queue,
    /// the reports queue, their dead-letter queues) as quorum queues,
    /// replicated across a RabbitMQ cluster. The worker and every ingestor
    /// must agree: RabbitMQ refuses to redeclare a queue as another type.
    #[arg(long = "quorum-queue", env = "KEYWARD_QUORUM_QUEUE")]
    pub quorum_queue: bool,
}

impl ReadFiles for AmqpSettings {
    fn read_files(&mut self) -> Result<(), FileSettingError> {
        if let Some(path) = &self.amqp_url_file {
            self.amqp_url =
                read_setting_file("KEYWARD_AMQP_URL_FILE", path, |v| v.parse::<AmqpUrl>())?;
        }
        if let Some(path) = &self.amqp_ca_file {
            if !self.amqp_url.is_tls() {
                return Err(FileSettingError::Invalid {
                    setting: "KEYWARD_AMQP_CA_FILE",
                    path: path.clone(),
                    reason: "it is only used with an amqps:// URL".into(),
                });
            }
            let pem = crate::tls::read_pem_text("KEYWARD_AMQP_CA_FILE", path)?;
            self.amqp_url = self.amqp_url.clone().with_ca_pem(pem);
        }
        Ok(())
    }
}

#[cfg(test)]
mod setting_file_tests {
    use super::*;

    fn file(content: &[u8]) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f
    }

    #[test]
    fn a_value_is_read_without_its_line_break() {
        for content in [
            &b"amqp://u:p@h/"[..],
            b"amqp://u:p@h/\n",
            b"amqp://u:p@h/\r\n",
        ] {
            let f = file(content);
            let url: AmqpUrl = read_setting_file("S", f.path(), |v| v.parse()).unwrap();
            assert_eq!(url.as_str(), "amqp://u:p@h/");
        }
    }

    #[test]
    fn failures_name_the_setting_and_file_never_the_value() {
        let missing = std::path::Path::new("/nonexistent/keyward-secret");
        let e = read_setting_file("KEYWARD_X_FILE", missing, |v| v.parse::<AmqpUrl>())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("KEYWARD_X_FILE: cannot read /nonexistent/keyward-secret"),
            "{e}"
        );

        let f = file(b"mysql://user:hunter2@h/db\n");
        let e = read_setting_file("KEYWARD_DATABASE_URL_FILE", f.path(), |v| {
            v.parse::<DatabaseUrl>()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("KEYWARD_DATABASE_URL_FILE: the value in"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");

        let f = file(&vec![b'a'; MAX_SETTING_FILE_BYTES as usize + 1]);
        let e = read_setting_file("S", f.path(), |v| Ok::<_, String>(v.len()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn a_file_setting_replaces_the_default_and_conflicts_with_the_value() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            db: DatabaseSettings,
        }
        let f = file(b"postgres://u:pw@h/db\n");
        let path = f.path().to_str().unwrap();
        let mut cli = Cli::try_parse_from(["x", "--database-url-file", path]).unwrap();
        cli.db.read_files().unwrap();
        assert_eq!(cli.db.database_url.as_str(), "postgres://u:pw@h/db");
        assert!(
            Cli::try_parse_from([
                "x",
                "--database-url-file",
                path,
                "--database-url",
                "sqlite://a.db"
            ])
            .is_err(),
            "one or the other"
        );
    }
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
        assert!("amqps://h/".parse::<AmqpUrl>().unwrap().is_tls());
        assert!("amqps:///".parse::<AmqpUrl>().is_err());
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

    #[test]
    fn several_brokers_are_tried_in_turn() {
        let url: AmqpUrl = "amqp://u:s1@n1:5672/%2f, amqp://u:s2@n2:5673/%2f,amqp://u:s3@n3/%2f"
            .parse()
            .unwrap();
        assert_eq!(url.len(), 3);
        let shown = url.to_string();
        assert!(!shown.contains("s1") && !shown.contains("s2") && !shown.contains("s3"));
        assert_eq!(shown.matches("***").count(), 3, "{shown}");
        assert!(!url.shown(1).contains("s2"));
        let order = |url: &AmqpUrl| url.in_turn().map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(order(&url), [0, 1, 2]);
        // Each connection leads with the next node; clones share the turn.
        assert_eq!(order(&url.clone()), [1, 2, 0]);
        assert_eq!(order(&url), [2, 0, 1]);
        assert_eq!(url.in_turn().next().unwrap().1, "amqp://u:s1@n1:5672/%2f");

        let err = "amqp://n1/,http://n2/".parse::<AmqpUrl>().unwrap_err();
        assert!(err.starts_with("address 2:"), "{err}");
        assert!("amqp://n1/,".parse::<AmqpUrl>().is_err());
        assert!("amqp://n1/,amqps://n2/".parse::<AmqpUrl>().is_err());
        assert_eq!(
            "amqp://n1/".parse::<AmqpUrl>().unwrap(),
            "amqp://n1/".parse::<AmqpUrl>().unwrap()
        );
    }
}
