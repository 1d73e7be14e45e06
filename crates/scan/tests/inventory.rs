//! Package inventories from real package lists and from layers, archives and binaries
//! built in memory.

use std::io::{Cursor, Write};
use std::path::Path;

use wharf_scan::inventory::{
    apk, dpkg, gem, golang, java, npm, os_release, python, rpm, rust, scan_layers, Inventory, Os,
    Wanted,
};
use wharf_scan::layer::{Limits, Selector, Want};
use wharf_scan::Package;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/vulndb/package-lists"
);

fn fixture(path: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(path)).unwrap()
}

fn debian_12() -> Os {
    os_release::parse(
        "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
    )
    .unwrap()
}

/// (name, version, match_name, match_version) of each package.
fn identities(packages: &[Package]) -> Vec<(&str, &str, &str, &str)> {
    packages
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.version.as_str(),
                p.match_name.as_str(),
                p.match_version.as_str(),
            )
        })
        .collect()
}

fn find<'a>(inventory: &'a Inventory, name: &str) -> &'a Package {
    inventory
        .packages
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no {name} in {:#?}", inventory.packages))
}

// ---------------------------------------------------------------- os-release

#[test]
fn os_release_variants_give_osv_ecosystems() {
    let cases = [
        ("ID=debian\nVERSION_ID=\"12\"\n", Some("Debian:12")),
        ("ID=debian\nVERSION_ID=\"11.9\"\n", Some("Debian:11")),
        (
            "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n",
            Some("Alpine:v3.19"),
        ),
        (
            "ID=ubuntu\nVERSION_ID=\"22.04\"\nVERSION=\"22.04.4 LTS (Jammy Jellyfish)\"\n",
            Some("Ubuntu:22.04:LTS"),
        ),
        (
            "ID=ubuntu\nVERSION_ID=\"24.10\"\nVERSION=\"24.10 (Oracular Oriole)\"\n",
            Some("Ubuntu:24.10"),
        ),
        ("ID=\"rocky\"\nVERSION_ID=\"9.3\"\n", Some("Rocky Linux:9")),
        (
            "ID=\"almalinux\"\nVERSION_ID=\"8.9\"\n",
            Some("AlmaLinux:8"),
        ),
        (
            "ID=\"rhel\"\nVERSION_ID=\"9.4\"\n",
            Some("Red Hat:enterprise_linux:9"),
        ),
        // Debian testing/sid has no VERSION_ID: not matched rather than guessed.
        (
            "PRETTY_NAME=\"Debian GNU/Linux trixie/sid\"\nID=debian\n",
            None,
        ),
        ("ID=fedora\nVERSION_ID=40\n", None),
        ("ID=linuxmint\nID_LIKE=ubuntu\nVERSION_ID=21.3\n", None),
    ];
    for (text, expected) in cases {
        let os = os_release::parse(text).unwrap();
        assert_eq!(os.ecosystem.as_deref(), expected, "{text}");
    }
    let os = os_release::parse(
        "# comment\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID='12'\n",
    )
    .unwrap();
    assert_eq!(os.id, "debian");
    assert_eq!(os.version_id, "12");
    assert_eq!(os.pretty_name, "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(os_release::parse("NAME=nothing\n"), None);
}

#[test]
fn this_machines_os_release_parses() {
    let Ok(text) = std::fs::read_to_string("/etc/os-release") else {
        println!("note: no /etc/os-release on this machine; skipped");
        return;
    };
    let os = os_release::parse(&text).expect("an ID");
    assert!(!os.id.is_empty());
    if os.id == "debian" && !os.version_id.is_empty() {
        let major = os.version_id.split('.').next().unwrap();
        assert_eq!(os.ecosystem, Some(format!("Debian:{major}")));
    }
}

// ---------------------------------------------------------------- dpkg

#[test]
fn dpkg_fixture_status_files_parse_with_source_packages() {
    let os = debian_12();
    let packages = dpkg::parse(
        &fixture("dpkg/osv-scalibr_dpkg_valid_status"),
        "var/lib/dpkg/status",
        "Debian:12",
        Some(&os),
    );
    assert_eq!(
        identities(&packages),
        [
            (
                "accountsservice",
                "22.08.8-6",
                "accountsservice",
                "22.08.8-6"
            ),
            ("acl", "2.3.1-3", "acl", "2.3.1-3"),
            ("adduser", "3.131", "adduser", "3.131"),
            (
                "admin-session",
                "2023.06.26.c543406313-00",
                "admin-session",
                "2023.06.26.c543406313-00"
            ),
            ("attr", "1:2.5.1-4", "attr", "1:2.5.1-4"),
            // `Source: acl`: the source's version is the binary's.
            ("libacl1", "2.3.1-3", "acl", "2.3.1-3"),
            // `Source: util-linux (2.38.1-5)`: a binNMU, advisories use the source version.
            ("util-linux-extra", "2.38.1-5+b1", "util-linux", "2.38.1-5"),
        ]
    );
    let util = &packages[6];
    assert_eq!(util.ecosystem, "Debian:12");
    assert_eq!(util.location, "var/lib/dpkg/status");
    assert_eq!(
        util.purl,
        "pkg:deb/debian/util-linux-extra@2.38.1-5%2Bb1?arch=amd64&distro=debian-12&upstream=util-linux"
    );
    assert_eq!(
        packages[4].purl,
        "pkg:deb/debian/attr@1%3A2.5.1-4?arch=amd64&distro=debian-12"
    );

    let other = dpkg::parse(
        &fixture("dpkg/osv-scanner_locks-many_status"),
        "var/lib/dpkg/status",
        "Debian:12",
        Some(&os),
    );
    assert_eq!(
        identities(&other),
        [("adduser", "3.118", "adduser", "3.118")]
    );
}

#[test]
fn dpkg_skips_packages_that_are_not_installed() {
    let text = "Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n\
                Package: held\nStatus: hold ok installed\nVersion: 2.0\nArchitecture: all\n\n\
                Package: distroless\nVersion: 3.0\n";
    let packages = dpkg::parse(text, "var/lib/dpkg/status.d/x", "Debian", None);
    let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["held", "distroless"]);
}

