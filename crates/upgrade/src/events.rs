//! What an upgrade reports as it goes: typed events, the same for every consumer.
//!
//! `wharf upgrade apply` and `wharf upgrade rollback` print them as text, or with
//! `--format json` one JSON object per line: `{"v": 1, "event": "<kind>", …fields}`.
//! That stream is an interface (scripts and the UI read it), so it is versioned: `v` is
//! [`EVENTS_VERSION`], raised only when a field changes meaning or goes away; new
//! fields and new event kinds may appear within a version, and readers ignore what
//! they do not know. The field lists are in docs/upgrading.md and pinned by tests.

use serde::{Deserialize, Serialize};

/// The version of the event stream's format.
pub const EVENTS_VERSION: u32 = 1;

/// An event as it goes over the wire: the format's version and the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub event: Event,
}

impl Envelope {
    pub fn new(event: Event) -> Envelope {
        Envelope {
            v: EVENTS_VERSION,
            event,
        }
    }
}

/// One hop of a multi-hop upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopRef {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The hops an upgrade goes through, when there are several.
    Plan { hops: Vec<HopRef> },
    /// A hop starts or resumes (`resuming`), or a rollback starts (`rollback`).
    Start {
        from: String,
        to: String,
        #[serde(default)]
        resuming: bool,
        /// `local`, `docker` or `external`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        driver: Option<String>,
        /// The hop's steps, in order.
        #[serde(default)]
        steps: Vec<String>,
        /// The plan's warnings, shown before anything changes.
        #[serde(default)]
        warnings: Vec<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        rollback: bool,
    },
    /// A step ended: `status` is `done`, `done_before` (a resumed run found it
    /// journalled), `skipped` (with the reason in `detail`) or `undone` (rollback).
    Step {
        /// Its place among the hop's steps (1-based), and their number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        n: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        of: Option<usize>,
        step: String,
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A replica or content cache being replaced: `phase` is `draining`, `drained`,
    /// `removed`, `created`, `started`, `ready`, `not_running`, `waiting`, `settling`
    /// or `done_before`.
    Replica {
        replica: String,
        phase: String,
        detail: String,
    },
    /// Bytes of a long step so far (the backup), at most four times a second; the last
    /// one of a phase carries its `summary`.
    Progress {
        step: String,
        phase: String,
        bytes: u64,
        total_bytes: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
    },
    /// A hop's background migration still runs; every 2 s with its job's state and
    /// progress (`{done, total, rate, eta_secs, phase}`, as the job reports it).
    WaitingForMigration {
        action: String,
        job: i64,
        status: String,
        attempts: u32,
        progress: Option<serde_json::Value>,
        /// The last failed attempt's error, while the job is retried.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Who runs it: "the replicas" (a rolling upgrade waits for them) or "this
        /// process" (the local driver, the registry stopped).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// The upgrade lock was held by a run that stopped; this run took it over.
    LockTakenOver { from: String },
    /// The upgrade is not allowed as asked: `reason`, and the `path` of stops there is.
    Refused {
        from: String,
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        driver: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default)]
        path: Vec<String>,
        /// The whole plan, as `wharf upgrade plan --format json` shows it.
        plan: serde_json::Value,
    },
    /// The data is at `version`: upgraded (`changed`), already there, or rolled back.
    Finished {
        version: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        changed: Option<bool>,
        #[serde(default, skip_serializing_if = "is_false")]
        rolled_back: bool,
    },
    /// The run stopped with an error; rerunning the command resumes.
    Failed { error: String },
}

