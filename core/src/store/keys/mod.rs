//! API keys: creation with their roles, reads, the verification read, the
//! revoke (tombstone and `key.revoked` event in one transaction), update
//! and rotation (each with its event), and usage. Every change writes its
//! audit record in its transaction. SQL: `sql.rs`.

use async_trait::async_trait;
use sqlx::FromRow;

use super::rows::{GrantRow, fold_grants, key_id, parse, roles, tenant};
use super::timestamp::{Ts, truncate_micros};
use super::{
    ApiKey, Backend, Change, EventProgress, KeyCredentials, KeyQuery, KeyStatus, KeyUpdate,
    NewApiKey, Revocation, Revoked, Rotated, RotatedKey, StoreResult, Timestamp,
};
use crate::ids::{EventId, KeyId, KeyName, TenantId, Username};

#[async_trait]
pub trait KeyStore: Backend {
    /// Inserts the key and its roles in one transaction (`UnknownRoles`,
    /// `DuplicateKeyName`, `TenantNotFound`).
    async fn create_key(&self, key: &NewApiKey, change: &Change) -> StoreResult<ApiKey>;
    async fn get_key(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
        now: Timestamp,
    ) -> StoreResult<ApiKey>;
    async fn list_keys(
        &self,
        tenant: &TenantId,
        query: &KeyQuery,
        now: Timestamp,
    ) -> StoreResult<Vec<ApiKey>>;
    /// By primary key alone, for verification; includes the key's grants.
    async fn key_credentials(&self, key_id: KeyId) -> StoreResult<Option<KeyCredentials>>;
    /// The same for many keys in one statement (concurrent cache misses of
    /// different keys share it); keys that do not exist are left out.
    async fn key_credentials_many(&self, ids: &[KeyId]) -> StoreResult<Vec<KeyCredentials>>;
    /// Replaces a key's stored secret hash if it is still `old_hash`
    /// (an argon2id PHC string rewritten as its SHA-256 digest after a
    /// successful proof); `true` when it did.
    async fn upgrade_key_hash(
        &self,
        key_id: KeyId,
        old_hash: &str,
        new_hash: &str,
    ) -> StoreResult<bool>;
    /// Tombstone and `key.revoked` event in one transaction. Idempotent: a
    /// key already revoked is returned as is, and no second event written.
    /// The event's id is `change.event_id`; the revoker `change.actor`.
    async fn revoke_key(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
        change: &Change,
    ) -> StoreResult<Revoked>;
    /// Changes what `update` names and writes a `key.updated` event, in one
    /// transaction (`KeyNotFound`, `InvalidState` for a revoked key,
    /// `DuplicateKeyName`, `UnknownRoles`).
    async fn update_key(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
        update: &KeyUpdate,
        change: &Change,
    ) -> StoreResult<ApiKey>;
    /// Creates `new` as the successor of `key_id` (its name, roles, groups
    /// and expiry) and, in the same transaction, revokes the old key
    /// (`grace` zero: a `key.revoked` event) or makes it expire after
    /// `grace` (a `key.updated` event). `InvalidState` for a key revoked,
    /// expired or already replaced.
    async fn rotate_key(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
        new: &RotatedKey,
        grace: std::time::Duration,
        change: &Change,
    ) -> StoreResult<Rotated>;
    /// Records last use for many keys, a short transaction per 1,000 (the
    /// verify path batches them in memory first). Never moves
    /// `last_used_at` backwards; on an error some chunks may be written.
    async fn record_key_usage(&self, used: &[(KeyId, Timestamp)]) -> StoreResult<u64>;
    /// Marks at most `limit` active keys whose expiry passed by `now` as
    /// swept (`expiry_passed`, migration 0008); how many it marked. An index
    /// hint for the listing of expired keys, not a change of state: no
    /// event, no audit record, nothing cached changes. Keys another sweeper
    /// holds are skipped.
    async fn sweep_expired_keys(&self, now: Timestamp, limit: u32) -> StoreResult<u64>;
    /// A feed of cached-verification invalidations from other replicas
    /// (PostgreSQL `LISTEN keyward_keys`); `None` where there are none to
    /// hear (SQLite: one process owns the file).
    async fn key_changes(&self) -> StoreResult<Option<Box<dyn KeyChanges>>>;
}

