//! The reference ingestor: `POST /ingest/{stream}` behind Keyward API keys,
//! revocations applied as they arrive (`startup.rs` wires it).

use std::process::ExitCode;

use keyward_core::config::parse_or_exit;
use keyward_ingestor::settings::Cli;
use keyward_ingestor::startup::Application;

#[actix_web::main]
async fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    keyward_core::telemetry::init(cli.settings.log.log_format);
    let result = match Application::build(cli.settings).await {
        Ok(app) => app.run_until_stopped().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward-ingestor: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