/// This machine's own dpkg database against dpkg itself.
#[test]
fn this_machines_dpkg_status_matches_dpkg_query() {
    let output = match std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}\t${Package}\t${Version}\n"])
        .output()
    {
        Ok(output) if output.status.success() => output,
        _ => {
            println!("note: dpkg-query is not available on this machine; skipped");
            return;
        }
    };
    let mut expected: Vec<(String, String)> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let status = fields.next()?;
            (status == "installed").then(|| {
                (
                    fields.next().unwrap().to_string(),
                    fields.next().unwrap().to_string(),
                )
            })
        })
        .collect();
    let status = std::fs::read_to_string("/var/lib/dpkg/status").unwrap();
    let mut found: Vec<(String, String)> =
        dpkg::parse(&status, "var/lib/dpkg/status", "Debian:12", None)
            .into_iter()
            .map(|p| (p.name, p.version))
            .collect();
    expected.sort();
    found.sort();
    assert!(!expected.is_empty());
    assert_eq!(found.len(), expected.len());
    assert_eq!(found, expected);
}

// ---------------------------------------------------------------- apk

#[test]
fn apk_fixture_databases_parse_with_origins() {
    let os = os_release::parse("ID=alpine\nVERSION_ID=3.18.0\n").unwrap();
    let packages = apk::parse(
        &fixture("apk/osv-scalibr_apk_installed"),
        "lib/apk/db/installed",
        "Alpine:v3.18",
        Some(&os),
    );
    assert_eq!(packages.len(), 15);
    let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "alpine-baselayout",
            "alpine-baselayout-data",
            "alpine-keys",
            "apk-tools",
            "busybox",
            "busybox-binsh",
            "ca-certificates-bundle",
            "libc-utils",
            "libcrypto3",
            "libssl3",
            "musl",
            "musl-utils",
            "scanelf",
            "ssl_client",
            "zlib",
        ]
    );
    let libcrypto = packages.iter().find(|p| p.name == "libcrypto3").unwrap();
    assert_eq!(
        (
            libcrypto.version.as_str(),
            libcrypto.match_name.as_str(),
            libcrypto.match_version.as_str()
        ),
        ("3.1.0-r4", "openssl", "3.1.0-r4")
    );
    assert_eq!(libcrypto.ecosystem, "Alpine:v3.18");
    assert_eq!(
        libcrypto.purl,
        "pkg:apk/alpine/libcrypto3@3.1.0-r4?arch=x86_64&distro=alpine-3.18.0&upstream=openssl"
    );
    let scanelf = packages.iter().find(|p| p.name == "scanelf").unwrap();
    assert_eq!(
        (scanelf.version.as_str(), scanelf.match_name.as_str()),
        ("1.3.7-r1", "pax-utils")
    );

    let other = apk::parse(
        &fixture("apk/osv-scanner_locks-many_installed"),
        "lib/apk/db/installed",
        "Alpine",
        None,
    );
    assert_eq!(
        identities(&other),
        [("apk-tools", "2.12.10-r1", "apk-tools", "2.12.10-r1")]
    );
}

// ---------------------------------------------------------------- Python, npm, gems

