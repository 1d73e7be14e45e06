//! Version orders, as tables of `a op b` per scheme. The cases are the edges each format
//! is known for (design §3.2); where a reference tool was at hand the expectation was
//! checked with it (dpkg here; the rest in the research brief's differential tests).

use std::cmp::Ordering::{self, Equal, Greater, Less};

use wharf_scan::versions::{compare, Scheme};

fn check(scheme: Scheme, cases: &[(&str, Ordering, &str)]) {
    for &(a, expected, b) in cases {
        assert_eq!(
            compare(scheme, a, b),
            Some(expected),
            "{scheme:?}: {a} vs {b}"
        );
        assert_eq!(
            compare(scheme, b, a),
            Some(expected.reverse()),
            "{scheme:?}: {b} vs {a} (reversed)"
        );
    }
}

fn invalid(scheme: Scheme, versions: &[&str]) {
    for v in versions {
        assert_eq!(
            compare(scheme, v, "1.0"),
            None,
            "{scheme:?}: {v:?} should not parse"
        );
    }
}

#[test]
fn dpkg() {
    check(
        Scheme::Dpkg,
        &[
            ("1:1.0~rc1", Less, "1:1.0"),
            ("1.0~rc1", Less, "1.0~rc1+b1"),
            ("2:0.1", Greater, "1:9.9"),
            ("1.2.1-2.2+wheezy2", Less, "1.2.1-2.2+wheezy3"),
            ("1.2.1-2.2+wheezy4+deb7u1", Greater, "1.2.1-2.2+wheezy3"),
            ("1.2.1-2.2", Less, "1.2.1-2.2+wheezy3"),
            ("1.0-1", Greater, "1.0-1~bpo12+1"),
            ("1.0", Equal, "1.0-0"),
            ("0:1.0", Equal, "1.0"),
            ("1.00", Equal, "1.0"),
            ("1.0a", Equal, "1.0a0"),
            ("1.0~", Equal, "1.0~0"),
            ("1.0", Less, "1.0.0"),
            ("1.0~", Less, "1.0"),
            ("1.0~~", Less, "1.0~"),
            ("1.0a", Greater, "1.0"),
            ("1.0+", Greater, "1.0a"),
            ("2.38.1-5", Less, "2.38.1-5+b1"),
            ("3.13.0-24.46", Less, "3.13.0-206.257"),
        ],
    );
    invalid(Scheme::Dpkg, &["", "1.0 beta", "a:1.0", "1.0-", "1.0\n"]);
}

#[test]
fn apk() {
    check(
        Scheme::Apk,
        &[
            ("1.2.3_rc1", Less, "1.2.3"),
            ("1.2.3_p1", Greater, "1.2.3"),
            ("1.2.3-r1", Greater, "1.2.3"),
            ("0.6.20-r0", Less, "0.6.21-r0"),
            ("1.2.3a", Greater, "1.2.3_rc1"),
            ("1.2.3a", Less, "1.2.3b"),
            ("1.2.3a", Less, "1.2.4"),
            ("1.2.3z", Less, "1.2.3.1"),
            ("1.2.3", Less, "1.2.3.1"),
            ("1.2.3_alpha", Less, "1.2.3_beta"),
            ("1.2.3_beta", Less, "1.2.3_pre"),
            ("1.2.3_pre", Less, "1.2.3_rc"),
            ("1.2.3_rc", Less, "1.2.3"),
            ("1.2.3", Less, "1.2.3_cvs"),
            ("1.2.3_cvs", Less, "1.2.3_svn"),
            ("1.2.3_svn", Less, "1.2.3_git"),
            ("1.2.3_git", Less, "1.2.3_hg"),
            ("1.2.3_hg", Less, "1.2.3_p"),
            ("1.2.3_rc1", Less, "1.2.3_rc2"),
            ("1.2.3_rc", Less, "1.2.3_rc1"),
            ("1.2.3_git20230101", Less, "1.2.3_git20230102"),
            ("1.2.3_alpha1_p2", Greater, "1.2.3_alpha1"),
            ("1.2.3_alpha1_p2", Less, "1.2.3_alpha2"),
            ("1.2.3_p1-r0", Greater, "1.2.3-r5"),
            ("1.2.3-r9", Less, "1.2.3-r10"),
            ("1.2.3-r0", Greater, "1.2.3"),
            ("1.02", Less, "1.1"),
            ("1.00", Less, "1.0"),
            ("1.0", Less, "1.1"),
            ("1.10", Greater, "1.9"),
            ("1.001", Less, "1.01"),
            ("2.0", Greater, "1.99999999999999999999999"),
            ("1.2.3~abc123", Less, "1.2.3~abc124"),
            ("1.2.3", Equal, "1.2.3"),
            ("1.2.3_rc1-r2", Equal, "1.2.3_rc1-r2"),
        ],
    );
    invalid(
        Scheme::Apk,
        &[
            "",
            "abc",
            "1.2.3_foo",
            "1.2.3-r",
            "1..2",
            "1.2.3A",
            "1.2.3-r1x",
            ".1",
            "1.2.3-",
        ],
    );
}

