//! `keyward-api tenants|users|keys|outbox …`: bootstrap and break-glass
//! administration straight in the database, with the server's settings and
//! no server running. Every change goes through the same store operations
//! as the HTTP API, so it writes the same rows, audit records (actor
//! `cli`) and outbox events, in one transaction each; on PostgreSQL the
//! API replicas hear it as they hear each other. (On SQLite a running API
//! is not told: a key revoked here is refused by that API once its cached
//! answer ends — `KEYWARD_VERIFY_CACHE_TTL_SECONDS` at most — and by the
//! ingestors as soon as the worker delivers the event.)
//!
//! Output is a table, or JSON with `--json` (the API's field names). A
//! secret or password is never printed nor taken as an argument (a
//! command line is visible to every user of the machine): new secrets go
//! to a file of mode 0600, passwords come from a file or standard input.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use keyward_core::ids::{KeyId, Password, RoleName, TenantId, Username};
use keyward_core::password::PasswordHasher;
use keyward_core::store::{Change, KeyQuery, NewUser, StatusFilter, Store};
use serde::Serialize;
use serde_json::json;

/// `--json`: print JSON instead of a table.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Output {
    /// Print JSON (the API's field names) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant.
    Create {
        /// The tenant's id, `[a-z0-9][a-z0-9-]{0,62}`.
        #[arg(long)]
        id: String,
        /// A display name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// List every tenant.
    List {
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum UsersCommand {
    /// Create a user; the password is read from `--password-file`.
    Create {
        /// The user's tenant.
        #[arg(long)]
        tenant: String,
        /// The username (unique across the service).
        #[arg(long)]
        username: String,
        /// A role the user holds; repeat for several.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// A file holding the password (one trailing line break dropped),
        /// or `-` for standard input.
        #[arg(long)]
        password_file: PathBuf,
        #[command(flatten)]
        output: Output,
    },
    /// Replace a user's password (break-glass: a forgotten `admin`
    /// password); read from `--password-file`.
    SetPassword {
        /// The username.
        #[arg(long)]
        username: String,
        /// A file holding the new password (one trailing line break
        /// dropped), or `-` for standard input.
        #[arg(long)]
        password_file: PathBuf,
        #[command(flatten)]
        output: Output,
    },
}

/// `keys list`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ListKeys {
    /// The keys' tenant.
    #[arg(long)]
    pub tenant: String,
    /// `active`, `revoked`, `expired` or `all`.
    #[arg(long, default_value = "all")]
    pub status: String,
    /// At most this many, newest first (1 to 200).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[command(flatten)]
    pub output: Output,
}

/// `keys revoke`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct RevokeKey {
    /// The key's tenant.
    #[arg(long)]
    pub tenant: String,
    /// The key's id.
    #[arg(long = "key-id")]
    pub key_id: String,
    #[command(flatten)]
    pub output: Output,
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum OutboxCommand {
    /// Events waiting for delivery and dead ones, in all and by type.
    Status {
        #[command(flatten)]
        output: Output,
    },
    /// Put every dead-lettered event back in the outbox (a worker then
    /// delivers them).
    RetryDead {
        #[command(flatten)]
        output: Output,
    },
}

/// A change made from the command line: audited as `cli`, with a request
/// id of its own, with a superadmin's rights (whoever can run this can
/// read the database anyway).
pub fn cli_change() -> Change {
    Change::new(
        "cli",
        format!("cli-{}", ulid::Ulid::generate()),
        chrono::Utc::now(),
    )
    .by_superadmin(true)
}

fn tenant(raw: &str) -> anyhow::Result<TenantId> {
    TenantId::parse(raw).map_err(|e| anyhow::anyhow!("--tenant: {e}"))
}

fn roles(raw: &[String]) -> anyhow::Result<Vec<RoleName>> {
    raw.iter()
        .map(|r| RoleName::parse(r).map_err(|e| anyhow::anyhow!("--role {r}: {e}")))
        .collect()
}

pub async fn tenants(store: &dyn Store, command: &TenantsCommand) -> anyhow::Result<String> {
    match command {
        TenantsCommand::Create { id, name, output } => {
            let id = TenantId::parse(id).map_err(|e| anyhow::anyhow!("--id: {e}"))?;
            let created = store
                .create_tenant(&id, name.as_deref(), &cli_change())
                .await
                .context("creating the tenant")?;
            Ok(shown(output, &created, || {
                format!("created tenant {}", created.id)
            }))
        }
        TenantsCommand::List { output } => {
            let list = store.list_tenants().await?;
            Ok(shown(output, &json!({ "items": list }), || {
                table(
                    &["ID", "NAME", "CREATED"],
                    list.iter().map(|t| {
                        vec![
                            t.id.to_string(),
                            t.name.clone().unwrap_or_default(),
                            t.created_at.to_rfc3339(),
                        ]
                    }),
                )
            }))
        }
    }
}

pub async fn users(
    store: &dyn Store,
    hasher: &PasswordHasher,
    command: &UsersCommand,
) -> anyhow::Result<String> {
    match command {
        UsersCommand::Create {
            tenant,
            username,
            roles,
            password_file,
            output,
        } => {
            let new = NewUser {
                tenant_id: self::tenant(tenant)?,
                username: Username::parse(username)
                    .map_err(|e| anyhow::anyhow!("--username: {e}"))?,
                roles: self::roles(roles)?,
                password_hash: String::new(),
                created_at: chrono::Utc::now(),
            };
            create_user(store, hasher, new, password_file, output).await
        }
        UsersCommand::SetPassword {
            username,
            password_file,
            output,
        } => set_password(store, hasher, username, password_file, output).await,
    }
}

/// `users create`: `user` with the password from `password_file`.
async fn create_user(
    store: &dyn Store,
    hasher: &PasswordHasher,
    mut user: NewUser,
    password_file: &PathBuf,
    output: &Output,
) -> anyhow::Result<String> {
    let password = read_password(password_file)?;
    user.password_hash = hasher.hash(password.expose()).await?;
    let created = store
        .create_user(&user, &cli_change())
        .await
        .context("creating the user")?;
    Ok(shown(output, &created, || {
        format!("created user {}", created.username)
    }))
}

/// `users set-password`: the user's tenant is found by its username
/// (usernames are unique across the service).
async fn set_password(
    store: &dyn Store,
    hasher: &PasswordHasher,
    username: &str,
    password_file: &PathBuf,
    output: &Output,
) -> anyhow::Result<String> {
    let username = Username::parse(username).map_err(|e| anyhow::anyhow!("--username: {e}"))?;
    let password = read_password(password_file)?;
    let Some(user) = store.user_credentials(&username).await? else {
        bail!("no user {username}");
    };
    let hash = hasher.hash(password.expose()).await?;
    store
        .set_user_password(&user.tenant_id, &username, &hash, &cli_change())
        .await
        .context("setting the password")?;
    Ok(shown(
        output,
        &json!({"username": username, "tenantId": user.tenant_id}),
        || format!("password of {username} replaced"),
    ))
}

/// The password in `path` (`-`: standard input), one trailing line break
/// dropped; its rules are the API's (12 to 256 characters).
fn read_password(path: &PathBuf) -> anyhow::Result<Password> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(16 * 1024)
            .read_to_string(&mut text)
            .context("reading the password from standard input")?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    let text = keyward_core::secret::SecretString::new(text);
    let line = text.expose().strip_suffix('\n').unwrap_or(text.expose());
    let line = line.strip_suffix('\r').unwrap_or(line);
    // The reason only, never the value.
    Password::parse(line).map_err(|e| anyhow::anyhow!("--password-file: {}", e.reason))
}

