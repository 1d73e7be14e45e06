//! Accounts and access control in the metadata store: users, access tokens,
//! organisations and teams, repository visibility and grants, token-signing keys and
//! the audit log. The policy that interprets them lives in the `auth` crate.

use async_trait::async_trait;

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at_ms: i64,
}

/// A user with the password hash, for checking credentials only.
#[derive(Clone)]
pub struct UserCredentials {
    pub user: User,
    pub password_hash: String,
}

impl std::fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccessToken {
    pub id: i64,
    pub user_id: i64,
    pub label: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            _ => None,
        }
    }
}

/// Access granted on a repository; each level includes the ones below it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Read,
    Write,
    Admin,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Write => "write",
            Level::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Level::Read),
            "write" => Some(Level::Write),
            "admin" => Some(Level::Admin),
            _ => None,
        }
    }
}

/// Who a grant is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    User(i64),
    Team(i64),
}

impl Subject {
    /// The kind and id as the tables store them (`subject_kind`, `subject_id`).
    pub(crate) fn parts(self) -> (&'static str, i64) {
        match self {
            Subject::User(id) => ("user", id),
            Subject::Team(id) => ("team", id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Org {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Team {
    pub id: i64,
    pub org_id: i64,
    pub name: String,
}

/// What owns a repository's first path component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    User(i64),
    Org(i64),
}

/// Everything the access policy needs to decide about one user and one repository,
/// gathered in one read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoFacts {
    /// Set explicitly, or `None` (the policy's default applies).
    pub visibility: Option<Visibility>,
    /// The highest level granted to the user directly or through a team.
    pub granted: Option<Level>,
    /// The repository's namespace is the user's own.
    pub own_namespace: bool,
    /// The repository's namespace is an organisation the user belongs to.
    pub org_member: bool,
    /// … and administers.
    pub org_admin: bool,
}

/// One administrative action in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Increasing; pass the smallest seen as `before` to page back.
    pub id: i64,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Who did it.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: Option<String>,
}

#[derive(Clone)]
pub struct SigningKey {
    pub id: String,
    pub secret: Vec<u8>,
    pub created_at_ms: i64,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait AccountStore: Send + Sync {
    // --- users ---
    /// `MetaError::Conflict` if a user or organisation already has the name.
    async fn create_user(&self, name: &str, password_hash: &str, is_admin: bool) -> Result<User>;
    async fn user_credentials(&self, name: &str) -> Result<Option<UserCredentials>>;
    async fn list_users(&self) -> Result<Vec<User>>;
    async fn count_users(&self) -> Result<u64>;
    /// Each returns `false` if the user does not exist.
    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool>;
    async fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool>;
    async fn set_admin(&self, name: &str, is_admin: bool) -> Result<bool>;

    // --- access tokens ---
    async fn create_token(
        &self,
        user_id: i64,
        label: &str,
        token_hash: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<AccessToken>;
    /// The token with this hash and its user, whatever its state (the caller checks
    /// expiry, revocation and the user being enabled).
    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<(AccessToken, User)>>;
    async fn token_by_id(&self, token_id: i64) -> Result<Option<(AccessToken, User)>>;
    async fn list_tokens(&self, user_id: i64) -> Result<Vec<AccessToken>>;
    /// `false` if the user has no such token.
    async fn revoke_token(&self, user_id: i64, token_id: i64) -> Result<bool>;
    async fn touch_token(&self, token_id: i64, at_ms: i64) -> Result<()>;

    // --- organisations and teams ---
    async fn create_org(&self, name: &str) -> Result<Org>;
    async fn org_by_name(&self, name: &str) -> Result<Option<Org>>;
    async fn set_org_member(&self, org_id: i64, user_id: i64, is_admin: bool) -> Result<()>;
    async fn remove_org_member(&self, org_id: i64, user_id: i64) -> Result<bool>;
    async fn create_team(&self, org_id: i64, name: &str) -> Result<Team>;
    async fn team_by_name(&self, org_id: i64, name: &str) -> Result<Option<Team>>;
    async fn add_team_member(&self, team_id: i64, user_id: i64) -> Result<()>;
    async fn remove_team_member(&self, team_id: i64, user_id: i64) -> Result<bool>;
    async fn namespace(&self, name: &str) -> Result<Option<Namespace>>;

    // --- repositories ---
    async fn set_visibility(&self, repo: &str, visibility: Visibility) -> Result<()>;
    async fn grant(&self, repo: &str, subject: Subject, level: Level) -> Result<()>;
    async fn revoke_grant(&self, repo: &str, subject: Subject) -> Result<bool>;
    async fn repo_facts(&self, user_id: Option<i64>, repo: &str) -> Result<RepoFacts>;

    // --- token signing keys ---
    /// Stores `candidate` if there is no key yet, then returns every key, newest first:
    /// the first replica to start creates the key and every other replica adopts it.
    async fn signing_keys(&self, candidate: SigningKey) -> Result<Vec<SigningKey>>;

    // --- audit ---
    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        details: Option<&str>,
    ) -> Result<()>;
    /// Newest first, before `before_id` if given, at most `limit`.
    async fn list_audit(&self, before_id: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>>;
}
