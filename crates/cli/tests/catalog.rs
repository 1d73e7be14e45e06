//! The release catalog (`releases.toml`) is consistent, and this build agrees with it.

use std::collections::HashSet;

use semver::Version;

#[derive(serde::Deserialize)]
struct Catalog {
    release: Vec<Release>,
}

#[derive(serde::Deserialize)]
struct Release {
    version: String,
    date: String,
    schema_level: u32,
    commit_subject: String,
    migrations: Vec<Migration>,
    supports: Supports,
}

#[derive(serde::Deserialize)]
struct Migration {
    level: u32,
    name: String,
    kind: String,
}

#[derive(serde::Deserialize)]
struct Supports {
    postgresql: String,
    docker_engine_api: String,
}

fn catalog() -> Catalog {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../releases.toml");
    let text = std::fs::read_to_string(path).expect("releases.toml");
    toml::from_str(&text).expect("releases.toml parses")
}

#[test]
fn releases_are_ordered_and_patch_releases_never_migrate() {
    let c = catalog();
    assert!(!c.release.is_empty());
    let mut previous: Option<(Version, u32)> = None;
    let mut levels = HashSet::new();
    for r in &c.release {
        let v = Version::parse(&r.version).unwrap_or_else(|e| panic!("{}: {e}", r.version));
        assert!(
            v.pre.is_empty(),
            "{}: a release is not a pre-release",
            r.version
        );
        assert_eq!(r.commit_subject, format!("Release {}", r.version));
        assert!(
            r.date.len() == 10 && r.date.as_bytes()[4] == b'-',
            "{}: date {}",
            r.version,
            r.date
        );
        assert!(!r.supports.postgresql.is_empty() && !r.supports.docker_engine_api.is_empty());
        for m in &r.migrations {
            assert!(
                ["initial", "expand", "contract", "background"].contains(&m.kind.as_str()),
                "{}: migration {} has kind {}",
                r.version,
                m.name,
                m.kind
            );
            assert!(
                levels.insert(m.level),
                "migration level {} is in two releases",
                m.level
            );
            assert!(
                m.level <= r.schema_level,
                "{}: migration {} beyond its schema level",
                r.version,
                m.name
            );
        }
        if let Some((pv, plevel)) = &previous {
            assert!(v > *pv, "{} must come after {pv}", r.version);
            assert!(
                r.schema_level >= *plevel,
                "{}: schema level went down",
                r.version
            );
            let patch = v.major == pv.major && v.minor == pv.minor;
            if patch {
                assert!(
                    r.migrations.is_empty() && r.schema_level == *plevel,
                    "{}: a patch release must not migrate data",
                    r.version
                );
            } else if r.schema_level > *plevel {
                assert!(
                    r.migrations.iter().any(|m| m.level == r.schema_level),
                    "{}: raises the schema level without a migration",
                    r.version
                );
            }
        }
        previous = Some((v, r.schema_level));
    }
}

#[test]
fn this_build_agrees_with_the_catalog() {
    let c = catalog();
    let own = Version::parse(env!("CARGO_PKG_VERSION")).unwrap();
    let latest = c.release.last().unwrap();
    let latest_version = Version::parse(&latest.version).unwrap();
    if own.pre.is_empty() {
        // A release build: the catalog has it, at this build's schema level.
        let r = c
            .release
            .iter()
            .find(|r| r.version == own.to_string())
            .unwrap_or_else(|| panic!("release {own} is not in releases.toml"));
        assert_eq!(r.schema_level, wharf_server::SCHEMA_LEVEL);
    } else {
        // A development build comes after every release and never below its schema.
        assert!(
            own > latest_version,
            "{own} must be newer than the latest release {latest_version}"
        );
        assert!(wharf_server::SCHEMA_LEVEL >= latest.schema_level);
    }
}
