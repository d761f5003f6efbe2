//! Authentication (who is calling) and the tenant gate (may they act here).
//!
//! `Authorization: Basic` authenticates a user by an argon2id password
//! check (on the bounded pool), remembered for the cache TTL;
//! `Authorization: Bearer` an API key through the verification path (shape
//! and checksum, verify cache, SHA-256 digest). The principal's effective
//! roles come from the store, or from a cache entry that every role, group,
//! membership or user change retires at once (generations), so such a
//! change counts from the very next request.

use std::future::{Future, Ready, ready};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use base64::Engine;
use futures_util::future::Either;
use keyward_core::ids::{KeyId, RoleName, TenantId, Username};
use keyward_core::rbac::Permissions;
use keyward_core::store::Change;
use zeroize::Zeroizing;

use crate::denied::Caller;
use crate::error::{ApiError, ApiResult, Code};
use crate::state::AppState;
use crate::verify::{InvalidReason, Outcome, VerifiedKey};
use crate::verify_cache::{Filled, ProvenUser};

/// Who a principal is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalId {
    User(Username),
    Key(KeyId),
}

impl std::fmt::Display for PrincipalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(u) => write!(f, "{u}"),
            Self::Key(k) => write!(f, "apikey:{k}"),
        }
    }
}

/// An authenticated caller with its effective roles as of this request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub id: PrincipalId,
    pub permissions: Arc<Permissions>,
}

impl Principal {
    pub fn tenant(&self) -> &TenantId {
        &self.permissions.tenant
    }

    /// How the principal is named in `createdBy`/`revokedBy`: a username,
    /// or `apikey:{keyId}`.
    pub fn name(&self) -> String {
        self.id.to_string()
    }

    /// A change made by this principal on the current request, now: what
    /// the store writes in the change's audit record (and its event's id).
    pub fn change(&self) -> Change {
        Change::new(
            self.name(),
            crate::request_id::current(),
            chrono::Utc::now(),
        )
        .by_superadmin(self.permissions.is_superadmin())
    }

    pub fn require_superadmin(&self) -> ApiResult<()> {
        if self.permissions.is_superadmin() {
            Ok(())
        } else {
            Err(ApiError::new(Code::Forbidden))
        }
    }

    /// Permission on `tenant`: the same 403 whether it exists or not. A
    /// superadmin acting on a tenant that does not exist gets 404.
    pub async fn require_tenant(&self, state: &AppState, tenant: &TenantId) -> ApiResult<()> {
        tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
        if !self.permissions.may_act_on_tenant(tenant) {
            return Err(ApiError::new(Code::Forbidden));
        }
        if tenant != self.tenant() && !state.store.tenant_exists(tenant).await? {
            return Err(ApiError::new(Code::TenantNotFound));
        }
        Ok(())
    }

    /// The built-in `_platform` roles (`superadmin`, `verifier`) may be
    /// handed out only by a superadmin: an admin of `_platform` must not be
    /// able to make anyone, itself included, a superadmin.
    pub fn require_may_grant(&self, tenant: &TenantId, roles: &[RoleName]) -> ApiResult<()> {
        let builtin =
            |r: &RoleName| matches!(r.as_str(), RoleName::SUPERADMIN | RoleName::VERIFIER);
        if tenant.is_platform() && roles.iter().any(builtin) && !self.permissions.is_superadmin() {
            return Err(ApiError::new(Code::Forbidden)
                .with_message("Only a superadmin may grant built-in roles."));
        }
        Ok(())
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(Code::Unauthenticated).with_message(message)
}

/// Authenticates the request's `Authorization` header.
fn principal_of(
    req: &HttpRequest,
    cached_key_permissions: bool,
) -> impl Future<Output = ApiResult<Principal>> + 'static {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| Zeroizing::new(v.to_owned()));
    let client = req.peer_addr().map(|a| a.ip());
    let req = (!cached_key_permissions).then(|| req.clone());
    async move {
        let state = state.ok_or_else(|| ApiError::new(Code::Internal))?;
        let authorization = authorization.ok_or_else(|| unauthenticated("Missing credentials."))?;
        let principal =
            noted(authenticate_with(&state, &authorization, client, cached_key_permissions).await?);
        // Names the caller in the audit record of a refusal that follows
        // (verify, the only caller of cached permissions, changes nothing).
        if let Some(req) = req {
            req.extensions_mut().insert(Caller {
                name: principal.name(),
                tenant: principal.tenant().clone(),
            });
        }
        Ok(principal)
    }
}

/// Names the principal in the request's span.
fn noted(principal: Principal) -> Principal {
    note(&principal.id);
    principal
}

/// Names the principal in the request's span.
fn note(id: &PrincipalId) {
    tracing::Span::current().record("principal", tracing::field::display(id));
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        Box::pin(principal_of(req, false))
    }
}

/// An authenticated caller with permission on the tenant the path names
/// (`{t}`, or the caller's own on `/api/v1/apikeys…`): the gate every
/// tenant-scoped route passes before anything else.
pub struct TenantScope {
    pub who: Principal,
    pub tenant: TenantId,
}

