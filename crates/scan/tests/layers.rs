//! The layer reader on hostile and ordinary layers, all built in memory.

use std::io::{self, Read, Write};

use wharf_scan::layer::{
    clean_path, read_layer, Budget, ImageFiles, LayerDelta, Limits, Node, ScanError, Selector, Want,
};
use wharf_scan::Package;

const MIB: u64 = 1024 * 1024;

/// Keeps files whose path contains "keep" or ends in os-release / status, and analyses
/// files whose path ends in ".bin" into one package named after their first bytes.
struct TestSelector;

impl Selector for TestSelector {
    fn want(&self, path: &str, _mode: u32, _size: u64) -> Want {
        if path.ends_with(".bin") {
            Want::Binary
        } else if path.contains("keep")
            || path.ends_with("os-release")
            || path.contains("dpkg/status")
            || path.contains("dist-info")
        {
            Want::Keep
        } else {
            Want::Skip
        }
    }

    fn analyse(&self, path: &str, bytes: &[u8]) -> Vec<Package> {
        let name = String::from_utf8_lossy(&bytes[..bytes.len().min(8)]).into_owned();
        vec![Package {
            ecosystem: "test".into(),
            name: name.clone(),
            version: bytes.len().to_string(),
            match_name: name,
            match_version: bytes.len().to_string(),
            purl: String::new(),
            location: path.into(),
        }]
    }
}

/// A tar layer written entry by entry, with raw names where the tar crate's own setters
/// would refuse them (that is the point of these tests).
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, name: &[u8], link: &[u8], mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        let old = header.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link);
        header.set_cksum();
        header
    }

    fn file(mut self, name: &str, content: &[u8]) -> Layer {
        self.raw_file(name.as_bytes(), 0o644, content);
        self
    }

    fn raw_file(&mut self, name: &[u8], mode: u32, content: &[u8]) {
        let header = Layer::header(
            tar::EntryType::Regular,
            name,
            b"",
            mode,
            content.len() as u64,
        );
        self.0.append(&header, content).unwrap();
    }

    fn long_file(mut self, name: &str, content: &[u8]) -> Layer {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        self.0.append_data(&mut header, name, content).unwrap();
        self
    }

    fn dir(mut self, name: &str) -> Layer {
        let header = Layer::header(tar::EntryType::Directory, name.as_bytes(), b"", 0o755, 0);
        self.0.append(&header, io::empty()).unwrap();
        self
    }

    fn symlink(mut self, name: &str, target: &str) -> Layer {
        let header = Layer::header(
            tar::EntryType::Symlink,
            name.as_bytes(),
            target.as_bytes(),
            0o777,
            0,
        );
        self.0.append(&header, io::empty()).unwrap();
        self
    }

    fn hardlink(mut self, name: &str, target: &str) -> Layer {
        let header = Layer::header(
            tar::EntryType::Link,
            name.as_bytes(),
            target.as_bytes(),
            0o644,
            0,
        );
        self.0.append(&header, io::empty()).unwrap();
        self
    }

    fn tar(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    gzip_at(bytes, flate2::Compression::fast())
}

