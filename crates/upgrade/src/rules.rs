//! The version rules (semantic versioning) and the route planner.
//!
//! | case | example | verdict |
//! |---|---|---|
//! | same version | 1.2.3 → 1.2.3 | nothing to do |
//! | patch upgrade, any number of patches | 1.1.0 → 1.1.7 | allowed (patch releases never migrate data) |
//! | minor upgrade | 1.1.x → 1.2.y | allowed |
//! | skip a minor | 1.1.x → 1.3.y | refused: stop at 1.2 first |
//! | major upgrade to the next major's earliest minor | 1.9.x → 2.0.y | allowed |
//! | … from an older minor | 1.4.x → 2.0.y | allowed, with a strong warning |
//! | major upgrade skipping its earliest minor | 1.9.x → 2.1.y | refused: land on 2.0 first |
//! | skip a major | 1.x → 3.y | refused: one major at a time |
//! | any downgrade | 1.1.7 → 1.1.6, 1.2.0 → 1.1.9, 2.0.0 → 1.9.9 | refused |
//!
//! Pre-releases (`2.0.0-rc.1`) take part only when asked for: as the target, or with
//! `allow_prerelease`; the planner never stops at one on its own.

use semver::Version;

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hop {
    pub from: String,
    pub to: String,
    /// The rule that allows it.
    pub rule: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plan {
    pub from: String,
    pub to: String,
    /// Whether `to` may be installed directly over `from` (true also when there is
    /// nothing to do).
    pub allowed: bool,
    /// The versions to install in order, ending with the target; empty when there is
    /// nothing to do or no way there.
    pub path: Vec<String>,
    pub hops: Vec<Hop>,
    /// When refused: the rule's name.
    pub rule: Option<&'static str>,
    /// When refused: why, and what to install next.
    pub reason: Option<String>,
    pub warnings: Vec<String>,
}

enum Verdict {
    Nothing,
    Allowed {
        rule: &'static str,
        warning: Option<String>,
    },
    /// Refused; `next` is the stop to make first, if there is a way.
    Refused {
        rule: &'static str,
        reason: String,
        next: Option<Version>,
    },
}

/// The latest non-pre-release patch of `major.minor` among `available`.
fn latest_patch(available: &[Version], major: u64, minor: u64) -> Option<Version> {
    available
        .iter()
        .filter(|v| v.major == major && v.minor == minor && v.pre.is_empty())
        .max()
        .cloned()
}

fn minors(available: &[Version], major: u64) -> impl Iterator<Item = u64> + '_ {
    available
        .iter()
        .filter(move |v| v.major == major && v.pre.is_empty())
        .map(|v| v.minor)
}

