//! The phases, run against both servers in one process: each measurement is taken on one
//! server at a time, and the order of the two alternates between repeats (or phases, for
//! the single-shot load runs) so neither always runs on a warmer or quieter machine.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use reqwest::Client;
use tempfile::TempDir;
use tokio::task::JoinSet;

use crate::data::{median, percentile, random_bytes, Blob, Image};
use crate::load;
use crate::registry::Registry;
use crate::report::{self, Better, Cell, Metric, PhaseUsage, Report, Usage, SERVERS};
use crate::server::{Kind, PgFs, PgS3, Server, Storage};
use crate::sys::{self, Machine};
use crate::{Args, Stores};

const MIB: usize = 1 << 20;
/// Size of each small image's layer.
const SMALL_LAYER: usize = 1024;

/// Measurement order for round `k`: wharf first on even rounds, the reference on odd.
fn order(k: usize) -> [usize; 2] {
    match k % 2 {
        0 => [0, 1],
        _ => [1, 0],
    }
}

fn mb_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

/// Per-server results of a phase while it runs: samples so far, or the error that
/// stopped that server's measurement (the other server carries on).
type Partial = [Result<Vec<f64>, String>; 2];

/// One kind of push, per server: as measured; with the deferred writeback that the
/// flush after it took; that as a percentage of the same repeat's machine limit; and
/// (chunked only) the final PUT in ms.
struct Pushes {
    measured: Partial,
    with_writeback: Partial,
    of_limit: Partial,
    commit: Partial,
}

impl Pushes {
    fn new() -> Pushes {
        Pushes {
            measured: fresh(),
            with_writeback: fresh(),
            of_limit: fresh(),
            commit: fresh(),
        }
    }

    fn fail(&mut self, i: usize, msg: String) {
        for p in [
            &mut self.measured,
            &mut self.with_writeback,
            &mut self.of_limit,
            &mut self.commit,
        ] {
            p[i] = Err(msg.clone());
        }
    }
}

fn record(p: &mut Partial, i: usize, v: f64) {
    if let Ok(samples) = &mut p[i] {
        samples.push(v);
    }
}

fn fresh() -> Partial {
    [Ok(vec![]), Ok(vec![])]
}

/// CPU and wall clock around one measurement of one server.
struct Window {
    pid: u32,
    server0: u64,
    client0: u64,
    /// pg-s3: CPU ticks of the S3 server; pg-fs and pg-s3: of PostgreSQL; where their
    /// PIDs are known.
    s3_0: Option<u64>,
    postgres0: Option<u64>,
    t0: Instant,
}

impl Window {
    fn open(pid: u32, s3_pid: Option<u32>, postgres_pid: Option<u32>) -> Window {
        // Read /proc first so the reads are outside the timed interval.
        let server0 = sys::cpu_ticks(pid).unwrap_or(0);
        let client0 = sys::client_cpu_ticks();
        let s3_0 = s3_pid.map(|p| sys::cpu_ticks(p).unwrap_or(0));
        let postgres0 = postgres_pid.map(sys::tree_cpu_ticks);
        Window {
            pid,
            server0,
            client0,
            s3_0,
            postgres0,
            t0: Instant::now(),
        }
    }
}

struct Bench {
    args: Args,
    servers: [Server; 2],
    regs: [Registry; 2],
    ticks_per_sec: f64,
    usage: Vec<PhaseUsage>,
    /// Holds the wrk script.
    scratch: TempDir,
    /// Makes this run's content differ from any earlier run's.
    nonce: u64,
    /// Where both servers keep their data: flushed after every timed push, and where
    /// the machine's write+fsync limit is measured.
    work_dir: std::path::PathBuf,
    /// The machine's limits, measured before each push repeat on that repeat's bytes.
    limits: Vec<crate::limits::Limits>,
}