fn gzip_at(bytes: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn read(bytes: &[u8], limits: &Limits, budget: &Budget) -> Result<LayerDelta, ScanError> {
    read_layer(bytes, limits, budget, &TestSelector)
}

fn read_ok(bytes: &[u8]) -> LayerDelta {
    read(bytes, &Limits::default(), &Budget::new()).unwrap()
}

fn image(layers: &[Vec<u8>]) -> ImageFiles {
    let mut files = ImageFiles::new();
    for layer in layers {
        files.apply(read_ok(layer));
    }
    files
}

fn kept_paths(files: &ImageFiles) -> Vec<&str> {
    files.files().map(|(path, _)| path).collect()
}

#[test]
fn clean_path_normalises_and_refuses_parent_components() {
    assert_eq!(clean_path(b"./a/b").as_deref(), Some("a/b"));
    assert_eq!(clean_path(b"/a/b").as_deref(), Some("a/b"));
    assert_eq!(clean_path(b"a//b/").as_deref(), Some("a/b"));
    assert_eq!(clean_path(b"a/./b").as_deref(), Some("a/b"));
    assert_eq!(clean_path(b"../etc/passwd"), None);
    assert_eq!(clean_path(b"a/../../b"), None);
    assert_eq!(clean_path(b"a/b/.."), None);
    assert_eq!(clean_path(b"\xff\xfe"), None, "not UTF-8");
}

#[test]
fn whiteouts_and_opaque_dirs_hide_lower_layers() {
    let lower = Layer::new()
        .file("var/lib/dpkg/status", b"base")
        .file("var/lib/dpkg/status.d/base", b"base")
        .file("usr/lib/python3/x.dist-info/METADATA", b"Name: x")
        .file("usr/lib/python3/xy.dist-info/METADATA", b"Name: xy")
        .tar();
    let upper = Layer::new()
        .file("usr/lib/python3/.wh.x.dist-info", b"")
        .file("var/lib/dpkg/status.d/.wh..wh..opq", b"")
        .file("var/lib/dpkg/status.d/new", b"new")
        .tar();
    let files = image(&[lower, upper]);
    assert_eq!(
        kept_paths(&files),
        [
            "usr/lib/python3/xy.dist-info/METADATA", // `.wh.x.dist-info` hides x only
            "var/lib/dpkg/status",
            "var/lib/dpkg/status.d/new", // the opaque dir keeps the layer's own files
        ]
    );
    assert_eq!(files.read("var/lib/dpkg/status.d/new"), Some(&b"new"[..]));
}

#[test]
fn a_whiteout_only_hides_lower_layers_and_a_later_layer_can_add_the_path_back() {
    let delta = read_ok(&Layer::new().file(".wh.keep", b"").tar());
    assert_eq!(delta.whiteouts, ["keep"]);
    let files = image(&[
        Layer::new().file("keep", b"one").tar(),
        Layer::new().file(".wh.keep", b"").tar(),
        Layer::new().file("keep", b"three").tar(),
    ]);
    assert_eq!(files.read("keep"), Some(&b"three"[..]));
}

#[test]
fn traversal_entries_are_skipped_and_absolute_paths_cleaned() {
    let layer = Layer::new()
        .file("../../etc/os-release", b"ID=evil")
        .file("/etc/os-release", b"ID=debian")
        .file("./keep/a", b"a")
        .symlink("usr/lib/os-release", "../../../../../../etc/os-release")
        .tar();
    let delta = read_ok(&layer);
    assert!(
        delta
            .notes
            .iter()
            .any(|n| n.contains("unsafe path") && n.contains("../../etc/os-release")),
        "{:?}",
        delta.notes
    );
    let files = image(&[layer]);
    assert_eq!(files.read("etc/os-release"), Some(&b"ID=debian"[..]));
    assert_eq!(files.read("keep/a"), Some(&b"a"[..]));
    // `..` in a link stops at the image's root: it reads the image's file, not the host's.
    assert_eq!(files.read("usr/lib/os-release"), Some(&b"ID=debian"[..]));
}

#[test]
fn symlinks_resolve_inside_the_image_only() {
    let files = image(&[Layer::new()
        .file("usr/lib/os-release", b"ID=alpine")
        .symlink("etc/os-release", "../usr/lib/os-release")
        .symlink("etc/passwd-link", "../../../../etc/passwd")
        .symlink("abs", "/usr/lib/os-release")
        .symlink("lib", "usr/lib")
        .tar()]);
    assert_eq!(files.read("etc/os-release"), Some(&b"ID=alpine"[..]));
    assert_eq!(
        files.read("abs"),
        Some(&b"ID=alpine"[..]),
        "absolute = image root"
    );
    assert_eq!(
        files.read("lib/os-release"),
        Some(&b"ID=alpine"[..]),
        "a symlinked directory in the middle of the path"
    );
    // The host has an /etc/passwd; the image kept none, so this reads nothing.
    assert!(std::path::Path::new("/etc/passwd").exists());
    assert_eq!(files.read("etc/passwd-link"), None);
    assert_eq!(
        files.resolve("etc/passwd-link").as_deref(),
        Some("etc/passwd")
    );
}

#[test]
fn symlink_loops_read_as_missing() {
    let files = image(&[Layer::new()
        .symlink("keep/self", "self")
        .symlink("keep/a", "b")
        .symlink("keep/b", "a")
        .tar()]);
    assert_eq!(files.read("keep/self"), None);
    assert_eq!(files.read("keep/a"), None);
}

#[test]
fn hard_links_read_their_target_and_unresolved_ones_are_noted() {
    let files = image(&[
        Layer::new()
            .file("usr/lib/os-release", b"ID=debian")
            .hardlink("etc/os-release", "usr/lib/os-release")
            .hardlink("keep/unwanted-target", "usr/share/not-kept")
            .tar(),
        // A hard link in a later layer to a file of an earlier one.
        Layer::new()
            .hardlink("keep/copy-os-release", "/usr/lib/os-release")
            .tar(),
    ]);
    assert_eq!(files.read("etc/os-release"), Some(&b"ID=debian"[..]));
    assert_eq!(files.read("keep/copy-os-release"), Some(&b"ID=debian"[..]));
    assert_eq!(files.read("keep/unwanted-target"), None);
    assert!(
        files
            .notes()
            .iter()
            .any(|n| n.contains("keep/unwanted-target") && n.contains("hard link")),
        "{:?}",
        files.notes()
    );
}

#[test]
fn a_hard_link_to_a_binary_shares_its_packages() {
    let files = image(&[Layer::new()
        .file("usr/bin/tool.bin", b"GOBINARY-content")
        .hardlink("usr/bin/other.bin", "usr/bin/tool.bin")
        .tar()]);
    let analysed: Vec<(&str, &[Package])> = files.analysed().collect();
    assert_eq!(analysed.len(), 2);
    assert_eq!(analysed[0].1, analysed[1].1);
    assert_eq!(analysed[0].1[0].name, "GOBINARY");
}

#[test]
fn binaries_are_analysed_and_not_kept() {
    let files = image(&[Layer::new().file("opt/app.bin", b"ELFDATA-xyz").tar()]);
    assert_eq!(files.files().count(), 0, "the bytes are not kept");
    assert_eq!(files.read("opt/app.bin"), None);
    let analysed: Vec<_> = files.analysed().collect();
    assert_eq!(analysed.len(), 1);
    assert_eq!(analysed[0].0, "opt/app.bin");
    assert_eq!(analysed[0].1[0].name, "ELFDATA-");
    assert_eq!(analysed[0].1[0].version, "11");
    assert!(matches!(files.node("opt/app.bin"), Some(Node::Packages(_))));
}

#[test]
fn capture_limit_skips_the_file_with_a_note_and_hides_the_lower_copy() {
    let limits = Limits {
        captured_file: MIB,
        binary: MIB,
        ..Limits::default()
    };
    let big = vec![b'x'; 2 * MIB as usize];
    let lower = Layer::new().file("keep/big", b"small").tar();
    let upper = Layer::new()
        .file("keep/big", &big)
        .file("keep/small", b"ok")
        .file("big.bin", &big)
        .tar();
    let mut files = ImageFiles::new();
    for layer in [lower, upper] {
        files.apply(read(&layer, &limits, &Budget::new()).unwrap());
    }
    assert_eq!(files.read("keep/small"), Some(&b"ok"[..]));
    assert_eq!(
        files.read("keep/big"),
        None,
        "the stale lower copy must not show"
    );
    assert_eq!(files.analysed().count(), 0);
    let notes = files.notes().join("\n");
    assert!(
        notes.contains("keep/big") && notes.contains("captured_file"),
        "{notes}"
    );
    assert!(
        notes.contains("big.bin") && notes.contains("binary limit"),
        "{notes}"
    );
}

#[test]
fn entry_limit_counts_every_layer_of_the_image() {
    let limits = Limits {
        entries: 10,
        ..Limits::default()
    };
    let mut layer = Layer::new();
    for i in 0..6 {
        layer = layer.dir(&format!("d{i}"));
    }
    let layer = layer.tar();
    let budget = Budget::new();
    read(&layer, &limits, &budget).expect("6 entries fit in 10");
    assert_eq!(
        read(&layer, &limits, &budget).unwrap_err(),
        ScanError::TooManyEntries(10)
    );
    let mut many = Layer::new();
    for i in 0..20 {
        many = many.dir(&format!("d{i}"));
    }
    assert_eq!(
        read(&many.tar(), &limits, &Budget::new()).unwrap_err(),
        ScanError::TooManyEntries(10)
    );
}

/// A gzip layer holding one file of `mib` MiB of `byte`s, compressed at the best ratio.
/// The same 1 MiB gzip member is repeated (gzip allows members end to end), which keeps
/// the test fast in debug builds; each member is a ~1000:1 bomb of its own.
fn gzip_bomb(byte: u8, mib: usize) -> Vec<u8> {
    let header = Layer::header(
        tar::EntryType::Regular,
        b"usr/share/zeros",
        b"",
        0o644,
        mib as u64 * MIB,
    );
    let mut layer = gzip_at(header.as_bytes(), flate2::Compression::best());
    let member = gzip_at(&vec![byte; MIB as usize], flate2::Compression::best());
    for _ in 0..mib {
        layer.extend_from_slice(&member);
    }
    layer.extend(gzip(&[0u8; 1024])); // the end-of-archive blocks
    layer
}

#[test]
fn gzip_bomb_stops_at_the_budget() {
    let bomb = gzip_bomb(0, 64);
    assert!(bomb.len() < 200_000, "the bomb is small: {}", bomb.len());
    let limits = Limits {
        total_bytes: 16 * MIB,
        ..Limits::default()
    };
    let error = read(&bomb, &limits, &Budget::new()).unwrap_err();
    assert_eq!(error, ScanError::TooManyBytes(16 * MIB));
    assert_eq!(
        error.to_string(),
        "the image's layers decompress to more than 16 MiB (limit total_bytes): refusing, possibly a decompression bomb"
    );
}

#[test]
fn the_byte_budget_is_shared_by_the_layers_of_an_image() {
    let ten_mib = gzip_bomb(1, 10);
    let limits = Limits {
        total_bytes: 16 * MIB,
        ..Limits::default()
    };
    let budget = Budget::new();
    read(&ten_mib, &limits, &budget).expect("the first 10 MiB fit");
    assert!(budget.bytes() >= 10 * MIB);
    assert_eq!(
        read(&ten_mib, &limits, &budget).unwrap_err(),
        ScanError::TooManyBytes(16 * MIB)
    );
}

#[test]
fn default_limits_and_messages() {
    let limits = Limits::default();
    assert_eq!(limits.total_bytes, 16 << 30);
    assert_eq!(limits.entries, 2_000_000);
    assert_eq!(limits.captured_file, 64 << 20);
    assert_eq!(limits.binary, 256 << 20);
    assert_eq!(limits.ext_header, 64 << 10);
    assert_eq!(
        ScanError::TooManyBytes(limits.total_bytes).to_string(),
        "the image's layers decompress to more than 16 GiB (limit total_bytes): refusing, possibly a decompression bomb"
    );
    assert!(ScanError::TooManyEntries(2_000_000)
        .to_string()
        .contains("(limit entries)"));
    assert!(ScanError::ExtHeaderTooLarge(1 << 40)
        .to_string()
        .contains("1024 GiB (limit ext_header)"));
}

#[test]
fn huge_gnu_long_name_is_refused_before_allocating() {
    // A GNU long-name header that claims 1 TiB of name; no data follows. A reader that
    // allocates or reads it first would run out of memory or fail on the missing data.
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::GNULongName);
    header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    header.set_size(1 << 40);
    header.set_cksum();
    let mut layer = header.as_bytes().to_vec();
    layer.extend_from_slice(&[b'a'; 4096]);
    for bytes in [layer.clone(), gzip(&layer)] {
        assert_eq!(
            read(&bytes, &Limits::default(), &Budget::new()).unwrap_err(),
            ScanError::ExtHeaderTooLarge(1 << 40)
        );
    }
}

