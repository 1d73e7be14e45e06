//! Package URLs (https://github.com/package-url/purl-spec), for the SBOM.

/// Percent-encodes a purl component: everything but ASCII letters, digits and `.-_~`
/// (so `+` in Debian versions becomes `%2B`, as SPDX validators expect).
pub fn encode(component: &str) -> String {
    let mut out = String::with_capacity(component.len());
    for byte in component.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `pkg:<kind>/<namespace>/<name>@<version>?<qualifiers>`. The namespace may hold several
/// `/`-separated segments (Go module paths); each is encoded on its own. Empty qualifier
/// values are left out.
pub fn build(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    version: &str,
    qualifiers: &[(&str, &str)],
) -> String {
    let mut purl = format!("pkg:{kind}/");
    if let Some(namespace) = namespace.filter(|n| !n.is_empty()) {
        let segments: Vec<String> = namespace
            .split('/')
            .filter(|s| !s.is_empty())
            .map(encode)
            .collect();
        purl.push_str(&segments.join("/"));
        purl.push('/');
    }
    purl.push_str(&encode(name));
    if !version.is_empty() {
        purl.push('@');
        purl.push_str(&encode(version));
    }
    let qualifiers: Vec<String> = qualifiers
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| format!("{key}={}", encode(value)))
        .collect();
    if !qualifiers.is_empty() {
        purl.push('?');
        purl.push_str(&qualifiers.join("&"));
    }
    purl
}

/// The `distro` qualifier of OS packages: `debian-12`, `alpine-3.19.1`.
pub fn distro(os: Option<&super::Os>) -> String {
    match os {
        Some(os) if !os.version_id.is_empty() => format!("{}-{}", os.id, os.version_id),
        Some(os) => os.id.clone(),
        None => String::new(),
    }
}
