//! Every raw `RedisModule_*` call corral makes lives in this file, behind small safe wrappers.
//!
//! The rest of the crate sees `Ctx`, `Key`, `RStr`, `Reply` and a handful of functions; it never
//! touches a raw pointer. Each `unsafe` block says why it is sound. Function pointers in the
//! API table are filled in by `RedisModule_Init` before any of this runs, so a missing one means
//! the server is older than Redis 7.0: callers get `None`/an error instead of a crash.

use std::ffi::{c_char, c_int, c_long, c_void, CStr};
use std::ptr::{self, NonNull};

use raw::{RedisModuleCtx, RedisModuleKey, RedisModuleString};
pub use redis_module::raw;

/// Calls an API function that Redis ≥ 7.0 always provides. On an older server the module refuses
/// to load (see `check_api`), so the `None` arm is unreachable in practice; it logs instead of
/// panicking to keep the promise that corral never crashes Redis.
macro_rules! api {
    ($name:ident) => {
        // Always expanded inside an `unsafe` block: the API table is written once by
        // RedisModule_Init, before any corral code runs, and never again.
        match raw::$name {
            Some(f) => f,
            None => unreachable_api(stringify!($name)),
        }
    };
}

#[cold]
fn unreachable_api(name: &str) -> ! {
    // check_api() refuses to load the module when any of these is missing, so this cannot run.
    panic!("corral: Redis module API {name} is missing")
}

/// Verifies at load time that every API function corral calls exists on this server.
pub fn check_api() -> Result<(), &'static str> {
    macro_rules! need {
        ($($name:ident),*) => {$(
            // SAFETY: read of the API table, written once by RedisModule_Init before this runs.
            if unsafe { raw::$name }.is_none() { return Err(stringify!($name)); }
        )*};
    }
    need!(
        RedisModule_OpenKey,
        RedisModule_CloseKey,
        RedisModule_KeyType,
        RedisModule_ModuleTypeGetType,
        RedisModule_ModuleTypeGetValue,
        RedisModule_ModuleTypeSetValue,
        RedisModule_DeleteKey,
        RedisModule_SetAbsExpire,
        RedisModule_SetExpire,
        RedisModule_StringPtrLen,
        RedisModule_CreateString,
        RedisModule_FreeString,
        RedisModule_SelectDb,
        RedisModule_GetSelectedDb,
        RedisModule_GetContextFlags,
        RedisModule_Replicate,
        RedisModule_ReplicateVerbatim,
        RedisModule_NotifyKeyspaceEvent,
        RedisModule_Milliseconds,
        RedisModule_BlockClient,
        RedisModule_UnblockClient,
        RedisModule_SetDisconnectCallback,
        RedisModule_GetBlockedClientPrivateData,
        RedisModule_GetBlockedClientHandle,
        RedisModule_CreateTimer,
        RedisModule_StopTimer,
        RedisModule_ReplyWithLongLong,
        RedisModule_ReplyWithNull,
        RedisModule_ReplyWithArray,
        RedisModule_ReplyWithMap,
        RedisModule_ReplyWithStringBuffer,
        RedisModule_ReplyWithSimpleString,
        RedisModule_ReplyWithError,
        RedisModule_WrongArity,
        RedisModule_EmitAOF,
        RedisModule_SaveStringBuffer,
        RedisModule_LoadStringBuffer,
        RedisModule_SaveUnsigned,
        RedisModule_LoadUnsigned,
        RedisModule_IsIOError,
        RedisModule_DigestAddStringBuffer,
        RedisModule_DigestEndSequence,
        RedisModule_CreateCommand,
        RedisModule_CreateDataType,
        RedisModule_GetCommand,
        RedisModule_SetCommandInfo,
        RedisModule_GetClientId,
        RedisModule_SubscribeToKeyspaceEvents,
        RedisModule_SubscribeToServerEvent,
        RedisModule_RegisterInfoFunc,
        RedisModule_InfoAddSection,
        RedisModule_InfoAddFieldULongLong,
        RedisModule_Log,
        RedisModule_Free
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Time

/// The server's wall clock in milliseconds (the only clock corral reads).
pub fn now_ms() -> u64 {
    // SAFETY: Milliseconds takes no arguments and only reads the clock.
    let ms = unsafe { api!(RedisModule_Milliseconds)() };
    ms.max(0) as u64
}

/// The wall clock in microseconds: the same clock as `now_ms` (Redis's `mstime` reads
/// gettimeofday), read finer, for fencing tokens' time component (`tokens::ticks_at`). A
/// command's transaction reads it once for both. Redis 7.0 has no module call for it.
pub fn now_us() -> u64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        Err(_) => now_ms().saturating_mul(1000),
    }
}

/// True while Redis holds writes back: `CLIENT PAUSE` (WRITE or ALL), a `CLUSTER FAILOVER`
/// or `FAILOVER` handing over to a replica, a `SHUTDOWN` waiting for its replicas. Redis then
/// expires and evicts nothing, and aborts (`areClientsPaused()` assertion) if anything is
/// propagated — so the deadline timer must not lapse leases either until it ends.
pub fn writes_paused() -> bool {
    // SAFETY: AvoidReplicaTraffic takes no arguments and only reads the server's pause state.
    unsafe { api!(RedisModule_AvoidReplicaTraffic)() != 0 }
}

