//! `wharf upgrade check`: the pre-flight checks (`wharf_server::upgrade_checks`) printed
//! as an operator reads them. `--skip-check NAME --reason TEXT` turns a failure into a
//! recorded SKIPPED.

use std::path::Path;

use anyhow::Context;
use wharf_upgrade::Catalog;

pub use wharf_server::upgrade_checks::{run_checks, Check, Options, FAIL, NAMES};

/// Prints checks as an operator reads them: status, name, what was measured, and the fix
/// under each failure; then the verdict. Returns how many failed.
pub fn print_checks(checks: &[Check], name_width: usize) -> usize {
    for c in checks {
        println!(
            "  {:<8} {:<name_width$} {}",
            c.status.to_uppercase(),
            c.name,
            c.measured
        );
        if let Some(fix) = &c.fix {
            println!("  {:<8} {:<name_width$} fix: {fix}", "", "");
        }
    }
    let failed = checks.iter().filter(|c| c.status == FAIL).count();
    if failed == 0 {
        println!("all checks pass");
    } else {
        println!("{failed} check(s) fail");
    }
    failed
}

/// The release catalog to plan and check against: `path` (`--catalog FILE`), checked
/// by the same rules as the built-in one, or the one built into this binary.
pub fn load_catalog(path: Option<&Path>) -> anyhow::Result<Catalog> {
    let Some(path) = path else {
        return Ok(Catalog::embedded());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--catalog {}: cannot read the file", path.display()))?;
    Catalog::parse(&text).map_err(|e| anyhow::anyhow!("--catalog {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_server::upgrade_checks::{PASS, SKIPPED, WARN};

    /// What `upgrade check` can say of a check; its help and docs/upgrading.md list
    /// them, and these tests keep the three in step.
    const STATES: &[&str] = &[PASS, WARN, FAIL, SKIPPED];

    /// Uppercase words of `text` that are check states (of `upgrade check` or `verify`).
    fn states_in(text: &str) -> std::collections::BTreeSet<String> {
        text.split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| ["PASS", "WARN", "FAIL", "SKIPPED"].contains(w))
            .map(str::to_lowercase)
            .collect()
    }

    /// `upgrade check --help` names exactly the states the command prints.
    #[test]
    fn help_lists_the_states_the_checks_print() {
        use clap::CommandFactory;
        let mut cli = crate::Cli::command();
        let help = cli
            .find_subcommand_mut("upgrade")
            .and_then(|u| u.find_subcommand_mut("check"))
            .expect("wharf upgrade check")
            .render_long_help()
            .to_string();
        let expected: std::collections::BTreeSet<String> =
            STATES.iter().map(|s| s.to_string()).collect();
        assert_eq!(states_in(&help), expected, "upgrade check --help:\n{help}");
    }

    /// The transcripts of `upgrade check` in docs/upgrading.md show only states and
    /// check names the command has, from a release build (no `-dev` version).
    #[test]
    fn documented_transcripts_match_the_checks() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/upgrading.md");
        let doc = std::fs::read_to_string(path).expect("docs/upgrading.md");
        let blocks: Vec<&str> = doc.split("```").skip(1).step_by(2).collect();
        let mut check_lines = 0;
        for block in &blocks {
            for word in block.split_whitespace() {
                let v = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
                assert!(
                    !(v.ends_with("-dev") && v.starts_with(|c: char| c.is_ascii_digit())),
                    "a transcript in docs/upgrading.md shows the development version {v}: rerun it with a release build"
                );
            }
            // The checks' lines: from "pre-flight checks for" to the verdict (a block
            // may show other commands' output around them).
            let mut inside = false;
            for line in block.lines() {
                if line.contains("pre-flight checks for") {
                    inside = true;
                    continue;
                }
                if line.starts_with("all checks pass") || line.ends_with("check(s) fail") {
                    inside = false;
                }
                if !inside {
                    continue;
                }
                let mut words = line.split_whitespace();
                let (Some(state), Some(name)) = (words.next(), words.next()) else {
                    continue;
                };
                if state.chars().all(|c| c.is_ascii_uppercase()) && state.len() >= 4 {
                    check_lines += 1;
                    assert!(
                        STATES.contains(&state.to_lowercase().as_str()),
                        "docs/upgrading.md shows the check state {state}, which `upgrade check` never prints: {line}"
                    );
                    assert!(
                        NAMES.contains(&name),
                        "docs/upgrading.md shows a check {name} that `upgrade check` does not have: {line}"
                    );
                }
            }
        }
        assert!(
            check_lines >= 10,
            "no check transcripts found in docs/upgrading.md"
        );
    }
}
