//! `wharf version`

#[derive(clap::Args)]
/// Print this binary's version, commit and the metadata schema level it needs
pub struct VersionArgs {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

pub fn run(args: VersionArgs) -> anyhow::Result<()> {
    let level = wharf_server::SCHEMA_LEVEL;
    if args.json {
        println!(
            r#"{{"version":"{}","commit":"{}","schema_level":{level}}}"#,
            crate::VERSION,
            crate::COMMIT
        );
    } else {
        println!(
            "wharf {} (commit {}, schema level {level})",
            crate::VERSION,
            crate::COMMIT
        );
    }
    Ok(())
}
