//! Redis Cluster: who serves a key whose waiters the engine is about to serve.
//!
//! A client command reaches corral only on the node that serves its key (Redis redirects it
//! otherwise). The engine also acts on its own — the scheduler serves waiters when a key was
//! deleted, expired or renamed away — and there Redis checks nothing. When `MIGRATE` (what
//! `redis-cli --cluster reshard` uses) moves a key to another node, it deletes the key here,
//! and serving the key's waiters against the now-empty key would grant them a *second* lease
//! on a node that is giving the slot away (the reshard then fails: the key reappears on the
//! source with other contents than on the target).
//!
//! So before the scheduler serves waiters of a key that does not exist here, in cluster mode,
//! it asks this file: is the key still served here? If not, the waiters get the redirection
//! Redis itself would give them if they sent their command now — `-ASK` while the slot is
//! migrating, `-MOVED` once another node owns it — and a cluster client retries there. The
//! answer comes from `CLUSTER NODES` (one `RM_Call`, only on this rare path: a key with waiters
//! that vanished, in cluster mode); the decision is the pure `route` below.
//!
//! Waiters on a key that never existed here (a `JOB.PULL` on an empty store) get no event when
//! their slot moves; the scheduler looks at them again every `RECHECK_MS` while they wait.

use super::ffi::{self, Ctx};

/// How often waiters on a key that does not exist are looked at again in cluster mode (see
/// `scheduler::recheck_later`): the longest they may wait after their slot moved away.
pub const RECHECK_MS: u64 = 1_000;

/// Redis Cluster's hash slot of a key: CRC16 (XMODEM) of the key — or of its hash tag, the
/// bytes between the first `{` and the next `}` when there are any — modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) & 0x3fff
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Where waiters of a key that does not exist on this node belong.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// This node serves the slot (or imports it: its waiters came here by `ASK`).
    Here,
    /// The slot is migrating away and the key is gone from here: `ASK <slot> <addr>`.
    Ask(String),
    /// Another node owns the slot: `MOVED <slot> <addr>`.
    Moved(String),
    /// No node serves the slot.
    Down,
    /// Served elsewhere, but this node does not know that node's address.
    Unknown,
}

impl Route {
    /// The error waiters are answered with, or None when they are served here.
    pub fn error(&self, slot: u16) -> Option<String> {
        match self {
            Route::Here => None,
            Route::Ask(addr) => Some(format!("ASK {slot} {addr}")),
            Route::Moved(addr) => Some(format!("MOVED {slot} {addr}")),
            Route::Down => Some("CLUSTERDOWN Hash slot not served".into()),
            Route::Unknown => Some(format!(
                "TRYAGAIN hash slot {slot} is no longer served by this node; retry"
            )),
        }
    }
}

/// One line of `CLUSTER NODES`:
/// `<id> <ip:port@cport[,hostname…]> <flags> <primary> <ping> <pong> <epoch> <link> <slot>…`
/// where a slot is `N`, `N-M`, `[N->-<id>]` (migrating to) or `[N-<-<id>]` (importing from).
struct Node<'a> {
    id: &'a str,
    /// `ip:port` as `MOVED` names it; None when the node's address is unknown.
    addr: Option<&'a str>,
    myself: bool,
    slots: Vec<&'a str>,
}

fn parse_line(line: &str) -> Option<Node<'_>> {
    let mut f = line.split_ascii_whitespace();
    let id = f.next()?;
    let addr_field = f.next()?;
    let flags = f.next()?;
    let slots = f.skip(5).collect();
    let addr = addr_field.split(['@', ',']).next().filter(
        |a| matches!(a.rsplit_once(':'), Some((ip, port)) if !ip.is_empty() && port != "0"),
    );
    Some(Node {
        id,
        addr,
        myself: flags.split(',').any(|f| f == "myself"),
        slots,
    })
}

/// True when `entry` (`N` or `N-M`) covers `slot`.
fn covers(entry: &str, slot: u16) -> bool {
    let (a, b) = entry.split_once('-').unwrap_or((entry, entry));
    matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
}

/// For `[N->-id]` / `[N-<-id]` entries about `slot`: the other node's id.
fn open_slot<'a>(entry: &'a str, slot: u16, arrow: &str) -> Option<&'a str> {
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    let (n, id) = inner.split_once(arrow)?;
    (n.parse::<u16>().ok()? == slot).then_some(id)
}

