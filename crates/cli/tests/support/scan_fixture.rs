//! What the scanning tests push and import: an Alpine 3.12 image whose apk database is
//! the one `scripts/build-scan-fixtures.sh` writes for `alpine/rootfs-made-up` (the real
//! sample of `crates/scan/tests/fixtures/vulndb/package-lists/apk` plus libexif
//! 0.6.20-r0), which the real record CVE-2012-2812 affects (fixed in 0.6.21-r0), as
//! `crates/jobs/tests/scan_real_images.rs` expects; and the fixture database as a zip.

use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use crate::oci_layout::{self, Blob, Image, TarEntry};

pub fn vulndb_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scan/tests/fixtures/vulndb")
}

/// `lib/apk/db/installed` with libexif at `libexif`.
fn apk_installed(libexif: &str) -> String {
    let sample = std::fs::read_to_string(
        vulndb_dir().join("package-lists/apk/osv-scanner_locks-many_installed"),
    )
    .expect("the apk sample");
    let mut text = sample.trim_end_matches('\n').to_string();
    text.push_str("\n\n");
    text.push_str(&format!(
        "P:libexif\nV:{libexif}\nA:x86_64\nT:library to parse EXIF files\nU:https://libexif.github.io/\nL:LGPL-2.1-or-later\no:libexif\nF:usr/lib\nR:libexif.so.12\na:0:0:755\n\n"
    ));
    text
}

const OS_RELEASE: &str = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.12.12\nPRETTY_NAME=\"Alpine Linux v3.12\"\nHOME_URL=\"https://alpinelinux.org/\"\nBUG_REPORT_URL=\"https://bugs.alpinelinux.org/\"\n";

/// The Alpine image, with libexif at `libexif` (`0.6.20-r0`: vulnerable).
pub fn alpine_image(libexif: &str) -> Image {
    alpine_image_for(libexif, "amd64")
}

/// [`alpine_image`] for the architecture `arch`.
pub fn alpine_image_for(libexif: &str, arch: &str) -> Image {
    let installed = apk_installed(libexif);
    let tarball = oci_layout::tar(&[
        TarEntry::Dir {
            path: "etc/",
            mode: 0o755,
        },
        TarEntry::File {
            path: "etc/os-release",
            mode: 0o644,
            data: OS_RELEASE.as_bytes(),
        },
        TarEntry::Dir {
            path: "lib/",
            mode: 0o755,
        },
        TarEntry::Dir {
            path: "lib/apk/",
            mode: 0o755,
        },
        TarEntry::Dir {
            path: "lib/apk/db/",
            mode: 0o755,
        },
        TarEntry::File {
            path: "lib/apk/db/installed",
            mode: 0o644,
            data: installed.as_bytes(),
        },
    ]);
    let diff_ids = vec![oci_layout::sha256(&tarball)];
    let layers = vec![Blob::new(
        oci_layout::OCI_LAYER_GZIP,
        oci_layout::gzip(&tarball),
    )];
    let config = Blob::json(
        oci_layout::OCI_CONFIG,
        &json!({
            "created": "2026-01-02T03:04:05Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2026-01-02T03:04:05Z", "created_by": "ADD rootfs /"}],
        }),
    );
    let manifest = Blob::json(
        oci_layout::OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": oci_layout::OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        }),
    );
    Image {
        config,
        layers,
        diff_ids,
        manifest,
    }
}

/// The fixture database's records (`osv/<Ecosystem>/*.json`) as one zip, in folders.
pub fn vulndb_zip() -> Vec<u8> {
    vulndb_zip_of(&[])
}

/// [`vulndb_zip`] with only the records of `only` (every ecosystem if empty).
pub fn vulndb_zip_of(only: &[&str]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let root = vulndb_dir().join("osv");
        let mut ecosystems: Vec<_> = std::fs::read_dir(&root)
            .expect("osv/")
            .map(|e| e.expect("entry").path())
            .collect();
        ecosystems.sort();
        for dir in ecosystems {
            let eco = dir.file_name().unwrap().to_string_lossy().into_owned();
            if !only.is_empty() && !only.contains(&eco.as_str()) {
                continue;
            }
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .expect("ecosystem dir")
                .map(|e| e.expect("entry").path())
                .collect();
            files.sort();
            for f in files {
                let name = format!("{eco}/{}", f.file_name().unwrap().to_string_lossy());
                zip.start_file(name, options).expect("zip entry");
                zip.write_all(&std::fs::read(&f).expect("record"))
                    .expect("zip write");
            }
        }
        zip.finish().expect("zip finish");
    }
    out.into_inner()
}

/// How many records [`vulndb_zip`] holds.
pub const VULNDB_RECORDS: u64 = 163;
