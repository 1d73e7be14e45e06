//! Pull policy decisions, as tables of cases.

use wharf_scan::policy::{
    decide, AllowlistEntry, Decision, DenyReason, DenyRule, Finding, Policy, ScanState, Unscanned,
    MAX_LISTED_FINDINGS,
};
use wharf_scan::Severity::{self, Critical, High, Low, Medium, Unknown};

const NOW: i64 = 1_800_000_000;

fn finding(id: &str, aliases: &[&str], severity: Severity, fixed: Option<&str>) -> Finding {
    Finding {
        advisory_id: id.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        severity,
        package: "openssl".into(),
        version: "3.0.2".into(),
        fixed: fixed.map(Into::into),
    }
}

fn blocking(threshold: Severity) -> Policy {
    Policy {
        block_severity: Some(threshold),
        ..Policy::default()
    }
}

fn allow(id: &str, expires_at: Option<i64>) -> AllowlistEntry {
    AllowlistEntry {
        vuln_id: id.into(),
        expires_at,
        reason: "accepted risk".into(),
    }
}

fn deny_reason(decision: Decision) -> DenyReason {
    match decision {
        Decision::Deny(reason) => reason,
        Decision::Allow => panic!("expected a denial"),
    }
}

#[test]
fn default_policy_scans_on_push_and_never_refuses() {
    let policy = Policy::default();
    assert!(policy.scan_on_push);
    assert_eq!(policy.block_severity, None);
    assert_eq!(policy.unscanned, Unscanned::Allow);
    let critical = ScanState::Scanned(vec![finding("CVE-1", &[], Critical, None)]);
    for state in [
        critical,
        ScanState::NotScanned,
        ScanState::Failed("layer too large".into()),
    ] {
        assert_eq!(
            decide(&state, &policy, &[], NOW),
            Decision::Allow,
            "{state:?}"
        );
    }
}

#[test]
fn policy_serialises_with_lower_case_values() {
    let policy = Policy {
        scan_on_push: false,
        block_severity: Some(High),
        unscanned: Unscanned::Refuse,
    };
    let json = serde_json::to_value(&policy).unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "scan_on_push": false, "block_severity": "high", "unscanned": "refuse" })
    );
    assert_eq!(serde_json::from_value::<Policy>(json).unwrap(), policy);
    // Missing fields take the defaults.
    let partial: Policy = serde_json::from_str(r#"{"block_severity":"critical"}"#).unwrap();
    assert_eq!(partial, blocking(Critical));
}

#[test]
fn severity_thresholds() {
    // (threshold, the finding's severity, refused?)
    let cases = [
        (High, Medium, false),
        (High, High, true),
        (High, Critical, true),
        (Critical, High, false),
        (Critical, Critical, true),
        (Low, Low, true),
        (Low, Unknown, false),
        (Medium, Unknown, false),
        (Critical, Unknown, false),
        // Unknown is the lowest bucket: only a threshold of `unknown` refuses unknowns,
        // and that threshold refuses everything.
        (Unknown, Unknown, true),
        (Unknown, Low, true),
        (Unknown, Critical, true),
    ];
    for (threshold, severity, refused) in cases {
        let state = ScanState::Scanned(vec![finding("CVE-2023-1", &[], severity, None)]);
        let decision = decide(&state, &blocking(threshold), &[], NOW);
        assert_eq!(
            matches!(decision, Decision::Deny(_)),
            refused,
            "threshold {threshold}, finding {severity}: {decision:?}"
        );
    }
}

#[test]
fn no_findings_or_no_threshold_allows() {
    let clean = ScanState::Scanned(Vec::new());
    assert_eq!(
        decide(&clean, &blocking(Unknown), &[], NOW),
        Decision::Allow
    );
    let bad = ScanState::Scanned(vec![finding("CVE-1", &[], Critical, None)]);
    let no_threshold = Policy {
        unscanned: Unscanned::Refuse,
        ..Policy::default()
    };
    assert_eq!(decide(&bad, &no_threshold, &[], NOW), Decision::Allow);
}

#[test]
fn allowlist_entries() {
    let ghsa = finding(
        "GHSA-abcd-efgh-ijkl",
        &["CVE-2023-1234", "PYSEC-2023-9"],
        Critical,
        Some("3.0.7"),
    );
    // (entry, allowed?)
    let cases = [
        (allow("GHSA-abcd-efgh-ijkl", None), true),
        (allow("ghsa-ABCD-efgh-ijkl", None), true),
        (allow("CVE-2023-1234", None), true),
        (allow("cve-2023-1234", None), true),
        (allow(" CVE-2023-1234 ", None), true),
        (allow("PYSEC-2023-9", None), true),
        (allow("CVE-2023-12345", None), false),
        (allow("CVE-2023-123", None), false),
        (allow("CVE-2023-1234", Some(NOW + 1)), true),
        // Expired: `expires_at <= now` no longer applies.
        (allow("CVE-2023-1234", Some(NOW)), false),
        (allow("CVE-2023-1234", Some(NOW - 86_400)), false),
    ];
    let state = ScanState::Scanned(vec![ghsa]);
    for (entry, allowed) in cases {
        let decision = decide(&state, &blocking(High), std::slice::from_ref(&entry), NOW);
        assert_eq!(
            decision == Decision::Allow,
            allowed,
            "{entry:?}: {decision:?}"
        );
    }
}

