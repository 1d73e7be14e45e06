//! `wharf serve`: run a registry replica.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use wharf_server::config::LogFormat;
use wharf_server::Config;

/// Run the registry
///
/// With no options, wharf keeps metadata in SQLite and blobs in ./wharf-data and listens on
/// 127.0.0.1:5000. Every setting can come from a TOML file (--config), an environment
/// variable (WHARF_…), or a flag; flags win over the environment, which wins over the file.
///
/// Example file (every key optional):
///
///   listen = "0.0.0.0:5000"
///   data_dir = "/var/lib/wharf"
///   metadata = "postgres://wharf:secret@db.internal:5432/wharf"
///   blobs = "s3://registry-blobs/wharf"
///   s3_endpoint = "http://minio.internal:9000"
///   log_format = "json"
///   log_level = "info"
///   max_manifest_bytes = 4194304
///   upload_expiry_secs = 86400
///   shutdown_timeout_secs = 30
///   gc_busy_percent = 10
///   token_ttl_secs = 300
///   token_realm = "https://registry.example.com/auth/token"
///   public_url = "https://registry.example.com"
///   delete_requires = "admin"
///   tls_cert = "/etc/wharf/tls.crt"
///   tls_key = "/etc/wharf/tls.key"
///   vulndb_url = "https://osv-vulnerabilities.storage.googleapis.com"
///   vulndb_ecosystems = ["Debian", "Alpine", "PyPI", "npm"]
///   vulndb_update_interval_secs = 86400
///   vulndb_proxy = "http://proxy.internal:3128"
///   vulndb_stale_after_secs = 604800
///   # A content cache instead of a registry replica:
///   cache_for = ["https://registry.example.com"]
///   cache_token = "wharf_cache_…"
///   cache_max_bytes = 107374182400
///   cache_redirect_ttl_secs = 120   # on the registry: how long its redirects are valid
///
/// TLS: with tls_cert and tls_key (or tls_self_signed) wharf serves HTTPS. Without TLS it
/// serves plain HTTP only on loopback addresses, unless insecure_http is set (for a proxy
/// that terminates TLS in front of it).
///
/// Vulnerability database: with vulndb_url set, wharf keeps a schedule `vulndb_update`
/// that downloads the OSV archives and imports them when they changed (the first run soon
/// after start when there is no database yet). Without it (the default, air-gapped), import
/// with `wharf vulndb import`.
///
/// Content cache: with cache_for set, this process is a content cache, not a replica: it
/// serves the blob downloads that the registry redirects its chosen users to, keeps at most
/// cache_max_bytes of blobs under data_dir (least recently used out first), and fetches each
/// missing blob once from its upstreams. Register it first with `wharf cache add` (which
/// prints its token); see docs/caches.md.
///
/// Security: every request is authenticated. On the first start of an empty registry the
/// user `admin` is created with the password in WHARF_ADMIN_PASSWORD, or with a generated
/// one printed once on stdout. Clients sign in with a password or an access token, over
/// HTTP basic auth or the Docker token protocol (/auth/token).
///
/// SIGTERM or SIGINT stops accepting connections, lets in-flight requests finish (for at most
/// the shutdown timeout) and exits 0.
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    /// TOML configuration file
    #[arg(long, env = "WHARF_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long, env = "WHARF_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory for blobs, and for SQLite metadata by default [default: ./wharf-data]
    #[arg(long, env = "WHARF_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Metadata store: sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB
    /// [default: SQLite in the data directory]
    #[arg(long, env = "WHARF_METADATA", value_name = "URL")]
    metadata: Option<wharf_server::config::MetadataUrl>,
    /// Blob store: a directory or s3://BUCKET[/PREFIX] (credentials from the AWS
    /// environment variables) [default: the data directory]
    #[arg(long, env = "WHARF_BLOBS", value_name = "LOCATION")]
    blobs: Option<String>,
    /// Endpoint of an S3-compatible server [default: AWS]
    #[arg(long, env = "WHARF_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region [default: AWS_REGION, else us-east-1]
    #[arg(long, env = "WHARF_S3_REGION", value_name = "REGION")]
    s3_region: Option<String>,
    /// Log format: human or json [default: human]
    #[arg(long, env = "WHARF_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. info, debug, wharf_server=debug [default: info]
    #[arg(long, env = "WHARF_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,
    /// Largest manifest accepted, in bytes [default: 4194304]
    #[arg(long, env = "WHARF_MAX_MANIFEST_BYTES", value_name = "BYTES")]
    max_manifest_bytes: Option<u64>,
    /// Abandon upload sessions idle for this many seconds [default: 86400]
    #[arg(long, env = "WHARF_UPLOAD_EXPIRY_SECS", value_name = "SECS")]
    upload_expiry_secs: Option<u64>,
    /// How often this replica reports itself to the cluster, in seconds [default: 5]
    #[arg(long, env = "WHARF_HEARTBEAT_INTERVAL_SECS", value_name = "SECS")]
    heartbeat_interval_secs: Option<u64>,
    /// How often the job worker reports its job, in seconds; silent for three, the job
    /// goes to another replica [default: 5]
    #[arg(long, env = "WHARF_JOB_HEARTBEAT_SECS", value_name = "SECS")]
    job_heartbeat_secs: Option<u64>,
    /// Back-off before a failed job's first retry, in seconds; doubles after [default: 30]
    #[arg(long, env = "WHARF_JOB_RETRY_BACKOFF_SECS", value_name = "SECS")]
    job_retry_backoff_secs: Option<u64>,
    /// Garbage collection spares what is younger than this, in seconds [default: 86400]
    #[arg(long, env = "WHARF_GC_GRACE_SECS", value_name = "SECS")]
    gc_grace_secs: Option<u64>,
    /// Share of wall time a garbage-collection run spends working, in percent (1-100);
    /// it pauses between batches for the rest [default: 5 on SQLite, 10 on PostgreSQL]
    #[arg(long, env = "WHARF_GC_BUSY_PERCENT", value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    gc_busy_percent: Option<u8>,
    /// On SIGTERM/SIGINT, wait at most this long for in-flight requests [default: 30]
    #[arg(long, env = "WHARF_SHUTDOWN_TIMEOUT_SECS", value_name = "SECS")]
    shutdown_timeout_secs: Option<u64>,
    /// Turn authentication off (loopback addresses only; development and benchmarks)
    #[arg(long, env = "WHARF_INSECURE_NO_AUTH", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    insecure_no_auth: Option<bool>,
    /// Lifetime of registry bearer tokens in seconds [default: 300]
    #[arg(long, env = "WHARF_TOKEN_TTL_SECS", value_name = "SECS")]
    token_ttl_secs: Option<u64>,
    /// Token endpoint to advertise when clients come through a proxy [default: from the request]
    #[arg(long, env = "WHARF_TOKEN_REALM", value_name = "URL")]
    token_realm: Option<String>,
    /// The registry's address as clients use it; scans' SBOMs name images by it
    /// [default: this machine's host name and port]
    #[arg(long, env = "WHARF_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    /// Level needed to delete manifests, tags and blobs: admin or write [default: admin]
    #[arg(long, env = "WHARF_DELETE_REQUIRES", value_name = "LEVEL")]
    delete_requires: Option<wharf_server::config::DeleteLevel>,
    /// PEM certificate chain: serve HTTPS (with --tls-key)
    #[arg(long, env = "WHARF_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, env = "WHARF_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a self-signed certificate kept in DATA_DIR/tls (for a first try)
    #[arg(long, env = "WHARF_TLS_SELF_SIGNED", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    tls_self_signed: Option<bool>,
    /// Allow plain HTTP on a non-loopback address (behind a TLS-terminating proxy)
    #[arg(long, env = "WHARF_INSECURE_HTTP", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    insecure_http: Option<bool>,
    /// Base URL of the OSV archives (URL/ECOSYSTEM/all.zip), e.g.
    /// https://osv-vulnerabilities.storage.googleapis.com [default: none: no online update]
    #[arg(long, env = "WHARF_VULNDB_URL", value_name = "URL")]
    vulndb_url: Option<String>,
    /// Ecosystems to download, comma-separated, as OSV names them [default: AlmaLinux,
    /// Alpine, Debian, Go, Maven, PyPI, Red Hat, Rocky Linux, RubyGems, Ubuntu, crates.io, npm]
    #[arg(
        long,
        env = "WHARF_VULNDB_ECOSYSTEMS",
        value_name = "LIST",
        value_delimiter = ','
    )]
    vulndb_ecosystems: Option<Vec<String>>,
    /// How often to update the vulnerability database, in seconds [default: 86400]
    #[arg(long, env = "WHARF_VULNDB_UPDATE_INTERVAL_SECS", value_name = "SECS")]
    vulndb_update_interval_secs: Option<u64>,
    /// Proxy for the database downloads [default: HTTPS_PROXY / HTTP_PROXY / NO_PROXY]
    #[arg(long, env = "WHARF_VULNDB_PROXY", value_name = "URL")]
    vulndb_proxy: Option<String>,
    /// Warn in the cluster status when the database is older than this, in seconds
    /// [default: 604800]
    #[arg(long, env = "WHARF_VULNDB_STALE_AFTER_SECS", value_name = "SECS")]
    vulndb_stale_after_secs: Option<u64>,
    /// Run as a content cache of these upstreams, comma-separated and tried in order:
    /// the registry's URL, or other caches' in front of it [default: none: a registry]
    #[arg(
        long,
        env = "WHARF_CACHE_FOR",
        value_name = "URL,…",
        value_delimiter = ','
    )]
    cache_for: Option<Vec<String>>,
    /// The content cache's token, printed by `wharf cache add` (prefer the variable:
    /// flags show in `ps`)
    #[arg(
        long,
        env = "WHARF_CACHE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    cache_token: Option<String>,
    /// The most bytes of blobs a content cache keeps, least recently used out first
    /// [default: 10737418240 (10 GiB)]
    #[arg(long, env = "WHARF_CACHE_MAX_BYTES", value_name = "BYTES")]
    cache_max_bytes: Option<u64>,
    /// How long the redirects to content caches are valid, in seconds [default: 120]
    #[arg(long, env = "WHARF_CACHE_REDIRECT_TTL_SECS", value_name = "SECS")]
    cache_redirect_ttl_secs: Option<u64>,
}

