//! Where an upgrade to this binary's version stands, read from the metadata store: the
//! data's version, the plan from there, the journal's steps, each replica's version and
//! the background migrations. `wharf upgrade status` prints it; `GET /api/v0/upgrade`
//! serves it.

use semver::Version;
use serde::Serialize;
use wharf_metastore::journal::JournalEntry;
use wharf_metastore::MetaStore;

use crate::{plan, Catalog, Plan};

/// The steps of an upgrade with the local driver (`wharf upgrade apply`), in order.
/// Finalising raises the cluster's version; background migrations are queued after it.
pub const LOCAL_STEPS: [&str; 5] = ["checks", "backup", "expand", "finalise", "background"];

/// The steps of a rolling upgrade (`apply --driver docker|external`), in order; the
/// journal also holds a `replace:NAME` entry for each replica replaced.
pub const ROLLING_STEPS: [&str; 8] = [
    "checks",
    "backup",
    "expand",
    "replicas",
    "replace",
    "verify",
    "finalise",
    "background",
];

/// The version an upgrade recorded in `journal` (steps `steps`) started from, if its
/// last step is not recorded yet: the upgrade that a rerun resumes.
pub fn unfinished_from<'a>(journal: &'a [JournalEntry], steps: &[&str]) -> Option<&'a str> {
    let last = steps[steps.len() - 1];
    journal.iter().map(|e| e.from_version.as_str()).find(|f| {
        !journal
            .iter()
            .any(|e| e.from_version == *f && e.step == last)
    })
}

/// The journal's `replicas` entry holds each replica's saved configuration, secrets in
/// its environment included; shown, it is only names and images.
pub fn redact(mut e: JournalEntry) -> JournalEntry {
    if e.step == "replicas" || e.step == "caches" {
        if let Ok(serde_json::Value::Array(replicas)) =
            serde_json::from_str::<serde_json::Value>(&e.detail)
        {
            let names: Vec<String> = replicas
                .iter()
                .map(|r| {
                    format!(
                        "{} ({})",
                        r["name"].as_str().unwrap_or("?"),
                        r["image"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            e.detail = format!("saved the configuration of {}", names.join(", "));
        }
    }
    e
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = UpgradeStatus))]
pub struct Status {
    /// The release that wrote the data.
    pub data_version: String,
    pub schema_level: u32,
    /// The version asked about: this binary's.
    pub binary_version: String,
    /// From the data's version to this binary's (nothing to do when they are equal).
    pub plan: Option<Plan>,
    pub steps_total: usize,
    /// Steps of the upgrade in progress (or last finished) recorded as done or skipped.
    pub steps_done: usize,
    /// The release the journal's upgrade goes to: this binary's, or during an upgrade
    /// of several hops the stop it is at.
    pub upgrading_to: String,
    pub journal: Vec<JournalEntry>,
    pub replicas: Vec<ReplicaVersion>,
    /// Manifests whose references the metadatastoremigration still has to record.
    pub pending_manifests: Option<u64>,
    pub background_migrations: Vec<BackgroundMigration>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaVersion {
    pub id: String,
    pub address: String,
    pub version: String,
    /// Reported within its last three heartbeat intervals.
    pub alive: bool,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BackgroundMigration {
    pub action: String,
    pub job: i64,
    pub status: String,
    pub attempts: u32,
    /// done, total, rate and ETA, as the job reports them.
    pub progress: Option<serde_json::Value>,
}

/// Reads the status of an upgrade to `binary` from the store.
pub async fn status(meta: &dyn MetaStore, binary: &Version) -> wharf_metastore::Result<Status> {
    let data_version = meta.data_version().await?;
    let schema_level = meta.schema_level().await?;
    let mut upgrading_to = binary.to_string();
    let mut journal: Vec<JournalEntry> = meta.journal(&upgrading_to).await?;
    let (rows, now) = meta.replicas().await?;
    let replicas = rows
        .iter()
        .map(|r| ReplicaVersion {
            id: r.report.id.clone(),
            address: r.report.address.clone(),
            version: r.report.version.clone(),
            alive: now - r.heartbeat_at_ms <= 3 * r.report.heartbeat_interval_ms.max(1000),
        })
        .collect();
    let plan = Version::parse(&data_version).ok().map(|from| {
        let mut versions = Catalog::embedded().versions();
        if !versions.contains(binary) {
            versions.push(binary.clone());
        }
        plan(&from, binary, &versions, false)
    });
    // Data behind this binary: the hop under way is the one from the data's version to
    // the next stop of the plan, or, until that starts, the one into the data's version
    // while its last step (background) is not recorded (an upgrade of several hops
    // between two hops).
    let next = plan.as_ref().and_then(|p| p.path.first()).cloned();
    if let Some(next) = next {
        let into_next: Vec<JournalEntry> = meta
            .journal(&next)
            .await?
            .into_iter()
            .filter(|e| e.from_version == data_version)
            .collect();
        if !into_next.is_empty() {
            (upgrading_to, journal) = (next, into_next);
        } else {
            // Both drivers' steps end with `background`.
            let into_data = meta.journal(&data_version).await?;
            match unfinished_from(&into_data, &ROLLING_STEPS).map(str::to_string) {
                Some(from) => {
                    journal = into_data
                        .into_iter()
                        .filter(|e| e.from_version == from)
                        .collect();
                    upgrading_to = data_version.clone();
                }
                None if next != upgrading_to => journal = Vec::new(),
                None => {}
            }
        }
    }
    let journal: Vec<JournalEntry> = journal.into_iter().map(redact).collect();
    // The job tables exist from schema level 2 on.
    let (pending_manifests, background_migrations) = if schema_level >= 2 {
        // The newest jobs of each background migration the data's level has.
        let mut jobs = Vec::new();
        for (_, action) in wharf_metastore::schema::BACKGROUND
            .iter()
            .filter(|(l, _)| *l <= schema_level)
        {
            jobs.extend(meta.jobs(Some(action), None, None, 5).await?);
        }
        let jobs = jobs
            .into_iter()
            .map(|j| BackgroundMigration {
                action: j.action.clone(),
                job: j.id,
                status: j.status.as_str().to_string(),
                attempts: j.attempts,
                progress: j.progress_json(),
            })
            .collect();
        (Some(meta.count_manifests_without_refs().await?), jobs)
    } else {
        (None, Vec::new())
    };
    // The upgrade in progress is the one from the version whose last step is not
    // recorded yet; otherwise the last one.
    let steps: &[&str] = if journal.iter().any(|e| e.step == "replicas") {
        &ROLLING_STEPS
    } else {
        &LOCAL_STEPS
    };
    let current_from = unfinished_from(&journal, steps)
        .or_else(|| journal.last().map(|e| e.from_version.as_str()));
    let steps_done = journal
        .iter()
        .filter(|e| {
            Some(e.from_version.as_str()) == current_from && steps.contains(&e.step.as_str())
        })
        .count();
    Ok(Status {
        data_version,
        schema_level,
        binary_version: binary.to_string(),
        plan,
        steps_total: steps.len(),
        steps_done,
        upgrading_to,
        journal,
        replicas,
        pending_manifests,
        background_migrations,
    })
}