#[test]
fn long_names_still_work() {
    let long_dir = format!("keep/{}", "d".repeat(220));
    let long_path = format!("{long_dir}/file");
    assert!(long_path.len() > 200);
    let layer = Layer::new()
        .long_file(&long_path, b"gnu long name")
        .long_file(&format!("{long_dir}/os-release"), b"ID=debian")
        .tar();
    let files = image(&[layer]);
    assert_eq!(files.read(&long_path), Some(&b"gnu long name"[..]));

    // PAX `path` (what Docker's Go writer uses) also works.
    let mut builder = tar::Builder::new(Vec::new());
    let pax_path = format!("keep/{}/pax", "p".repeat(150));
    builder
        .append_pax_extensions([("path", pax_path.as_bytes())])
        .unwrap();
    let header = Layer::header(tar::EntryType::Regular, b"keep/short", b"", 0o644, 3);
    builder.append(&header, &b"pax"[..]).unwrap();
    let files = image(&[builder.into_inner().unwrap()]);
    assert_eq!(kept_paths(&files), [pax_path.as_str()]);
}

#[test]
fn a_pax_size_that_disagrees_with_the_header_is_refused() {
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("size", &b"1024"[..])])
        .unwrap();
    let header = Layer::header(tar::EntryType::Regular, b"keep/file", b"", 0o644, 3);
    builder.append(&header, &b"abc"[..]).unwrap();
    let error = read_ok_or_err(&builder.into_inner().unwrap());
    assert!(
        matches!(error, Err(ScanError::Corrupt(ref m)) if m.contains("PAX size")),
        "{error:?}"
    );
}