pub async fn list_keys(store: &dyn Store, args: &ListKeys) -> anyhow::Result<String> {
    let tenant = tenant(&args.tenant)?;
    let Some(status) = StatusFilter::parse(&args.status) else {
        bail!("--status: one of active, revoked, expired, all");
    };
    if !(1..=200).contains(&args.limit) {
        bail!("--limit: 1 to 200");
    }
    if !store.tenant_exists(&tenant).await? {
        bail!("no tenant {tenant}");
    }
    let query = KeyQuery {
        status,
        limit: args.limit,
        before: None,
    };
    let keys = store.list_keys(&tenant, &query, chrono::Utc::now()).await?;
    Ok(shown(&args.output, &json!({ "items": keys }), || {
        table(
            &["KEY ID", "NAME", "STATUS", "ROLES", "START", "CREATED"],
            keys.iter().map(|k| {
                let status = serde_json::to_value(k.status).unwrap_or_default();
                vec![
                    k.key_id.to_string(),
                    k.name.to_string(),
                    status.as_str().unwrap_or("?").to_owned(),
                    k.roles
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    k.start.clone(),
                    k.created_at.to_rfc3339(),
                ]
            }),
        )
    }))
}

pub async fn revoke_key(store: &dyn Store, args: &RevokeKey) -> anyhow::Result<String> {
    let tenant = tenant(&args.tenant)?;
    let key_id = KeyId::parse(&args.key_id).map_err(|e| anyhow::anyhow!("--key-id: {e}"))?;
    let revoked = store
        .revoke_key(&tenant, key_id, &cli_change())
        .await
        .context("revoking the key")?;
    let key = &revoked.key;
    Ok(shown(&args.output, key, || {
        let event = key
            .revocation
            .as_ref()
            .map(|r| r.event_id.to_string())
            .unwrap_or_default();
        if revoked.newly_revoked {
            format!("revoked {key_id}; event {event} waits for a sync worker")
        } else {
            format!("{key_id} was already revoked (event {event})")
        }
    }))
}