/// Reports `ms` spent in `event` to Redis's latency monitor (`LATENCY LATEST`, `LATENCY
/// HISTORY <event>`), which keeps it only when it reaches `latency-monitor-threshold`.
pub fn latency_sample(event: &CStr, ms: u64) {
    // SAFETY: event is a NUL-terminated string that Redis copies if it keeps the sample.
    unsafe { api!(RedisModule_LatencyAddSample)(event.as_ptr(), ms.min(i64::MAX as u64) as i64) };
}

// ---------------------------------------------------------------------------------------------
// Strings

/// A borrowed `RedisModuleString` (an argument, or a key name handed to a callback).
#[derive(Clone, Copy)]
pub struct RStr(*mut RedisModuleString);

impl RStr {
    /// # Safety
    /// `ptr` must be a live RedisModuleString for as long as this value is used.
    pub unsafe fn from_raw(ptr: *mut RedisModuleString) -> Self {
        Self(ptr)
    }

    pub fn as_ptr(self) -> *mut RedisModuleString {
        self.0
    }

    /// The string's bytes. Valid while the string lives (the duration of a callback).
    pub fn bytes<'a>(self) -> &'a [u8] {
        if self.0.is_null() {
            return &[];
        }
        let mut len = 0usize;
        // SAFETY: self.0 is a live string (constructor contract); StringPtrLen never fails for one.
        let p = unsafe { api!(RedisModule_StringPtrLen)(self.0, &mut len) };
        if p.is_null() {
            return &[];
        }
        // SAFETY: Redis guarantees `len` readable bytes at `p` while the string lives.
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
    }
}

/// A string corral created itself (e.g. a key name kept in the scheduler). Freed on drop.
pub struct OwnedStr(NonNull<RedisModuleString>);

impl OwnedStr {
    /// Byte-safe: NUL bytes and any other bytes are fine.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        // SAFETY: a null ctx creates a string not tied to any context; freed with a null ctx below.
        let p = unsafe {
            api!(RedisModule_CreateString)(ptr::null_mut(), bytes.as_ptr().cast(), bytes.len())
        };
        NonNull::new(p).map(Self)
    }

    pub fn as_rstr(&self) -> RStr {
        RStr(self.0.as_ptr())
    }
}

impl Drop for OwnedStr {
    fn drop(&mut self) {
        // SAFETY: created with a null ctx in `new` and freed exactly once here.
        unsafe { api!(RedisModule_FreeString)(ptr::null_mut(), self.0.as_ptr()) }
    }
}

// ---------------------------------------------------------------------------------------------
// Replies

/// What a command answers. Built by pure code, written to the client by `Ctx::reply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nil,
    Int(i64),
    Ok,
    Bulk(Vec<u8>),
    Array(Vec<Reply>),
    /// A map: written as a RESP3 map, or as a flat array to RESP2 clients (Redis converts).
    Map(Vec<(&'static str, Reply)>),
    /// An error reply handed to a blocked client (full text, starting with its code).
    Error(String),
    /// Nothing: the client was blocked and is answered later.
    Blocked,
}

/// An error reply. `Arity` is Redis's own wrong-arity error; everything else carries its full
/// text starting with the error code (`ERR …`, `NOTHELD …`, `STALE …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Arity,
    WrongType,
    Msg(String),
}

impl Error {
    pub fn msg(text: impl Into<String>) -> Self {
        Error::Msg(text.into())
    }
}

pub type CmdResult = Result<Reply, Error>;

// ---------------------------------------------------------------------------------------------
// Context

pub const CTX_FLAGS_MASTER: c_int = raw::REDISMODULE_CTX_FLAGS_MASTER as c_int;
const CTX_FLAGS_LOADING: c_int = raw::REDISMODULE_CTX_FLAGS_LOADING as c_int;
const CTX_FLAGS_REPLICATED: c_int = raw::REDISMODULE_CTX_FLAGS_REPLICATED as c_int;
const CTX_FLAGS_NO_BLOCK: c_int = (raw::REDISMODULE_CTX_FLAGS_MULTI
    | raw::REDISMODULE_CTX_FLAGS_LUA
    | raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING) as c_int;

/// `RedisModule_GetContextFlags`, which computes a dozen server states: read it once per
/// command.
#[derive(Clone, Copy)]
pub struct CtxFlags(c_int);

impl CtxFlags {
    /// A primary that is not loading: the only place leases lapse and grants happen.
    pub fn is_primary(self) -> bool {
        self.0 & CTX_FLAGS_MASTER != 0 && self.0 & CTX_FLAGS_LOADING == 0
    }

    /// True when the AOF is on.
    pub fn aof_on(self) -> bool {
        self.0 & raw::REDISMODULE_CTX_FLAGS_AOF as c_int != 0
    }

    /// True on a Redis Cluster node (`cluster-enabled yes`).
    pub fn is_cluster(self) -> bool {
        self.0 & raw::REDISMODULE_CTX_FLAGS_CLUSTER as c_int != 0
    }

    /// True when the running command came from this replica's primary, over the replication
    /// link (inside the MULTI/EXEC the primary wraps it in, too).
    pub fn from_primary_link(self) -> bool {
        self.0 & CTX_FLAGS_REPLICATED != 0
    }

    /// True while the server loads its data (AOF replay, RDB load, a full sync).
    pub fn is_loading(self) -> bool {
        self.0 & CTX_FLAGS_LOADING != 0
    }

