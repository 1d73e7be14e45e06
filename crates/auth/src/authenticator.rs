//! Checking credentials and issuing registry bearer tokens against the metadata store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest as _;
use wharf_metastore::accounts::{AccessToken, Level, SigningKey, User};
use wharf_metastore::{now_ms, MetaError, MetaStore};

use crate::jwt::{Claims, JwtError, Keys};
use crate::limiter::{FailedLogins, Limits};
use crate::policy::{self, RepoAccess};
use crate::scope::Scope;
use crate::secret;
use crate::session::{self, Session};

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The `service` of the token protocol, and the `aud` of issued tokens.
    pub service: String,
    pub token_ttl: Duration,
    /// Level needed to delete manifests, tags and blobs.
    pub delete_level: Level,
    pub limits: Limits,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            service: "wharf".into(),
            token_ttl: Duration::from_secs(300),
            delete_level: Level::Admin,
            limits: Limits::default(),
        }
    }
}

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    /// `token` is the access token used, when it was one rather than the password.
    User {
        user: User,
        token: Option<i64>,
    },
}

impl Principal {
    pub fn user(&self) -> Option<&User> {
        match self {
            Principal::Anonymous => None,
            Principal::User { user, .. } => Some(user),
        }
    }

    /// For logs and the audit trail.
    pub fn name(&self) -> &str {
        self.user().map_or("anonymous", |u| u.name.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong user, password or token, or a disabled account; never says which.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("too many failed logins; try again in {0} s")]
    RateLimited(u64),
    #[error("bearer token rejected: {0}")]
    BadToken(JwtError),
    #[error("bearer token rejected: its access token was revoked or its user disabled")]
    TokenRevoked,
    #[error(
        "the label \"{}\" is reserved for web sessions",
        session::SESSION_LABEL
    )]
    ReservedLabel,
    #[error(transparent)]
    Store(#[from] MetaError),
}

/// Remembers recent successful password checks, so scripts sending basic auth on every
/// request do not pay argon2 each time. Keyed by a hash of the name, the password and
/// the stored hash: changing the password invalidates the entry.
const PASSWORD_CACHE_TTL: Duration = Duration::from_secs(60);
const PASSWORD_CACHE_MAX: usize = 10_000;
/// `last_used` of an access token is written at most this often.
const TOKEN_TOUCH_EVERY_MS: i64 = 60_000;

pub struct Authenticator {
    store: Arc<dyn MetaStore>,
    keys: Keys,
    config: AuthConfig,
    failures: FailedLogins,
    password_cache: Mutex<HashMap<[u8; 32], Instant>>,
}

fn now_secs() -> i64 {
    now_ms() / 1000
}

impl Authenticator {
    /// Loads the shared signing keys, creating the first one if this is a new registry.
    pub async fn new(store: Arc<dyn MetaStore>, config: AuthConfig) -> Result<Self, AuthError> {
        let candidate = SigningKey {
            id: hex::encode(secret::random_bytes::<8>()),
            secret: secret::random_bytes::<32>().to_vec(),
            created_at_ms: now_ms(),
        };
        let keys = Keys::new(store.signing_keys(candidate).await?);
        Ok(Authenticator {
            store,
            keys,
            failures: FailedLogins::new(config.limits),
            config,
            password_cache: Mutex::new(HashMap::new()),
        })
    }