#[test]
fn rpm() {
    check(
        Scheme::Rpm,
        &[
            ("1.0~rc1", Less, "1.0"),
            ("1.0^post1", Greater, "1.0"),
            ("1:1.0-1.el9", Greater, "2.0-1.el9"),
            ("1.0-1.el9_2", Greater, "1.0-1.el9"),
            ("1.0a", Greater, "1.0"),
            ("1.0-1", Less, "1.0-2"),
            ("1.0", Less, "1.0.1"),
            ("1.10", Greater, "1.9"),
            ("0:1.0-1", Equal, "1.0-1"),
            ("1.0", Equal, "1.00"),
            ("2:1.0", Greater, "1:9"),
        ],
    );
    invalid(Scheme::Rpm, &["", "...", "1.0 1"]);
}

#[test]
fn pep440() {
    check(
        Scheme::Pep440,
        &[
            ("1.0.post1", Greater, "1.0"),
            ("1.0rc1", Less, "1.0"),
            ("1.0.dev1", Less, "1.0a1"),
            ("1.0a1", Less, "1.0b1"),
            ("1.0b1", Less, "1.0rc1"),
            ("1.0+local.1", Greater, "1.0"),
            ("3.2.0", Equal, "3.2"),
            ("5.2b1", Less, "5.2"),
            ("1!0.1", Greater, "2.0"),
            ("1.0.post1.dev1", Less, "1.0.post1"),
            ("1.0-1", Equal, "1.0.post1"),
            ("v1.0", Equal, "1.0"),
            ("1.0.0.0", Equal, "1"),
            ("1.26.18", Greater, "1.26.17"),
            ("2.0.0", Greater, "1.26.18"),
        ],
    );
    invalid(Scheme::Pep440, &["", "1.0-beta-gamma", "one", "1.0_"]);
}

#[test]
fn semver() {
    // The SemVer 2.0 specification's own precedence example, in order.
    let ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
    ];
    for pair in ordered.windows(2) {
        check(Scheme::Semver, &[(pair[0], Less, pair[1])]);
    }
    check(
        Scheme::Semver,
        &[
            ("1.0.0-alpha.1", Less, "1.0.0"),
            ("1.0.0-alpha.10", Greater, "1.0.0-alpha.9"),
            ("1.0.0+build5", Equal, "1.0.0+build1"),
            ("0.14.9", Less, "0.14.10"),
            ("v1.2.3", Equal, "1.2.3"),
        ],
    );
    invalid(Scheme::Semver, &["", "1.2.3.4", "x", "1.2.3-", "01.2.3"]);
}

