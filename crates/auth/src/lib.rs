//! Authentication and authorisation for wharf.
//!
//! - [`secret`]: password hashing (argon2id) and access-token secrets.
//! - [`jwt`]: the short-lived bearer tokens of the Docker token protocol, signed with
//!   keys every replica shares through the metadata store.
//! - [`scope`]: `repository:NAME:pull,push` and friends.
//! - [`policy`]: what a principal may do with a repository, from the stored facts.
//! - [`limiter`]: failed-login rate limits per account and per client address.
//! - [`session`]: web UI sessions, kept like short-lived access tokens.
//! - [`Authenticator`]: ties them to the metadata store.

pub mod jwt;
pub mod limiter;
pub mod policy;
pub mod scope;
pub mod secret;
pub mod session;

mod authenticator;

pub use authenticator::{AuthConfig, AuthError, Authenticator, IssuedToken, Principal};
pub use policy::{Action, RepoAccess};
pub use scope::Scope;
pub use session::Session;
