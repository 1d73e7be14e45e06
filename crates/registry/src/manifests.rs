//! Pushing, pulling and deleting manifests; the referrers API.

use bytes::Bytes;
use serde::Serialize;
use wharf_metastore::{NewManifest, StoredManifest};
use wharf_oci::manifest::ManifestKind;
use wharf_oci::summary::{self, ManifestSummary};
use wharf_oci::{media, Digest, Hasher, Manifest, Reference, RepoName, Tag};

use crate::error::{RegistryError, Result};
use crate::Registry;

/// The result of a manifest push.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    pub digest: Digest,
    /// The `subject` the manifest names, for the `OCI-Subject` response header.
    pub subject: Option<Digest>,
}

/// A manifest to send to a client.
#[derive(Debug, Clone)]
pub struct ManifestContent {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Absent for HEAD requests.
    pub payload: Option<Bytes>,
}

impl From<StoredManifest> for ManifestContent {
    fn from(m: StoredManifest) -> Self {
        ManifestContent {
            digest: m.digest,
            media_type: m.media_type,
            size: m.size,
            payload: m.payload,
        }
    }
}

/// The platform served to a client that cannot read an index.
const DEFAULT_PLATFORM: (&str, &str) = ("linux", "amd64");

impl Registry {
    /// Stores a manifest pushed to `reference` (a tag or its own digest).
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PushedManifest> {
        let size = body.len() as u64;
        if size > self.limits.max_manifest_bytes {
            return Err(RegistryError::ManifestTooLarge {
                size,
                limit: self.limits.max_manifest_bytes,
            });
        }
        let digest = match reference {
            Reference::Digest(expected) => {
                let mut h = Hasher::new(expected.algorithm());
                h.update(&body);
                let actual = h.finish();
                if &actual != expected {
                    return Err(RegistryError::DigestMismatch {
                        expected: expected.clone(),
                        actual,
                    });
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(&body),
        };
        let manifest = Manifest::parse(content_type, &body)
            .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        let annotations_json = manifest
            .annotations
            .as_ref()
            .map(|a| serde_json::to_string(a).expect("string maps serialise"));
        let scan = self.scan_on_push(repo, &digest, &manifest).await?;
        let mut record = NewManifest {
            digest: digest.clone(),
            media_type: manifest.media_type.to_string(),
            payload: body,
            artifact_type: manifest.effective_artifact_type().map(str::to_string),
            subject: manifest.subject.as_ref().map(|s| s.digest.clone()),
            annotations_json,
            required_blobs: manifest.required_blobs().cloned().collect(),
            required_manifests: manifest.required_manifests().cloned().collect(),
            scan,
            summary: Some(self.summary_of(&manifest).await),
            references_on_demand: false,
        };
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        match self.meta.put_manifest(repo, &record, tag).await {
            // Schema level 3's tables went (a rollback under way) since the policy was
            // read: the push goes on without its scan and summary, as on an older schema.
            Err(e) if record.uses_level_3() && crate::scan_policy::is_missing_table(&e) => {
                self.policies.warn_missing(&e);
                record.scan = None;
                record.summary = None;
                self.meta.put_manifest(repo, &record, tag).await?;
            }
            other => other?,
        }
        Ok(PushedManifest {
            digest,
            subject: record.subject,
        })
    }

    /// What a list of tags shows of `manifest`, stored with it. A single image's
    /// platform is read from its configuration blob; when that cannot be read (a proxy
    /// fetches blobs on demand) it is stored as unknown, and the list reads it when
    /// shown.
    async fn summary_of(&self, manifest: &Manifest) -> ManifestSummary {
        let config = match summary::config_to_read(manifest) {
            None => None,
            Some(c) => {
                wharf_blobstore::read_small(self.blobs.as_ref(), &c.digest, summary::CONFIG_LIMIT)
                    .await
                    .ok()
            }
        };
        summary::summarize(manifest, config.as_deref())
    }

    /// Stores a manifest a pull-through proxy fetched from its upstream (and points
    /// `tag` at it): verified against `expected` when given, its references recorded
    /// but not required (the proxy fetches them when they are asked for), and its scan
    /// queued as a push's would be. Returns the digest and the bytes the image takes
    /// (the manifest and the blobs it names), for retention.
    pub async fn put_proxied_manifest(
        &self,
        repo: &RepoName,
        tag: Option<&Tag>,
        expected: Option<&Digest>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(Digest, u64)> {
        let size = body.len() as u64;
        if size > self.limits.max_manifest_bytes {
            return Err(RegistryError::ManifestTooLarge {
                size,
                limit: self.limits.max_manifest_bytes,
            });
        }
        let digest = match expected {
            Some(e) => {
                let mut h = Hasher::new(e.algorithm());
                h.update(&body);
                let actual = h.finish();
                if &actual != e {
                    return Err(RegistryError::DigestMismatch {
                        expected: e.clone(),
                        actual,
                    });
                }
                actual
            }
            None => Digest::sha256_of(&body),
        };
        let manifest = Manifest::parse(content_type, &body)
            .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        let bytes = size
            + manifest
                .config
                .iter()
                .chain(manifest.layers.iter())
                .map(|d| d.size)
                .sum::<u64>();
        let scan = self.scan_on_push(repo, &digest, &manifest).await?;
        let mut record = NewManifest {
            digest: digest.clone(),
            media_type: manifest.media_type.to_string(),
            payload: body,
            artifact_type: manifest.effective_artifact_type().map(str::to_string),
            subject: manifest.subject.as_ref().map(|s| s.digest.clone()),
            annotations_json: manifest
                .annotations
                .as_ref()
                .map(|a| serde_json::to_string(a).expect("string maps serialise")),
            required_blobs: manifest.required_blobs().cloned().collect(),
            required_manifests: manifest.required_manifests().cloned().collect(),
            scan,
            summary: Some(self.summary_of(&manifest).await),
            references_on_demand: true,
        };
        match self.meta.put_manifest(repo, &record, tag).await {
            Err(e) if record.uses_level_3() && crate::scan_policy::is_missing_table(&e) => {
                self.policies.warn_missing(&e);
                record.scan = None;
                record.summary = None;
                self.meta.put_manifest(repo, &record, tag).await?;
            }
            other => other?,
        }
        Ok((digest, bytes))
    }

    /// A manifest in a media type the client accepts. A client that cannot read an
    /// index or manifest list gets the default platform's manifest from it, as Docker
    /// clients of old expect; otherwise the manifest is reported unknown.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &[&str],
        with_payload: bool,
    ) -> Result<ManifestContent> {
        let unknown = || RegistryError::ManifestUnknown(format!("{repo}:{reference}"));
        let stored = self
            .meta
            .get_manifest(repo, reference, with_payload)
            .await?
            .ok_or_else(unknown)?;
        // As the reference registry: Docker schema 2 manifests are always served, and so
        // is anything asked for by digest except OCI types the client cannot read (the
        // client verifies a digest, so substituting another manifest would be wrong).
        let by_tag = matches!(reference, Reference::Tag(_));
        let always = stored.media_type == media::DOCKER_MANIFEST
            || (!by_tag && stored.media_type == media::DOCKER_MANIFEST_LIST);
        if always || media::accepts(accept, &stored.media_type) {
            self.check_pull_of(repo, &stored).await?;
            return Ok(stored.into());
        }
        let is_index = stored.media_type == media::OCI_INDEX
            || stored.media_type == media::DOCKER_MANIFEST_LIST;
        if !is_index || !by_tag {
            return Err(RegistryError::ManifestUnknown(format!(
                "{repo}:{reference} exists only as {}, which the request's Accept header excludes",
                stored.media_type
            )));
        }
        let payload = match stored.payload {
            Some(p) => p,
            None => self
                .meta
                .get_manifest(repo, reference, true)
                .await?
                .and_then(|m| m.payload)
                .ok_or_else(unknown)?,
        };
        let index = Manifest::parse(Some(&stored.media_type), &payload)
            .map_err(|e| RegistryError::Storage(format!("stored index does not parse: {e}")))?;
        debug_assert_eq!(index.kind, ManifestKind::Index);
        let child = index
            .manifests
            .iter()
            .find(|d| {
                d.platform.as_ref().is_some_and(|p| (p.os.as_str(), p.architecture.as_str()) == DEFAULT_PLATFORM)
                    && media::accepts(accept, &d.media_type)
            })
            .ok_or_else(|| {
                RegistryError::ManifestUnknown(format!(
                    "{repo}:{reference} is an index and the request accepts no {}/{} manifest in it",
                    DEFAULT_PLATFORM.0, DEFAULT_PLATFORM.1
                ))
            })?;
        let m = self
            .meta
            .get_manifest(repo, &Reference::Digest(child.digest.clone()), with_payload)
            .await?
            .ok_or_else(unknown)?;
        self.check_pull_of(repo, &m).await?;
        Ok(m.into())
    }

    /// The pull policy's check of a manifest about to be served. An index is always
    /// served: it has no findings of its own, and each platform's manifest, which the
    /// client fetches next, is checked on its own (a client that wants one platform is
    /// not refused for another's vulnerabilities).
    async fn check_pull_of(&self, repo: &RepoName, m: &StoredManifest) -> Result<()> {
        if m.media_type == media::OCI_INDEX || m.media_type == media::DOCKER_MANIFEST_LIST {
            return Ok(());
        }
        self.check_pull(repo, &m.digest, &m.media_type, m.payload.as_deref())
            .await
    }

    /// Deletes a tag, or a manifest (and its tags) by digest.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let found = match reference {
            Reference::Tag(t) => self.meta.delete_tag(repo, t).await?,
            Reference::Digest(d) => self.meta.delete_manifest(repo, d).await?,
        };
        if found {
            Ok(())
        } else {
            Err(RegistryError::ManifestUnknown(format!(
                "{repo}:{reference}"
            )))
        }
    }

    /// The referrers index for `subject`, optionally filtered by artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Bytes> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Index {
            schema_version: u32,
            media_type: &'static str,
            manifests: Vec<Entry>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Entry {
            media_type: String,
            digest: Digest,
            size: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            artifact_type: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            annotations: Option<serde_json::Value>,
        }
        let rows = self.meta.referrers(repo, subject, artifact_type).await?;
        let index = Index {
            schema_version: 2,
            media_type: media::OCI_INDEX,
            manifests: rows
                .into_iter()
                .map(|r| Entry {
                    media_type: r.media_type,
                    digest: r.digest,
                    size: r.size,
                    artifact_type: r.artifact_type,
                    annotations: r
                        .annotations_json
                        .and_then(|a| serde_json::from_str(&a).ok()),
                })
                .collect(),
        };
        Ok(Bytes::from(
            serde_json::to_vec(&index).expect("index serialises"),
        ))
    }
}