impl Event {
    /// The event as a person reads it (`--format text`, the UI's log); `None` for
    /// events a reader of text does not need (progress is drawn as bars, a failure is
    /// printed as the command's error).
    pub fn text(&self) -> Option<String> {
        Some(match self {
            Event::Plan { hops } => {
                let path: Vec<&str> = hops
                    .first()
                    .map(|h| h.from.as_str())
                    .into_iter()
                    .chain(hops.iter().map(|h| h.to.as_str()))
                    .collect();
                format!(
                    "upgrade in {} hops: {} (each hop's background migrations finish before the next)",
                    hops.len(),
                    path.join(" → ")
                )
            }
            Event::Start {
                from,
                to,
                rollback: true,
                ..
            } => format!("rollback of the upgrade {to} → {from}: back to {to}"),
            Event::Start {
                from,
                to,
                resuming,
                driver,
                warnings,
                ..
            } => {
                let how = if *resuming { "resuming" } else { "starting" };
                let mut t = match driver.as_deref() {
                    None | Some("local") => format!("upgrade {from} → {to} ({how})"),
                    Some(d) => format!("rolling upgrade {from} → {to} with the {d} driver ({how})"),
                };
                for w in warnings {
                    t += &format!("\n{w}");
                }
                t
            }
            Event::Step {
                n,
                of,
                step,
                status,
                detail,
            } => {
                let place = match (n, of) {
                    (Some(n), Some(of)) => format!("[{n}/{of}] "),
                    _ => String::new(),
                };
                match (status.as_str(), detail) {
                    ("done_before", _) => format!("{place}{step}: done before"),
                    (_, Some(d)) => format!("{place}{step}: {d}"),
                    (s, None) => format!("{place}{step}: {s}"),
                }
            }
            Event::Replica {
                replica,
                phase,
                detail,
            } => format!("      {replica} {phase}: {detail}"),
            // Text output draws the backup's progress as bars instead.
            Event::Progress { .. } => return None,
            Event::WaitingForMigration {
                action,
                job,
                status,
                attempts,
                progress,
                error,
                by,
            } => {
                let by = by
                    .as_deref()
                    .map_or(String::new(), |b| format!(", run by {b}"));
                let retry = error
                    .as_deref()
                    .map_or(String::new(), |e| format!("; the last attempt failed: {e}"));
                match progress.as_ref().filter(|p| p["total"].as_u64().is_some()) {
                    Some(p) => format!(
                        "  waiting for {action} (job {job}, attempt {attempts}{by}): {} of {}{}{retry}",
                        p["done"],
                        p["total"],
                        p["eta_secs"]
                            .as_u64()
                            .map_or(String::new(), |s| format!(", about {s} s left"))
                    ),
                    None => format!("  waiting for {action} (job {job}, {status}{by}){retry}"),
                }
            }
            Event::LockTakenOver { from } => {
                format!("taking over the upgrade lock from {from}, which is no longer running")
            }
            Event::Refused {
                from,
                to,
                reason,
                path,
                ..
            } => {
                let mut t = format!("upgrade {from} → {to}: refused");
                if let Some(r) = reason {
                    t += &format!("\n  {r}");
                }
                if !path.is_empty() {
                    t += &format!("\n  the stops there are: {}", path.join(" → "));
                }
                t
            }
            Event::Finished {
                version,
                rolled_back: true,
                ..
            } => format!("rolled back to {version}"),
            Event::Finished {
                version,
                changed: Some(false),
                ..
            } => format!("the data is at {version} already: nothing to do"),
            Event::Finished { version, .. } => format!("upgraded to {version}"),
            Event::Failed { .. } => return None,
        })
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire(e: Event) -> serde_json::Value {
        serde_json::to_value(Envelope::new(e)).unwrap()
    }

    /// The stream's shape, as scripts read it: a change here is a change of
    /// [`EVENTS_VERSION`] unless it only adds.
    #[test]
    fn the_wire_format_is_pinned() {
        assert_eq!(
            wire(Event::Start {
                from: "1.1.0".into(),
                to: "1.2.0".into(),
                resuming: false,
                driver: Some("docker".into()),
                steps: vec!["checks".into(), "backup".into()],
                warnings: vec![],
                rollback: false,
            }),
            json!({"v": 1, "event": "start", "from": "1.1.0", "to": "1.2.0", "resuming": false,
                   "driver": "docker", "steps": ["checks", "backup"], "warnings": []})
        );
        assert_eq!(
            wire(Event::Step {
                n: Some(2),
                of: Some(8),
                step: "backup".into(),
                status: "done".into(),
                detail: Some("1 MiB".into()),
            }),
            json!({"v": 1, "event": "step", "n": 2, "of": 8, "step": "backup", "status": "done", "detail": "1 MiB"})
        );
        assert_eq!(
            wire(Event::Replica {
                replica: "r1".into(),
                phase: "ready".into(),
                detail: "1.2.0 answers".into(),
            }),
            json!({"v": 1, "event": "replica", "replica": "r1", "phase": "ready", "detail": "1.2.0 answers"})
        );
        assert_eq!(
            wire(Event::WaitingForMigration {
                action: "metadatastoremigration".into(),
                job: 7,
                status: "running".into(),
                attempts: 1,
                progress: Some(json!({"done": 5, "total": 10})),
                error: None,
                by: None,
            }),
            json!({"v": 1, "event": "waiting_for_migration", "action": "metadatastoremigration",
                   "job": 7, "status": "running", "attempts": 1, "progress": {"done": 5, "total": 10}})
        );
        assert_eq!(
            wire(Event::Finished {
                version: "1.1.0".into(),
                changed: None,
                rolled_back: true,
            }),
            json!({"v": 1, "event": "finished", "version": "1.1.0", "rolled_back": true})
        );
        assert_eq!(
            wire(Event::Failed {
                error: "boom".into()
            }),
            json!({"v": 1, "event": "failed", "error": "boom"})
        );
    }

    /// A reader of this version reads events with fields it does not know.
    #[test]
    fn unknown_fields_are_ignored_and_every_kind_reads_back() {
        let e: Envelope = serde_json::from_value(json!({
            "v": 1, "event": "step", "step": "expand", "status": "undone", "later_field": 3
        }))
        .unwrap();
        assert_eq!(
            e.event,
            Event::Step {
                n: None,
                of: None,
                step: "expand".into(),
                status: "undone".into(),
                detail: None
            }
        );
        for event in [
            Event::Plan {
                hops: vec![HopRef {
                    from: "1.0.0".into(),
                    to: "1.1.0".into(),
                }],
            },
            Event::Progress {
                step: "backup".into(),
                phase: "metadata".into(),
                bytes: 10,
                total_bytes: None,
                summary: Some("done".into()),
            },
            Event::LockTakenOver {
                from: "host:1".into(),
            },
            Event::Refused {
                from: "1.0.0".into(),
                to: "1.2.0".into(),
                driver: Some("docker".into()),
                reason: Some("stop at 1.1 first".into()),
                path: vec!["1.1.0".into(), "1.2.0".into()],
                plan: json!({"allowed": false}),
            },
        ] {
            let back: Envelope = serde_json::from_value(wire(event.clone())).unwrap();
            assert_eq!(back.event, event);
        }
    }

    #[test]
    fn steps_read_as_before() {
        let step = |n, status: &str, detail: Option<&str>| Event::Step {
            n,
            of: n.map(|_| 8),
            step: "backup".into(),
            status: status.into(),
            detail: detail.map(String::from),
        };
        assert_eq!(
            step(Some(2), "done", Some("12 MiB in 1 s")).text().unwrap(),
            "[2/8] backup: 12 MiB in 1 s"
        );
        assert_eq!(
            step(Some(2), "done_before", None).text().unwrap(),
            "[2/8] backup: done before"
        );
        assert_eq!(
            step(None, "undone", Some("levels [3]")).text().unwrap(),
            "backup: levels [3]"
        );
    }
}
