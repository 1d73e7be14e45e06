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
    /// Where blobs live, and the SQLite metadata unless `metadata` says otherwise.
    pub data_dir: PathBuf,
    /// The metadata store: `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB`
    /// (default: SQLite at `data_dir/metadata.db`).
    pub metadata: Option<MetadataUrl>,
    /// The blob store: a directory, or `s3://BUCKET[/PREFIX]` (default: `data_dir`).
    pub blobs: Option<String>,
    /// Endpoint of an S3-compatible server (MinIO, Ceph, …); AWS when absent.
    pub s3_endpoint: Option<String>,
    /// S3 region (default: from AWS_REGION / AWS_DEFAULT_REGION, else us-east-1).
    pub s3_region: Option<String>,
    pub log_format: LogFormat,
    /// A tracing filter: `info`, `debug`, `wharf_server=debug,info`, …
    pub log_level: String,
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Seconds without activity after which an upload session is abandoned.
    pub upload_expiry_secs: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    pub shutdown_timeout_secs: u64,
    /// How often this replica reports itself to the cluster; silent for three
    /// intervals, it is shown as dead.
    pub heartbeat_interval_secs: u64,
    /// How often the job worker reports the job it runs; a job silent for three
    /// intervals is taken over by another replica's worker.
    pub job_heartbeat_secs: u64,
    /// Back-off before a failed job's first retry; it doubles for the next.
    pub job_retry_backoff_secs: u64,
    /// Garbage collection leaves alone blobs, links and manifests younger than this
    /// (a push in progress has blobs no manifest refers to yet).
    pub gc_grace_secs: u64,
    /// The share of wall time (percent) a GC run spends working by default; it pauses
    /// between batches for the rest, so pushes keep their throughput. Unset: 5 on SQLite
    /// (one writer, shared with every push), 10 on PostgreSQL.
    pub gc_busy_percent: Option<u8>,
    /// Turns authentication off: anyone may do anything. Refused unless `listen` is a
    /// loopback address; for local development and benchmarks only.
    pub insecure_no_auth: bool,
    /// Lifetime of registry bearer tokens, in seconds.
    pub token_ttl_secs: u64,
    /// The token endpoint to advertise in challenges, when clients reach the registry
    /// through a proxy under another name (default: derived from each request).
    pub token_realm: Option<String>,
    /// The registry's address as clients use it (`https://registry.example.com`): the
    /// SBOMs that scans attach to images name them by it (default: this replica's
    /// host name and port).
    pub public_url: Option<String>,
    /// Access level needed to delete manifests, tags and blobs: `admin` or `write`.
    pub delete_requires: DeleteLevel,
    /// PEM certificate chain for TLS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate generated (once) under `data_dir/tls`.
    pub tls_self_signed: bool,
    /// Allow plain HTTP on a non-loopback address, e.g. behind a proxy that terminates
    /// TLS. Without TLS, plain HTTP is otherwise only served on loopback addresses.
    pub insecure_http: bool,
    /// Base URL of the vulnerability database's OSV archives
    /// (`<vulndb_url>/<ecosystem>/all.zip`, as `https://osv-vulnerabilities.storage.googleapis.com`
    /// lays them out, or a mirror of it). Unset (the default): no online update, for
    /// air-gapped registries (`wharf vulndb import`).
    pub vulndb_url: Option<String>,
    /// The ecosystems to download, as OSV names their folders.
    pub vulndb_ecosystems: Vec<String>,
    /// How often the scheduled `vulndb_update` runs, in seconds (rounded to a cron
    /// schedule: minutes, hours or days).
    pub vulndb_update_interval_secs: u64,
    /// A proxy for the downloads (default: `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`).
    pub vulndb_proxy: Option<String>,
    /// The cluster status warns when the current database is older than this.
    pub vulndb_stale_after_secs: u64,
    /// Run as a content cache of these upstreams (the registry's URL, or other caches'
    /// in front of it), tried in order, instead of as a registry replica. A cache keeps
    /// blobs under `data_dir`, or in the bucket `blobs` names (`s3://BUCKET/PREFIX`), and
    /// holds no metadata store.
    pub cache_for: Vec<String>,
    /// The cache's token, from `wharf cache add` (or the API).
    pub cache_token: Option<CacheToken>,
    /// The most bytes of blobs a cache keeps; least recently used blobs go first.
    pub cache_max_bytes: u64,
    /// How long the redirects to content caches that a replica signs are valid, in
    /// seconds (the caches' clocks must be within this of the replicas').
    pub cache_redirect_ttl_secs: u64,
}

