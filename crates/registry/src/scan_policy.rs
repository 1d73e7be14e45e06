//! Vulnerability policies on the push and pull paths: scan on push (a `scan` job
//! queued in the push's own transaction) and pull refusals (`DENIED`).
//!
//! Each replica caches every repository's effective policy and allowlist for
//! [`POLICY_CACHE_TTL`]: a change made through any replica is enforced by every replica
//! within that bound (the replica that made it at once, see
//! [`Registry::forget_scan_policies`]). A pull costs no query at all under a policy
//! that refuses nothing (the default), one (the image's summary) under one that may,
//! and a second (its findings) only when the summary has findings at or above the
//! threshold.
//!
//! On a metadata store without the scanning tables (an older schema level, e.g. while
//! a rollback to 1.1.0 is under way), nothing is scanned on push and every pull is
//! allowed, as if no image had been scanned and no policy set; a warning is logged once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wharf_metastore::scan::{FindingRow, ScanPolicy};
use wharf_metastore::{MetaError, ScanOnPush};
use wharf_oci::manifest::ManifestKind;
use wharf_oci::{Digest, Manifest, RepoName};
use wharf_scan::policy::{decide, AllowlistEntry, Decision, Finding, Policy, ScanState, Unscanned};
use wharf_scan::Severity;

use crate::error::{RegistryError, Result};
use crate::Registry;

/// How long a replica uses a policy and allowlist it read: the bound on how late a
/// change made through another replica is enforced.
pub const POLICY_CACHE_TTL: Duration = Duration::from_secs(5);

/// Repositories cached at most; past it the cache starts again (entries are cheap to
/// read back).
const MAX_CACHED: usize = 10_000;

/// Media types of image configs (as the `scan` action reads them): anything else is an
/// artifact (a signature, an SBOM, a Helm chart), neither scanned nor refused.
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// A repository's policy in force, with the allowlist entries that apply to it.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    pub policy: Policy,
    /// Whose policy it is: the repository's name, `''` for the registry default, `None`
    /// for the built-in default.
    pub set_on: Option<String>,
    pub allowlist: Vec<AllowlistEntry>,
}

/// Converts a stored policy into the scanner's.
pub fn policy_from_row(row: &ScanPolicy) -> Policy {
    Policy {
        scan_on_push: row.scan_on_push,
        block_severity: row.block_severity.as_deref().and_then(Severity::parse),
        unscanned: if row.unscanned == "refuse" {
            Unscanned::Refuse
        } else {
            Unscanned::Allow
        },
    }
}

fn finding_from_row(row: FindingRow) -> Finding {
    Finding {
        advisory_id: row.advisory_id,
        aliases: row.aliases,
        severity: Severity::parse(&row.severity).unwrap_or(Severity::Unknown),
        package: row.name,
        version: row.version,
        fixed: row.fixed,
    }
}

/// The error of a store without the scanning tables (schema level below 3).
pub(crate) fn is_missing_table(e: &MetaError) -> bool {
    let text = e.to_string();
    text.contains("no such table") || (text.contains("relation") && text.contains("does not exist"))
}

type Cached = (Instant, Option<Arc<EffectivePolicy>>);

/// The per-replica cache of effective policies.
#[derive(Default)]
pub(crate) struct PolicyCache {
    entries: Mutex<HashMap<String, Cached>>,
    warned: AtomicBool,
}

impl PolicyCache {
    pub(crate) fn warn_missing(&self, e: &MetaError) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %e,
                "the metadata store has no vulnerability scanning tables (an older schema \
                 level): images are not scanned on push and pulls are not checked against \
                 scan policies"
            );
        }
    }
}

/// Whether a manifest is an image the scanner reads: an image config, file-system
/// layers only, and no subject (a referrer is a signature, an SBOM, an attestation).
fn is_scannable_image(m: &Manifest) -> bool {
    m.kind == ManifestKind::Image
        && m.subject.is_none()
        && m.config
            .as_ref()
            .is_some_and(|c| IMAGE_CONFIGS.contains(&c.media_type.as_str()))
        && m.layers
            .iter()
            .all(|l| l.media_type.contains(".tar") || l.media_type.contains("image.layer"))
}

impl Registry {
    /// The policy in force for `repo` and the allowlist entries that apply to it,
    /// cached for [`POLICY_CACHE_TTL`]; `None` if the store has no scanning tables.
    pub async fn effective_scan_policy(
        &self,
        repo: &RepoName,
    ) -> Result<Option<Arc<EffectivePolicy>>> {
        let cache = &self.policies;
        if let Some((at, p)) = cache
            .entries
            .lock()
            .expect("not poisoned")
            .get(repo.as_str())
        {
            if at.elapsed() < POLICY_CACHE_TTL {
                return Ok(p.clone());
            }
        }
        let loaded = match self.load_scan_policy(repo).await {
            Ok(p) => Some(Arc::new(p)),
            Err(e) if is_missing_table(&e) => {
                cache.warn_missing(&e);
                None
            }
            Err(e) => return Err(e.into()),
        };
        let mut entries = cache.entries.lock().expect("not poisoned");
        if entries.len() >= MAX_CACHED {
            entries.clear();
        }
        entries.insert(repo.to_string(), (Instant::now(), loaded.clone()));
        Ok(loaded)
    }

