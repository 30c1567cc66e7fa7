//! The migration examples and the recipes are tests: `tests/examples/{node,python,rust}/<name>`
//! each replay one library's own README flow (or one README recipe) against corral (ioredis,
//! redis-py, the `redis` crate) and exit non-zero when a reply is not what corral documents or
//! the recipe does not hold what it claims. This file runs every one of them against a fresh
//! server of its own (`REDIS_URL`); a recipe that needs a replica also gets one
//! (`REDIS_REPLICA_URL`, already in sync when the program starts).
//!
//! What they need: Node with `tests/examples/node/node_modules` (`npm ci` there), a Python with
//! redis-py (`$CORRAL_PYTHON`, default `target/examples/venv/bin/python`), and the Rust examples,
//! which `cargo test` builds (`[[example]]` in Cargo.toml). `scripts/test` installs the first
//! two (`scripts/setup-examples`). A language whose client is missing fails its test — a test
//! that ran nothing must not pass — unless the skip is asked for: `CORRAL_EXAMPLES=skip` skips
//! the missing ones (and says so loudly in the output); `scripts/test` never sets it.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;

/// The five flows, named after what they replace: callosum-server-slots, redis-reservation,
/// atributo, @eqworks/passbuddy, fs-job-store.
const EXAMPLES: [&str; 5] = [
    "slots",
    "reservation",
    "allocation",
    "semaphore",
    "job_store",
];

/// The README's recipes (section "Recipes"), each with the servers it needs.
const RECIPES: &[(&str, Topology)] = &[
    ("lease_keeper", Topology::Single),
    ("rwlock", Topology::Single),
    ("leader_election", Topology::Single),
    ("durable_grants", Topology::WithReplica),
    ("worker_pool", Topology::Single),
];

/// What servers an example runs against.
#[derive(Clone, Copy)]
enum Topology {
    /// One primary: `REDIS_URL`.
    Single,
    /// A primary (`REDIS_URL`) and its replica (`REDIS_REPLICA_URL`).
    WithReplica,
}

/// An example that has not finished by then has hung.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How to start one example of a language, or why it cannot run here.
type Launcher = fn(&str) -> Result<Command, String>;

fn node(name: &str) -> Result<Command, String> {
    let dir = repo().join("tests/examples/node");
    if !dir.join("node_modules/ioredis").is_dir() {
        return Err(format!(
            "no ioredis in {}/node_modules (run npm ci there)",
            dir.display()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("no `node` on PATH".into());
    }
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(format!("{name}.mjs")));
    Ok(cmd)
}

fn python(name: &str) -> Result<Command, String> {
    let python = std::env::var_os("CORRAL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/examples/venv/bin/python"));
    if !python.exists() {
        return Err(format!("no Python with redis-py at {}", python.display()));
    }
    let mut cmd = Command::new(python);
    cmd.arg(repo().join(format!("tests/examples/python/{name}.py")));
    Ok(cmd)
}

fn rust(name: &str) -> Result<Command, String> {
    // The examples are built into target/<profile>/examples/, next to this test's own
    // directory (target/<profile>/deps/examples-<hash>).
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no target directory")?;
    build_rust_examples(profile_dir)?;
    let bin = profile_dir.join("examples").join(name);
    if !bin.exists() {
        return Err(format!("{} was not built", bin.display()));
    }
    Ok(Command::new(bin))
}

/// `cargo build --examples` in this test's profile, once per run: a plain `cargo test` builds
/// the examples, but `cargo test --test examples` does not, and a binary left from an earlier
/// build may be stale. (cargo holds no lock on the build directory while tests run.)
fn build_rust_examples(profile_dir: &Path) -> Result<(), String> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let profile = profile_dir
                .file_name()
                .and_then(|p| p.to_str())
                .ok_or("no profile directory")?;
            let target_dir = profile_dir.parent().ok_or("no target directory")?;
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .current_dir(repo())
                .args(["build", "--examples", "--profile"])
                .arg(if profile == "debug" { "dev" } else { profile })
                .arg("--target-dir")
                .arg(target_dir);
            let out = cargo
                .output()
                .map_err(|e| format!("could not run {cargo:?}: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{cargo:?} failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(())
        })
        .clone()
}