/// A content cache's token: a secret, so `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct CacheToken(pub String);

impl std::fmt::Debug for CacheToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// A metadata-store URL. It may hold a database password, so `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct MetadataUrl(pub String);

/// Where the blob store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLocation {
    Dir(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// Where the metadata store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataLocation {
    Sqlite(PathBuf),
    Postgres(MetadataUrl),
}

impl std::fmt::Debug for MetadataUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // scheme://user:secret@host/db -> scheme://user:***@host/db
        let s = &self.0;
        match (s.find("://"), s.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                let userinfo = &s[scheme_end + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                let masked = if userinfo.contains(':') {
                    format!("{user}:***")
                } else {
                    user.to_string()
                };
                write!(f, "\"{}{}{}\"", &s[..scheme_end + 3], masked, &s[at..])
            }
            _ => write!(f, "{s:?}"),
        }
    }
}

impl std::str::FromStr for MetadataUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let url = MetadataUrl(s.to_string());
        url.location()?;
        Ok(url)
    }
}

impl MetadataUrl {
    pub fn location(&self) -> Result<MetadataLocation, String> {
        let s = self.0.as_str();
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs a path, e.g. sqlite:///var/lib/wharf/metadata.db".into(),
                );
            }
            Ok(MetadataLocation::Sqlite(PathBuf::from(path)))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(MetadataLocation::Postgres(self.clone()))
        } else {
            Err(format!(
                "metadata {self:?} is neither sqlite://PATH nor postgres://…"
            ))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeleteLevel {
    Write,
    #[default]
    Admin,
}

impl std::str::FromStr for DeleteLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "write" => Ok(DeleteLevel::Write),
            "admin" => Ok(DeleteLevel::Admin),
            other => Err(format!("{other:?} is not one of: write, admin")),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:5000".parse().expect("valid address"),
            data_dir: PathBuf::from("wharf-data"),
            metadata: None,
            blobs: None,
            s3_endpoint: None,
            s3_region: None,
            log_format: LogFormat::Human,
            log_level: "info".into(),
            max_manifest_bytes: 4 << 20,
            upload_expiry_secs: 24 * 3600,
            shutdown_timeout_secs: 30,
            heartbeat_interval_secs: 5,
            job_heartbeat_secs: 5,
            job_retry_backoff_secs: 30,
            gc_grace_secs: 24 * 3600,
            gc_busy_percent: None,
            insecure_no_auth: false,
            token_ttl_secs: 300,
            token_realm: None,
            public_url: None,
            delete_requires: DeleteLevel::Admin,
            tls_cert: None,
            tls_key: None,
            tls_self_signed: false,
            insecure_http: false,
            vulndb_url: None,
            vulndb_ecosystems: wharf_jobs::vulndb_update::DEFAULT_ECOSYSTEMS
                .iter()
                .map(|e| e.to_string())
                .collect(),
            vulndb_update_interval_secs: 24 * 3600,
            vulndb_proxy: None,
            vulndb_stale_after_secs: 7 * 24 * 3600,
            cache_for: Vec::new(),
            cache_token: None,
            cache_max_bytes: 10 << 30,
            cache_redirect_ttl_secs: 120,
        }
    }
}

impl Config {
    /// Where blobs are: a directory, or a bucket and key prefix.
    pub fn blob_location(&self) -> Result<BlobLocation, String> {
        match self.blobs.as_deref() {
            None => Ok(BlobLocation::Dir(self.data_dir.clone())),
            Some(s) => match s.strip_prefix("s3://") {
                Some(rest) => {
                    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                    if bucket.is_empty() {
                        return Err(format!(
                            "blobs {s:?} names no bucket (s3://BUCKET[/PREFIX])"
                        ));
                    }
                    Ok(BlobLocation::S3 {
                        bucket: bucket.into(),
                        prefix: prefix.trim_matches('/').into(),
                    })
                }
                None if s.contains("://") => Err(format!(
                    "blobs {s:?} is neither a directory nor s3://BUCKET[/PREFIX]"
                )),
                None => Ok(BlobLocation::Dir(PathBuf::from(s))),
            },
        }
    }

