//! The vulnerability scanner's logic, free of I/O (design: docs/scanning.md).
//!
//! - [`layer`]: reads image layers (gzip, zstd or plain tar) in bounded memory, keeps
//!   only the files the inventory needs, applies whiteouts and opaque directories, and
//!   resolves links inside the image (never on the host).
//! - [`inventory`]: turns the kept files into [`Package`]s (dpkg, apk, rpm, Python, npm,
//!   Go and Rust binaries, Java archives, RubyGems) and the image's OS.
//! - [`versions`]: each ecosystem's own version order.
//! - [`osv`]: the OSV advisory format, CVSS scoring, and whether an advisory affects a
//!   package version.
//! - [`matching`]: matches distinct packages against a set of advisories, and diffs the
//!   result against the previous match (re-matching without rescanning).
//! - [`sbom`]: an inventory as an SPDX 2.3 JSON document, and the OCI referrer manifest
//!   that attaches it to an image.
//! - [`policy`]: whether a pull is allowed, given an image's vulnerabilities.

pub mod inventory;
pub mod layer;
pub mod matching;
pub mod osv;
pub mod policy;
pub mod sbom;
pub mod versions;

/// One installed package, as the scanner found it in an image.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Package {
    /// The OSV ecosystem the package's advisories are published under, with the
    /// distribution's release for OS packages: `Debian:12`, `Alpine:v3.19`,
    /// `Ubuntu:22.04:LTS`, `PyPI`, `npm`, `Go`, `crates.io`, `Maven`, `RubyGems`.
    pub ecosystem: String,
    /// The name as installed (the binary package for distributions).
    pub name: String,
    /// The version as installed.
    pub version: String,
    /// The name that advisories use: the source package for dpkg, apk (origin) and rpm
    /// (from SOURCERPM), the PEP 503 normalised name for PyPI, `group:artifact` for
    /// Maven; otherwise `name`.
    pub match_name: String,
    /// The version that advisories use: the source package's version where it differs
    /// from the binary's; otherwise `version`.
    pub match_version: String,
    /// Package URL (purl), for the SBOM.
    pub purl: String,
    /// Where in the image it was found (a path without a leading `/`).
    pub location: String,
}

/// Severity buckets, in the order that policies compare them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Unknown,
    ];

    /// The bucket of a CVSS base score (CVSS v3/v4 qualitative rating scale).
    pub fn from_score(score: f64) -> Severity {
        match score {
            s if s >= 9.0 => Severity::Critical,
            s if s >= 7.0 => Severity::High,
            s if s >= 4.0 => Severity::Medium,
            s if s > 0.0 => Severity::Low,
            _ => Severity::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Reads `critical`, `HIGH`, `moderate` (GitHub's word for medium), …
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s.to_ascii_lowercase().as_str() {
            "critical" => Severity::Critical,
            "high" | "important" => Severity::High,
            "medium" | "moderate" => Severity::Medium,
            "low" | "negligible" => Severity::Low,
            "unknown" | "none" => Severity::Unknown,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
