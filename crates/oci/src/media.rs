//! Media types wharf understands.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 is deprecated and unsigned pushes of it are unsafe; refused.
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// Manifest media types that may be stored.
pub const SUPPORTED_MANIFESTS: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Whether an `Accept` header value admits `media_type`. No header, or `*/*`, admits all.
pub fn accepts(accept_values: &[&str], media_type: &str) -> bool {
    if accept_values.is_empty() {
        return true;
    }
    accept_values.iter().any(|v| {
        v.split(',').any(|item| {
            let t = item.split(';').next().unwrap_or("").trim();
            t == media_type || t == "*/*" || t == "application/*"
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matching() {
        assert!(accepts(&[], OCI_INDEX));
        assert!(accepts(&["*/*"], OCI_INDEX));
        assert!(accepts(
            &["application/vnd.docker.distribution.manifest.v2+json; q=0.5, application/vnd.oci.image.index.v1+json"],
            OCI_INDEX
        ));
        assert!(!accepts(&[DOCKER_MANIFEST], OCI_INDEX));
    }
}