pub async fn run(args: Args) -> Result<bool> {
    for (what, path) in [("wharf", &args.wharf), ("reference", &args.reference)] {
        if !path.is_file() {
            bail!(
                "the {what} binary {} does not exist (scripts/bench.sh builds wharf first)",
                path.display()
            );
        }
    }
    let work_dir = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let machine = Machine::probe(&work_dir);
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Unique per run, short enough for a database name.
    let run_id = format!("{}_{}", std::process::id(), nonce % 1_000_000_000);
    let storage = match args.stores {
        Stores::SqliteFs => Storage::Local,
        Stores::PgFs => {
            let Some(postgres_url) = &args.postgres_url else {
                bail!("--stores pg-fs needs --postgres-url");
            };
            Storage::PgFs(Arc::new(PgFs {
                postgres_url: postgres_url.clone(),
                run_id,
            }))
        }
        Stores::PgS3 => {
            let (Some(postgres_url), Some(endpoint)) = (&args.postgres_url, &args.s3_endpoint)
            else {
                bail!("--stores pg-s3 needs --postgres-url and --s3-endpoint");
            };
            Storage::PgS3(Arc::new(PgS3 {
                postgres_url: postgres_url.clone(),
                endpoint: endpoint.clone(),
                bucket: args.s3_bucket.clone(),
                region: args.s3_region.clone(),
                access_key: args.s3_access_key.clone(),
                secret_key: args.s3_secret_key.clone(),
                run_id,
            }))
        }
    };
    let wharf_path = args.wharf.display().to_string();
    let reference_path = args.reference.display().to_string();
    let mut versions = vec![
        ("wharf", version_of(&wharf_path, "--version")),
        ("reference", version_of(&reference_path, "--version")),
        ("wrk", version_of("wrk", "-v")),
        ("ab", version_of("ab", "-V")),
        // The binary's commit says nothing of uncommitted edits; the checkout that holds
        // the binary (target/release/wharf) does.
        ("wharf source tree", source_tree(&args.wharf)),
    ];
    let date = sys::run_first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let load_before = sys::load_average();
    let cpu_before = sys::machine_cpu();
    let http = Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        // Bounds every request; 256 MiB at a slow 5 MB/s still fits.
        .timeout(Duration::from_secs(120))
        .build()?;

    // Write back what earlier work (such as the build just before) left dirty, so the
    // kernel's writeback does not compete with the measurements.
    let sync = tokio::process::Command::new("sync")
        .kill_on_drop(true)
        .status();
    if !matches!(tokio::time::timeout(Duration::from_secs(120), sync).await, Ok(Ok(s)) if s.success())
    {
        eprintln!("warning: sync failed or took over 120 s; dirty pages may be written back during the run");
    }

    if let Storage::PgFs(p) = &storage {
        versions.push(("PostgreSQL", postgres_version(&p.postgres_url)));
    }
    if let Storage::PgS3(s) = &storage {
        versions.push(("PostgreSQL", postgres_version(&s.postgres_url)));
        let s3 = match &args.s3_label {
            Some(label) => label.clone(),
            None => s3_server_header(&http, &s.endpoint).await,
        };
        versions.push(("S3 server", format!("{s3} at {}", s.endpoint)));
    }

    // If the reference fails to start, `wharf` is dropped here, which kills it.
    eprintln!("starting wharf ({wharf_path}) and the reference ({reference_path})…");
    let wharf = Server::start(Kind::Wharf, &args.wharf, &work_dir, &storage, &http).await?;
    let reference =
        Server::start(Kind::Reference, &args.reference, &work_dir, &storage, &http).await?;
    eprintln!(
        "wharf at {} (pid {}), reference at {} (pid {})",
        wharf.base, wharf.pid, reference.base, reference.pid
    );
    let setups = [
        ("wharf configuration", wharf.setup.to_string()),
        ("reference configuration", reference.setup.to_string()),
    ];
    let regs = [
        Registry::new(http.clone(), wharf.base.clone()),
        Registry::new(http.clone(), reference.base.clone()),
    ];
    let mut b = Bench {
        ticks_per_sec: sys::clock_ticks_per_sec(),
        servers: [wharf, reference],
        regs,
        usage: vec![],
        scratch: tempfile::tempdir()?,
        nonce,
        work_dir: work_dir.clone(),
        limits: vec![],
        args,
    };
    let metrics = b.run_phases().await;
    for s in &mut b.servers {
        s.stop();
    }
    eprintln!("servers stopped");

    let a = &b.args;
    versions.extend(setups);
    let report = Report {
        stores: a.stores,
        date,
        command: a
            .command_label
            .clone()
            .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" ")),
        params: vec![
            ("stores", stores_label(a.stores).to_string()),
            ("blob", format!("{} MiB", a.blob_mib)),
            ("chunk", format!("{} MiB", a.chunk_mib)),
            ("repeats", a.repeats.to_string()),
            (
                "page cache",
                match (a.stores, a.keep_page_cache) {
                    (Stores::PgS3, _) => "not managed (the blobs are in the S3 server)",
                    (_, true) => "kept",
                    (_, false) => "blob files evicted between push repeats",
                }
                .to_string(),
            ),
            (
                "wrk",
                format!("-t{} -c{} -d{}s", a.wrk_threads, a.connections, a.wrk_secs),
            ),
            (
                "ab",
                format!("-k -i -c{} -n{}", a.connections, a.ab_requests),
            ),
            (
                "small images",
                format!("{} × 1 KiB layer, {} workers", a.images, a.workers),
            ),
            (
                "tags",
                format!("{}, {} sequential tags/list GETs", a.tags, a.tag_gets),
            ),
        ],
        machine,
        versions,
        load_before,
        load_after: sys::load_average(),
        cpu: {
            let ((t0, i0, s0), (t1, i1, s1)) = (cpu_before, sys::machine_cpu());
            let total = t1.saturating_sub(t0).max(1) as f64;
            (
                100.0 * (1.0 - i1.saturating_sub(i0) as f64 / total),
                100.0 * s1.saturating_sub(s0) as f64 / total,
            )
        },
        metrics,
        usage: b.usage,
        limits: b.limits,
    };
    let markdown = report.markdown();
    println!("{markdown}");
    if let Some(doc) = &a.update_doc {
        report::update_doc(
            doc,
            report::markers(a.stores),
            &markdown,
            report::if_absent(a.stores),
        )?;
        eprintln!("updated {}", doc.display());
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.all_measured())
}