impl FromRequest for TenantScope {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let principal = principal_of(req, false);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let named = req.match_info().get("t").map(str::to_owned);
        Box::pin(async move {
            let who = principal.await?;
            let state = state.ok_or_else(|| ApiError::new(Code::Internal))?;
            let tenant = match named {
                Some(raw) => TenantId::parse(&raw)?,
                None => who.tenant().clone(),
            };
            who.require_tenant(&state, &tenant).await?;
            Ok(TenantScope { who, tenant })
        })
    }
}

/// A principal for the verify hot path: an API key's permissions come from
/// the verify cache, which every role, group and key change evicts (locally
/// at once, on other replicas by NOTIFY), instead of from two queries per
/// call. Users (Basic) are authenticated as usual.
pub enum CachedPrincipal {
    /// A Bearer caller as its verification holds it: its permissions are
    /// borrowed, not shared out (each share a write to a count that every
    /// worker's requests for this caller touch).
    Key(VerifiedKey),
    Other(Principal),
}

impl CachedPrincipal {
    pub fn permissions(&self) -> &Permissions {
        match self {
            Self::Key(key) => key.permissions(),
            Self::Other(principal) => &principal.permissions,
        }
    }
}

impl FromRequest for CachedPrincipal {
    type Error = ApiError;
    type Future = Either<
        Ready<Result<Self, ApiError>>,
        Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>,
    >;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        // A key the verify cache holds is answered here and now: no
        // future to allocate, no copy of the header, no shared state to
        // clone — each a cost on every request of the hot path.
        if let Some(answered) = cached_bearer(req) {
            return Either::Left(ready(answered.map(CachedPrincipal::Key)));
        }
        let principal = principal_of(req, true);
        Either::Right(Box::pin(async move {
            principal.await.map(CachedPrincipal::Other)
        }))
    }
}

/// A Bearer caller whose key the verify cache holds (or whose token is
/// malformed); `None` for anything else — no header, Basic, a key to read
/// from the store — which takes the full path.
fn cached_bearer(req: &HttpRequest) -> Option<ApiResult<VerifiedKey>> {
    let state = req.app_data::<web::Data<AppState>>()?;
    let header = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, _) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let Ok(Presented::Bearer(key)) = parse_authorization(header) else {
        return None;
    };
    let outcome = state.verifier.verify_caller_cached(key)?;
    Some(proven_key(outcome).inspect(|key| note(&PrincipalId::Key(key.key_id))))
}

/// What an `Authorization` header presents.
pub enum Presented<'a> {
    /// `Basic`: the decoded `username:password`, wiped when dropped.
    Basic(BasicPair),
    /// `Bearer`: an API key, not yet parsed.
    Bearer(&'a str),
}

/// A decoded Basic pair: split at its first `:`.
pub struct BasicPair {
    decoded: Zeroizing<String>,
    colon: usize,
}

impl BasicPair {
    pub fn username(&self) -> &str {
        &self.decoded[..self.colon]
    }

    pub fn password(&self) -> &str {
        &self.decoded[self.colon + 1..]
    }
}

/// Reads an `Authorization` header: scheme (any case), then Basic's
/// base64 of UTF-8 `username:password` or Bearer's key. Anything else is
/// `401 unauthenticated`.
pub fn parse_authorization(header: &str) -> ApiResult<Presented<'_>> {
    let (scheme, credentials) = header.split_once(' ').unwrap_or((header, ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .map_err(|_| bad_password())?,
        );
        let decoded = Zeroizing::new(
            std::str::from_utf8(&bytes)
                .map_err(|_| bad_password())?
                .to_owned(),
        );
        let colon = decoded.find(':').ok_or_else(bad_password)?;
        Ok(Presented::Basic(BasicPair { decoded, colon }))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Presented::Bearer(credentials))
    } else {
        Err(unauthenticated("Unsupported authorization scheme."))
    }
}

async fn authenticate_with(
    state: &AppState,
    authorization: &str,
    client: Option<IpAddr>,
    cached_key_permissions: bool,
) -> ApiResult<Principal> {
    match parse_authorization(authorization)? {
        Presented::Basic(pair) => basic(state, &pair, client).await,
        Presented::Bearer(key) => bearer(state, key, cached_key_permissions).await,
    }
}

fn bad_password() -> ApiError {
    unauthenticated("Invalid username or password.")
}

