//! Redis's own keyspace and server events, turned into scheduler work.
//!
//! corral never writes keys from these callbacks (Redis 7.0 forbids it there): it only updates
//! its bookkeeping and asks the scheduler to look at a key "as soon as possible", which happens
//! in a timer where writes and replication are safe.

use std::ffi::{c_char, c_int, c_void};

use super::ffi::{self, raw, Ctx};
use super::keys::db_of;
use super::primitive::Event;
use super::scheduler;
use super::state::contain;
use super::state::{self, key_bytes, split_key, KeyRef};

const SUBEVENT_NOW_MASTER: u64 = raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER;
const SUBEVENT_LOADING_ENDED: u64 = raw::REDISMODULE_SUBEVENT_LOADING_ENDED;
const SUBEVENT_FLUSHDB_END: u64 = raw::REDISMODULE_SUBEVENT_FLUSHDB_END;

pub fn subscribe(ctx: Ctx) -> bool {
    let types = raw::REDISMODULE_NOTIFY_GENERIC
        | raw::REDISMODULE_NOTIFY_EXPIRED
        | raw::REDISMODULE_NOTIFY_EVICTED;
    ffi::subscribe_keyspace(ctx, types as u32, on_keyspace)
        && ffi::subscribe_server_event(
            ctx,
            raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
            on_server,
        )
        && ffi::subscribe_server_event(ctx, raw::REDISMODULE_EVENT_LOADING, on_server)
        && ffi::subscribe_server_event(ctx, raw::REDISMODULE_EVENT_FLUSHDB, on_server)
        && ffi::subscribe_server_event(ctx, raw::REDISMODULE_EVENT_SWAPDB, on_server)
        && ffi::subscribe_server_event(ctx, raw::REDISMODULE_EVENT_REPLICA_CHANGE, on_server)
        && ffi::subscribe_server_event(ctx, raw::REDISMODULE_EVENT_FORK_CHILD, on_server)
}

unsafe extern "C" fn on_keyspace(
    ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    // SAFETY: these are the arguments Redis passed to this keyspace callback.
    let (ctx, (event, _)) = unsafe { (Ctx::from_raw(ctx), ffi::keyspace_args(event, key)) };
    // SAFETY: key is live for the callback.
    let key = unsafe { ffi::RStr::from_raw(key) };
    contain("keyspace event", || on_key_event(ctx, event, key));
    raw::REDISMODULE_OK as c_int
}

fn on_key_event(ctx: Ctx, event: &[u8], key: ffi::RStr) {
    // This runs for every generic event of every key in the server (e.g. the `expire` of each
    // `SET … EX`): decide from the event name before touching anything.
    let gone = matches!(
        event,
        b"del" | b"expired" | b"evicted" | b"rename_from" | b"move_from"
    );
    let appeared = matches!(event, b"rename_to" | b"move_to" | b"copy_to" | b"restore");
    if !gone && !appeared {
        return;
    }
    if event == b"expired" || event == b"evicted" {
        announce_lapses(ctx, key);
    }
    let k = key_bytes(ctx.selected_db(), key.bytes());
    if gone {
        // The key is gone: what it held is free. Forget its deadline; if clients wait on it,
        // serve them (against an empty key) as soon as possible.
        let waiting = state::with(|e| {
            e.schedule.remove(&k[..]);
            e.queues.is_waiting(&k)
        });
        if waiting {
            scheduler::check_soon(ctx, KeyRef::from(&k[..]));
        }
    } else {
        // A key appeared under this name with whatever leases it carries: look at it now, which
        // schedules its real deadline (and serves any waiters already queued on this name).
        scheduler::check_soon(ctx, KeyRef::from(&k[..]));
    }
}

/// Redis expired (or evicted) a corral key before the engine's timer lapsed its leases: they
/// lapsed all the same, so count them and raise `<family>.lapse`, as the timer would have.
fn announce_lapses(ctx: Ctx, key: ffi::RStr) {
    let name = key.bytes();
    let unlinked = state::with(|e| match e.last_unlinked.take() {
        Some((n, family, lapses)) if n == name && lapses > 0 => {
            e.counters[family.index()].lapses += lapses;
            Some(family)
        }
        _ => None,
    });
    if let Some(note) = unlinked.and_then(|family| Event::Lapse.notification(family)) {
        ctx.notify(note, key);
    }
}

unsafe extern "C" fn on_server(
    ctx: *mut raw::RedisModuleCtx,
    event: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    // SAFETY: ctx is this callback's context.
    let ctx = unsafe { Ctx::from_raw(ctx) };
    contain("server event", || {
        let id = event.id;
        // Anything that can start feeding a replication stream: a replica attaching (every full
        // sync forks, or joins a fork that already happened), a replica coming online, a role
        // change. From then on corral propagates its effects for good.
        if id == raw::REDISMODULE_EVENT_FORK_CHILD
            || id == raw::REDISMODULE_EVENT_REPLICA_CHANGE
            || id == raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED
        {
            state::note_replication();
        }
        if id == raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED && subevent == SUBEVENT_NOW_MASTER
            || id == raw::REDISMODULE_EVENT_LOADING && subevent == SUBEVENT_LOADING_ENDED
        {
            // A promoted replica (or a server done loading) takes over every deadline now.
            scheduler::arm(ctx);
        } else if id == raw::REDISMODULE_EVENT_FLUSHDB && subevent == SUBEVENT_FLUSHDB_END {
            // SAFETY: data of a FLUSHDB event.
            let db = unsafe { ffi::flush_event_db(data) };
            flushed(ctx, (db >= 0).then_some(db));
        } else if id == raw::REDISMODULE_EVENT_SWAPDB {
            // SAFETY: data of a SWAPDB event.
            if let Some((a, b)) = unsafe { ffi::swapdb_event_dbs(data) } {
                swapped(ctx, a, b);
            }
        }
    });
}

/// SWAPDB moved every key of db `a` to db `b` and back: each scheduled key gets a look under
/// both names (its value now lives under the other db), and so does every key with waiters
/// (they wait on a name whose value changed).
fn swapped(ctx: Ctx, a: i32, b: i32) {
    let keys = state::with(|e| {
        let mut keys: Vec<KeyRef> = Vec::new();
        for (k, _, _) in e.schedule.iter() {
            if let Some((db, name)) = split_key(k) {
                if db == a || db == b {
                    let other = if db == a { b } else { a };
                    keys.push(k.clone());
                    keys.push(KeyRef::from(&key_bytes(other, name)[..]));
                }
            }
        }
        keys.extend(
            e.queues
                .keys(|k| matches!(db_of(k), Some(d) if d == a || d == b)),
        );
        keys
    });
    for k in keys {
        scheduler::check_soon(ctx, k);
    }
}

/// Every key with waiters in `db` (all dbs for None) gets a look; after a flush, deadlines of
/// keys that no longer exist are dropped.
fn flushed(ctx: Ctx, db: Option<i32>) {
    let keys = state::with(|e| {
        let stale: Vec<KeyRef> = e
            .schedule
            .iter()
            .map(|(k, _, _)| k.clone())
            .filter(|k| db.is_none() || split_key(k).map(|(d, _)| d) == db)
            .collect();
        for k in stale {
            e.schedule.remove(&k);
        }
        e.queues.keys(|k| db.is_none() || db_of(k) == db)
    });
    for k in keys {
        scheduler::check_soon(ctx, k);
    }
}