    /// False inside MULTI/EXEC, scripts and other contexts that must not block.
    pub fn can_block(self) -> bool {
        self.0 & CTX_FLAGS_NO_BLOCK == 0
    }
}

/// The id Redis gives the fake client that replays the AOF (`CLIENT_ID_AOF` in Redis and
/// Valkey: the largest id, which no connection ever gets).
pub const AOF_CLIENT_ID: u64 = u64::MAX;

/// A module context handed to a callback; valid for that callback only.
#[derive(Clone, Copy)]
pub struct Ctx(*mut RedisModuleCtx);

impl Ctx {
    /// # Safety
    /// `ctx` must be the context Redis passed to the running callback.
    pub unsafe fn from_raw(ctx: *mut RedisModuleCtx) -> Self {
        Self(ctx)
    }

    pub fn as_ptr(self) -> *mut RedisModuleCtx {
        self.0
    }

    /// The context's flags, read once and asked several questions.
    pub fn flags(self) -> CtxFlags {
        // SAFETY: GetContextFlags accepts any context, including the detached module context.
        CtxFlags(unsafe { api!(RedisModule_GetContextFlags)(self.0) })
    }

    /// True on a primary that is not loading: the only place leases lapse and grants happen.
    pub fn is_primary(self) -> bool {
        self.flags().is_primary()
    }

    /// The id of the client running the command: `AOF_CLIENT_ID` while the AOF is replayed.
    pub fn client_id(self) -> u64 {
        // SAFETY: plain read of the context's client (0 when there is none).
        unsafe { api!(RedisModule_GetClientId)(self.0) }
    }

    pub fn selected_db(self) -> i32 {
        // SAFETY: plain read of the context's db.
        unsafe { api!(RedisModule_GetSelectedDb)(self.0) }
    }

    pub fn select_db(self, db: i32) -> bool {
        // SAFETY: SelectDb validates the index and answers ERR for a bad one.
        unsafe { api!(RedisModule_SelectDb)(self.0, db) == raw::REDISMODULE_OK as c_int }
    }

    pub fn open_key(self, name: RStr, write: bool) -> Key {
        let mode = if write {
            raw::REDISMODULE_READ | raw::REDISMODULE_WRITE
        } else {
            raw::REDISMODULE_READ
        };
        // SAFETY: `name` is live for the callback; the key is closed by Key's Drop.
        let p = unsafe { api!(RedisModule_OpenKey)(self.0, name.as_ptr(), mode as c_int) };
        Key { ptr: p.cast() }
    }

    /// Propagates `cmd key payload` to replicas and the AOF (wrapped in MULTI/EXEC by Redis
    /// together with anything else this callback propagates).
    pub fn replicate(self, cmd: &CStr, key: RStr, payload: &[u8]) {
        // SAFETY: format "sb" = one RedisModuleString then a (ptr, len) buffer, which we pass.
        unsafe {
            api!(RedisModule_Replicate)(
                self.0,
                cmd.as_ptr(),
                c"sb".as_ptr(),
                key.as_ptr(),
                payload.as_ptr().cast::<c_char>(),
                payload.len(),
            );
        }
    }

    /// Raises a module-class keyspace notification (`notify-keyspace-events` needs `d`).
    pub fn notify(self, event: &CStr, key: RStr) {
        // SAFETY: event is NUL-terminated, key is live.
        unsafe {
            api!(RedisModule_NotifyKeyspaceEvent)(
                self.0,
                raw::REDISMODULE_NOTIFY_MODULE as c_int,
                event.as_ptr(),
                key.as_ptr(),
            );
        }
    }

    pub fn log_warning(self, msg: &str) {
        log(Some(self), c"warning", msg);
    }

    pub fn reply_result(self, result: CmdResult) {
        match result {
            Ok(r) => self.reply(&r),
            Err(Error::Arity) => {
                // SAFETY: WrongArity writes the standard error for the running command.
                unsafe { api!(RedisModule_WrongArity)(self.0) };
            }
            Err(Error::WrongType) => self
                .reply_error("WRONGTYPE Operation against a key holding the wrong kind of value"),
            Err(Error::Msg(m)) => self.reply_error(&m),
        }
    }

    pub fn reply(self, reply: &Reply) {
        // SAFETY (all arms): each call writes one RESP element to the current client.
        unsafe {
            match reply {
                Reply::Nil => {
                    api!(RedisModule_ReplyWithNull)(self.0);
                }
                Reply::Int(i) => {
                    api!(RedisModule_ReplyWithLongLong)(self.0, *i);
                }
                Reply::Ok => {
                    api!(RedisModule_ReplyWithSimpleString)(self.0, c"OK".as_ptr());
                }
                Reply::Bulk(b) => {
                    api!(RedisModule_ReplyWithStringBuffer)(self.0, b.as_ptr().cast(), b.len());
                }
                Reply::Array(items) => {
                    api!(RedisModule_ReplyWithArray)(self.0, items.len() as c_long);
                    for r in items {
                        self.reply(r);
                    }
                }
                Reply::Map(pairs) => {
                    api!(RedisModule_ReplyWithMap)(self.0, pairs.len() as c_long);
                    for (k, v) in pairs {
                        api!(RedisModule_ReplyWithStringBuffer)(self.0, k.as_ptr().cast(), k.len());
                        self.reply(v);
                    }
                }
                Reply::Error(m) => self.reply_error(m),
                Reply::Blocked => {}
            }
        }
    }

