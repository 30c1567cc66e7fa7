//! The migration examples are tests: `tests/examples/{node,python,rust}/<name>` each replay one
//! library's own README flow against corral (ioredis, redis-py, the `redis` crate) and exit
//! non-zero when a reply is not what corral documents. This file runs every one of them against
//! a fresh server of its own.
//!
//! What they need: Node with `tests/examples/node/node_modules` (`npm ci` there), a Python with
//! redis-py (`$CORRAL_PYTHON`, default `target/examples/venv/bin/python`), and the Rust examples,
//! which `cargo test` builds (`[[example]]` in Cargo.toml). `scripts/test` installs the first
//! two (`scripts/setup-examples`) and sets `CORRAL_EXAMPLES=required`, which turns a missing one
//! into a failure; a bare `cargo test` without them says what it skipped.

mod common;

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
    // cargo test builds the examples next to this test's own directory:
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no target directory")?;
    let bin = profile_dir.join("examples").join(name);
    if !bin.exists() {
        return Err(format!(
            "{} was not built (cargo test builds it)",
            bin.display()
        ));
    }
    Ok(Command::new(bin))
}

/// Runs every example of one language, each against a fresh server, and fails with the
/// example's output if one fails. Examples of one language run one at a time: several of
/// them wait for leases to lapse, which a crowded 2-core machine should not make them miss.
fn run_all(language: &str, launcher: Launcher) {
    let required = std::env::var("CORRAL_EXAMPLES").is_ok_and(|v| v == "required");
    let mut failures = Vec::new();
    for name in EXAMPLES {
        let mut cmd = match launcher(name) {
            Ok(cmd) => cmd,
            Err(why) if required => panic!("{language} example {name} cannot run: {why}"),
            Err(why) => {
                eprintln!("SKIPPED {language} examples: {why} (scripts/test installs it)");
                return;
            }
        };
        let server = Server::start();
        let started = Instant::now();
        let log = server.dir().join(format!("{language}-{name}.out"));
        let output = run_with_timeout(cmd.env("REDIS_URL", server.url()), &log);
        let took = started.elapsed().as_secs_f64();
        match output {
            Ok((true, out)) => println!("{language} {name}: ok in {took:.1} s\n{out}"),
            Ok((false, out)) => failures.push(format!("{language} {name} failed:\n{out}")),
            Err(why) => failures.push(format!("{language} {name}: {why}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
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
