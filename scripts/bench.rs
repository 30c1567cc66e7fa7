//! corral's benchmark: a plain program that `scripts/bench [FILTER...]` runs (through
//! `cargo bench --bench corral`).
//!
//! It measures each command family against what people use today (plain Redis commands,
//! the Lua scripts of lock libraries), against real `redis-server` processes started by the
//! integration-test harness (`tests/common/mod.rs`), and prints one Markdown table on stdout.
//! The same table goes to `target/bench/results.md`, the rows as JSON to
//! `target/bench/results.json`, and charts of them to `target/bench/*.svg` ([`chart`]:
//! `versus.svg`, corral against native commands and Lua scripts; `scale-<family>.svg`, each
//! family's cost against scale). Progress goes to stderr.
//!
//! `--publish` (`scripts/bench --publish`, only without filters) also writes those files
//! to `scripts/bench-results/`, which is committed, so README.md can show them.
//!
//! The program always exits 0 once the report is written: it is a report, not a test. A row
//! whose target is missed says **MISS** in the table (and `"pass": false` in the JSON).
//!
//! Layout of this file, top to bottom:
//! - [`SECTIONS`]: every measurement, by name. `scripts/bench resv` runs only the sections
//!   whose name contains `resv`. **A new family adds its sections here** and a module like
//!   [`resv`] below.
//! - [`report`]: the rows, the targets, the Markdown and JSON output. A row may also carry a
//!   [`report::Plot`]: its place, and its numbers, in the charts.
//! - [`chart`] (`scripts/bench_chart.rs`): the SVG charts drawn from those rows.
//! - [`resp`]: a tiny raw RESP client (pre-encoded pipelines, thousands of sockets).
//! - [`util`]: helpers shared by the sections (workloads measured by `INFO commandstats`,
//!   bulk pipelines, waiter threads, percentiles, INFO parsing).
//! - [`resv`], [`sem`], [`slot`], [`alloc`], [`job`]: each family's sections.

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "bench_chart.rs"]
mod chart;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use report::{Meta, Report, Row};

/// One measurement (or a few that share a server). Its rows go into the report.
struct Section {
    /// The family its rows belong to (first column of the table).
    family: &'static str,
    /// `family/what`: what the command-line filter matches against.
    name: &'static str,
    run: fn(&mut Report),
}

/// Every section, in the order they run.
const SECTIONS: &[Section] = &[
    Section {
        family: "RESV",
        name: "resv/server-time",
        run: resv::server_time,
    },
    Section {
        family: "RESV",
        name: "resv/pipeline",
        run: resv::pipelined_throughput,
    },
    Section {
        family: "RESV",
        name: "resv/wake-release",
        run: resv::wake_after_release,
    },
    Section {
        family: "RESV",
        name: "resv/wake-deadline",
        run: resv::wake_after_deadline,
    },
    Section {
        family: "RESV",
        name: "resv/10k-waiters",
        run: resv::many_waiters,
    },
    Section {
        family: "RESV",
        name: "resv/memory",
        run: resv::memory,
    },
    Section {
        family: "SEM",
        name: "sem/scaling",
        run: sem::scaling,
    },
    Section {
        family: "SEM",
        name: "sem/vs-lua",
        run: sem::vs_lua,
    },
    Section {
        family: "SEM",
        name: "sem/memory",
        run: sem::memory,
    },
    Section {
        family: "SLOT",
        name: "slot/server-time",
        run: slot::server_time,
    },
    Section {
        family: "SLOT",
        name: "slot/memory",
        run: slot::memory,
    },
    Section {
        family: "ALLOC",
        name: "alloc/server-time",
        run: alloc::server_time,
    },
    Section {
        family: "ALLOC",
        name: "alloc/memory",
        run: alloc::memory,
    },
    Section {
        family: "JOB",
        name: "job/server-time",
        run: job::server_time,
    },
    Section {
        family: "JOB",
        name: "job/memory",
        run: job::memory,
    },
    Section {
        family: "JOB",
        name: "job/vs-lua",
        run: job::vs_lua,
    },
];

fn main() {
    // `cargo bench` passes `--bench` to the program; every argument that is not a flag is a
    // filter (case-insensitive substring of a section name).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.to_lowercase())
        .collect();
    let publish = std::env::args().any(|a| a == "--publish");
    if publish && !filters.is_empty() {
        eprintln!(
            "bench: --publish writes the committed results in {}: it takes a run of every \
             section, so no filters ({filters:?})",
            publish_dir().display()
        );
        std::process::exit(2);
    }
    let selected: Vec<&Section> = SECTIONS
        .iter()
        .filter(|s| filters.is_empty() || filters.iter().any(|f| s.name.contains(f.as_str())))
        .collect();
    if selected.is_empty() {
        let names: Vec<&str> = SECTIONS.iter().map(|s| s.name).collect();
        eprintln!(
            "bench: no section matches {filters:?}; sections are: {}",
            names.join(", ")
        );
        std::process::exit(2);
    }

    let mut report = Report::new(Meta::collect(&filters));
    let started = Instant::now();
    for section in selected {
        eprintln!("bench: == {} ==", section.name);
        let t = Instant::now();
        // A section that panics (server crashed, wrong reply…) becomes a failed row; the
        // panic message (and the server's log tail, printed by the harness) is on stderr.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| (section.run)(&mut report)));
        if let Err(e) = outcome {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            let first_line = msg.lines().next().unwrap_or("").to_string();
            report.add(
                Row::flag(
                    section.family,
                    &format!("{}: did not finish ({first_line})", section.name),
                    false,
                )
                .target(report::Target::Yes),
            );
        }
        eprintln!(
            "bench:    {} done in {:.1} s",
            section.name,
            t.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "bench: all done in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let charts = chart::all(report.rows(), report.meta());
    let markdown = report.markdown() + &chart::markdown(&charts);
    print!("{markdown}");
    let json = report.json();
    let mut dirs = vec![results_dir()];
    if publish {
        dirs.push(publish_dir());
    }
    for dir in dirs {
        match write_results(&dir, &markdown, &json, &charts) {
            Ok(()) => {
                let svgs: Vec<&str> = charts.iter().map(|c| c.file.as_str()).collect();
                eprintln!(
                    "bench: wrote {}, results.json and {}",
                    dir.join("results.md").display(),
                    svgs.join(", ")
                )
            }
            Err(e) => eprintln!("bench: could not write results to {}: {e}", dir.display()),
        }
    }
}

/// Writes results.md, results.json and the charts into `dir`, and removes the charts (any
/// `*.svg`) an earlier run left there that this run did not draw.
fn write_results(
    dir: &Path,
    markdown: &str,
    json: &str,
    charts: &[chart::Chart],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_svg = path.extension().is_some_and(|e| e == "svg");
        let drawn = charts
            .iter()
            .any(|c| path.file_name() == Some(c.file.as_ref()));
        if is_svg && !drawn {
            std::fs::remove_file(&path)?;
        }
    }
    std::fs::write(dir.join("results.md"), markdown)?;
    std::fs::write(dir.join("results.json"), json)?;
    for c in charts {
        std::fs::write(dir.join(&c.file), &c.svg)?;
    }
    Ok(())
}

/// `scripts/bench-results/` in the repo: where `--publish` puts the results, committed.
fn publish_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench-results")
}

/// `<target dir>/bench`: `$CARGO_TARGET_DIR` if set, else the repo's `target/`.
fn results_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => manifest.join(d), // join keeps an absolute path as it is
        None => manifest.join("target"),
    };
    target.join("bench")
}

// ---------------------------------------------------------------------------------------
/// The report: rows with optional baselines and targets, rendered as Markdown and JSON.
mod report {
    use std::fmt::Write as _;

    /// What a row measured.
    #[derive(Clone, Debug)]
    pub enum Value {
        Num(f64),
        /// A yes/no outcome ("all served").
        Flag(bool),
    }

    /// What a row must reach. Ratio targets compare `value / baseline`; the others compare
    /// the value itself (in the row's unit).
    #[allow(dead_code)] // not every kind of target is used by the families so far
    #[derive(Clone, Copy, Debug)]
    pub enum Target {
        /// Informational row: no target.
        None,
        RatioAtMost(f64),
        RatioAtLeast(f64),
        AtMost(f64),
        AtLeast(f64),
        /// A flag that must be yes.
        Yes,
    }

    #[derive(Clone, Debug)]
    pub struct Row {
        pub family: String,
        pub name: String,
        pub value: Value,
        pub unit: String,
        /// What the value is compared with, and its value (same unit).
        pub baseline: Option<(String, f64)>,
        pub target: Target,
        /// Where the row shows in the charts ([`super::chart`]); `None`: the table only.
        pub plot: Option<Plot>,
    }

