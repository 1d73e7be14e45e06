//! What the report says about the machine, and the per-process figures read from /proc.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// CPU time of a process, in clock ticks: (user + system) of the process itself.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let f = stat_fields(&format!("/proc/{pid}/stat"))?;
    Ok(f[11] + f[12])
}

/// CPU time of a process and its direct children, in clock ticks: for the PostgreSQL
/// postmaster and its backends (a process that is gone counts as 0).
pub fn tree_cpu_ticks(root: u32) -> u64 {
    let mut total = cpu_ticks(root).unwrap_or(0);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return total;
    };
    // Bounded: one pass over the current process list.
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == root {
            continue;
        }
        // Index 1 is the parent's PID (see `stat_fields`).
        if let Ok(f) = stat_fields(&format!("/proc/{pid}/stat")) {
            if f[1] == u64::from(root) {
                total += f[11] + f[12];
            }
        }
    }
    total
}

/// CPU time of this process plus its waited-for children (wrk, ab), in clock ticks.
/// The servers are not reaped until the end, so they are not counted here.
pub fn client_cpu_ticks() -> u64 {
    stat_fields("/proc/self/stat")
        .map(|f| f[11] + f[12] + f[13] + f[14])
        .unwrap_or(0)
}

/// The numeric fields of /proc/PID/stat after the command name, from field 3 (`state`
/// is replaced by 0), so `utime` (field 14) is index 11.
fn stat_fields(path: &str) -> Result<Vec<u64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    if fields.len() < 15 {
        bail!("{path} has too few fields");
    }
    Ok(fields)
}

/// Peak resident set size (VmHWM) of a live process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmHWM in {path}"))
}

/// Clock ticks per second, for turning /proc CPU times into seconds.
pub fn clock_ticks_per_sec() -> f64 {
    run_first_line("getconf", &["CLK_TCK"])
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// First non-empty line of a command's stdout (or stderr, where some tools print their
/// version), if it ran at all.
pub fn run_first_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// Machine-wide CPU time from /proc/stat, in clock ticks: (total, idle + iowait, steal).
/// Steal is time the hypervisor gave our vCPUs to someone else: noise we cannot see
/// in the load average.
pub fn machine_cpu() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    if f.len() < 8 {
        return (0, 0, 0);
    }
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    (f[..8].iter().sum(), f[3] + f[4], f[7])
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory: String,
    pub disk: String,
}

impl Machine {
    /// A made-up machine for report tests.
    #[cfg(test)]
    pub fn for_tests() -> Machine {
        Machine {
            nproc: 2,
            cpu_model: "cpu".into(),
            kernel: "k".into(),
            memory: "m".into(),
            disk: "d".into(),
        }
    }

    pub fn probe(work_dir: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel,
            memory,
            disk: describe_disk(work_dir),
        }
    }
}

/// "device (fstype, rotational|non-rotational as the kernel reports it) at MOUNT" for the
/// file system holding `dir`: the data directories of both servers live there.
fn describe_disk(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    // The mount with the longest mount point that is a prefix of `dir`.
    let best = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?, f.next()?))
        })
        .filter(|(_, mnt, _)| dir.starts_with(mnt))
        .max_by_key(|(_, mnt, _)| mnt.len());
    let Some((dev, mnt, fstype)) = best else {
        return "unknown".into();
    };
    let name = dev.rsplit('/').next().unwrap_or(dev);
    let rota = std::fs::read_to_string(format!("/sys/class/block/{name}/queue/rotational"))
        .or_else(|_| {
            // A partition has no queue of its own: ask its parent disk.
            std::fs::read_to_string(format!("/sys/class/block/{name}/../queue/rotational"))
        })
        .ok()
        .map(|r| match r.trim() {
            "0" => "non-rotational",
            _ => "rotational",
        });
    let size = Command::new("df")
        .args(["-h", "--output=size"])
        .arg(&dir)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .map(|s| s.trim().to_string())
        });
    let mut s = format!("{dev} ({fstype}");
    if let Some(size) = size {
        s += &format!(", {size}");
    }
    if let Some(r) = rota {
        s += &format!(", {r} per the kernel");
    }
    s += &format!(") mounted at {mnt}");
    s
}
