//! The configuration of `wharf serve`: one typed struct with its defaults here, filled
//! from a TOML file, then `WHARF_*` environment variables, then flags (each overriding
//! the one before; the CLI does the layering).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines, for a terminal.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?} is not one of: human, json")),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where metadata (SQLite) and blobs live.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// A tracing filter: `info`, `debug`, `wharf_server=debug,info`, …
    pub log_level: String,
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Seconds without activity after which an upload session is abandoned.
    pub upload_expiry_secs: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    pub shutdown_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:5000".parse().expect("valid address"),
            data_dir: PathBuf::from("wharf-data"),
            log_format: LogFormat::Human,
            log_level: "info".into(),
            max_manifest_bytes: 4 << 20,
            upload_expiry_secs: 24 * 3600,
            shutdown_timeout_secs: 30,
        }
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are an error, so a typo is never ignored.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}