/// What another replica says must be dropped from verification caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    Key(KeyId),
    Tenant(TenantId),
    /// A user's roles changed or the user was deleted.
    User(Username),
    /// The feed lost its connection: anything may have been missed.
    Lost,
}

impl KeyChange {
    /// The notification payload that tells other replicas of this change:
    /// `key:{id}`, `tenant:{id}` or `user:{name}` (`Lost` is never sent).
    pub fn payload(&self) -> Option<String> {
        match self {
            Self::Key(id) => Some(format!("key:{id}")),
            Self::Tenant(id) => Some(format!("tenant:{id}")),
            Self::User(name) => Some(format!("user:{name}")),
            Self::Lost => None,
        }
    }

    /// Reads a payload back; `None` for one this version does not know.
    pub fn parse(payload: &str) -> Option<Self> {
        match payload.split_once(':')? {
            ("key", id) => KeyId::parse(id).ok().map(Self::Key),
            ("tenant", t) => TenantId::parse(t).ok().map(Self::Tenant),
            ("user", u) => Username::parse(u).ok().map(Self::User),
            _ => None,
        }
    }
}

#[async_trait]
pub trait KeyChanges: Send {
    /// The next change; `Err` only when the feed cannot go on.
    async fn next(&mut self) -> StoreResult<KeyChange>;
}

/// A key with its revocation event, if any, as lists and reads select it.
#[derive(FromRow)]
pub(crate) struct KeyRow {
    pub key_id: String,
    pub tenant_id: String,
    pub name: String,
    pub start: String,
    pub status: String,
    pub created_by: String,
    pub created_at: Ts,
    pub expires_at: Option<Ts>,
    pub last_used_at: Option<Ts>,
    pub revoked_at: Option<Ts>,
    pub revoked_by: Option<String>,
    pub replaces: Option<String>,
    pub replaced_by: Option<String>,
    pub event_id: Option<String>,
    pub attempts: Option<i32>,
    pub published_at: Option<Ts>,
    pub dead_at: Option<Ts>,
    pub last_error: Option<String>,
    pub live_ingestors: Option<i64>,
    pub applied_by: Option<i64>,
    /// The key's role names, comma separated; NULL without roles.
    pub roles: Option<String>,
}

impl KeyRow {
    pub(crate) fn into_key(self, now: Timestamp) -> StoreResult<ApiKey> {
        let active = self.status == "active";
        let role_names = self.roles.as_deref().map(|r| r.split(','));
        let mut roles = roles(role_names.into_iter().flatten())?;
        // In Rust's order, not the database's collation: a key just created
        // is answered without reading its roles back (`NewApiKey::as_created`).
        roles.sort();
        let revocation = match (&self.event_id, active) {
            (Some(event_id), false) => Some(revocation(&self, event_id)?),
            _ => None,
        };
        Ok(ApiKey {
            key_id: key_id(&self.key_id)?,
            tenant_id: tenant(&self.tenant_id)?,
            name: parse("key name", &self.name, KeyName::parse)?,
            roles,
            start: self.start,
            created_by: self.created_by,
            created_at: self.created_at.0,
            expires_at: self.expires_at.map(|t| t.0),
            last_used_at: self.last_used_at.map(|t| t.0),
            status: KeyStatus::at(active, self.expires_at.map(|t| t.0), now),
            revoked_at: self.revoked_at.map(|t| t.0),
            revoked_by: self.revoked_by,
            revocation,
            replaces: self.replaces.as_deref().map(key_id).transpose()?,
            replaced_by: self.replaced_by.as_deref().map(key_id).transpose()?,
        })
    }
}

