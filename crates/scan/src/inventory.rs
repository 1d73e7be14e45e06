//! An image's packages, from the files the layer reader kept (design:
//! docs/design/scanning-research.md §2).
//!
//! [`Wanted`] tells the layer reader which files to keep (package databases, package
//! metadata, os-release) and which to analyse as binaries (executables, Java archives).
//! [`collect`] turns the merged [`ImageFiles`] into an [`Inventory`]; [`scan_layers`] does
//! both for a whole image. Each source has its own submodule, a pure function from bytes to
//! [`Package`]s.

use std::io::Read;

use crate::layer::{read_layer, Budget, ImageFiles, Limits, ScanError, Selector, Want};
use crate::Package;

pub mod apk;
pub mod dpkg;
pub mod gem;
pub mod golang;
pub mod java;
pub mod npm;
pub mod os_release;
pub mod purl;
pub mod python;
pub mod rpm;
pub mod rust;

/// The image's operating system, from `etc/os-release` (or `usr/lib/os-release`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Os {
    /// `ID`, lower case: `debian`, `alpine`, `ubuntu`, `rhel`, …
    pub id: String,
    /// `VERSION_ID`: `12`, `3.19.1`, `22.04`; empty when absent (Debian testing).
    pub version_id: String,
    /// `PRETTY_NAME`, for display.
    pub pretty_name: String,
    /// The OSV ecosystem of its packages with the release (`Debian:12`), or `None` when
    /// the release has no known OSV ecosystem: see [`os_release::ecosystem`].
    pub ecosystem: Option<String>,
}

/// What a scan found in an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inventory {
    pub os: Option<Os>,
    /// Sorted, without exact duplicates (the same package at two locations stays twice).
    pub packages: Vec<Package>,
    /// What was skipped or could not be read: shown with the scan, so that "no
    /// vulnerabilities" is never said of something that was not looked at.
    pub notes: Vec<String>,
}

/// The kinds of file an inventory reads, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    OsRelease,
    Dpkg,
    Apk,
    Rpmdb,
    RpmdbWal,
    Python,
    Npm,
    Gem,
    JavaArchive,
}

const OS_RELEASE_PATHS: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];

/// The source a kept file belongs to, from its path alone.
fn source_of(path: &str) -> Option<Source> {
    let parts: Vec<&str> = path.split('/').collect();
    let base = *parts.last()?;
    let parent = parts.len().checked_sub(2).map(|i| parts[i]);
    Some(match path {
        _ if OS_RELEASE_PATHS.contains(&path) => Source::OsRelease,
        "var/lib/dpkg/status" => Source::Dpkg,
        "lib/apk/db/installed" => Source::Apk,
        "var/lib/rpm/rpmdb.sqlite" | "usr/lib/sysimage/rpm/rpmdb.sqlite" => Source::Rpmdb,
        "var/lib/rpm/rpmdb.sqlite-wal" | "usr/lib/sysimage/rpm/rpmdb.sqlite-wal" => {
            Source::RpmdbWal
        }
        // Distroless images: one file per package, next to `<package>.md5sums`.
        _ if path.starts_with("var/lib/dpkg/status.d/")
            && parts.len() == 5
            && !base.ends_with(".md5sums") =>
        {
            Source::Dpkg
        }
        _ if base == "METADATA" && parent.is_some_and(|p| p.ends_with(".dist-info")) => {
            Source::Python
        }
        _ if base == "PKG-INFO" && parent.is_some_and(|p| p.ends_with(".egg-info")) => {
            Source::Python
        }
        // An egg-info can be a single file (distutils installs).
        _ if base.ends_with(".egg-info") && base.len() > ".egg-info".len() => Source::Python,
        _ if base == "package.json" && is_node_module_manifest(&parts) => Source::Npm,
        _ if base.ends_with(".gemspec") && parent == Some("specifications") => Source::Gem,
        _ if is_java_archive(base) => Source::JavaArchive,
        _ => return None,
    })
}

