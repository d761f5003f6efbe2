use std::process::ExitCode;

use anyhow::Context;
use keyward_core::config::parse_or_exit;
use keyward_sync_worker::settings::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    keyward_core::telemetry::init(cli.settings.log.log_format);
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::RetryDead => retry_dead(&cli).await,
        // The delivery loop is issue #5; until then refuse plainly rather
        // than pretend to deliver.
        Command::Run => Err(anyhow::anyhow!(
            "outbox delivery is not built yet (issue #5)"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward-sync-worker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn retry_dead(cli: &Cli) -> anyhow::Result<()> {
    let url = &cli.settings.database.database_url;
    let store = keyward_core::store::connect(url)
        .await
        .with_context(|| format!("cannot open the database {url}"))?;
    store.migrate().await.context("migrating the database")?;
    let revived = store.retry_all_dead(chrono::Utc::now()).await?;
    println!("{revived} dead-lettered event(s) put back in the outbox");
    Ok(())
}
