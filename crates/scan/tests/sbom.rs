//! The SPDX document and the referrer manifest: required fields, ids, determinism, and
//! the SPDX project's own validator (pyspdxtools, required under CI=true).

use std::collections::HashSet;

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use wharf_scan::sbom::{
    referrer_manifest, spdx, SbomSubject, EMPTY_CONFIG_DIGEST, GENERATOR_ANNOTATION,
    SPDX_MEDIA_TYPE,
};
use wharf_scan::Package;

const DIGEST: &str = "sha256:4b5a9b35a1c0ffee4b5a9b35a1c0ffee4b5a9b35a1c0ffee4b5a9b35a1c0ffee";
const CREATED: &str = "2026-12-05T22:00:00Z";
const BASE: &str = "https://registry.example/";

fn subject() -> SbomSubject<'static> {
    SbomSubject {
        registry: "registry.example:5000",
        repository: "library/app",
        reference: "1.2",
        manifest_digest: DIGEST,
        os: Some("Debian GNU/Linux 12 (bookworm)"),
    }
}

#[allow(clippy::too_many_arguments)]
fn package(
    ecosystem: &str,
    name: &str,
    version: &str,
    match_name: &str,
    match_version: &str,
    purl: &str,
    location: &str,
) -> Package {
    Package {
        ecosystem: ecosystem.into(),
        name: name.into(),
        version: version.into(),
        match_name: match_name.into(),
        match_version: match_version.into(),
        purl: purl.into(),
        location: location.into(),
    }
}

/// Names with characters SPDX ids do not allow, a `+` version, a package found twice.
fn packages() -> Vec<Package> {
    vec![
        package(
            "PyPI",
            "requests",
            "2.19.1",
            "requests",
            "2.19.1",
            "pkg:pypi/requests@2.19.1",
            "usr/lib/python3/site-packages/requests-2.19.1.dist-info/METADATA",
        ),
        package(
            "Debian:12",
            "libexpat1",
            "2.5.0-1+deb12u2",
            "expat",
            "2.5.0-1+deb12u2",
            "pkg:deb/debian/libexpat1@2.5.0-1%2Bdeb12u2?arch=amd64&distro=debian-12&upstream=expat",
            "var/lib/dpkg/status",
        ),
        package(
            "npm",
            "@scope/left pad",
            "1.0.0",
            "@scope/left pad",
            "1.0.0",
            "pkg:npm/%40scope/left%20pad@1.0.0",
            "app/node_modules/@scope/left pad/package.json",
        ),
        package(
            "Maven",
            "commons-text",
            "1.9",
            "org.apache.commons:commons-text",
            "1.9",
            "pkg:maven/org.apache.commons/commons-text@1.9",
            "app/lib/commons-text-1.9.jar",
        ),
        // The same package found twice: one entry in the SBOM.
        package(
            "PyPI",
            "requests",
            "2.19.1",
            "requests",
            "2.19.1",
            "pkg:pypi/requests@2.19.1",
            "usr/lib/python3/site-packages/requests-2.19.1.dist-info/METADATA",
        ),
    ]
}

fn document() -> Value {
    spdx(&subject(), &packages(), CREATED, "1.2.0", BASE)
}

