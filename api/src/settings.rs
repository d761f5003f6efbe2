//! `keyward-api` command line and settings (`docs/operations.md`).

use std::net::SocketAddr;

use keyward_core::config::{
    DatabaseSettings, FileSettingError, HttpLimits, LogSettings, ReadFiles, read_setting_file,
};
use keyward_core::ids::Password;
use keyward_core::password::Argon2Settings;
use keyward_core::tls::ServerTlsSettings;
use keyward_core::token::KeyPrefix;

#[derive(Debug, clap::Parser)]
#[command(name = "keyward-api", version, about = "Keyward admin API")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Migrate, bootstrap the first admin, serve (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Print the OpenAPI 3 document and exit.
    Openapi,
    /// API keys, straight in the database (provisioning, break-glass).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Tenants, straight in the database (bootstrap, break-glass).
    #[command(subcommand)]
    Tenants(crate::admin_cli::TenantsCommand),
    /// Users, straight in the database (bootstrap, break-glass).
    #[command(subcommand)]
    Users(crate::admin_cli::UsersCommand),
    /// The outbox: what waits for delivery, and dead events back in it.
    #[command(subcommand)]
    Outbox(crate::admin_cli::OutboxCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and write its secret to a file (mode 0600); when the
    /// file already holds a valid key of the tenant, keep it (idempotent).
    Create(crate::provision::CreateKey),
    /// List a tenant's keys, newest first (masked: never a secret).
    List(crate::admin_cli::ListKeys),
    /// Revoke a key: its tombstone, `key.revoked` event and audit record in
    /// one transaction, as `DELETE …/apikeys/{keyId}`.
    Revoke(crate::admin_cli::RevokeKey),
}

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// Address to serve HTTP on; port 0 picks a free one.
    #[arg(
        long = "listen",
        env = "KEYWARD_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Password of the bootstrap `admin` on an empty database (12 to 256
    /// characters); a random one is printed once to stderr when unset.
    #[arg(long = "admin-password", env = "KEYWARD_ADMIN_PASSWORD", hide_env_values = true,
          value_parser = parse_password)]
    pub admin_password: Option<Password>,
    /// A file holding the bootstrap `admin`'s password, instead of
    /// `--admin-password`.
    #[arg(
        long = "admin-password-file",
        env = "KEYWARD_ADMIN_PASSWORD_FILE",
        conflicts_with = "admin_password"
    )]
    pub admin_password_file: Option<std::path::PathBuf>,
    /// First part of every API key, `[a-z]{1,8}`.
    #[arg(long = "key-prefix", env = "KEYWARD_KEY_PREFIX", default_value = "kw")]
    pub key_prefix: KeyPrefix,
    #[command(flatten)]
    pub argon2: Argon2Settings,
    /// An ingestor seen within this many seconds is live (`GET
    /// /api/v1/ingestors`); use the sync worker's value.
    #[arg(long = "ingestor-liveness-seconds", env = "KEYWARD_INGESTOR_LIVENESS_SECONDS",
          default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ingestor_liveness_seconds: u64,
    /// How long a proven key (verify, Bearer) or password (Basic) is
    /// answered from memory, and the `cacheTtlSeconds` ingestors are told;
    /// 0 caches nothing. Changes evict at once; this bounds the rest.
    #[arg(long = "verify-cache-ttl-seconds", env = "KEYWARD_VERIFY_CACHE_TTL_SECONDS",
          default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub verify_cache_ttl_seconds: u64,
    /// How many keys the verify cache holds (and, separately, how many
    /// proven passwords).
    #[arg(long = "verify-cache-capacity", env = "KEYWARD_VERIFY_CACHE_CAPACITY",
          default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub verify_cache_capacity: u64,
    /// Failed Basic proofs allowed per username per minute; past it the
    /// username gets `429 rate_limited` until its minute ends (a password
    /// proven within the minute before keeps working).
    #[arg(long = "failed-logins-per-username", env = "KEYWARD_FAILED_LOGINS_PER_USERNAME",
          default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub failed_logins_per_username: u32,
    /// Failed Basic proofs allowed per client address per minute, whatever
    /// the usernames.
    #[arg(long = "failed-logins-per-client", env = "KEYWARD_FAILED_LOGINS_PER_CLIENT",
          default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub failed_logins_per_client: u32,
    #[command(flatten)]
    pub tls: ServerTlsSettings,
    #[command(flatten)]
    pub http: HttpLimits,
    #[command(flatten)]
    pub log: LogSettings,
}

