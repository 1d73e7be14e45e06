//! The online update of the vulnerability database: download every configured
//! ecosystem's OSV archive ([`crate::vulndb_fetch`]), import them as a new database
//! version ([`crate::vulndb::import_archives_with_validators`]), then match every
//! distinct package again ([`crate::vulndb::rematch`]).
//!
//! - **Nothing changed**: when the current version came from the same base URL with
//!   the same ecosystems, each archive is asked for only if changed (its validators are
//!   kept with the version). If every ecosystem answers `304 Not Modified`, nothing is
//!   imported or matched, and the outcome says so.
//! - **Some changed**: an import replaces the whole advisory set, so the ecosystems
//!   that did not change are downloaded again in full and the import holds them all.
//! - **A failure** (a download or the import) leaves the current database as it is and
//!   is recorded as a `failed` version whose error names the ecosystem, the URL and
//!   the cause: `wharf vulndb status`, the API and the cluster status show it.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;
use wharf_metastore::MetaStore;

use crate::vulndb::{self, ImportSummary, Log, RematchSummary};
use crate::vulndb_fetch::{self, FetchConfig, Fetched, Validators, ValidatorsByEcosystem};

/// The ecosystems downloaded by default: those the scanner matches (OSV's folder
/// names; the OS ecosystems hold every release, `Debian:12` records are in `Debian`).
pub const DEFAULT_ECOSYSTEMS: &[&str] = &[
    "AlmaLinux",
    "Alpine",
    "Debian",
    "Go",
    "Maven",
    "PyPI",
    "Red Hat",
    "Rocky Linux",
    "RubyGems",
    "Ubuntu",
    "crates.io",
    "npm",
];

/// The update's settings, from the configuration (`vulndb_url`, `vulndb_ecosystems`,
/// `vulndb_proxy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSettings {
    /// The base URL (`<url>/<ecosystem>/all.zip`); `None`: no online update (the
    /// air-gapped default).
    pub url: Option<String>,
    pub ecosystems: Vec<String>,
    /// `None`: the `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` variables.
    pub proxy: Option<String>,
}

impl Default for UpdateSettings {
    fn default() -> Self {
        UpdateSettings {
            url: None,
            ecosystems: DEFAULT_ECOSYSTEMS.iter().map(|e| e.to_string()).collect(),
            proxy: None,
        }
    }
}

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Every archive was unchanged since the current version: nothing imported.
    Unchanged { version_id: i64 },
    Imported {
        import: ImportSummary,
        rematch: RematchSummary,
        /// Archives downloaded, and their bytes in all.
        archives: usize,
        bytes: u64,
    },
}

impl UpdateOutcome {
    /// One line saying what happened, for a job's result and the CLI.
    pub fn summary(&self) -> String {
        match self {
            UpdateOutcome::Unchanged { version_id } => format!(
                "unchanged: every archive is as at version {version_id} (304 Not Modified); nothing imported or matched"
            ),
            UpdateOutcome::Imported {
                import,
                rematch,
                archives,
                bytes,
            } => format!(
                "version {} imported from {archives} archives ({bytes} bytes, {} advisories); re-match: {} packages, +{} -{} matches, {} newly affected images",
                import.version_id,
                import.records,
                rematch.packages,
                rematch.added,
                rematch.removed,
                rematch.newly_affected_images
            ),
        }
    }
}

/// The source recorded for a download from `base_url` (the base URL itself, without a
/// trailing slash).
pub fn source_of(base_url: &str) -> String {
    base_url.trim_end_matches('/').to_string()
}

/// The validators to ask with: those of the current version, when it came from the
/// same base URL with exactly these ecosystems (otherwise everything is downloaded).
async fn previous_validators(
    meta: &dyn MetaStore,
    config: &FetchConfig,
) -> anyhow::Result<Option<(i64, ValidatorsByEcosystem)>> {
    let Some(current) = meta.current_vulndb().await? else {
        return Ok(None);
    };
    if current.source != source_of(&config.base_url) {
        return Ok(None);
    }
    let Some(map) = current
        .validators_json
        .as_deref()
        .and_then(|j| serde_json::from_str::<ValidatorsByEcosystem>(j).ok())
    else {
        return Ok(None);
    };
    let mut wanted: Vec<&str> = config.ecosystems.iter().map(String::as_str).collect();
    wanted.sort();
    wanted.dedup();
    let have: Vec<&str> = map.keys().map(String::as_str).collect();
    if wanted != have || map.values().all(|v| *v == Validators::default()) {
        return Ok(None);
    }
    Ok(Some((current.id, map)))
}

/// Records a failure before any import began as a `failed` version, so that the
/// status shows it; the current database stays.
async fn record_failure(meta: &dyn MetaStore, source: &str, error: &str, log: &dyn Log) {
    let recorded = async {
        let id = meta.begin_vulndb_import(source).await?;
        meta.fail_vulndb_import(id, error).await?;
        anyhow::Ok(id)
    }
    .await;
    match recorded {
        Ok(id) => {
            log.line(format!(
                "update {id} failed: {error}; the current database stays"
            ))
            .await
        }
        Err(e) => {
            log.line(format!(
                "could not record the failed update ({error}): {e:#}"
            ))
            .await
        }
    }
}