    /// Error text must not contain CR/LF (it would break RESP): they become spaces.
    pub fn reply_error(self, msg: &str) {
        let mut buf: Vec<u8> = msg
            .bytes()
            .map(|b| {
                if b == b'\r' || b == b'\n' || b == 0 {
                    b' '
                } else {
                    b
                }
            })
            .collect();
        buf.push(0);
        // SAFETY: buf is NUL-terminated with no interior NUL.
        unsafe { api!(RedisModule_ReplyWithError)(self.0, buf.as_ptr().cast()) };
    }
}

/// Writes to the server log (`ctx` None: as the module, outside any callback context).
pub fn log(ctx: Option<Ctx>, level: &CStr, msg: &str) {
    let mut buf: Vec<u8> = msg.bytes().filter(|&b| b != 0).collect();
    buf.push(0);
    let ctx = ctx.map_or(ptr::null_mut(), |c| c.0);
    // SAFETY: "%s" with one NUL-terminated argument; Log accepts a null ctx.
    unsafe { api!(RedisModule_Log)(ctx, level.as_ptr(), c"%s".as_ptr(), buf.as_ptr()) };
}

/// Propagates the running command exactly as received (used by `CORRAL._APPLY` itself, so a
/// replica's own AOF and sub-replicas get the same effects).
pub fn replicate_verbatim(ctx: Ctx) {
    // SAFETY: called from a command callback.
    unsafe { api!(RedisModule_ReplicateVerbatim)(ctx.0) };
}

/// At load: does this server already have replicas or a replication backlog?
pub fn has_replication_stream(ctx: Ctx) -> bool {
    let c = redis_module::Context::new(ctx.0);
    let Ok(
        redis_module::RedisValue::SimpleString(info) | redis_module::RedisValue::BulkString(info),
    ) = c.call("INFO", &["replication"])
    else {
        // If we cannot tell, assume yes: propagating needlessly is only slower.
        return true;
    };
    info.lines().any(|l| {
        matches!(l.split_once(':'), Some(("connected_slaves" | "repl_backlog_active", v)) if v.trim() != "0")
    })
}