fn stores_label(stores: Stores) -> &'static str {
    match stores {
        Stores::SqliteFs => "SQLite + filesystem",
        Stores::PgFs => "PostgreSQL + filesystem",
        Stores::PgS3 => "PostgreSQL + S3",
    }
}

/// "PostgreSQL 15.x (fsync off, synchronous_commit off)": the durability settings decide
/// what a commit costs, so the report shows them.
pub(crate) fn postgres_version(url: &str) -> String {
    let query = "SELECT 'PostgreSQL ' || current_setting('server_version') || ' (fsync ' || \
                 current_setting('fsync') || ', synchronous_commit ' || \
                 current_setting('synchronous_commit') || ')'";
    sys::run_first_line("psql", &["-X", "-q", "-t", "-A", "-d", url, "-c", query])
        .unwrap_or_else(|| "unknown".into())
}

/// The S3 server's `Server` header, for want of a version endpoint.
async fn s3_server_header(http: &Client, endpoint: &str) -> String {
    let r = http
        .get(endpoint)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    r.ok()
        .and_then(|r| {
            r.headers()
                .get(reqwest::header::SERVER)
                .and_then(|v| v.to_str().ok().map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `git describe --always --dirty` of the checkout holding `bin`, if it is in one.
pub(crate) fn source_tree(bin: &std::path::Path) -> String {
    let dir = bin
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(|d| d.display().to_string()));
    dir.and_then(|d| sys::run_first_line("git", &["-C", &d, "describe", "--always", "--dirty"]))
        .filter(|s| !s.starts_with("fatal"))
        .unwrap_or_else(|| "not in a git checkout".into())
}

/// A tool's version line, without the copyright and banner words around it.
fn version_of(bin: &str, flag: &str) -> String {
    let line = sys::run_first_line(bin, &[flag]).unwrap_or_else(|| "unknown".into());
    let line = line.strip_prefix("This is ").unwrap_or(&line);
    line.split(" Copyright")
        .next()
        .unwrap_or(line)
        .trim()
        .to_string()
}

impl Bench {
    async fn run_phases(&mut self) -> Vec<Metric> {
        let a = self.args.clone();
        let blob = format!("{} MiB", a.blob_mib);
        let mut metrics = vec![];

        let (mono, chunked) = self.phase_pushes().await;
        metrics.push(self.median_metric(
            "push_monolithic",
            format!(
                "1. Blob push, monolithic POST+PUT ({blob}), median of {}",
                a.repeats
            ),
            "MB/s",
            Some((4.0, "≥ 4×")),
            mono.measured,
        ));
        metrics.push(self.median_metric(
            "push_monolithic_with_writeback",
            "1. (fair) monolithic push + the writeback of what it left dirty, median".into(),
            "MB/s",
            None,
            mono.with_writeback,
        ));
        metrics.push(self.median_metric(
            "push_monolithic_of_limit",
            "1. (fair) that, as % of min(write+fsync, SHA-256) of the same repeat (wharf's target: ≥ 85%)".into(),
            "%",
            None,
            mono.of_limit,
        ));
        metrics.push(self.median_metric(
            "push_chunked",
            format!(
                "2. Blob push, chunked ({blob} in {} MiB PATCHes), median of {}",
                a.chunk_mib, a.repeats
            ),
            "MB/s",
            Some((5.0, "≥ 5×")),
            chunked.measured,
        ));
        metrics.push(self.median_metric(
            "push_chunked_with_writeback",
            "2. (fair) chunked push + the writeback of what it left dirty, median".into(),
            "MB/s",
            None,
            chunked.with_writeback,
        ));
        metrics.push(self.median_metric(
            "push_chunked_of_limit",
            "2. (fair) that, as % of min(write+fsync, SHA-256) of the same repeat (wharf's target: ≥ 85%)".into(),
            "%",
            None,
            chunked.of_limit,
        ));
        let mut commit = self.median_metric(
            "push_chunked_final_put",
            "2. (detail) chunked push: final PUT (verify + commit), median".into(),
            "ms",
            None,
            chunked.commit,
        );
        commit.better = Better::Lower;
        metrics.push(commit);
        let pull = self.phase_pull().await;
        metrics.push(self.median_metric(
            "pull",
            format!("3. Blob pull ({blob} GET), median of {}", a.repeats),
            "MB/s",
            Some((1.2, "≥ 1.2×")),
            pull,
        ));

        // Phases 4 and 5 share one small image per server.
        let small = Image::unique(self.nonce ^ 0x5A11, SMALL_LAYER);
        let (rps, p99) = self.phase_manifest_get(&small).await;
        metrics.push(Metric {
            key: "manifest_get_rps",
            label: format!(
                "4. Manifest GET by tag (wrk -c{} {}s)",
                a.connections, a.wrk_secs
            ),
            unit: "req/s",
            better: Better::Higher,
            target: Some((10.0, "≥ 10×")),
            cells: rps,
        });
        metrics.push(Metric {
            key: "manifest_get_p99",
            label: "4. Manifest GET by tag, p99 latency".into(),
            unit: "ms",
            better: Better::Lower,
            target: None,
            cells: p99,
        });
        let head = self.phase_blob_head(&small).await;
        metrics.push(Metric {
            key: "blob_head_rps",
            label: format!(
                "5. Blob HEAD (ab -k -c{} -n{})",
                a.connections, a.ab_requests
            ),
            unit: "req/s",
            better: Better::Higher,
            target: Some((10.0, "≥ 10×")),
            cells: head,
        });
        let images = self.phase_small_images().await;
        metrics.push(Metric {
            key: "small_images",
            label: format!(
                "6. Small-image pushes ({} images, {} workers, POST+PUT per blob)",
                a.images, a.workers
            ),
            unit: "images/s",
            better: Better::Higher,
            target: Some((5.0, "≥ 5×")),
            cells: images,
        });
        let (tag_puts, list_median, list_p99) = self.phase_tags().await;
        metrics.push(Metric {
            key: "tag_puts",
            label: format!("7. (setup) Tag PUTs of one manifest, {} workers", a.workers),
            unit: "tags/s",
            better: Better::Higher,
            target: None,
            cells: tag_puts,
        });
        metrics.push(Metric {
            key: "tags_list_median",
            label: format!("7. tags/list with {} tags, median", a.tags),
            unit: "ms",
            better: Better::Lower,
            target: Some((1.0, "≥ 1× (no slower)")),
            cells: list_median,
        });
        metrics.push(Metric {
            key: "tags_list_p99",
            label: format!("7. tags/list with {} tags, p99", a.tags),
            unit: "ms",
            better: Better::Lower,
            target: Some((1.0, "≥ 1× (no slower)")),
            cells: list_p99,
        });
        let rss = [0, 1].map(|i| self.peak_rss(i));
        metrics.push(Metric {
            key: "peak_rss",
            label: "8. Peak RSS over the whole run (VmHWM)".into(),
            unit: "MiB",
            better: Better::Lower,
            target: Some((1.0, "≥ 1× (no higher)")),
            cells: rss,
        });
        // The targets were set on the default stores (SQLite + filesystem) and hold on
        // PostgreSQL + a directory too (the blobs are local there as well); on PostgreSQL +
        // a local S3 stand-in the figures are a comparison only.
        if a.stores == Stores::PgS3 {
            for m in &mut metrics {
                m.target = None;
            }
        }
        metrics
    }

    fn median_metric(
        &self,
        key: &'static str,
        label: String,
        unit: &'static str,
        target: Option<(f64, &'static str)>,
        partial: Partial,
    ) -> Metric {
        Metric {
            key,
            label,
            unit,
            better: Better::Higher,
            target,
            cells: partial.map(|p| match p {
                Ok(s) if !s.is_empty() => Cell::ok(median(&s), s),
                Ok(_) => Cell::err("no samples"),
                Err(e) => Cell::err(e),
            }),
        }
    }

    /// Closes a window: records its wall and CPU time under `phase` for server `i` and
    /// returns the wall time in seconds.
    fn close(&mut self, w: Window, phase: &'static str, i: usize) -> f64 {
        let wall = w.t0.elapsed().as_secs_f64();
        let server = sys::cpu_ticks(w.pid)
            .unwrap_or(w.server0)
            .saturating_sub(w.server0);
        let client = sys::client_cpu_ticks().saturating_sub(w.client0);
        let (s3_pid, postgres_pid) = (self.args.s3_pid, self.args.postgres_pid);
        let s3 = w.s3_0.zip(s3_pid).map(|(t0, p)| {
            sys::cpu_ticks(p).unwrap_or(t0).saturating_sub(t0) as f64 / self.ticks_per_sec
        });
        let postgres = w
            .postgres0
            .zip(postgres_pid)
            .map(|(t0, p)| sys::tree_cpu_ticks(p).saturating_sub(t0) as f64 / self.ticks_per_sec);
        let idx = match self.usage.iter().position(|p| p.phase == phase) {
            Some(idx) => idx,
            None => {
                self.usage.push(PhaseUsage {
                    phase,
                    per_server: [Usage::default(); 2],
                });
                self.usage.len() - 1
            }
        };
        let u = &mut self.usage[idx].per_server[i];
        u.wall_s += wall;
        u.server_cpu_s += server as f64 / self.ticks_per_sec;
        u.client_cpu_s += client as f64 / self.ticks_per_sec;
        if let Some(v) = s3 {
            *u.s3_cpu_s.get_or_insert(0.0) += v;
        }
        if let Some(v) = postgres {
            *u.postgres_cpu_s.get_or_insert(0.0) += v;
        }
        wall
    }

    /// An error message, with the server's last words if it has died.
    fn describe(&mut self, i: usize, e: anyhow::Error) -> String {
        let msg = format!("{e:#}");
        eprintln!("  {} failed: {msg}", SERVERS[i]);
        if self.servers[i].is_alive() {
            msg
        } else {
            format!(
                "{msg} (the server has exited: {})",
                self.servers[i].log_tail()
            )
        }
    }

    /// Between push repeats, untimed: see [`Server::evict_page_cache`]. With pg-s3 the
    /// blobs are in the S3 server, not in files the harness created; with pg-fs they are
    /// in wharf's data directory, as with sqlite-fs.
    fn evict(&self) {
        if self.args.keep_page_cache || self.args.stores == Stores::PgS3 {
            return;
        }
        for s in &self.servers {
            s.evict_page_cache();
        }
    }

    fn window(&self, i: usize) -> Window {
        let a = &self.args;
        match a.stores {
            Stores::PgS3 => Window::open(self.servers[i].pid, a.s3_pid, a.postgres_pid),
            Stores::PgFs => Window::open(self.servers[i].pid, None, a.postgres_pid),
            Stores::SqliteFs => Window::open(self.servers[i].pid, None, None),
        }
    }

    /// Phases 1 and 2, interleaved repeat by repeat so both kinds of push sample the same
    /// machine states (on a VM, large-blob throughput drifts during a run).
    async fn phase_pushes(&mut self) -> (Pushes, Pushes) {
        let (mut mono, mut chunked) = (Pushes::new(), Pushes::new());
        for rep in 0..self.args.repeats as usize {
            self.push_round(false, rep, &mut mono).await;
            self.evict();
            self.push_round(true, rep, &mut chunked).await;
            self.evict();
        }
        (mono, chunked)
    }

    /// One repeat of one kind of push: a fresh random blob; the machine's limits for it;
    /// then the push to each server, each followed by an untimed flush of what it left
    /// dirty (so the next timed push does not pay for it), whose duration is that
    /// server's deferred writeback.
    async fn push_round(&mut self, chunked: bool, rep: usize, out: &mut Pushes) {
        let (phase, repo) = if chunked {
            ("2. chunked push", "bench/chunked")
        } else {
            ("1. monolithic push", "bench/monolithic")
        };
        let size = self.args.blob_mib * MIB;
        let chunk = self.args.chunk_mib * MIB;
        let blob = Blob::new(random_bytes(
            size,
            self.nonce ^ ((chunked as u64) << 32) ^ rep as u64,
        ));
        let (dir, data) = (self.work_dir.clone(), blob.data.clone());
        let limits = match tokio::task::spawn_blocking(move || crate::limits::measure(&dir, &data))
            .await
        {
            Ok(Ok(l)) => {
                eprintln!(
                    "[{phase}] repeat {}: machine: write+fsync {:.0} MB/s, SHA-256 {:.0} MB/s, SHA-512 {:.0} MB/s",
                    rep + 1,
                    l.write_fsync,
                    l.sha256,
                    l.sha512
                );
                self.limits.push(l);
                Some(l)
            }
            Ok(Err(e)) => {
                eprintln!(
                    "[{phase}] repeat {}: machine limits not measured: {e:#}",
                    rep + 1
                );
                None
            }
            Err(e) => {
                eprintln!(
                    "[{phase}] repeat {}: machine limits not measured: {e}",
                    rep + 1
                );
                None
            }
        };
        for i in order(rep) {
            if out.measured[i].is_err() {
                continue;
            }
            let reg = self.regs[i].clone();
            let w = self.window(i);
            let r = if chunked {
                reg.push_chunked(repo, &blob.data, chunk, &blob.digest)
                    .await
                    .map(Some)
            } else {
                reg.push_monolithic(repo, blob.data.clone(), &blob.digest)
                    .await
                    .map(|()| None)
            };
            let secs = self.close(w, phase, i);
            let writeback = crate::limits::flush(&self.work_dir);
            // Untimed: the server must now hold exactly what was sent.
            let r = match r {
                Ok(last) => check_size(&reg, repo, &blob, size).await.map(|()| last),
                Err(e) => Err(e),
            };
            match r {
                Ok(last) => {
                    let v = mb_per_s(size, secs);
                    let with_wb = mb_per_s(size, secs + writeback);
                    eprintln!(
                        "[{phase}] repeat {}: {} {v:.0} MB/s; {with_wb:.0} MB/s with the {:.0} ms writeback after it",
                        rep + 1,
                        SERVERS[i],
                        writeback * 1000.0
                    );
                    record(&mut out.measured, i, v);
                    record(&mut out.with_writeback, i, with_wb);
                    if let Some(l) = limits {
                        record(&mut out.of_limit, i, 100.0 * with_wb / l.durable_push());
                    }
                    if let Some(d) = last {
                        record(&mut out.commit, i, d.as_secs_f64() * 1000.0);
                    }
                }
                Err(e) => {
                    let msg = self.describe(i, e);
                    out.fail(i, msg);
                }
            }
        }
    }

    /// Phase 3: one blob per server, hash-checked once untimed, then timed GETs.
    async fn phase_pull(&mut self) -> Partial {
        const PHASE: &str = "3. pull";
        let repo = "bench/pull";
        let size = self.args.blob_mib * MIB;
        let blob = Blob::new(random_bytes(size, self.nonce ^ 0x9011));
        let mut out = fresh();
        for (i, slot) in out.iter_mut().enumerate() {
            let reg = self.regs[i].clone();
            let r = async {
                reg.push_monolithic(repo, blob.data.clone(), &blob.digest)
                    .await?;
                let (n, d) = reg.get_blob(repo, &blob.digest, true).await?;
                if n != size as u64 || d.as_ref() != Some(&blob.digest) {
                    bail!(
                        "GET returned {n} bytes with digest {d:?}, expected {size} bytes of {}",
                        blob.digest
                    );
                }
                Ok(())
            }
            .await;
            if let Err(e) = r {
                *slot = Err(self.describe(i, e));
            }
        }
        for rep in 0..self.args.repeats as usize {
            for i in order(rep) {
                if out[i].is_err() {
                    continue;
                }
                let reg = self.regs[i].clone();
                let w = self.window(i);
                let r = reg.get_blob(repo, &blob.digest, false).await;
                let secs = self.close(w, PHASE, i);
                let r = r.and_then(|(n, _)| match n == size as u64 {
                    true => Ok(()),
                    false => Err(anyhow!("GET returned {n} bytes, expected {size}")),
                });
                match (r, &mut out[i]) {
                    (Ok(()), Ok(samples)) => {
                        let v = mb_per_s(size, secs);
                        eprintln!("[{PHASE}] repeat {}: {} {v:.0} MB/s", rep + 1, SERVERS[i]);
                        samples.push(v);
                    }
                    (Err(e), _) => out[i] = Err(self.describe(i, e)),
                    (Ok(()), Err(_)) => {}
                }
            }
        }
        out
    }

    /// Phase 4: push a small image tagged `latest`, check it reads back, then wrk.
    async fn phase_manifest_get(&mut self, img: &Image) -> ([Cell; 2], [Cell; 2]) {
        const PHASE: &str = "4. manifest GET (wrk)";
        let repo = "bench/small";
        let script = self.scratch.path().join("manifest.lua");
        let mut rps = [Cell::err("not run"), Cell::err("not run")];
        let mut p99 = [Cell::err("not run"), Cell::err("not run")];
        if let Err(e) = std::fs::write(&script, load::wrk_script()) {
            let msg = format!("writing the wrk script: {e}");
            return (
                [Cell::err(&msg), Cell::err(&msg)],
                [Cell::err(&msg), Cell::err(&msg)],
            );
        }
        for i in order(4) {
            let reg = self.regs[i].clone();
            let a = &self.args;
            let (threads, conns, secs) = (a.wrk_threads, a.connections, a.wrk_secs);
            let setup = async {
                push_image(&reg, repo, "latest", img).await?;
                check_manifest(&reg, repo, "latest", img).await?;
                reg.url(&format!("v2/{repo}/manifests/latest"))
            }
            .await;
            let url = match setup {
                Ok(url) => url,
                Err(e) => {
                    let msg = self.describe(i, e);
                    (rps[i], p99[i]) = (Cell::err(&msg), Cell::err(msg));
                    continue;
                }
            };
            let w = self.window(i);
            let r = load::wrk(&url, &script, threads, conns, secs).await;
            self.close(w, PHASE, i);
            match r {
                Ok(l) => {
                    eprintln!(
                        "[{PHASE}] {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} requests)",
                        SERVERS[i],
                        l.requests_per_sec,
                        l.p50_ms.unwrap_or(f64::NAN),
                        l.p99_ms.unwrap_or(f64::NAN),
                        l.requests
                    );
                    rps[i] = Cell::ok(l.requests_per_sec, vec![]);
                    p99[i] = match l.p99_ms {
                        Some(v) => Cell::ok(v, vec![]),
                        None => Cell::err("wrk reported no p99"),
                    };
                }
                Err(e) => {
                    let msg = self.describe(i, e);
                    (rps[i], p99[i]) = (Cell::err(&msg), Cell::err(msg));
                }
            }
        }
        (rps, p99)
    }

    /// Phase 5: ab HEADs of the small image's layer (pushed in phase 4).
    async fn phase_blob_head(&mut self, img: &Image) -> [Cell; 2] {
        const PHASE: &str = "5. blob HEAD (ab)";
        let repo = "bench/small";
        let mut out = [Cell::err("not run"), Cell::err("not run")];
        for i in order(5) {
            let reg = self.regs[i].clone();
            let (conns, n) = (self.args.connections, self.args.ab_requests);
            let setup = async {
                let len = reg.head_blob(repo, &img.layer.digest).await?;
                if len != img.layer.data.len() as u64 {
                    bail!(
                        "HEAD reports {len} bytes, expected {}",
                        img.layer.data.len()
                    );
                }
                reg.url(&format!("v2/{repo}/blobs/{}", img.layer.digest))
            }
            .await;
            let url = match setup {
                Ok(url) => url,
                Err(e) => {
                    out[i] = Cell::err(self.describe(i, e));
                    continue;
                }
            };
            let w = self.window(i);
            let r = load::ab_head(&url, conns, n).await;
            self.close(w, PHASE, i);
            out[i] = match r {
                Ok(l) => {
                    eprintln!("[{PHASE}] {}: {:.0} req/s", SERVERS[i], l.requests_per_sec);
                    Cell::ok(l.requests_per_sec, vec![])
                }
                Err(e) => Cell::err(self.describe(i, e)),
            };
        }
        out
    }

    /// Phase 6: many unique small images, each in its own repository, pushed by
    /// concurrent workers; then every manifest is read back by tag (untimed).
    async fn phase_small_images(&mut self) -> [Cell; 2] {
        const PHASE: &str = "6. small-image pushes";
        let n = self.args.images as usize;
        let workers = self.args.workers as usize;
        let nonce = self.nonce;
        let images: Arc<Vec<Image>> = Arc::new(
            (0..n)
                .map(|k| Image::unique(nonce ^ ((k as u64 + 1) << 20), SMALL_LAYER))
                .collect(),
        );
        let mut out = [Cell::err("not run"), Cell::err("not run")];
        for i in order(6) {
            let reg = self.regs[i].clone();
            let w = self.window(i);
            let (r2, imgs) = (reg.clone(), images.clone());
            let r = concurrently(n, workers, move |k| {
                let (reg, imgs) = (r2.clone(), imgs.clone());
                async move { push_image(&reg, &small_repo(k), "v1", &imgs[k]).await }
            })
            .await;
            let secs = self.close(w, PHASE, i);
            let imgs = images.clone();
            let r =
                match r {
                    Ok(()) => concurrently(n, workers, move |k| {
                        let (reg, imgs) = (reg.clone(), imgs.clone());
                        async move { check_manifest(&reg, &small_repo(k), "v1", &imgs[k]).await }
                    })
                    .await,
                    Err(e) => Err(e),
                };
            out[i] = match r {
                Ok(()) => {
                    let v = n as f64 / secs;
                    eprintln!(
                        "[{PHASE}] {}: {v:.1} images/s ({n} in {secs:.2} s, all verified)",
                        SERVERS[i]
                    );
                    Cell::ok(v, vec![])
                }
                Err(e) => Cell::err(self.describe(i, e)),
            };
        }
        out
    }

    /// Phase 7: one manifest tagged N times, then sequential tags/list GETs, interleaved
    /// between the servers GET by GET.
    async fn phase_tags(&mut self) -> ([Cell; 2], [Cell; 2], [Cell; 2]) {
        const SETUP: &str = "7. tagging (setup)";
        const PHASE: &str = "7. tags/list";
        let repo = "bench/tags";
        let n = self.args.tags as usize;
        let workers = self.args.workers as usize;
        let img = Arc::new(Image::unique(self.nonce ^ 0x7A65, SMALL_LAYER));
        let expected: Vec<String> = (0..n).map(tag_name).collect();
        let mut puts = [Cell::err("not run"), Cell::err("not run")];
        let mut lat = fresh();
        for i in order(7) {
            let reg = self.regs[i].clone();
            let digest = img.manifest.digest.to_string();
            let r = async {
                push_image(&reg, repo, &digest, &img).await?;
                let w = self.window(i);
                let (reg2, img2) = (reg.clone(), img.clone());
                let r = concurrently(n, workers, move |k| {
                    let (reg, img) = (reg2.clone(), img2.clone());
                    async move {
                        let m = &img.manifest;
                        reg.put_manifest(repo, &tag_name(k), m.data.clone(), &m.digest)
                            .await
                    }
                })
                .await;
                Ok::<_, anyhow::Error>((w, r))
            }
            .await;
            let r = match r {
                Ok((w, r)) => {
                    let secs = self.close(w, SETUP, i);
                    r.map(|()| secs)
                }
                Err(e) => Err(e),
            };
            let r = match r {
                Ok(secs) => check_tags(&reg, repo, &expected).await.map(|()| secs),
                Err(e) => Err(e),
            };
            match r {
                Ok(secs) => {
                    eprintln!("[{SETUP}] {}: {:.0} tags/s", SERVERS[i], n as f64 / secs);
                    puts[i] = Cell::ok(n as f64 / secs, vec![]);
                }
                Err(e) => {
                    let msg = self.describe(i, e);
                    puts[i] = Cell::err(&msg);
                    lat[i] = Err(msg);
                }
            }
        }
        let mut last_body = [None, None];
        for g in 0..self.args.tag_gets as usize {
            for i in order(g) {
                if lat[i].is_err() {
                    continue;
                }
                let reg = self.regs[i].clone();
                let w = self.window(i);
                let r = reg.tags_list(repo).await;
                let secs = self.close(w, PHASE, i);
                match (r, &mut lat[i]) {
                    (Ok(body), Ok(samples)) => {
                        samples.push(secs * 1000.0);
                        last_body[i] = Some(body);
                    }
                    (Err(e), _) => lat[i] = Err(self.describe(i, e)),
                    (Ok(_), Err(_)) => {}
                }
            }
        }
        // The last answer must still hold every tag (the reference ignores `n`, and wharf
        // must not silently page).
        for (i, body) in last_body.into_iter().enumerate() {
            if let (Some(body), Ok(_)) = (body, &lat[i]) {
                if let Err(e) = tags_match(&body, &expected) {
                    lat[i] = Err(self.describe(i, e));
                }
            }
        }
        let summary = |p: &Result<Vec<f64>, String>, f: &dyn Fn(&[f64]) -> f64| match p {
            Ok(s) if !s.is_empty() => Cell::ok(f(s), s.clone()),
            Ok(_) => Cell::err("no samples"),
            Err(e) => Cell::err(e),
        };
        let med = [0, 1].map(|i| summary(&lat[i], &median));
        let p99 = [0, 1].map(|i| summary(&lat[i], &|s| percentile(s, 99.0)));
        for i in 0..2 {
            if let (Ok(m), Ok(p)) = (&med[i].value, &p99[i].value) {
                eprintln!("[{PHASE}] {}: median {m:.2} ms, p99 {p:.2} ms", SERVERS[i]);
            }
        }
        (puts, med, p99)
    }

    /// Phase 8: VmHWM is the peak resident set over the process's life so far.
    fn peak_rss(&mut self, i: usize) -> Cell {
        if !self.servers[i].is_alive() {
            return Cell::err(format!(
                "the server has exited: {}",
                self.servers[i].log_tail()
            ));
        }
        match sys::peak_rss_kib(self.servers[i].pid) {
            Ok(kib) => {
                let mib = kib as f64 / 1024.0;
                eprintln!("[8. peak RSS] {}: {mib:.1} MiB", SERVERS[i]);
                Cell::ok(mib, vec![])
            }
            Err(e) => Cell::err(format!("{e:#}")),
        }
    }
}

fn small_repo(k: usize) -> String {
    format!("bench/image-{k:05}")
}

fn tag_name(k: usize) -> String {
    format!("t{k:05}")
}

async fn check_size(reg: &Registry, repo: &str, blob: &Blob, size: usize) -> Result<()> {
    let len = reg.head_blob(repo, &blob.digest).await?;
    if len != size as u64 {
        bail!("after the push HEAD reports {len} bytes, expected {size}");
    }
    Ok(())
}

/// Layer and config by POST + PUT, then the manifest under `reference`.
pub(crate) async fn push_image(
    reg: &Registry,
    repo: &str,
    reference: &str,
    img: &Image,
) -> Result<()> {
    reg.push_monolithic(repo, img.layer.data.clone(), &img.layer.digest)
        .await?;
    reg.push_monolithic(repo, img.config.data.clone(), &img.config.digest)
        .await?;
    reg.put_manifest(
        repo,
        reference,
        img.manifest.data.clone(),
        &img.manifest.digest,
    )
    .await
}

/// The manifest reads back byte for byte, with the right `Docker-Content-Digest`.
async fn check_manifest(reg: &Registry, repo: &str, reference: &str, img: &Image) -> Result<()> {
    let (body, header) = reg.get_manifest(repo, reference).await?;
    let want = img.manifest.digest.to_string();
    if !img.manifest.digest.matches(&body) || header.as_deref() != Some(want.as_str()) {
        bail!("{repo}:{reference} reads back with digest header {header:?}, expected {want}");
    }
    Ok(())
}

async fn check_tags(reg: &Registry, repo: &str, expected: &[String]) -> Result<()> {
    tags_match(&reg.tags_list(repo).await?, expected)
}

fn tags_match(body: &[u8], expected: &[String]) -> Result<()> {
    let v: serde_json::Value = serde_json::from_slice(body).context("tags/list is not JSON")?;
    let mut tags: Vec<&str> = v["tags"]
        .as_array()
        .context("tags/list has no tags array")?
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    tags.sort_unstable();
    if tags.len() != expected.len() || tags.iter().zip(expected).any(|(a, b)| *a != b) {
        bail!(
            "tags/list returned {} tags, expected all {}",
            tags.len(),
            expected.len()
        );
    }
    Ok(())
}

/// Runs `f(0..n)` on `workers` concurrent tasks; the first error stops the others from
/// taking new items and is returned. Bounded: each item is taken exactly once.
async fn concurrently<F, Fut>(n: usize, workers: usize, f: F) -> Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..workers.max(1) {
        let (f, next) = (f.clone(), next.clone());
        set.spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    return Ok(());
                }
                if let Err(e) = f(k).await {
                    next.store(n, Ordering::Relaxed);
                    return Err(e.context(format!("item {k}")));
                }
            }
        });
    }
    let mut first = None;
    while let Some(r) = set.join_next().await {
        let r = r
            .map_err(|e| anyhow!("worker panicked: {e}"))
            .and_then(|r| r);
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}