/// A password proven within the cache TTL is answered from memory (admin
/// tooling pays one argon2 proof a minute, not one a request); otherwise,
/// once no other request is proving the same credential (`proof_turns`),
/// within the failed-proof limits of the username and the client
/// (`failed_proofs`), a proof.
async fn basic(state: &AppState, pair: &BasicPair, client: Option<IpAddr>) -> ApiResult<Principal> {
    let (username, password) = (pair.username(), pair.password());
    let proof = proof_digest(&state.proof_key, username, password);
    if let Some(principal) = remembered(state, &proof) {
        return Ok(principal);
    }
    // Proven by the request this one waited for, unless that proof failed
    // or its user changed meanwhile.
    let _turn = state.proof_turns.take(proof).await;
    if let Some(principal) = remembered(state, &proof) {
        return Ok(principal);
    }
    let attempt = state.failed_proofs.attempt(username, client)?;
    let proved = prove(state, username, password, proof).await;
    // Only a wrong username or password counts.
    if !matches!(&proved, Err(e) if e.code == Code::Unauthenticated) {
        attempt.uncounted();
    }
    proved
}

fn remembered(state: &AppState, proof: &blake3::Hash) -> Option<Principal> {
    let proven = state.proven.get(proof)?;
    Some(Principal {
        id: PrincipalId::User(proven.value.username.clone()),
        permissions: Arc::clone(&proven.value.permissions),
    })
}

/// argon2 on the bounded pool (`503` when it is full), then the user's
/// grants, remembered unless the user, its roles or its tenant's RBAC
/// changed while they were read.
async fn prove(
    state: &AppState,
    username: &str,
    password: &str,
    proof: blake3::Hash,
) -> ApiResult<Principal> {
    let bad = bad_password;
    let filled = state.generations.snapshot();
    let found = match Username::parse(username) {
        Ok(u) => state.store.user_credentials(&u).await?,
        Err(_) => None,
    };
    state.gates.password.pass().await;
    let Some(user) = found else {
        // Same cost as a wrong password: no username oracle by timing.
        state.passwords.verify(password, &state.dummy_hash).await?;
        return Err(bad());
    };
    if !state
        .passwords
        .verify(password, &user.password_hash)
        .await?
    {
        return Err(bad());
    }
    let grants = state
        .store
        .user_grants(&user.tenant_id, &user.username)
        .await?;
    state.gates.user.pass().await;
    let permissions = Arc::new(Permissions::from_grants(user.tenant_id, grants));
    state.proven.insert(
        proof,
        Arc::new(Filled {
            value: ProvenUser {
                username: user.username.clone(),
                permissions: Arc::clone(&permissions),
            },
            filled,
        }),
    );
    Ok(Principal {
        id: PrincipalId::User(user.username),
        permissions,
    })
}

/// Keyed by a per-process random key: the cache holds no password and no
/// digest anyone could test guesses against offline.
fn proof_digest(key: &[u8; 32], username: &str, password: &str) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    // The length first: "ab"+"c" and "a"+"bc" must not collide.
    h.update(&(username.len() as u64).to_le_bytes());
    h.update(username.as_bytes());
    h.update(password.as_bytes());
    h.finalize()
}

/// Identity from the shared verification path (fast after the first
/// proof); what the key may do is read from the store at this request.
async fn bearer(state: &AppState, credentials: &str, cached: bool) -> ApiResult<Principal> {
    let verified = proven_key(state.verifier.verify(credentials).await?)?;
    if cached {
        return Ok(key_principal(&verified));
    }
    let Some(key) = state.store.key_credentials(verified.key_id).await? else {
        return Err(unauthenticated("Invalid API key."));
    };
    if !key.active {
        return Err(unauthenticated("The API key is revoked."));
    }
    Ok(Principal {
        id: PrincipalId::Key(key.key_id),
        permissions: Arc::new(Permissions::from_grants(key.tenant_id, key.grants)),
    })
}

/// The key a verification proved, or why its caller is refused.
fn proven_key(outcome: Outcome) -> ApiResult<VerifiedKey> {
    match outcome {
        Outcome::Valid(v) => Ok(v),
        // Revoked/expired are told only after the secret was proven.
        Outcome::Invalid(InvalidReason::Revoked) => Err(unauthenticated("The API key is revoked.")),
        Outcome::Invalid(InvalidReason::Expired) => Err(unauthenticated("The API key is expired.")),
        Outcome::Invalid(_) => Err(unauthenticated("Invalid API key.")),
    }
}

/// A key as a principal, with the permissions its verification holds.
fn key_principal(key: &VerifiedKey) -> Principal {
    Principal {
        id: PrincipalId::Key(key.key_id),
        permissions: Arc::clone(key.permissions()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(pair: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    #[test]
    fn authorization_headers() {
        let Ok(Presented::Basic(p)) = parse_authorization(&basic("alice:pa:ss word")) else {
            panic!("basic");
        };
        assert_eq!((p.username(), p.password()), ("alice", "pa:ss word"));
        let Ok(Presented::Bearer(k)) = parse_authorization("bearer  kw_x_y ") else {
            panic!("bearer");
        };
        assert_eq!(k, "kw_x_y");
        for bad in [
            "",
            "Basic",
            "Basic !!!",
            &basic("no colon"),
            "Digest x",
            "Basic /w==",
        ] {
            let Err(e) = parse_authorization(bad) else {
                panic!("{bad:?} accepted");
            };
            assert_eq!(e.code, Code::Unauthenticated, "{bad:?}");
        }
    }
}