/// Where waiters of a key in `slot` that does not exist on this node belong, from this node's
/// `CLUSTER NODES`. Mirrors how Redis routes a command on a missing key: served by the slot's
/// owner, except that a slot migrating away sends it (`ASK`) to the importing node, and a slot
/// being imported serves clients sent here by `ASK` — which is how these waiters got here.
pub fn route(nodes: &str, slot: u16) -> Route {
    let nodes: Vec<Node> = nodes.lines().filter_map(parse_line).collect();
    let addr_of = |id: &str| nodes.iter().find(|n| n.id == id).and_then(|n| n.addr);
    let Some(me) = nodes.iter().find(|n| n.myself) else {
        return Route::Unknown;
    };
    if me.slots.iter().any(|e| covers(e, slot)) {
        return match me.slots.iter().find_map(|e| open_slot(e, slot, "->-")) {
            Some(to) => addr_of(to).map_or(Route::Unknown, |a| Route::Ask(a.to_string())),
            None => Route::Here,
        };
    }
    if me.slots.iter().any(|e| open_slot(e, slot, "-<-").is_some()) {
        return Route::Here;
    }
    match nodes
        .iter()
        .find(|n| n.slots.iter().any(|e| covers(e, slot)))
    {
        Some(owner) => owner
            .addr
            .map_or(Route::Unknown, |a| Route::Moved(a.to_string())),
        None => Route::Down,
    }
}

/// In cluster mode, the redirection to answer the waiters of `key` — which does not exist on
/// this node — with, or None when they are served here (and always outside cluster mode).
pub fn redirect_for_missing_key(ctx: Ctx, key: &[u8]) -> Option<String> {
    if !ctx.flags().is_cluster() {
        return None;
    }
    let slot = key_slot(key);
    match ffi::cluster_nodes(ctx) {
        Some(nodes) => route(&nodes, slot).error(slot),
        // Cannot tell: a retry is harmless, a grant on a node that gave the slot away is not.
        None => Route::Unknown.error(slot),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_redis_cluster_hash_slots() {
        // Reference values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
        // Only the first {…} counts, and an empty one means "hash the whole key".
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 0x3fff);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar"), crc16(b"foo{bar") & 0x3fff);
    }

    const ME: &str = "aaaa";
    const B: &str = "bbbb";

    fn nodes(my_slots: &str, b_slots: &str) -> String {
        format!(
            "{ME} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected {my_slots}\n\
             {B} 127.0.0.1:7001@17001,host-b master - 0 1700000000000 2 connected {b_slots}\n\
             cccc 127.0.0.1:7002@17002 master - 0 1700000000000 3 connected 10923-16383\n"
        )
    }

    #[test]
    fn owned_slots_are_served_here() {
        let n = nodes("0-5460", "5461-10922");
        assert_eq!(route(&n, 0), Route::Here);
        assert_eq!(route(&n, 5460), Route::Here);
        assert_eq!(route(&nodes("0 7 9-10", "1-6 8"), 7), Route::Here);
    }

    #[test]
    fn slots_owned_elsewhere_are_moved() {
        let n = nodes("0-5460", "5461-10922");
        assert_eq!(route(&n, 5461), Route::Moved("127.0.0.1:7001".into()));
        assert_eq!(route(&n, 16383), Route::Moved("127.0.0.1:7002".into()));
        assert_eq!(
            route(&n, 5461).error(5461).as_deref(),
            Some("MOVED 5461 127.0.0.1:7001")
        );
    }

    #[test]
    fn a_migrating_slot_asks_the_importing_node() {
        let n = nodes(
            &format!("0-5460 [0->-{B}]"),
            &format!("5461-10922 [0-<-{ME}]"),
        );
        assert_eq!(route(&n, 0), Route::Ask("127.0.0.1:7001".into()));
        assert_eq!(route(&n, 1), Route::Here);
        assert_eq!(
            route(&n, 0).error(0).as_deref(),
            Some("ASK 0 127.0.0.1:7001")
        );
    }

    #[test]
    fn an_importing_slot_serves_its_asking_waiters() {
        let n = nodes(&format!("0-5460 [5461-<-{B}]"), "5461-10922");
        assert_eq!(route(&n, 5461), Route::Here);
        assert_eq!(route(&n, 5462), Route::Moved("127.0.0.1:7001".into()));
    }

    #[test]
    fn unknown_owners_and_unserved_slots() {
        // Nobody serves slot 100.
        let n = nodes("0-99 101-5460", "5461-10922");
        assert_eq!(route(&n, 100), Route::Down);
        assert_eq!(
            route(&n, 100).error(100).as_deref(),
            Some("CLUSTERDOWN Hash slot not served")
        );
        // The owner's address is not known yet (a node still in handshake).
        let n = format!(
            "{ME} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
             {B} :0@0 master,noaddr - 0 0 2 connected 5461-16383\n"
        );
        assert_eq!(route(&n, 6000), Route::Unknown);
        assert!(route(&n, 6000)
            .error(6000)
            .is_some_and(|e| e.starts_with("TRYAGAIN ")));
        // A migration target this node does not know.
        let n = nodes("0-5460 [3->-zzzz]", "5461-10922");
        assert_eq!(route(&n, 3), Route::Unknown);
        // No `myself` line at all (garbage in): never "here".
        assert_eq!(route("", 3), Route::Unknown);
        assert_eq!(route("garbage\n\n", 3), Route::Unknown);
    }
}
