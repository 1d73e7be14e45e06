//! Whether a pull is allowed, given what the scanner knows about the image.
//!
//! [`decide`] is a pure function of the scan state, the repository's policy, its
//! allowlist and the clock; the registry calls it on pulls and turns a
//! [`Decision::Deny`] into an OCI `DENIED` error with [`DenyReason::message`].

use crate::Severity;

/// A repository's (or the registry default's) scanning policy.
///
/// The default scans on push but never refuses a pull: scanning only queues a job, so
/// it costs pushes nothing and fills in the vulnerability view; refusing pulls has to
/// be a deliberate choice, and refusing unscanned images by default would break every
/// image pushed before scanning was enabled or while the database is still empty.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Queue a scan when a manifest is pushed. Pulls do not look at it.
    pub scan_on_push: bool,
    /// Refuse pulls of images with a vulnerability of at least this severity, unless
    /// it is allowlisted. [`Severity::Unknown`] is the lowest bucket, so only a
    /// threshold of `unknown` refuses images whose advisories have no severity.
    pub block_severity: Option<Severity>,
    /// What to do with images that have no successful scan.
    pub unscanned: Unscanned,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            scan_on_push: true,
            block_severity: None,
            unscanned: Unscanned::Allow,
        }
    }
}

/// Pulls of images without a successful scan: not scanned yet, or the scan failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unscanned {
    #[default]
    Allow,
    Refuse,
}

/// An accepted vulnerability: pulls are not refused because of it until it expires.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AllowlistEntry {
    /// An advisory id or any of its aliases (`CVE-2023-1234`, `GHSA-…`, `DSA-…`),
    /// compared case-insensitively.
    pub vuln_id: String,
    /// Unix seconds; the entry stops applying at this instant. `None`: never expires.
    pub expires_at: Option<i64>,
    pub reason: String,
}

impl AllowlistEntry {
    fn is_active(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }

    fn covers(&self, finding: &Finding) -> bool {
        let wanted = self.vuln_id.trim();
        std::iter::once(&finding.advisory_id)
            .chain(&finding.aliases)
            .any(|id| id.trim().eq_ignore_ascii_case(wanted))
    }
}

/// One vulnerability of one package in the image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    pub advisory_id: String,
    /// The advisory's other ids, CVE ids among them.
    pub aliases: Vec<String>,
    pub severity: Severity,
    /// The package's name and version as installed.
    pub package: String,
    pub version: String,
    /// The first version that fixes it, when there is one.
    pub fixed: Option<String>,
}

/// What the scanner knows about the image being pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanState {
    /// The latest scan succeeded and matched these findings.
    Scanned(Vec<Finding>),
    /// No scan yet (queued, or pushed before scanning was enabled).
    NotScanned,
    /// The latest scan failed for this reason. Counts as not scanned: a failed scan
    /// proves nothing about the image.
    Failed(String),
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(DenyReason),
}

/// The policy rule that refused a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyRule {
    /// A finding at or above this severity, not allowlisted.
    BlockSeverity(Severity),
    /// Unscanned images are refused and this one has not been scanned.
    NotScanned,
    /// Unscanned images are refused and this one's scan failed for this reason.
    ScanFailed(String),
}

/// Why a pull was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyReason {
    pub rule: DenyRule,
    /// The findings that block the pull, worst first, at most
    /// [`MAX_LISTED_FINDINGS`] of them: the message stays short however bad the image.
    pub findings: Vec<Finding>,
    /// How many findings block the pull in all.
    pub blocking_count: usize,
}

/// How many blocking findings a [`DenyReason`] keeps and its message lists.
pub const MAX_LISTED_FINDINGS: usize = 10;

impl DenyReason {
    /// A message for the OCI `DENIED` error: the rule, then the blocking findings with
    /// their fixes, so whoever pulls knows what to upgrade or allowlist.
    pub fn message(&self) -> String {
        let prefix = "pull refused by the repository's vulnerability policy";
        match &self.rule {
            DenyRule::NotScanned => {
                format!(
                    "{prefix} (unscanned images are refused): the image has not been scanned yet"
                )
            }
            DenyRule::ScanFailed(error) => format!(
                "{prefix} (unscanned images are refused): the image's scan failed ({error}), \
                 so it counts as not scanned"
            ),
            DenyRule::BlockSeverity(threshold) => {
                let listed: Vec<String> = self.findings.iter().map(describe).collect();
                let count = self.blocking_count;
                let noun = if count == 1 {
                    "vulnerability"
                } else {
                    "vulnerabilities"
                };
                let mut message = format!(
                    "{prefix} (block severity >= {threshold}): {count} {noun}: {}",
                    listed.join("; ")
                );
                let unlisted = count.saturating_sub(self.findings.len());
                if unlisted > 0 {
                    message.push_str(&format!("; and {unlisted} more"));
                }
                message
            }
        }
    }
}

/// `GHSA-x (aka CVE-y) (high) in pkg 1.0, fixed in 1.1`: the CVE id is added when the
/// advisory is known by another id, since allowlists are mostly written in CVE ids.
fn describe(finding: &Finding) -> String {
    let mut text = finding.advisory_id.clone();
    let is_cve = |id: &str| id.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("CVE-"));
    if !is_cve(&finding.advisory_id) {
        if let Some(cve) = finding.aliases.iter().find(|alias| is_cve(alias)) {
            text.push_str(&format!(" (aka {cve})"));
        }
    }
    text.push_str(&format!(
        " ({}) in {} {}",
        finding.severity, finding.package, finding.version
    ));
    match &finding.fixed {
        Some(fixed) => text.push_str(&format!(", fixed in {fixed}")),
        None => text.push_str(", no fix yet"),
    }
    text
}

/// Whether a pull of an image in `state` is allowed under `policy`, with `allowlist`
/// entries that have not expired by `now` (unix seconds) set aside.
pub fn decide(
    state: &ScanState,
    policy: &Policy,
    allowlist: &[AllowlistEntry],
    now: i64,
) -> Decision {
    let findings = match state {
        ScanState::Scanned(findings) => findings,
        ScanState::NotScanned | ScanState::Failed(_) => {
            if policy.unscanned == Unscanned::Allow {
                return Decision::Allow;
            }
            let rule = match state {
                ScanState::Failed(error) => DenyRule::ScanFailed(error.clone()),
                _ => DenyRule::NotScanned,
            };
            return Decision::Deny(DenyReason {
                rule,
                findings: Vec::new(),
                blocking_count: 0,
            });
        }
    };
    let Some(threshold) = policy.block_severity else {
        return Decision::Allow;
    };

    let active: Vec<&AllowlistEntry> = allowlist.iter().filter(|e| e.is_active(now)).collect();
    let mut blocking: Vec<&Finding> = findings
        .iter()
        .filter(|finding| finding.severity >= threshold)
        .filter(|finding| !active.iter().any(|entry| entry.covers(finding)))
        .collect();
    if blocking.is_empty() {
        return Decision::Allow;
    }

    // Worst first, then a stable order so the same image gives the same message.
    blocking.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.advisory_id.cmp(&b.advisory_id))
            .then_with(|| a.package.cmp(&b.package))
            .then_with(|| a.version.cmp(&b.version))
    });
    Decision::Deny(DenyReason {
        rule: DenyRule::BlockSeverity(threshold),
        blocking_count: blocking.len(),
        findings: blocking
            .into_iter()
            .take(MAX_LISTED_FINDINGS)
            .cloned()
            .collect(),
    })
}