#[test]
fn go() {
    check(
        Scheme::Go,
        &[
            ("v0.0.0-20210101000000-abcdef123456", Less, "v0.1.0"),
            ("v2.0.0+incompatible", Equal, "v2.0.0"),
            ("v1.2.4-0.20230101000000-abcdef123456", Greater, "v1.2.3"),
            ("v1.2.4-0.20230101000000-abcdef123456", Less, "v1.2.4"),
            // Toolchain versions, as the `stdlib` package carries them.
            ("go1.19.8", Equal, "1.19.8"),
            ("go1.20", Less, "go1.20.1"),
            ("1.21", Equal, "1.21.0"),
            ("1.21rc2", Less, "1.21.0"),
            ("1.21rc1", Less, "1.21rc2"),
            ("go1.21.0", Greater, "go1.20.14"),
        ],
    );
    invalid(Scheme::Go, &["", "devel", "go", "1.2.3.4"]);
}

#[test]
fn maven() {
    check(
        Scheme::Maven,
        &[
            ("1.0-RC1", Less, "1.0"),
            ("1.0-SNAPSHOT", Less, "1.0"),
            ("1.0-RC1", Less, "1.0-SNAPSHOT"),
            ("1.0-M1", Less, "1.0-RC1"),
            ("1.0.0", Equal, "1"),
            ("1.0-sp1", Greater, "1.0"),
            ("1.0-alpha-1", Less, "1.0-beta-1"),
            ("2.0.0.Final", Equal, "2.0.0"),
            ("1.0-ga", Equal, "1.0"),
            ("1.0-alpha1", Equal, "1.0-a1"),
            ("1.0-cr1", Equal, "1.0-rc1"),
            ("1.10", Greater, "1.9"),
            ("2.17.1", Greater, "2.17.0"),
        ],
    );
}

#[test]
fn rubygems() {
    check(
        Scheme::RubyGems,
        &[
            ("1.0", Equal, "1"),
            ("1.0.0", Equal, "1"),
            ("1.0.a", Less, "1.0"),
            ("1.0.a", Equal, "1.a"),
            ("1.0.0.pre", Less, "1.0.0"),
            ("1.0-1", Less, "1.0"),
            ("1.0.b1", Greater, "1.0.a2"),
            ("1.0.a10", Greater, "1.0.a9"),
            ("1.9.3", Less, "1.10"),
            ("2.0.0.rc1", Less, "2.0.0"),
            ("2.0.0.rc1", Less, "2.0.0.rc2"),
            ("1.0.a", Less, "1.0.0.1"),
            ("1.0a1", Equal, "1.0.a.1"),
            ("6.1.7.3", Greater, "6.1.7.2"),
            ("123456789012345678901234567890", Greater, "99"),
        ],
    );
    invalid(
        Scheme::RubyGems,
        &["", "1..0", "a1", "1.0-", "1.0 beta", "-1"],
    );
}

#[test]
fn unknown_ecosystems_only_know_equality() {
    assert_eq!(compare(Scheme::Unknown, "1.0", "1.0"), Some(Equal));
    assert_eq!(compare(Scheme::Unknown, "1.0", "1.1"), None);
    assert_eq!(compare(Scheme::Unknown, "", ""), None);
}

/// Odd input never panics, whatever the scheme.
#[test]
fn hostile_versions_do_not_panic() {
    let schemes = [
        Scheme::Dpkg,
        Scheme::Apk,
        Scheme::Rpm,
        Scheme::Pep440,
        Scheme::Semver,
        Scheme::Go,
        Scheme::Maven,
        Scheme::RubyGems,
        Scheme::Unknown,
    ];
    let long_number = "9".repeat(200);
    let too_long = "1.".repeat(1000);
    let inputs = [
        "",
        "~",
        "^",
        "-",
        ":",
        "+",
        "_",
        ".",
        "~~^^..--",
        "1:",
        ":1",
        "99999999999999999999999999:1.0",
        "1.0-r99999999999999999999999999",
        "1.0_p99999999999999999999999",
        "1!2!3",
        "0000000000000000000000000000001",
        "é",
        "1.0é",
        "١٢٣",
        "1.0\u{0}",
        long_number.as_str(),
        too_long.as_str(),
    ];
    for scheme in schemes {
        for a in inputs {
            for b in inputs.iter().chain(&["1.0", "0"]) {
                let _ = compare(scheme, a, b);
            }
        }
    }
}