#[test]
fn allowlist_sets_aside_only_the_findings_it_names() {
    let state = ScanState::Scanned(vec![
        finding("CVE-2023-1", &[], Critical, Some("3.0.7")),
        finding("CVE-2023-2", &[], High, None),
    ]);
    let reason = deny_reason(decide(
        &state,
        &blocking(High),
        &[
            allow("CVE-2023-1", None),
            allow("CVE-2023-2", Some(NOW - 1)),
        ],
        NOW,
    ));
    assert_eq!(reason.rule, DenyRule::BlockSeverity(High));
    assert_eq!(reason.blocking_count, 1);
    assert_eq!(reason.findings.len(), 1);
    assert_eq!(reason.findings[0].advisory_id, "CVE-2023-2");
}

#[test]
fn unscanned_and_failed_scans() {
    let refuse = Policy {
        unscanned: Unscanned::Refuse,
        ..Policy::default()
    };
    let allow_unscanned = blocking(Critical);
    // (state, policy, expected rule when refused)
    let cases = [
        (ScanState::NotScanned, &allow_unscanned, None),
        (ScanState::Failed("boom".into()), &allow_unscanned, None),
        (ScanState::NotScanned, &refuse, Some(DenyRule::NotScanned)),
        (
            ScanState::Failed("layer exceeds 2 GiB".into()),
            &refuse,
            Some(DenyRule::ScanFailed("layer exceeds 2 GiB".into())),
        ),
    ];
    for (state, policy, expected) in cases {
        let decision = decide(&state, policy, &[], NOW);
        match (decision, expected) {
            (Decision::Allow, None) => {}
            (Decision::Deny(reason), Some(rule)) => {
                assert_eq!(reason.rule, rule);
                assert!(reason.findings.is_empty());
            }
            (decision, expected) => panic!("{state:?}: {decision:?}, expected {expected:?}"),
        }
    }

    let not_scanned = deny_reason(decide(&ScanState::NotScanned, &refuse, &[], NOW));
    assert_eq!(
        not_scanned.message(),
        "pull refused by the repository's vulnerability policy (unscanned images are refused): \
         the image has not been scanned yet"
    );
    let failed = deny_reason(decide(
        &ScanState::Failed("layer exceeds 2 GiB".into()),
        &refuse,
        &[],
        NOW,
    ));
    assert_eq!(
        failed.message(),
        "pull refused by the repository's vulnerability policy (unscanned images are refused): \
         the image's scan failed (layer exceeds 2 GiB), so it counts as not scanned"
    );
}

#[test]
fn message_lists_findings_worst_first_with_fixes() {
    let state = ScanState::Scanned(vec![
        finding("CVE-2023-0002", &[], High, None),
        finding("CVE-2023-0001", &[], Low, Some("3.0.3")),
        finding("CVE-2023-1234", &[], Critical, Some("3.0.7")),
        finding(
            "DSA-5000-1",
            &["CVE-2023-9999"],
            High,
            Some("3.0.2-1+deb12u1"),
        ),
    ]);
    let reason = deny_reason(decide(&state, &blocking(High), &[], NOW));
    assert_eq!(reason.blocking_count, 3);
    assert_eq!(
        reason.message(),
        "pull refused by the repository's vulnerability policy (block severity >= high): \
         3 vulnerabilities: \
         CVE-2023-1234 (critical) in openssl 3.0.2, fixed in 3.0.7; \
         CVE-2023-0002 (high) in openssl 3.0.2, no fix yet; \
         DSA-5000-1 (aka CVE-2023-9999) (high) in openssl 3.0.2, fixed in 3.0.2-1+deb12u1"
    );

    let one = ScanState::Scanned(vec![finding("CVE-2023-1234", &[], Critical, None)]);
    let message = deny_reason(decide(&one, &blocking(Critical), &[], NOW)).message();
    assert!(
        message.contains(": 1 vulnerability: CVE-2023-1234"),
        "{message}"
    );
}

#[test]
fn long_lists_are_truncated_with_a_count() {
    let findings: Vec<Finding> = (0..25)
        .map(|n| finding(&format!("CVE-2024-{n:04}"), &[], High, None))
        .chain([finding("CVE-2024-9999", &[], Critical, None)])
        .collect();
    let reason = deny_reason(decide(
        &ScanState::Scanned(findings),
        &blocking(High),
        &[],
        NOW,
    ));
    assert_eq!(reason.blocking_count, 26);
    assert_eq!(reason.findings.len(), MAX_LISTED_FINDINGS);
    assert_eq!(
        reason.findings[0].advisory_id, "CVE-2024-9999",
        "the worst comes first"
    );
    let message = reason.message();
    assert!(
        message.contains(": 26 vulnerabilities: CVE-2024-9999 (critical)"),
        "{message}"
    );
    assert!(message.ends_with("; and 16 more"), "{message}");
    assert_eq!(message.matches(" in openssl ").count(), MAX_LISTED_FINDINGS);
    assert!(message.contains("CVE-2024-0008") && !message.contains("CVE-2024-0009"));
}
