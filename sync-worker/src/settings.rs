//! `keyward-sync-worker` command line and settings (API.md §12).

use std::net::SocketAddr;

use keyward_core::config::{AmqpSettings, DatabaseSettings, LogSettings};

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
    pub log: LogSettings,
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
    }
}