/// `CLUSTER NODES` as this node sees it (one `RM_Call`; cluster mode only), None if it failed.
pub fn cluster_nodes(ctx: Ctx) -> Option<String> {
    // SAFETY: ctx.0 is the running callback's context; Context::new only wraps it so that
    // `call` (RM_Call) can use it, which any callback context may do. CLUSTER NODES touches no
    // key and is never redirected.
    let c = redis_module::Context::new(ctx.0);
    match c.call("CLUSTER", &["NODES"]) {
        // A bulk string (RM_Call answers RESP2); an error reply would come back as a
        // StringBuffer, and is None here.
        Ok(redis_module::RedisValue::SimpleString(s) | redis_module::RedisValue::BulkString(s)) => {
            Some(s)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Keys

/// An open key; closed on drop.
pub struct Key {
    ptr: *mut RedisModuleKey,
}

/// What an open key holds, as far as corral cares.
pub enum KeyHolds {
    Nothing,
    Module(*mut raw::RedisModuleType),
    Other,
}

impl Key {
    pub fn holds(&self) -> KeyHolds {
        if self.ptr.is_null() {
            return KeyHolds::Nothing;
        }
        // SAFETY: the key is open.
        let t = unsafe { api!(RedisModule_KeyType)(self.ptr) };
        match t as isize {
            raw::REDISMODULE_KEYTYPE_EMPTY => KeyHolds::Nothing,
            // SAFETY: the key is open and holds a module value.
            raw::REDISMODULE_KEYTYPE_MODULE => {
                KeyHolds::Module(unsafe { api!(RedisModule_ModuleTypeGetType)(self.ptr) })
            }
            _ => KeyHolds::Other,
        }
    }

    /// The value of module type `ty` stored under this key: `Ok(None)` for an empty key,
    /// `Err(Error::WrongType)` for a key holding anything else. (One type check: each is an
    /// API call.)
    ///
    /// # Safety
    /// `T` must be the Rust type that every value of `ty` is created with.
    pub unsafe fn value_of<T>(
        &mut self,
        ty: *mut raw::RedisModuleType,
    ) -> Result<Option<&mut T>, Error> {
        match self.holds() {
            KeyHolds::Nothing => Ok(None),
            KeyHolds::Module(t) if t == ty => {
                let p = api!(RedisModule_ModuleTypeGetValue)(self.ptr).cast::<T>();
                p.as_mut().map(Some).ok_or(Error::WrongType)
            }
            _ => Err(Error::WrongType),
        }
    }

    /// Stores `value` (ownership passes to Redis, which frees it through the type's free).
    ///
    /// # Safety
    /// `ty` must be the module type whose callbacks treat the pointer as a `Box<T>`.
    pub unsafe fn set_value<T>(&mut self, ty: *mut raw::RedisModuleType, value: Box<T>) -> bool {
        let p = Box::into_raw(value);
        let ok = api!(RedisModule_ModuleTypeSetValue)(self.ptr, ty, p.cast::<c_void>())
            == raw::REDISMODULE_OK as c_int;
        if !ok {
            drop(Box::from_raw(p));
        }
        ok
    }

    pub fn delete(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: key open for writing.
            unsafe { api!(RedisModule_DeleteKey)(self.ptr) };
        }
    }

    /// Sets the key's absolute expiry (ms since the epoch), or removes it with `None`.
    pub fn set_expire_at(&mut self, at: Option<u64>) {
        if self.ptr.is_null() {
            return;
        }
        // SAFETY: key open for writing and not empty (callers set a value first).
        unsafe {
            match at {
                Some(t) => api!(RedisModule_SetAbsExpire)(self.ptr, t.min(i64::MAX as u64) as i64),
                None => api!(RedisModule_SetExpire)(self.ptr, raw::REDISMODULE_NO_EXPIRE as i64),
            };
        }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: opened by Ctx::open_key, closed once.
            unsafe { api!(RedisModule_CloseKey)(self.ptr) };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Blocked clients

/// Registers a command whose one key is its first argument (first = last = step = 1: every
/// corral command). False if the server refuses it — e.g. a flag it does not know.
pub fn create_command(ctx: Ctx, name: &CStr, func: CmdFunc, flags: &CStr) -> bool {
    // SAFETY: OnLoad context; name and flags are NUL-terminated and copied by Redis.
    unsafe {
        api!(RedisModule_CreateCommand)(ctx.0, name.as_ptr(), Some(func), flags.as_ptr(), 1, 1, 1)
            == raw::REDISMODULE_OK as c_int
    }
}

/// A command this module registered, to attach metadata to.
#[derive(Clone, Copy)]
pub struct CommandHandle(NonNull<raw::RedisModuleCommand>);

impl CommandHandle {
    pub fn as_ptr(self) -> *mut raw::RedisModuleCommand {
        self.0.as_ptr()
    }
}

pub fn get_command(ctx: Ctx, name: &CStr) -> Option<CommandHandle> {
    // SAFETY: OnLoad context; the command was registered by this module.
    NonNull::new(unsafe { api!(RedisModule_GetCommand)(ctx.0, name.as_ptr()) }).map(CommandHandle)
}

/// Creates an ACL category for this module's commands (`ACL SETUSER u +@name`). Only servers
/// with `RedisModule_AddACLCategory` (Redis ≥ 7.4) have module categories: false elsewhere.
pub fn add_acl_category(ctx: Ctx, name: &CStr) -> bool {
    // SAFETY: read of the API table; may be absent on older servers (Redis 7.0, Valkey 8).
    let Some(add) = (unsafe { raw::RedisModule_AddACLCategory }) else {
        return false;
    };
    // SAFETY: OnLoad context (the only place categories may be added); name NUL-terminated.
    unsafe { add(ctx.0, name.as_ptr()) == raw::REDISMODULE_OK as c_int }
}

/// Puts a command in ACL categories (space separated), e.g. one made by `add_acl_category`.
pub fn set_acl_categories(cmd: CommandHandle, categories: &CStr) -> bool {
    // SAFETY: read of the API table; present wherever add_acl_category succeeded.
    let Some(set) = (unsafe { raw::RedisModule_SetCommandACLCategories }) else {
        return false;
    };
    // SAFETY: cmd is a registered command; categories is NUL-terminated.
    unsafe { set(cmd.as_ptr(), categories.as_ptr()) == raw::REDISMODULE_OK as c_int }
}

/// What `COMMAND DOCS` shows of one argument after the key.
pub struct ArgDoc<'a> {
    name: &'a str,
    kind: ArgKind,
    token: Option<&'a str>,
    optional: bool,
    multiple: bool,
}

pub enum ArgKind {
    String,
    Integer,
    /// A keyword alone (`WITHTOKEN`).
    PureToken,
}

impl<'a> ArgDoc<'a> {
    pub fn new(name: &'a str, kind: ArgKind) -> Self {
        Self {
            name,
            kind,
            token: None,
            optional: false,
            multiple: false,
        }
    }

    /// Preceded by a keyword (`BLOCK timeout`).
    pub fn token(mut self, token: &'a str) -> Self {
        self.token = Some(token);
        self
    }

    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    pub fn multiple(mut self) -> Self {
        self.multiple = true;
        self
    }
}

/// `COMMAND INFO`/`COMMAND DOCS` of a command whose one key is argument 1.
pub struct CommandDocs<'a> {
    pub summary: &'a str,
    pub complexity: &'a str,
    pub since: &'a str,
    pub arity: i32,
    pub readonly: bool,
    pub args: &'a [ArgDoc<'a>],
}

/// The C strings of one command's metadata. RedisModule_SetCommandInfo copies everything it is
/// given, so they only need to live until it returns (they were once leaked: valgrind showed
/// them as definitely lost, since Redis keeps no pointer to them).
#[derive(Default)]
struct CStrings(Vec<std::ffi::CString>);

impl CStrings {
    /// `s` as a C string that lives as long as `self`.
    fn add(&mut self, s: &str) -> *const c_char {
        let c = std::ffi::CString::new(s).unwrap_or_default();
        // The heap buffer does not move when the CString moves into the Vec.
        let p = c.as_ptr();
        self.0.push(c);
        p
    }
}

/// Sets a command's metadata (RedisModule_SetCommandInfo, Redis ≥ 7.0).
pub fn set_command_info(cmd: CommandHandle, docs: &CommandDocs) -> Result<(), &'static str> {
    // SAFETY: read of the API table, written once by RedisModule_Init before OnLoad runs.
    let set = unsafe { raw::RedisModule_SetCommandInfo }.ok_or("no SetCommandInfo")?;
    let mut strings = CStrings::default();

    // SAFETY (zeroed, here and below): plain C structs for which all-zero means "absent".
    let mut spec: raw::RedisModuleCommandKeySpec = unsafe { std::mem::zeroed() };
    spec.flags = if docs.readonly {
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
    let mut specs = [spec, unsafe { std::mem::zeroed() }];

    let mut arg = |name: &str, kind: &ArgKind, token: Option<&str>, flags: u32| {
        use raw::*;
        let mut a: RedisModuleCommandArg = unsafe { std::mem::zeroed() };
        a.name = strings.add(name);
        a.type_ = match kind {
            ArgKind::String => RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
            ArgKind::Integer => RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
            ArgKind::PureToken => RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
        };
        a.key_spec_index = -1;
        a.token = token.map_or(ptr::null(), |t| strings.add(t));
        a.flags = flags as c_int;
        a
    };
    let mut args = Vec::with_capacity(docs.args.len() + 2);
    let mut key = arg("key", &ArgKind::String, None, 0);
    key.type_ = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY;
    key.key_spec_index = 0;
    args.push(key);
    for a in docs.args {
        let mut flags = 0;
        if a.optional {
            flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
        }
        if a.multiple {
            flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
        }
        let name = match a.kind {
            ArgKind::PureToken => a.name.to_ascii_lowercase(),
            _ => a.name.to_string(),
        };
        args.push(arg(&name, &a.kind, a.token, flags));
    }
    args.push(unsafe { std::mem::zeroed() });

    let mut version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
    };
    let mut info: raw::RedisModuleCommandInfo = unsafe { std::mem::zeroed() };
    info.version = &mut version;
    info.summary = strings.add(docs.summary);
    info.complexity = strings.add(docs.complexity);
    info.since = strings.add(docs.since);
    info.arity = docs.arity;
    info.key_specs = specs.as_mut_ptr();
    info.args = args.as_mut_ptr();
    // SAFETY: every pointer in `info` (version, specs, args, strings) points into locals that
    // live until after this call; SetCommandInfo copies what it keeps.
    let ok = unsafe { set(cmd.as_ptr(), &info) } == raw::REDISMODULE_OK as c_int;
    ok.then_some(())
        .ok_or("SetCommandInfo refused the metadata")
}

