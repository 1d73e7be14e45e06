//! Web UI sessions on a real (SQLite) metadata store: what signing in, signing out,
//! disabling a user and the reserved label do.

use std::sync::Arc;

use wharf_auth::session::{SESSION_LABEL, SESSION_PREFIX};
use wharf_auth::{AuthConfig, AuthError, Authenticator};
use wharf_metastore::{MetaStore, SqliteMetaStore};

async fn setup() -> (Authenticator, Arc<dyn MetaStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn MetaStore> = Arc::new(
        SqliteMetaStore::open(dir.path().join("metadata.db"))
            .await
            .unwrap(),
    );
    let hash = wharf_auth::secret::hash_password("alice-password");
    store.create_user("alice", &hash, false).await.unwrap();
    let auth = Authenticator::new(store.clone(), AuthConfig::default())
        .await
        .unwrap();
    (auth, store, dir)
}

#[tokio::test]
async fn a_session_lives_until_sign_out_in_the_shared_store() {
    let (auth, store, _dir) = setup().await;
    let (secret, s) = auth.sign_in("alice", "alice-password", None).await.unwrap();
    assert!(secret.starts_with(SESSION_PREFIX));
    let found = auth
        .session(&secret)
        .await
        .unwrap()
        .expect("a live session");
    assert_eq!(found.user.name, "alice");
    assert_eq!(found.csrf, s.csrf);
    // A second sign-in is another session with another CSRF token (no fixation).
    let (secret2, s2) = auth.sign_in("alice", "alice-password", None).await.unwrap();
    assert_ne!(secret, secret2);
    assert_ne!(s.csrf, s2.csrf);
    // Another authenticator on the same store (another replica) sees it too.
    let other = Authenticator::new(store.clone(), AuthConfig::default())
        .await
        .unwrap();
    assert!(other.session(&secret).await.unwrap().is_some());
    auth.end_session(&s).await.unwrap();
    assert!(auth.session(&secret).await.unwrap().is_none());
    assert!(other.session(&secret).await.unwrap().is_none());
    assert!(auth.session(&secret2).await.unwrap().is_some());
}

#[tokio::test]
async fn sessions_and_access_tokens_never_stand_in_for_each_other() {
    let (auth, store, _dir) = setup().await;
    let (secret, _) = auth.sign_in("alice", "alice-password", None).await.unwrap();
    // The session's secret is not a password or a token for basic auth.
    assert!(matches!(
        auth.basic("alice", &secret, None).await,
        Err(AuthError::InvalidCredentials)
    ));
    // An access token is not a session.
    let user = store.user_credentials("alice").await.unwrap().unwrap().user;
    let (token, _) = auth.create_access_token(&user, "ci", None).await.unwrap();
    assert!(auth.session(&token).await.unwrap().is_none());
    // Nor may a token pose as one by its label.
    assert!(matches!(
        auth.create_access_token(&user, SESSION_LABEL, None).await,
        Err(AuthError::ReservedLabel)
    ));
    // A token can sign in to the UI, as a password can.
    let (s, _) = auth.sign_in("alice", &token, None).await.unwrap();
    assert!(auth.session(&s).await.unwrap().is_some());
    // Garbage and other prefixes are no session.
    for bad in ["", "wharfsession_", "wharfsession_00", "x"] {
        assert!(auth.session(bad).await.unwrap().is_none(), "{bad:?}");
    }
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_at_once() {
    let (auth, store, _dir) = setup().await;
    let (secret, _) = auth.sign_in("alice", "alice-password", None).await.unwrap();
    store.set_disabled("alice", true).await.unwrap();
    assert!(auth.session(&secret).await.unwrap().is_none());
    assert!(matches!(
        auth.sign_in("alice", "alice-password", None).await,
        Err(AuthError::InvalidCredentials)
    ));
}

#[tokio::test]
async fn failed_sign_ins_count_against_the_login_limits() {
    let (auth, _store, _dir) = setup().await;
    let addr = Some("127.0.0.9".parse().unwrap());
    let mut limited = false;
    for _ in 0..50 {
        match auth.sign_in("alice", "wrong", addr).await {
            Err(AuthError::InvalidCredentials) => {}
            Err(AuthError::RateLimited(_)) => {
                limited = true;
                break;
            }
            other => panic!("unexpected {:?}", other.map(|_| ())),
        }
    }
    assert!(limited, "the account's failed sign-ins are limited");
    // Even the right password is refused while limited.
    assert!(matches!(
        auth.sign_in("alice", "alice-password", addr).await,
        Err(AuthError::RateLimited(_))
    ));
}