/// Runs every example of one language, each against a fresh server, and fails with the
/// example's output if one fails. Examples of one language run one at a time: several of
/// them wait for leases to lapse, which a crowded 2-core machine should not make them miss.
fn run_all(language: &str, launcher: Launcher) {
    let examples = EXAMPLES.iter().map(|&name| (name, Topology::Single));
    run_each(language, launcher, examples.chain(RECIPES.iter().copied()));
}

fn run_each<'a>(
    language: &str,
    launcher: Launcher,
    examples: impl Iterator<Item = (&'a str, Topology)>,
) {
    let skip_allowed = skip_allowed();
    let mut failures = Vec::new();
    for (name, topology) in examples {
        let mut cmd = match launcher(name) {
            Ok(cmd) => cmd,
            Err(why) if skip_allowed => {
                // Written to stderr itself, not through eprintln!, which the test harness
                // captures: the skip shows in every run, not only with --nocapture.
                let banner = format!(
                    "\n{bar}\nSKIPPED: the {language} examples did not run: {why}\n\
                     (CORRAL_EXAMPLES=skip; scripts/setup-examples installs what they need)\n{bar}\n",
                    bar = "!".repeat(78)
                );
                let _ = std::io::stderr().write_all(banner.as_bytes());
                return;
            }
            Err(why) => panic!(
                "{language} example {name} cannot run: {why}. scripts/setup-examples installs \
                 what the examples need (scripts/test runs it); CORRAL_EXAMPLES=skip skips them \
                 explicitly"
            ),
        };
        let server = Server::start();
        cmd.env("REDIS_URL", server.url());
        let replica = match topology {
            Topology::Single => None,
            Topology::WithReplica => Some(Server::replica_of(&server)),
        };
        if let Some(replica) = &replica {
            cmd.env("REDIS_REPLICA_URL", replica.url());
        }
        let started = Instant::now();
        let log = server.dir().join(format!("{language}-{name}.out"));
        let output = run_with_timeout(&mut cmd, &log);
        let took = started.elapsed().as_secs_f64();
        match output {
            Ok((true, out)) => println!("{language} {name}: ok in {took:.1} s\n{out}"),
            Ok((false, out)) => failures.push(format!("{language} {name} failed:\n{out}")),
            Err(why) => failures.push(format!("{language} {name}: {why}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// True when `CORRAL_EXAMPLES=skip` allows examples whose client is missing to be skipped. Any
/// other value (`required`, which `scripts/test` used to set, included) or none: a missing
/// client is a failure.
fn skip_allowed() -> bool {
    match std::env::var("CORRAL_EXAMPLES") {
        Ok(v) if v == "skip" => true,
        Ok(v) if v.is_empty() || v == "required" => false,
        Ok(v) => panic!("CORRAL_EXAMPLES={v:?}: expected `skip` (or unset)"),
        Err(_) => false,
    }
}

/// Runs `cmd` with its output going to `log`, killing it after [`EXAMPLE_TIMEOUT`]; answers
/// whether it succeeded and what it printed.
fn run_with_timeout(cmd: &mut Command, log: &Path) -> Result<(bool, String), String> {
    let timeout = EXAMPLE_TIMEOUT;
    let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break Some(status),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let printed = std::fs::read_to_string(log).unwrap_or_default();
    match status {
        Some(status) => Ok((status.success(), format!("{printed}({status})"))),
        None => Err(format!("hung: killed after {timeout:?}\n{printed}")),
    }
}

#[test]
fn node_examples() {
    run_all("node", node);
}

#[test]
fn python_examples() {
    run_all("python", python);
}

#[test]
fn rust_examples() {
    run_all("rust", rust);
}