/// A data type's callbacks (`datatype.rs` implements them once, generically).
pub struct TypeCallbacks {
    pub rdb_load: unsafe extern "C" fn(*mut raw::RedisModuleIO, c_int) -> *mut c_void,
    pub rdb_save: unsafe extern "C" fn(*mut raw::RedisModuleIO, *mut c_void),
    pub aof_rewrite:
        unsafe extern "C" fn(*mut raw::RedisModuleIO, *mut RedisModuleString, *mut c_void),
    pub mem_usage: unsafe extern "C" fn(*const c_void) -> usize,
    pub digest: unsafe extern "C" fn(*mut raw::RedisModuleDigest, *mut c_void),
    pub free: unsafe extern "C" fn(*mut c_void),
    pub free_effort: unsafe extern "C" fn(*mut RedisModuleString, *const c_void) -> usize,
    pub unlink: unsafe extern "C" fn(*mut RedisModuleString, *const c_void),
    pub copy: unsafe extern "C" fn(
        *mut RedisModuleString,
        *mut RedisModuleString,
        *const c_void,
    ) -> *mut c_void,
}

/// Registers a module data type (RedisModule_CreateDataType; OnLoad only). None if refused.
pub fn create_data_type(
    ctx: Ctx,
    name: &CStr,
    encver: i32,
    cb: &TypeCallbacks,
) -> Option<NonNull<raw::RedisModuleType>> {
    let mut methods = raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(cb.rdb_load),
        rdb_save: Some(cb.rdb_save),
        aof_rewrite: Some(cb.aof_rewrite),
        mem_usage: Some(cb.mem_usage),
        digest: Some(cb.digest),
        free: Some(cb.free),
        aux_load: None,
        aux_save: None,
        aux_save2: None,
        aux_save_triggers: 0,
        free_effort: Some(cb.free_effort),
        unlink: Some(cb.unlink),
        copy: Some(cb.copy),
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: None,
        copy2: None,
    };
    // SAFETY: OnLoad context; Redis copies `methods` and the name.
    let t = unsafe { api!(RedisModule_CreateDataType)(ctx.0, name.as_ptr(), encver, &mut methods) };
    NonNull::new(t)
}

/// A client blocked by `block_client`, until it is passed to `unblock_client`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BlockedClient(*mut raw::RedisModuleBlockedClient);

impl BlockedClient {
    /// A number identifying the client while it is blocked.
    pub fn id(self) -> usize {
        self.0 as usize
    }
}

pub type CmdFunc =
    unsafe extern "C" fn(*mut RedisModuleCtx, *mut *mut RedisModuleString, c_int) -> c_int;