#[test]
fn python_metadata_uses_pep503_names_for_matching() {
    let metadata = "Metadata-Version: 2.1\nName: PyYAML\nVersion: 5.3.1\nSummary: YAML parser\n\nName: not-a-header\n";
    let package = python::parse(
        metadata,
        "usr/lib/python3/site-packages/PyYAML-5.3.1.dist-info/METADATA",
    )
    .unwrap();
    assert_eq!(package.ecosystem, "PyPI");
    assert_eq!(
        (package.name.as_str(), package.version.as_str()),
        ("PyYAML", "5.3.1")
    );
    assert_eq!(package.match_name, "pyyaml");
    assert_eq!(package.purl, "pkg:pypi/pyyaml@5.3.1");
    assert_eq!(python::pep503("zope.interface"), "zope-interface");
    assert_eq!(python::pep503("Foo__Bar-.baz"), "foo-bar-baz");
    assert_eq!(
        python::parse("Metadata-Version: 2.1\nVersion: 1\n", "x"),
        None
    );
}

#[test]
fn npm_package_json_gives_name_and_version() {
    let package = npm::parse(
        br#"{"name": "@babel/core", "version": "7.24.0", "dependencies": {}}"#,
        "app/node_modules/@babel/core/package.json",
    )
    .unwrap();
    assert_eq!(package.ecosystem, "npm");
    assert_eq!(package.match_name, "@babel/core");
    assert_eq!(package.purl, "pkg:npm/%40babel/core@7.24.0");
    assert_eq!(npm::parse(br#"{"name": "x"}"#, "p"), None);
    assert_eq!(
        npm::parse(br#"{"name": {"evil": 1}, "version": "1"}"#, "p"),
        None
    );
    assert_eq!(npm::parse(b"not json", "p"), None);
}

#[test]
fn gemspec_literal_lines_are_read_and_never_evaluated() {
    let gemspec = r#"# -*- encoding: utf-8 -*-
# stub: rack 2.2.22 ruby lib

Gem::Specification.new do |s|
  s.name = "rack".freeze
  s.version = "2.2.22"

  s.required_rubygems_version = Gem::Requirement.new(">= 0".freeze) if s.respond_to? :required_rubygems_version=
  s.summary = "a modular Ruby webserver interface".freeze
end
"#;
    let location = "usr/share/rubygems-integration/all/specifications/rack-2.2.22.gemspec";
    let package = gem::parse(gemspec, location).unwrap();
    assert_eq!(package.ecosystem, "RubyGems");
    assert_eq!(
        (package.name.as_str(), package.version.as_str()),
        ("rack", "2.2.22")
    );
    assert_eq!(package.purl, "pkg:gem/rack@2.2.22");
    // A computed version falls back on the file name.
    let computed = "Gem::Specification.new do |spec|\n  spec.name = 'thing'\n  spec.version = Thing::VERSION\nend\n";
    let package = gem::parse(computed, "gems/specifications/thing-1.0.3.gemspec").unwrap();
    assert_eq!(package.version, "1.0.3");
    assert_eq!(gem::parse("s.name = Dynamic.name\n", "x.gemspec"), None);
}

// ---------------------------------------------------------------- which files are wanted

#[test]
fn wanted_selects_exactly_the_inventory_sources() {
    let keep = [
        "etc/os-release",
        "usr/lib/os-release",
        "var/lib/dpkg/status",
        "var/lib/dpkg/status.d/libc6",
        "lib/apk/db/installed",
        "var/lib/rpm/rpmdb.sqlite",
        "usr/lib/sysimage/rpm/rpmdb.sqlite",
        "usr/lib/python3/dist-packages/requests-2.28.1.dist-info/METADATA",
        "usr/lib/python3/dist-packages/PyJWT-2.6.0.egg-info/PKG-INFO",
        "usr/lib/python3/dist-packages/distutils_thing-1.0.egg-info",
        "app/node_modules/left-pad/package.json",
        "app/node_modules/@types/node/package.json",
        "app/node_modules/a/node_modules/b/package.json",
        "usr/share/rubygems-integration/all/specifications/rack-2.2.22.gemspec",
    ];
    for path in keep {
        assert_eq!(Wanted.want(path, 0o644, 100), Want::Keep, "{path}");
    }
    let skip = [
        "var/lib/dpkg/status.d/libc6.md5sums",
        "var/lib/dpkg/status-old",
        "app/package.json",
        "app/node_modules/left-pad/test/fixtures/package.json",
        "app/node_modules/@types/package.json",
        "usr/lib/python3/x.dist-info/RECORD",
        "home/user/os-release",
        "specifications.gemspec",
        "usr/bin/script-too-small",
        "usr/share/doc/readme",
    ];
    for path in skip {
        assert_eq!(Wanted.want(path, 0o644, 10), Want::Skip, "{path}");
    }
    assert_eq!(Wanted.want("usr/bin/tool", 0o755, 10_000), Want::Binary);
    assert_eq!(Wanted.want("usr/bin/tool", 0o644, 10_000), Want::Skip);
    assert_eq!(Wanted.want("usr/bin/tiny", 0o755, 10), Want::Skip);
    assert_eq!(Wanted.want("opt/app/app.JAR", 0o644, 10), Want::Binary);
    assert_eq!(Wanted.want("srv/app.war", 0o644, 10), Want::Binary);
    assert_eq!(
        Wanted.want("var/lib/rpm/rpmdb.sqlite-wal", 0o644, 0),
        Want::Skip
    );
    assert_eq!(
        Wanted.want("var/lib/rpm/rpmdb.sqlite-wal", 0o644, 4096),
        Want::Keep
    );
    // Executables that are not ELF give nothing.
    assert!(Wanted
        .analyse("usr/bin/script", b"#!/bin/sh\necho hi\n")
        .is_empty());
}

// ---------------------------------------------------------------- Go

/// The build-info blob of a Go >= 1.18 binary, at a 16-byte-aligned offset after some
/// ELF-looking bytes, as the linker lays it out.
fn go_binary(go_version: &str, modinfo_lines: &str, flags: u8) -> Vec<u8> {
    fn uvarint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let mut bin = b"\x7fELF\x02\x01\x01".to_vec();
    bin.resize(0x1000, 0xcc);
    // A decoy magic at an unaligned offset, which must not be taken.
    bin[0x105..0x105 + golang::MAGIC.len()].copy_from_slice(golang::MAGIC);
    bin.extend_from_slice(golang::MAGIC);
    bin.push(8); // pointer size
    bin.push(flags);
    bin.resize(0x1000 + 32, 0);
    uvarint(go_version.len(), &mut bin);
    bin.extend_from_slice(go_version.as_bytes());
    let sentinel_start = b"0\x77\xaf\x0c\x92\x74\x08\x02\x41\xe1\xc1\x07\xe6\xd6\x18\xe6";
    let sentinel_end = b"\xf9\x32\x43\x31\x86\x18\x20\x72\x00\x82\x42\x10\x41\x16\xd8\xf2";
    let mut modinfo = sentinel_start.to_vec();
    modinfo.extend_from_slice(modinfo_lines.as_bytes());
    modinfo.extend_from_slice(sentinel_end);
    uvarint(modinfo.len(), &mut bin);
    bin.extend_from_slice(&modinfo);
    bin.resize(bin.len() + 4096, 0);
    bin
}

const MODINFO: &str = "path\texample.com/app\n\
mod\texample.com/app\t(devel)\t\n\
dep\tgithub.com/google/uuid\tv1.3.0\th1:t6JiXgmwXMjEs8VusXIJk2BXHsn+wx8BZdTaoZ5fu7I=\n\
dep\tgolang.org/x/net\tv0.7.0\th1:old\n\
=>\tgolang.org/x/net\tv0.17.0\th1:new\n\
dep\texample.com/local\tv0.0.0\n\
=>\t../local\t\t\n\
build\t-compiler=gc\n\
build\tGOOS=linux\n";

#[test]
fn go_buildinfo_is_read_from_a_go_1_18_layout() {
    let bin = go_binary("go1.21.5", MODINFO, 2);
    let info = golang::buildinfo(&bin).unwrap();
    assert_eq!(info.go_version, "go1.21.5");
    assert_eq!(
        info.modules,
        [
            ("example.com/app".to_string(), String::new()),
            ("github.com/google/uuid".to_string(), "v1.3.0".to_string()),
            ("golang.org/x/net".to_string(), "v0.17.0".to_string()), // replaced
            ("../local".to_string(), String::new()),                 // local replacement
        ]
    );
    let packages = golang::packages(&bin, "usr/local/bin/app");
    assert_eq!(
        identities(&packages),
        [
            ("stdlib", "go1.21.5", "stdlib", "1.21.5"),
            (
                "github.com/google/uuid",
                "v1.3.0",
                "github.com/google/uuid",
                "1.3.0"
            ),
            ("golang.org/x/net", "v0.17.0", "golang.org/x/net", "0.17.0"),
        ]
    );
    assert!(packages.iter().all(|p| p.ecosystem == "Go"));
    assert_eq!(packages[1].purl, "pkg:golang/github.com/google/uuid@v1.3.0");
    assert_eq!(packages[0].purl, "pkg:golang/stdlib@1.21.5");

    // A Debian-style GOPATH build: only the toolchain.
    let plain = golang::packages(&go_binary("go1.19.8", "", 2), "usr/bin/age");
    assert_eq!(
        identities(&plain),
        [("stdlib", "go1.19.8", "stdlib", "1.19.8")]
    );
    // Go < 1.18 (pointers, not inline strings) and non-Go binaries: nothing.
    assert_eq!(golang::buildinfo(&go_binary("go1.16", MODINFO, 0)), None);
    assert_eq!(golang::buildinfo(b"\x7fELF just some binary"), None);
    // Truncated right after the header: nothing, and no panic.
    let bin = go_binary("go1.21.5", MODINFO, 2);
    assert_eq!(golang::buildinfo(&bin[..0x1000 + 34]), None);
}

#[test]
fn go_toolchain_versions_become_osv_stdlib_versions() {
    assert_eq!(
        golang::stdlib_version("go1.19.8").as_deref(),
        Some("1.19.8")
    );
    assert_eq!(golang::stdlib_version("go1.20").as_deref(), Some("1.20.0"));
    assert_eq!(
        golang::stdlib_version("go1.21rc2").as_deref(),
        Some("1.21.0-rc.2")
    );
    assert_eq!(
        golang::stdlib_version("go1.22.1 X:boringcrypto").as_deref(),
        Some("1.22.1")
    );
    assert_eq!(golang::stdlib_version("devel go1.23-abcdef"), None);
}

// ---------------------------------------------------------------- cargo auditable

/// A minimal ELF64 file with a `.dep-v0` section holding `payload`, located only through
/// the section header table (as cargo-auditable's section is: it is not loaded).
fn elf_with_dep_section(payload: &[u8]) -> Vec<u8> {
    let shstrtab = b"\0.dep-v0\0.shstrtab\0";
    let dep_offset = 64u64;
    let shstrtab_offset = dep_offset + payload.len() as u64;
    let mut section_headers_offset = shstrtab_offset + shstrtab.len() as u64;
    section_headers_offset = section_headers_offset.div_ceil(8) * 8;

    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\x00"); // 64-bit, little-endian, version 1
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes()); // entry
    elf.extend_from_slice(&0u64.to_le_bytes()); // program headers: none
    elf.extend_from_slice(&section_headers_offset.to_le_bytes());
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // header size
    elf.extend_from_slice(&56u16.to_le_bytes()); // program header entry size
    elf.extend_from_slice(&0u16.to_le_bytes()); // program headers
    elf.extend_from_slice(&64u16.to_le_bytes()); // section header entry size
    elf.extend_from_slice(&3u16.to_le_bytes()); // sections
    elf.extend_from_slice(&2u16.to_le_bytes()); // index of .shstrtab
    assert_eq!(elf.len(), 64);
    elf.extend_from_slice(payload);
    elf.extend_from_slice(shstrtab);
    elf.resize(section_headers_offset as usize, 0);
    let mut section = |name: u32, kind: u32, offset: u64, size: u64| {
        elf.extend_from_slice(&name.to_le_bytes());
        elf.extend_from_slice(&kind.to_le_bytes());
        elf.extend_from_slice(&0u64.to_le_bytes()); // flags: not loaded
        elf.extend_from_slice(&0u64.to_le_bytes()); // address
        elf.extend_from_slice(&offset.to_le_bytes());
        elf.extend_from_slice(&size.to_le_bytes());
        elf.extend_from_slice(&0u32.to_le_bytes()); // link
        elf.extend_from_slice(&0u32.to_le_bytes()); // info
        elf.extend_from_slice(&1u64.to_le_bytes()); // alignment
        elf.extend_from_slice(&0u64.to_le_bytes()); // entry size
    };
    section(0, 0, 0, 0);
    section(1, 1, dep_offset, payload.len() as u64); // .dep-v0, PROGBITS
    section(9, 3, shstrtab_offset, shstrtab.len() as u64); // .shstrtab, STRTAB
    elf
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

const AUDIT_JSON: &str = r#"{"packages":[
  {"name":"audbin","version":"0.1.0","source":"local","kind":"runtime","dependencies":[1,2],"root":true},
  {"name":"smallvec","version":"1.6.0","source":"crates.io","kind":"runtime"},
  {"name":"forked","version":"2.0.0","source":"git","kind":"runtime"}
]}"#;

#[test]
fn cargo_auditable_section_gives_crates_io_packages() {
    let elf = elf_with_dep_section(&zlib(AUDIT_JSON.as_bytes()));
    let packages = rust::packages(&elf, "usr/local/bin/audbin");
    assert_eq!(
        identities(&packages),
        [("smallvec", "1.6.0", "smallvec", "1.6.0")]
    );
    assert_eq!(packages[0].ecosystem, "crates.io");
    assert_eq!(packages[0].purl, "pkg:cargo/smallvec@1.6.0");
    // Through the selector, as the layer reader calls it.
    assert_eq!(Wanted.analyse("usr/local/bin/audbin", &elf), packages);
    // No section, or garbage in it: nothing, and no panic.
    assert!(rust::packages(&elf_with_dep_section(b"not zlib"), "x").is_empty());
    assert!(rust::packages(&elf[..100], "x").is_empty());
}

// ---------------------------------------------------------------- Java

fn jar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in entries {
        writer.start_file(*name, options).unwrap();
        writer.write_all(content).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn pom(group: &str, artifact: &str, version: &str) -> Vec<u8> {
    format!("#Generated by Maven\n#Tue Dec 05 2026\ngroupId={group}\nartifactId={artifact}\nversion={version}\n")
        .into_bytes()
}

#[test]
fn jars_give_maven_packages_including_nested_ones() {
    let deep = jar(&[(
        "META-INF/maven/com.example/deep/pom.properties",
        &pom("com.example", "deep", "9.9.9"),
    )]);
    let inner = jar(&[
        ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n"),
        (
            "META-INF/maven/org.apache.maven/maven-artifact/pom.properties",
            &pom("org.apache.maven", "maven-artifact", "3.8.7"),
        ),
        ("WEB-INF/lib/deep.jar", &deep), // two levels down: not read
    ]);
    let app = jar(&[
        ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n"),
        (
            "META-INF/maven/com.example/app/pom.properties",
            &pom("com.example", "app", "2.0.0"),
        ),
        ("BOOT-INF/lib/maven-artifact-3.8.7.jar", &inner),
        ("BOOT-INF/classes/lib/notes.jar", b"not a zip"),
        ("static/other.jar", &deep), // not a library folder: not read
    ]);
    let packages = java::packages(&app, "opt/app.jar");
    assert_eq!(
        identities(&packages),
        [
            ("com.example:app", "2.0.0", "com.example:app", "2.0.0"),
            (
                "org.apache.maven:maven-artifact",
                "3.8.7",
                "org.apache.maven:maven-artifact",
                "3.8.7"
            ),
        ]
    );
    assert!(packages.iter().all(|p| p.ecosystem == "Maven"));
    assert_eq!(packages[0].purl, "pkg:maven/com.example/app@2.0.0");
    assert_eq!(packages[0].location, "opt/app.jar");
    assert_eq!(
        packages[1].location,
        "opt/app.jar!/BOOT-INF/lib/maven-artifact-3.8.7.jar"
    );
    assert!(java::packages(b"PK\x03\x04 broken", "x.jar").is_empty());
}

// ---------------------------------------------------------------- rpm

/// An rpm header blob as rpmdb.sqlite stores it: index entries, then the data store.
fn rpm_header(strings: &[(u32, &str)], epoch: Option<u32>) -> Vec<u8> {
    let mut index: Vec<(u32, u32, u32, u32)> = Vec::new();
    let mut data = Vec::new();
    // The region tag rpm puts first (HEADERIMMUTABLE, BIN, 16 bytes).
    index.push((63, 7, 0, 16));
    data.extend_from_slice(&[0u8; 16]);
    if let Some(epoch) = epoch {
        index.push((1003, 4, data.len() as u32, 1));
        data.extend_from_slice(&epoch.to_be_bytes());
    }
    for (tag, value) in strings {
        index.push((*tag, 6, data.len() as u32, 1));
        data.extend_from_slice(value.as_bytes());
        data.push(0);
    }
    let mut blob = Vec::new();
    blob.extend_from_slice(&(index.len() as u32).to_be_bytes());
    blob.extend_from_slice(&(data.len() as u32).to_be_bytes());
    for (tag, kind, offset, count) in index {
        for field in [tag, kind, offset, count] {
            blob.extend_from_slice(&field.to_be_bytes());
        }
    }
    blob.extend_from_slice(&data);
    blob
}

/// An rpmdb.sqlite in WAL mode, as rpm leaves it.
fn rpmdb() -> Vec<u8> {
    let connection = rusqlite::Connection::open_in_memory().unwrap();
    connection
        .execute_batch(
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);",
        )
        .unwrap();
    let headers = [
        rpm_header(
            &[
                (1000, "openssl-libs"),
                (1001, "3.0.7"),
                (1002, "27.el9"),
                (1022, "x86_64"),
                (1044, "openssl-3.0.7-27.el9.src.rpm"),
            ],
            Some(1),
        ),
        rpm_header(
            &[
                (1000, "wharf-demo"),
                (1001, "1.2.3"),
                (1002, "4.el9"),
                (1022, "noarch"),
                (1044, "wharf-demo-1.2.3-4.el9.src.rpm"),
            ],
            Some(2),
        ),
        rpm_header(
            &[(1000, "gpg-pubkey"), (1001, "8483c65d"), (1002, "5ccc5b19")],
            None,
        ),
        b"\xff\xff\xff\xffgarbage".to_vec(),
    ];
    for blob in headers {
        connection
            .execute("INSERT INTO Packages (blob) VALUES (?1)", [blob])
            .unwrap();
    }
    let mut bytes = connection
        .serialize(rusqlite::DatabaseName::Main)
        .unwrap()
        .to_vec();
    bytes[18] = 2; // WAL, as rpm writes it
    bytes[19] = 2;
    bytes
}

#[test]
fn rpm_header_blobs_parse() {
    let blob = rpm_header(&[(1000, "bash"), (1001, "5.1.8"), (1002, "6.el9")], None);
    let tags = rpm::parse_header(&blob).unwrap();
    assert_eq!(tags.get(&1000).map(String::as_str), Some("bash"));
    assert_eq!(tags.get(&1002).map(String::as_str), Some("6.el9"));
    assert_eq!(
        rpm::parse_header(&blob[..blob.len() - 3]),
        None,
        "truncated"
    );
    assert_eq!(rpm::parse_header(b"\x7f\xff\xff\xff\0\0\0\0"), None);
    assert_eq!(
        rpm::split_source_rpm("openssl-3.0.7-27.el9.src.rpm"),
        Some(("openssl", "3.0.7", "27.el9"))
    );
    assert_eq!(rpm::split_source_rpm("weird.src.rpm"), None);
}

#[test]
fn rpmdb_sqlite_in_wal_mode_is_read_from_memory() {
    let os = os_release::parse("ID=\"rocky\"\nVERSION_ID=\"9.3\"\n").unwrap();
    let packages = rpm::parse_rpmdb(
        &rpmdb(),
        "var/lib/rpm/rpmdb.sqlite",
        "Rocky Linux:9",
        Some(&os),
    )
    .unwrap();
    assert_eq!(
        identities(&packages),
        [
            (
                "openssl-libs",
                "1:3.0.7-27.el9",
                "openssl",
                "1:3.0.7-27.el9"
            ),
            ("wharf-demo", "2:1.2.3-4.el9", "wharf-demo", "2:1.2.3-4.el9"),
        ]
    );
    assert_eq!(
        packages[0].purl,
        "pkg:rpm/rocky/openssl-libs@3.0.7-27.el9?arch=x86_64&distro=rocky-9.3&epoch=1&upstream=openssl-3.0.7-27.el9.src.rpm"
    );
    assert!(rpm::parse_rpmdb(b"SQLite format 3\0 but truncated", "x", "Red Hat", None).is_err());
    assert!(rpm::parse_rpmdb(&[0u8; 4096], "x", "Red Hat", None).is_err());
}

// ---------------------------------------------------------------- whole images

struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn file(mut self, path: &str, mode: u32, content: &[u8]) -> Layer {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(mode);
        self.0.append_data(&mut header, path, content).unwrap();
        self
    }

    fn symlink(mut self, path: &str, target: &str) -> Layer {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        self.0.append_link(&mut header, path, target).unwrap();
        self
    }

    fn hardlink(mut self, path: &str, target: &str) -> Layer {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Link);
        header.set_mode(0o755);
        header.set_size(0);
        self.0.append_link(&mut header, path, target).unwrap();
        self
    }

    fn gzip(self) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&self.0.into_inner().unwrap()).unwrap();
        encoder.finish().unwrap()
    }
}

