//! The Redis data type of each family, with the persistence callbacks written once, generically:
//!
//! - RDB: the value encoded with bincode, tagged by the type's encoding version (`encver`);
//!   `Primitive::decode` reads older versions.
//! - AOF rewrite: one `CORRAL._APPLY key <effects>` rebuilding the value (tokens and absolute
//!   deadlines included) — the same command replicas receive, so there is one load path.
//! - digest (`DEBUG DIGEST-VALUE`), mem_usage (`MEMORY USAGE`), copy (`COPY`), free.

use std::ffi::{c_int, c_void, CString};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use super::codec::{self, APPLY_COMMAND};
use super::ffi::{self, raw, Ctx, Digest, Io, RStr, TypeCallbacks};
use super::primitive::{Effect, Event, Family, Primitive};
use super::state::contain;
use super::state::{self, key_bytes, KeyRef};

/// Each family's data type, by family index (set once at load).
static TYPES: [AtomicPtr<raw::RedisModuleType>; Family::COUNT] =
    [const { AtomicPtr::new(ptr::null_mut()) }; Family::COUNT];

pub fn raw_type(f: Family) -> *mut raw::RedisModuleType {
    TYPES[f.index()].load(Ordering::Relaxed)
}

/// Registers `F`'s data type with Redis. Called once from `RedisModule_OnLoad`.
pub fn create<F: Primitive>(ctx: Ctx) -> Result<(), String> {
    let name = CString::new(F::TYPE_NAME).map_err(|e| e.to_string())?;
    let callbacks = TypeCallbacks {
        rdb_load: rdb_load::<F>,
        rdb_save: rdb_save::<F>,
        aof_rewrite: aof_rewrite::<F>,
        mem_usage: mem_usage::<F>,
        digest: digest::<F>,
        free: free::<F>,
        free_effort: free_effort::<F>,
        unlink: unlink::<F>,
        copy: copy::<F>,
    };
    let t = ffi::create_data_type(ctx, &name, F::ENCODING_VERSION, &callbacks)
        .ok_or_else(|| format!("could not create data type {}", F::TYPE_NAME))?;
    TYPES[F::FAMILY.index()].store(t.as_ptr(), Ordering::Relaxed);
    Ok(())
}

/// # Safety (all callbacks below)
/// Redis passes a value pointer only for keys of this type, and every such value was created
/// as a `Box<F>` (`Key::set_value` or `rdb_load`/`copy` here).
unsafe fn value<'a, F>(v: *mut c_void) -> Option<&'a F> {
    v.cast::<F>().as_ref()
}

unsafe extern "C" fn rdb_load<F: Primitive>(
    rdb: *mut raw::RedisModuleIO,
    encver: c_int,
) -> *mut c_void {
    let io = Io::from_raw(rdb);
    contain("rdb_load", || {
        let bytes = io.load_bytes()?;
        let v = F::decode(encver, &bytes)?;
        // Loaded leases need their deadlines scheduled (restart, DEBUG RELOAD, full sync,
        // RESTORE/MIGRATE) and their tokens must raise the server's floor.
        if let Some((name, db)) = io.key_and_db() {
            let k = key_bytes(db, &name);
            state::with(|e| {
                e.mint.observe(v.last_token());
                if let Some(at) = v.next_deadline() {
                    e.schedule.set_earlier(KeyRef::from(&k[..]), at);
                }
            });
        } else {
            state::with(|e| e.mint.observe(v.last_token()));
        }
        Some(Box::into_raw(Box::new(v)).cast::<c_void>())
    })
    .flatten()
    // Null makes Redis report a load error instead of crashing.
    .unwrap_or(ptr::null_mut())
}

unsafe extern "C" fn rdb_save<F: Primitive>(rdb: *mut raw::RedisModuleIO, v: *mut c_void) {
    let io = Io::from_raw(rdb);
    contain("rdb_save", || {
        if let Some(v) = value::<F>(v) {
            io.save_bytes(&codec::encode(v));
        }
    });
}

unsafe extern "C" fn aof_rewrite<F: Primitive>(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    v: *mut c_void,
) {
    let io = Io::from_raw(aof);
    let key = RStr::from_raw(key);
    contain("aof_rewrite", || {
        if let Some(v) = value::<F>(v) {
            let payload = codec::encode_effects(F::FAMILY, &v.rebuild());
            io.emit_aof(APPLY_COMMAND, key, &payload);
        }
    });
}

unsafe extern "C" fn mem_usage<F: Primitive>(v: *const c_void) -> usize {
    contain("mem_usage", || {
        value::<F>(v as *mut c_void).map_or(0, |v| std::mem::size_of::<F>() + v.mem_usage())
    })
    .unwrap_or(0)
}

unsafe extern "C" fn digest<F: Primitive>(md: *mut raw::RedisModuleDigest, v: *mut c_void) {
    let d = Digest::from_raw(md);
    contain("digest", || {
        if let Some(v) = value::<F>(v) {
            d.add(&codec::encode(v));
        }
    });
}

unsafe extern "C" fn copy<F: Primitive>(
    _from: *mut raw::RedisModuleString,
    _to: *mut raw::RedisModuleString,
    v: *const c_void,
) -> *mut c_void {
    // The copy's deadlines are scheduled by the `copy_to` keyspace event.
    contain("copy", || {
        value::<F>(v as *mut c_void).map(|v| Box::into_raw(Box::new(v.clone())).cast::<c_void>())
    })
    .flatten()
    .unwrap_or(ptr::null_mut())
}

/// Called as Redis removes a key (expiry, eviction, DEL, overwrite), right before the keyspace
/// event. Remembers how many leases the value still held, so that when the event says the key
/// *expired* (or was evicted) those leases are counted and announced as lapsed — whether the
/// engine's timer or Redis's own expiry got to the key first.
unsafe extern "C" fn unlink<F: Primitive>(key: *mut raw::RedisModuleString, v: *const c_void) {
    let key = RStr::from_raw(key);
    contain("unlink", || {
        if let Some(v) = value::<F>(v as *mut c_void) {
            let mut due = Vec::new();
            v.lapse(u64::MAX, &mut due);
            // Only lease lapses count: `lapse` also carries a family's other timed effects
            // (JOB's promotions of delayed jobs, retention deletes, failed attempts).
            let lapsed = due.iter().filter(|e| e.event() == Event::Lapse).count();
            // An empty value (corral deleting a key it emptied) has nothing to announce.
            if lapsed > 0 {
                let name = key.bytes().to_vec();
                state::with(|e| e.last_unlinked = Some((name, F::FAMILY, lapsed as u64)));
            }
        }
    });
}

unsafe extern "C" fn free_effort<F: Primitive>(
    _key: *mut raw::RedisModuleString,
    v: *const c_void,
) -> usize {
    contain("free_effort", || {
        value::<F>(v as *mut c_void).map_or(1, F::free_effort)
    })
    .unwrap_or(1)
}

/// Frees a value; on a lazy-free thread for values with a large `free_effort`. Touches nothing
/// but the value (all of whose shared parts are `Arc`s).
unsafe extern "C" fn free<F: Primitive>(v: *mut c_void) {
    // May run on a lazy-free thread: touches nothing but the value.
    if !v.is_null() {
        let _ = std::panic::catch_unwind(|| drop(Box::from_raw(v.cast::<F>())));
    }
}
