//! `wharf scan IMAGE`: scans an image of the registry now, from the stores the
//! configuration names (as `wharf serve` opens them), stores its inventory and prints
//! its vulnerabilities.

use clap::Args;
use wharf_jobs::actions::scan::store_scan;
use wharf_jobs::scan_image::scan_image;
use wharf_metastore::scan::FindingRow;
use wharf_oci::{Digest, Reference, RepoName};
use wharf_scan::layer::Limits;

use super::StoreArgs;

/// Scan an image of the registry now and print its vulnerabilities
///
/// IMAGE is REPOSITORY[:TAG] (default tag: latest) or REPOSITORY@sha256:DIGEST, as
/// stored in this registry (no registry host). Reads the image's layers from the blob
/// store, stores its inventory (replacing an earlier one; what the API and pull
/// policies use), matches its packages against the current vulnerability database,
/// and prints the findings, most severe first: severity, advisory (with its CVE and
/// other aliases), package, installed version and the version that fixes it. A
/// multi-platform image is scanned platform by platform. Exits 0 whatever is found;
/// non-zero when the image cannot be found or read.
#[derive(Args)]
pub struct ScanArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// REPOSITORY[:TAG] or REPOSITORY@sha256:DIGEST
    image: String,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// `repo:tag`, `repo` (`latest`) or `repo@digest`.
fn parse_image(image: &str) -> anyhow::Result<(RepoName, Reference)> {
    let (repo, reference) = match image.split_once('@') {
        Some((repo, digest)) => (repo, digest.to_string()),
        None => {
            let slash = image.rfind('/').map_or(0, |i| i + 1);
            match image[slash..].rfind(':') {
                Some(i) => (&image[..slash + i], image[slash + i + 1..].to_string()),
                None => (image, "latest".to_string()),
            }
        }
    };
    let repo: RepoName = repo
        .parse()
        .map_err(|e| anyhow::anyhow!("{image:?}: repository {repo:?}: {e}"))?;
    let reference: Reference = reference
        .parse()
        .map_err(|e| anyhow::anyhow!("{image:?}: {reference:?}: {e}"))?;
    Ok((repo, reference))
}

fn finding_json(f: &FindingRow) -> serde_json::Value {
    serde_json::json!({
        "severity": f.severity,
        "score": f.score,
        "advisory": f.advisory_id,
        "aliases": f.aliases,
        "summary": f.summary,
        "ecosystem": f.ecosystem,
        "package": f.name,
        "installed": f.version,
        "fixed": f.fixed,
        "purl": f.purl,
    })
}

pub fn run(args: ScanArgs) -> anyhow::Result<()> {
    let config = args.store.to_config()?;
    let (repo, reference) = parse_image(&args.image)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let meta = wharf_server::run::open_metastore(&config).await?;
        let blobs = wharf_server::run::open_blobstore(&config)?;
        let digest: Digest = match &reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(_) => {
                meta.get_manifest(&repo, &reference, false)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("{}: no such image in this registry", args.image))?
                    .digest
            }
        };
        let scans = scan_image(meta.as_ref(), blobs, &repo, &digest, &Limits::default()).await?;
        let db = meta.current_vulndb().await?;
        let mut images = Vec::new();
        for scan in &scans {
            let stored = store_scan(meta.as_ref(), scan).await?;
            eprintln!("{}", stored.line());
            let findings = meta.findings(&stored.manifest.to_string()).await?;
            images.push((stored, findings));
        }
        if args.json {
            let out = serde_json::json!({
                "image": args.image,
                "digest": digest.to_string(),
                "database_version": db.as_ref().map(|v| v.id),
                "images": images.iter().map(|(s, f)| serde_json::json!({
                    "manifest": s.manifest.to_string(),
                    "platform": s.platform,
                    "status": if s.error.is_some() { "failed" } else { "scanned" },
                    "error": s.error,
                    "packages": s.packages,
                    "findings": f.iter().map(finding_json).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        if scans.is_empty() {
            println!("{repo}@{digest} is not an image (an artifact): nothing to scan");
            return Ok(());
        }
        if db.is_none() {
            println!("no vulnerability database yet: nothing can match (wharf vulndb update, or wharf vulndb import PATH)");
        }
        for (stored, findings) in &images {
            let what = match &stored.platform {
                Some(p) => format!("{} {p} ({})", args.image, stored.manifest),
                None => format!("{} ({})", args.image, stored.manifest),
            };
            if let Some(e) = &stored.error {
                println!("{what}: the scan failed: {e}");
                continue;
            }
            println!(
                "{what}: {} packages, {} vulnerabilities",
                stored.packages.unwrap_or(0),
                findings.len()
            );
            if findings.is_empty() {
                continue;
            }
            let rows: Vec<[String; 5]> = findings
                .iter()
                .map(|f| {
                    let advisory = if f.aliases.is_empty() {
                        f.advisory_id.clone()
                    } else {
                        format!("{} ({})", f.advisory_id, f.aliases.join(", "))
                    };
                    [
                        f.severity.to_uppercase(),
                        advisory,
                        f.name.clone(),
                        f.version.clone(),
                        f.fixed.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            let header = ["SEVERITY", "ADVISORY", "PACKAGE", "INSTALLED", "FIXED"];
            let mut widths = header.map(str::len);
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cells: [&str; 5]| {
                let mut out = String::new();
                for (i, c) in cells.iter().enumerate() {
                    if i == 4 {
                        out.push_str(c);
                    } else {
                        out.push_str(&format!("{c:<w$}  ", w = widths[i]));
                    }
                }
                println!("{out}");
            };
            line(header);
            for r in &rows {
                line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let (r, t) = parse_image("team/app:1.2").unwrap();
        assert_eq!(r.to_string(), "team/app");
        assert!(matches!(t, Reference::Tag(t) if t.to_string() == "1.2"));
        let (r, t) = parse_image("app").unwrap();
        assert_eq!(r.to_string(), "app");
        assert!(matches!(t, Reference::Tag(t) if t.to_string() == "latest"));
        let d = format!("sha256:{}", "a".repeat(64));
        let (r, t) = parse_image(&format!("team/app@{d}")).unwrap();
        assert_eq!(r.to_string(), "team/app");
        assert!(matches!(t, Reference::Digest(x) if x.to_string() == d));
        assert!(parse_image("Bad Name:x").is_err());
    }
}
