//! Records the git commit the binary is built from, for `GET /api/v0/meta/version`.
//! `WHARF_COMMIT` overrides it (release builds outside a checkout, e.g. in Docker).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=WHARF_COMMIT");
    for p in [
        "../../.git/HEAD",
        "../../.git/refs/heads",
        "../../.git/packed-refs",
    ] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let commit = std::env::var("WHARF_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        });
    println!(
        "cargo:rustc-env=WHARF_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
}
