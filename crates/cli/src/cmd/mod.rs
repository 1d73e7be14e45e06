pub mod backup;
pub mod cache;
pub mod cluster;
pub mod gc;
pub mod jobs;
pub mod proxy;
pub mod scan;
pub mod serve;
pub mod upgrade;
pub mod upgrade_apply;
pub mod upgrade_check;
pub mod upgrade_rehearse;
pub mod upgrade_rolling;
pub mod upgrade_verify;
pub mod user;
pub mod version;
pub mod vulndb;

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
    /// Blob store: a directory or s3://BUCKET[/PREFIX] [default: the data directory]
    #[arg(long, env = "WHARF_BLOBS", value_name = "LOCATION", global = true)]
    blobs: Option<String>,
    /// S3 endpoint URL, for S3-compatible servers [default: AWS]
    #[arg(long, env = "WHARF_S3_ENDPOINT", value_name = "URL", global = true)]
    s3_endpoint: Option<String>,
    /// S3 region [default: from AWS_REGION, else us-east-1]
    #[arg(long, env = "WHARF_S3_REGION", value_name = "REGION", global = true)]
    s3_region: Option<String>,
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
        if let Some(b) = &self.blobs {
            c.blobs = Some(b.clone());
        }
        if let Some(e) = &self.s3_endpoint {
            c.s3_endpoint = Some(e.clone());
        }
        if let Some(r) = &self.s3_region {
            c.s3_region = Some(r.clone());
        }
        Ok(c)
    }
}
