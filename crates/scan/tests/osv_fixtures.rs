//! The OSV model, archive reader and matcher against real published advisories
//! (tests/fixtures/vulndb, sources in its README). `packages.json` was computed
//! independently with each ecosystem's reference tools and is the oracle here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use wharf_scan::matching::AdvisoryIndex;
use wharf_scan::osv::{self, Advisory};
use wharf_scan::{Package, Severity};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vulndb")
}

/// Every record under `osv/`, by ecosystem directory then file.
fn record_files() -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for dir in fs::read_dir(fixtures().join("osv")).unwrap() {
        let dir = dir.unwrap().path();
        let ecosystem = dir.file_name().unwrap().to_str().unwrap().to_string();
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|f| f.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        out.insert(ecosystem, files);
    }
    out
}

fn archive_records(ecosystem: &str) -> Vec<Advisory> {
    let file = fs::File::open(fixtures().join(format!("osv-{ecosystem}.zip"))).unwrap();
    osv::read_archive(file)
        .unwrap()
        .map(|r| r.unwrap_or_else(|e| panic!("{ecosystem}: {e}")))
        .collect()
}

fn all_archive_records() -> Vec<Advisory> {
    record_files()
        .keys()
        .flat_map(|ecosystem| archive_records(ecosystem))
        .collect()
}

#[test]
fn every_record_parses_and_validates() {
    let mut count = 0;
    for files in record_files().values() {
        for file in files {
            let advisory = osv::parse(&fs::read(file).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            advisory
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(
                file.file_stem().unwrap().to_str().unwrap(),
                advisory.id,
                "file named by its id"
            );
            count += 1;
        }
    }
    assert_eq!(count, 163);
}

#[test]
fn versions_null_is_tolerated() {
    let path = fixtures().join("osv/Alpine/CVE-2012-2812.json");
    let advisory = osv::parse(&fs::read(path).unwrap()).unwrap();
    assert_eq!(advisory.affected.len(), 5);
    assert!(advisory.affected.iter().all(|a| a.versions.is_empty()));
}

#[test]
fn archives_hold_the_same_records_as_the_directories() {
    for (ecosystem, files) in record_files() {
        let from_dir: BTreeSet<String> = files
            .iter()
            .map(|f| f.file_stem().unwrap().to_str().unwrap().to_string())
            .collect();
        let records = archive_records(&ecosystem);
        let from_zip: BTreeSet<String> = records.iter().map(|a| a.id.clone()).collect();
        assert_eq!(records.len(), from_zip.len(), "{ecosystem}: no duplicates");
        assert_eq!(from_dir, from_zip, "{ecosystem}");
        for record in &records {
            let on_disk = fs::read(fixtures().join(format!("osv/{ecosystem}/{}.json", record.id)));
            assert_eq!(&osv::parse(&on_disk.unwrap()).unwrap(), record);
        }
    }
}

#[test]
fn records_survive_a_round_trip() {
    // The store keeps `affected` entries as JSON; what it writes must read back the same.
    for advisory in all_archive_records() {
        let json = serde_json::to_vec(&advisory).unwrap();
        assert_eq!(osv::parse(&json).unwrap(), advisory, "{}", advisory.id);
    }
}

#[test]
fn the_archive_limits_hold() {
    let file = fs::File::open(fixtures().join("osv-crates.io.zip")).unwrap();
    let limits = osv::ArchiveLimits {
        max_entry_bytes: 64,
        max_entries: 1000,
    };
    let results: Vec<_> = osv::read_archive_with(file, limits).unwrap().collect();
    assert_eq!(results.len(), 17);
    for result in results {
        let err = result.unwrap_err();
        assert!(matches!(err, osv::OsvError::EntryTooLarge { .. }), "{err}");
        assert!(err.to_string().starts_with("RUSTSEC-"), "{err}");
    }
    let file = fs::File::open(fixtures().join("osv-crates.io.zip")).unwrap();
    let limits = osv::ArchiveLimits {
        max_entry_bytes: 1 << 20,
        max_entries: 16,
    };
    assert!(matches!(
        osv::read_archive_with(file, limits),
        Err(osv::OsvError::TooManyEntries {
            count: 17,
            limit: 16
        })
    ));
    let not_a_zip = std::io::Cursor::new(b"PK not really".to_vec());
    assert!(osv::read_archive(not_a_zip).is_err());
}

/// The brief's 44 (package, version) cases: exactly the expected advisory ids.
#[test]
fn packages_json_cases_match_exactly() {
    let index = AdvisoryIndex::new(all_archive_records());
    assert_eq!(index.len(), 163);
    let expected: serde_json::Value =
        serde_json::from_slice(&fs::read(fixtures().join("packages.json")).unwrap()).unwrap();
    let mut cases = 0;
    for entry in expected["packages"].as_array().unwrap() {
        let ecosystem = entry["ecosystem"].as_str().unwrap();
        // PyPI packages by their published spelling (`PyYAML`): the index normalises.
        let name = entry
            .get("pypi_project_name")
            .and_then(|n| n.as_str())
            .unwrap_or_else(|| entry["name"].as_str().unwrap());
        for (version, ids) in entry["expected_ids_for_each_version"].as_object().unwrap() {
            let package = Package {
                ecosystem: ecosystem.into(),
                name: name.into(),
                version: version.clone(),
                match_name: name.into(),
                match_version: version.clone(),
                purl: String::new(),
                location: String::new(),
            };
            let got: BTreeSet<String> = index
                .matches(&package)
                .into_iter()
                .map(|m| m.advisory_id)
                .collect();
            let want: BTreeSet<String> = ids
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_str().unwrap().to_string())
                .collect();
            assert_eq!(got, want, "{ecosystem} {name} {version}");
            cases += 1;
        }
    }
    assert_eq!(cases, 44);
}