fn judge(from: &Version, to: &Version, available: &[Version]) -> Verdict {
    if from == to {
        return Verdict::Nothing;
    }
    if to < from {
        let rule = if to.major < from.major {
            "major-downgrade"
        } else if to.minor < from.minor {
            "minor-downgrade"
        } else {
            "patch-downgrade"
        };
        return Verdict::Refused {
            rule,
            reason: format!("{to} is older than {from}: downgrades are refused (a backup restore is the way back)"),
            next: None,
        };
    }
    if to.major == from.major {
        if to.minor == from.minor {
            return Verdict::Allowed {
                rule: "patch-upgrade",
                warning: None,
            };
        }
        if to.minor == from.minor + 1 {
            return Verdict::Allowed {
                rule: "minor-upgrade",
                warning: None,
            };
        }
        let stop = format!("{}.{}", from.major, from.minor + 1);
        let next = latest_patch(available, from.major, from.minor + 1);
        return Verdict::Refused {
            rule: "skip-minor",
            reason: match &next {
                Some(n) => format!(
                    "{from} → {to} skips minor versions: stop at {stop} first (install {n})"
                ),
                None => format!(
                    "{from} → {to} skips minor versions, and no {stop} release is known to stop at"
                ),
            },
            next,
        };
    }
    let next_major = from.major + 1;
    // The next major's earliest minor, among known releases (or the target's own).
    let earliest = minors(available, next_major)
        .chain((to.major == next_major).then_some(to.minor))
        .min()
        .unwrap_or(0);
    let first_stop = latest_patch(available, next_major, earliest);
    if to.major > next_major {
        return Verdict::Refused {
            rule: "skip-major",
            reason: match &first_stop {
                Some(n) => format!(
                    "{from} → {to} skips a major version: one major at a time (install {n} first)"
                ),
                None => format!(
                    "{from} → {to} skips a major version, and no {next_major}.x release is known"
                ),
            },
            next: first_stop,
        };
    }
    if to.minor != earliest {
        return Verdict::Refused {
            rule: "major-skip-minor",
            reason: match &first_stop {
                Some(n) => format!("{from} → {to}: a major upgrade lands on {next_major}.{earliest} first (install {n})"),
                None => format!("{from} → {to}: a major upgrade lands on {next_major}.{earliest} first, which is not known"),
            },
            next: first_stop,
        };
    }
    let latest_minor = minors(available, from.major)
        .chain([from.minor])
        .max()
        .unwrap_or(from.minor);
    let warning = (from.minor < latest_minor).then(|| {
        let latest = latest_patch(available, from.major, latest_minor).map(|v| v.to_string()).unwrap_or_default();
        format!(
            "WARNING: {from} is not on the latest {}.x ({latest}); moving there first before {to} is strongly recommended",
            from.major
        )
    });
    Verdict::Allowed {
        rule: "major-upgrade",
        warning,
    }
}

