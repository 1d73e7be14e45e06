//! An image's SBOM: the SPDX 2.3 document of its stored inventory (served by the API and
//! the web UI), and the referrer that attaches it to the image in its repository when
//! the repository's policy says `attach_sbom`.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use serde_json::Value;
use wharf_blobstore::BlobStore;
use wharf_metastore::MetaStore;
use wharf_oci::{Digest, Reference, RepoName};
use wharf_registry::{Limits, Registry};
use wharf_scan::sbom;

/// Where SBOMs say the registry is: its host (`registry.example:5000`, for the images'
/// purls) and its base URL (`https://registry.example:5000`, for document namespaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAddress {
    pub host: String,
    pub base_url: String,
}

/// `localhost`, for tools and tests; `wharf serve` uses its `public_url`.
impl Default for RegistryAddress {
    fn default() -> Self {
        RegistryAddress {
            host: "localhost".into(),
            base_url: "http://localhost".into(),
        }
    }
}

impl RegistryAddress {
    /// From a base URL as clients use it; `None` if it names no host.
    pub fn from_url(url: &str) -> Option<RegistryAddress> {
        let trimmed = url.trim_end_matches('/');
        let host = trimmed.split_once("://")?.1.split('/').next()?;
        (!host.is_empty()).then(|| RegistryAddress {
            host: host.to_string(),
            base_url: trimmed.to_string(),
        })
    }
}

/// `created` as SPDX wants it: RFC 3339 UTC to the second.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The SPDX document of `image` (an image manifest's digest) as `repo:reference`;
/// `None` if it has no successful scan.
pub async fn document(
    meta: &dyn MetaStore,
    address: &RegistryAddress,
    repo: &RepoName,
    reference: &str,
    image: &str,
) -> anyhow::Result<Option<Value>> {
    let Some(inventory) = meta.inventory(image).await? else {
        return Ok(None);
    };
    if inventory.status != "scanned" {
        return Ok(None);
    }
    let packages: Vec<wharf_scan::Package> = inventory
        .packages
        .iter()
        .map(|(_, p)| wharf_scan::Package {
            ecosystem: p.ecosystem.clone(),
            name: p.name.clone(),
            version: p.version.clone(),
            match_name: p.match_name.clone(),
            match_version: p.match_version.clone(),
            purl: p.purl.clone(),
            location: p.location.clone(),
        })
        .collect();
    let os = os_name(inventory.os_json.as_deref());
    let subject = sbom::SbomSubject {
        registry: &address.host,
        repository: repo.as_str(),
        reference,
        manifest_digest: image,
        os: os.as_deref(),
    };
    Ok(Some(sbom::spdx(
        &subject,
        &packages,
        &rfc3339(inventory.scanned_at_ms),
        env!("CARGO_PKG_VERSION"),
        &address.base_url,
    )))
}

/// The OS's pretty name from an inventory's `os` JSON, else its ecosystem.
pub fn os_name(os_json: Option<&str>) -> Option<String> {
    let os: Value = serde_json::from_str(os_json?).ok()?;
    os["pretty_name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| os["ecosystem"].as_str().map(str::to_string))
}

/// Pushes `image`'s SBOM into `repo` as a referrer of it (the SPDX blob, the empty
/// config, and an artifact manifest whose `subject` is the image), records it with the
/// inventory, and removes `previous` (the referrer an earlier scan attached, read
/// before this scan's inventory replaced it) if it differs.
/// Returns the referrer's digest; `None` if the image has no successful scan.
pub async fn attach(
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    address: &RegistryAddress,
    repo: &RepoName,
    image: &Digest,
    previous: Option<String>,
) -> anyhow::Result<Option<Digest>> {
    let image_text = image.to_string();
    let Some(doc) = document(meta.as_ref(), address, repo, &image_text, &image_text).await? else {
        return Ok(None);
    };
    let subject = meta
        .get_manifest(repo, &Reference::Digest(image.clone()), false)
        .await?
        .with_context(|| format!("{repo}@{image} is no longer in the repository"))?;
    let registry = Registry::new(meta.clone(), blobs, Limits::default());

    let body = Bytes::from(serde_json::to_vec_pretty(&doc)?);
    let sbom_digest = Digest::sha256_of(&body);
    push_blob(&registry, repo, &sbom_digest, body.clone()).await?;
    let empty = Bytes::from_static(b"{}");
    push_blob(&registry, repo, &Digest::sha256_of(&empty), empty).await?;
    let created = doc["creationInfo"]["created"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (manifest, media_type) = sbom::referrer_manifest(
        &sbom_digest.to_string(),
        body.len() as u64,
        &image_text,
        subject.size,
        &subject.media_type,
        &created,
    );
    let manifest_digest = Digest::sha256_of(&manifest);
    registry
        .put_manifest(
            repo,
            &Reference::Digest(manifest_digest.clone()),
            Some(&media_type),
            Bytes::from(manifest),
        )
        .await
        .with_context(|| format!("pushing the SBOM referrer of {repo}@{image}"))?;
    meta.set_sbom_digest(&image_text, &manifest_digest.to_string())
        .await?;
    // A re-scan's document differs (its creation time at least): the old referrer goes,
    // so that the image lists one SBOM of wharf's. Best effort: it may be gone already
    // or belong to another repository holding the same image.
    if let Some(old) = previous.and_then(|d| d.parse::<Digest>().ok()) {
        if old != manifest_digest {
            let _ = registry
                .delete_manifest(repo, &Reference::Digest(old))
                .await;
        }
    }
    Ok(Some(manifest_digest))
}

async fn push_blob(
    registry: &Registry,
    repo: &RepoName,
    digest: &Digest,
    body: Bytes,
) -> anyhow::Result<()> {
    let len = body.len() as u64;
    let stream: wharf_blobstore::ByteStream =
        Box::pin(futures_util::stream::once(async move { Ok(body) }));
    registry
        .upload_whole(repo, digest, stream, Some(len))
        .await
        .with_context(|| format!("pushing blob {digest} to {repo}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_base_urls() {
        assert_eq!(
            RegistryAddress::from_url("https://registry.example:5000/"),
            Some(RegistryAddress {
                host: "registry.example:5000".into(),
                base_url: "https://registry.example:5000".into(),
            })
        );
        assert_eq!(RegistryAddress::from_url("registry.example"), None);
        assert_eq!(RegistryAddress::from_url("https://"), None);
    }

    #[test]
    fn creation_times_are_rfc3339_seconds() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20Z");
    }
}