/// Blocks the calling client. `timeout_ms` 0 waits forever.
pub fn block_client(
    ctx: Ctx,
    reply: CmdFunc,
    timeout: CmdFunc,
    free: unsafe extern "C" fn(*mut RedisModuleCtx, *mut c_void),
    disconnect: unsafe extern "C" fn(*mut RedisModuleCtx, *mut raw::RedisModuleBlockedClient),
    timeout_ms: u64,
) -> Option<BlockedClient> {
    // SAFETY: called from a command callback that may block (checked by the caller).
    let bc = unsafe {
        api!(RedisModule_BlockClient)(
            ctx.0,
            Some(reply),
            Some(timeout),
            Some(free),
            timeout_ms as i64,
        )
    };
    if bc.is_null() {
        return None;
    }
    // SAFETY: bc was just created.
    unsafe { api!(RedisModule_SetDisconnectCallback)(bc, Some(disconnect)) };
    Some(BlockedClient(bc))
}

/// Releases a blocked client; `reply` (if any) is handed to the reply callback.
pub fn unblock_client(bc: BlockedClient, reply: Option<Box<Reply>>) {
    let p = reply.map_or(ptr::null_mut(), |r| Box::into_raw(r).cast::<c_void>());
    // SAFETY: bc is a blocked client not yet unblocked (the engine removes it from its queue
    // before calling this, so it is unblocked exactly once).
    unsafe { api!(RedisModule_UnblockClient)(bc.0, p) };
}

/// In a reply callback: the reply handed to `unblock_client`.
pub fn blocked_reply(ctx: Ctx) -> Option<&'static Reply> {
    // SAFETY: the private data is either null or a Box<Reply> from unblock_client, freed only
    // by the free callback after the reply callback returns.
    unsafe {
        api!(RedisModule_GetBlockedClientPrivateData)(ctx.0)
            .cast::<Reply>()
            .as_ref()
    }
}

/// In a timeout callback: the blocked client that timed out.
pub fn blocked_handle(ctx: Ctx) -> BlockedClient {
    // SAFETY: only called from a timeout callback, where the handle is set.
    BlockedClient(unsafe { api!(RedisModule_GetBlockedClientHandle)(ctx.0) })
}

/// The blocked client a disconnect callback is about.
///
/// # Safety
/// `bc` must be the handle Redis passed to the running disconnect callback.
pub unsafe fn disconnected(bc: *mut raw::RedisModuleBlockedClient) -> BlockedClient {
    BlockedClient(bc)
}

/// Frees private data handed to `unblock_client`.
///
/// # Safety
/// `p` must be null or a pointer produced by `unblock_client`.
pub unsafe fn free_blocked_reply(p: *mut c_void) {
    if !p.is_null() {
        drop(Box::from_raw(p.cast::<Reply>()));
    }
}

// ---------------------------------------------------------------------------------------------
// Timers

pub type TimerProc = unsafe extern "C" fn(*mut RedisModuleCtx, *mut c_void);

pub fn create_timer(ctx: Ctx, delay_ms: u64, cb: TimerProc) -> u64 {
    // SAFETY: no data pointer is passed; the callback reads engine state instead.
    unsafe { api!(RedisModule_CreateTimer)(ctx.0, delay_ms as i64, Some(cb), ptr::null_mut()) }
}

/// A timer whose callback receives `data` (a plain number, never dereferenced) as its data
/// pointer.
pub fn create_timer_with(ctx: Ctx, delay_ms: u64, cb: TimerProc, data: usize) -> u64 {
    // SAFETY: the data pointer carries a number; the callback never dereferences it.
    unsafe { api!(RedisModule_CreateTimer)(ctx.0, delay_ms as i64, Some(cb), data as *mut c_void) }
}

pub fn stop_timer(ctx: Ctx, id: u64) {
    // SAFETY: an unknown or already-fired id just answers ERR.
    unsafe { api!(RedisModule_StopTimer)(ctx.0, id, ptr::null_mut()) };
}

// ---------------------------------------------------------------------------------------------
// RDB / AOF / digest IO

pub struct Io(*mut raw::RedisModuleIO);

impl Io {
    /// # Safety
    /// `io` must be the IO handle passed to the running type callback.
    pub unsafe fn from_raw(io: *mut raw::RedisModuleIO) -> Self {
        Self(io)
    }

    pub fn save_u64(&self, v: u64) {
        // SAFETY: io live for the callback.
        unsafe { api!(RedisModule_SaveUnsigned)(self.0, v) }
    }

    pub fn save_bytes(&self, b: &[u8]) {
        // SAFETY: io live for the callback; buffer valid for len bytes.
        unsafe { api!(RedisModule_SaveStringBuffer)(self.0, b.as_ptr().cast(), b.len()) }
    }

    pub fn load_u64(&self) -> Option<u64> {
        // SAFETY: io live; errors are reported through IsIOError.
        let v = unsafe { api!(RedisModule_LoadUnsigned)(self.0) };
        (!self.failed()).then_some(v)
    }