    /// What kind of baseline a bar of the "corral vs native commands vs Lua scripts" chart
    /// is.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub enum Kind {
        /// Plain Redis commands and types.
        Native,
        /// A Lua script, as a library sends it (`EVALSHA`).
        Lua,
    }

    /// A row's place in the charts, with the numbers it contributes (server time, µs).
    #[derive(Clone, Debug)]
    pub enum Plot {
        /// In "corral vs native commands vs Lua scripts": corral's time for `op` against a
        /// baseline's. Rows with the same `op` share one bar group.
        Versus {
            op: String,
            corral_us: f64,
            kind: Kind,
            /// The baseline's bar label: what it runs.
            baseline: String,
            baseline_us: f64,
        },
        /// In the family's "cost against scale" chart: `op`'s time at two scales. Rows with
        /// the same `op` share one bar group (a scale given twice is drawn once).
        Scale {
            op: String,
            /// A plain-Redis reference measured the same way, not a corral command.
            reference: bool,
            points: [Point; 2],
        },
    }

    /// One measured scale: its label ("100,000 holders"), its size (orders the bars), µs.
    #[derive(Clone, Debug)]
    pub struct Point {
        pub scale: String,
        pub n: f64,
        pub us: f64,
    }

    impl Row {
        /// A numeric row, e.g. `Row::new("RESV", "wake p99", 0.4, "ms")`.
        pub fn new(family: &str, name: &str, value: f64, unit: &str) -> Row {
            Row {
                family: family.to_string(),
                name: name.to_string(),
                value: Value::Num(value),
                unit: unit.to_string(),
                baseline: None,
                target: Target::None,
                plot: None,
            }
        }

        /// A yes/no row.
        pub fn flag(family: &str, name: &str, yes: bool) -> Row {
            Row {
                value: Value::Flag(yes),
                ..Row::new(family, name, 0.0, "")
            }
        }

        /// Compares the value with `name`'s `value`, measured the same way in the same run.
        pub fn vs(mut self, name: &str, value: f64) -> Row {
            self.baseline = Some((name.to_string(), value));
            self
        }

        pub fn target(mut self, target: Target) -> Row {
            self.target = target;
            self
        }

        /// The value and the baseline's, for a chart: both must be there and in µs.
        fn us_pair(&self) -> (f64, f64) {
            match (&self.value, &self.baseline) {
                (Value::Num(v), Some((_, b))) if self.unit == "us" => (*v, *b),
                _ => panic!("row {:?}: charts take µs rows with a baseline", self.name),
            }
        }

        /// Charts the row in "corral vs native commands vs Lua scripts", in `op`'s bar
        /// group: the value is corral's, the baseline a `kind` one whose bar says `label`.
        pub fn versus(mut self, op: &str, kind: Kind, label: &str) -> Row {
            let (corral_us, baseline_us) = self.us_pair();
            self.plot = Some(Plot::Versus {
                op: op.to_string(),
                corral_us,
                kind,
                baseline: label.to_string(),
                baseline_us,
            });
            self
        }

        /// [`Row::versus`] for a row the other way round: its value is the `kind`
        /// baseline's, its baseline corral's.
        pub fn versus_swapped(mut self, op: &str, kind: Kind, label: &str) -> Row {
            let (baseline_us, corral_us) = self.us_pair();
            self.plot = Some(Plot::Versus {
                op: op.to_string(),
                corral_us,
                kind,
                baseline: label.to_string(),
                baseline_us,
            });
            self
        }

        /// Charts the row in its family's "cost against scale": `op` measured at `at` (the
        /// value) and at `from` (the baseline), each a (label, size).
        pub fn scale(mut self, op: &str, at: (&str, f64), from: (&str, f64)) -> Row {
            let (us, from_us) = self.us_pair();
            let point = |(scale, n): (&str, f64), us| Point {
                scale: scale.to_string(),
                n,
                us,
            };
            self.plot = Some(Plot::Scale {
                op: op.to_string(),
                reference: false,
                points: [point(from, from_us), point(at, us)],
            });
            self
        }

        /// Marks a [`Row::scale`] row as a plain-Redis reference (drawn in grey).
        pub fn reference(mut self) -> Row {
            if let Some(Plot::Scale { reference, .. }) = &mut self.plot {
                *reference = true;
            }
            self
        }

        /// value / baseline, when both are numbers.
        pub fn ratio(&self) -> Option<f64> {
            match (&self.value, &self.baseline) {
                (Value::Num(v), Some((_, b))) => Some(v / b),
                _ => None,
            }
        }

        /// Whether the target is met; None when there is no target.
        pub fn pass(&self) -> Option<bool> {
            let num = match self.value {
                Value::Num(v) => Some(v),
                Value::Flag(_) => None,
            };
            // NaN compares false, so a missing measurement misses its target.
            let at_most = |x: Option<f64>, b: f64| x.is_some_and(|x| x <= b);
            let at_least = |x: Option<f64>, b: f64| x.is_some_and(|x| x >= b);
            match self.target {
                Target::None => None,
                Target::RatioAtMost(b) => Some(at_most(self.ratio(), b)),
                Target::RatioAtLeast(b) => Some(at_least(self.ratio(), b)),
                Target::AtMost(b) => Some(at_most(num, b)),
                Target::AtLeast(b) => Some(at_least(num, b)),
                Target::Yes => Some(matches!(self.value, Value::Flag(true))),
            }
        }

        /// The target as text: "<= 1.5x" (a ratio), "<= 2 ms" (a value), "yes".
        pub fn target_text(&self) -> String {
            let unit = if self.unit.is_empty() {
                String::new()
            } else {
                format!(" {}", self.unit)
            };
            match self.target {
                Target::None => String::new(),
                // Bounds print as written in the code: 1.5, 2, 0.8.
                Target::RatioAtMost(b) => format!("<= {b}x"),
                Target::RatioAtLeast(b) => format!(">= {b}x"),
                Target::AtMost(b) => format!("<= {b}{unit}"),
                Target::AtLeast(b) => format!(">= {b}{unit}"),
                Target::Yes => "yes".to_string(),
            }
        }

        fn value_text(&self) -> String {
            match self.value {
                Value::Num(v) if self.unit.is_empty() => num(v),
                Value::Num(v) => format!("{} {}", num(v), self.unit),
                Value::Flag(true) => "yes".to_string(),
                Value::Flag(false) => "no".to_string(),
            }
        }
    }

    /// Facts about the run, printed above the table (and under each chart).
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

        /// The command that reruns what this run ran: `scripts/bench [FILTER...]`.
        pub fn command(&self) -> String {
            let mut c = String::from("scripts/bench");
            for f in &self.filters {
                c += " ";
                c += f;
            }
            c
        }
    }

    pub struct Report {
        meta: Meta,
        rows: Vec<Row>,
    }

    impl Report {
        pub fn new(meta: Meta) -> Report {
            Report {
                meta,
                rows: Vec::new(),
            }
        }

        pub fn rows(&self) -> &[Row] {
            &self.rows
        }

        pub fn meta(&self) -> &Meta {
            &self.meta
        }

        /// Adds a row (and echoes it to stderr, so progress shows what was measured).
        pub fn add(&mut self, row: Row) {
            let verdict = match row.pass() {
                Some(true) => " [ok]",
                Some(false) => " [MISS]",
                None => "",
            };
            let vs = match (&row.baseline, row.ratio()) {
                (Some((b, _)), Some(r)) => format!(" = {:.2}x {b}", r),
                _ => String::new(),
            };
            eprintln!("bench:    {}: {}{vs}{verdict}", row.name, row.value_text());
            self.rows.push(row);
        }

        pub fn markdown(&self) -> String {
            let m = &self.meta;
            let mut s = String::new();
            let _ = writeln!(s, "# corral benchmark\n");
            let _ = writeln!(s, "- **Date:** {}", m.date);
            let _ = writeln!(s, "- **Machine:** {}", m.machine());
            let _ = writeln!(
                s,
                "- **Software:** redis-server {}, {}, corral {}",
                m.redis_version, m.rustc, m.git
            );
            if !m.filters.is_empty() {
                let _ = writeln!(s, "- **Sections:** those matching {}", m.filters.join(" "));
            }
            let _ = writeln!(
                s,
                "- **Reproduce:** `{}` in a checkout of corral {} (`scripts/bench --publish` \
                 also copies the results to `scripts/bench-results/`)\n",
                m.command(),
                m.git
            );
            s += "| Family | Measurement | Value | Baseline | Baseline value | Ratio | Target | Result |\n";
            s += "|---|---|---:|---|---:|---:|---|---|\n";
            for r in &self.rows {
                let (bname, bvalue) = match &r.baseline {
                    Some((n, v)) => (n.clone(), with_unit(*v, &r.unit)),
                    None => (String::new(), String::new()),
                };
                let ratio = r.ratio().map(|x| format!("{x:.2}x")).unwrap_or_default();
                let result = match r.pass() {
                    Some(true) => "ok",
                    Some(false) => "**MISS**",
                    None => "",
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.family,
                    cell(&r.name),
                    r.value_text(),
                    cell(&bname),
                    bvalue,
                    ratio,
                    r.target_text(),
                    result
                );
            }
            let with_target: Vec<&Row> = self.rows.iter().filter(|r| r.pass().is_some()).collect();
            let missed: Vec<String> = with_target
                .iter()
                .filter(|r| r.pass() == Some(false))
                .map(|r| match &r.baseline {
                    Some((b, _)) => format!("{} vs {b}", r.name),
                    None => r.name.clone(),
                })
                .collect();
            let _ = write!(
                s,
                "\n{} targets: {} met, {} missed",
                with_target.len(),
                with_target.len() - missed.len(),
                missed.len()
            );
            if !missed.is_empty() {
                let _ = write!(s, " (MISS: {})", missed.join("; "));
            }
            s += ".\n";
            s
        }

        pub fn json(&self) -> String {
            let m = &self.meta;
            let mut s = String::from("{\n");
            let _ = writeln!(s, "  \"date\": {},", jstr(&m.date));
            let _ = writeln!(s, "  \"redis_version\": {},", jstr(&m.redis_version));
            let _ = writeln!(s, "  \"nproc\": {},", m.nproc);
            let _ = writeln!(s, "  \"cpu\": {},", jstr(&m.cpu));
            let _ = writeln!(s, "  \"ram_bytes\": {},", m.ram_bytes);
            let _ = writeln!(s, "  \"os\": {},", jstr(&m.os));
            let _ = writeln!(s, "  \"rustc\": {},", jstr(&m.rustc));
            let _ = writeln!(s, "  \"command\": {},", jstr(&m.command()));
            let _ = writeln!(s, "  \"git\": {},", jstr(&m.git));
            let filters: Vec<String> = m.filters.iter().map(|f| jstr(f)).collect();
            let _ = writeln!(s, "  \"filters\": [{}],", filters.join(", "));
            s += "  \"rows\": [\n";
            for (i, r) in self.rows.iter().enumerate() {
                let value = match r.value {
                    Value::Num(v) => jnum(v),
                    Value::Flag(b) => b.to_string(),
                };
                let (bname, bvalue) = match &r.baseline {
                    Some((n, v)) => (jstr(n), jnum(*v)),
                    None => ("null".to_string(), "null".to_string()),
                };
                let target = match r.target {
                    Target::None => "null".to_string(),
                    _ => jstr(&r.target_text()),
                };
                let _ = write!(
                    s,
                    "    {{\"family\": {}, \"name\": {}, \"value\": {value}, \"unit\": {}, \
                     \"baseline_name\": {bname}, \"baseline_value\": {bvalue}, \"ratio\": {}, \
                     \"target\": {target}, \"pass\": {}, \"chart\": {}}}",
                    jstr(&r.family),
                    jstr(&r.name),
                    jstr(&r.unit),
                    r.ratio().map_or("null".to_string(), jnum),
                    r.pass().map_or("null".to_string(), |p| p.to_string()),
                    r.plot.as_ref().map_or("null".to_string(), plot_json),
                );
                s += if i + 1 < self.rows.len() { ",\n" } else { "\n" };
            }
            s += "  ]\n}\n";
            s
        }
    }

    /// A row's place in the charts, as a JSON object.
    fn plot_json(p: &Plot) -> String {
        match p {
            Plot::Versus {
                op,
                corral_us,
                kind,
                baseline,
                baseline_us,
            } => format!(
                "{{\"chart\": \"versus\", \"op\": {}, \"corral_us\": {}, \
                 \"baseline_kind\": {}, \"baseline\": {}, \"baseline_us\": {}}}",
                jstr(op),
                jnum(*corral_us),
                jstr(match kind {
                    Kind::Native => "native",
                    Kind::Lua => "lua",
                }),
                jstr(baseline),
                jnum(*baseline_us)
            ),
            Plot::Scale {
                op,
                reference,
                points,
            } => {
                let points: Vec<String> = points
                    .iter()
                    .map(|p| {
                        format!(
                            "{{\"scale\": {}, \"n\": {}, \"us\": {}}}",
                            jstr(&p.scale),
                            jnum(p.n),
                            jnum(p.us)
                        )
                    })
                    .collect();
                format!(
                    "{{\"chart\": \"scale\", \"op\": {}, \"reference\": {reference}, \
                     \"points\": [{}]}}",
                    jstr(op),
                    points.join(", ")
                )
            }
        }
    }

    /// A number for the table: a few significant digits, thousands separated.
    pub fn num(x: f64) -> String {
        if !x.is_finite() {
            return "n/a".to_string();
        }
        let a = x.abs();
        if a >= 1000.0 {
            let digits = format!("{:.0}", a);
            let mut grouped = String::new();
            for (i, ch) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    grouped.push(',');
                }
                grouped.push(ch);
            }
            format!("{}{grouped}", if x < 0.0 { "-" } else { "" })
        } else if a >= 100.0 {
            format!("{x:.0}")
        } else if a >= 10.0 {
            format!("{x:.1}")
        } else if a >= 1.0 {
            format!("{x:.2}")
        } else {
            format!("{x:.3}")
        }
    }

    fn with_unit(x: f64, unit: &str) -> String {
        if unit.is_empty() {
            num(x)
        } else {
            format!("{} {unit}", num(x))
        }
    }

    /// A Markdown table cell: `|` would end the cell.
    fn cell(s: &str) -> String {
        s.replace('|', "\\|")
    }

    /// A JSON string literal.
    fn jstr(s: &str) -> String {
        let mut out = String::from("\"");
        for ch in s.chars() {
            match ch {
                '"' => out += "\\\"",
                '\\' => out += "\\\\",
                '\n' => out += "\\n",
                '\r' => out += "\\r",
                '\t' => out += "\\t",
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// A JSON number (`null` for NaN/infinity, which JSON cannot express).
    fn jnum(x: f64) -> String {
        if x.is_finite() {
            format!("{x}")
        } else {
            "null".to_string()
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
        let out = std::process::Command::new(super::common::redis_server_bin())
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
}

// ---------------------------------------------------------------------------------------
/// A tiny RESP2 client over a plain `TcpStream`.
///
/// The raw RESP client (`tests/common/raw.rs`), for the hot loops and the 10,000 sockets.
use common::raw as resp;

// ---------------------------------------------------------------------------------------
/// Helpers shared by the sections.
mod util {
    use std::collections::HashMap;
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use super::common::Server;
    use super::resp::{self, Reply};

    /// `INFO commandstats` as `command name → (calls, usec)`, names as Redis spells them
    /// after `cmdstat_` (`resv.lock`, `set`, `evalsha`…).
    pub fn cmdstats(conn: &mut redis::Connection) -> HashMap<String, (u64, u64)> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(conn)
            .expect("INFO commandstats");
        let mut out = HashMap::new();
        for line in info.lines() {
            let Some((name, fields)) = line.trim_end().split_once(':') else {
                continue;
            };
            let Some(name) = name.strip_prefix("cmdstat_") else {
                continue;
            };
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            out.insert(name.to_string(), (field("calls"), field("usec")));
        }
        out
    }

    pub fn reset_stats(conn: &mut redis::Connection) {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(conn)
            .expect("CONFIG RESETSTAT");
    }

    /// A command's arguments (name first).
    pub type Args = Vec<Vec<u8>>;

    /// Whether a reply is the success a command should get.
    pub type Check = fn(&Reply) -> bool;

    pub fn args(parts: &[&str]) -> Args {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    pub fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
        v.iter().map(|a| a.as_slice()).collect()
    }

    pub fn is_int(r: &Reply) -> bool {
        matches!(r, Reply::Int(_))
    }

    pub fn is_one(r: &Reply) -> bool {
        *r == Reply::Int(1)
    }

    pub fn is_ok(r: &Reply) -> bool {
        *r == Reply::Status("OK".into())
    }

    pub fn is_nil(r: &Reply) -> bool {
        *r == Reply::Bulk(None) || *r == Reply::Array(None)
    }

    /// Iterations run per pipeline by [`measure`].
    pub const BATCH: usize = 100;

    /// Commands, repeated, whose server time `INFO commandstats` measures.
    pub struct Workload {
        pub label: &'static str,
        /// The iterations it cycles through (iteration i runs `iterations[i % len]`): each
        /// is a sequence of commands, each with a check that its reply is the expected
        /// success. A fixed workload has one.
        pub iterations: Vec<Vec<(Args, Check)>>,
        /// The `cmdstat_` entries whose usec make up this workload's server time.
        pub stats: &'static [&'static str],
    }

    impl Workload {
        /// The same commands every iteration.
        pub fn new(
            label: &'static str,
            cmds: Vec<(Args, Check)>,
            stats: &'static [&'static str],
        ) -> Workload {
            Workload::cycling(label, vec![cmds], stats)
        }

        /// Different commands from one iteration to the next (e.g. a new holder id each
        /// time), cycled through in order. Their number must be 1 or a multiple of
        /// [`BATCH`], so that every pipeline is one of a fixed set, encoded once.
        pub fn cycling(
            label: &'static str,
            iterations: Vec<Vec<(Args, Check)>>,
            stats: &'static [&'static str],
        ) -> Workload {
            assert!(
                iterations.len() == 1 || iterations.len().is_multiple_of(BATCH),
                "{label}: {} iterations is not 1 or a multiple of {BATCH}",
                iterations.len()
            );
            Workload {
                label,
                iterations,
                stats,
            }
        }
    }

    /// What one measured run of a [`Workload`] cost the server.
    pub struct ServerTime {
        /// usec per iteration: the sum of `stats`' usec over the iterations.
        pub per_iter: f64,
        /// usec per call of each entry of `stats`, in order.
        pub per_call: Vec<f64>,
    }

    /// Runs `iters` iterations of `w` on `conn`, [`BATCH`] iterations per pipeline, after a
    /// `CONFIG RESETSTAT` on `admin`; returns what `INFO commandstats` says they cost.
    pub fn measure(
        conn: &mut resp::Conn,
        admin: &mut redis::Connection,
        w: &Workload,
        iters: usize,
    ) -> ServerTime {
        // The pipelines, encoded before the clock starts: pipeline b runs iterations
        // b*BATCH.. of the cycle.
        let cycle = w.iterations.len();
        let pipelines: Vec<Vec<u8>> = (0..(cycle / BATCH).max(1))
            .map(|b| {
                let mut buf = Vec::new();
                for i in 0..BATCH {
                    for (cmd, _) in &w.iterations[(b * BATCH + i) % cycle] {
                        resp::encode(&mut buf, &refs(cmd));
                    }
                }
                buf
            })
            .collect();
        reset_stats(admin);
        for n in 0..iters / BATCH {
            let b = n % pipelines.len();
            conn.send_raw(&pipelines[b]).expect("send");
            for i in 0..BATCH {
                for (cmd, ok) in &w.iterations[(b * BATCH + i) % cycle] {
                    let r = conn.read().expect("read");
                    assert!(
                        ok(&r),
                        "{}: unexpected reply {r:?} to {:?}",
                        w.label,
                        String::from_utf8_lossy(&cmd[0])
                    );
                }
            }
        }
        let stats = cmdstats(admin);
        let iters = (iters / BATCH * BATCH) as f64;
        let mut total = 0.0;
        let per_call = w
            .stats
            .iter()
            .map(|name| {
                let (calls, usec) = stats.get(*name).copied().unwrap_or((0, 0));
                assert!(calls > 0, "{}: no cmdstat_{name} in INFO", w.label);
                total += usec as f64;
                usec as f64 / calls as f64
            })
            .collect();
        ServerTime {
            per_iter: total / iters,
            per_call,
        }
    }

    /// Each workload's rounds, from [`best_of`].
    pub struct Rounds(Vec<Vec<ServerTime>>);

    impl Rounds {
        /// Workload i's best (lowest) usec per iteration.
        pub fn iter(&self, i: usize) -> f64 {
            min(&self.0[i].iter().map(|t| t.per_iter).collect::<Vec<_>>())
        }

        /// Workload i's best (lowest) usec per call of its j-th stat.
        pub fn call(&self, i: usize, j: usize) -> f64 {
            min(&self.0[i].iter().map(|t| t.per_call[j]).collect::<Vec<_>>())
        }
    }

    /// Measures each `(workload, iterations)` `rounds` times, interleaved (round 0 of each,
    /// then round 1 of each…), after an unmeasured warm-up of a tenth of the iterations.
    /// Noise on a shared machine only ever adds time, so callers report the best round
    /// ([`Rounds::iter`], [`Rounds::call`]), as the RESV server-time section does.
    pub fn best_of(
        conn: &mut resp::Conn,
        admin: &mut redis::Connection,
        work: &[(&Workload, usize)],
        rounds: usize,
    ) -> Rounds {
        for (w, iters) in work {
            measure(conn, admin, w, (iters / 10).max(BATCH));
        }
        let mut runs: Vec<Vec<ServerTime>> = work.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for (i, (w, iters)) in work.iter().enumerate() {
                let t = measure(conn, admin, w, *iters);
                eprintln!(
                    "bench:    round {round}: {}: {:.3} usec per iteration ({:.3?} per call)",
                    w.label, t.per_iter, t.per_call
                );
                runs[i].push(t);
            }
        }
        Rounds(runs)
    }

    /// Sends `n` commands in pipelines of `batch`, keeping one pipeline in flight while the
    /// next is encoded and sent (so client and server work at once on 2 cores), and hands
    /// every reply, in order, to `reply(i, r)`. `encode(range, buf)` appends the commands
    /// for `range` to `buf`. Stops sending once `budget` is spent: returns how many
    /// commands were sent (and answered) — `n` unless the budget ran out.
    pub fn pipeline(
        conn: &mut resp::Conn,
        n: usize,
        batch: usize,
        budget: Duration,
        mut encode: impl FnMut(std::ops::Range<usize>, &mut Vec<u8>),
        mut reply: impl FnMut(usize, Reply),
    ) -> usize {
        let started = Instant::now();
        let mut buf = Vec::new();
        let mut in_flight: Option<std::ops::Range<usize>> = None;
        let mut next = 0;
        loop {
            let send = next < n && started.elapsed() < budget;
            if send {
                let range = next..(next + batch).min(n);
                buf.clear();
                encode(range.clone(), &mut buf);
                conn.send_raw(&buf).expect("send");
                next = range.end;
                if let Some(prev) = in_flight.replace(range) {
                    for i in prev {
                        reply(i, conn.read().expect("read"));
                    }
                }
            } else {
                if let Some(prev) = in_flight.take() {
                    for i in prev {
                        reply(i, conn.read().expect("read"));
                    }
                }
                return next;
            }
        }
    }

    /// A uuid-like 36-character id (`8-4-4-4-12` hex digits), the same for the same `i`
    /// and distinct for distinct `i` (a bijective mix of `i` fills the first 60 bits).
    pub fn uuidish(i: u64) -> String {
        let mix = |mut z: u64| {
            // splitmix64's finalizer: a bijection on u64.
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let a = mix(i);
        let b = mix(a ^ 0x9e37_79b9_7f4a_7c15);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            (a >> 4) & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// `used_memory` from `INFO memory`, in bytes.
    pub fn used_memory(conn: &mut redis::Connection) -> f64 {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(conn)
            .expect("INFO memory");
        super::common::info_value(&info, "used_memory")
            .and_then(|v| v.parse().ok())
            .expect("used_memory")
    }

    /// `MEMORY USAGE key SAMPLES 0` (every element counted, not a sample), in bytes.
    pub fn memory_usage(conn: &mut redis::Connection, key: &str) -> f64 {
        let n: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query(conn)
            .expect("MEMORY USAGE");
        n as f64
    }

    /// `SCRIPT LOAD src`: the script's sha, for EVALSHA.
    pub fn load_script(conn: &mut redis::Connection, src: &str) -> String {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(src)
            .query(conn)
            .expect("SCRIPT LOAD")
    }

    /// The smallest of some numbers (NaN if none).
    pub fn min(xs: &[f64]) -> f64 {
        xs.iter().copied().fold(f64::NAN, f64::min)
    }

    /// The `q`-quantile (0..=1) of sorted numbers, nearest-rank method.
    pub fn percentile(sorted: &[f64], q: f64) -> f64 {
        let rank = (q * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// `RESV.INFO key` as (holder, waiters); None when the key is free.
    pub fn resv_info(conn: &mut redis::Connection, key: &str) -> Option<(String, i64)> {
        let v: redis::Value = redis::cmd("RESV.INFO")
            .arg(key)
            .query(conn)
            .expect("RESV.INFO");
        // RESP2 turns the map into a flat [k1, v1, k2, v2…] array.
        let fields: Vec<redis::Value> = match v {
            redis::Value::Nil => return None,
            redis::Value::Array(a) => a,
            redis::Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            other => panic!("unexpected RESV.INFO reply {other:?}"),
        };
        let mut holder = String::new();
        let mut waiters = -1;
        for kv in fields.chunks(2) {
            match (&kv[0], kv.get(1)) {
                (redis::Value::BulkString(k), Some(redis::Value::BulkString(v)))
                    if k == b"holder" =>
                {
                    holder = String::from_utf8_lossy(v).into_owned();
                }
                (redis::Value::BulkString(k), Some(redis::Value::Int(n))) if k == b"waiters" => {
                    waiters = *n;
                }
                _ => {}
            }
        }
        Some((holder, waiters))
    }

    /// Polls `RESV.INFO key` until `holder` holds it with at least one waiter queued: true.
    /// False as soon as someone else holds it or it is free (or after 5 s).
    pub fn wait_queued(conn: &mut redis::Connection, key: &str, holder: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match resv_info(conn, key) {
                Some((h, w)) if h == holder && w >= 1 => return true,
                Some((h, _)) if h == holder => {}
                _ => return false,
            }
        }
        false
    }

    /// What a [`Waiter`] got: when its `RESV.LOCK … BLOCK` reply arrived, and the token.
    pub struct Grant {
        pub at: Instant,
        pub token: Option<i64>,
    }

    /// A thread with its own connection that, when told, sends
    /// `RESV.LOCK key holder ttl BLOCK block`, notes the instant its reply arrives, releases
    /// the lock if it got it, and only then reports the [`Grant`] (so the key is free again
    /// when the caller hears back).
    pub struct Waiter {
        requests: Option<Sender<(String, String, u64, u64)>>,
        grants: Receiver<Grant>,
        thread: Option<JoinHandle<()>>,
    }

    impl Waiter {
        pub fn spawn(server: &Server) -> Waiter {
            let mut conn = server.conn();
            let (req_tx, req_rx) = channel::<(String, String, u64, u64)>();
            let (grant_tx, grant_rx) = channel();
            let thread = std::thread::spawn(move || {
                for (key, holder, ttl, block) in req_rx {
                    let token: Option<i64> = redis::cmd("RESV.LOCK")
                        .arg(&key)
                        .arg(&holder)
                        .arg(ttl)
                        .arg("BLOCK")
                        .arg(block)
                        .query(&mut conn)
                        .expect("waiter's RESV.LOCK");
                    let at = Instant::now();
                    if token.is_some() {
                        let _: i64 = redis::cmd("RESV.RELEASE")
                            .arg(&key)
                            .arg(&holder)
                            .query(&mut conn)
                            .expect("waiter's RESV.RELEASE");
                    }
                    if grant_tx.send(Grant { at, token }).is_err() {
                        break;
                    }
                }
            });
            Waiter {
                requests: Some(req_tx),
                grants: grant_rx,
                thread: Some(thread),
            }
        }

        /// Tells the thread to send its blocking lock (returns at once).
        pub fn lock(&self, key: &str, holder: &str, ttl_ms: u64, block_ms: u64) {
            self.requests
                .as_ref()
                .unwrap()
                .send((key.to_string(), holder.to_string(), ttl_ms, block_ms))
                .expect("waiter thread is gone (see its panic above)");
        }

        /// Waits for the outcome of the last [`Waiter::lock`].
        pub fn grant(&self) -> Grant {
            self.grants
                .recv_timeout(Duration::from_secs(30))
                .expect("waiter thread did not report (see its panic above, if any)")
        }
    }

    impl Drop for Waiter {
        fn drop(&mut self) {
            self.requests.take(); // ends the thread's loop
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
/// RESV: locks with fencing tokens and FIFO blocking waiters.
mod resv {
    use std::time::{Duration, Instant};

    use super::common::{Server, ServerOptions};
    use super::report::{Kind, Report, Row, Target};
    use super::resp::{self, Reply};
    use super::util::{
        self, args, cmdstats, is_int, is_nil, is_ok, is_one, measure, min, percentile, refs,
        reset_stats, Args, Check, ServerTime, Waiter, Workload,
    };

    const FAMILY: &str = "RESV";

    /// A script-based lock as lock libraries send it: `SET NX PX` inside a script…
    const LUA_LOCK: &str = "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])";
    /// …and the compare-and-delete unlock.
    const LUA_UNLOCK: &str =
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

    /// (a) Server time per lock + release, from `INFO commandstats`, against `SET NX PX` +
    /// `DEL` and against the Lua lock/unlock scripts, all on one server.
    ///
    /// Each workload runs `ITERS` lock+unlock pairs on one key, pipelined 100 pairs at a
    /// time (the client's speed does not matter: only the server's time per call counts).
    /// It runs `ROUNDS` times, interleaved with the others, after a `CONFIG RESETSTAT`
    /// each time; each workload's best (lowest) round is reported. Noise on this 2-core
    /// machine (client and server share it) only ever adds time, so the minimum is the
    /// steadiest estimate; rounds vary by ±20% from one another.
    ///
    /// Lua accounting (checked on Redis 7.0.15): commands a script runs with `redis.call`
    /// are also counted under their own entries (`cmdstat_set`, `cmdstat_get`,
    /// `cmdstat_del`), and `cmdstat_evalsha`'s usec already covers the whole script run,
    /// those inner calls included. So the Lua baseline is `cmdstat_evalsha` alone; adding
    /// the inner entries would count them twice.
    ///
    /// A fourth, informational workload shows the floor of any module command here:
    /// `RESV.INFO` on a free key (parse, open an empty key, reply nil) against `GET` on a
    /// missing key, so the gap above that floor is visibly corral's own work.
    pub fn server_time(report: &mut Report) {
        const ITERS: usize = 50_000;
        const ROUNDS: usize = 5;

        let srv = Server::start();
        let mut admin = srv.conn();
        let mut conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
        let load = |admin: &mut redis::Connection, src: &str| -> String {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(src)
                .query(admin)
                .expect("SCRIPT LOAD")
        };
        let lock_sha = load(&mut admin, LUA_LOCK);
        let unlock_sha = load(&mut admin, LUA_UNLOCK);

        let workloads = [
            Workload::new(
                "corral",
                vec![
                    (args(&["RESV.LOCK", "k", "holder", "10000"]), is_int),
                    (args(&["RESV.RELEASE", "k", "holder"]), is_one),
                ],
                &["resv.lock", "resv.release"],
            ),
            Workload::new(
                "SET NX PX + DEL",
                vec![
                    (args(&["SET", "k", "holder", "NX", "PX", "10000"]), is_ok),
                    (args(&["DEL", "k"]), is_one),
                ],
                &["set", "del"],
            ),
            Workload::new(
                "Lua lock + unlock (EVALSHA)",
                vec![
                    (
                        args(&["EVALSHA", &lock_sha, "1", "k", "holder", "10000"]),
                        is_ok,
                    ),
                    (args(&["EVALSHA", &unlock_sha, "1", "k", "holder"]), is_one),
                ],
                &["evalsha"],
            ),
            Workload::new(
                "floor",
                vec![
                    (args(&["RESV.INFO", "free"]), is_nil),
                    (args(&["GET", "free"]), is_nil),
                ],
                &["resv.info", "get"],
            ),
        ];

        // Warm up (allocator, dict sizes, script cache, CPU frequency), unmeasured.
        for w in &workloads {
            measure(&mut conn, &mut admin, w, ITERS / 10);
        }
        let mut runs: Vec<Vec<ServerTime>> = workloads.iter().map(|_| Vec::new()).collect();
        for round in 0..ROUNDS {
            for (i, w) in workloads.iter().enumerate() {
                let t = measure(&mut conn, &mut admin, w, ITERS);
                eprintln!(
                    "bench:    round {round}: {}: {:.3} usec per iteration ({:.3?} per call)",
                    w.label, t.per_iter, t.per_call
                );
                runs[i].push(t);
            }
        }
        // Best round of workload i: per iteration, and per call of its j-th stat.
        let iter = |i: usize| min(&runs[i].iter().map(|t| t.per_iter).collect::<Vec<_>>());
        let call =
            |i: usize, j: usize| min(&runs[i].iter().map(|t| t.per_call[j]).collect::<Vec<_>>());

        let pair_name = "server time, LOCK + RELEASE (per pair)";
        let pair_op = "RESV.LOCK + RESV.RELEASE (per pair)";
        report.add(
            Row::new(FAMILY, pair_name, iter(0), "us")
                .vs(workloads[1].label, iter(1))
                .target(Target::RatioAtMost(1.5))
                .versus(pair_op, Kind::Native, "SET NX PX + DEL"),
        );
        report.add(
            Row::new(FAMILY, pair_name, iter(0), "us")
                .vs(workloads[2].label, iter(2))
                .target(Target::RatioAtMost(0.5))
                .versus(pair_op, Kind::Lua, "Lua lock + unlock"),
        );
        report.add(
            Row::new(FAMILY, "server time, RESV.LOCK alone", call(0, 0), "us")
                .vs("SET NX PX", call(1, 0))
                .versus("RESV.LOCK alone", Kind::Native, "SET NX PX"),
        );
        report.add(
            Row::new(FAMILY, "server time, RESV.RELEASE alone", call(0, 1), "us")
                .vs("DEL", call(1, 1))
                .versus("RESV.RELEASE alone", Kind::Native, "DEL"),
        );
        report.add(
            Row::new(
                FAMILY,
                "server time, RESV.INFO on a free key (module command floor)",
                call(3, 0),
                "us",
            )
            .vs("GET on a missing key", call(3, 1)),
        );
    }

    /// (b) Client-side throughput of pipelined `RESV.LOCK` on distinct keys against
    /// `SET NX PX`: 200,000 commands each, in pipelines of 100, keys `k0`…`k199999`.
    ///
    /// The two run side by side on one server, interleaved pipeline by pipeline: corral's
    /// on a connection in db 0, SET's on one in db 1 (FLUSHALL before each round, so both
    /// start from an empty keyspace and grow alike). Each pipeline is timed on its own and
    /// the times are summed per side, so a noisy moment on this shared 2-core machine hits
    /// both sides alike (sequential runs gave ratios from 0.53 to 0.84 from one run to the
    /// next). Commands are encoded before the clock starts. Of `ROUNDS` rounds, the one
    /// with the median ratio is reported.
    ///
    /// An informational row gives the server time per call in that round (commandstats),
    /// to tell the server's share of a gap from the rest (parsing, replies, syscalls).
    pub fn pipelined_throughput(report: &mut Report) {
        const OPS: usize = 200_000;
        const BATCH: usize = 100;
        const ROUNDS: usize = 5;

        let srv = Server::start();
        let mut admin = srv.conn();
        let mut corral_conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
        let mut set_conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
        let selected = set_conn.call(&[b"SELECT", b"1"]).expect("SELECT 1");
        assert!(is_ok(&selected), "SELECT 1: {selected:?}");

        // Pre-encoded pipelines, one Vec per batch.
        let encode_all = |cmd: &dyn Fn(&str) -> Args| -> Vec<Vec<u8>> {
            (0..OPS / BATCH)
                .map(|b| {
                    let mut buf = Vec::new();
                    for i in b * BATCH..(b + 1) * BATCH {
                        resp::encode(&mut buf, &refs(&cmd(&format!("k{i}"))));
                    }
                    buf
                })
                .collect()
        };
        let corral = encode_all(&|k| args(&["RESV.LOCK", k, "holder", "60000"]));
        let set = encode_all(&|k| args(&["SET", k, "holder", "NX", "PX", "60000"]));

        // Sends one pipeline, reads its replies (each must pass `ok`); returns the seconds.
        let pipeline = |conn: &mut resp::Conn, batch: &[u8], ok: Check| -> f64 {
            let t = Instant::now();
            conn.send_raw(batch).expect("send");
            for _ in 0..BATCH {
                let r = conn.read().expect("read");
                assert!(ok(&r), "unexpected reply {r:?}");
            }
            t.elapsed().as_secs_f64()
        };

        struct Round {
            corral_ops: f64,
            set_ops: f64,
            /// Server usec per call (commandstats) of RESV.LOCK and of SET.
            corral_usec: f64,
            set_usec: f64,
        }
        let mut rounds = Vec::new();
        for round in 0..ROUNDS {
            let _: () = redis::cmd("FLUSHALL").query(&mut admin).expect("FLUSHALL");
            reset_stats(&mut admin);
            let (mut corral_s, mut set_s) = (0.0, 0.0);
            for (c, s) in corral.iter().zip(&set) {
                corral_s += pipeline(&mut corral_conn, c, is_int);
                set_s += pipeline(&mut set_conn, s, is_ok);
            }
            let stats = cmdstats(&mut admin);
            let usec = |name: &str| {
                let (calls, usec) = stats.get(name).copied().unwrap_or((0, 0));
                assert_eq!(calls, OPS as u64, "cmdstat_{name} calls");
                usec as f64 / calls as f64
            };
            let r = Round {
                corral_ops: OPS as f64 / corral_s,
                set_ops: OPS as f64 / set_s,
                corral_usec: usec("resv.lock"),
                set_usec: usec("set"),
            };
            eprintln!(
                "bench:    round {round}: RESV.LOCK {:.0} ops/s ({:.3} usec/call), \
                 SET NX PX {:.0} ops/s ({:.3} usec/call): {:.2}x",
                r.corral_ops,
                r.corral_usec,
                r.set_ops,
                r.set_usec,
                r.corral_ops / r.set_ops
            );
            rounds.push(r);
        }
        rounds.sort_by(|a, b| (a.corral_ops / a.set_ops).total_cmp(&(b.corral_ops / b.set_ops)));
        let r = &rounds[rounds.len() / 2];

        report.add(
            Row::new(
                FAMILY,
                "pipelined RESV.LOCK, distinct keys, 100 per pipeline",
                r.corral_ops,
                "ops/s",
            )
            .vs("SET NX PX", r.set_ops)
            .target(Target::RatioAtLeast(0.8)),
        );
        report.add(
            Row::new(
                FAMILY,
                "server time per RESV.LOCK in that run (distinct keys)",
                r.corral_usec,
                "us",
            )
            .vs("SET NX PX", r.set_usec),
        );
    }

    /// (c) How soon a blocked waiter hears of its grant after the holder's RELEASE.
    ///
    /// Each iteration: the holder locks `k`; a waiter thread (own connection) sends
    /// `RESV.LOCK k w 10000 BLOCK 5000`; once `RESV.INFO` shows it queued, the holder notes
    /// t0 and sends RESV.RELEASE; the waiter notes when its reply arrives (t1) and releases.
    /// Latency = t1 − t0, on this process's monotonic clock. It includes the RELEASE's trip
    /// to the server, the hand-off and the grant's trip back.
    pub fn wake_after_release(report: &mut Report) {
        const ITERATIONS: usize = 500;
        let srv = Server::start();
        let mut holder = srv.conn();
        let waiter = Waiter::spawn(&srv);
        let mut lat_ms = Vec::with_capacity(ITERATIONS);
        for _ in 0..ITERATIONS {
            let t: Option<i64> = redis::cmd("RESV.LOCK")
                .arg("k")
                .arg("h")
                .arg(10_000)
                .query(&mut holder)
                .expect("holder's RESV.LOCK");
            assert!(t.is_some(), "holder could not lock a free key");
            waiter.lock("k", "w", 10_000, 5_000);
            assert!(
                util::wait_queued(&mut holder, "k", "h"),
                "the waiter never showed up in RESV.INFO"
            );
            let t0 = Instant::now();
            let _: i64 = redis::cmd("RESV.RELEASE")
                .arg("k")
                .arg("h")
                .query(&mut holder)
                .expect("holder's RESV.RELEASE");
            let grant = waiter.grant();
            assert!(grant.token.is_some(), "the waiter was not granted the lock");
            lat_ms.push(grant.at.duration_since(t0).as_secs_f64() * 1e3);
        }
        lat_ms.sort_by(f64::total_cmp);
        let name = format!("wake latency after RELEASE (n={ITERATIONS})");
        report.add(Row::new(
            FAMILY,
            &format!("{name}, p50"),
            percentile(&lat_ms, 0.5),
            "ms",
        ));
        report.add(
            Row::new(
                FAMILY,
                &format!("{name}, p99"),
                percentile(&lat_ms, 0.99),
                "ms",
            )
            .target(Target::AtMost(2.0)),
        );
    }

    /// (d) How soon a blocked waiter hears of its grant after the holder's lease lapses.
    ///
    /// Each iteration: note t_sent, then the holder locks `k` for 30 ms; the waiter thread
    /// blocks on `k`; the lease lapses and the waiter is granted at t1 (reply arrival).
    /// The server computes the deadline from its clock when it runs the LOCK, which is after
    /// t_sent, so t_sent + 30 ms is a lower bound of the real deadline and
    /// latency = t1 − (t_sent + 30 ms) is an upper bound of the real lapse-to-grant delay
    /// (it also includes the LOCK's trip to the server, and up to 1 ms of the server's
    /// millisecond clock). Iterations where the waiter was not yet queued when the lease
    /// lapsed (a scheduling hiccup) are discarded and counted.
    pub fn wake_after_deadline(report: &mut Report) {
        const ITERATIONS: usize = 300;
        const TTL_MS: u64 = 30;
        let srv = Server::start();
        let mut holder = srv.conn();
        let waiter = Waiter::spawn(&srv);
        let mut lat_ms = Vec::with_capacity(ITERATIONS);
        let mut discarded = 0;
        for _ in 0..ITERATIONS {
            let t_sent = Instant::now();
            let t: Option<i64> = redis::cmd("RESV.LOCK")
                .arg("k")
                .arg("h")
                .arg(TTL_MS)
                .query(&mut holder)
                .expect("holder's RESV.LOCK");
            assert!(t.is_some(), "holder could not lock a free key");
            waiter.lock("k", "w", 10_000, 5_000);
            let queued = util::wait_queued(&mut holder, "k", "h");
            let grant = waiter.grant();
            assert!(grant.token.is_some(), "the waiter was not granted the lock");
            if !queued {
                discarded += 1;
                continue;
            }
            let deadline = t_sent + Duration::from_millis(TTL_MS);
            let ms = if grant.at >= deadline {
                grant.at.duration_since(deadline).as_secs_f64() * 1e3
            } else {
                -(deadline.duration_since(grant.at).as_secs_f64() * 1e3)
            };
            lat_ms.push(ms);
        }
        if discarded > 0 {
            eprintln!("bench:    {discarded} iterations discarded (waiter queued too late)");
        }
        lat_ms.sort_by(f64::total_cmp);
        let name = format!("wake latency after lease lapse (n={})", lat_ms.len());
        report.add(Row::new(
            FAMILY,
            &format!("{name}, p50"),
            percentile(&lat_ms, 0.5),
            "ms",
        ));
        report.add(
            Row::new(
                FAMILY,
                &format!("{name}, p99"),
                percentile(&lat_ms, 0.99),
                "ms",
            )
            .target(Target::AtMost(5.0)),
        );
    }

    /// (e) 10,000 clients blocked on one key are all served, in arrival order.
    ///
    /// One holder takes `big`. 10,000 raw sockets each send `RESV.LOCK big w<i> 60000
    /// BLOCK 0`, one at a time: socket i+1 sends only once `RESV.INFO` counts i+1 waiters,
    /// so the queue order is known to be 0, 1, 2…. Then the holder releases, and for each i
    /// in order we read socket i's reply (a token; 10 s read timeout), check that tokens
    /// strictly increase, and release w<i> on the control connection, which hands the lock
    /// to the next waiter. A waiter served out of turn would leave socket i silent: the read
    /// times out, and RESV.INFO tells who got the lock instead.
    pub fn many_waiters(report: &mut Report) {
        const CLIENTS: usize = 10_000;
        let srv = Server::start_with(ServerOptions::new().config("maxclients", "20000"));
        let mut ctl = srv.conn();

        // Redis lowers maxclients to what its fd limit allows (scripts/bench raises it).
        let cfg: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxclients")
            .query(&mut ctl)
            .expect("CONFIG GET maxclients");
        let maxclients: usize = cfg.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        if maxclients < CLIENTS + 100 {
            report.add(
                Row::flag(
                    FAMILY,
                    &format!(
                        "10,000 blocked clients: not run, server maxclients is {maxclients} \
                         (raise the fd limit: ulimit -n)"
                    ),
                    false,
                )
                .target(Target::Yes),
            );
            return;
        }

        let first: Option<i64> = redis::cmd("RESV.LOCK")
            .arg("big")
            .arg("h")
            .arg(60_000)
            .query(&mut ctl)
            .expect("holder's RESV.LOCK");
        let mut last_token = first.expect("holder could not lock a free key");

        let t_queue = Instant::now();
        let mut socks = Vec::with_capacity(CLIENTS);
        for i in 0..CLIENTS {
            let mut c = resp::Conn::connect(srv.port(), 64)
                .unwrap_or_else(|e| panic!("connecting socket {i}: {e} (fd limit?)"));
            c.set_read_timeout(Duration::from_secs(10))
                .expect("timeout");
            let holder = format!("w{i}");
            c.send(&[
                b"RESV.LOCK",
                b"big",
                holder.as_bytes(),
                b"60000",
                b"BLOCK",
                b"0",
            ])
            .expect("send");
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let (_, waiters) = util::resv_info(&mut ctl, "big").expect("big is held");
                if waiters == i as i64 + 1 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "waiter {i} was not queued within 5 s"
                );
            }
            socks.push(c);
        }
        let queue_s = t_queue.elapsed().as_secs_f64();
        eprintln!("bench:    {CLIENTS} waiters queued in {queue_s:.1} s");

        let t0 = Instant::now();
        let _: i64 = redis::cmd("RESV.RELEASE")
            .arg("big")
            .arg("h")
            .query(&mut ctl)
            .expect("holder's RESV.RELEASE");
        let mut served = 0;
        let mut in_order = true;
        for (i, c) in socks.iter_mut().enumerate() {
            match c.read() {
                Ok(Reply::Int(token)) => {
                    in_order &= token > last_token;
                    last_token = token;
                    served += 1;
                }
                other => {
                    let now = util::resv_info(&mut ctl, "big");
                    eprintln!("bench:    waiter {i} got {other:?}; RESV.INFO big is now {now:?}");
                    if now.is_some_and(|(h, _)| h != format!("w{i}")) {
                        in_order = false;
                    }
                    break;
                }
            }
            let r: i64 = redis::cmd("RESV.RELEASE")
                .arg("big")
                .arg(format!("w{i}"))
                .query(&mut ctl)
                .unwrap_or_else(|e| panic!("RESV.RELEASE big w{i}: {e}"));
            assert_eq!(r, 1, "RESV.RELEASE big w{i}");
        }
        let total_s = t0.elapsed().as_secs_f64();
        let all = served == CLIENTS;

        let name = "10,000 clients blocked on one key";
        report.add(Row::flag(FAMILY, &format!("{name}: all served"), all).target(Target::Yes));
        report.add(
            Row::flag(
                FAMILY,
                &format!("{name}: served in FIFO order"),
                all && in_order,
            )
            .target(Target::Yes),
        );
        report.add(Row::new(
            FAMILY,
            &format!("{name}: time to serve all (each grant, then its RELEASE)"),
            total_s,
            "s",
        ));
        report.add(Row::new(
            FAMILY,
            &format!("{name}: time to queue all (connect, LOCK BLOCK, confirm)"),
            queue_s,
            "s",
        ));
    }

    /// (f) Memory of a held lock against a string with a TTL holding the same holder name.
    ///
    /// `MEMORY USAGE` of one key of each (same key length) is the target row. Below it, an
    /// informational row: growth of `used_memory` per key over 100,000 keys of each, which
    /// also counts what `MEMORY USAGE` cannot see (the expires dict for strings; the module's
    /// own side tables, e.g. its deadline schedule, for corral).
    pub fn memory(report: &mut Report) {
        const HOLDER: &str = "worker-123456789";
        const KEYS: usize = 100_000;
        let srv = Server::start();
        let mut c = srv.conn();

        let t: Option<i64> = redis::cmd("RESV.LOCK")
            .arg("mem:a")
            .arg(HOLDER)
            .arg(60_000)
            .query(&mut c)
            .expect("RESV.LOCK");
        assert!(t.is_some());
        let _: () = redis::cmd("SET")
            .arg("mem:b")
            .arg(HOLDER)
            .arg("PX")
            .arg(60_000)
            .query(&mut c)
            .expect("SET");
        let usage = |c: &mut redis::Connection, key: &str| -> f64 {
            let n: i64 = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .query(c)
                .expect("MEMORY USAGE");
            n as f64
        };
        let (lock_bytes, set_bytes) = (usage(&mut c, "mem:a"), usage(&mut c, "mem:b"));
        report.add(
            Row::new(FAMILY, "MEMORY USAGE of a held lock", lock_bytes, "bytes")
                .vs("SET key holder PX", set_bytes)
                .target(Target::RatioAtMost(2.0)),
        );

        // used_memory growth per key over many keys (FLUSHALL before each kind).
        let mut conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
        let mut per_key = |cmd: &dyn Fn(&str) -> Args| -> f64 {
            let _: () = redis::cmd("FLUSHALL").query(&mut c).expect("FLUSHALL");
            let used = |c: &mut redis::Connection| -> f64 {
                let info: String = redis::cmd("INFO").arg("memory").query(c).expect("INFO");
                super::common::info_value(&info, "used_memory")
                    .and_then(|v| v.parse().ok())
                    .expect("used_memory")
            };
            let before = used(&mut c);
            for b in (0..KEYS).step_by(1000) {
                let mut buf = Vec::new();
                for i in b..b + 1000 {
                    resp::encode(&mut buf, &refs(&cmd(&format!("mem:{i:08}"))));
                }
                conn.send_raw(&buf).expect("send");
                for _ in 0..1000 {
                    let r = conn.read().expect("read");
                    assert!(!matches!(r, Reply::Error(_)), "unexpected reply {r:?}");
                }
            }
            (used(&mut c) - before) / KEYS as f64
        };
        let lock_per_key = per_key(&|k| args(&["RESV.LOCK", k, HOLDER, "60000"]));
        let set_per_key = per_key(&|k| args(&["SET", k, HOLDER, "PX", "60000"]));
        report.add(
            Row::new(
                FAMILY,
                "used_memory per held lock (100,000 keys)",
                lock_per_key,
                "bytes",
            )
            .vs("SET key holder PX", set_per_key),
        );
    }
}

// ---------------------------------------------------------------------------------------
/// SEM: counting semaphores whose permits expire, against the sorted-set scripts that
/// passbuddy and redis-semaphore send.
mod sem {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::common::Server;
    use super::report::{num, Kind, Report, Row, Target};
    use super::resp;
    use super::util::{self, args, best_of, is_int, is_one, uuidish, Workload};

    const FAMILY: &str = "SEM";

    /// Permits are held for 10 minutes: nothing lapses while a section runs.
    const TTL_MS: u64 = 600_000;
    /// The capacity every ACQUIRE (and the Lua script) passes: never reached here, so every
    /// acquire of a new holder is granted.
    const CAPACITY: u64 = 10_000_000;
    /// Holder ids `uuidish(FRESH + k)` are never among a key's standing holders
    /// (`uuidish(0..n)`): the measured acquires take new holders.
    const FRESH: u64 = 1 << 40;
    /// How many distinct new holders a measured workload cycles through.
    const CYCLE: usize = 10_000;

    /// The sorted-set acquire passbuddy and redis-semaphore send (as EVALSHA): drop the
    /// holders whose expiry has passed, count the rest, add the holder with its expiry if
    /// there is room. The client passes the time, as those libraries do:
    /// `ARGV = now (ms), capacity, now + ttl, holder`. Their release is a plain `ZREM`.
    const LUA_ACQUIRE: &str = "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) \
         if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then \
         redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4]) return 1 end return 0";

    /// This process's clock in ms, as a library would pass it to its script.
    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// Gives `key` `n` holders (`uuidish(0..n)`), with pipelined `SEM.ACQUIRE`s.
    fn fill(conn: &mut resp::Conn, key: &str, n: usize) {
        let (cap, ttl) = (CAPACITY.to_string(), TTL_MS.to_string());
        let sent = util::pipeline(
            conn,
            n,
            1000,
            Duration::MAX,
            |range, buf| {
                for i in range {
                    let h = uuidish(i as u64);
                    let cmd = args(&["SEM.ACQUIRE", key, &h, &cap, &ttl]);
                    resp::encode(buf, &util::refs(&cmd));
                }
            },
            |i, r| assert!(is_int(&r), "SEM.ACQUIRE {key} holder {i}: {r:?}"),
        );
        assert_eq!(sent, n);
    }

    /// The same holders as [`fill`], as members of a sorted set scored by their expiry.
    fn fill_zset(conn: &mut resp::Conn, key: &str, n: usize) {
        let expiry = (now_ms() + TTL_MS).to_string();
        let sent = util::pipeline(
            conn,
            n,
            1000,
            Duration::MAX,
            |range, buf| {
                for i in range {
                    let h = uuidish(i as u64);
                    resp::encode(buf, &util::refs(&args(&["ZADD", key, &expiry, &h])));
                }
            },
            |i, r| assert!(is_one(&r), "ZADD {key} member {i}: {r:?}"),
        );
        assert_eq!(sent, n);
    }

    /// `SEM.ACQUIRE` of a new holder, then its `SEM.RELEASE`, on `key`: a new holder each
    /// iteration, so the key keeps its size.
    fn acquire_release(label: &'static str, key: &str) -> Workload {
        let (cap, ttl) = (CAPACITY.to_string(), TTL_MS.to_string());
        let iterations = (0..CYCLE)
            .map(|k| {
                let h = uuidish(FRESH + k as u64);
                vec![
                    (args(&["SEM.ACQUIRE", key, &h, &cap, &ttl]), is_int as _),
                    (args(&["SEM.RELEASE", key, &h]), is_one as _),
                ]
            })
            .collect();
        Workload::cycling(label, iterations, &["sem.acquire", "sem.release"])
    }

    /// (a) SEM.ACQUIRE's server time at 100,000 holders on one key against 10 holders
    /// (O(log n): at most 1.5x), with 1,000 and 10,000 in between for the trend.
    ///
    /// What is measured: the acquire of a *new* holder (a grant: admission, then an insert
    /// into the holder map and the expiry-ordered index), then its release (two removals),
    /// so the key keeps its size from one iteration to the next. That is the path whose cost
    /// depends on the number of holders; acquire/renew of a standing holder would only move
    /// one entry in the index and skip admission. New holders cycle through 10,000 distinct
    /// ids, so lookups land all over the holder map as they do in real use (one repeated id
    /// would keep its bucket in cache). Standing holders are built with pipelined
    /// `SEM.ACQUIRE`s, TTL 10 minutes (nothing lapses while the section runs). Each size is
    /// its own key on one server; the workloads run interleaved, 5 rounds after a warm-up,
    /// best round reported.
    pub fn scaling(report: &mut Report) {
        const SIZES: [(&str, usize); 4] = [
            ("sem:10", 10),
            ("sem:1k", 1_000),
            ("sem:10k", 10_000),
            ("sem:100k", 100_000),
        ];
        const LABELS: [&str; 4] = [
            "10 holders",
            "1,000 holders",
            "10,000 holders",
            "100,000 holders",
        ];
        const ITERS: usize = 50_000;
        const ROUNDS: usize = 5;

        let srv = Server::start();
        let mut admin = srv.conn();
        let mut conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
        for (key, n) in SIZES {
            fill(&mut conn, key, n);
        }
        let workloads: Vec<Workload> = SIZES
            .iter()
            .zip(LABELS)
            .map(|((key, _), label)| acquire_release(label, key))
            .collect();
        let work: Vec<(&Workload, usize)> = workloads.iter().map(|w| (w, ITERS)).collect();
        let best = best_of(&mut conn, &mut admin, &work, ROUNDS);

        let at = |i: usize| format!("{} on one key", LABELS[i]);
        // For the chart: scale i as (label, holders).
        let scale = |i: usize| (LABELS[i], SIZES[i].1 as f64);
        const ACQUIRE: &str = "SEM.ACQUIRE of a new holder";
        report.add(
            Row::new(
                FAMILY,
                &format!("server time, SEM.ACQUIRE of a new holder, {}", at(3)),
                best.call(3, 0),
                "us",
            )
            .vs(&at(0), best.call(0, 0))
            .target(Target::RatioAtMost(1.5))
            .scale(ACQUIRE, scale(3), scale(0)),
        );
        for i in [1, 2] {
            report.add(
                Row::new(
                    FAMILY,
                    &format!("server time, SEM.ACQUIRE of a new holder, {}", at(i)),
                    best.call(i, 0),
                    "us",
                )
                .vs(&at(0), best.call(0, 0))
                .scale(ACQUIRE, scale(i), scale(0)),
            );
        }
        report.add(
            Row::new(
                FAMILY,
                &format!("server time, SEM.RELEASE, {}", at(3)),
                best.call(3, 1),
                "us",
            )
            .vs(&at(0), best.call(0, 1))
            .scale("SEM.RELEASE", scale(3), scale(0)),
        );
    }

    /// (b) SEM.ACQUIRE + SEM.RELEASE against the sorted-set scripts, at 1,000 holders.
    ///
    /// corral: `SEM.ACQUIRE` of a new holder + its `SEM.RELEASE` on a semaphore with 1,000
    /// standing holders. Baseline: the same on a sorted set of the same 1,000 holders
    /// (skiplist-encoded, as any set over 128 members is), acquire = `EVALSHA` of
    /// [`LUA_ACQUIRE`], release = `ZREM`. The script's `now` is this process's clock when
    /// the pipelines are encoded; every member expires 10 minutes later, so its
    /// `ZREMRANGEBYSCORE` removes nothing, as in a healthy semaphore. Server time from
    /// `INFO commandstats`: `cmdstat_evalsha` (which covers the script's inner calls; they
    /// are also counted under their own names, which are left out) + `cmdstat_zrem`,
    /// against `cmdstat_sem.acquire` + `cmdstat_sem.release`. Interleaved, 5 rounds, best
    /// round.
    pub fn vs_lua(report: &mut Report) {
        const HOLDERS: usize = 1_000;
        const ITERS: usize = 50_000;
        const ROUNDS: usize = 5;

        let srv = Server::start();
        let mut admin = srv.conn();
        let mut conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
        fill(&mut conn, "sem", HOLDERS);
        fill_zset(&mut conn, "zsem", HOLDERS);
        let sha = util::load_script(&mut admin, LUA_ACQUIRE);

        let corral = acquire_release("corral", "sem");
        let now = now_ms();
        let (now_s, cap, expiry) = (
            now.to_string(),
            CAPACITY.to_string(),
            (now + TTL_MS).to_string(),
        );
        let lua_iterations = (0..CYCLE)
            .map(|k| {
                let h = uuidish(FRESH + k as u64);
                vec![
                    (
                        args(&["EVALSHA", &sha, "1", "zsem", &now_s, &cap, &expiry, &h]),
                        is_one as _,
                    ),
                    (args(&["ZREM", "zsem", &h]), is_one as _),
                ]
            })
            .collect();
        let lua = Workload::cycling(
            "Lua sorted-set acquire (EVALSHA) + ZREM",
            lua_iterations,
            &["evalsha", "zrem"],
        );
        let best = best_of(
            &mut conn,
            &mut admin,
            &[(&corral, ITERS), (&lua, ITERS)],
            ROUNDS,
        );

        let holders = num(HOLDERS as f64);
        report.add(
            Row::new(
                FAMILY,
                &format!(
                    "server time, SEM.ACQUIRE + SEM.RELEASE of a new holder, {holders} holders (per pair)"
                ),
                best.iter(0),
                "us",
            )
            .vs(lua.label, best.iter(1))
            .target(Target::RatioAtMost(0.33))
            .versus(
                &format!("SEM.ACQUIRE + SEM.RELEASE, {holders} holders (per pair)"),
                Kind::Lua,
                "Lua sorted-set acquire + ZREM",
            ),
        );
        report.add(
            Row::new(
                FAMILY,
                "server time, SEM.ACQUIRE alone",
                best.call(0, 0),
                "us",
            )
            .vs("EVALSHA of the sorted-set acquire", best.call(1, 0))
            .versus("SEM.ACQUIRE alone", Kind::Lua, "Lua sorted-set acquire"),
        );
        report.add(
            Row::new(
                FAMILY,
                "server time, SEM.RELEASE alone",
                best.call(0, 1),
                "us",
            )
            .vs("ZREM", best.call(1, 1))
            .versus("SEM.RELEASE alone", Kind::Native, "ZREM"),
        );
    }

    /// (c) Memory per held permit against a sorted-set member with the same holder id.
    ///
    /// One semaphore with 100,000 holders (36-character uuid-like ids) and one sorted set of
    /// the same ids scored by expiry (skiplist-encoded): `MEMORY USAGE … SAMPLES 0` of each,
    /// divided by 100,000, is the target row. An informational row gives the growth of
    /// `used_memory` per holder while each was built, which also counts what `MEMORY USAGE`
    /// cannot see (allocator rounding of every piece; corral's figure comes from its own
    /// `mem_usage` callback, an estimate).
    pub fn memory(report: &mut Report) {
        const HOLDERS: usize = 100_000;
        let srv = Server::start();
        let mut admin = srv.conn();
        let mut conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");

        let before = util::used_memory(&mut admin);
        fill(&mut conn, "sem", HOLDERS);
        let sem_growth = util::used_memory(&mut admin) - before;
        let before = util::used_memory(&mut admin);
        fill_zset(&mut conn, "zsem", HOLDERS);
        let zset_growth = util::used_memory(&mut admin) - before;
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg("zsem")
            .query(&mut admin)
            .expect("OBJECT ENCODING");

        let n = HOLDERS as f64;
        let zset = format!("sorted-set member ({encoding}), same ids");
        report.add(
            Row::new(
                FAMILY,
                &format!(
                    "MEMORY USAGE per held permit ({} holders, 36-char ids)",
                    num(n)
                ),
                util::memory_usage(&mut admin, "sem") / n,
                "bytes",
            )
            .vs(&zset, util::memory_usage(&mut admin, "zsem") / n)
            .target(Target::RatioAtMost(1.5)),
        );
        report.add(
            Row::new(
                FAMILY,
                "used_memory growth per held permit, same holders",
                sem_growth / n,
                "bytes",
            )
            .vs(&zset, zset_growth / n),
        );
    }
}

// ---------------------------------------------------------------------------------------
/// SLOT: lowest-free slot pools on a hierarchical bitmap, against the BITPOS + SETBIT Lua
/// allocator users write today.
mod slot {
    use std::time::{Duration, Instant};

    use super::common::Server;
    use super::report::{num, Kind, Report, Row, Target};
    use super::resp::{self, Reply};
    use super::util::{self, args, best_of, is_int, is_nil, is_one, Workload};

    const FAMILY: &str = "SLOT";

    /// The do-it-yourself allocator: the first clear bit is the slot, set it. BITPOS scans
    /// the string from its start, so a GET costs O(held slots); PUT is `SETBIT key p 0`.
    const LUA_GET: &str =
        "local p = redis.call('BITPOS', KEYS[1], 0); redis.call('SETBIT', KEYS[1], p, 1); return p";

    /// How long building one pool may take before the section measures the size it reached
    /// (and says so in its rows).
    const FILL_BUDGET: Duration = Duration::from_secs(90);

    /// Fills the empty pool `key` with up to `n` anonymous slots (pipelined `SLOT.GET`s,
    /// each checked to answer the next slot: 0, 1, 2…), within [`FILL_BUDGET`]. Returns how
    /// many it holds.
    fn fill(conn: &mut resp::Conn, key: &str, n: usize) -> usize {
        let mut get = Vec::new();
        resp::encode(&mut get, &[b"SLOT.GET", key.as_bytes()]);
        let t = Instant::now();
        let held = util::pipeline(
            conn,
            n,
            1000,
            FILL_BUDGET,
            |range, buf| {
                for _ in range {
                    buf.extend_from_slice(&get);
                }
            },
            |i, r| assert_eq!(r, Reply::Int(i as i64), "SLOT.GET {key} number {i}"),
        );
        eprintln!(
            "bench:    {key}: {} slots taken in {:.1} s",
            num(held as f64),
            t.elapsed().as_secs_f64()
        );
        if held < n {
            eprintln!(
                "bench:    {key}: stopped at {} of {} slots ({FILL_BUDGET:?} budget)",
                num(held as f64),
                num(n as f64)
            );
        }
        held
    }

    /// "n held slots", saying so when the pool fell short of what was asked.
    fn size(held: usize, asked: usize) -> String {
        if held == asked {
            format!("{} held slots", num(held as f64))
        } else {
            format!(
                "{} held slots (only; {} could not be built in {FILL_BUDGET:?})",
                num(held as f64),
                num(asked as f64)
            )
        }
    }

    /// (a) SLOT.GET + SLOT.PUT at 10,000,000 held slots against 1,000 (at most 1.5x), and
    /// against the Lua allocator at 1,000,000 (at least 20x less server time) and
    /// 10,000,000 (at least 80x).
    ///
    /// Pools of 1,000, 1,000,000 and 10,000,000 anonymous slots (slots 0…n−1) are built with
    /// pipelined `SLOT.GET`s; the Lua allocator's bitmaps hold the same slots, written at once
    /// with `SETRANGE` (n/8 bytes of 0xff: the very string its GETs would have built). Each
    /// iteration takes the lowest free slot and puts it back — `SLOT.GET` answers n,
    /// `SLOT.PUT pool n` returns it (`EVALSHA` answers n, `SETBIT key n 0` returns it) — so
    /// every pool stays at its size. The ratio rows compare the GETs alone:
    /// `cmdstat_evalsha` (the script with its BITPOS and SETBIT) over `cmdstat_slot.get`.
    /// Interleaved, 5 rounds after a warm-up, best round; the Lua workloads run fewer
    /// iterations (they are slow). An informational row gives a module command's floor here
    /// (`SLOT.COUNT`: parse, open the key, reply), which bounds how far below Lua's time
    /// any GET can go.
    pub fn server_time(report: &mut Report) {
        const ROUNDS: usize = 5;
        const ASKED: [usize; 3] = [1_000, 1_000_000, 10_000_000];

        let srv = Server::start();
        let mut admin = srv.conn();
        let mut conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
        let keys = ["pool:1k", "pool:1m", "pool:10m"];
        let bitmaps = ["bits:1k", "bits:1m", "bits:10m"];
        let held: Vec<usize> = keys
            .iter()
            .zip(ASKED)
            .map(|(key, n)| fill(&mut conn, key, n))
            .collect();
        for (bits, &n) in bitmaps.iter().zip(&held) {
            let _: i64 = redis::cmd("SETRANGE")
                .arg(*bits)
                .arg(0)
                .arg(vec![0xffu8; n.div_ceil(8)])
                .query(&mut admin)
                .expect("SETRANGE");
            // A pool that fell short of a multiple of 8: clear the bits past its end.
            for p in n..n.div_ceil(8) * 8 {
                let _: i64 = redis::cmd("SETBIT")
                    .arg(*bits)
                    .arg(p)
                    .arg(0)
                    .query(&mut admin)
                    .expect("SETBIT");
            }
        }
        let sha = util::load_script(&mut admin, LUA_GET);

        const CORRAL_LABELS: [&str; 3] = ["corral, 1k", "corral, 1M", "corral, 10M"];
        const LUA_LABELS: [&str; 3] = ["Lua, 1k", "Lua, 1M", "Lua, 10M"];
        let corral: Vec<Workload> = (0..3)
            .map(|i| {
                let n = held[i].to_string();
                Workload::new(
                    CORRAL_LABELS[i],
                    vec![
                        (args(&["SLOT.GET", keys[i]]), is_int),
                        (args(&["SLOT.PUT", keys[i], &n]), is_one),
                    ],
                    &["slot.get", "slot.put"],
                )
            })
            .collect();
        let lua: Vec<Workload> = (0..3)
            .map(|i| {
                let n = held[i].to_string();
                Workload::new(
                    LUA_LABELS[i],
                    vec![
                        (args(&["EVALSHA", &sha, "1", bitmaps[i]]), is_int),
                        (args(&["SETBIT", bitmaps[i], &n, "0"]), is_one),
                    ],
                    &["evalsha"],
                )
            })
            .collect();
        let floor = Workload::new(
            "floor",
            vec![
                (args(&["SLOT.COUNT", keys[0]]), is_int),
                (args(&["GET", "missing"]), is_nil),
            ],
            &["slot.count", "get"],
        );
        // Lua's GET costs O(n): about 2 us at 1k, 7 at 1M, 50 at 10M.
        let work = [
            (&corral[0], 20_000),
            (&corral[1], 20_000),
            (&corral[2], 20_000),
            (&lua[0], 20_000),
            (&lua[1], 5_000),
            (&lua[2], 2_000),
            (&floor, 20_000),
        ];
        let best = best_of(&mut conn, &mut admin, &work, ROUNDS);

        let small = size(held[0], ASKED[0]);
        // For the charts: pool i as (label, held slots).
        let labels: Vec<String> = held
            .iter()
            .map(|&n| format!("{} slots", num(n as f64)))
            .collect();
        let slots = |i: usize| (labels[i].as_str(), held[i] as f64);
        const PAIR: &str = "SLOT.GET + SLOT.PUT (per pair)";
        report.add(
            Row::new(
                FAMILY,
                &format!(
                    "server time, SLOT.GET + SLOT.PUT, {} (per pair)",
                    size(held[2], ASKED[2])
                ),
                best.iter(2),
                "us",
            )
            .vs(&small, best.iter(0))
            .target(Target::RatioAtMost(1.5))
            .scale(PAIR, slots(2), slots(0)),
        );
        report.add(
            Row::new(
                FAMILY,
                &format!(
                    "server time, SLOT.GET + SLOT.PUT, {} (per pair)",
                    size(held[1], ASKED[1])
                ),
                best.iter(1),
                "us",
            )
            .vs(&small, best.iter(0))
            .scale(PAIR, slots(1), slots(0)),
        );
        // value / baseline = Lua's GET over corral's: how many times less server time.
        // Smallest pool first (no target there: Lua's scan is short).
        for (i, times) in [(0, None), (1, Some(20.0)), (2, Some(80.0))] {
            let row = Row::new(
                FAMILY,
                &format!(
                    "server time, Lua allocator GET (EVALSHA: BITPOS + SETBIT), {}",
                    size(held[i], ASKED[i])
                ),
                best.call(3 + i, 0),
                "us",
            )
            .vs("SLOT.GET, same pool size", best.call(i, 0))
            .versus_swapped(
                &format!("SLOT.GET, {} held", labels[i]),
                Kind::Lua,
                "Lua BITPOS + SETBIT",
            );
            report.add(match times {
                Some(t) => row.target(Target::RatioAtLeast(t)),
                None => row,
            });
        }
        report.add(
            Row::new(
                FAMILY,
                "server time, SLOT.COUNT (module command floor: parse, open the key, reply)",
                best.call(6, 0),
                "us",
            )
            .vs("GET on a missing key", best.call(6, 1)),
        );
    }

    /// (b) `MEMORY USAGE` of a pool of 10,000,000 anonymous held slots: at most 2 MB
    /// (10^6 bytes), with, for scale, the Redis string bitmap holding the same slots
    /// (1.25 MB), and the growth of `used_memory` while the pool was built (what the
    /// allocator really handed out, slack included).
    pub fn memory(report: &mut Report) {
        const ASKED: usize = 10_000_000;
        let srv = Server::start();
        let mut admin = srv.conn();
        let mut conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");

        let before = util::used_memory(&mut admin);
        let held = fill(&mut conn, "pool", ASKED);
        let growth = util::used_memory(&mut admin) - before;
        let _: i64 = redis::cmd("SETRANGE")
            .arg("bits")
            .arg(0)
            .arg(vec![0xffu8; held.div_ceil(8)])
            .query(&mut admin)
            .expect("SETRANGE");

        const MB: f64 = 1e6;
        let bitmap = util::memory_usage(&mut admin, "bits") / MB;
        report.add(
            Row::new(
                FAMILY,
                &format!("MEMORY USAGE of a pool of {}", size(held, ASKED)),
                util::memory_usage(&mut admin, "pool") / MB,
                "MB",
            )
            .vs("Redis string bitmap of the same slots", bitmap)
            .target(Target::AtMost(2.0)),
        );
        report.add(
            Row::new(
                FAMILY,
                "used_memory growth while that pool was built",
                growth / MB,
                "MB",
            )
            .vs("Redis string bitmap of the same slots", bitmap),
        );
    }
}

// ---------------------------------------------------------------------------------------
/// ALLOC: sticky job-to-instance allocation, at 1,000 against 1,000,000 allocations, and
/// against a plain hash of job → instance.
mod alloc {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::common::Server;
    use super::report::{num, Report, Row, Target};
    use super::resp::{self, Reply};
    use super::util::{self, args, best_of, is_int, is_one, uuidish, Args, Check, Workload};

    const FAMILY: &str = "ALLOC";

    /// Instances every big key has (new ones go to the end of the allocation order).
    const INSTANCES: usize = 1_000;
    /// Job ids `uuidish(FRESH + k)` are never allocated beforehand: the "new" workloads
    /// allocate them and deallocate them again.
    const FRESH: u64 = 1 << 40;
    /// The jobs of the one-instance key of the JOBS rows: `uuidish(SOLO + i)`, as long as
    /// the others.
    const SOLO: u64 = 2 << 40;
    /// How many distinct jobs (and instances) a measured workload cycles through.
    const CYCLE: usize = 10_000;

    fn instance(i: usize) -> String {
        format!("instance-{i:04}")
    }

    /// A new allocation: `[instance, 1]`.
    fn is_new(r: &Reply) -> bool {
        matches!(r, Reply::Array(Some(a)) if a.len() == 2 && a[1] == Reply::Int(1))
    }

    /// An existing allocation: `[instance, 0]`.
    fn is_existing(r: &Reply) -> bool {
        matches!(r, Reply::Array(Some(a)) if a.len() == 2 && a[1] == Reply::Int(0))
    }

    fn is_bulk(r: &Reply) -> bool {
        matches!(r, Reply::Bulk(Some(_)))
    }

    fn is_nonempty_array(r: &Reply) -> bool {
        matches!(r, Reply::Array(Some(a)) if !a.is_empty())
    }

    /// Makes `instances` available on `key`, then allocates `jobs` (pipelined, each checked
    /// to be new); returns the instance (by name) each job landed on, in job order.
    fn fill(
        conn: &mut resp::Conn,
        key: &str,
        instances: &[String],
        jobs: &[String],
    ) -> Vec<String> {
        for name in instances {
            let r = conn
                .call(&util::refs(&args(&["ALLOC.AVAILABLE", key, name])))
                .expect("ALLOC.AVAILABLE");
            assert!(is_one(&r), "ALLOC.AVAILABLE {key} {name}: {r:?}");
        }
        let mut landed = Vec::with_capacity(jobs.len());
        let sent = util::pipeline(
            conn,
            jobs.len(),
            1000,
            Duration::MAX,
            |range, buf| {
                for job in &jobs[range] {
                    resp::encode(buf, &util::refs(&args(&["ALLOC.ALLOCATE", key, job])));
                }
            },
            |i, r| match r {
                Reply::Array(Some(mut a)) if a.len() == 2 && a[1] == Reply::Int(1) => {
                    match a.swap_remove(0) {
                        Reply::Bulk(Some(name)) => {
                            landed.push(String::from_utf8(name).expect("instance name"))
                        }
                        other => panic!("ALLOC.ALLOCATE {key} job {i}: instance {other:?}"),
                    }
                }
                other => panic!("ALLOC.ALLOCATE {key} job {i}: {other:?}"),
            },
        );
        assert_eq!(sent, jobs.len());
        landed
    }

    /// ALLOCATE of a new job, then its DEALLOCATE (so the key keeps its size).
    fn new_jobs(label: &'static str, key: &str) -> Workload {
        let iterations = (0..CYCLE)
            .map(|k| {
                let job = uuidish(FRESH + k as u64);
                vec![
                    (args(&["ALLOC.ALLOCATE", key, &job]), is_new as _),
                    (args(&["ALLOC.DEALLOCATE", key, &job]), is_one as _),
                ]
            })
            .collect();
        Workload::cycling(label, iterations, &["alloc.allocate", "alloc.deallocate"])
    }

    /// One command per iteration: `cmd(k)` for the k-th of [`CYCLE`] iterations.
    fn each(
        label: &'static str,
        stats: &'static [&'static str],
        ok: Check,
        cmd: impl Fn(usize) -> Args,
    ) -> Workload {
        let iterations = (0..CYCLE).map(|k| vec![(cmd(k), ok)]).collect();
        Workload::cycling(label, iterations, stats)
    }

    /// The k-th job a lookup visits: spread over the whole key (`k × 7919 mod n`; 7919 is
    /// prime, so 10,000 distinct jobs of a million, every job of a thousand).
    fn spread(jobs: &[String], k: usize) -> &str {
        &jobs[k * 7919 % jobs.len()]
    }

    /// HSETs `jobs[i]` → `landed[i]` into `key` (pipelined).
    fn fill_hash(conn: &mut resp::Conn, key: &str, jobs: &[String], landed: &[String]) {
        let sent = util::pipeline(
            conn,
            jobs.len(),
            1000,
            Duration::MAX,
            |range, buf| {
                for i in range {
                    let cmd = args(&["HSET", key, &jobs[i], &landed[i]]);
                    resp::encode(buf, &util::refs(&cmd));
                }
            },
            |i, r| assert!(is_int(&r), "HSET {key} job {i}: {r:?}"),
        );
        assert_eq!(sent, jobs.len());
    }

    /// (a) ALLOCATE (new and existing), INSTANCE, HASJOBS and JOBS at 1,000,000 allocations
    /// against 1,000 (at most 1.5x each: no scans).
    ///
    /// Two keys on one server, each with the same 1,000 available instances: `alloc:1k`
    /// with 1,000 allocations, `alloc:1m` with 1,000,000 (pipelined ALLOCATEs of uuid-like
    /// job ids; atributo's md5 rule spreads them, about 1,000 per instance). Each measured
    /// command is its own workload, so none runs on cache lines another just loaded:
    /// - ALLOCATE of a job never seen (persisted 1), then its DEALLOCATE, 10,000 distinct
    ///   jobs in turn, so the key keeps its size;
    /// - ALLOCATE of an allocated job (persisted 0), and INSTANCE, each over 10,000 jobs
    ///   spread over the whole key ([`spread`]);
    /// - HASJOBS of the instances that have jobs, in turn.
    ///
    /// A lookup at a random place in a million entries misses the CPU caches and TLB where
    /// one in a thousand does not, whatever the structure. So the same patterns also run on
    /// Redis's own hashes of the same jobs (`hash:1k`, `hash:1m`: HSET of a new field +
    /// HDEL, HGET) as informational reference rows: the 1M/1k ratio a plain hash shows is
    /// the memory hierarchy's share. Another informational row runs INSTANCE over the same
    /// 100 jobs again and again (cache-warm), which isolates the algorithm.
    ///
    /// JOBS costs what the instance holds, so its row compares like with like: the same
    /// number of jobs m on the instance, in a key of 1,000,000 allocations (the instance of
    /// `alloc:1m` whose count is closest to 1,000) against a key that holds only those m
    /// allocations (`alloc:solo`: one instance, m jobs of the same id length).
    ///
    /// Server time per call from `INFO commandstats`; interleaved, 5 rounds after a
    /// warm-up, best round.
    pub fn server_time(report: &mut Report) {
        const BIG: usize = 1_000_000;
        const SMALL: usize = 1_000;
        const ITERS: usize = 20_000;
        const JOBS_ITERS: usize = 2_000;
        const ROUNDS: usize = 5;

        let srv = Server::start();
        let mut admin = srv.conn();
        let mut conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
        let instances: Vec<String> = (0..INSTANCES).map(instance).collect();
        let big_jobs: Vec<String> = (0..BIG as u64).map(uuidish).collect();
        let small_jobs = &big_jobs[..SMALL];

        let big_landed = fill(&mut conn, "alloc:1m", &instances, &big_jobs);
        let small_landed = fill(&mut conn, "alloc:1k", &instances, small_jobs);
        fill_hash(&mut conn, "hash:1m", &big_jobs, &big_landed);
        fill_hash(&mut conn, "hash:1k", small_jobs, &small_landed);
        // Instances with jobs (HASJOBS answers 1 for them): every one on alloc:1m.
        let busy = |landed: &[String]| -> Vec<String> {
            let mut names: Vec<String> = landed.to_vec();
            names.sort();
            names.dedup();
            names
        };
        let (big_busy, small_busy) = (busy(&big_landed), busy(&small_landed));

        // The instance of alloc:1m whose job count is closest to 1,000, and a one-instance
        // key with as many jobs.
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for name in &big_landed {
            *counts.entry(name.as_str()).or_default() += 1;
        }
        let (&picked, &m) = counts
            .iter()
            .min_by_key(|(name, &c)| (c.abs_diff(1000), **name))
            .expect("alloc:1m has jobs");
        let solo_jobs: Vec<String> = (0..m as u64).map(|i| uuidish(SOLO + i)).collect();
        fill(&mut conn, "alloc:solo", &["solo".to_string()], &solo_jobs);

        // Workloads 2i (1k) and 2i+1 (1M) measure the same thing at the two sizes.
        let sizes = [
            ("alloc:1k", "hash:1k", small_jobs, &small_busy),
            ("alloc:1m", "hash:1m", &big_jobs[..], &big_busy),
        ];
        let mut workloads = Vec::new();
        for (key, hash, jobs, busy) in sizes {
            let inst = &small_landed[0];
            workloads.extend([
                new_jobs("ALLOCATE new + DEALLOCATE", key),
                each("ALLOCATE existing", &["alloc.allocate"], is_existing, |k| {
                    args(&["ALLOC.ALLOCATE", key, spread(jobs, k)])
                }),
                each("INSTANCE", &["alloc.instance"], is_bulk, |k| {
                    args(&["ALLOC.INSTANCE", key, spread(jobs, k)])
                }),
                each("HASJOBS", &["alloc.hasjobs"], is_one, |k| {
                    args(&["ALLOC.HASJOBS", key, &busy[k % busy.len()]])
                }),
                each("INSTANCE, 100 jobs", &["alloc.instance"], is_bulk, |k| {
                    args(&["ALLOC.INSTANCE", key, spread(jobs, k % 100)])
                }),
                Workload::cycling(
                    "HSET new + HDEL",
                    (0..CYCLE)
                        .map(|k| {
                            let job = uuidish(FRESH + k as u64);
                            vec![
                                (args(&["HSET", hash, &job, inst]), is_one as _),
                                (args(&["HDEL", hash, &job]), is_one as _),
                            ]
                        })
                        .collect(),
                    &["hset", "hdel"],
                ),
                each("HGET", &["hget"], is_bulk, |k| {
                    args(&["HGET", hash, spread(jobs, k)])
                }),
            ]);
        }
        let per_size = workloads.len() / 2;
        workloads.push(Workload::new(
            "JOBS, alone",
            vec![(
                args(&["ALLOC.JOBS", "alloc:solo", "solo"]),
                is_nonempty_array,
            )],
            &["alloc.jobs"],
        ));
        workloads.push(Workload::new(
            "JOBS, 1M",
            vec![(args(&["ALLOC.JOBS", "alloc:1m", picked]), is_nonempty_array)],
            &["alloc.jobs"],
        ));
        let work: Vec<(&Workload, usize)> = workloads
            .iter()
            .map(|w| {
                (
                    w,
                    if w.label.starts_with("JOBS") {
                        JOBS_ITERS
                    } else {
                        ITERS
                    },
                )
            })
            .collect();
        let best = best_of(&mut conn, &mut admin, &work, ROUNDS);

        let at = |n: usize| {
            format!(
                "{} allocations over {} instances",
                num(n as f64),
                num(INSTANCES as f64)
            )
        };
        // For the chart: (label, allocations).
        let (small_label, big_label) = (
            format!("{} allocations", num(SMALL as f64)),
            format!("{} allocations", num(BIG as f64)),
        );
        let (small, big) = (
            (small_label.as_str(), SMALL as f64),
            (big_label.as_str(), BIG as f64),
        );
        // (what, workload index within a size, stat index, per call (else per iteration),
        // target)
        let rows = [
            ("ALLOC.ALLOCATE of a new job", 0, 0, true, true),
            ("ALLOC.DEALLOCATE", 0, 1, true, false),
            (
                "ALLOC.ALLOCATE of an allocated job (10,000 spread-out jobs)",
                1,
                0,
                true,
                true,
            ),
            ("ALLOC.INSTANCE (10,000 spread-out jobs)", 2, 0, true, true),
            ("ALLOC.HASJOBS", 3, 0, true, true),
            (
                "ALLOC.INSTANCE of the same 100 jobs again and again (cache-warm)",
                4,
                0,
                true,
                false,
            ),
            (
                "reference: Redis hash, HSET of a new field + HDEL (per pair), same jobs",
                5,
                0,
                false,
                false,
            ),
            (
                "reference: Redis hash, HGET of the same 10,000 spread-out jobs",
                6,
                0,
                true,
                false,
            ),
        ];
        for (what, w, stat, per_call, target) in rows {
            let value = |i: usize| {
                if per_call {
                    best.call(i, stat)
                } else {
                    best.iter(i)
                }
            };
            let row = Row::new(
                FAMILY,
                &format!("server time, {what}, {}", at(BIG)),
                value(per_size + w),
                "us",
            )
            .vs(&at(SMALL), value(w))
            .scale(what, big, small);
            // The Redis hash rows are references (grey in the chart), not corral commands.
            let row = if what.starts_with("reference") {
                row.reference()
            } else {
                row
            };
            report.add(if target {
                row.target(Target::RatioAtMost(1.5))
            } else {
                row
            });
        }
        let (m_jobs, m) = (m as f64, num(m as f64));
        report.add(
            Row::new(
                FAMILY,
                &format!(
                    "server time, ALLOC.JOBS of an instance with {m} jobs, {} in the key",
                    at(BIG)
                ),
                best.call(2 * per_size + 1, 0),
                "us",
            )
            .vs(
                &format!("the same {m} jobs, the key's only allocations"),
                best.call(2 * per_size, 0),
            )
            .target(Target::RatioAtMost(1.5))
            .scale(
                &format!("ALLOC.JOBS of an instance with {m} jobs"),
                (&format!("in a key of {big_label}"), BIG as f64),
                ("the key's only allocations", m_jobs),
            ),
        );
    }

    /// (b) Memory per allocation against a hash field job → instance.
    ///
    /// One key with 1,000 instances and 1,000,000 allocations; one hash with a field per
    /// job (the same ids) whose value is the instance the job landed on (`HSET`; a hash of
    /// a million fields is hashtable-encoded, which the row names). `MEMORY USAGE …
    /// SAMPLES 0` of each, divided by 1,000,000, is the target row; an informational row
    /// gives the growth of `used_memory` per allocation while each was built (corral's
    /// `MEMORY USAGE` comes from its own `mem_usage` callback, an estimate).
    pub fn memory(report: &mut Report) {
        const JOBS: usize = 1_000_000;
        let srv = Server::start();
        let mut admin = srv.conn();
        let mut conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
        let instances: Vec<String> = (0..INSTANCES).map(instance).collect();
        let jobs: Vec<String> = (0..JOBS as u64).map(uuidish).collect();

        let before = util::used_memory(&mut admin);
        let landed = fill(&mut conn, "alloc", &instances, &jobs);
        let alloc_growth = util::used_memory(&mut admin) - before;

        let before = util::used_memory(&mut admin);
        fill_hash(&mut conn, "hash", &jobs, &landed);
        let hash_growth = util::used_memory(&mut admin) - before;
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg("hash")
            .query(&mut admin)
            .expect("OBJECT ENCODING");

        let n = JOBS as f64;
        let hash = format!("hash field job → instance ({encoding}), same ids");
        report.add(
            Row::new(
                FAMILY,
                &format!(
                    "MEMORY USAGE per allocation ({} allocations, {} instances, 36-char job ids)",
                    num(n),
                    num(INSTANCES as f64)
                ),
                util::memory_usage(&mut admin, "alloc") / n,
                "bytes",
            )
            .vs(&hash, util::memory_usage(&mut admin, "hash") / n)
            .target(Target::RatioAtMost(2.0)),
        );
        report.add(
            Row::new(
                FAMILY,
                "used_memory growth per allocation, same jobs",
                alloc_growth / n,
                "bytes",
            )
            .vs(&hash, hash_growth / n),
        );
    }
}

// ---------------------------------------------------------------------------------------
/// JOB: a job store with fenced pulls, at 1,000 against 1,000,000 pending jobs, and
/// end to end against a BullMQ-style Lua queue.
mod job {
    use std::time::{Duration, Instant};

    use super::common::Server;
    use super::report::{num, Kind, Report, Row, Target};
    use super::resp::{self, Reply};
    use super::util::{self, args, cmdstats, is_int, is_one, min, refs, reset_stats, ServerTime};

    const FAMILY: &str = "JOB";

    /// Work leases last 10 minutes: nothing lapses while a section runs.
    const LEASE_MS: &str = "600000";
    /// Jobs pulled (and fulfilled) per pipeline, each by its own worker id.
    const DEPTH: usize = 100;
    /// The value every job is fulfilled with (10 bytes, as long as a request).
    const VALUE: &str = "result-001";

    /// The i-th request: 10 bytes.
    fn request(i: usize) -> String {
        format!("req-{:06}", i % 1_000_000)
    }

    /// The k-th of the worker ids `w0`, `w1`, ….
    fn worker(k: usize) -> String {
        format!("w{k}")
    }

    /// Creates `n` pending jobs with 10-byte requests on `key` (pipelined `JOB.CREATE`s).
    fn fill(conn: &mut resp::Conn, key: &str, n: usize) {
        let t = Instant::now();
        let sent = util::pipeline(
            conn,
            n,
            1000,
            Duration::MAX,
            |range, buf| {
                for i in range {
                    resp::encode(buf, &refs(&args(&["JOB.CREATE", key, &request(i)])));
                }
            },
            |i, r| assert!(is_int(&r), "JOB.CREATE {key} number {i}: {r:?}"),
        );
        assert_eq!(sent, n);
        eprintln!(
            "bench:    {key}: {} jobs created in {:.1} s",
            num(n as f64),
            t.elapsed().as_secs_f64()
        );
    }

    /// A `JOB.PULL` reply `[id, request, token]`: (id, token), as the client sends them back.
    fn pulled(r: Reply) -> (String, String) {
        match r {
            Reply::Array(Some(a)) => match &a[..] {
                [Reply::Int(id), Reply::Bulk(Some(_)), Reply::Int(token)] => {
                    (id.to_string(), token.to_string())
                }
                _ => panic!("JOB.PULL: unexpected reply {a:?}"),
            },
            other => panic!("JOB.PULL: unexpected reply {other:?}"),
        }
    }

    /// One measured run of `iters` PULL + FULFILL iterations on `key`, [`DEPTH`] per
    /// pipeline, after a `CONFIG RESETSTAT`: what `INFO commandstats` says `job.pull` and
    /// `job.fulfill` cost (per iteration, and per call of each).
    ///
    /// Each pipeline is `DEPTH` `JOB.PULL key w<k> …` (workers w0…w99: each gets the oldest
    /// job nobody works on); once their replies are in, one pipeline fulfils every pulled job
    /// with `JOB.FULFILL key id value TOKEN token`, then deletes it (`JOB.DELETE`) and creates
    /// a replacement (`JOB.CREATE`), so the key keeps exactly its number of pending jobs and
    /// never accumulates fulfilled ones. CREATE and DELETE are counted under their own
    /// commandstats entries, which are left out.
    fn pull_fulfill(
        conn: &mut resp::Conn,
        admin: &mut redis::Connection,
        key: &str,
        iters: usize,
    ) -> ServerTime {
        let mut pulls = Vec::new();
        for k in 0..DEPTH {
            resp::encode(
                &mut pulls,
                &refs(&args(&["JOB.PULL", key, &worker(k), LEASE_MS])),
            );
        }
        let mut buf = Vec::new();
        reset_stats(admin);
        for b in 0..iters / DEPTH {
            conn.send_raw(&pulls).expect("send");
            let jobs: Vec<(String, String)> = (0..DEPTH)
                .map(|_| pulled(conn.read().expect("read")))
                .collect();
            buf.clear();
            for (id, token) in &jobs {
                let cmd = args(&["JOB.FULFILL", key, id, VALUE, "TOKEN", token]);
                resp::encode(&mut buf, &refs(&cmd));
            }
            for (id, _) in &jobs {
                resp::encode(&mut buf, &refs(&args(&["JOB.DELETE", key, id])));
            }
            for i in 0..DEPTH {
                let cmd = args(&["JOB.CREATE", key, &request(b * DEPTH + i)]);
                resp::encode(&mut buf, &refs(&cmd));
            }
            conn.send_raw(&buf).expect("send");
            for (what, ok) in [
                ("JOB.FULFILL", is_one as util::Check),
                ("JOB.DELETE", is_one),
                ("JOB.CREATE", is_int),
            ] {
                for _ in 0..DEPTH {
                    let r = conn.read().expect("read");
                    assert!(ok(&r), "{what} {key}: unexpected reply {r:?}");
                }
            }
        }
        let stats = cmdstats(admin);
        let iters = (iters / DEPTH * DEPTH) as f64;
        let mut total = 0.0;
        let per_call = ["job.pull", "job.fulfill"]
            .iter()
            .map(|name| {
                let (calls, usec) = stats.get(*name).copied().unwrap_or((0, 0));
                assert_eq!(calls as f64, iters, "cmdstat_{name} calls");
                total += usec as f64;
                usec as f64 / calls as f64
            })
            .collect();
        ServerTime {
            per_iter: total / iters,
            per_call,
        }
    }

    /// (a) PULL + FULFILL at 1,000,000 pending jobs against 1,000 (at most 1.5x: no scans).
    ///
    /// Two keys on one server, `jobs:1k` with 1,000 pending jobs and `jobs:1m` with
    /// 1,000,000 (pipelined `JOB.CREATE`s, 10-byte requests). Each iteration pulls the
    /// oldest pending job (a new work lease, then the reply with its request) and fulfils it
    /// with its fencing token (the lease ends, the job moves to the fulfilled jobs); see
    /// [`pull_fulfill`] for how each key keeps its size. Replacement jobs are created after
    /// every pipeline rather than between rounds: at 1,000 pending, a round of 50,000 pulls
    /// would otherwise empty the key. At 1,000,000 the pulls never get past the jobs of the
    /// initial fill (about 255,000 are pulled in all), oldest first, as in a queue with a
    /// backlog; at 1,000 they cycle through the replacements. Server time from `INFO commandstats`
    /// (`cmdstat_job.pull` + `cmdstat_job.fulfill`); the two sizes run interleaved, 5 rounds
    /// after a warm-up, best round each.
    pub fn server_time(report: &mut Report) {
        const SIZES: [(&str, usize); 2] = [("jobs:1k", 1_000), ("jobs:1m", 1_000_000)];
        const ITERS: usize = 50_000;
        const ROUNDS: usize = 5;

        let srv = Server::start();
        let mut admin = srv.conn();
        let mut conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
        for (key, n) in SIZES {
            fill(&mut conn, key, n);
        }
        for (key, _) in SIZES {
            pull_fulfill(&mut conn, &mut admin, key, ITERS / 10);
        }
        let mut runs: Vec<Vec<ServerTime>> = SIZES.iter().map(|_| Vec::new()).collect();
        for round in 0..ROUNDS {
            for (i, (key, _)) in SIZES.iter().enumerate() {
                let t = pull_fulfill(&mut conn, &mut admin, key, ITERS);
                eprintln!(
                    "bench:    round {round}: {key}: {:.3} usec per PULL + FULFILL ({:.3?} per call)",
                    t.per_iter, t.per_call
                );
                runs[i].push(t);
            }
        }
        // The pending jobs are still there, as many as before.
        for (key, n) in SIZES {
            let pending = info_field(&mut admin, key, "pending");
            assert_eq!(pending, n as i64, "JOB.INFO {key} pending");
        }
        let iter = |i: usize| min(&runs[i].iter().map(|t| t.per_iter).collect::<Vec<_>>());
        let call =
            |i: usize, j: usize| min(&runs[i].iter().map(|t| t.per_call[j]).collect::<Vec<_>>());

        let at = |i: usize| format!("{} pending jobs", num(SIZES[i].1 as f64));
        // For the chart: size i as (label, pending jobs).
        let labels = [at(0), at(1)];
        let scale = |i: usize| (labels[i].as_str(), SIZES[i].1 as f64);
        report.add(
            Row::new(
                FAMILY,
                &format!(
                    "server time, JOB.PULL + JOB.FULFILL TOKEN of the oldest job, {} (per pair)",
                    at(1)
                ),
                iter(1),
                "us",
            )
            .vs(&at(0), iter(0))
            .target(Target::RatioAtMost(1.5))
            .scale(
                "JOB.PULL + JOB.FULFILL TOKEN of the oldest job (per pair)",
                scale(1),
                scale(0),
            ),
        );
        for (j, what) in ["JOB.PULL", "JOB.FULFILL TOKEN"].iter().enumerate() {
            report.add(
                Row::new(
                    FAMILY,
                    &format!("server time, {what} alone, {}", at(1)),
                    call(1, j),
                    "us",
                )
                .vs(&at(0), call(0, j))
                .scale(&format!("{what} alone"), scale(1), scale(0)),
            );
        }
    }

    /// An integer field of `JOB.INFO key`.
    fn info_field(conn: &mut redis::Connection, key: &str, field: &str) -> i64 {
        let v: redis::Value = redis::cmd("JOB.INFO")
            .arg(key)
            .query(conn)
            .expect("JOB.INFO");
        // RESP2 turns the map into a flat [k1, v1, k2, v2…] array.
        let fields: Vec<redis::Value> = match v {
            redis::Value::Array(a) => a,
            redis::Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            other => panic!("unexpected JOB.INFO reply {other:?}"),
        };
        fields
            .chunks(2)
            .find_map(|kv| match (&kv[0], kv.get(1)) {
                (redis::Value::BulkString(k), Some(redis::Value::Int(n)))
                    if k == field.as_bytes() =>
                {
                    Some(*n)
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("JOB.INFO {key} has no {field}"))
    }

    /// (b) Memory per pending job, beyond its request bytes: at most 200 bytes.
    ///
    /// One key with 1,000,000 pending jobs of 10-byte requests (pipelined `JOB.CREATE`s):
    /// `MEMORY USAGE` of the key minus 1,000,000 × 10 bytes, divided by 1,000,000, is the
    /// target row (corral's figure comes from its own `mem_usage` callback, an estimate). An
    /// informational row gives the growth of `used_memory` per job while the key was built
    /// (request included: what the allocator really handed out), against the same jobs kept
    /// the way a BullMQ-style Lua queue keeps them (a hash `job:<id>` with the request as
    /// its `data` field and the id on a wait list; written with plain `HSET` + `LPUSH`, the
    /// very writes its create script makes).
    pub fn memory(report: &mut Report) {
        const JOBS: usize = 1_000_000;
        const REQUEST_LEN: usize = 10;
        let srv = Server::start();
        let mut admin = srv.conn();
        let mut conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
        assert_eq!(request(0).len(), REQUEST_LEN);

        let before = util::used_memory(&mut admin);
        fill(&mut conn, "jobs", JOBS);
        let growth = util::used_memory(&mut admin) - before;
        let usage = util::memory_usage(&mut admin, "jobs");

        let before = util::used_memory(&mut admin);
        let sent = util::pipeline(
            &mut conn,
            2 * JOBS,
            1000,
            Duration::MAX,
            |range, buf| {
                for c in range {
                    let (i, id) = (c / 2, (c / 2 + 1).to_string());
                    let cmd = if c % 2 == 0 {
                        args(&["HSET", &format!("job:{id}"), "data", &request(i)])
                    } else {
                        args(&["LPUSH", "wait", &id])
                    };
                    resp::encode(buf, &refs(&cmd));
                }
            },
            |c, r| assert!(is_int(&r), "HSET/LPUSH number {c}: {r:?}"),
        );
        assert_eq!(sent, 2 * JOBS);
        let lua_growth = util::used_memory(&mut admin) - before;

        let n = JOBS as f64;
        report.add(
            Row::new(
                FAMILY,
                &format!(
                    "MEMORY USAGE per pending job beyond its request ({} jobs, 10-byte requests)",
                    num(n)
                ),
                (usage - n * REQUEST_LEN as f64) / n,
                "bytes",
            )
            .target(Target::AtMost(200.0)),
        );
        report.add(
            Row::new(
                FAMILY,
                "used_memory growth per pending job, request included",
                growth / n,
                "bytes",
            )
            .vs(
                "BullMQ-style job hash + wait-list entry, same requests",
                lua_growth / n,
            ),
        );
    }

    /// The BullMQ-style queue's scripts, modelled on what BullMQ and bee-queue send (their
    /// event streams, metrics, priorities and delays left out, which only makes the
    /// baseline cheaper). Job ids come from a counter; a job is a hash `<prefix>job:<id>`;
    /// the ids wait on a list, move to an active list when pulled, and a lock key
    /// `<prefix>lock:<id>` holds the worker's name for the lease.
    ///
    /// create — `KEYS = id counter, wait list; ARGV = prefix, data`: the new id.
    const LUA_CREATE: &str = "local id = redis.call('INCR', KEYS[1]) \
         redis.call('HSET', ARGV[1] .. 'job:' .. id, 'data', ARGV[2]) \
         redis.call('LPUSH', KEYS[2], id) \
         return id";
    /// pull — `KEYS = wait list, active list; ARGV = prefix, worker, lease ms`: the oldest
    /// waiting job moves to the active list under the worker's lock; `[id, data]`, or nil.
    const LUA_PULL: &str = "local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') \
         if not id then return false end \
         redis.call('SET', ARGV[1] .. 'lock:' .. id, ARGV[2], 'PX', ARGV[3]) \
         return {id, redis.call('HGET', ARGV[1] .. 'job:' .. id, 'data')}";
    /// fulfil — `KEYS = active list; ARGV = prefix, id, worker, value`: only the lock's
    /// holder may; stores the value, leaves the active list, drops the lock. 1, or an error.
    const LUA_FULFIL: &str = "local lock = ARGV[1] .. 'lock:' .. ARGV[2] \
         if redis.call('GET', lock) ~= ARGV[3] then \
         return redis.error_reply('NOTHELD lock of job ' .. ARGV[2] .. ' is not held') end \
         redis.call('HSET', ARGV[1] .. 'job:' .. ARGV[2], 'returnvalue', ARGV[4]) \
         redis.call('LREM', KEYS[1], -1, ARGV[2]) \
         redis.call('DEL', lock) \
         return 1";

    /// The two job queues the end-to-end run drives the same way.
    enum Queue {
        Corral,
        Lua {
            create: String,
            pull: String,
            fulfil: String,
        },
    }

    impl Queue {
        fn encode_create(&self, buf: &mut Vec<u8>, i: usize) {
            let req = request(i);
            let cmd = match self {
                Queue::Corral => args(&["JOB.CREATE", "jobs", &req]),
                Queue::Lua { create, .. } => {
                    args(&["EVALSHA", create, "2", "q:id", "q:wait", "q:", &req])
                }
            };
            resp::encode(buf, &refs(&cmd));
        }

        fn encode_pull(&self, buf: &mut Vec<u8>, worker: &str) {
            let cmd = match self {
                Queue::Corral => args(&["JOB.PULL", "jobs", worker, LEASE_MS]),
                Queue::Lua { pull, .. } => args(&[
                    "EVALSHA", pull, "2", "q:wait", "q:active", "q:", worker, LEASE_MS,
                ]),
            };
            resp::encode(buf, &refs(&cmd));
        }

        /// What the fulfil needs from a pull's reply: the id, and the proof of the lease
        /// (corral: the fencing token; Lua: the worker name the lock holds).
        fn pulled(&self, r: Reply, worker: &str) -> (String, String) {
            match self {
                Queue::Corral => pulled(r),
                Queue::Lua { .. } => match r {
                    Reply::Array(Some(a)) => match &a[..] {
                        [Reply::Bulk(Some(id)), Reply::Bulk(Some(_))] => (
                            String::from_utf8(id.clone()).expect("job id"),
                            worker.to_string(),
                        ),
                        _ => panic!("Lua pull: unexpected reply {a:?}"),
                    },
                    other => panic!("Lua pull: unexpected reply {other:?}"),
                },
            }
        }

        fn encode_fulfil(&self, buf: &mut Vec<u8>, id: &str, proof: &str) {
            let cmd = match self {
                Queue::Corral => args(&["JOB.FULFILL", "jobs", id, VALUE, "TOKEN", proof]),
                Queue::Lua { fulfil, .. } => {
                    args(&["EVALSHA", fulfil, "1", "q:active", "q:", id, proof, VALUE])
                }
            };
            resp::encode(buf, &refs(&cmd));
        }
    }

    /// What a pipeline in flight holds: `fulfils` fulfilments, then (for batch `Some(k)`)
    /// [`DEPTH`] creates and the [`DEPTH`] pulls of batch k.
    struct InFlight {
        fulfils: usize,
        batch: Option<usize>,
    }

    /// Runs `n` jobs through `q` end to end — create, pull, fulfil — on one connection, and
    /// returns the seconds it took, as a client sees them.
    ///
    /// Batch k is [`DEPTH`] jobs: one pipeline creates them and pulls them (workers of set
    /// k mod 2: 200 worker ids in all, one job each at a time), and the pipeline after next
    /// fulfils them with what the pulls returned. Each pipeline is sent before the replies
    /// of the one before are read, so one is always in flight while the client parses
    /// replies and encodes the next (client and server work at once, as in
    /// [`util::pipeline`]): pipeline k holds the fulfilments of batch k−2, then the
    /// creates and pulls of batch k.
    fn end_to_end(conn: &mut resp::Conn, q: &Queue, n: usize) -> f64 {
        let batches = n / DEPTH;
        let workers: Vec<String> = (0..2 * DEPTH).map(worker).collect();
        let mut buf = Vec::new();
        let mut to_fulfil: Option<Vec<(String, String)>> = None;
        let mut in_flight: Option<InFlight> = None;
        let mut fulfilled = 0;
        let t = Instant::now();
        for k in 0.. {
            let fulfils = to_fulfil.take();
            let batch = (k < batches).then_some(k);
            let prev = if fulfils.is_some() || batch.is_some() {
                buf.clear();
                let count = fulfils.as_ref().map_or(0, |f| f.len());
                for (id, proof) in fulfils.iter().flatten() {
                    q.encode_fulfil(&mut buf, id, proof);
                }
                if let Some(k) = batch {
                    for i in 0..DEPTH {
                        q.encode_create(&mut buf, k * DEPTH + i);
                    }
                    for w in &workers[k % 2 * DEPTH..][..DEPTH] {
                        q.encode_pull(&mut buf, w);
                    }
                }
                conn.send_raw(&buf).expect("send");
                in_flight.replace(InFlight {
                    fulfils: count,
                    batch,
                })
            } else {
                in_flight.take()
            };
            let Some(prev) = prev else {
                if in_flight.is_none() {
                    break;
                }
                continue;
            };
            for _ in 0..prev.fulfils {
                let r = conn.read().expect("read");
                assert!(is_one(&r), "fulfil: unexpected reply {r:?}");
                fulfilled += 1;
            }
            if let Some(k) = prev.batch {
                for _ in 0..DEPTH {
                    let r = conn.read().expect("read");
                    assert!(is_int(&r), "create: unexpected reply {r:?}");
                }
                let jobs = workers[k % 2 * DEPTH..][..DEPTH]
                    .iter()
                    .map(|w| q.pulled(conn.read().expect("read"), w))
                    .collect();
                to_fulfil = Some(jobs);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(fulfilled, batches * DEPTH, "jobs fulfilled");
        secs
    }

    /// (c) End-to-end job throughput — create, pull, fulfil — against a BullMQ-style Lua
    /// queue ([`LUA_CREATE`], [`LUA_PULL`], [`LUA_FULFIL`]): at least 2x.
    ///
    /// Both run `JOBS` jobs through [`end_to_end`] on one server: the same client loop,
    /// the same pipeline depth (100 jobs per pipeline: 100 fulfilments, 100 creates, 100
    /// pulls), one connection, jobs/s as the client sees them. corral: `JOB.CREATE`,
    /// `JOB.PULL`, `JOB.FULFILL … TOKEN` on one key; Lua: `EVALSHA` of the three scripts.
    /// Each side starts from an empty keyspace (FLUSHALL; scripts stay loaded) and leaves
    /// its fulfilled jobs in place, as both stores do. The sides alternate, 5 rounds after a
    /// warm-up of each; each side's best round (noise only ever slows a round down). An
    /// informational row gives the server time per job in those runs (`INFO commandstats`:
    /// the three JOB commands against `cmdstat_evalsha`, which covers the scripts' inner
    /// calls).
    pub fn vs_lua(report: &mut Report) {
        const JOBS: usize = 50_000;
        const ROUNDS: usize = 5;

        let srv = Server::start();
        let mut admin = srv.conn();
        let mut conn = resp::Conn::connect(srv.port(), 64 * 1024).expect("connect");
        let queues = [
            Queue::Corral,
            Queue::Lua {
                create: util::load_script(&mut admin, LUA_CREATE),
                pull: util::load_script(&mut admin, LUA_PULL),
                fulfil: util::load_script(&mut admin, LUA_FULFIL),
            },
        ];
        const STATS: [&[&str]; 2] = [&["job.create", "job.pull", "job.fulfill"], &["evalsha"]];
        const LABELS: [&str; 2] = ["corral", "BullMQ-style Lua queue"];

        // One round of one side: (jobs/s, server usec per job).
        let mut run = |admin: &mut redis::Connection, i: usize, n: usize| -> (f64, f64) {
            let _: () = redis::cmd("FLUSHALL").query(admin).expect("FLUSHALL");
            reset_stats(admin);
            let secs = end_to_end(&mut conn, &queues[i], n);
            let stats = cmdstats(admin);
            let usec: u64 = STATS[i]
                .iter()
                .map(|name| stats.get(*name).map_or(0, |s| s.1))
                .sum();
            (n as f64 / secs, usec as f64 / n as f64)
        };
        for i in 0..queues.len() {
            run(&mut admin, i, JOBS / 10);
        }
        let mut rounds: Vec<Vec<(f64, f64)>> = queues.iter().map(|_| Vec::new()).collect();
        for round in 0..ROUNDS {
            for i in 0..queues.len() {
                let (rate, usec) = run(&mut admin, i, JOBS);
                eprintln!(
                    "bench:    round {round}: {}: {rate:.0} jobs/s ({usec:.2} usec of server time per job)",
                    LABELS[i]
                );
                rounds[i].push((rate, usec));
            }
        }
        let best = |i: usize| rounds[i].iter().map(|r| r.0).fold(f64::NAN, f64::max);
        let usec = |i: usize| min(&rounds[i].iter().map(|r| r.1).collect::<Vec<_>>());

        let jobs = num(JOBS as f64);
        report.add(Row::new(
            FAMILY,
            &format!(
                "end-to-end throughput, corral: JOB.CREATE → JOB.PULL → JOB.FULFILL TOKEN \
                 ({jobs} jobs, 100 per pipeline)"
            ),
            best(0),
            "jobs/s",
        ));
        report.add(Row::new(
            FAMILY,
            &format!(
                "end-to-end throughput, BullMQ-style Lua queue: EVALSHA create → pull → \
                 fulfil ({jobs} jobs, 100 per pipeline)"
            ),
            best(1),
            "jobs/s",
        ));
        report.add(
            Row::new(FAMILY, "end-to-end throughput, corral", best(0), "jobs/s")
                .vs(LABELS[1], best(1))
                .target(Target::RatioAtLeast(2.0)),
        );
        report.add(
            Row::new(
                FAMILY,
                "server time per job in those runs (create + pull + fulfil)",
                usec(0),
                "us",
            )
            .vs(LABELS[1], usec(1))
            .versus(
                "JOB.CREATE + JOB.PULL + JOB.FULFILL, end to end (per job)",
                Kind::Lua,
                "BullMQ-style Lua queue",
            ),
        );
    }
}
