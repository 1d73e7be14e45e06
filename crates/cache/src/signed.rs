//! Signed blob URLs: what the registry hands a client in a redirect, and what a cache
//! (or a replica, for a cache's fill) checks before serving.
//!
//! The signed message is the digest, the size and the expiry. The registry derives its
//! Ed25519 keys from its token-signing secrets (every replica derives the same keys,
//! with nothing new to store or distribute); caches get only the public halves.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use wharf_oci::Digest;

/// The context the registry's token secrets are stretched with to make these keys:
/// a different purpose gets different keys.
pub const KEY_CONTEXT: &str = "wharf content-cache redirects v1";

/// A public key a cache verifies URLs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    /// The key's id (`k` in URLs).
    pub kid: String,
    /// The Ed25519 public key, base64url without padding.
    pub ed25519: String,
}

/// The query of a signed URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedQuery {
    /// The blob's size in bytes.
    pub s: u64,
    /// Expiry, Unix seconds.
    pub e: i64,
    /// Key id.
    pub k: String,
    /// The signature, base64url.
    pub sig: String,
}

impl SignedQuery {
    pub fn to_query_string(&self) -> String {
        // Key ids and base64url are URL-safe as they are.
        format!("s={}&e={}&k={}&sig={}", self.s, self.e, self.k, self.sig)
    }
}

/// Why a signed URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the URL is not signed (s, e, k and sig are needed)")]
    Missing,
    #[error("the URL's signature was made with a key this node does not know ({0})")]
    UnknownKey(String),
    #[error("the URL's signature does not match it")]
    BadSignature,
    #[error("the URL expired {0} s ago; ask the registry again")]
    Expired(i64),
}

fn message(digest: &Digest, size: u64, expires: i64) -> String {
    format!("wharf-cache-blob-v1\n{digest}\n{size}\n{expires}")
}

/// Signs URLs (the registry's side).
pub struct UrlSigner {
    /// Newest first: the first signs.
    keys: Vec<(String, Ed25519KeyPair)>,
}

impl UrlSigner {
    /// Keys from 32-byte seeds, newest first.
    pub fn from_seeds(seeds: &[(String, [u8; 32])]) -> UrlSigner {
        assert!(!seeds.is_empty(), "at least one key");
        UrlSigner {
            keys: seeds
                .iter()
                .map(|(kid, seed)| {
                    let pair = Ed25519KeyPair::from_seed_unchecked(seed)
                        .expect("any 32 bytes are an Ed25519 seed");
                    (kid.clone(), pair)
                })
                .collect(),
        }
    }

    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys
            .iter()
            .map(|(kid, pair)| PublicKey {
                kid: kid.clone(),
                ed25519: B64.encode(pair.public_key().as_ref()),
            })
            .collect()
    }

    pub fn sign(&self, digest: &Digest, size: u64, expires: i64) -> SignedQuery {
        let (kid, pair) = &self.keys[0];
        let sig = pair.sign(message(digest, size, expires).as_bytes());
        SignedQuery {
            s: size,
            e: expires,
            k: kid.clone(),
            sig: B64.encode(sig.as_ref()),
        }
    }

    /// A full URL at `base` (a cache's URL) for `digest`.
    pub fn url(&self, base: &str, digest: &Digest, size: u64, expires: i64) -> String {
        format!(
            "{}{}/{digest}?{}",
            base.trim_end_matches('/'),
            crate::CACHE_BLOB_PATH,
            self.sign(digest, size, expires).to_query_string()
        )
    }

    pub fn verifier(&self) -> Verifier {
        Verifier::new(&self.public_keys()).expect("own keys are valid")
    }
}

/// Checks URLs (a cache's side, and a replica's for fills).
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    keys: HashMap<String, Vec<u8>>,
}