    /// Seeds for keys of another purpose, derived from the token-signing keys (see
    /// [`crate::jwt::Keys::derived`]).
    pub fn derived_keys(&self, context: &str) -> Vec<(String, [u8; 32])> {
        self.keys.derived(context)
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// Creates the `admin` user on a registry that has no users. Returns the password
    /// when it was generated, for the caller to show once.
    pub async fn ensure_initial_admin(
        &self,
        password: Option<&str>,
    ) -> Result<Option<String>, AuthError> {
        if self.store.count_users().await? > 0 {
            return Ok(None);
        }
        let generated = password.is_none().then(secret::generate_password);
        let pw = password
            .or(generated.as_deref())
            .expect("one of them is set");
        match self
            .store
            .create_user("admin", &secret::hash_password(pw), true)
            .await
        {
            Ok(_) => {
                self.store
                    .audit(
                        "wharf",
                        "user.create",
                        "admin",
                        Some("initial administrator"),
                    )
                    .await?;
                Ok(generated)
            }
            // Another replica created it first.
            Err(MetaError::Conflict(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// HTTP basic credentials: a password or an access token.
    pub async fn basic(
        &self,
        name: &str,
        secret_: &str,
        addr: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        self.failures
            .check(name, addr)
            .map_err(AuthError::RateLimited)?;
        match self.check_basic(name, secret_).await? {
            Some(p) => {
                self.failures.succeeded(name);
                Ok(p)
            }
            None => {
                self.failures.failed(name, addr);
                tracing::info!(user = name, client = ?addr, "failed login");
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    async fn check_basic(&self, name: &str, given: &str) -> Result<Option<Principal>, AuthError> {
        if given.starts_with(secret::TOKEN_PREFIX) {
            if let Some((token, user)) =
                self.store.token_by_hash(&secret::token_hash(given)).await?
            {
                // The OAuth2 refresh grant names no user: the token alone identifies it.
                let usable = (name.is_empty() || user.name == name)
                    && !user.disabled
                    && token_usable(&token)
                    && token.label != session::SESSION_LABEL;
                if usable {
                    self.touch(&token).await;
                    return Ok(Some(Principal::User {
                        user,
                        token: Some(token.id),
                    }));
                }
                return Ok(None);
            }
        }
        let Some(creds) = self.store.user_credentials(name).await? else {
            // Spend the same time as a real check, so timing does not reveal names.
            let _ = secret::verify_password(
                given,
                DUMMY_HASH.get_or_init(|| secret::hash_password("dummy")),
            );
            return Ok(None);
        };
        if creds.user.disabled {
            return Ok(None);
        }
        let key: [u8; 32] = sha2::Sha256::new()
            .chain_update(name.as_bytes())
            .chain_update([0])
            .chain_update(given.as_bytes())
            .chain_update([0])
            .chain_update(creds.password_hash.as_bytes())
            .finalize()
            .into();
        let cached = self
            .password_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .is_some_and(|at| at.elapsed() < PASSWORD_CACHE_TTL);
        let ok = cached || {
            let (given, hash) = (given.to_string(), creds.password_hash.clone());
            tokio::task::spawn_blocking(move || secret::verify_password(&given, &hash))
                .await
                .unwrap_or(false)
        };
        if !ok {
            return Ok(None);
        }
        if !cached {
            let mut cache = self
                .password_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if cache.len() >= PASSWORD_CACHE_MAX {
                cache.retain(|_, at| at.elapsed() < PASSWORD_CACHE_TTL);
                if cache.len() >= PASSWORD_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, Instant::now());
        }
        Ok(Some(Principal::User {
            user: creds.user,
            token: None,
        }))
    }

    async fn touch(&self, token: &AccessToken) {
        let now = now_ms();
        if token
            .last_used_at_ms
            .is_none_or(|t| now - t > TOKEN_TOUCH_EVERY_MS)
        {
            if let Err(e) = self.store.touch_token(token.id, now).await {
                tracing::warn!(token = token.id, error = %e, "could not record token use");
            }
        }
    }

    /// A registry bearer token from an `Authorization: Bearer` header: its claims and
    /// who presented it. The one lookup that finds the user also checks that revocation
    /// and disabling take effect at once, not when the token expires.
    pub async fn bearer(&self, token: &str) -> Result<(Claims, Principal), AuthError> {
        let claims = self
            .keys
            .verify(token, &self.config.service, now_secs())
            .map_err(AuthError::BadToken)?;
        let principal = if let Some(tid) = claims.tid {
            let (token, user) = self
                .store
                .token_by_id(tid)
                .await?
                .ok_or(AuthError::TokenRevoked)?;
            if !token_usable(&token) || user.disabled || Some(user.id) != claims.uid {
                return Err(AuthError::TokenRevoked);
            }
            Principal::User {
                user,
                token: Some(tid),
            }
        } else if claims.uid.is_some() {
            match self.store.user_credentials(&claims.sub).await? {
                Some(c) if !c.user.disabled && Some(c.user.id) == claims.uid => Principal::User {
                    user: c.user,
                    token: None,
                },
                _ => return Err(AuthError::TokenRevoked),
            }
        } else {
            Principal::Anonymous
        };
        Ok((claims, principal))
    }

    /// What `principal` may do with `repo`.
    pub async fn repo_access(
        &self,
        principal: &Principal,
        repo: &str,
    ) -> Result<RepoAccess, AuthError> {
        let user = principal.user();
        if policy::is_system_admin(user) {
            return Ok(RepoAccess {
                pull: true,
                push: true,
                delete: true,
                admin: true,
            });
        }
        let facts = self.store.repo_facts(user.map(|u| u.id), repo).await?;
        Ok(policy::repo_access(user, &facts, self.config.delete_level))
    }

    /// Issues a bearer token granting what `principal` may do of the `requested`
    /// scopes (the token protocol grants the intersection, never an error).
    pub async fn issue(
        &self,
        principal: &Principal,
        requested: &[Scope],
    ) -> Result<IssuedToken, AuthError> {
        let mut access = Vec::new();
        for scope in requested {
            match scope.kind.as_str() {
                "repository" => {
                    let allowed = self.repo_access(principal, &scope.name).await?;
                    let granted: Vec<String> = scope
                        .actions
                        .iter()
                        .filter(|a| match a.as_str() {
                            "pull" => allowed.pull,
                            "push" => allowed.push,
                            "delete" => allowed.delete,
                            "*" => allowed.admin,
                            _ => false,
                        })
                        .cloned()
                        .collect();
                    if !granted.is_empty() {
                        access.push(Scope {
                            kind: scope.kind.clone(),
                            name: scope.name.clone(),
                            actions: granted,
                        });
                    }
                }
                // The catalog is filtered per caller, so anyone signed in may ask for it.
                "registry" if scope.name == "catalog" && principal.user().is_some() => {
                    access.push(Scope {
                        kind: "registry".into(),
                        name: "catalog".into(),
                        actions: vec!["*".into()],
                    });
                }
                _ => {}
            }
        }
        let now = now_secs();
        let ttl = self.config.token_ttl.as_secs() as i64;
        let (uid, tid) = match principal {
            Principal::Anonymous => (None, None),
            Principal::User { user, token } => (Some(user.id), *token),
        };
        let claims = Claims {
            iss: self.config.service.clone(),
            sub: principal.user().map(|u| u.name.clone()).unwrap_or_default(),
            aud: self.config.service.clone(),
            exp: now + ttl,
            nbf: now,
            iat: now,
            jti: hex::encode(secret::random_bytes::<12>()),
            access,
            uid,
            tid,
        };
        Ok(IssuedToken {
            token: self.keys.sign(&claims),
            expires_in: ttl,
            issued_at_secs: now,
        })
    }

    /// A new access token for `user`; the secret is returned once and stored hashed.
    pub async fn create_access_token(
        &self,
        user: &User,
        label: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<(String, AccessToken), AuthError> {
        if label == session::SESSION_LABEL {
            return Err(AuthError::ReservedLabel);
        }
        let secret_ = secret::new_token();
        let token = self
            .store
            .create_token(user.id, label, &secret::token_hash(&secret_), expires_at_ms)
            .await?;
        Ok((secret_, token))
    }
}

/// Web UI sessions.
impl Authenticator {
    /// Signs `name` in with a password or an access token (counted against the same
    /// failed-login limits as every other sign-in) and starts a new session: always a
    /// new secret, so no identifier chosen before sign-in survives it (no fixation).
    /// Returns the secret for the cookie, and the session.
    pub async fn sign_in(
        &self,
        name: &str,
        given: &str,
        addr: Option<IpAddr>,
    ) -> Result<(String, Session), AuthError> {
        let principal = self.basic(name, given, addr).await?;
        let Principal::User { user, .. } = principal else {
            return Err(AuthError::InvalidCredentials);
        };
        let secret_ = session::new_secret();
        let expires = session::expiry_from(session::now());
        let row = self
            .store
            .create_token(
                user.id,
                session::SESSION_LABEL,
                &secret::token_hash(&secret_),
                Some(expires),
            )
            .await?;
        let s = Session {
            user,
            id: row.id,
            csrf: session::csrf_token(&secret_),
            expires_at_ms: expires,
        };
        Ok((secret_, s))
    }

    /// The live session whose cookie holds `secret_`, if any.
    pub async fn session(&self, secret_: &str) -> Result<Option<Session>, AuthError> {
        if !secret_.starts_with(session::SESSION_PREFIX) {
            return Ok(None);
        }
        let Some((row, user)) = self
            .store
            .token_by_hash(&secret::token_hash(secret_))
            .await?
        else {
            return Ok(None);
        };
        if !session::alive(&row, &user, session::now()) {
            return Ok(None);
        }
        self.touch(&row).await;
        Ok(Some(Session {
            csrf: session::csrf_token(secret_),
            id: row.id,
            expires_at_ms: row.expires_at_ms.unwrap_or_default(),
            user,
        }))
    }

    /// Ends a session for good (sign-out): its row is revoked in the shared store, so no
    /// replica accepts the cookie again.
    pub async fn end_session(&self, s: &Session) -> Result<(), AuthError> {
        self.store.revoke_token(s.user.id, s.id).await?;
        Ok(())
    }
}

static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn token_usable(t: &AccessToken) -> bool {
    t.revoked_at_ms.is_none() && t.expires_at_ms.is_none_or(|e| e > now_ms())
}

#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: i64,
    pub issued_at_secs: i64,
}
