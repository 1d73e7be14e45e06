//! Repository names, tags and references, per the distribution spec's grammar.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// Longest repository name we accept. The spec leaves the limit to registries; clients
/// commonly cap `host/name` at 255 characters, so a longer name could never be pulled.
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name {0:?} is invalid: path components are lower-case letters and digits, separated by '.', '_', '__' or '-'")]
    BadRepoName(String),
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    RepoNameTooLong,
    #[error("tag {0:?} is invalid: up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    BadTag(String),
    #[error(transparent)]
    BadDigest(#[from] DigestError),
}

/// A repository name of any depth: `a`, `library/ubuntu`, `team/app/backend/api`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_name_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        let first = b[i];
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = match first {
            b'.' => sep == b".",
            b'_' => sep == b"_" || sep == b"__",
            b'-' => sep.iter().all(|&x| x == b'-'),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepoName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::RepoNameTooLong);
        }
        if s.split('/').all(is_name_component) {
            Ok(RepoName(s.to_string()))
        } else {
            Err(NameError::BadRepoName(s.to_string()))
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoName({})", self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
        if ok {
            Ok(Tag(s.to_string()))
        } else {
            Err(NameError::BadTag(s.to_string()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        // Tags cannot contain ':', digests always do.
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_names_of_any_depth() {
        for ok in [
            "a",
            "library/ubuntu",
            "a/b/c/d/e/f/g/h/i/j",
            "my-app",
            "my--app",
            "my_app",
            "my__app",
            "my.app",
            "0",
            "a1/b2",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok:?} should parse");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "", "A", "a/", "/a", "a//b", "a/../b", "..", "-a", "a-", "a___b", "a..b", "a._b",
            "a b", "a%2fb",
        ] {
            assert!(
                bad.parse::<RepoName>().is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert_eq!(
            "a".repeat(256).parse::<RepoName>(),
            Err(NameError::RepoNameTooLong)
        );
    }

    #[test]
    fn tags() {
        assert!("latest".parse::<Tag>().is_ok());
        assert!("_x.Y-1".parse::<Tag>().is_ok());
        assert!("a".repeat(128).parse::<Tag>().is_ok());
        assert!("a".repeat(129).parse::<Tag>().is_err());
        assert!(".hidden".parse::<Tag>().is_err());
        assert!("-x".parse::<Tag>().is_err());
        assert!("a/b".parse::<Tag>().is_err());
    }

    proptest! {
        #[test]
        fn name_parsing_never_panics_and_roundtrips(s in "[a-z0-9._/-]{0,40}|.{0,40}") {
            if let Ok(n) = s.parse::<RepoName>() {
                prop_assert_eq!(n.as_str(), s.as_str());
                prop_assert!(!n.as_str().contains(".."));
                prop_assert!(!n.as_str().starts_with('/'));
            }
        }

        #[test]
        fn reference_parsing_never_panics(s in ".{0,140}") {
            if let Ok(r) = s.parse::<Reference>() {
                prop_assert_eq!(r.to_string(), s);
            }
        }
    }
}