fn is_valid_spdx_id(id: &str) -> bool {
    id.starts_with("SPDXRef-")
        && id.len() > "SPDXRef-".len()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

fn spdx_packages(doc: &Value) -> &Vec<Value> {
    doc["packages"].as_array().expect("packages is an array")
}

#[test]
fn document_has_every_required_spdx_2_3_field() {
    let doc = document();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["dataLicense"], "CC0-1.0");
    assert_eq!(doc["SPDXID"], "SPDXRef-DOCUMENT");
    assert_eq!(
        doc["name"],
        format!("library/app:1.2@{DIGEST}"),
        "the name says which image, by tag and digest"
    );
    let namespace = doc["documentNamespace"].as_str().unwrap();
    assert!(
        namespace.starts_with(&format!(
            "https://registry.example/spdx/sha256-{}/",
            &DIGEST[7..]
        )),
        "{namespace}"
    );
    assert!(
        !namespace.contains('#'),
        "SPDX namespaces may not contain #"
    );
    assert_eq!(doc["creationInfo"]["created"], CREATED);
    assert_eq!(
        doc["creationInfo"]["creators"],
        serde_json::json!(["Tool: wharf-1.2.0"])
    );

    for package in spdx_packages(&doc) {
        for field in [
            "SPDXID",
            "name",
            "versionInfo",
            "downloadLocation",
            "licenseConcluded",
            "licenseDeclared",
            "copyrightText",
        ] {
            assert!(package[field].is_string(), "{field} missing in {package}");
        }
        assert_eq!(package["downloadLocation"], "NOASSERTION");
        assert_eq!(package["licenseConcluded"], "NOASSERTION");
        assert_eq!(package["licenseDeclared"], "NOASSERTION");
        assert_eq!(package["copyrightText"], "NOASSERTION");
        assert_eq!(
            package["filesAnalyzed"], false,
            "wharf lists packages, not files"
        );
    }
}

#[test]
fn image_package_is_a_container_with_its_digest_as_checksum() {
    let doc = document();
    let image = &spdx_packages(&doc)[0];
    assert_eq!(image["SPDXID"], "SPDXRef-Image");
    assert_eq!(image["name"], "library/app");
    assert_eq!(image["versionInfo"], DIGEST);
    assert_eq!(image["primaryPackagePurpose"], "CONTAINER");
    assert_eq!(
        image["checksums"],
        serde_json::json!([{ "algorithm": "SHA256", "checksumValue": &DIGEST[7..] }])
    );
    assert_eq!(
        image["externalRefs"][0]["referenceLocator"],
        format!(
            "pkg:oci/app@sha256%3A{}?repository_url=registry.example:5000/library/app&tag=1.2",
            &DIGEST[7..]
        )
    );
    assert_eq!(
        image["comment"],
        "operating system: Debian GNU/Linux 12 (bookworm)"
    );
}

#[test]
fn image_named_by_digest_and_odd_digests() {
    let by_digest = SbomSubject {
        reference: DIGEST,
        os: None,
        ..subject()
    };
    let doc = spdx(&by_digest, &[], CREATED, "1.2.0", BASE);
    assert_eq!(doc["name"], format!("library/app@{DIGEST}"));
    let image = &spdx_packages(&doc)[0];
    assert!(image.get("comment").is_none());
    let purl = image["externalRefs"][0]["referenceLocator"]
        .as_str()
        .unwrap();
    assert!(!purl.contains("tag="), "{purl}");
    // Only the image, described by the document.
    assert_eq!(spdx_packages(&doc).len(), 1);
    assert_eq!(doc["relationships"].as_array().unwrap().len(), 1);

    // A digest SPDX has no algorithm for, or a malformed one: no checksum, no guess.
    for digest in ["sha384:abcd", "sha256:ABC", "nonsense"] {
        let odd = SbomSubject {
            manifest_digest: digest,
            ..subject()
        };
        let doc = spdx(&odd, &[], CREATED, "1.2.0", BASE);
        assert!(
            spdx_packages(&doc)[0].get("checksums").is_none(),
            "{digest}"
        );
        let namespace = doc["documentNamespace"].as_str().unwrap();
        assert!(
            namespace.bytes().all(|b| b.is_ascii_graphic() && b != b'#'),
            "{namespace}"
        );
    }
}

#[test]
fn ids_are_valid_unique_and_counters() {
    let doc = document();
    let ids: Vec<&str> = spdx_packages(&doc)
        .iter()
        .map(|p| p["SPDXID"].as_str().unwrap())
        .collect();
    assert!(ids.iter().all(|id| is_valid_spdx_id(id)), "{ids:?}");
    let unique: HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    assert!(!ids.contains(&"SPDXRef-DOCUMENT"));
    // The image, then the 4 distinct packages (the duplicate is dropped).
    assert_eq!(
        ids,
        [
            "SPDXRef-Image",
            "SPDXRef-Package-1",
            "SPDXRef-Package-2",
            "SPDXRef-Package-3",
            "SPDXRef-Package-4"
        ]
    );
}