#[test]
fn fixed_versions_of_distribution_records() {
    let index = AdvisoryIndex::new(all_archive_records());
    let fixed = |ecosystem: &str, name: &str, version: &str| {
        let package = Package {
            ecosystem: ecosystem.into(),
            name: name.into(),
            version: version.into(),
            match_name: name.into(),
            match_version: version.into(),
            purl: String::new(),
            location: String::new(),
        };
        let matches = index.matches(&package);
        assert_eq!(matches.len(), 1, "{name} {version}");
        matches[0].fixed.clone()
    };
    assert_eq!(
        fixed("Debian:7", "nginx", "1.2.1-2.2+wheezy2").as_deref(),
        Some("1.2.1-2.2+wheezy3")
    );
    assert_eq!(
        fixed("Alpine:v3.12", "libexif", "0.6.20-r0").as_deref(),
        Some("0.6.21-r0")
    );
    assert_eq!(fixed("Ubuntu:Pro:14.04:LTS", "linux", "3.13.0-24.46"), None);
    // A v3.19 image does not match the v3.8–v3.12 entries.
    let v319 = Package {
        ecosystem: "Alpine:v3.19".into(),
        name: "libexif".into(),
        version: "0.6.20-r0".into(),
        match_name: "libexif".into(),
        match_version: "0.6.20-r0".into(),
        purl: String::new(),
        location: String::new(),
    };
    assert!(index.matches(&v319).is_empty());
}

#[test]
fn severities_of_fixture_records() {
    let records: BTreeMap<String, Advisory> = all_archive_records()
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    let severity = |id: &str| records[id].severity();
    assert_eq!(severity("RUSTSEC-2016-0002"), (Severity::Medium, Some(4.8)));
    assert_eq!(
        severity("RUSTSEC-2021-0003"),
        (Severity::Critical, Some(9.8))
    );
    assert_eq!(
        severity("RUSTSEC-2018-0003"),
        (Severity::Critical, Some(9.8))
    );
    // Ubuntu's word, and records with no severity at all.
    assert_eq!(severity("UBUNTU-CVE-2025-38094"), (Severity::Medium, None));
    assert_eq!(severity("RUSTSEC-2018-0018"), (Severity::Unknown, None));
    assert_eq!(severity("PYSEC-2007-1"), (Severity::Unknown, None));
    let scored = records
        .values()
        .filter(|a| a.severity().1.is_some())
        .count();
    assert_eq!(scored, 14, "the 14 records with CVSS_V3 vectors");
}

/// The vectors the research brief checked against Python's `cvss` 3.6 (§4.4).
#[test]
fn cvss_scores_match_the_reference() {
    let cases = [
        (
            "CVSS_V3",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            9.8,
            Severity::Critical,
        ),
        (
            "CVSS_V3",
            "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N",
            3.1,
            Severity::Low,
        ),
        (
            "CVSS_V3",
            "CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H",
            8.8,
            Severity::High,
        ),
        (
            "CVSS_V3",
            "CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:L/A:N",
            4.8,
            Severity::Medium,
        ),
        (
            "CVSS_V4",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            9.3,
            Severity::Critical,
        ),
        (
            "CVSS_V4",
            "CVSS:4.0/AV:L/AC:H/AT:P/PR:L/UI:A/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N",
            1.0,
            Severity::Low,
        ),
        ("CVSS_V2", "AV:N/AC:L/Au:N/C:P/I:P/A:P", 7.5, Severity::High),
    ];
    for (kind, vector, score, bucket) in cases {
        let record =
            format!(r#"{{"id":"TEST-CVSS","severity":[{{"type":"{kind}","score":"{vector}"}}]}}"#);
        let advisory = osv::parse(record.as_bytes()).unwrap();
        assert_eq!(advisory.severity(), (bucket, Some(score)), "{vector}");
    }
    // The highest of several wins; a GHSA word is the fallback.
    let several = br#"{"id":"TEST-2","severity":[
        {"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N"},
        {"type":"CVSS_V3","score":"CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H"}]}"#;
    assert_eq!(
        osv::parse(several).unwrap().severity(),
        (Severity::High, Some(8.8))
    );
    let word = br#"{"id":"GHSA-x","database_specific":{"severity":"MODERATE"}}"#;
    assert_eq!(
        osv::parse(word).unwrap().severity(),
        (Severity::Medium, None)
    );
    let nested = br#"{"id":"TEST-3","affected":[{"package":{"ecosystem":"npm","name":"x"},
        "ecosystem_specific":{"severity":"HIGH"}}]}"#;
    assert_eq!(
        osv::parse(nested).unwrap().severity(),
        (Severity::High, None)
    );
}

#[test]
fn hostile_records_are_errors_not_panics() {
    let inputs: [&[u8]; 6] = [
        b"",
        b"null",
        b"[]",
        br#"{"id": 5}"#,
        br#"{"id":"TEST-X","affected":[{"package":{"ecosystem":"PyPI","name":"a"},
            "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":""}]}]}]}"#,
        br#"{"id":"TEST-Y","affected":[{"ranges":[{"type":"ECOSYSTEM","events":[]}]}]}"#,
    ];
    for input in inputs {
        let result = osv::parse(input).and_then(|a| a.validate());
        assert!(result.is_err(), "{}", String::from_utf8_lossy(input));
    }
    let withdrawn = br#"{"id":"TEST-W","withdrawn":"2024-01-01T00:00:00Z","affected":[
        {"package":{"ecosystem":"PyPI","name":"a"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}"#;
    let index = AdvisoryIndex::new([osv::parse(withdrawn).unwrap()]);
    assert!(index.is_empty());
}
