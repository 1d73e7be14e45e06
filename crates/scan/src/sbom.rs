//! An image's inventory as an SPDX 2.3 JSON document, and the OCI image manifest that
//! attaches that document to the image as a referrer (design brief §5).
//!
//! Both are pure: the scan job stores the blob and pushes the manifest.

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::Package;

/// The media type of an SPDX JSON document, as the SBOM blob's and the referrer's
/// `artifactType`.
pub const SPDX_MEDIA_TYPE: &str = "application/spdx+json";

/// The media type of the referrer manifest [`referrer_manifest`] returns.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// The OCI empty descriptor's media type: artifacts without a config use it.
pub const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// `sha256` of the two bytes `{}`, the OCI empty descriptor's content.
pub const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// The annotation that names the program that wrote the SBOM.
pub const GENERATOR_ANNOTATION: &str = "dev.wharf.sbom.generator";

/// The image an SBOM describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbomSubject<'a> {
    /// The registry's host (and port), for the image's purl: `registry.example:5000`.
    pub registry: &'a str,
    /// The repository: `library/app`.
    pub repository: &'a str,
    /// What the image was pushed or scanned as: a tag, or the digest itself.
    pub reference: &'a str,
    /// The image manifest's digest: `sha256:<64 hex>`.
    pub manifest_digest: &'a str,
    /// The image's OS as a pretty name (`PRETTY_NAME` of os-release), when known.
    pub os: Option<&'a str>,
}

/// The SPDX 2.3 JSON document for `packages` found in `subject`.
///
/// - `created` goes unchanged into `creationInfo.created` (RFC 3339 UTC, seconds, `Z`).
/// - `tool_version` makes the creator `Tool: wharf-<tool_version>`.
/// - `namespace_base` is the registry's external URL (`https://registry.example`).
///
/// The document is deterministic: packages are sorted and exact duplicates dropped, and
/// their ids are counters in that order (`SPDXRef-Package-1`, …), since SPDX ids allow
/// only letters, digits, `.` and `-`, which package names do not respect.
///
/// `documentNamespace` is `<namespace_base>/spdx/<algorithm>-<digest hex>/<content>`,
/// where `<content>` is the first 16 hex digits of a SHA-256 over everything in the
/// document except `created`. A re-scan that finds the same packages gives the same
/// namespace (it is the same document, issued again), while a different inventory of
/// the same image (a newer scanner, another repository's name) gets a new one, as SPDX
/// wants a namespace per distinct document.
pub fn spdx(
    subject: &SbomSubject<'_>,
    packages: &[Package],
    created: &str,
    tool_version: &str,
    namespace_base: &str,
) -> Value {
    let mut sorted: Vec<&Package> = packages.iter().collect();
    sorted.sort();
    sorted.dedup();

    let name = document_name(subject);
    let namespace = document_namespace(subject, &sorted, tool_version, namespace_base);

    let mut spdx_packages = vec![image_package(subject)];
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE_SPDX_ID)];
    for (index, package) in sorted.iter().enumerate() {
        let id = format!("SPDXRef-Package-{}", index + 1);
        relationships.push(relationship(IMAGE_SPDX_ID, "CONTAINS", &id));
        spdx_packages.push(package_entry(&id, package));
    }

    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": namespace,
        "creationInfo": {
            "created": created,
            "creators": [format!("Tool: wharf-{tool_version}")],
        },
        "packages": spdx_packages,
        "relationships": relationships,
    })
}

const IMAGE_SPDX_ID: &str = "SPDXRef-Image";

/// `repository@digest`, or `repository:tag@digest` when the image was named by a tag.
fn document_name(subject: &SbomSubject<'_>) -> String {
    match tag_of(subject) {
        Some(tag) => format!("{}:{}@{}", subject.repository, tag, subject.manifest_digest),
        None => format!("{}@{}", subject.repository, subject.manifest_digest),
    }
}

/// The reference when it is a tag rather than the digest.
fn tag_of<'a>(subject: &SbomSubject<'a>) -> Option<&'a str> {
    let reference = subject.reference;
    (!reference.is_empty() && !reference.contains(':') && reference != subject.manifest_digest)
        .then_some(reference)
}

fn document_namespace(
    subject: &SbomSubject<'_>,
    sorted: &[&Package],
    tool_version: &str,
    namespace_base: &str,
) -> String {
    // Every input that ends up in the document, except `created`, each one
    // length-prefixed so that no two different inputs hash the same bytes.
    let mut hasher = Sha256::new();
    let mut feed = |field: &str| {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field.as_bytes());
    };
    feed(subject.registry);
    feed(subject.repository);
    feed(subject.reference);
    feed(subject.manifest_digest);
    feed(subject.os.unwrap_or("\u{0}none"));
    feed(tool_version);
    for package in sorted {
        for field in [
            &package.ecosystem,
            &package.name,
            &package.version,
            &package.match_name,
            &package.match_version,
            &package.purl,
            &package.location,
        ] {
            feed(field);
        }
    }
    let content = hex::encode(hasher.finalize());

    // `sha256:abc` → `sha256-abc`; anything unexpected becomes `-` so that the
    // namespace stays a plain URI whatever the caller passed.
    let digest_segment: String = subject
        .manifest_digest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "{}/spdx/{}/{}",
        namespace_base.trim_end_matches('/'),
        digest_segment,
        &content[..16]
    )
}

