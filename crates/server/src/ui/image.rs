//! What the UI reads out of manifests and image configurations: sizes, platforms,
//! layers and the history that built them. Configurations are content-addressed, so
//! once read they are cached for good (bounded in count).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::StreamExt;
use serde_json::Value;
use wharf_metastore::browse::TagDetail;
use wharf_oci::manifest::Manifest;
use wharf_oci::summary::{self, ManifestSummary};
use wharf_oci::{media, Digest};

use crate::AppState;

/// Configurations larger than this are not shown (real ones are a few KiB).
const CONFIG_LIMIT: usize = 1 << 20;
const CACHE_ENTRIES: usize = 4096;

/// The parts of an image configuration the UI shows.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub platform: String,
    pub created: String,
    pub entrypoint: String,
    pub cmd: String,
    pub working_dir: String,
    pub user: String,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub history: Vec<HistoryStep>,
    pub pretty: String,
}

#[derive(Debug, Clone)]
pub struct HistoryStep {
    pub created: String,
    pub created_by: String,
    pub empty_layer: bool,
}

fn words(v: &Value) -> String {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|w| w.as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        Value::String(s) => s.clone(),
        _ => "—".into(),
    }
}

fn text(v: &Value) -> String {
    v.as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("—")
        .to_string()
}

pub fn parse_config(bytes: &[u8]) -> Option<ImageConfig> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let c = &v["config"];
    let mut platform = format!(
        "{}/{}",
        v["os"].as_str().unwrap_or("?"),
        v["architecture"].as_str().unwrap_or("?")
    );
    if let Some(variant) = v["variant"].as_str() {
        platform = format!("{platform}/{variant}");
    }
    Some(ImageConfig {
        platform,
        created: text(&v["created"]),
        entrypoint: words(&c["Entrypoint"]),
        cmd: words(&c["Cmd"]),
        working_dir: text(&c["WorkingDir"]),
        user: text(&c["User"]),
        env: c["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        labels: c["Labels"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        history: v["history"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|h| HistoryStep {
                        created: text(&h["created"]),
                        created_by: text(&h["created_by"]),
                        empty_layer: h["empty_layer"].as_bool().unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        pretty: serde_json::to_string_pretty(&v).unwrap_or_default(),
    })
}

fn cache() -> &'static Mutex<HashMap<Digest, Arc<ImageConfig>>> {
    static CACHE: OnceLock<Mutex<HashMap<Digest, Arc<ImageConfig>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The image configuration with this digest, read from the blob store once.
pub async fn config(st: &AppState, digest: &Digest) -> Option<Arc<ImageConfig>> {
    if let Some(c) = cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(digest)
    {
        return Some(c.clone());
    }
    let mut stream = st.registry.blobs().read(digest, None).await.ok()?;
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.ok()?);
        if buf.len() > CONFIG_LIMIT {
            return None;
        }
    }
    let parsed = Arc::new(parse_config(&buf)?);
    let mut c = cache().lock().unwrap_or_else(|p| p.into_inner());
    if c.len() >= CACHE_ENTRIES {
        c.clear();
    }
    c.insert(digest.clone(), parsed.clone());
    Some(parsed)
}

/// A short name for a manifest media type.
pub fn kind_name(media_type: &str) -> &'static str {
    match media_type {
        media::OCI_MANIFEST => "OCI image",
        media::OCI_INDEX => "OCI index",
        media::DOCKER_MANIFEST => "Docker image",
        media::DOCKER_MANIFEST_LIST => "Docker manifest list",
        _ => "other",
    }
}

/// What a tag row shows of its manifest: total size and platforms.
pub struct Summary {
    pub size: u64,
    pub platforms: String,
    pub kind: &'static str,
}

impl Summary {
    fn new(media_type: &str, s: ManifestSummary, platforms: Option<String>) -> Summary {
        Summary {
            size: s.size,
            platforms: platforms
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "—".into()),
            kind: kind_name(media_type),
        }
    }
}

/// A tag row's summary: as stored with the manifest (from 1.2.0 on, no blob read), else
/// read now: for a manifest an older release stored before the `manifestsummaries`
/// background migration reached it, or an image whose configuration could not be read
/// when it was stored (a proxy fetches blobs on demand).
pub async fn tag_summary(st: &AppState, t: &TagDetail) -> Summary {
    match &t.summary {
        Some(s) if s.platforms.is_some() => {
            Summary::new(&t.media_type, s.clone(), s.platforms.clone())
        }
        _ => summarize(st, &t.media_type, &t.payload).await,
    }
}

/// A manifest's summary, its image configuration read through the cache.
pub async fn summarize(st: &AppState, media_type: &str, payload: &[u8]) -> Summary {
    let Ok(m) = Manifest::parse(Some(media_type), payload) else {
        return Summary {
            size: payload.len() as u64,
            platforms: "—".into(),
            kind: kind_name(media_type),
        };
    };
    let s = summary::summarize(&m, None);
    let platforms = match summary::config_to_read(&m) {
        Some(c) => config(st, &c.digest).await.map(|c| c.platform.clone()),
        None => s.platforms.clone(),
    };
    Summary::new(media_type, s, platforms)
}

pub use summary::{is_image_config, platform_name};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_fields_are_read() {
        let c = parse_config(br#"{"architecture":"arm64","os":"linux","variant":"v8","created":"2026-01-02T03:04:05Z",
            "config":{"Env":["PATH=/bin"],"Entrypoint":["/app","--serve"],"Labels":{"a":"<b>"}},
            "history":[{"created_by":"COPY app /app"},{"created_by":"ENV x","empty_layer":true}]}"#).unwrap();
        assert_eq!(c.platform, "linux/arm64/v8");
        assert_eq!(c.entrypoint, "/app --serve");
        assert_eq!(c.cmd, "—");
        assert_eq!(c.labels["a"], "<b>");
        assert_eq!(c.history.len(), 2);
        assert!(c.history[1].empty_layer);
    }
}
