//! The release catalog, `releases.toml` at the repository's root.

use std::collections::HashSet;

use semver::Version;

/// The catalog this binary was built with.
pub const EMBEDDED: &str = include_str!("../../../releases.toml");

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Catalog {
    #[serde(rename = "release")]
    pub releases: Vec<Release>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Release {
    #[serde(deserialize_with = "version")]
    pub version: Version,
    pub date: String,
    pub schema_level: u32,
    pub commit_subject: String,
    #[serde(default)]
    pub migrations: Vec<Migration>,
    pub supports: Supports,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Migration {
    pub level: u32,
    pub name: String,
    /// initial, expand, contract or background
    pub kind: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Supports {
    pub postgresql: String,
    pub docker_engine_api: String,
    #[serde(default)]
    pub oci_distribution: Option<String>,
}

fn version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
    let s = String::deserialize(d)?;
    Version::parse(&s).map_err(|e| serde::de::Error::custom(format!("{s:?} is not a version: {e}")))
}

use serde::Deserialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("the release catalog does not parse: {0}")]
    Parse(String),
    #[error("the release catalog is inconsistent: {0}")]
    Invalid(String),
}

impl Catalog {
    /// The catalog embedded in this binary (checked when the build's tests ran).
    pub fn embedded() -> Catalog {
        Catalog::parse(EMBEDDED)
            .expect("the embedded release catalog is valid (the test suite checks it)")
    }

    /// Parses and checks a catalog: versions strictly increasing and not pre-releases,
    /// schema levels never decreasing, a patch release never migrating data, a raised
    /// schema level always coming with its migration, every migration in exactly one
    /// release, migration kinds known.
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        let c: Catalog = toml::from_str(text).map_err(|e| CatalogError::Parse(e.to_string()))?;
        let bad = |m: String| Err(CatalogError::Invalid(m));
        if c.releases.is_empty() {
            return bad("it lists no release".into());
        }
        let mut levels = HashSet::new();
        let mut previous: Option<&Release> = None;
        for r in &c.releases {
            let v = &r.version;
            if !v.pre.is_empty() {
                return bad(format!("{v}: a pre-release is not a release"));
            }
            for m in &r.migrations {
                if !["initial", "expand", "contract", "background"].contains(&m.kind.as_str()) {
                    return bad(format!(
                        "{v}: migration {} has unknown kind {}",
                        m.name, m.kind
                    ));
                }
                if !levels.insert(m.level) {
                    return bad(format!(
                        "migration level {} belongs to two releases",
                        m.level
                    ));
                }
                if m.level > r.schema_level {
                    return bad(format!(
                        "{v}: migration {} is beyond its schema level",
                        m.name
                    ));
                }
            }
            if let Some(p) = previous {
                if v <= &p.version {
                    return bad(format!("{v} comes after {}", p.version));
                }
                if r.schema_level < p.schema_level {
                    return bad(format!("{v}: schema level goes down"));
                }
                let patch = v.major == p.version.major && v.minor == p.version.minor;
                if patch && (!r.migrations.is_empty() || r.schema_level != p.schema_level) {
                    return bad(format!("{v}: a patch release must not migrate data"));
                }
                if r.schema_level > p.schema_level
                    && !r.migrations.iter().any(|m| m.level == r.schema_level)
                {
                    return bad(format!("{v}: raises the schema level without a migration"));
                }
            }
            previous = Some(r);
        }
        Ok(c)
    }

    pub fn versions(&self) -> Vec<Version> {
        self.releases.iter().map(|r| r.version.clone()).collect()
    }

    pub fn release(&self, v: &Version) -> Option<&Release> {
        self.releases.iter().find(|r| &r.version == v)
    }

    /// How to find a release's source in the project's history.
    pub fn find_commit_command(&self, v: &Version) -> Option<String> {
        self.release(v)
            .map(|r| format!("git log --format=%H --grep='^{}$' -1", r.commit_subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_catalog_is_valid_and_starts_with_1_0_0() {
        let c = Catalog::parse(EMBEDDED).unwrap();
        assert_eq!(c.releases[0].version, Version::new(1, 0, 0));
        assert_eq!(c.releases[0].schema_level, 1);
        assert_eq!(
            c.find_commit_command(&Version::new(1, 0, 0)).unwrap(),
            "git log --format=%H --grep='^Release 1.0.0$' -1"
        );
    }

    fn release(v: &str, level: u32, migrations: &str) -> String {
        format!(
            "[[release]]\nversion = \"{v}\"\ndate = \"2026-01-01\"\nschema_level = {level}\ncommit_subject = \"Release {v}\"\nmigrations = [{migrations}]\n[release.supports]\npostgresql = \">=13\"\ndocker_engine_api = \">=1.41\"\n"
        )
    }

    #[test]
    fn inconsistent_catalogs_are_refused() {
        let m1 = r#"{ level = 1, name = "initial", kind = "initial" }"#;
        let m2 = r#"{ level = 2, name = "jobs", kind = "expand" }"#;
        let ok = release("1.0.0", 1, m1) + &release("1.1.0", 2, m2) + &release("1.1.1", 2, "");
        Catalog::parse(&ok).unwrap();
        let cases = [
            (
                release("1.0.0", 1, m1) + &release("1.0.1", 2, m2),
                "patch release must not migrate",
            ),
            (
                release("1.1.0", 1, m1) + &release("1.0.0", 1, ""),
                "comes after",
            ),
            (
                release("1.0.0", 1, m1) + &release("1.1.0", 2, ""),
                "without a migration",
            ),
            (
                release("1.0.0", 1, m1) + &release("1.1.0", 1, m1),
                "belongs to two releases",
            ),
            (
                release("1.0.0", 2, m2) + &release("1.1.0", 1, ""),
                "goes down",
            ),
            (release("1.0.0-rc.1", 1, m1), "pre-release"),
            (release("1.0", 1, m1), "not a version"),
            (
                release("1.0.0", 1, r#"{ level = 1, name = "x", kind = "magic" }"#),
                "unknown kind",
            ),
        ];
        for (text, why) in cases {
            let err = Catalog::parse(&text).unwrap_err().to_string();
            assert!(err.contains(why), "expected {why:?}: {err}");
        }
    }
}