    /// Where the metadata store is, from `metadata` or the default under `data_dir`.
    pub fn metadata_location(&self) -> Result<MetadataLocation, String> {
        match &self.metadata {
            Some(url) => url.location(),
            None => Ok(MetadataLocation::Sqlite(self.data_dir.join("metadata.db"))),
        }
    }

    /// Settings that cannot work together, said plainly.
    pub fn validate(&self) -> Result<(), String> {
        self.metadata_location()?;
        self.blob_location()?;
        if self.insecure_no_auth && !self.listen.ip().is_loopback() {
            return Err(format!(
                "insecure_no_auth is only allowed on a loopback address, not {}",
                self.listen
            ));
        }
        let tls = match (&self.tls_cert, &self.tls_key, self.tls_self_signed) {
            (Some(_), Some(_), false) | (None, None, true) => true,
            (None, None, false) => false,
            (_, _, true) => {
                return Err("tls_self_signed cannot be combined with tls_cert/tls_key".into())
            }
            _ => return Err("tls_cert and tls_key must be given together".into()),
        };
        if !tls && !self.insecure_http && !self.listen.ip().is_loopback() {
            return Err(format!(
                "refusing plain HTTP on {}: give tls_cert and tls_key (or tls_self_signed), listen on a loopback address, or set insecure_http behind a TLS-terminating proxy",
                self.listen
            ));
        }
        if let Some(url) = &self.public_url {
            let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
            if !scheme_ok || wharf_jobs::sbom::RegistryAddress::from_url(url).is_none() {
                return Err(format!(
                    "public_url {url:?} is not an http(s) URL with a host, such as https://registry.example.com"
                ));
            }
        }
        if self.heartbeat_interval_secs == 0 {
            return Err("heartbeat_interval_secs must be at least 1".into());
        }
        if self.job_heartbeat_secs == 0 {
            return Err("job_heartbeat_secs must be at least 1".into());
        }
        if let Some(p) = self.gc_busy_percent {
            if !(1..=100).contains(&p) {
                return Err(format!("gc_busy_percent must be 1 to 100, not {p}"));
            }
        }
        if self.token_ttl_secs == 0 {
            return Err("token_ttl_secs must be at least 1".into());
        }
        if let Some(url) = &self.vulndb_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "vulndb_url {url:?} is not an http:// or https:// URL"
                ));
            }
            if self.vulndb_ecosystems.is_empty() {
                return Err("vulndb_ecosystems is empty: name at least one ecosystem".into());
            }
        }
        for url in &self.cache_for {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "cache_for {url:?} is not an http:// or https:// URL (the registry's, or another cache's)"
                ));
            }
        }
        if !self.cache_for.is_empty() {
            if self.cache_token.as_ref().is_none_or(|t| t.0.is_empty()) {
                return Err("a cache needs its token (cache_token, WHARF_CACHE_TOKEN or --cache-token): `wharf cache add NAME --url URL --region REGION` prints it".into());
            }
            if self.cache_max_bytes < 1 << 20 {
                return Err("cache_max_bytes must be at least 1 MiB".into());
            }
            if let Ok(BlobLocation::Dir(dir)) = self.blob_location() {
                if self.blobs.is_some() {
                    return Err(format!(
                        "a content cache keeps its blobs under data_dir, or in s3://BUCKET[/PREFIX]: blobs {:?} is a directory; set data_dir to it instead",
                        dir.display().to_string()
                    ));
                }
            }
        }
        if self.cache_redirect_ttl_secs == 0 {
            return Err("cache_redirect_ttl_secs must be at least 1".into());
        }
        if self.vulndb_update_interval_secs < 60 {
            return Err("vulndb_update_interval_secs must be at least 60".into());
        }
        Ok(())
    }

    /// Every configuration key, as the file spells it. Read from the struct's own
    /// deserializer, so a field added later is listed without anyone remembering to
    /// (the CLI's tests check each has a flag, a variable and help).
    pub fn keys() -> &'static [&'static str] {
        use serde::de::{Error as _, Visitor};
        use serde::Deserializer;
        type Error = serde::de::value::Error;
        struct FieldNames(&'static [&'static str]);
        impl<'de> Deserializer<'de> for &mut FieldNames {
            type Error = Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
                Err(Error::custom("only a struct's field names are read"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _name: &'static str,
                fields: &'static [&'static str],
                _visitor: V,
            ) -> Result<V::Value, Error> {
                self.0 = fields;
                Err(Error::custom("field names read"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
                enum identifier ignored_any
            }
        }
        let mut names = FieldNames(&[]);
        let _ = Config::deserialize(&mut names);
        names.0
    }

    /// The schedule (a cron expression, UTC) that runs `vulndb_update` every
    /// `vulndb_update_interval_secs`, rounded: under an hour, every N minutes; under a
    /// day, every N hours; otherwise every N days (at 03:17 UTC, off the full hour).
    pub fn vulndb_schedule(&self) -> String {
        let secs = self.vulndb_update_interval_secs.max(60);
        if secs < 3600 {
            format!("*/{} * * * *", (secs / 60).clamp(1, 59))
        } else if secs < 24 * 3600 {
            format!("17 */{} * * *", (secs / 3600).clamp(1, 23))
        } else {
            match secs / (24 * 3600) {
                1 => "17 3 * * *".to_string(),
                days => format!("17 3 */{} * *", days.min(31)),
            }
        }
    }

    /// Where SBOMs say the registry is: `public_url`, else this machine's host name
    /// with the port it listens on.
    pub fn registry_address(&self) -> wharf_jobs::sbom::RegistryAddress {
        let scheme = if self.tls_cert.is_some() || self.tls_self_signed {
            "https"
        } else {
            "http"
        };
        self.public_url
            .as_deref()
            .and_then(wharf_jobs::sbom::RegistryAddress::from_url)
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "localhost".into());
                let host = format!("{host}:{}", self.listen.port());
                wharf_jobs::sbom::RegistryAddress {
                    base_url: format!("{scheme}://{host}"),
                    host,
                }
            })
    }

    /// The online update's settings, for the `vulndb_update` job.
    pub fn vulndb_settings(&self) -> wharf_jobs::vulndb_update::UpdateSettings {
        wharf_jobs::vulndb_update::UpdateSettings {
            url: self.vulndb_url.clone(),
            ecosystems: self.vulndb_ecosystems.clone(),
            proxy: self.vulndb_proxy.clone(),
        }
    }

    /// Reads a TOML file; unknown keys are an error, so a typo is never ignored.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_fields() {
        let keys = Config::keys();
        assert_eq!(keys.first(), Some(&"listen"));
        assert!(keys.contains(&"gc_busy_percent") && keys.contains(&"insecure_http"));
        assert_eq!(keys.len(), 34, "{keys:?}");
    }

    #[test]
    fn vulndb_schedules_from_intervals() {
        let at = |secs| {
            Config {
                vulndb_update_interval_secs: secs,
                ..Config::default()
            }
            .vulndb_schedule()
        };
        assert_eq!(Config::default().vulndb_schedule(), "17 3 * * *");
        assert_eq!(at(600), "*/10 * * * *");
        assert_eq!(at(6 * 3600), "17 */6 * * *");
        assert_eq!(at(3 * 24 * 3600), "17 3 */3 * *");
        let bad = Config {
            vulndb_url: Some("ftp://mirror".into()),
            ..Config::default()
        };
        assert!(bad.validate().unwrap_err().contains("vulndb_url"));
    }

    #[test]
    fn metadata_urls() {
        let pg: MetadataUrl = "postgres://wharf:s3cret@db:5432/wharf".parse().unwrap();
        assert_eq!(
            format!("{pg:?}"),
            r#""postgres://wharf:***@db:5432/wharf""#,
            "the password is hidden"
        );
        assert!(matches!(pg.location(), Ok(MetadataLocation::Postgres(_))));
        let sq: MetadataUrl = "sqlite:///var/lib/wharf/m.db".parse().unwrap();
        assert_eq!(
            sq.location().unwrap(),
            MetadataLocation::Sqlite("/var/lib/wharf/m.db".into())
        );
        assert!("mysql://x".parse::<MetadataUrl>().is_err());
        assert!("sqlite://".parse::<MetadataUrl>().is_err());
        let c = Config {
            data_dir: "/d".into(),
            ..Config::default()
        };
        assert_eq!(
            c.metadata_location().unwrap(),
            MetadataLocation::Sqlite("/d/metadata.db".into())
        );
    }
}
