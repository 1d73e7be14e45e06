//! Each ecosystem's own version order (design: docs/design/scanning-research.md §3).
//!
//! An advisory says "fixed in 1.2.1-2.2+wheezy3"; whether an installed version is older
//! depends on the ecosystem's rules, not on string or SemVer order. The crates used here
//! were checked against each ecosystem's reference implementation (§3.2). Alpine and
//! RubyGems have no suitable crate, and the dpkg crate departs from dpkg on empty digit
//! runs, so those orders are written here from the formats' documented rules ([`apk`],
//! [`dpkg`], [`rubygems`]).
//!
//! [`Version::parse`] parses once so that a caller comparing one installed version with
//! many advisory bounds does not re-parse it; [`compare`] is the one-shot convenience.

use std::cmp::Ordering;
use std::str::FromStr;

pub mod apk;
pub mod dpkg;
pub mod rubygems;

/// A version order. Several OSV ecosystems share one (`Debian:12` and `Ubuntu:22.04:LTS`
/// are both dpkg).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Debian and Ubuntu (`dpkg --compare-versions`).
    Dpkg,
    /// Alpine (`apk version -t`).
    Apk,
    /// Red Hat, Rocky, AlmaLinux, SUSE, openSUSE, … (`rpmvercmp` on `[epoch:]version-release`).
    Rpm,
    /// PyPI.
    Pep440,
    /// SemVer 2.0 precedence (build metadata ignored): npm, crates.io, NuGet, Packagist,
    /// and every range of type `SEMVER` whatever its ecosystem.
    Semver,
    /// Go modules (`v1.2.3`, pseudo-versions) and the toolchain (`go1.19.8`, `1.21rc2`).
    Go,
    /// Maven's `ComparableVersion`.
    Maven,
    /// RubyGems' `Gem::Version`.
    RubyGems,
    /// An ecosystem without a known order: only identical strings compare (as equal).
    Unknown,
}

impl Scheme {
    /// The order of an OSV ecosystem string; the release suffix (`Debian:12`) does not
    /// matter.
    pub fn of(ecosystem: &str) -> Scheme {
        let base = ecosystem.split(':').next().unwrap_or_default();
        match base {
            "Debian" | "Ubuntu" => Scheme::Dpkg,
            "Alpine" | "Wolfi" | "Chainguard" => Scheme::Apk,
            "Red Hat" | "Rocky Linux" | "AlmaLinux" | "openSUSE" | "SUSE" | "Mageia"
            | "openEuler" => Scheme::Rpm,
            "PyPI" => Scheme::Pep440,
            "npm" | "crates.io" | "NuGet" | "Packagist" | "Pub" | "Hex" => Scheme::Semver,
            "Go" => Scheme::Go,
            "Maven" => Scheme::Maven,
            "RubyGems" => Scheme::RubyGems,
            _ => Scheme::Unknown,
        }
    }
}

