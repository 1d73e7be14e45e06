//! Turning a `/v2/...` path into a typed endpoint before anything is handled.
//!
//! Repository names have any number of path components, so the path is matched from
//! its end: the last components say which endpoint it is, everything before them is
//! the name. The raw (still percent-encoded) path is used, so `%2F` or `%2e%2e` can
//! never smuggle a separator or a parent directory into a name: the name grammar
//! refuses `%`.

use wharf_oci::{Digest, NameError, Reference, RepoName, UploadId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, Reference),
    Blob(RepoName, Digest),
    UploadStart(RepoName),
    Upload(RepoName, UploadId),
    Referrers(RepoName, Digest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// No endpoint has this shape.
    NotFound,
    Name(NameError),
    Digest(String),
    Reference(NameError),
    UploadId,
}

fn name(parts: &[&str]) -> Result<RepoName, EndpointError> {
    parts.join("/").parse().map_err(EndpointError::Name)
}

fn digest(s: &str) -> Result<Digest, EndpointError> {
    s.parse()
        .map_err(|e: wharf_oci::DigestError| EndpointError::Digest(e.to_string()))
}

impl Endpoint {
    /// Parses the path of a request under `/v2`.
    pub fn parse(path: &str) -> Result<Endpoint, EndpointError> {
        let rest = path.strip_prefix("/v2").ok_or(EndpointError::NotFound)?;
        if rest.is_empty() || rest == "/" {
            return Ok(Endpoint::Base);
        }
        let rest = rest.strip_prefix('/').ok_or(EndpointError::NotFound)?;
        if rest == "_catalog" {
            return Ok(Endpoint::Catalog);
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let n = parts.len();
        let tail = |k: usize| if n > k { &parts[n - k..] } else { &[][..] };
        // Longest shapes first; each needs at least one name component before it.
        match tail(3) {
            ["blobs", "uploads", ""] if n > 3 => {
                return Ok(Endpoint::UploadStart(name(&parts[..n - 3])?))
            }
            ["blobs", "uploads", id] if n > 3 => {
                let id = id.parse().map_err(|_| EndpointError::UploadId)?;
                return Ok(Endpoint::Upload(name(&parts[..n - 3])?, id));
            }
            _ => {}
        }
        match tail(2) {
            ["tags", "list"] if n > 2 => Ok(Endpoint::Tags(name(&parts[..n - 2])?)),
            ["blobs", "uploads"] if n > 2 => Ok(Endpoint::UploadStart(name(&parts[..n - 2])?)),
            ["manifests", r] if n > 2 => {
                let reference = r.parse().map_err(EndpointError::Reference)?;
                Ok(Endpoint::Manifest(name(&parts[..n - 2])?, reference))
            }
            ["blobs", d] if n > 2 => Ok(Endpoint::Blob(name(&parts[..n - 2])?, digest(d)?)),
            ["referrers", d] if n > 2 => {
                Ok(Endpoint::Referrers(name(&parts[..n - 2])?, digest(d)?))
            }
            _ => Err(EndpointError::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn routes_every_endpoint() {
        use Endpoint::*;
        assert_eq!(Endpoint::parse("/v2/"), Ok(Base));
        assert_eq!(Endpoint::parse("/v2"), Ok(Base));
        assert_eq!(Endpoint::parse("/v2/_catalog"), Ok(Catalog));
        assert_eq!(
            Endpoint::parse("/v2/a/b/c/tags/list"),
            Ok(Tags(repo("a/b/c")))
        );
        assert_eq!(
            Endpoint::parse("/v2/lib/app/manifests/latest"),
            Ok(Manifest(repo("lib/app"), "latest".parse().unwrap()))
        );
        assert_eq!(
            Endpoint::parse(&format!("/v2/x/manifests/{D}")),
            Ok(Manifest(repo("x"), D.parse().unwrap()))
        );
        assert_eq!(
            Endpoint::parse(&format!("/v2/x/blobs/{D}")),
            Ok(Blob(repo("x"), D.parse().unwrap()))
        );
        assert_eq!(
            Endpoint::parse("/v2/x/y/blobs/uploads/"),
            Ok(UploadStart(repo("x/y")))
        );
        assert_eq!(
            Endpoint::parse("/v2/x/y/blobs/uploads"),
            Ok(UploadStart(repo("x/y")))
        );
        assert_eq!(
            Endpoint::parse("/v2/x/blobs/uploads/0b6f7c2e-1c1f-4f0e-9a53-3c0f2f0d9a11"),
            Ok(Upload(
                repo("x"),
                "0b6f7c2e-1c1f-4f0e-9a53-3c0f2f0d9a11".parse().unwrap()
            ))
        );
        assert_eq!(
            Endpoint::parse(&format!("/v2/x/referrers/{D}")),
            Ok(Referrers(repo("x"), D.parse().unwrap()))
        );
    }

    #[test]
    fn names_may_contain_endpoint_words() {
        assert_eq!(
            Endpoint::parse("/v2/blobs/manifests/tags/manifests/v1"),
            Ok(Endpoint::Manifest(
                repo("blobs/manifests/tags"),
                "v1".parse().unwrap()
            ))
        );
        assert_eq!(
            Endpoint::parse("/v2/tags/list/tags/list"),
            Ok(Endpoint::Tags(repo("tags/list")))
        );
    }

    #[test]
    fn refuses_bad_paths() {
        assert_eq!(
            Endpoint::parse("/v2/tags/list"),
            Err(EndpointError::NotFound)
        );
        assert_eq!(
            Endpoint::parse("/v2/x/unknown"),
            Err(EndpointError::NotFound)
        );
        assert!(matches!(
            Endpoint::parse("/v2/../etc/manifests/x"),
            Err(EndpointError::Name(_))
        ));
        assert!(matches!(
            Endpoint::parse("/v2/a%2Fb/manifests/x"),
            Err(EndpointError::Name(_))
        ));
        assert!(matches!(
            Endpoint::parse("/v2/a//b/manifests/x"),
            Err(EndpointError::Name(_))
        ));
        assert!(matches!(
            Endpoint::parse("/v2/a/blobs/sha256:zz"),
            Err(EndpointError::Digest(_))
        ));
        assert!(matches!(
            Endpoint::parse("/v2/a/manifests/-bad"),
            Err(EndpointError::Reference(_))
        ));
        assert_eq!(
            Endpoint::parse("/v2/a/blobs/uploads/a.b"),
            Err(EndpointError::UploadId)
        );
        assert_eq!(
            Endpoint::parse("/v2/a/blobs/uploads/../x"),
            Err(EndpointError::NotFound)
        );
    }
}
