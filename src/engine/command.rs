//! Command registration: one trampoline for every corral command (argument decoding and panic
//! containment), and the metadata that `COMMAND INFO` / `COMMAND DOCS` show (arity, flags, key
//! position, summary, complexity, arguments).

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use smallvec::SmallVec;

use super::args::Args;
use super::contain;
use super::ffi::{self, raw, CmdResult, Ctx, Error, RStr};

/// How an argument after the key is documented.
#[derive(Clone, Copy)]
pub enum Arg {
    /// A required string argument, e.g. `holder`.
    Str(&'static str),
    /// A required integer argument, e.g. `ms`.
    Int(&'static str),
    /// An optional `TOKEN value` pair, e.g. `[BLOCK ms]`.
    OptInt(&'static str, &'static str),
    /// An optional `TOKEN value` string pair, e.g. `[HOLDER id]`.
    OptStr(&'static str, &'static str),
    /// An optional flag, e.g. `[WITHTOKEN]`.
    Flag(&'static str),
    /// One or more string arguments.
    Many(&'static str),
    /// Zero or more string arguments.
    OptMany(&'static str),
}

/// A corral command. Every command takes exactly one key, at argument 1.
pub trait Command {
    /// Upper case, as shown in errors (`RESV.LOCK`).
    const NAME: &'static str;
    /// Redis command flags, e.g. `"write deny-oom"`.
    const FLAGS: &'static str;
    /// Redis arity: N exact, -N at least N (the command name counts).
    const ARITY: i32;
    const SUMMARY: &'static str;
    const COMPLEXITY: &'static str;
    /// Arguments after the key.
    const ARGS: &'static [Arg];
    /// The corral version that introduced the command (COMMAND DOCS `since`).
    const SINCE: &'static str = "0.1.0";
    /// Not for clients: flagged `internal` where the server knows that flag (Redis 8 answers
    /// "unknown command" to every connection but the replication link and the AOF loader), and
    /// left out of the `corral` ACL category. The command must still check who calls it: the
    /// flag does not exist on Redis 7 or Valkey 8.
    const INTERNAL: bool = false;

    fn run(ctx: Ctx, key: RStr, args: Args) -> CmdResult;
}

/// One row of the command table.
pub struct CommandDef {
    name: &'static str,
    flags: &'static str,
    arity: i32,
    summary: &'static str,
    complexity: &'static str,
    args: &'static [Arg],
    since: &'static str,
    internal: bool,
    func: ffi::CmdFunc,
}

pub const fn command<C: Command>() -> CommandDef {
    CommandDef {
        name: C::NAME,
        flags: C::FLAGS,
        arity: C::ARITY,
        summary: C::SUMMARY,
        complexity: C::COMPLEXITY,
        args: C::ARGS,
        since: C::SINCE,
        internal: C::INTERNAL,
        func: trampoline::<C>,
    }
}

/// The C entry point of every command: decodes argv into byte slices (no copies), runs the
/// command with panics contained, and writes the reply.
unsafe extern "C" fn trampoline<C: Command>(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // SAFETY: Redis passes the command's context and `argc` live argument strings.
    let (ctx, argv) = unsafe {
        let argv = if argv.is_null() || argc <= 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(argv, argc as usize)
        };
        (Ctx::from_raw(ctx), argv)
    };
    let result = contain(C::NAME, || {
        if argv.len() < 2 {
            return Err(Error::Arity);
        }
        // SAFETY: argv entries live for the duration of the command.
        let key = unsafe { RStr::from_raw(argv[1]) };
        let items: SmallVec<[&[u8]; 8]> = argv[2..]
            .iter()
            .map(|&s| unsafe { RStr::from_raw(s) }.bytes())
            .collect();
        C::run(ctx, key, Args::new(C::NAME, &items))
    })
    .unwrap_or_else(|| {
        Err(Error::msg(
            "ERR corral internal error (contained; see the server log)",
        ))
    });
    ctx.reply_result(result);
    raw::REDISMODULE_OK as c_int
}

/// The ACL category every public corral command is in, where the server has module categories
/// (Redis ≥ 7.4): `ACL SETUSER app on >pw ~app:* +@corral`.
pub const ACL_CATEGORY: &CStr = c"corral";

/// Whether `ACL_CATEGORY` exists on this server (set once by `create_acl_category` at load).
static HAS_CATEGORY: AtomicBool = AtomicBool::new(false);

/// Creates `ACL_CATEGORY` if the server supports module ACL categories. Called once at load,
/// before any command is registered.
pub fn create_acl_category(ctx: Ctx) {
    HAS_CATEGORY.store(ffi::add_acl_category(ctx, ACL_CATEGORY), Ordering::Relaxed);
}

/// A public command's ACL categories: `corral`, and the built-in ones its flags imply for Redis's
/// own commands (`write`, `read`, `fast` or `slow`, `blocking`) — which Redis does not give
/// module commands by itself, so `+@read` would otherwise grant none of corral's.
fn acl_categories(flags: &str) -> String {
    let mut out = vec![ACL_CATEGORY.to_str().unwrap_or("corral")];
    let has = |f: &str| flags.split(' ').any(|x| x == f);
    for (flag, category) in [
        ("write", "write"),
        ("readonly", "read"),
        ("blocking", "blocking"),
    ] {
        if has(flag) {
            out.push(category);
        }
    }
    out.push(if has("fast") { "fast" } else { "slow" });
    out.join(" ")
}

/// Registers commands and their documentation. Called once from `RedisModule_OnLoad`.
pub fn register(ctx: Ctx, table: &[CommandDef]) -> Result<(), String> {
    for def in table {
        let name = CString::new(def.name.to_ascii_lowercase()).map_err(|e| e.to_string())?;
        let flags = CString::new(def.flags).map_err(|e| e.to_string())?;
        let registered = if def.internal {
            // `internal` is Redis 8's; older servers refuse an unknown flag, so fall back.
            let internal = CString::new(format!("{} internal", def.flags)).unwrap_or_default();
            ffi::create_command(ctx, &name, def.func, &internal)
                || ffi::create_command(ctx, &name, def.func, &flags)
        } else {
            ffi::create_command(ctx, &name, def.func, &flags)
        };
        if !registered {
            return Err(format!("could not register {}", def.name));
        }
        let Some(cmd) = ffi::get_command(ctx, &name) else {
            return Err(format!("{} is not registered", def.name));
        };
        if !def.internal && HAS_CATEGORY.load(Ordering::Relaxed) {
            let categories = CString::new(acl_categories(def.flags)).unwrap_or_default();
            if !ffi::set_acl_categories(cmd, &categories) {
                return Err(format!("could not put {} in @corral", def.name));
            }
        }
        if let Err(e) = document(cmd, def) {
            ffi::log(
                Some(ctx),
                c"warning",
                &format!("corral: {} has no COMMAND DOCS: {e}", def.name),
            );
        }
    }
    Ok(())
}

/// The C strings of one command's metadata. RedisModule_SetCommandInfo copies everything it is
/// given, so they only need to live until it returns (they were once leaked: valgrind showed
/// them as definitely lost, since Redis keeps no pointer to them).
#[derive(Default)]
struct CStrings(Vec<CString>);

impl CStrings {
    /// `s` as a C string that lives as long as `self`.
    fn add(&mut self, s: &str) -> *const c_char {
        let c = CString::new(s).unwrap_or_default();
        // The heap buffer does not move when the CString moves into the Vec.
        let p = c.as_ptr();
        self.0.push(c);
        p
    }
}

/// Fills `COMMAND INFO`/`COMMAND DOCS` through RedisModule_SetCommandInfo (Redis ≥ 7.0).
fn document(cmd: ffi::CommandHandle, def: &CommandDef) -> Result<(), &'static str> {
    // SAFETY: read of the API table, written once by RedisModule_Init before OnLoad runs.
    let set = unsafe { raw::RedisModule_SetCommandInfo }.ok_or("no SetCommandInfo")?;
    let readonly = def.flags.split(' ').any(|f| f == "readonly");

    // SAFETY (zeroed): these are plain C structs for which all-zero means "field absent".
    let mut spec: raw::RedisModuleCommandKeySpec = unsafe { std::mem::zeroed() };
    spec.flags = if readonly {
        (raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS) as u64
    } else {
        (raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_UPDATE) as u64
    };
    spec.begin_search_type = raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
    spec.bs.index.pos = 1;
    spec.find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
    spec.fk.range.lastkey = 0;
    spec.fk.range.keystep = 1;
    spec.fk.range.limit = 0;
    // SAFETY: zeroed terminator entry.
    let mut specs = [spec, unsafe { std::mem::zeroed() }];
    let mut strings = CStrings::default();

    let mut args = vec![arg(
        &mut strings,
        "key",
        raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
        None,
        0,
    )];
    args[0].key_spec_index = 0;
    for a in def.args {
        use raw::*;
        let opt = REDISMODULE_CMD_ARG_OPTIONAL as c_int;
        args.push(match *a {
            Arg::Str(n) => arg(
                &mut strings,
                n,
                RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
                None,
                0,
            ),
            Arg::Int(n) => arg(
                &mut strings,
                n,
                RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
                None,
                0,
            ),
            Arg::OptInt(t, n) => arg(
                &mut strings,
                n,
                RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
                Some(t),
                opt,
            ),
            Arg::OptStr(t, n) => arg(
                &mut strings,
                n,
                RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
                Some(t),
                opt,
            ),
            Arg::Flag(t) => arg(
                &mut strings,
                &t.to_ascii_lowercase(),
                RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
                Some(t),
                opt,
            ),
            Arg::Many(n) => arg(
                &mut strings,
                n,
                RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
                None,
                REDISMODULE_CMD_ARG_MULTIPLE as c_int,
            ),
            Arg::OptMany(n) => arg(
                &mut strings,
                n,
                RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
                None,
                (REDISMODULE_CMD_ARG_MULTIPLE | REDISMODULE_CMD_ARG_OPTIONAL) as c_int,
            ),
        });
    }
    // SAFETY: zeroed terminator entry.
    args.push(unsafe { std::mem::zeroed() });

    let mut version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
    };
    // SAFETY: zeroed = all optional fields absent.
    let mut info: raw::RedisModuleCommandInfo = unsafe { std::mem::zeroed() };
    info.version = &mut version;
    info.summary = strings.add(def.summary);
    info.complexity = strings.add(def.complexity);
    info.since = strings.add(def.since);
    info.arity = def.arity;
    info.key_specs = specs.as_mut_ptr();
    info.args = args.as_mut_ptr();
    // SAFETY: every pointer in `info` (version, specs, args, strings) points into locals that
    // live until after this call; SetCommandInfo copies what it keeps.
    let ok = unsafe { set(cmd.as_ptr(), &info) } == raw::REDISMODULE_OK as c_int;
    ok.then_some(())
        .ok_or("SetCommandInfo refused the metadata")
}

fn arg(
    strings: &mut CStrings,
    name: &str,
    ty: raw::RedisModuleCommandArgType,
    token: Option<&str>,
    flags: c_int,
) -> raw::RedisModuleCommandArg {
    // SAFETY: zeroed = optional fields absent.
    let mut a: raw::RedisModuleCommandArg = unsafe { std::mem::zeroed() };
    a.name = strings.add(name);
    a.type_ = ty;
    a.key_spec_index = -1;
    a.token = token.map_or(std::ptr::null(), |t| strings.add(t));
    a.flags = flags;
    a
}

#[cfg(test)]
mod tests {
    #[test]
    fn acl_categories_follow_the_flags() {
        use super::acl_categories;
        assert_eq!(
            acl_categories("write deny-oom blocking"),
            "corral write blocking slow"
        );
        assert_eq!(acl_categories("readonly fast"), "corral read fast");
    }
}
