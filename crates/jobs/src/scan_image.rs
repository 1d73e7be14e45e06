//! Reads an image out of the registry's stores for the scanner: its manifest from the
//! metadata store, its layers from the blob store, streamed through
//! [`wharf_scan::inventory::scan_layers`] (which keeps only what inventories need, in
//! bounded memory). An index is scanned platform by platform.

use std::io::Read;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::io::{StreamReader, SyncIoBridge};
use wharf_blobstore::{BlobStore, ByteStream};
use wharf_metastore::MetaStore;
use wharf_oci::{Digest, Manifest, ManifestKind, Reference, RepoName};
use wharf_scan::inventory::{scan_layers, Inventory};
use wharf_scan::layer::Limits;

/// One image manifest's scan: an image, or one platform of an index.
#[derive(Debug)]
pub struct ImageScan {
    /// The image manifest that was read.
    pub manifest: Digest,
    /// `os/architecture[/variant]`, for an index's images.
    pub platform: Option<String>,
    /// The inventory, or why the image could not be read (a limit, a corrupt layer, a
    /// missing blob): the reason an operator sees.
    pub outcome: Result<Inventory, String>,
}

/// Media types of image configs: anything else is an artifact (a signature, an SBOM),
/// which has no file system to scan.
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// The images the manifest `digest` of `repo` stands for, with their platforms: itself
/// for an image, each platform's image for an index (BuildKit's `unknown/unknown`
/// attestations and artifacts left out), none for an artifact. What [`scan_image`]
/// scans, and what the API and web UI report on.
pub async fn images_in(
    meta: &dyn MetaStore,
    repo: &RepoName,
    digest: &Digest,
) -> anyhow::Result<Vec<(Digest, Option<String>, Manifest)>> {
    let manifest = read_manifest(meta, repo, digest).await?;
    match manifest.kind {
        ManifestKind::Index => {
            let mut images = Vec::new();
            for child in &manifest.manifests {
                // BuildKit's attestations sit in indexes as unknown/unknown images.
                let platform = child.platform.as_ref().map(|p| match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                });
                if platform.as_deref() == Some("unknown/unknown") {
                    continue;
                }
                let image = read_manifest(meta, repo, &child.digest).await?;
                if image.kind != ManifestKind::Image || !is_image(&image) {
                    continue;
                }
                images.push((child.digest.clone(), platform, image));
            }
            Ok(images)
        }
        _ if !is_image(&manifest) => Ok(Vec::new()),
        _ => Ok(vec![(digest.clone(), None, manifest)]),
    }
}

/// Scans the manifest `digest` of `repo`: one [`ImageScan`] per image it stands for
/// (none for an artifact; see [`images_in`]). Errors are for what makes the whole job
/// fail (the manifest is gone, the store is down); a layer that cannot be read fails
/// only its image.
pub async fn scan_image(
    meta: &dyn MetaStore,
    blobs: Arc<dyn BlobStore>,
    repo: &RepoName,
    digest: &Digest,
    limits: &Limits,
) -> anyhow::Result<Vec<ImageScan>> {
    let mut scans = Vec::new();
    for (manifest, platform, image) in images_in(meta, repo, digest).await? {
        let outcome = scan_layers_of(&image, blobs.clone(), limits).await;
        scans.push(ImageScan {
            manifest,
            platform,
            outcome,
        });
    }
    Ok(scans)
}

async fn read_manifest(
    meta: &dyn MetaStore,
    repo: &RepoName,
    digest: &Digest,
) -> anyhow::Result<Manifest> {
    let stored = meta
        .get_manifest(repo, &Reference::Digest(digest.clone()), true)
        .await?
        .with_context(|| format!("{repo}@{digest}: no such manifest (deleted since?)"))?;
    let payload = stored
        .payload
        .context("the metadata store returned no manifest payload")?;
    Manifest::parse(Some(&stored.media_type), &payload)
        .with_context(|| format!("{repo}@{digest}: the stored manifest does not parse"))
}

fn is_image(m: &Manifest) -> bool {
    m.config
        .as_ref()
        .is_some_and(|c| IMAGE_CONFIGS.contains(&c.media_type.as_str()))
}

/// Reads the image's layers, in order, on blocking threads (decompression is CPU work).
async fn scan_layers_of(
    image: &Manifest,
    blobs: Arc<dyn BlobStore>,
    limits: &Limits,
) -> Result<Inventory, String> {
    let handle = tokio::runtime::Handle::current();
    let readers: Vec<LazyBlob> = image
        .layers
        .iter()
        .map(|l| LazyBlob {
            blobs: blobs.clone(),
            digest: l.digest.clone(),
            handle: handle.clone(),
            inner: None,
        })
        .collect();
    let limits = limits.clone();
    tokio::task::spawn_blocking(move || scan_layers(readers, &limits))
        .await
        .map_err(|e| format!("the scan stopped: {e}"))?
        .map_err(|e| e.to_string())
}

/// A layer blob opened when first read, so that an image of many layers does not hold
/// a connection (or a file) open per layer while the first ones are read.
struct LazyBlob {
    blobs: Arc<dyn BlobStore>,
    digest: Digest,
    handle: tokio::runtime::Handle,
    inner: Option<SyncIoBridge<StreamReader<ByteStream, bytes::Bytes>>>,
}

impl Read for LazyBlob {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.inner.is_none() {
            let stream = self
                .handle
                .block_on(self.blobs.read(&self.digest, None))
                .map_err(|e| std::io::Error::other(format!("layer {}: {e}", self.digest)))?;
            self.inner = Some(SyncIoBridge::new_with_handle(
                StreamReader::new(stream),
                self.handle.clone(),
            ));
        }
        self.inner.as_mut().expect("opened above").read(buf)
    }
}
