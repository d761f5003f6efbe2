//! `keyward-api keys create`: an API key made straight in the database,
//! for provisioning without a person (an ingestor's `verifier` key in a
//! compose file or a Kubernetes job) and for break-glass. It writes the
//! same row, audit record (actor `cli`) and digest as `POST …/apikeys`,
//! and puts the secret in a file of mode 0600 — never on stdout or in a
//! log.
//!
//! Idempotent by its file: when `--secret-file` already holds a key of the
//! tenant that is valid, nothing is created and the command succeeds, so a
//! second `docker compose up` reuses the key. A file holding anything else
//! is an error, never overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use keyward_core::digest::{KeyDigest, StoredSecret};
use keyward_core::ids::{KeyId, KeyName, RoleName, TenantId};
use keyward_core::store::{NewApiKey, Store};
use keyward_core::token::{ApiKeyToken, KeyPrefix};

/// `keys create`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct CreateKey {
    /// The key's tenant (`_platform` for a `verifier` key).
    #[arg(long)]
    pub tenant: String,
    /// A role the key holds; repeat for several.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// The key's name (unique among the tenant's active keys).
    #[arg(long, default_value = "provisioned")]
    pub name: String,
    /// Where the secret goes (created with mode 0600; must not exist, or
    /// hold a valid key of the tenant, which is then kept).
    #[arg(long)]
    pub secret_file: PathBuf,
}

/// What the command did.
#[derive(Debug, PartialEq, Eq)]
pub enum Provisioned {
    Created(KeyId),
    Kept(KeyId),
}

pub async fn create_key(
    store: &dyn Store,
    prefix: &KeyPrefix,
    args: &CreateKey,
) -> anyhow::Result<Provisioned> {
    let tenant = TenantId::parse(&args.tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    if let Some(kept) = existing(store, &tenant, &args.secret_file).await? {
        return Ok(Provisioned::Kept(kept));
    }
    let name = KeyName::parse(&args.name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let roles = args
        .roles
        .iter()
        .map(|r| RoleName::parse(r).map_err(|e| anyhow::anyhow!("--role {r}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !store.tenant_exists(&tenant).await? {
        bail!("no tenant {tenant}");
    }
    let key_id = KeyId::new();
    let token = ApiKeyToken::generate(prefix, key_id).context("no OS randomness")?;
    // The file first: a key whose secret could not be kept would be lost.
    write_secret(&args.secret_file, token.expose_secret())?;
    let change = crate::admin_cli::cli_change();
    let new = NewApiKey {
        key_id,
        tenant_id: tenant,
        name,
        roles,
        start: token.start(),
        secret_hash: KeyDigest::of(token.expose_secret()).encode(),
        created_by: "cli".into(),
        created_at: change.at,
        expires_at: None,
    };
    if let Err(e) = store.create_key(&new, &change).await {
        let _ = std::fs::remove_file(&args.secret_file);
        return Err(anyhow::Error::new(e).context("creating the key"));
    }
    Ok(Provisioned::Created(key_id))
}

/// The key `file` holds, if it is a valid key of `tenant`; an error if the
/// file holds anything else.
async fn existing(
    store: &dyn Store,
    tenant: &TenantId,
    file: &Path,
) -> anyhow::Result<Option<KeyId>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => keyward_core::secret::SecretString::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let refuse = |why: &str| {
        anyhow::anyhow!(
            "{} exists but {why}; remove it to create a new key",
            file.display()
        )
    };
    let token = ApiKeyToken::parse(text.expose().trim_end())
        .map_err(|_| refuse("does not hold an API key"))?;
    let Some(creds) = store.key_credentials(token.key_id()).await? else {
        return Err(refuse("holds a key this database does not know"));
    };
    let matches = matches!(
        StoredSecret::classify(&creds.secret_hash),
        StoredSecret::Sha256(stored) if stored.matches(&KeyDigest::of(token.expose_secret()))
    );
    let valid = creds.active && creds.expires_at.is_none_or(|t| t > chrono::Utc::now());
    if !matches || creds.tenant_id != *tenant || !valid {
        return Err(refuse("holds a key that is not a valid key of this tenant"));
    }
    Ok(Some(token.key_id()))
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