impl Settings {
    pub fn failed_proof_limits(&self) -> crate::failed_proofs::Limits {
        crate::failed_proofs::Limits {
            per_username: self.failed_logins_per_username,
            per_client: self.failed_logins_per_client,
            window: std::time::Duration::from_secs(60),
        }
    }

    /// Every setting at its default, on `database_url` and a free port:
    /// what tests and benchmarks start in-process.
    pub fn local(database_url: keyward_core::config::DatabaseUrl) -> Self {
        Self {
            database: DatabaseSettings::new(database_url),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_password: None,
            admin_password_file: None,
            key_prefix: KeyPrefix::default(),
            argon2: Argon2Settings::default(),
            ingestor_liveness_seconds: 30,
            verify_cache_ttl_seconds: 60,
            verify_cache_capacity: 100_000,
            failed_logins_per_username: 10,
            failed_logins_per_client: 50,
            tls: ServerTlsSettings::default(),
            http: HttpLimits::default(),
            log: LogSettings::default(),
        }
    }
}

impl ReadFiles for Cli {
    fn read_files(&mut self) -> Result<(), FileSettingError> {
        let s = &mut self.settings;
        s.database.read_files()?;
        if let Some(path) = &s.admin_password_file {
            s.admin_password = Some(read_setting_file(
                "KEYWARD_ADMIN_PASSWORD_FILE",
                path,
                parse_password,
            )?);
        }
        Ok(())
    }
}

fn parse_password(value: &str) -> Result<Password, String> {
    // The message must not echo the value: it is a secret.
    Password::parse(value).map_err(|e| e.reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("keyward-api").chain(args.iter().copied()))
    }

    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_follow_the_contract() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.command, None);
        assert_eq!(cli.settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            cli.settings.database.database_url.as_str(),
            "sqlite://keyward.db?mode=rwc"
        );
        assert_eq!(cli.settings.key_prefix.as_str(), "kw");
        assert_eq!(cli.settings.verify_cache_ttl_seconds, 60);
        assert_eq!(cli.settings.verify_cache_capacity, 100_000);
        assert_eq!(cli.settings.http, HttpLimits::default());
        assert_eq!(
            (
                cli.settings.failed_logins_per_username,
                cli.settings.failed_logins_per_client
            ),
            (10, 50)
        );
        let local = Settings::local(cli.settings.database.database_url.clone());
        assert_eq!(
            (local.verify_cache_ttl_seconds, local.argon2),
            (60, cli.settings.argon2)
        );
    }

    #[test]
    fn bad_settings_are_refused_without_echoing_secrets() {
        assert!(parse(&["--listen", "nope"]).is_err());
        assert!(parse(&["--database-url", "mysql://x"]).is_err());
        assert!(parse(&["--key-prefix", "KW"]).is_err());
        let e = parse(&["--admin-password", "tiny-secret"]).unwrap_err();
        let e = keyward_core::config::one_line(&e);
        assert!(!e.contains("tiny-secret"), "{e}");
        assert_eq!(parse(&["migrate"]).unwrap().command, Some(Command::Migrate));
    }

    #[test]
    fn every_setting_is_in_operations_md() {
        let command = <Cli as clap::CommandFactory>::command();
        keyward_core::config::assert_settings_documented(&command);
    }
}
