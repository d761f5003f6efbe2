//! Store errors: constraint violations become typed errors where the query
//! is made; everything else is `Unavailable` (worth a retry) or `Internal`.
//! The sqlx error is kept as the source, for the log, never for a client.

use std::borrow::Cow;

use crate::ids::{KeyId, Username};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("tenant not found")]
    TenantNotFound,
    #[error("role not found")]
    RoleNotFound,
    #[error("user not found")]
    UserNotFound,
    #[error("group not found")]
    GroupNotFound,
    #[error("API key not found")]
    KeyNotFound,
    #[error("tenant already exists")]
    TenantExists,
    #[error("an active key with this name exists")]
    DuplicateKeyName,
    #[error("username taken")]
    DuplicateUsername,
    #[error("role is still assigned")]
    RoleInUse,
    #[error("built-in roles cannot be changed")]
    BuiltinRole,
    #[error("unknown roles: {0:?}")]
    UnknownRoles(Vec<String>),
    #[error("unknown users: {0:?}")]
    UnknownUsers(Vec<Username>),
    #[error("unknown API keys: {0:?}")]
    UnknownKeys(Vec<KeyId>),
    #[error("only a superadmin may change a principal or group holding a built-in role")]
    ProtectedPrincipal,
    #[error("the change would leave the platform without a superadmin user")]
    LastSuperadmin,
    #[error("the revocation is not in a state that allows this")]
    InvalidState,
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Internal(#[source] sqlx::Error),
    #[error("the database holds a value this version cannot read: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            Self::Unavailable(e)
        } else {
            Self::Internal(e)
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(inner) => inner.into(),
            other => Self::Corrupt(format!("migrations: {other}")),
        }
    }
}

/// Connection loss, pool exhaustion, a server shutting down or a busy
/// SQLite file: the request was fine, the database was not there for it.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or(Cow::Borrowed(""));
            // Postgres class 08 (connection), 57P0x (shutdown, cannot connect
            // now), 53300 (too many connections), 55000 (database not
            // accepting connections), 40001/40P01 (serialization, deadlock:
            // retry); SQLite 5/6 (busy, locked) and their extended codes.
            code.starts_with("08")
                || code.starts_with("57P")
                || matches!(&*code, "53300" | "55000" | "40001" | "40P01")
                || code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
        }
        _ => false,
    }
}

/// A constraint a statement can violate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    Unique,
    ForeignKey,
}

/// The constraint a database error violated, if it was one we name.
pub(crate) fn violation(e: &sqlx::Error) -> Option<Violation> {
    match e {
        sqlx::Error::Database(db) => match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => Some(Violation::Unique),
            sqlx::error::ErrorKind::ForeignKeyViolation => Some(Violation::ForeignKey),
            _ => None,
        },
        _ => None,
    }
}

/// Maps the error of one statement: a violated constraint becomes what it
/// means at that statement (`meaning` answers `None` for one it does not
/// expect); anything else is a database failure.
pub(crate) fn on_constraint(
    meaning: impl FnOnce(Violation) -> Option<StoreError>,
) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| violation(&e).and_then(meaning).unwrap_or_else(|| e.into())
}

/// An error with its sources on one line, for logs.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
