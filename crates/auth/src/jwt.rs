//! Registry bearer tokens: JWTs signed with HMAC-SHA256.
//!
//! Clients treat these tokens as opaque; only wharf replicas read them. A shared
//! symmetric key, kept in the metadata store, lets every replica verify what any other
//! issued, with nothing to distribute. Keys carry ids (`kid`) so they can be rotated:
//! the newest signs, all verify.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use wharf_metastore::accounts::SigningKey;

use crate::scope::Scope;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user name; empty for anonymous access.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub access: Vec<Scope>,
    /// The user's id, so a disabled user's tokens stop working at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<i64>,
    /// The access token the bearer token was obtained with, so revoking it takes effect
    /// at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is malformed")]
    Malformed,
    #[error("token was signed with an unknown key")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token is for another service")]
    WrongAudience,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// Clock skew tolerated between replicas, in seconds.
const LEEWAY_SECS: i64 = 30;

#[derive(Debug, Clone)]
pub struct Keys {
    /// Newest first.
    keys: Vec<SigningKey>,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

impl Keys {
    pub fn new(keys: Vec<SigningKey>) -> Keys {
        assert!(!keys.is_empty(), "at least one signing key");
        Keys { keys }
    }

    /// Each key stretched into a 32-byte seed for another purpose (`context`), newest
    /// first, with its id: keys for that purpose that every replica derives alike and
    /// that rotate with these.
    pub fn derived(&self, context: &str) -> Vec<(String, [u8; 32])> {
        self.keys
            .iter()
            .map(|k| {
                let mut m = mac(&k.secret);
                m.update(context.as_bytes());
                (k.id.clone(), m.finalize().into_bytes().into())
            })
            .collect()
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let key = &self.keys[0];
        let header = Header {
            alg: "HS256".into(),
            typ: "JWT".into(),
            kid: key.id.clone(),
        };
        let signing_input = format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(&header).expect("header serialises")),
            B64.encode(serde_json::to_vec(claims).expect("claims serialise"))
        );
        let mut m = mac(&key.secret);
        m.update(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(m.finalize().into_bytes()))
    }

    /// Checks signature, time window and audience; `now` in seconds.
    pub fn verify(&self, token: &str, audience: &str, now: i64) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header: Header = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(JwtError::Malformed)?;
        if header.alg != "HS256" {
            return Err(JwtError::Malformed);
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id == header.kid)
            .ok_or(JwtError::UnknownKey)?;
        let signature = B64.decode(s).map_err(|_| JwtError::Malformed)?;
        let mut m = mac(&key.secret);
        m.update(h.as_bytes());
        m.update(b".");
        m.update(c.as_bytes());
        // verify_slice compares in constant time.
        m.verify_slice(&signature)
            .map_err(|_| JwtError::BadSignature)?;
        let claims: Claims = B64
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(JwtError::Malformed)?;
        if claims.aud != audience {
            return Err(JwtError::WrongAudience);
        }
        if now > claims.exp + LEEWAY_SECS {
            return Err(JwtError::Expired);
        }
        if now + LEEWAY_SECS < claims.nbf {
            return Err(JwtError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, secret: &[u8]) -> SigningKey {
        SigningKey {
            id: id.into(),
            secret: secret.to_vec(),
            created_at_ms: 0,
        }
    }

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "wharf".into(),
            sub: "alice".into(),
            aud: "wharf".into(),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: "x".into(),
            access: vec![Scope::repository("alice/app", &["pull"])],
            uid: Some(1),
            tid: None,
        }
    }

    #[test]
    fn roundtrip_and_rejections() {
        let keys = Keys::new(vec![key("k1", b"secret one")]);
        let t = keys.sign(&claims(1000));
        assert_eq!(keys.verify(&t, "wharf", 1000).unwrap(), claims(1000));
        assert_eq!(keys.verify(&t, "other", 1000), Err(JwtError::WrongAudience));
        assert_eq!(keys.verify(&t, "wharf", 2000), Err(JwtError::Expired));
        assert_eq!(keys.verify(&t, "wharf", 500), Err(JwtError::NotYetValid));
        assert_eq!(keys.verify("a.b", "wharf", 1000), Err(JwtError::Malformed));
        // A tampered payload no longer matches its signature.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut c = claims(1000);
        c.access = vec![Scope::repository("alice/app", &["pull", "push"])];
        parts[1] = B64.encode(serde_json::to_vec(&c).unwrap());
        assert_eq!(
            keys.verify(&parts.join("."), "wharf", 1000),
            Err(JwtError::BadSignature)
        );
        // Another replica's keys: rotated (old key still verifies), or foreign.
        let rotated = Keys::new(vec![key("k2", b"secret two"), key("k1", b"secret one")]);
        assert!(rotated.verify(&t, "wharf", 1000).is_ok());
        let foreign = Keys::new(vec![key("k1", b"another secret")]);
        assert_eq!(
            foreign.verify(&t, "wharf", 1000),
            Err(JwtError::BadSignature)
        );
    }
}