/// Downloads one archive, passing the download's retry lines on to `log`.
async fn fetch_one(
    client: &reqwest::Client,
    config: &FetchConfig,
    ecosystem: &str,
    previous: Option<&Validators>,
    dir: &std::path::Path,
    log: &dyn Log,
) -> Result<Fetched, vulndb_fetch::FetchError> {
    let lines = Mutex::new(Vec::new());
    let push = |line: String| lines.lock().expect("not poisoned").push(line);
    let fetched = vulndb_fetch::fetch(client, config, ecosystem, previous, dir, &push).await;
    for line in lines.into_inner().expect("not poisoned") {
        log.line(line).await;
    }
    fetched
}

/// Downloads, imports and re-matches (see the module's comment).
pub async fn update(
    meta: &dyn MetaStore,
    config: &FetchConfig,
    log: &dyn Log,
) -> anyhow::Result<UpdateOutcome> {
    let source = source_of(&config.base_url);
    if config.ecosystems.is_empty() {
        anyhow::bail!("no ecosystems to download (vulndb_ecosystems is empty)");
    }
    let client = match vulndb_fetch::client(config) {
        Ok(c) => c,
        Err(e) => {
            let error = format!("cannot set up the download: {e}");
            record_failure(meta, &source, &error, log).await;
            anyhow::bail!(error);
        }
    };
    let previous = previous_validators(meta, config).await?;
    let dir = tempfile::Builder::new()
        .prefix("wharf-vulndb-")
        .tempdir()
        .context("cannot create a temporary directory for the archives")?;
    log.line(format!(
        "downloading {} archives from {source}{}",
        config.ecosystems.len(),
        match &previous {
            Some((id, _)) => format!(" (only if changed since version {id})"),
            None => String::new(),
        }
    ))
    .await;

    let mut fetched: Vec<(String, Fetched)> = Vec::new();
    for ecosystem in &config.ecosystems {
        let validators = previous.as_ref().and_then(|(_, m)| m.get(ecosystem));
        match fetch_one(&client, config, ecosystem, validators, dir.path(), log).await {
            Ok(f) => {
                match &f {
                    Fetched::NotModified => log.line(format!("{ecosystem}: not modified")).await,
                    Fetched::New { bytes, .. } => {
                        log.line(format!("{ecosystem}: downloaded {bytes} bytes"))
                            .await
                    }
                }
                fetched.push((ecosystem.clone(), f));
            }
            Err(e) => {
                record_failure(meta, &source, &e.to_string(), log).await;
                return Err(e.into());
            }
        }
    }
    if let Some((version_id, _)) = &previous {
        if fetched
            .iter()
            .all(|(_, f)| matches!(f, Fetched::NotModified))
        {
            log.line(format!(
                "every archive is unchanged since version {version_id}: nothing to import or match"
            ))
            .await;
            return Ok(UpdateOutcome::Unchanged {
                version_id: *version_id,
            });
        }
    }

    // The archives, as `<dir>/<ecosystem>/all.zip` (so errors name `PyPI/all.zip`),
    // with their validators for the next time.
    let mut archives: Vec<(String, PathBuf)> = Vec::new();
    let mut validators = ValidatorsByEcosystem::new();
    let mut bytes_total = 0u64;
    for (ecosystem, f) in fetched {
        let f = match f {
            Fetched::New { .. } => f,
            // Unchanged, but the new version must hold it too.
            Fetched::NotModified => {
                log.line(format!(
                    "{ecosystem}: downloading again in full (the new version holds every ecosystem)"
                ))
                .await;
                match fetch_one(&client, config, &ecosystem, None, dir.path(), log).await {
                    Ok(f) => f,
                    Err(e) => {
                        record_failure(meta, &source, &e.to_string(), log).await;
                        return Err(e.into());
                    }
                }
            }
        };
        let Fetched::New {
            file,
            bytes,
            validators: v,
        } = f
        else {
            let error = format!(
                "{ecosystem}: {}: the server answered 304 Not Modified to a request without validators",
                vulndb_fetch::archive_url(&config.base_url, &ecosystem)
            );
            record_failure(meta, &source, &error, log).await;
            anyhow::bail!(error);
        };
        let folder = dir.path().join(&ecosystem);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        let path = folder.join("all.zip");
        file.persist(&path)
            .with_context(|| format!("cannot keep the archive as {}", path.display()))?;
        bytes_total += bytes;
        validators.insert(ecosystem.clone(), v);
        archives.push((ecosystem, path));
    }
    let validators_json = serde_json::to_string(&validators)?;
    let count = archives.len();
    let import =
        vulndb::import_archives_with_validators(meta, &source, &archives, &validators_json, log)
            .await?;
    let rematch = vulndb::rematch(meta, log).await?;
    Ok(UpdateOutcome::Imported {
        import,
        rematch,
        archives: count,
        bytes: bytes_total,
    })
}
