//! Embeds the web UI's static files (`assets/**`) in the binary under content-hashed
//! names, so every replica serves the same bytes and browsers may cache them forever:
//! a changed file gets a new name.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

use sha2::{Digest, Sha256};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("assets/ is readable") {
        let path = entry.expect("assets/ entries are readable").path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut code = String::from("pub(crate) static ASSETS: &[Asset] = &[\n");
    for file in files {
        println!("cargo:rerun-if-changed={}", file.display());
        let logical = file
            .strip_prefix(&root)
            .expect("under assets/")
            .to_str()
            .expect("asset names are UTF-8")
            .replace('\\', "/");
        let bytes = fs::read(&file).expect("assets are readable");
        let hash: String = Sha256::digest(&bytes)[..5]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let hashed = match logical.rsplit_once('.') {
            Some((stem, ext)) if !stem.ends_with('/') => format!("{stem}.{hash}.{ext}"),
            _ => format!("{logical}.{hash}"),
        };
        writeln!(
            code,
            "    Asset {{ logical: {logical:?}, hashed: {hashed:?}, bytes: include_bytes!({:?}) }},",
            file.display()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("assets.rs");
    fs::write(out, code).expect("OUT_DIR is writable");
}