/// The revocation of a revoked key's row. After a purge the outbox row is
/// gone (its columns read NULL): it was published long ago.
fn revocation(r: &KeyRow, event_id: &str) -> StoreResult<Revocation> {
    let progress = EventProgress {
        in_outbox: r.attempts.is_some(),
        published: r.published_at.is_some(),
        dead: r.dead_at.is_some(),
        applied_by: r.applied_by.unwrap_or(0),
        live_ingestors: r.live_ingestors.unwrap_or(0),
    };
    Ok(Revocation {
        state: progress.state(),
        event_id: parse("event id", event_id, EventId::parse)?,
        attempts: r.attempts.unwrap_or(0),
        published_at: r.published_at.map(|t| t.0),
        applied_by: progress.applied_by,
        ingestors: progress.live_ingestors,
        last_error: r.last_error.clone(),
    })
}

/// A key as verification reads it, one row per grant privilege (the grant
/// columns are NULL for a key without roles).
#[derive(FromRow)]
pub(crate) struct KeyGrantRow {
    pub key_id: String,
    pub tenant_id: String,
    pub secret_hash: String,
    pub status: String,
    pub expires_at: Option<Ts>,
    pub role_name: Option<String>,
    pub group_name: Option<String>,
    pub privilege: Option<String>,
    pub stream: Option<String>,
    /// The privilege's place in its role.
    pub position: Option<i32>,
}

/// The keys of `rows` (in any order) with their folded grants, each key's
/// roles and privileges in one order: by role, group, then position.
pub(crate) fn keys_credentials(mut rows: Vec<KeyGrantRow>) -> StoreResult<Vec<KeyCredentials>> {
    rows.sort_unstable_by(|a, b| {
        (&a.key_id, &a.role_name, &a.group_name, a.position).cmp(&(
            &b.key_id,
            &b.role_name,
            &b.group_name,
            b.position,
        ))
    });
    let mut out: Vec<(KeyCredentials, Vec<GrantRow>)> = Vec::new();
    let mut current: Option<String> = None;
    for r in rows {
        if current.as_deref() != Some(r.key_id.as_str()) {
            let key = KeyCredentials {
                key_id: key_id(&r.key_id)?,
                tenant_id: tenant(&r.tenant_id)?,
                secret_hash: r.secret_hash,
                active: r.status == "active",
                expires_at: r.expires_at.map(|t| t.0),
                grants: Vec::new(),
            };
            out.push((key, Vec::new()));
            current = Some(r.key_id);
        }
        if let (Some(role_name), Some((_, grants))) = (r.role_name, out.last_mut()) {
            grants.push(GrantRow {
                role_name,
                group_name: r.group_name,
                privilege: r.privilege,
                stream: r.stream,
            });
        }
    }
    out.into_iter()
        .map(|(key, grants)| {
            Ok(KeyCredentials {
                grants: fold_grants(grants)?,
                ..key
            })
        })
        .collect()
}

impl NewApiKey {
    /// The key as a read returns it right after its creation at `now`:
    /// times at the stored precision, roles sorted and once each.
    pub(crate) fn as_created(&self, now: Timestamp) -> ApiKey {
        let expires_at = self.expires_at.map(truncate_micros);
        let mut roles = self.roles.clone();
        roles.sort();
        roles.dedup();
        ApiKey {
            key_id: self.key_id,
            tenant_id: self.tenant_id.clone(),
            name: self.name.clone(),
            roles,
            start: self.start.clone(),
            created_by: self.created_by.clone(),
            created_at: truncate_micros(self.created_at),
            expires_at,
            last_used_at: None,
            status: KeyStatus::at(true, expires_at, now),
            revoked_at: None,
            revoked_by: None,
            revocation: None,
            replaces: None,
            replaced_by: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_payloads_read_back() {
        let changes = [
            KeyChange::Key(KeyId::new()),
            KeyChange::Tenant(TenantId::parse("acme").unwrap()),
            KeyChange::User(Username::parse("alice").unwrap()),
        ];
        for change in changes {
            let payload = change.payload().unwrap();
            assert_eq!(KeyChange::parse(&payload), Some(change));
        }
        assert_eq!(KeyChange::Lost.payload(), None);
        assert_eq!(KeyChange::parse("group:x"), None);
        assert_eq!(KeyChange::parse("key:not-an-id"), None);
    }
}