fn read_ok_or_err(bytes: &[u8]) -> Result<LayerDelta, ScanError> {
    read(bytes, &Limits::default(), &Budget::new())
}

fn zstd_frames(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A skippable frame between the data frames, as zstd:chunked writes.
            out.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
            out.extend_from_slice(&5u32.to_le_bytes());
            out.extend_from_slice(b"skip!");
        }
        out.extend(ruzstd::encoding::compress_to_vec(
            *part,
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
    }
    out
}

#[test]
fn multi_frame_zstd_layer_is_read_to_the_end() {
    let tar = Layer::new()
        .file("keep/first", b"one")
        .file("usr/share/filler", &vec![7u8; 300_000])
        .file("keep/last", b"two")
        .tar();
    let (a, b) = tar.split_at(tar.len() / 2);
    let layer = zstd_frames(&[a, b]);
    assert_eq!(&layer[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    let files = image(&[layer]);
    assert_eq!(files.read("keep/first"), Some(&b"one"[..]));
    assert_eq!(
        files.read("keep/last"),
        Some(&b"two"[..]),
        "second frame read"
    );
}

#[test]
fn multi_member_gzip_layer_is_read_to_the_end() {
    let tar = Layer::new()
        .file("keep/first", b"one")
        .file("usr/share/filler", &vec![7u8; 100_000])
        .file("keep/last", b"two")
        .tar();
    let (a, b) = tar.split_at(tar.len() / 2);
    let mut layer = gzip(a);
    layer.extend(gzip(b));
    let files = image(&[layer]);
    assert_eq!(files.read("keep/first"), Some(&b"one"[..]));
    assert_eq!(
        files.read("keep/last"),
        Some(&b"two"[..]),
        "second member read"
    );
}

#[test]
fn plain_tar_gzip_and_zstd_give_the_same_delta() {
    let tar = Layer::new()
        .file("etc/os-release", b"ID=debian")
        .symlink("usr/lib/os-release", "../../etc/os-release")
        .tar();
    let plain = read_ok(&tar);
    for layer in [gzip(&tar), zstd_frames(&[&tar])] {
        let delta = read_ok(&layer);
        assert_eq!(delta.nodes, plain.nodes);
        assert_eq!(delta.entries, 2);
    }
}

#[test]
fn corrupt_streams_and_failing_sources_are_told_apart() {
    let mut bad_gzip = gzip(&Layer::new().file("keep/a", &[1u8; 10_000]).tar());
    let middle = bad_gzip.len() / 2;
    bad_gzip[middle..middle + 8].copy_from_slice(b"garbage!");
    let error = read_ok_or_err(&bad_gzip).unwrap_err();
    assert!(matches!(error, ScanError::Corrupt(_)), "{error:?}");

    let mut bad_tar = Layer::new().file("keep/a", b"a").tar();
    bad_tar[148] ^= 0x55; // the header checksum
    let error = read_ok_or_err(&bad_tar).unwrap_err();
    assert!(matches!(error, ScanError::Corrupt(_)), "{error:?}");

    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "blob store went away",
                ));
            }
            self.0 -= 1;
            buf[0] = 0x1f;
            Ok(1)
        }
    }
    let error = read_layer(
        Failing(1),
        &Limits::default(),
        &Budget::new(),
        &TestSelector,
    )
    .unwrap_err();
    assert_eq!(error, ScanError::Io("blob store went away".into()));
}