fn image_package(subject: &SbomSubject<'_>) -> Value {
    let mut image = json!({
        "SPDXID": IMAGE_SPDX_ID,
        "name": subject.repository,
        "versionInfo": subject.manifest_digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [purl_ref(&image_purl(subject))],
    });
    if let Some(checksum) = digest_checksum(subject.manifest_digest) {
        image["checksums"] = json!([checksum]);
    }
    if let Some(os) = subject.os {
        image["comment"] = json!(format!("operating system: {os}"));
    }
    image
}

/// The manifest digest as an SPDX checksum, when its algorithm is one SPDX names and
/// its hex has the right length; any other digest is left out rather than guessed.
fn digest_checksum(digest: &str) -> Option<Value> {
    let (algorithm, hex) = digest.split_once(':')?;
    let (spdx_algorithm, hex_len) = match algorithm {
        "sha256" => ("SHA256", 64),
        "sha512" => ("SHA512", 128),
        _ => return None,
    };
    let well_formed =
        hex.len() == hex_len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    well_formed.then(|| json!({ "algorithm": spdx_algorithm, "checksumValue": hex }))
}

/// `pkg:oci/<last name segment>@<digest>?repository_url=<registry>/<repository>[&tag=<tag>]`
/// (purl's `oci` type; qualifiers in key order, as purl requires).
fn image_purl(subject: &SbomSubject<'_>) -> String {
    let last_segment = subject
        .repository
        .rsplit('/')
        .next()
        .unwrap_or(subject.repository);
    let repository_url = if subject.registry.is_empty() {
        subject.repository.to_string()
    } else {
        format!("{}/{}", subject.registry, subject.repository)
    };
    let mut purl = format!(
        "pkg:oci/{}@{}?repository_url={}",
        percent_encode(last_segment, ""),
        percent_encode(subject.manifest_digest, ""),
        percent_encode(&repository_url, "/:"),
    );
    if let Some(tag) = tag_of(subject) {
        purl.push_str("&tag=");
        purl.push_str(&percent_encode(tag, ""));
    }
    purl
}

/// Percent-encodes all but RFC 3986's unreserved characters and those in `keep`.
fn percent_encode(text: &str, keep: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        let c = byte as char;
        if c.is_ascii_alphanumeric() || "-._~".contains(c) || (c.is_ascii() && keep.contains(c)) {
            encoded.push(c);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn package_entry(id: &str, package: &Package) -> Value {
    let mut entry = json!({
        "SPDXID": id,
        "name": package.name,
        "versionInfo": package.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "sourceInfo": source_info(package),
    });
    if !package.purl.is_empty() {
        entry["externalRefs"] = json!([purl_ref(&package.purl)]);
    }
    entry
}

/// Where the package was found and, for distribution packages, the source package
/// that advisories name, so a reader can follow a match back to this entry.
fn source_info(package: &Package) -> String {
    let mut info = format!("found in /{} ({})", package.location, package.ecosystem);
    if package.match_name != package.name || package.match_version != package.version {
        info.push_str(&format!(
            "; matched as {} {}",
            package.match_name, package.match_version
        ));
    }
    info
}

fn purl_ref(purl: &str) -> Value {
    json!({
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": purl,
    })
}

fn relationship(from: &str, kind: &str, to: &str) -> Value {
    json!({
        "spdxElementId": from,
        "relationshipType": kind,
        "relatedSpdxElement": to,
    })
}

/// The OCI image manifest that attaches an SBOM blob to its image as a referrer, and
/// its media type, ready to be pushed to the image's repository.
///
/// It follows the OCI artifact guidance: `artifactType` says what it is, the config is
/// the empty descriptor (there is no config to speak of), the SBOM is the only layer,
/// and `subject` points at the image, so the referrers API lists it there.
/// `created` is the SBOM's creation time (RFC 3339 UTC). The generator annotation is
/// `wharf-<this crate's version>`, which is wharf's version.
pub fn referrer_manifest(
    sbom_digest: &str,
    sbom_size: u64,
    subject_digest: &str,
    subject_size: u64,
    subject_media_type: &str,
    created: &str,
) -> (Vec<u8>, String) {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": SPDX_MEDIA_TYPE,
        "config": {
            "mediaType": EMPTY_CONFIG_MEDIA_TYPE,
            "digest": EMPTY_CONFIG_DIGEST,
            "size": 2,
            // base64 of `{}`
            "data": "e30=",
        },
        "layers": [{
            "mediaType": SPDX_MEDIA_TYPE,
            "digest": sbom_digest,
            "size": sbom_size,
            "annotations": { "org.opencontainers.image.title": "sbom.spdx.json" },
        }],
        "subject": {
            "mediaType": subject_media_type,
            "digest": subject_digest,
            "size": subject_size,
        },
        "annotations": {
            "org.opencontainers.image.created": created,
            GENERATOR_ANNOTATION: concat!("wharf-", env!("CARGO_PKG_VERSION")),
        },
    });
    let bytes = serde_json::to_vec(&manifest).expect("a JSON value always serialises");
    (bytes, OCI_MANIFEST_MEDIA_TYPE.to_string())
}
