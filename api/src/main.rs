use std::process::ExitCode;

use anyhow::Context;
use keyward_api::admin_cli;
use keyward_api::settings::{Cli, Command, KeysCommand, Settings};
use keyward_api::startup::Application;
use keyward_core::config::parse_or_exit;
use keyward_core::password::PasswordHasher;

/// Verify answers allocate a little on every request from several worker
/// threads; glibc's allocator spent ~12 % of the hot path in malloc/free
/// and its arena locks (perf, docs/BENCHMARKS.md). mimalloc's thread-local
/// heaps take most of that away.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    keyward_core::telemetry::init(cli.settings.log.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            // Pretty: the committed docs/openapi.json diffs readably.
            println!("{:#}", keyward_api::routes::openapi::spec());
            Ok(())
        }
        Command::Migrate => keyward_core::store::open(&cli.settings.database.database_url)
            .await
            .map(|_| tracing::info!("migrations applied"))
            .map_err(Into::into),
        Command::Keys(KeysCommand::Create(args)) => provision(&cli.settings, &args).await,
        command @ (Command::Tenants(_)
        | Command::Users(_)
        | Command::Outbox(_)
        | Command::Keys(KeysCommand::List(_) | KeysCommand::Revoke(_))) => {
            administer(&cli.settings, &command).await
        }
        Command::Serve => match Application::build(cli.settings).await {
            Ok(app) => app.run_until_stopped().await.map_err(Into::into),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, the whole cause chain, no backtrace.
            eprintln!("keyward-api: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An administration command on the configured database: its output on
/// stdout.
async fn administer(settings: &Settings, command: &Command) -> anyhow::Result<()> {
    let store = keyward_core::store::open(&settings.database.database_url).await?;
    let store = store.as_ref();
    let output = match command {
        Command::Tenants(c) => admin_cli::tenants(store, c).await?,
        Command::Users(c) => {
            let hasher = PasswordHasher::new(settings.argon2).context("argon2 settings")?;
            admin_cli::users(store, &hasher, c).await?
        }
        Command::Outbox(c) => admin_cli::outbox(store, c).await?,
        Command::Keys(KeysCommand::List(args)) => admin_cli::list_keys(store, args).await?,
        Command::Keys(KeysCommand::Revoke(args)) => admin_cli::revoke_key(store, args).await?,
        other => anyhow::bail!("{other:?} is not an administration command"),
    };
    print!("{output}");
    Ok(())
}

/// `keys create`: the key id on stdout (never the secret).
async fn provision(
    settings: &Settings,
    args: &keyward_api::provision::CreateKey,
) -> anyhow::Result<()> {
    use keyward_api::provision::{Provisioned, create_key};
    let store = keyward_core::store::open(&settings.database.database_url).await?;
    match create_key(store.as_ref(), &settings.key_prefix, args).await? {
        Provisioned::Created(id) => {
            println!("created {id}; secret in {}", args.secret_file.display())
        }
        Provisioned::Kept(id) => println!("kept {id}: {} holds it", args.secret_file.display()),
    }
    Ok(())
}
