//! Thousands of random and malformed commands against every corral command on a live server:
//! wrong arities, huge/negative/fractional numbers, NUL bytes, empty and 1 MB arguments,
//! every option in random combinations, keys of the wrong type. Afterwards the server still
//! answers, contained no panic, and every key survives DEBUG RELOAD unchanged.

mod common;

use common::client::{assert_alive, info_int, value};
use common::Server;
use redis::{Connection, ConnectionLike, Value};

/// A small deterministic PRNG (xorshift), so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Every option keyword any corral command takes, and then some.
const WORDS: &[&str] = &[
    "BLOCK",
    "PERMITS",
    "HOLDER",
    "TTL",
    "LIMIT",
    "WITHTOKEN",
    "ONLYFOR",
    "REMOVE",
    "TOKEN",
    "DELAY",
    "PRIORITY",
    "ATTEMPTS",
    "BACKOFF",
    "KEEP",
    "UNIQUE",
    "NEXT",
    "AFTER",
    "COUNT",
    "pending",
    "delayed",
    "failed",
    "fulfilled",
    "leased",
    "block",
    "Permits",
    "NOPE",
    "",
];

fn argument(rng: &mut Rng) -> Vec<u8> {
    match rng.below(16) {
        0 => b"0".to_vec(),
        1 => b"-1".to_vec(),
        2 => b"1.5".to_vec(),
        3 => b"18446744073709551616".to_vec(),
        4 => b"99999999999999999999999999999".to_vec(),
        5 => b"1099511627777".to_vec(),
        6 => Vec::new(),
        7 => b"\x00\xff\r\n".to_vec(),
        8 => vec![b'x'; if rng.below(50) == 0 { 1 << 20 } else { 300 }],
        9 | 10 => rng.pick(WORDS).as_bytes().to_vec(),
        11 => (rng.next() % 2_000).to_string().into_bytes(),
        12 => (1 + rng.next() % 200).to_string().into_bytes(),
        13 => format!("h{}", rng.below(5)).into_bytes(),
        14 => (rng.next() as i64).to_string().into_bytes(),
        _ => b"1".to_vec(),
    }
}

fn corral_commands(c: &mut Connection) -> Vec<String> {
    let v: Vec<String> = redis::cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("MODULE")
        .arg("corral")
        .query(c)
        .unwrap();
    assert!(v.len() > 30, "{v:?}");
    v
}

#[test]
fn random_and_malformed_commands_never_hurt_the_server() {
    let s = Server::start();
    let mut c = s.conn();
    let commands = corral_commands(&mut c);
    // Keys of every corral type, and a string, for commands to land on.
    let _: () = redis::cmd("SET").arg("str").arg("v").query(&mut c).unwrap();
    let keys = ["k0", "k1", "k2", "k3", "k4", "str", "missing"];
    let mut rng = Rng(0x5eed_c0ff_ee12_3457);
    let mut errors = 0u32;
    let mut batch: Vec<redis::Cmd> = Vec::new();
    for n in 0..6_000 {
        let name = rng.pick(&commands).clone();
        let mut cmd = redis::cmd(&name);
        // Most calls name a key; some have no arguments at all (wrong arity).
        if rng.below(20) != 0 {
            cmd.arg(*rng.pick(&keys));
        }
        for _ in 0..rng.below(8) {
            cmd.arg(argument(&mut rng));
        }
        batch.push(cmd);
        if n % 200 == 199 {
            // One round trip per batch; each reply (errors included) comes back as a Value.
            let mut packed = Vec::new();
            for cmd in &batch {
                cmd.write_packed_command(&mut packed);
            }
            let replies = c.req_packed_commands(&packed, 0, batch.len()).unwrap();
            assert_eq!(replies.len(), batch.len());
            errors += replies
                .iter()
                .filter(|r| matches!(r, Value::ServerError(_)))
                .count() as u32;
            batch.clear();
            assert_alive(&s, &mut c);
        }
    }
    assert!(errors > 1000, "most random calls are errors: {errors}");
    assert_eq!(info_int(&s, "corral", "corral_contained_panics"), 0);

    // Every key still loads, unchanged.
    let mut all_keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    all_keys.sort();
    let digests = |c: &mut Connection| -> Vec<Value> {
        all_keys
            .iter()
            .map(|k| {
                redis::cmd("DEBUG")
                    .arg("DIGEST-VALUE")
                    .arg(k)
                    .query(c)
                    .unwrap()
            })
            .collect()
    };
    let before = digests(&mut c);
    let _: () = redis::cmd("DEBUG").arg("RELOAD").query(&mut c).unwrap();
    assert_eq!(digests(&mut c), before);
    assert_alive(&s, &mut c);
}

#[test]
fn random_blocking_calls_time_out_or_are_served() {
    let s = Server::start();
    let mut c = s.conn();
    let mut rng = Rng(0xb10c_b10c_0000_0001);
    // Short BLOCKs on keys held by someone else: each answers (nil, a grant, or an error).
    let _: Value = value(&mut c, &["RESV.LOCK", "held", "owner", "60000"]);
    let _: Value = value(&mut c, &["SEM.ACQUIRE", "sem", "owner", "1", "60000"]);
    let _: Value = value(&mut c, &["SLOT.GET", "pool", "LIMIT", "1"]);
    for _ in 0..60 {
        let timeout = (1 + rng.below(20)).to_string();
        let args: Vec<&str> = match rng.below(5) {
            0 => vec!["RESV.LOCK", "held", "x", "100", "BLOCK", &timeout],
            1 => vec!["SEM.ACQUIRE", "sem", "x", "1", "100", "BLOCK", &timeout],
            2 => vec!["SLOT.GET", "pool", "LIMIT", "1", "BLOCK", &timeout],
            3 => vec!["JOB.PULL", "jobs", "w", "100", "BLOCK", &timeout],
            _ => vec!["ALLOC.DRAIN", "alloc", "i", "BLOCK", &timeout],
        };
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let r: redis::RedisResult<Value> = cmd.query(&mut c);
        assert!(r.is_ok(), "{args:?}: {r:?}");
    }
    assert_eq!(info_int(&s, "corral", "corral_resv_waiting"), 0);
    assert_eq!(info_int(&s, "corral", "corral_sem_waiting"), 0);
    assert_alive(&s, &mut c);
}