impl Verifier {
    pub fn new(keys: &[PublicKey]) -> Result<Verifier, String> {
        let mut map = HashMap::new();
        for k in keys {
            let bytes = B64
                .decode(&k.ed25519)
                .map_err(|e| format!("public key {}: {e}", k.kid))?;
            if bytes.len() != 32 {
                return Err(format!("public key {} is not 32 bytes", k.kid));
            }
            map.insert(k.kid.clone(), bytes);
        }
        Ok(Verifier { keys: map })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the signature and the expiry (`now` in Unix seconds).
    pub fn verify(&self, digest: &Digest, q: &SignedQuery, now: i64) -> Result<(), SignatureError> {
        let key = self
            .keys
            .get(&q.k)
            .ok_or_else(|| SignatureError::UnknownKey(q.k.clone()))?;
        let sig = B64
            .decode(&q.sig)
            .map_err(|_| SignatureError::BadSignature)?;
        UnparsedPublicKey::new(&ED25519, key)
            .verify(message(digest, q.s, q.e).as_bytes(), &sig)
            .map_err(|_| SignatureError::BadSignature)?;
        if q.e < now {
            return Err(SignatureError::Expired(now - q.e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        format!("sha256:{}", "ab".repeat(32)).parse().unwrap()
    }

    /// Test seeds; the registry derives its own from its token secrets.
    fn derive_seed(secret: &[u8], context: &str) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::new()
            .chain_update(secret)
            .chain_update(context)
            .finalize()
            .into()
    }

    fn signer() -> UrlSigner {
        UrlSigner::from_seeds(&[
            ("new".into(), derive_seed(b"secret-2", KEY_CONTEXT)),
            ("old".into(), derive_seed(b"secret-1", KEY_CONTEXT)),
        ])
    }

    #[test]
    fn a_signed_url_verifies_until_it_expires() {
        let s = signer();
        let v = Verifier::new(&s.public_keys()).unwrap();
        let q = s.sign(&digest(), 42, 1000);
        assert_eq!(q.k, "new", "the newest key signs");
        assert_eq!(v.verify(&digest(), &q, 999), Ok(()));
        assert_eq!(v.verify(&digest(), &q, 1000), Ok(()));
        assert_eq!(
            v.verify(&digest(), &q, 1005),
            Err(SignatureError::Expired(5))
        );
    }

    #[test]
    fn any_change_to_the_url_is_refused() {
        let s = signer();
        let v = s.verifier();
        let q = s.sign(&digest(), 42, 1000);
        let other: Digest = format!("sha256:{}", "cd".repeat(32)).parse().unwrap();
        assert_eq!(v.verify(&other, &q, 0), Err(SignatureError::BadSignature));
        for tampered in [
            SignedQuery { s: 43, ..q.clone() },
            SignedQuery {
                e: 2000,
                ..q.clone()
            },
            SignedQuery {
                k: "old".into(),
                ..q.clone()
            },
            SignedQuery {
                sig: "AAAA".into(),
                ..q.clone()
            },
        ] {
            assert_eq!(
                v.verify(&digest(), &tampered, 0),
                Err(SignatureError::BadSignature),
                "{tampered:?}"
            );
        }
        let unknown = SignedQuery { k: "x".into(), ..q };
        assert_eq!(
            v.verify(&digest(), &unknown, 0),
            Err(SignatureError::UnknownKey("x".into()))
        );
    }

    #[test]
    fn keys_from_another_secret_do_not_verify() {
        let s = signer();
        let stranger = UrlSigner::from_seeds(&[("new".into(), derive_seed(b"other", KEY_CONTEXT))]);
        let q = stranger.sign(&digest(), 1, 1000);
        assert_eq!(
            s.verifier().verify(&digest(), &q, 0),
            Err(SignatureError::BadSignature)
        );
        // The same secret for another purpose gives another key.
        assert_ne!(
            derive_seed(b"secret-2", KEY_CONTEXT),
            derive_seed(b"secret-2", "other")
        );
    }

    #[test]
    fn urls_carry_the_cache_base_and_the_query() {
        let url = signer().url("https://cache.example/", &digest(), 7, 99);
        assert!(
            url.starts_with(&format!(
                "https://cache.example/cache/v1/blobs/{}?s=7&e=99&k=new&sig=",
                digest()
            )),
            "{url}"
        );
    }
}