/// A version parsed under one scheme. Parse the installed version once, then compare it
/// with each advisory bound through [`Version::compare`].
#[derive(Debug, Clone)]
pub enum Version<'a> {
    Dpkg(dpkg::DpkgVersion<'a>),
    Apk(apk::ApkVersion),
    /// rpm's comparison works on the string itself without allocating; kept as text.
    Rpm(&'a str),
    Pep440(pep440_rs::Version),
    /// SemVer and Go (after their prefixes are taken off).
    Semver(semver::Version),
    Maven(mvn_version::ComparableVersion),
    RubyGems(rubygems::GemVersion),
}

impl<'a> Version<'a> {
    /// `None` when `s` is not a version under `scheme` (and always for
    /// [`Scheme::Unknown`]).
    pub fn parse(scheme: Scheme, s: &'a str) -> Option<Version<'a>> {
        // Control characters and very long strings are never versions; refusing them
        // early keeps the crates below away from hostile input.
        if s.is_empty() || s.len() > MAX_VERSION_LEN || s.chars().any(char::is_control) {
            return None;
        }
        match scheme {
            Scheme::Dpkg => dpkg::DpkgVersion::parse(s).map(Version::Dpkg),
            Scheme::Apk => apk::ApkVersion::parse(s).map(Version::Apk),
            Scheme::Rpm => valid_rpm(s).then_some(Version::Rpm(s)),
            Scheme::Pep440 => pep440_rs::Version::from_str(s).ok().map(Version::Pep440),
            Scheme::Semver => parse_semver(s, false).map(Version::Semver),
            Scheme::Go => parse_semver(s, true).map(Version::Semver),
            Scheme::Maven => Some(Version::Maven(mvn_version::ComparableVersion::new(s))),
            Scheme::RubyGems => rubygems::GemVersion::parse(s).map(Version::RubyGems),
            Scheme::Unknown => None,
        }
    }

    /// The order of two versions of the same scheme; `None` when the schemes differ.
    pub fn compare(&self, other: &Version<'_>) -> Option<Ordering> {
        Some(match (self, other) {
            (Version::Dpkg(a), Version::Dpkg(b)) => a.cmp(b),
            (Version::Apk(a), Version::Apk(b)) => a.cmp(b),
            (Version::Rpm(a), Version::Rpm(b)) => rpm_version::rpm_evr_compare(a, b),
            (Version::Pep440(a), Version::Pep440(b)) => a.cmp(b),
            // Precedence, not `Ord`: build metadata must not order versions.
            (Version::Semver(a), Version::Semver(b)) => a.cmp_precedence(b),
            (Version::Maven(a), Version::Maven(b)) => a.cmp(b),
            (Version::RubyGems(a), Version::RubyGems(b)) => a.cmp(b),
            _ => return None,
        })
    }
}

/// Longer strings are not versions in any ecosystem; a cap bounds the work per compare.
const MAX_VERSION_LEN: usize = 256;

/// Compares two versions under `scheme`; `None` when either does not parse. Under
/// [`Scheme::Unknown`] identical strings are equal and nothing else is known.
pub fn compare(scheme: Scheme, a: &str, b: &str) -> Option<Ordering> {
    if scheme == Scheme::Unknown {
        return (a == b && !a.is_empty()).then_some(Ordering::Equal);
    }
    Version::parse(scheme, a)?.compare(&Version::parse(scheme, b)?)
}

/// A cheap necessary condition for two versions to be equal under `scheme`: the hash of
/// their digit runs with leading zeros dropped and all-zero runs skipped (so `3.2` and
/// `3.2.0`, `1.0` and `1.00`, `0:1.0` and `1.0` agree). Versions with different
/// fingerprints are never equal, which lets a long `versions[]` list be scanned without
/// parsing every entry. SemVer build metadata is ignored by precedence, so it is cut.
pub fn equality_fingerprint(scheme: Scheme, s: &str) -> u64 {
    let s = match scheme {
        Scheme::Semver | Scheme::Go => s.split('+').next().unwrap_or_default(),
        _ => s,
    };
    // FNV-1a: stable, allocation-free and good enough for a pre-filter.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    };
    for run in s.split(|c: char| !c.is_ascii_digit()) {
        let significant = run.trim_start_matches('0');
        if significant.is_empty() {
            continue;
        }
        significant.bytes().for_each(&mut mix);
        mix(b'.');
    }
    hash
}

/// rpm compares any string; refuse the ones with nothing to compare or with spaces, which
/// no package manager writes.
fn valid_rpm(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_alphanumeric()) && !s.chars().any(char::is_whitespace)
}

/// SemVer 2.0, tolerating what registries and OSV data carry around it: a `v` or `=`
/// prefix, and for Go the toolchain's `go` prefix and short forms (`1.21`, `1.21rc2`,
/// `go1.19.8`), which are padded to three components.
fn parse_semver(s: &str, go: bool) -> Option<semver::Version> {
    let mut s = s.trim();
    if go {
        s = s.strip_prefix("go").unwrap_or(s);
    }
    s = s.strip_prefix(['v', 'V', '=']).unwrap_or(s);
    if let Ok(v) = semver::Version::parse(s) {
        return Some(v);
    }
    pad_semver(s)
}

/// `1`, `1.2`, `1.2rc1`, `1.2-beta` → the three-component form, or `None`.
fn pad_semver(s: &str) -> Option<semver::Version> {
    let (main, build) = match s.split_once('+') {
        Some((m, b)) => (m, Some(b)),
        None => (s, None),
    };
    let core_end = main
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(main.len());
    let (core, rest) = main.split_at(core_end);
    let numbers: Vec<&str> = core.split('.').collect();
    if numbers.is_empty() || numbers.len() > 3 || numbers.iter().any(|n| n.is_empty()) {
        return None;
    }
    let mut text = numbers.join(".");
    for _ in numbers.len()..3 {
        text.push_str(".0");
    }
    if !rest.is_empty() {
        let pre = rest.strip_prefix('-').unwrap_or(rest);
        text.push('-');
        text.push_str(pre);
    }
    if let Some(build) = build {
        text.push('+');
        text.push_str(build);
    }
    semver::Version::parse(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_of_osv_ecosystems() {
        assert_eq!(Scheme::of("Debian:12"), Scheme::Dpkg);
        assert_eq!(Scheme::of("Ubuntu:Pro:14.04:LTS"), Scheme::Dpkg);
        assert_eq!(Scheme::of("Alpine:v3.19"), Scheme::Apk);
        assert_eq!(Scheme::of("Red Hat:enterprise_linux:9"), Scheme::Rpm);
        assert_eq!(Scheme::of("Rocky Linux:9"), Scheme::Rpm);
        assert_eq!(Scheme::of("PyPI"), Scheme::Pep440);
        assert_eq!(Scheme::of("crates.io"), Scheme::Semver);
        assert_eq!(Scheme::of("Go"), Scheme::Go);
        assert_eq!(Scheme::of("Maven"), Scheme::Maven);
        assert_eq!(Scheme::of("RubyGems"), Scheme::RubyGems);
        assert_eq!(Scheme::of("Hackage"), Scheme::Unknown);
        assert_eq!(Scheme::of(""), Scheme::Unknown);
    }

    #[test]
    fn fingerprint_agrees_for_equal_spellings() {
        let same = [
            (Scheme::Pep440, "3.2", "3.2.0"),
            (Scheme::Pep440, "1.0.post0.dev1", "1.0.post.dev1"),
            (Scheme::Dpkg, "0:1.0", "1.0-0"),
            (Scheme::Semver, "1.0.0+build5", "1.0.0+build1"),
            (Scheme::Maven, "1.0.0.Final", "1"),
        ];
        for (scheme, a, b) in same {
            assert_eq!(compare(scheme, a, b), Some(Ordering::Equal), "{a} {b}");
            assert_eq!(
                equality_fingerprint(scheme, a),
                equality_fingerprint(scheme, b),
                "{a} {b}"
            );
        }
        assert_ne!(
            equality_fingerprint(Scheme::Pep440, "3.2"),
            equality_fingerprint(Scheme::Pep440, "3.3")
        );
    }
}
