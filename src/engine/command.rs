//! Command registration: one trampoline for every corral command (argument decoding and panic
//! containment), and the metadata that `COMMAND INFO` / `COMMAND DOCS` show (arity, flags, key
//! position, summary, complexity, arguments).

use std::ffi::{c_int, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use smallvec::SmallVec;

use super::args::Args;
use super::ffi::{self, raw, CmdResult, Ctx, Error, RStr};
use super::state::contain;

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

/// Redis arity from the documented arguments: N exact (the command name and the key count),
/// -N for at least N when anything is optional or repeated. A `Many` needs one.
pub const fn arity(args: &[Arg]) -> i32 {
    let (mut required, mut variadic, mut i) = (2, false, 0);
    while i < args.len() {
        match args[i] {
            Arg::Str(_) | Arg::Int(_) => required += 1,
            Arg::Many(_) => {
                required += 1;
                variadic = true;
            }
            Arg::OptInt(..) | Arg::OptStr(..) | Arg::Flag(_) | Arg::OptMany(_) => variadic = true,
        }
        i += 1;
    }
    if variadic {
        -required
    } else {
        required
    }
}

impl CommandDef {
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn arity(&self) -> i32 {
        self.arity
    }
}

pub const fn command<C: Command>() -> CommandDef {
    CommandDef {
        name: C::NAME,
        flags: C::FLAGS,
        arity: arity(C::ARGS),
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

/// Fills `COMMAND INFO`/`COMMAND DOCS` (Redis ≥ 7.0): the key at argument 1, then `def.args`.
fn document(cmd: ffi::CommandHandle, def: &CommandDef) -> Result<(), &'static str> {
    use ffi::{ArgDoc, ArgKind};
    let args: Vec<ArgDoc> = def
        .args
        .iter()
        .map(|a| match *a {
            Arg::Str(n) => ArgDoc::new(n, ArgKind::String),
            Arg::Int(n) => ArgDoc::new(n, ArgKind::Integer),
            Arg::OptInt(t, n) => ArgDoc::new(n, ArgKind::Integer).token(t).optional(),
            Arg::OptStr(t, n) => ArgDoc::new(n, ArgKind::String).token(t).optional(),
            Arg::Flag(t) => ArgDoc::new(t, ArgKind::PureToken).token(t).optional(),
            Arg::Many(n) => ArgDoc::new(n, ArgKind::String).multiple(),
            Arg::OptMany(n) => ArgDoc::new(n, ArgKind::String).multiple().optional(),
        })
        .collect();
    ffi::set_command_info(
        cmd,
        &ffi::CommandDocs {
            summary: def.summary,
            complexity: def.complexity,
            since: def.since,
            arity: def.arity,
            readonly: def.flags.split(' ').any(|f| f == "readonly"),
            args: &args,
        },
    )
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