const DEBIAN_OS_RELEASE: &[u8] =
    b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";

#[test]
fn a_debian_image_scans_to_a_sorted_inventory() {
    let status = "Package: libexpat1\nStatus: install ok installed\nArchitecture: amd64\nSource: expat\nVersion: 2.5.0-1+deb12u2\n";
    let base = Layer::new()
        .file("usr/lib/os-release", 0o644, DEBIAN_OS_RELEASE)
        .symlink("etc/os-release", "../usr/lib/os-release")
        .file("var/lib/dpkg/status", 0o644, status.as_bytes())
        .gzip();
    let app = Layer::new()
        .file(
            "usr/lib/python3/dist-packages/PyYAML-5.3.1.dist-info/METADATA",
            0o644,
            b"Metadata-Version: 2.1\nName: PyYAML\nVersion: 5.3.1\n",
        )
        .file(
            "usr/lib/python3/dist-packages/old-1.0.dist-info/METADATA",
            0o644,
            b"Name: old\nVersion: 1.0\n",
        )
        .file(
            "srv/app/node_modules/left-pad/package.json",
            0o644,
            br#"{"name":"left-pad","version":"1.3.0"}"#,
        )
        .file(
            "srv/app/node_modules/left-pad/node_modules/@scope/inner/package.json",
            0o644,
            br#"{"name":"@scope/inner","version":"0.1.0"}"#,
        )
        .file(
            "srv/app/node_modules/left-pad/test/package.json",
            0o644,
            br#"{"name":"fixture","version":"0.0.0"}"#,
        )
        .file("usr/local/bin/app", 0o755, &go_binary("go1.21.5", MODINFO, 2))
        .hardlink("usr/local/bin/app-again", "usr/local/bin/app")
        .file("usr/local/bin/audbin", 0o755, &elf_with_dep_section(&zlib(AUDIT_JSON.as_bytes())))
        .file("usr/local/bin/not-executable", 0o644, &go_binary("go1.20.1", "", 2))
        .file(
            "var/lib/gems/3.1.0/specifications/rack-2.2.22.gemspec",
            0o644,
            b"Gem::Specification.new do |s|\n  s.name = \"rack\".freeze\n  s.version = \"2.2.22\"\nend\n",
        )
        .file(
            "opt/app.jar",
            0o644,
            &jar(&[(
                "META-INF/maven/com.example/app/pom.properties",
                &pom("com.example", "app", "2.0.0"),
            )]),
        )
        .gzip();
    let cleanup = Layer::new()
        .file(
            "usr/lib/python3/dist-packages/.wh.old-1.0.dist-info",
            0o644,
            b"",
        )
        .gzip();
    let layers = vec![Cursor::new(base), Cursor::new(app), Cursor::new(cleanup)];
    let inventory = scan_layers(layers, &Limits::default()).unwrap();

    assert_eq!(
        inventory.os.as_ref().unwrap().ecosystem.as_deref(),
        Some("Debian:12")
    );
    let mut expected = vec![
        ("Debian:12", "libexpat1", "2.5.0-1+deb12u2", "expat"),
        ("PyPI", "PyYAML", "5.3.1", "pyyaml"),
        ("npm", "left-pad", "1.3.0", "left-pad"),
        ("npm", "@scope/inner", "0.1.0", "@scope/inner"),
        ("Go", "stdlib", "go1.21.5", "stdlib"),
        (
            "Go",
            "github.com/google/uuid",
            "v1.3.0",
            "github.com/google/uuid",
        ),
        ("Go", "golang.org/x/net", "v0.17.0", "golang.org/x/net"),
        ("crates.io", "smallvec", "1.6.0", "smallvec"),
        ("RubyGems", "rack", "2.2.22", "rack"),
        ("Maven", "com.example:app", "2.0.0", "com.example:app"),
    ];
    let mut found: Vec<(&str, &str, &str, &str)> = inventory
        .packages
        .iter()
        .map(|p| {
            (
                p.ecosystem.as_str(),
                p.name.as_str(),
                p.version.as_str(),
                p.match_name.as_str(),
            )
        })
        .collect();
    expected.sort();
    found.sort();
    found.dedup(); // the hard-linked Go binary's packages are there twice
    assert_eq!(
        found, expected,
        "the whited-out `old` and the non-executable binary are absent"
    );
    let mut sorted = inventory.packages.clone();
    sorted.sort();
    assert_eq!(inventory.packages, sorted);
    // The hard link to the Go binary shares its packages, at its own location.
    let stdlib_locations: Vec<&str> = inventory
        .packages
        .iter()
        .filter(|p| p.name == "stdlib")
        .map(|p| p.location.as_str())
        .collect();
    assert_eq!(
        stdlib_locations,
        ["usr/local/bin/app", "usr/local/bin/app-again"]
    );
    assert_eq!(
        find(&inventory, "smallvec").location,
        "usr/local/bin/audbin"
    );
    assert!(inventory.notes.is_empty(), "{:?}", inventory.notes);
}

