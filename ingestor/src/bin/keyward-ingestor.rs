use std::process::ExitCode;

use keyward_core::config::parse_or_exit;
use keyward_ingestor::settings::Cli;

fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    keyward_core::telemetry::init(cli.settings.log.log_format);
    // The reference ingestor is issue #6; until then refuse plainly.
    eprintln!(
        "keyward-ingestor: error: the reference ingestor is not built yet (issue #6); \
         settings for `{}` are valid",
        cli.settings.ingestor_id()
    );
    ExitCode::FAILURE
}