pub async fn outbox(store: &dyn Store, command: &OutboxCommand) -> anyhow::Result<String> {
    match command {
        OutboxCommand::Status { output } => {
            let stats = store.outbox_stats().await?;
            let by_type = store.outbox_backlog_by_type().await?;
            let age = stats.oldest_pending_at.map(|t| {
                (chrono::Utc::now() - t)
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64()
            });
            let body = json!({
                "pending": stats.pending,
                "oldestPendingAt": stats.oldest_pending_at,
                "oldestPendingAgeSeconds": age,
                "dead": stats.dead,
                "byType": by_type,
            });
            Ok(shown(output, &body, || {
                let mut rows: Vec<Vec<String>> = by_type
                    .iter()
                    .map(|t| vec![t.kind.clone(), t.pending.to_string(), t.dead.to_string()])
                    .collect();
                rows.push(vec![
                    "all".into(),
                    stats.pending.to_string(),
                    stats.dead.to_string(),
                ]);
                let oldest = age.map_or("none pending".into(), |s| format!("{s:.1} s"));
                format!(
                    "{}oldest pending event: {oldest}\n",
                    table(&["TYPE", "PENDING", "DEAD"], rows.into_iter())
                )
            }))
        }
        OutboxCommand::RetryDead { output } => {
            let n = store.retry_all_dead(chrono::Utc::now()).await?;
            Ok(shown(output, &json!({ "retried": n }), || {
                format!("{n} dead event(s) back in the outbox")
            }))
        }
    }
}

/// `value` as JSON with `--json`, else the human form.
fn shown<T: Serialize>(output: &Output, value: &T, human: impl FnOnce() -> String) -> String {
    if output.json {
        let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
        text.push('\n');
        text
    } else {
        let mut text = human();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    }
}

/// Columns padded to their widest cell.
fn table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_pad_to_the_widest_cell() {
        let t = super::table(
            &["ID", "NAME"],
            [
                vec!["acme".to_owned(), "Acme Inc.".to_owned()],
                vec!["b".to_owned(), String::new()],
            ]
            .into_iter(),
        );
        assert_eq!(t, "ID    NAME\nacme  Acme Inc.\nb\n");
    }
}