    pub fn load_bytes(&self) -> Option<Vec<u8>> {
        let mut len = 0usize;
        // SAFETY: io live; the returned buffer is ours to free with RedisModule_Free.
        let p = unsafe { api!(RedisModule_LoadStringBuffer)(self.0, &mut len) };
        if p.is_null() || self.failed() {
            return None;
        }
        // SAFETY: Redis returned `len` bytes at `p`, allocated with its allocator.
        let v = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec() };
        // SAFETY: freeing the buffer LoadStringBuffer allocated.
        unsafe { api!(RedisModule_Free)(p.cast()) };
        Some(v)
    }

    fn failed(&self) -> bool {
        // SAFETY: io live.
        unsafe { api!(RedisModule_IsIOError)(self.0) != 0 }
    }

    /// The key being loaded and its db, where the server tells (Redis ≥ 7.0).
    pub fn key_and_db(&self) -> Option<(Vec<u8>, i32)> {
        // SAFETY: reads of the API table (see `api!`); these two may be absent on old servers.
        let (name_fn, db_fn) = unsafe {
            (
                raw::RedisModule_GetKeyNameFromIO?,
                raw::RedisModule_GetDbIdFromIO?,
            )
        };
        // SAFETY: io live; the name (if any) is owned by Redis for the callback's duration.
        let name = unsafe { name_fn(self.0) };
        if name.is_null() {
            return None;
        }
        // SAFETY: as above.
        let db = unsafe { db_fn(self.0) };
        // SAFETY: name is a live string.
        let bytes = unsafe { RStr::from_raw(name as *mut _) }.bytes().to_vec();
        Some((bytes, db))
    }

    /// AOF rewrite: emits `cmd key payload`.
    pub fn emit_aof(&self, cmd: &CStr, key: RStr, payload: &[u8]) {
        // SAFETY: format "sb" = a RedisModuleString then (ptr, len), which we pass.
        unsafe {
            api!(RedisModule_EmitAOF)(
                self.0,
                cmd.as_ptr(),
                c"sb".as_ptr(),
                key.as_ptr(),
                payload.as_ptr().cast::<c_char>(),
                payload.len(),
            )
        }
    }
}

pub struct Digest(*mut raw::RedisModuleDigest);

impl Digest {
    /// # Safety
    /// `md` must be the digest handle passed to the running digest callback.
    pub unsafe fn from_raw(md: *mut raw::RedisModuleDigest) -> Self {
        Self(md)
    }

    pub fn add(&self, bytes: &[u8]) {
        // SAFETY: handle live; buffer valid.
        unsafe {
            api!(RedisModule_DigestAddStringBuffer)(self.0, bytes.as_ptr().cast(), bytes.len());
            api!(RedisModule_DigestEndSequence)(self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

pub type KeyspaceCallback = unsafe extern "C" fn(
    *mut RedisModuleCtx,
    c_int,
    *const c_char,
    *mut RedisModuleString,
) -> c_int;
pub type ServerEventCallback =
    unsafe extern "C" fn(*mut RedisModuleCtx, raw::RedisModuleEvent, u64, *mut c_void);

pub fn subscribe_keyspace(ctx: Ctx, types: u32, cb: KeyspaceCallback) -> bool {
    // SAFETY: called once at load with a static callback.
    unsafe {
        api!(RedisModule_SubscribeToKeyspaceEvents)(ctx.0, types as c_int, Some(cb))
            == raw::REDISMODULE_OK as c_int
    }
}

pub fn subscribe_server_event(ctx: Ctx, id: u64, cb: ServerEventCallback) -> bool {
    let event = raw::RedisModuleEvent { id, dataver: 1 };
    // SAFETY: called once at load with a static callback.
    unsafe {
        api!(RedisModule_SubscribeToServerEvent)(ctx.0, event, Some(cb))
            == raw::REDISMODULE_OK as c_int
    }
}

/// The event name and key handed to a keyspace callback.
///
/// # Safety
/// Both pointers must be the ones Redis passed to the running keyspace callback.
pub unsafe fn keyspace_args<'a>(
    event: *const c_char,
    key: *mut RedisModuleString,
) -> (&'a [u8], &'a [u8]) {
    let ev = if event.is_null() {
        &[][..]
    } else {
        CStr::from_ptr(event).to_bytes()
    };
    (ev, RStr(key).bytes())
}

/// The db a FLUSHDB server event cleared (-1 = all).
///
/// # Safety
/// `data` must be the data pointer of a FLUSHDB server event.
pub unsafe fn flush_event_db(data: *mut c_void) -> i32 {
    data.cast::<raw::RedisModuleFlushInfoV1>()
        .as_ref()
        .map_or(-1, |i| i.dbnum)
}

/// The two dbs a SWAPDB server event swapped.
///
/// # Safety
/// `data` must be the data pointer of a SWAPDB server event.
pub unsafe fn swapdb_event_dbs(data: *mut c_void) -> Option<(i32, i32)> {
    data.cast::<raw::RedisModuleSwapDbInfoV1>()
        .as_ref()
        .map(|i| (i.dbnum_first, i.dbnum_second))
}

// ---------------------------------------------------------------------------------------------
// INFO

pub type InfoFunc = unsafe extern "C" fn(*mut raw::RedisModuleInfoCtx, c_int);

pub fn register_info(ctx: Ctx, cb: InfoFunc) {
    // SAFETY: OnLoad context; replaces any info callback set before.
    unsafe { api!(RedisModule_RegisterInfoFunc)(ctx.0, Some(cb)) };
}

/// Writes the module's INFO section (`INFO corral`) with the given counters.
///
/// # Safety
/// `ctx` must be the context passed to the running info callback.
pub unsafe fn info_section(ctx: *mut raw::RedisModuleInfoCtx, fields: &[(String, u64)]) {
    if api!(RedisModule_InfoAddSection)(ctx, c"".as_ptr()) != raw::REDISMODULE_OK as c_int {
        return; // this section was not asked for
    }
    for (name, v) in fields {
        let Ok(n) = std::ffi::CString::new(name.as_str()) else {
            continue;
        };
        api!(RedisModule_InfoAddFieldULongLong)(ctx, n.as_ptr(), *v);
    }
}