/// `…/node_modules/<name>/package.json` or `…/node_modules/@scope/<name>/package.json`,
/// and not the package.json files of a package's own tests or examples.
fn is_node_module_manifest(parts: &[&str]) -> bool {
    let n = parts.len();
    if n < 3 {
        return false;
    }
    let name = parts[n - 2];
    if name.is_empty() || name.starts_with('.') || name.starts_with('@') {
        return false;
    }
    if parts[n - 3] == "node_modules" {
        return true;
    }
    n >= 4 && parts[n - 3].starts_with('@') && parts[n - 4] == "node_modules"
}

fn is_java_archive(base: &str) -> bool {
    let lower = base.to_ascii_lowercase();
    lower.ends_with(".jar") || lower.ends_with(".war") || lower.ends_with(".ear")
}

/// The files an inventory needs: package databases and metadata are kept, executables and
/// Java archives are analysed as they are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted;

const ELF_MAGIC: &[u8] = b"\x7fELF";

impl Selector for Wanted {
    fn want(&self, path: &str, mode: u32, size: u64) -> Want {
        match source_of(path) {
            Some(Source::JavaArchive) => Want::Binary,
            // An empty WAL is the normal, checkpointed state: only a non-empty one matters.
            Some(Source::RpmdbWal) if size == 0 => Want::Skip,
            Some(_) => Want::Keep,
            // Too small to hold an ELF header: shell scripts and the like.
            None if mode & 0o111 != 0 && size >= 64 => Want::Binary,
            None => Want::Skip,
        }
    }

    fn analyse(&self, path: &str, bytes: &[u8]) -> Vec<Package> {
        if source_of(path) == Some(Source::JavaArchive) {
            return java::packages(bytes, path);
        }
        if !bytes.starts_with(ELF_MAGIC) {
            return Vec::new();
        }
        let mut packages = golang::packages(bytes, path);
        packages.extend(rust::packages(bytes, path));
        packages
    }
}

/// The OS-package ecosystem to use: the OS's own (with its release), or the distribution
/// family alone when the release is unknown (with a note, since such packages match no
/// release's advisories).
fn os_ecosystem(os: Option<&Os>, fallback: &str, source: &str, notes: &mut Vec<String>) -> String {
    if let Some(ecosystem) = os.and_then(|os| os.ecosystem.clone()) {
        return ecosystem;
    }
    let family = os
        .and_then(|os| os_release::family(&os.id))
        .unwrap_or(fallback)
        .to_string();
    let which = match os {
        Some(os) if !os.pretty_name.is_empty() => format!("the OS {:?}", os.pretty_name),
        Some(os) => format!("the OS {:?} {:?}", os.id, os.version_id),
        None => "an unidentified OS (no os-release)".to_string(),
    };
    notes.push(format!(
        "{source} packages of {which} are recorded under the ecosystem {family:?} without a release: they are not matched against release advisories"
    ));
    family
}

