//! Parsing and validating the manifests a registry stores: OCI image manifest and index,
//! Docker schema 2 manifest and manifest list.
//!
//! A registry must not be too strict (clients put unknown fields and annotations
//! everywhere) nor too lax (every digest it will later follow must be valid). We parse
//! only what the registry acts on and keep the original bytes verbatim: the stored
//! manifest is exactly what was pushed, so its digest never changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A content descriptor. Sizes are validated non-negative by their type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// Points at a config and layers (blobs).
    Image,
    /// Points at other manifests.
    Index,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: &'static str,
    pub kind: ManifestKind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest media type {0:?} is not supported (supported: OCI image manifest and index, Docker schema 2 manifest and manifest list)")]
    UnsupportedMediaType(String),
    #[error("Content-Type {header:?} does not match the manifest's mediaType {field:?}")]
    MediaTypeMismatch { header: String, field: String },
    #[error("schemaVersion must be 2, found {0}")]
    SchemaVersion(i64),
    #[error("manifest has neither layers nor manifests, so its type cannot be told")]
    UnknownShape,
    #[error("{0}")]
    Invalid(String),
}

/// The JSON fields a registry acts on; everything else is carried along untouched.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

fn canonical(media_type: &str) -> Option<&'static str> {
    media::SUPPORTED_MANIFESTS
        .iter()
        .copied()
        .find(|m| *m == media_type)
}

/// The media type named by a `Content-Type` header, without parameters.
pub fn bare_media_type(header: &str) -> &str {
    header.split(';').next().unwrap_or("").trim()
}

impl Manifest {
    /// Parses a pushed manifest. `content_type` is the request's `Content-Type`, if any.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Manifest, ManifestError> {
        let header = content_type.map(bare_media_type).filter(|h| !h.is_empty());
        if let Some(h) = header {
            if h == media::DOCKER_SCHEMA1 || h == media::DOCKER_SCHEMA1_SIGNED {
                return Err(ManifestError::UnsupportedMediaType(h.to_string()));
            }
        }
        let raw: RawManifest =
            serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
        match raw.schema_version {
            Some(2) => {}
            Some(v) => return Err(ManifestError::SchemaVersion(v)),
            None => return Err(ManifestError::Invalid("schemaVersion is missing".into())),
        }

        // Generic types some clients send when they do not know better: sniff the body.
        let header =
            header.filter(|h| !matches!(*h, "application/json" | "application/octet-stream"));
        let media_type = match (&raw.media_type, header) {
            (Some(field), Some(h)) if field != h => {
                return Err(ManifestError::MediaTypeMismatch {
                    header: h.to_string(),
                    field: field.clone(),
                })
            }
            (Some(field), _) => canonical(field)
                .ok_or_else(|| ManifestError::UnsupportedMediaType(field.clone()))?,
            (None, Some(h)) => {
                canonical(h).ok_or_else(|| ManifestError::UnsupportedMediaType(h.to_string()))?
            }
            (None, None) => match (&raw.manifests, &raw.layers, &raw.config) {
                (Some(_), None, None) => media::OCI_INDEX,
                (None, Some(_), Some(_)) => media::OCI_MANIFEST,
                _ => return Err(ManifestError::UnknownShape),
            },
        };
        if media_type.starts_with("application/vnd.docker") && raw.media_type.is_none() {
            return Err(ManifestError::Invalid(
                "Docker manifests must carry their mediaType field".into(),
            ));
        }

        let kind = if media_type == media::OCI_INDEX || media_type == media::DOCKER_MANIFEST_LIST {
            ManifestKind::Index
        } else {
            ManifestKind::Image
        };
        match kind {
            ManifestKind::Image => {
                if raw.config.is_none() {
                    return Err(ManifestError::Invalid(
                        "image manifest has no config".into(),
                    ));
                }
                if raw.layers.is_none() {
                    return Err(ManifestError::Invalid(
                        "image manifest has no layers".into(),
                    ));
                }
                if raw.manifests.is_some() {
                    return Err(ManifestError::Invalid(
                        "image manifest must not have a manifests field".into(),
                    ));
                }
            }
            ManifestKind::Index => {
                if raw.manifests.is_none() {
                    return Err(ManifestError::Invalid(
                        "index has no manifests field".into(),
                    ));
                }
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(ManifestError::Invalid(
                        "index must not have config or layers".into(),
                    ));
                }
            }
        }
        Ok(Manifest {
            media_type,
            kind,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations,
        })
    }

    /// Blobs this manifest needs in its repository. Foreign layers (with `urls`) live
    /// elsewhere by design and are not required.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Digest> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|l| l.urls.is_empty()))
            .map(|d| &d.digest)
    }

    /// Manifests an index needs in its repository.
    pub fn required_manifests(&self) -> impl Iterator<Item = &Digest> {
        self.manifests.iter().map(|d| &d.digest)
    }

    /// The artifact type the referrers API reports: `artifactType`, or for an image
    /// manifest without one, its config's media type.
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type.as_deref().or_else(|| match self.kind {
            ManifestKind::Image => self.config.as_ref().map(|c| c.media_type.as_str()),
            ManifestKind::Index => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":10}}]{extra}}}"#
        )
    }

    #[test]
    fn parses_oci_image_with_subject() {
        let body = image(&format!(
            r#","artifactType":"application/x-sig","subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":5}}"#
        ));
        let m = Manifest::parse(Some(media::OCI_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(m.subject.unwrap().digest.to_string(), D1);
        assert_eq!(m.artifact_type.as_deref(), Some("application/x-sig"));
    }

    #[test]
    fn content_type_must_match_media_type_field() {
        let err = Manifest::parse(Some(media::DOCKER_MANIFEST), image("").as_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::MediaTypeMismatch { .. }));
    }

    #[test]
    fn sniffs_index_without_media_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{D1}","size":3,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            media::OCI_MANIFEST
        );
        let m = Manifest::parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.media_type, media::OCI_INDEX);
        assert_eq!(m.required_manifests().count(), 1);
    }

    #[test]
    fn rejects_bad_manifests() {
        let cases = [
            "not json",
            r#"{"schemaVersion":1}"#,
            r#"{"schemaVersion":2}"#,
            r#"{"schemaVersion":2,"mediaType":"application/x-unknown","layers":[]}"#,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"x","digest":"sha256:bad","size":1}]}"#,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"x","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":-1}]}"#,
        ];
        for body in cases {
            assert!(
                Manifest::parse(None, body.as_bytes()).is_err(),
                "{body} should fail"
            );
        }
        assert!(matches!(
            Manifest::parse(Some(media::DOCKER_SCHEMA1_SIGNED), b"{}"),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::parse(None, &body);
        }

        #[test]
        fn parsing_mutated_manifests_never_panics(cut in 0usize..400, byte in any::<u8>()) {
            let mut body = image("").into_bytes();
            let i = cut % body.len();
            body[i] = byte;
            let _ = Manifest::parse(Some(media::OCI_MANIFEST), &body);
        }
    }
}