#[test]
fn empty_and_truncated_layers() {
    let delta = read_ok(&[]);
    assert!(delta.nodes.is_empty());
    let tar = Layer::new().file("keep/a", &[5u8; 5000]).tar();
    let error = read_ok_or_err(&tar[..1000]).unwrap_err();
    assert!(matches!(error, ScanError::Corrupt(_)), "{error:?}");
}

#[test]
fn a_zstd_frame_asking_for_a_huge_window_is_refused() {
    // Frame header: no checksum, no content size, window descriptor 0xA8 = 2 GiB.
    let mut layer = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xa8];
    layer.extend_from_slice(&[0x01, 0x00, 0x00]); // a last, empty raw block
    let error = read_ok_or_err(&layer).unwrap_err();
    assert!(
        matches!(error, ScanError::Corrupt(ref m) if m.contains("window_size is too big")),
        "{error:?}"
    );
}

#[test]
fn an_upper_layer_replacing_a_symlink_with_a_directory_or_file_wins() {
    let files = image(&[
        Layer::new()
            .file("usr/lib/keep/os-release", b"ID=debian")
            .symlink("lib", "usr/lib")
            .symlink("keep/link", "../usr/lib/keep/os-release")
            .tar(),
        Layer::new()
            .dir("lib")
            .file("keep/link", b"now a plain file the selector keeps")
            .tar(),
    ]);
    assert_eq!(
        files.node("lib"),
        None,
        "the directory replaced the symlink"
    );
    assert_eq!(files.read("lib/keep/os-release"), None);
    assert_eq!(
        files.read("keep/link"),
        Some(&b"now a plain file the selector keeps"[..])
    );
    let files = image(&[
        Layer::new().symlink("etc/alternatives/x", "/keep/a").tar(),
        Layer::new().file("etc/alternatives/x", b"unwanted").tar(),
    ]);
    assert_eq!(files.node("etc/alternatives/x"), None);
}

#[test]
fn whiteouts_remove_only_whole_path_components() {
    let files = image(&[
        Layer::new()
            .file("keep/a", b"1")
            .file("keep/a-b", b"2")
            .file("keep/a/c", b"3")
            .file("keep/ab", b"4")
            .tar(),
        Layer::new().file("keep/.wh.a", b"").tar(),
    ]);
    assert_eq!(kept_paths(&files), ["keep/a-b", "keep/ab"]);
    let files = image(&[
        Layer::new()
            .file("keep/x", b"1")
            .file("other/keep", b"2")
            .tar(),
        Layer::new()
            .file(".wh..wh..opq", b"")
            .file("keep/y", b"3")
            .tar(),
    ]);
    assert_eq!(
        kept_paths(&files),
        ["keep/y"],
        "an opaque root hides every lower path"
    );
}