/// Reads the image's packages from the files the layer reader kept.
pub fn collect(files: &ImageFiles) -> Inventory {
    let mut notes: Vec<String> = files.notes().to_vec();
    let os = OS_RELEASE_PATHS
        .iter()
        .find_map(|path| files.read(path))
        .and_then(|bytes| os_release::parse(&String::from_utf8_lossy(bytes)));
    match &os {
        None => notes.push("no os-release found: the OS is unknown".to_string()),
        Some(os) if os.ecosystem.is_none() => notes.push(format!(
            "the OS {:?} (ID {:?}, VERSION_ID {:?}) has no known OSV ecosystem: its packages are not matched by release",
            os.pretty_name, os.id, os.version_id
        )),
        Some(_) => {}
    }
    let mut packages = Vec::new();
    let mut ecosystem_note_given = std::collections::BTreeSet::new();
    let mut os_ecosystem_once = |fallback: &str, source: &str, notes: &mut Vec<String>| {
        let mut scratch = Vec::new();
        let ecosystem = os_ecosystem(os.as_ref(), fallback, source, &mut scratch);
        if ecosystem_note_given.insert(source.to_string()) {
            notes.extend(scratch);
        }
        ecosystem
    };
    for (path, bytes) in files.files() {
        let Some(source) = source_of(path) else {
            continue;
        };
        match source {
            Source::OsRelease | Source::JavaArchive => {}
            Source::Dpkg => {
                let ecosystem = os_ecosystem_once("Debian", "dpkg", &mut notes);
                let text = String::from_utf8_lossy(bytes);
                packages.extend(dpkg::parse(&text, path, &ecosystem, os.as_ref()));
            }
            Source::Apk => {
                let ecosystem = os_ecosystem_once("Alpine", "apk", &mut notes);
                let text = String::from_utf8_lossy(bytes);
                packages.extend(apk::parse(&text, path, &ecosystem, os.as_ref()));
            }
            Source::Rpmdb => {
                let ecosystem = os_ecosystem_once("Red Hat", "rpm", &mut notes);
                match rpm::parse_rpmdb(bytes, path, &ecosystem, os.as_ref()) {
                    Ok(found) => packages.extend(found),
                    Err(e) => notes.push(format!("{path}: not a readable rpm database: {e}")),
                }
            }
            Source::RpmdbWal => notes.push(format!(
                "{path} holds changes not yet merged into the rpm database: packages installed last may be missing"
            )),
            Source::Python => match python::parse(&String::from_utf8_lossy(bytes), path) {
                Some(package) => packages.push(package),
                None => notes.push(format!("{path}: no Name and Version in Python metadata")),
            },
            Source::Npm => {
                // A package.json without name or version is a workspace or a fixture.
                packages.extend(npm::parse(bytes, path));
            }
            Source::Gem => match gem::parse(&String::from_utf8_lossy(bytes), path) {
                Some(package) => packages.push(package),
                None => notes.push(format!("{path}: no literal name and version in gemspec")),
            },
        }
    }
    for (path, found) in files.analysed() {
        packages.extend(found.iter().map(|package| relocated(package, path)));
    }
    packages.sort();
    packages.dedup();
    Inventory {
        os,
        packages,
        notes,
    }
}

/// A binary's package, at `path`: a hard link shares its target's analysis, which names
/// the target. A location inside an archive (`app.jar!/BOOT-INF/lib/x.jar`) keeps its
/// inner part.
fn relocated(package: &Package, path: &str) -> Package {
    let inner = package.location.find('!').map(|i| &package.location[i..]);
    Package {
        location: format!("{path}{}", inner.unwrap_or_default()),
        ..package.clone()
    }
}

/// How many layers are read at once: gzip cannot be split across threads, so parallel
/// layers are the only speed-up (§1.3), and each one in flight may buffer a binary.
const PARALLEL_LAYERS: usize = 2;

/// Scans an image: reads its layers (bottom first) two at a time, applies them in order,
/// and collects the inventory. Memory stays bounded by the limits, per layer in flight.
pub fn scan_layers<R: Read + Send>(
    layers: Vec<R>,
    limits: &Limits,
) -> Result<Inventory, ScanError> {
    let budget = Budget::new();
    let mut files = ImageFiles::new();
    let mut layers = layers.into_iter().peekable();
    while layers.peek().is_some() {
        let batch: Vec<R> = layers.by_ref().take(PARALLEL_LAYERS).collect();
        let deltas: Vec<Result<_, ScanError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .into_iter()
                .map(|layer| {
                    let budget = &budget;
                    scope.spawn(move || read_layer(layer, limits, budget, &Wanted))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| {
                        Err(ScanError::Corrupt(
                            "the layer reader stopped unexpectedly".to_string(),
                        ))
                    })
                })
                .collect()
        });
        for delta in deltas {
            files.apply(delta?);
        }
    }
    Ok(collect(&files))
}