/// Plans `from` → `to` over the `available` releases (the catalog, or a what-if list):
/// the verdict on the direct hop and the path of required stops.
pub fn plan(from: &Version, to: &Version, available: &[Version], allow_prerelease: bool) -> Plan {
    // Pre-releases only when asked for: the target itself, or all with the flag.
    let available: Vec<Version> = available
        .iter()
        .filter(|v| allow_prerelease || v.pre.is_empty() || *v == to)
        .cloned()
        .collect();
    let mut p = Plan {
        from: from.to_string(),
        to: to.to_string(),
        allowed: false,
        path: Vec::new(),
        hops: Vec::new(),
        rule: None,
        reason: None,
        warnings: Vec::new(),
    };
    let mut at = from.clone();
    // Bounded: each stop moves at least one minor or major forward.
    for step in 0..1_000 {
        match judge(&at, to, &available) {
            Verdict::Nothing => {
                p.allowed = step == 0 || p.allowed;
                break;
            }
            Verdict::Allowed { rule, warning } => {
                if step == 0 {
                    p.allowed = true;
                }
                p.warnings.extend(warning);
                p.hops.push(Hop {
                    from: at.to_string(),
                    to: to.to_string(),
                    rule,
                });
                p.path.push(to.to_string());
                break;
            }
            Verdict::Refused { rule, reason, next } => {
                if step == 0 {
                    p.rule = Some(rule);
                    p.reason = Some(reason);
                }
                let Some(next) = next else {
                    // No way there: no path.
                    p.path.clear();
                    p.hops.clear();
                    break;
                };
                let Verdict::Allowed { rule, warning } = judge(&at, &next, &available) else {
                    p.path.clear();
                    p.hops.clear();
                    break;
                };
                p.warnings.extend(warning);
                p.hops.push(Hop {
                    from: at.to_string(),
                    to: next.to_string(),
                    rule,
                });
                p.path.push(next.to_string());
                at = next;
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn catalog() -> Vec<Version> {
        [
            "1.1.0",
            "1.1.1",
            "1.1.6",
            "1.1.7",
            "1.2.0",
            "1.2.3",
            "1.3.0",
            "1.3.2",
            "1.4.0",
            "1.4.5",
            "1.9.0",
            "1.9.2",
            "2.0.0",
            "2.0.1",
            "2.0.0-rc.1",
            "2.1.0",
            "2.1.4",
            "3.0.0",
            "3.1.0",
        ]
        .iter()
        .map(|s| v(s))
        .collect()
    }

    fn p(from: &str, to: &str) -> Plan {
        plan(&v(from), &v(to), &catalog(), false)
    }

    #[test]
    fn the_twelve_cases() {
        // patch upgrade; skipping patches
        let x = p("1.1.0", "1.1.1");
        assert!(
            x.allowed && x.path == ["1.1.1"] && x.hops[0].rule == "patch-upgrade",
            "{x:?}"
        );
        assert!(p("1.1.0", "1.1.7").allowed);
        // patch, minor and major downgrades
        for (from, to, rule) in [
            ("1.1.7", "1.1.6", "patch-downgrade"),
            ("1.2.0", "1.1.9", "minor-downgrade"),
            ("2.0.0", "1.9.9", "major-downgrade"),
        ] {
            let x = p(from, to);
            assert!(
                !x.allowed && x.path.is_empty() && x.rule == Some(rule),
                "{x:?}"
            );
            assert!(x.reason.unwrap().contains("downgrades are refused"));
        }
        // minor upgrade
        let x = p("1.1.6", "1.2.3");
        assert!(x.allowed && x.hops[0].rule == "minor-upgrade");
        // skip a minor: refused, with the stop to make
        let x = p("1.1.7", "1.3.0");
        assert!(!x.allowed && x.rule == Some("skip-minor"), "{x:?}");
        assert!(x
            .reason
            .as_deref()
            .unwrap()
            .contains("stop at 1.2 first (install 1.2.3)"));
        assert_eq!(x.path, ["1.2.3", "1.3.0"]);
        // skip a major
        let x = p("1.9.2", "3.0.0");
        assert!(!x.allowed && x.rule == Some("skip-major"));
        // Required stops only; moving to the latest 2.x on the way is recommended.
        assert_eq!(x.path, ["2.0.1", "3.0.0"]);
        assert!(
            x.warnings[0].contains("not on the latest 2.x (2.1.4)"),
            "{x:?}"
        );
        // major upgrade from the latest minor: the earliest minor of the next major
        let x = p("1.9.0", "2.0.1");
        assert!(
            x.allowed && x.hops[0].rule == "major-upgrade" && x.warnings.is_empty(),
            "{x:?}"
        );
        // major upgrade skipping the next major's earliest minor
        let x = p("1.9.2", "2.1.0");
        assert!(!x.allowed && x.rule == Some("major-skip-minor"));
        assert_eq!(x.path, ["2.0.1", "2.1.0"]);
        // major upgrade from an older minor: allowed, strongly warned
        let x = p("1.4.5", "2.0.0");
        assert!(
            x.allowed && x.warnings[0].contains("not on the latest 1.x (1.9.2)"),
            "{x:?}"
        );
        // same version
        let x = p("1.2.3", "1.2.3");
        assert!(x.allowed && x.path.is_empty() && x.rule.is_none());
    }

    #[test]
    fn pre_releases_only_when_asked_for() {
        // Never a stop of its own accord.
        let x = p("1.9.2", "2.1.0");
        assert!(!x.path.iter().any(|s| s.contains("rc")), "{x:?}");
        // As the target: fine.
        let x = p("1.9.2", "2.0.0-rc.1");
        assert!(x.allowed && x.path == ["2.0.0-rc.1"], "{x:?}");
        // A development build is a pre-release of the next minor.
        let x = plan(&v("1.0.0"), &v("1.1.0-dev"), &[v("1.0.0")], false);
        assert!(x.allowed && x.hops[0].rule == "minor-upgrade", "{x:?}");
        assert!(plan(&v("1.1.0-rc.1"), &v("1.1.0"), &[], false).allowed);
    }

    #[test]
    fn no_way_there_is_said_plainly() {
        let x = plan(&v("1.0.0"), &v("1.2.0"), &[v("1.0.0"), v("1.2.0")], false);
        assert!(!x.allowed && x.path.is_empty());
        assert!(x.reason.unwrap().contains("no 1.1 release is known"));
    }
}
