//! The first `admin` of an empty database (`docs/api.md`, "Authentication").

use keyward_core::ids::{Password, RoleName, TenantId, Username};
use keyward_core::password::PasswordHasher;
use keyward_core::store::{NewUser, Store};

pub const ADMIN_USERNAME: &str = "admin";

/// Creates `admin` in `_platform` with `superadmin` if the service has no
/// user yet. Without a configured password a random one is generated and
/// printed once to stderr: it is the only way to learn it.
pub async fn bootstrap_admin(
    store: &dyn Store,
    hasher: &PasswordHasher,
    configured: Option<&Password>,
) -> anyhow::Result<bool> {
    let generated;
    let password = match configured {
        Some(p) => p.expose(),
        None => {
            generated = random_password()?;
            generated.as_str()
        }
    };
    let user = NewUser {
        tenant_id: TenantId::platform(),
        username: Username::parse(ADMIN_USERNAME)?,
        password_hash: hasher.hash(password).await?,
        roles: vec![RoleName::parse(RoleName::SUPERADMIN)?],
        created_at: chrono::Utc::now(),
    };
    let created = store.bootstrap_user(&user).await?;
    if created {
        tracing::info!(
            username = ADMIN_USERNAME,
            "bootstrapped the first superadmin"
        );
        if configured.is_none() {
            // Deliberately not a log line: logs are shipped and kept.
            eprintln!(
                "keyward: created user `{ADMIN_USERNAME}` (superadmin) with password: {password}\n\
                 keyward: it is shown this once; set KEYWARD_ADMIN_PASSWORD to choose it instead"
            );
        }
    }
    Ok(created)
}

/// 24 base62 characters from the OS CSPRNG (~142 bits).
fn random_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(24);
    let mut buf = [0u8; 64];
    while out.len() < 24 {
        getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("OS random source: {e}"))?;
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() < 24 {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    Ok(out)
}
