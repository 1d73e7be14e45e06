//! A rehearsal's result (`wharf upgrade rehearse`): each step measured on a scratch
//! copy of the data, kept in `DATA_DIR/upgrade-rehearsal.json`, and the forecast for
//! the real upgrade that `upgrade plan` shows and `upgrade check` looks for.

use std::path::Path;

use semver::Version;
use serde::{Deserialize, Serialize};
use wharf_metastore::schema::DataSize;

/// The file a rehearsal's result is kept in, under the data directory.
pub const RECORD_FILE: &str = "upgrade-rehearsal.json";

/// One measured step of a rehearsal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// `restore`, or the hop (`1.0.0 → 1.1.0`).
    pub hop: String,
    /// `restore`, `expand`, `finalise` or a background migration's name.
    pub step: String,
    pub secs: f64,
    /// The rows the step went through: every row restored, or the manifests a
    /// background migration filled in; `None` for schema steps (they touch the schema).
    pub rows: Option<u64>,
    /// The process's peak resident memory so far, MiB.
    pub peak_mib: u64,
}

/// A rehearsal's result, as kept for `upgrade plan` and `upgrade check`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rehearsal {
    pub at_ms: i64,
    pub backup: String,
    pub from: String,
    pub to: String,
    /// The versions installed in turn.
    pub path: Vec<String>,
    /// The backup's size.
    pub data: DataSize,
    pub steps: Vec<Measured>,
}

impl Rehearsal {
    /// The steps scaled to `now`'s data: background migrations by manifests, schema
    /// steps by all rows. Returns (hop, step, secs).
    pub fn forecast(&self, now: &DataSize) -> Vec<(String, String, f64)> {
        let rows = |d: &DataSize| (d.repositories + d.manifests + d.tags + d.blobs).max(1) as f64;
        let (by_rows, by_manifests) = (
            rows(now) / rows(&self.data),
            now.manifests.max(1) as f64 / self.data.manifests.max(1) as f64,
        );
        self.steps
            .iter()
            .filter(|s| s.step != "restore")
            .map(|s| {
                let factor = if s.rows.is_some() {
                    by_manifests
                } else {
                    by_rows
                };
                (s.hop.clone(), s.step.clone(), s.secs * factor)
            })
            .collect()
    }

    /// The forecast in words: the mixed-version window's schema part (expand and
    /// finalise of each hop; replacing replicas adds its own time) and each background
    /// migration.
    pub fn forecast_lines(&self, now: &DataSize) -> Vec<String> {
        let f = self.forecast(now);
        let window: f64 = f
            .iter()
            .filter(|(_, s, _)| s == "expand" || s == "finalise")
            .map(|(_, _, secs)| secs)
            .sum();
        let mut lines = vec![format!(
            "schema steps (expand and finalise, every hop): {} in all, plus the time replacing the replicas takes",
            about(window)
        )];
        for (hop, step, secs) in f
            .iter()
            .filter(|(_, s, _)| s != "expand" && s != "finalise")
        {
            lines.push(format!(
                "{hop}: background migration {step}: {}",
                about(*secs)
            ));
        }
        lines
    }

    /// Whether this rehearsal went the way an upgrade from `from` to `to` goes.
    pub fn is_for(&self, from: &Version, to: &Version) -> bool {
        self.from == from.to_string() && self.to == to.to_string()
    }
}

/// "under 1 s", "about 12 s", "about 3 min".
pub fn about(secs: f64) -> String {
    match secs {
        s if s < 1.0 => "under 1 s".into(),
        s if s < 120.0 => format!("about {s:.0} s"),
        s => format!("about {:.0} min", s / 60.0),
    }
}

/// The last rehearsal kept under `data_dir`, if any.
pub fn last(data_dir: &Path) -> Option<Rehearsal> {
    let text = std::fs::read_to_string(data_dir.join(RECORD_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}
