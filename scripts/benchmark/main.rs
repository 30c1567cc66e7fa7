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
//! Layout of this folder (`scripts/benchmark/`):
//! - this file: [`SECTIONS`], every measurement by name (`scripts/bench resv` runs only the
//!   sections whose name contains `resv`), and `main`. **A new family adds its sections
//!   here** and a file like `resv.rs`.
//! - [`report`]: the rows, the targets, the Markdown and JSON output. A row may also carry a
//!   [`report::Plot`]: its place, and its numbers, in the charts. [`meta`]: the facts about
//!   the run printed above the table (date, machine, versions).
//! - [`chart`]: the SVG charts drawn from those rows.
//! - [`resp`]: the raw RESP client of the tests (`tests/common/raw.rs`): pre-encoded
//!   pipelines, thousands of sockets.
//! - [`util`]: helpers shared by the sections (workloads measured by `INFO commandstats`,
//!   bulk pipelines, the memory comparison, percentiles, INFO parsing).
//! - [`resv`], [`sem`], [`slot`], [`alloc`], [`job`]: each family's sections.

#[path = "../../tests/common/mod.rs"]
mod common;

mod alloc;
mod chart;
mod job;
mod meta;
mod report;
mod resv;
mod sem;
mod slot;
mod util;

/// The raw RESP client (`tests/common/raw.rs`), for the hot loops and the 10,000 sockets.
use common::raw as resp;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use meta::Meta;
use report::{Report, Row};

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
        name: "resv/contended",
        run: resv::contended,
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
    Section {
        family: "JOB",
        name: "job/priorities",
        run: job::priorities,
    },
    Section {
        family: "JOB",
        name: "job/due",
        run: job::due,
    },
    Section {
        family: "JOB",
        name: "job/queue-vs-lua",
        run: job::vs_lua_priorities,
    },
    Section {
        family: "JOB",
        name: "job/memory-priorities",
        run: job::memory_priorities,
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