#[test]
fn every_package_has_its_purl_and_location() {
    let doc = document();
    let entries = spdx_packages(&doc);
    for package in packages() {
        let entry = entries
            .iter()
            .find(|e| e["name"] == package.name.as_str())
            .unwrap_or_else(|| panic!("{} missing", package.name));
        assert_eq!(entry["versionInfo"], package.version.as_str());
        assert_eq!(
            entry["externalRefs"],
            serde_json::json!([{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": package.purl,
            }])
        );
        let source_info = entry["sourceInfo"].as_str().unwrap();
        assert!(
            source_info.contains(&format!("/{}", package.location)),
            "{source_info}"
        );
    }
    let expat = entries.iter().find(|e| e["name"] == "libexpat1").unwrap();
    assert_eq!(
        expat["sourceInfo"],
        "found in /var/lib/dpkg/status (Debian:12); matched as expat 2.5.0-1+deb12u2"
    );
}

#[test]
fn relationships_describe_the_image_and_contain_each_package() {
    let doc = document();
    let relationships = doc["relationships"].as_array().unwrap();
    let triples: Vec<(&str, &str, &str)> = relationships
        .iter()
        .map(|r| {
            (
                r["spdxElementId"].as_str().unwrap(),
                r["relationshipType"].as_str().unwrap(),
                r["relatedSpdxElement"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        triples[0],
        ("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image")
    );
    let package_ids: Vec<&str> = spdx_packages(&doc)[1..]
        .iter()
        .map(|p| p["SPDXID"].as_str().unwrap())
        .collect();
    let contained: Vec<&str> = triples[1..]
        .iter()
        .map(|(from, kind, to)| {
            assert_eq!((*from, *kind), ("SPDXRef-Image", "CONTAINS"));
            *to
        })
        .collect();
    assert_eq!(contained, package_ids);
}

#[test]
fn output_is_byte_identical_for_identical_input_in_any_order() {
    let first = serde_json::to_vec(&document()).unwrap();
    let second = serde_json::to_vec(&document()).unwrap();
    assert_eq!(first, second);

    let mut shuffled = packages();
    shuffled.reverse();
    shuffled.rotate_left(2);
    let third = serde_json::to_vec(&spdx(&subject(), &shuffled, CREATED, "1.2.0", BASE)).unwrap();
    assert_eq!(first, third, "package order in the input does not matter");
}

#[test]
fn namespace_is_stable_across_rescans_and_changes_with_the_content() {
    let namespace = |doc: &Value| doc["documentNamespace"].as_str().unwrap().to_string();
    let original = namespace(&document());

    // A re-scan later that finds the same packages: the same document, issued again.
    let rescan = spdx(
        &subject(),
        &packages(),
        "2027-01-01T00:00:00Z",
        "1.2.0",
        BASE,
    );
    assert_eq!(namespace(&rescan), original);
    // The base's trailing slash does not matter.
    let no_slash = spdx(
        &subject(),
        &packages(),
        CREATED,
        "1.2.0",
        "https://registry.example",
    );
    assert_eq!(namespace(&no_slash), original);

    // Anything that changes the document's content gives a new namespace.
    let without_expat: Vec<Package> = packages()
        .into_iter()
        .filter(|p| p.name != "libexpat1")
        .collect();
    let fewer = spdx(&subject(), &without_expat, CREATED, "1.2.0", BASE);
    let newer_tool = spdx(&subject(), &packages(), CREATED, "1.3.0", BASE);
    let other_repository = SbomSubject {
        repository: "team/app",
        ..subject()
    };
    let elsewhere = spdx(&other_repository, &packages(), CREATED, "1.2.0", BASE);
    let namespaces: HashSet<String> = [&fewer, &newer_tool, &elsewhere]
        .into_iter()
        .map(namespace)
        .chain([original])
        .collect();
    assert_eq!(namespaces.len(), 4, "{namespaces:?}");
}

#[test]
fn referrer_manifest_attaches_the_sbom_to_its_subject() {
    let sbom = serde_json::to_vec(&document()).unwrap();
    let sbom_digest = format!("sha256:{}", hex::encode(Sha256::digest(&sbom)));
    let subject_media_type = "application/vnd.oci.image.manifest.v1+json";
    let (bytes, media_type) = referrer_manifest(
        &sbom_digest,
        sbom.len() as u64,
        DIGEST,
        1234,
        subject_media_type,
        CREATED,
    );
    assert_eq!(media_type, "application/vnd.oci.image.manifest.v1+json");
    let manifest: Value = serde_json::from_slice(&bytes).expect("the manifest is JSON");

    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], media_type.as_str());
    assert_eq!(manifest["artifactType"], SPDX_MEDIA_TYPE);
    assert_eq!(SPDX_MEDIA_TYPE, "application/spdx+json");

    // The OCI empty descriptor, exactly: its digest is that of the two bytes `{}`, and
    // its inline data is their base64.
    let empty_digest = format!("sha256:{}", hex::encode(Sha256::digest(b"{}")));
    assert_eq!(empty_digest, EMPTY_CONFIG_DIGEST);
    assert_eq!(
        manifest["config"],
        serde_json::json!({
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": empty_digest,
            "size": 2,
            "data": "e30=",
        })
    );

    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], SPDX_MEDIA_TYPE);
    assert_eq!(layers[0]["digest"], sbom_digest.as_str());
    assert_eq!(layers[0]["size"], sbom.len() as u64);

    assert_eq!(
        manifest["subject"],
        serde_json::json!({ "mediaType": subject_media_type, "digest": DIGEST, "size": 1234 })
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.created"],
        CREATED
    );
    let generator = manifest["annotations"][GENERATOR_ANNOTATION]
        .as_str()
        .unwrap();
    assert_eq!(generator, format!("wharf-{}", env!("CARGO_PKG_VERSION")));

    // Deterministic too: pushing it twice gives the same manifest digest.
    let (again, _) = referrer_manifest(
        &sbom_digest,
        sbom.len() as u64,
        DIGEST,
        1234,
        subject_media_type,
        CREATED,
    );
    assert_eq!(bytes, again);
}

