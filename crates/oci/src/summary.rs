//! What a list of images shows of each manifest without opening it: its total size and
//! its platforms. An index names its platforms itself; a single image's platform is in
//! its configuration blob, which the caller reads (this crate does no I/O) and passes
//! in. Stored per manifest from schema level 3 on (`manifest_summaries`), so a page of
//! tags reads no blobs.

use crate::manifest::{Manifest, ManifestKind, Platform};
use crate::Descriptor;

/// Image configurations larger than this are not read for their platform.
pub const CONFIG_LIMIT: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSummary {
    /// An image's layers and configuration; an index's manifests.
    pub size: u64,
    /// "linux/amd64, linux/arm64/v8"; `None` when they cannot be told (an image whose
    /// configuration is missing or unreadable), `Some("")` when there are none (an
    /// artifact, or an index of attestations only).
    pub platforms: Option<String>,
}

/// The configuration blob `summarize` needs to name a single image's platform, if any.
pub fn config_to_read(m: &Manifest) -> Option<&Descriptor> {
    match m.kind {
        ManifestKind::Index => None,
        _ => m
            .config
            .as_ref()
            .filter(|c| is_image_config(&c.media_type) && c.size <= CONFIG_LIMIT),
    }
}

/// The summary of `m`; `config` is the blob [`config_to_read`] named, if it was read.
pub fn summarize(m: &Manifest, config: Option<&[u8]>) -> ManifestSummary {
    match m.kind {
        ManifestKind::Index => {
            let platforms: Vec<String> = m
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(platform_name)
                .collect();
            ManifestSummary {
                size: m.manifests.iter().map(|d| d.size).sum(),
                platforms: Some(platforms.join(", ")),
            }
        }
        _ => ManifestSummary {
            size: m.layers.iter().map(|d| d.size).sum::<u64>()
                + m.config.as_ref().map_or(0, |c| c.size),
            platforms: match config_to_read(m) {
                None => Some(String::new()),
                Some(_) => config.and_then(config_platform),
            },
        },
    }
}

/// "os/architecture[/variant]" from an image configuration.
pub fn config_platform(config: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Fields {
        os: Option<String>,
        architecture: Option<String>,
        variant: Option<String>,
    }
    let f: Fields = serde_json::from_slice(config).ok()?;
    let mut name = format!(
        "{}/{}",
        f.os.as_deref().unwrap_or("?"),
        f.architecture.as_deref().unwrap_or("?")
    );
    if let Some(v) = f.variant {
        name = format!("{name}/{v}");
    }
    Some(name)
}

pub fn is_image_config(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.config.v1+json"
        || media_type == "application/vnd.docker.container.image.v1+json"
}

pub fn platform_name(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    fn image(config_type: &str) -> Manifest {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"{config_type}","digest":"{CONFIG}","size":100}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{CONFIG}","size":900}}]}}"#
        );
        Manifest::parse(None, body.as_bytes()).unwrap()
    }

    #[test]
    fn an_image_takes_its_platform_from_its_configuration() {
        let m = image("application/vnd.oci.image.config.v1+json");
        assert_eq!(config_to_read(&m).unwrap().digest.to_string(), CONFIG);
        let s = summarize(
            &m,
            Some(br#"{"os":"linux","architecture":"arm64","variant":"v8"}"#),
        );
        assert_eq!(s.size, 1000);
        assert_eq!(s.platforms.as_deref(), Some("linux/arm64/v8"));
        // Unread or unreadable: unknown, not empty.
        assert_eq!(summarize(&m, None).platforms, None);
        assert_eq!(summarize(&m, Some(b"not json")).platforms, None);
    }

    #[test]
    fn an_artifact_has_no_platform_and_needs_no_blob() {
        let m = image("application/vnd.example.sbom+json");
        assert!(config_to_read(&m).is_none());
        assert_eq!(summarize(&m, None).platforms.as_deref(), Some(""));
    }

    #[test]
    fn an_index_names_its_platforms_but_not_its_attestations() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{CONFIG}","size":10,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{CONFIG}","size":20,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{CONFIG}","size":5,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#
        );
        let m = Manifest::parse(None, body.as_bytes()).unwrap();
        let s = summarize(&m, None);
        assert_eq!(s.size, 35);
        assert_eq!(s.platforms.as_deref(), Some("linux/amd64, linux/arm/v7"));
    }
}