    async fn load_scan_policy(&self, repo: &RepoName) -> Result<EffectivePolicy, MetaError> {
        let (policy, set_on) = match self.meta.scan_policy(repo.as_str()).await? {
            Some(p) => (policy_from_row(&p.policy), Some(p.repository)),
            None => match self.meta.scan_policy("").await? {
                Some(p) => (policy_from_row(&p.policy), Some(String::new())),
                None => (Policy::default(), None),
            },
        };
        let allowlist = self
            .meta
            .allowlist(repo.as_str())
            .await?
            .into_iter()
            .map(|a| AllowlistEntry {
                vuln_id: a.vuln_id,
                expires_at: a.expires_at_ms.map(|ms| ms.div_euclid(1000)),
                reason: a.reason,
            })
            .collect();
        Ok(EffectivePolicy {
            policy,
            set_on,
            allowlist,
        })
    }

    /// Drops this replica's cached policies, after a change made through it (other
    /// replicas see it within [`POLICY_CACHE_TTL`]).
    pub fn forget_scan_policies(&self) {
        self.policies.entries.lock().expect("not poisoned").clear();
    }

    /// The `scan` job to queue with a pushed manifest, if its repository's policy
    /// scans on push and the manifest is an image or an index of images.
    pub(crate) async fn scan_on_push(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &Manifest,
    ) -> Result<Option<ScanOnPush>> {
        let covers: Vec<Digest> = match manifest.kind {
            ManifestKind::Index if manifest.subject.is_none() => manifest
                .manifests
                .iter()
                // BuildKit's attestations sit in indexes as unknown/unknown images.
                .filter(|d| {
                    d.platform.as_ref().is_none_or(|p| {
                        (p.os.as_str(), p.architecture.as_str()) != ("unknown", "unknown")
                    })
                })
                .map(|d| d.digest.clone())
                .collect(),
            ManifestKind::Image if is_scannable_image(manifest) => vec![digest.clone()],
            _ => Vec::new(),
        };
        if covers.is_empty() {
            return Ok(None);
        }
        let Some(effective) = self.effective_scan_policy(repo).await? else {
            return Ok(None);
        };
        if !effective.policy.scan_on_push {
            return Ok(None);
        }
        let params = serde_json::json!({"repository": repo.as_str(), "digest": digest.to_string()});
        Ok(Some(ScanOnPush {
            params: params.to_string(),
            covers,
        }))
    }

    /// Refuses the pull of the image manifest `digest` of `repo` if its policy says so.
    /// `payload` is the manifest's, when the caller has it: it is read only when an
    /// unscanned manifest must be told apart from an artifact.
    pub(crate) async fn check_pull(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        payload: Option<&[u8]>,
    ) -> Result<()> {
        let Some(effective) = self.effective_scan_policy(repo).await? else {
            return Ok(());
        };
        let policy = &effective.policy;
        if policy.block_severity.is_none() && policy.unscanned == Unscanned::Allow {
            return Ok(());
        }
        let key = digest.to_string();
        let summary = match self.meta.summaries(std::slice::from_ref(&key)).await {
            Ok(mut rows) => rows.pop().map(|(_, s)| s),
            Err(e) if is_missing_table(&e) => {
                self.policies.warn_missing(&e);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let state = match summary {
            None => {
                if policy.unscanned == Unscanned::Allow
                    || !self.is_image(repo, digest, media_type, payload).await?
                {
                    return Ok(());
                }
                ScanState::NotScanned
            }
            Some(s) if s.status != "scanned" => {
                if policy.unscanned == Unscanned::Allow {
                    return Ok(());
                }
                let error = self
                    .meta
                    .inventory(&key)
                    .await?
                    .and_then(|i| i.error)
                    .unwrap_or_else(|| "no reason recorded".into());
                ScanState::Failed(error)
            }
            Some(s) => {
                let Some(threshold) = policy.block_severity else {
                    return Ok(());
                };
                let counts = [
                    (Severity::Critical, s.critical),
                    (Severity::High, s.high),
                    (Severity::Medium, s.medium),
                    (Severity::Low, s.low),
                    (Severity::Unknown, s.unknown),
                ];
                let at_or_above: u64 = counts
                    .iter()
                    .filter(|(sev, _)| *sev >= threshold)
                    .map(|(_, n)| n)
                    .sum();
                if at_or_above == 0 {
                    return Ok(());
                }
                let findings = self.meta.findings(&key).await?;
                ScanState::Scanned(findings.into_iter().map(finding_from_row).collect())
            }
        };
        let now = wharf_metastore::now_ms().div_euclid(1000);
        match decide(&state, policy, &effective.allowlist, now) {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => {
                let mut message = reason.message();
                if effective.set_on.as_deref() == Some("") {
                    message = message.replace(
                        "the repository's vulnerability policy",
                        "the registry's default vulnerability policy",
                    );
                }
                Err(RegistryError::PullDenied {
                    digest: digest.clone(),
                    message,
                })
            }
        }
    }

    /// Whether the manifest is an image (not an index, not an artifact).
    async fn is_image(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        payload: Option<&[u8]>,
    ) -> Result<bool> {
        let fetched;
        let payload = match payload {
            Some(p) => p,
            None => {
                fetched = self
                    .meta
                    .get_manifest(repo, &wharf_oci::Reference::Digest(digest.clone()), true)
                    .await?
                    .and_then(|m| m.payload);
                match &fetched {
                    Some(p) => &p[..],
                    None => return Ok(false),
                }
            }
        };
        Ok(Manifest::parse(Some(media_type), payload)
            .map(|m| is_scannable_image(&m))
            .unwrap_or(false))
    }
}