#[test]
fn an_image_without_os_release_notes_it_and_uses_the_family_ecosystem() {
    let layer = Layer::new()
        .file(
            "lib/apk/db/installed",
            0o644,
            fixture("apk/osv-scanner_locks-many_installed").as_bytes(),
        )
        .gzip();
    let inventory = scan_layers(vec![Cursor::new(layer)], &Limits::default()).unwrap();
    assert_eq!(inventory.os, None);
    assert_eq!(find(&inventory, "apk-tools").ecosystem, "Alpine");
    let notes = inventory.notes.join("\n");
    assert!(notes.contains("no os-release"), "{notes}");
    assert!(notes.contains("without a release"), "{notes}");
}

#[test]
fn an_rpm_image_scans_from_the_sysimage_database() {
    let layer = Layer::new()
        .file(
            "etc/os-release",
            0o644,
            b"ID=\"rocky\"\nVERSION_ID=\"9.3\"\nPRETTY_NAME=\"Rocky Linux 9.3\"\n",
        )
        .file("usr/lib/sysimage/rpm/rpmdb.sqlite", 0o644, &rpmdb())
        .symlink("var/lib/rpm", "../../usr/lib/sysimage/rpm")
        .gzip();
    let inventory = scan_layers(vec![Cursor::new(layer)], &Limits::default()).unwrap();
    let openssl = find(&inventory, "openssl-libs");
    assert_eq!(openssl.ecosystem, "Rocky Linux:9");
    assert_eq!(openssl.match_name, "openssl");
    assert_eq!(inventory.packages.len(), 2, "{:#?}", inventory.packages);
}

#[test]
fn scan_layers_reports_the_first_failing_layer() {
    let good = Layer::new()
        .file("etc/os-release", 0o644, DEBIAN_OS_RELEASE)
        .gzip();
    let bomb_limits = Limits {
        entries: 3,
        ..Limits::default()
    };
    let mut many = Layer::new();
    for i in 0..5 {
        many = many.file(&format!("f{i}"), 0o644, b"x");
    }
    let error = scan_layers(
        vec![
            Cursor::new(good.clone()),
            Cursor::new(many.gzip()),
            Cursor::new(good),
        ],
        &bomb_limits,
    )
    .unwrap_err();
    assert_eq!(error, wharf_scan::layer::ScanError::TooManyEntries(3));
}
