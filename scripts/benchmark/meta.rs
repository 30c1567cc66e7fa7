//! Facts about the run, printed above the table and under each chart: the date, the machine
//! (CPU model, CPUs, RAM, OS), the redis-server, rustc and corral versions, and the command
//! that reproduces it.

use serde::Serialize;

/// Facts about the run, printed above the table (and under each chart), and the first fields
/// of results.json.
#[derive(Serialize)]
pub struct Meta {
    pub date: String,
    pub redis_version: String,
    /// CPUs this process may run on (`nproc`).
    pub nproc: usize,
    /// The CPU's model name (`/proc/cpuinfo`).
    pub cpu: String,
    /// `MemTotal` of `/proc/meminfo`, in bytes (0 if unknown).
    pub ram_bytes: u64,
    /// "Linux 6.1.0 x86_64".
    pub os: String,
    /// `rustc --version`.
    pub rustc: String,
    /// The command that reruns what this run ran: `scripts/bench [FILTER...]`.
    pub command: String,
    pub git: String,
    pub filters: Vec<String>,
}

impl Meta {
    pub fn collect(filters: &[String]) -> Meta {
        Meta {
            date: utc_now(),
            redis_version: redis_version(),
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu: cpu_model(),
            ram_bytes: ram_bytes(),
            os: os_name(),
            rustc: rustc_version(),
            command: std::iter::once("scripts/bench")
                .chain(filters.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            git: git_describe(),
            filters: filters.to_vec(),
        }
    }

    /// "AMD EPYC, 2 CPUs, 23.5 GiB RAM (Linux 6.1.0 x86_64)".
    pub fn machine(&self) -> String {
        let ram = if self.ram_bytes > 0 {
            format!(
                ", {:.1} GiB RAM",
                self.ram_bytes as f64 / (1u64 << 30) as f64
            )
        } else {
            String::new()
        };
        format!("{}, {} CPUs{ram} ({})", self.cpu, self.nproc, self.os)
    }
}

/// "YYYY-MM-DD HH:MM UTC", from the system clock (no date crate needed).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The version of the redis-server the harness runs (`redis-server --version`).
fn redis_version() -> String {
    let out = std::process::Command::new(crate::common::redis_server_bin())
        .arg("--version")
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .unwrap_or("unknown")
        .to_string()
}

/// A small text file's contents, trimmed (`/proc/...`).
fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// "Linux 6.1.0 x86_64": the kernel's name and release, and the CPU architecture.
fn os_name() -> String {
    let kernel = read_trimmed("/proc/sys/kernel/ostype").unwrap_or_else(|| "unknown OS".into());
    match read_trimmed("/proc/sys/kernel/osrelease") {
        Some(release) => format!("{kernel} {release} {}", std::env::consts::ARCH),
        None => format!("{kernel} {}", std::env::consts::ARCH),
    }
}

/// The first `model name` of `/proc/cpuinfo`, or "unknown CPU".
fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// `MemTotal` of `/proc/meminfo` in bytes, or 0.
fn ram_bytes() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `rustc --version` (the compiler cargo uses: `$RUSTC`, else `rustc`), or "rustc
/// unknown".
fn rustc_version() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "rustc unknown".to_string())
}

/// `git describe --always --dirty` of the repo, or "unknown".
fn git_describe() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}
