use std::process::ExitCode;

use keyward_core::config::parse_or_exit;
use keyward_core::store;
use keyward_sync_worker::settings::{Cli, Command, Settings};
use keyward_sync_worker::startup::Application;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    keyward_core::telemetry::init(cli.settings.log.log_format);
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::RetryDead => retry_dead(&cli.settings).await,
        Command::Run => run(&cli.settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, the whole cause chain, no backtrace.
            eprintln!("keyward-sync-worker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: &Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    tokio::spawn(cancel_on_signal(app.shutdown_token()));
    app.run_until_stopped().await;
    Ok(())
}

/// SIGTERM or SIGINT asks the worker to finish its batch and leave.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutdown requested; finishing the batch in hand");
    shutdown.cancel();
}

async fn retry_dead(settings: &Settings) -> anyhow::Result<()> {
    let store = store::open(&settings.database.database_url).await?;
    let revived = store.retry_all_dead(chrono::Utc::now()).await?;
    println!("{revived} dead-lettered event(s) put back in the outbox");
    Ok(())
}