/// The SPDX project's validator: `pyspdxtools` from the test venv
/// (scripts/install-test-deps.sh), or on PATH. Required under CI=true.
#[test]
fn pyspdxtools_validates_the_document() {
    use std::process::Command;

    let venv = std::env::var("WHARF_TEST_VENV")
        .map(|v| std::path::PathBuf::from(v).join("bin/pyspdxtools"))
        .ok()
        .filter(|p| p.is_file());
    let tool = venv.unwrap_or_else(|| "pyspdxtools".into());
    if Command::new(&tool).arg("--help").output().is_err() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "pyspdxtools is required under CI=true (scripts/install-test-deps.sh installs it)"
        );
        println!("SKIPPED pyspdxtools_validates_the_document: pyspdxtools is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let validate = |name: &str, doc: &Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
        let output = Command::new(&tool).arg("-i").arg(&path).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    };

    let (valid, text) = validate("sbom.spdx.json", &document());
    assert!(valid, "pyspdxtools rejected the document:\n{text}");
    println!("pyspdxtools: the document is valid {}", text.trim());

    // And it does reject what it should, so the check above is not vacuous.
    let mut broken = document();
    broken["packages"][1]["SPDXID"] = "SPDXRef-has space".into();
    let (valid, text) = validate("broken.spdx.json", &broken);
    assert!(!valid, "pyspdxtools accepted an invalid SPDXID:\n{text}");
    assert!(
        text.contains("has space"),
        "rejected for another reason:\n{text}"
    );
}
