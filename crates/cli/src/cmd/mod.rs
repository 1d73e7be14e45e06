pub mod cluster;
pub mod serve;
pub mod user;
pub mod version;

use std::path::PathBuf;

use wharf_server::Config;

/// Where the registry's data is, for commands that work on it directly.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// TOML configuration file (the one `wharf serve` uses)
    #[arg(long, env = "WHARF_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Directory for metadata and blobs [default: ./wharf-data]
    #[arg(long, env = "WHARF_DATA_DIR", value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Metadata store: sqlite://PATH or postgres://… [default: SQLite in the data directory]
    #[arg(long, env = "WHARF_METADATA", value_name = "URL", global = true)]
    metadata: Option<wharf_server::config::MetadataUrl>,
}

impl StoreArgs {
    pub fn to_config(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_toml_file(path).map_err(anyhow::Error::msg)?,
            None => Config::default(),
        };
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        if let Some(m) = &self.metadata {
            c.metadata = Some(m.clone());
        }
        Ok(c)
    }
}