impl ServeArgs {
    /// Defaults, then the file, then environment and flags (clap has already let a flag
    /// win over its environment variable).
    pub fn to_config(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::from_toml_file(path).map_err(anyhow::Error::msg)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if let Some(v) = &self.metadata {
            c.metadata = Some(v.clone());
        }
        if let Some(v) = &self.blobs {
            c.blobs = Some(v.clone());
        }
        if let Some(v) = &self.s3_endpoint {
            c.s3_endpoint = Some(v.clone());
        }
        if let Some(v) = &self.s3_region {
            c.s3_region = Some(v.clone());
        }
        if let Some(v) = self.log_format {
            c.log_format = v;
        }
        if let Some(v) = &self.log_level {
            c.log_level = v.clone();
        }
        if let Some(v) = self.max_manifest_bytes {
            c.max_manifest_bytes = v;
        }
        if let Some(v) = self.upload_expiry_secs {
            c.upload_expiry_secs = v;
        }
        if let Some(v) = self.shutdown_timeout_secs {
            c.shutdown_timeout_secs = v;
        }
        if let Some(v) = self.heartbeat_interval_secs {
            c.heartbeat_interval_secs = v;
        }
        if let Some(v) = self.job_heartbeat_secs {
            c.job_heartbeat_secs = v;
        }
        if let Some(v) = self.job_retry_backoff_secs {
            c.job_retry_backoff_secs = v;
        }
        if let Some(v) = self.gc_grace_secs {
            c.gc_grace_secs = v;
        }
        if let Some(v) = self.gc_busy_percent {
            c.gc_busy_percent = Some(v);
        }
        if let Some(v) = self.insecure_no_auth {
            c.insecure_no_auth = v;
        }
        if let Some(v) = self.token_ttl_secs {
            c.token_ttl_secs = v;
        }
        if let Some(v) = &self.token_realm {
            c.token_realm = Some(v.clone());
        }
        if let Some(v) = &self.public_url {
            c.public_url = Some(v.clone());
        }
        if let Some(v) = self.delete_requires {
            c.delete_requires = v;
        }
        if let Some(v) = &self.tls_cert {
            c.tls_cert = Some(v.clone());
        }
        if let Some(v) = &self.tls_key {
            c.tls_key = Some(v.clone());
        }
        if let Some(v) = self.tls_self_signed {
            c.tls_self_signed = v;
        }
        if let Some(v) = self.insecure_http {
            c.insecure_http = v;
        }
        if let Some(v) = &self.vulndb_url {
            c.vulndb_url = Some(v.clone());
        }
        if let Some(v) = &self.vulndb_ecosystems {
            c.vulndb_ecosystems = v.iter().map(|e| e.trim().to_string()).collect();
        }
        if let Some(v) = self.vulndb_update_interval_secs {
            c.vulndb_update_interval_secs = v;
        }
        if let Some(v) = &self.vulndb_proxy {
            c.vulndb_proxy = Some(v.clone());
        }
        if let Some(v) = self.vulndb_stale_after_secs {
            c.vulndb_stale_after_secs = v;
        }
        if let Some(v) = &self.cache_for {
            c.cache_for = v
                .iter()
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect();
        }
        if let Some(v) = &self.cache_token {
            c.cache_token = Some(wharf_server::config::CacheToken(v.clone()));
        }
        if let Some(v) = self.cache_max_bytes {
            c.cache_max_bytes = v;
        }
        if let Some(v) = self.cache_redirect_ttl_secs {
            c.cache_redirect_ttl_secs = v;
        }
        Ok(c)
    }
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("log level {:?} is not a valid filter", config.log_level))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    // A server must outlive its clients: a client that hangs up in the middle of a
    // download makes the next write fail with EPIPE, which is handled, instead of
    // SIGPIPE killing the process (main restores SIGPIPE for the other commands, so
    // that `wharf … | head` ends quietly). A content cache died of exactly this.
    // SAFETY: before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let config = args.to_config()?;
    init_logging(&config)?;
    tracing::debug!(?config, "configuration");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // A secret: read from the environment only (flags show in `ps`), never logged.
    let admin_password = std::env::var("WHARF_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    if !config.cache_for.is_empty() {
        return runtime.block_on(wharf_server::run::serve_cache(
            config,
            crate::VERSION,
            crate::COMMIT,
        ));
    }
    runtime.block_on(wharf_server::run::serve(
        config,
        crate::VERSION,
        crate::COMMIT,
        admin_password,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// README: "Each [setting] can come from a TOML file, a WHARF_… environment
    /// variable, or a flag". Walks every key of the configuration struct.
    #[test]
    fn every_setting_has_a_flag_a_variable_and_help() {
        let cmd = Cli::command();
        let help = Cli::command().render_long_help().to_string();
        for key in Config::keys() {
            let long = key.replace('_', "-");
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
                .unwrap_or_else(|| panic!("the setting {key} has no flag --{long}"));
            let env = format!("WHARF_{}", key.to_uppercase());
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(env.as_str()),
                "--{long} is not read from {env}"
            );
            assert!(
                help.contains(&format!("--{long}")) && help.contains(&env),
                "serve --help does not show --{long} and {env}"
            );
            assert!(arg.get_help().is_some(), "--{long} has no help text");
        }
    }

    /// Each flag changes the configuration it names, over the defaults.
    #[test]
    fn every_flag_reaches_the_configuration() {
        let samples: &[(&str, &str)] = &[
            ("listen", "127.0.0.1:6000"),
            ("data_dir", "/srv/wharf"),
            ("metadata", "postgres://u@db/wharf"),
            ("blobs", "s3://bucket/prefix"),
            ("s3_endpoint", "http://127.0.0.1:9000"),
            ("s3_region", "eu-west-1"),
            ("log_format", "json"),
            ("log_level", "debug"),
            ("max_manifest_bytes", "1000"),
            ("upload_expiry_secs", "60"),
            ("shutdown_timeout_secs", "7"),
            ("heartbeat_interval_secs", "9"),
            ("job_heartbeat_secs", "11"),
            ("job_retry_backoff_secs", "13"),
            ("gc_grace_secs", "17"),
            ("gc_busy_percent", "42"),
            ("insecure_no_auth", "true"),
            ("token_ttl_secs", "19"),
            ("token_realm", "https://r.example/auth/token"),
            ("public_url", "https://r.example"),
            ("delete_requires", "write"),
            ("tls_cert", "/etc/c.pem"),
            ("tls_key", "/etc/k.pem"),
            ("tls_self_signed", "true"),
            ("insecure_http", "true"),
            ("vulndb_url", "http://127.0.0.1:8000/osv"),
            ("vulndb_ecosystems", "PyPI,npm"),
            ("vulndb_update_interval_secs", "3600"),
            ("vulndb_proxy", "http://127.0.0.1:3128"),
            ("vulndb_stale_after_secs", "60"),
            ("cache_for", "http://127.0.0.1:5000,http://127.0.0.1:5001"),
            ("cache_token", "wharf_cache_x"),
            ("cache_max_bytes", "2000000"),
            ("cache_redirect_ttl_secs", "30"),
        ];
        let default = format!("{:?}", Config::default());
        for key in Config::keys() {
            let (_, value) = samples
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("no sample value for the new setting {key}: add one"));
            let flag = format!("--{}", key.replace('_', "-"));
            let cli = Cli::try_parse_from(["serve", flag.as_str(), value])
                .unwrap_or_else(|e| panic!("{flag} {value}: {e}"));
            let config = format!("{:?}", cli.serve.to_config().unwrap());
            // Debug prints `key: value`; the field after the flag must differ.
            let field = |dbg: &str| {
                let start = dbg
                    .find(&format!(" {key}: "))
                    .unwrap_or_else(|| panic!("{key} not in {dbg}"));
                let rest = &dbg[start + key.len() + 3..];
                rest[..rest.find(", ").or_else(|| rest.find(" }")).unwrap()].to_string()
            };
            assert_ne!(
                field(&config),
                field(&default),
                "{flag} {value} did not change {key}"
            );
        }
    }
}
