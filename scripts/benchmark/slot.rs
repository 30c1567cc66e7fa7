//! SLOT: lowest-free slot pools on a hierarchical bitmap, against the BITPOS + SETBIT Lua
//! allocator users write today.

use std::time::{Duration, Instant};

use crate::report::{num, Kind, Report, Row, Target};
use crate::resp::{self, Reply};
use crate::util::{self, args, best_of, is_int, is_nil, is_one, Footprint, Memory, Workload};

const FAMILY: &str = "SLOT";

/// The do-it-yourself allocator: the first clear bit is the slot, set it. BITPOS scans
/// the string from its start, so a GET costs O(held slots); PUT is `SETBIT key p 0`.
const LUA_GET: &str =
    "local p = redis.call('BITPOS', KEYS[1], 0); redis.call('SETBIT', KEYS[1], p, 1); return p";

/// How long building one pool may take before the section measures the size it reached
/// (and says so in its rows).
const FILL_BUDGET: Duration = Duration::from_secs(90);

/// Fills the empty pool `key` with up to `n` anonymous slots (pipelined `SLOT.GET`s,
/// each checked to answer the next slot: 0, 1, 2…), within [`FILL_BUDGET`]. Returns how
/// many it holds.
fn fill(conn: &mut resp::Conn, key: &str, n: usize) -> usize {
    let mut get = Vec::new();
    resp::encode(&mut get, &[b"SLOT.GET", key.as_bytes()]);
    let t = Instant::now();
    let held = util::pipeline(
        conn,
        n,
        1000,
        FILL_BUDGET,
        |range, buf| {
            for _ in range {
                buf.extend_from_slice(&get);
            }
        },
        |i, r| assert_eq!(r, Reply::Int(i as i64), "SLOT.GET {key} number {i}"),
    );
    eprintln!(
        "bench:    {key}: {} slots taken in {:.1} s",
        num(held as f64),
        t.elapsed().as_secs_f64()
    );
    if held < n {
        eprintln!(
            "bench:    {key}: stopped at {} of {} slots ({FILL_BUDGET:?} budget)",
            num(held as f64),
            num(n as f64)
        );
    }
    held
}

/// "n held slots", saying so when the pool fell short of what was asked.
fn size(held: usize, asked: usize) -> String {
    if held == asked {
        format!("{} held slots", num(held as f64))
    } else {
        format!(
            "{} held slots (only; {} could not be built in {FILL_BUDGET:?})",
            num(held as f64),
            num(asked as f64)
        )
    }
}

/// (a) SLOT.GET + SLOT.PUT at 10,000,000 held slots against 1,000 (at most 1.5x), and
/// against the Lua allocator at 1,000,000 (at least 20x less server time) and
/// 10,000,000 (at least 80x).
///
/// Pools of 1,000, 1,000,000 and 10,000,000 anonymous slots (slots 0…n−1) are built with
/// pipelined `SLOT.GET`s; the Lua allocator's bitmaps hold the same slots, written at once
/// with `SETRANGE` (n/8 bytes of 0xff: the very string its GETs would have built). Each
/// iteration takes the lowest free slot and puts it back — `SLOT.GET` answers n,
/// `SLOT.PUT pool n` returns it (`EVALSHA` answers n, `SETBIT key n 0` returns it) — so
/// every pool stays at its size. The ratio rows compare the GETs alone:
/// `cmdstat_evalsha` (the script with its BITPOS and SETBIT) over `cmdstat_slot.get`.
/// Interleaved, 5 rounds after a warm-up, best round; the Lua workloads run fewer
/// iterations (they are slow). An informational row gives a module command's floor here
/// (`SLOT.COUNT`: parse, open the key, reply), which bounds how far below Lua's time
/// any GET can go.
pub fn server_time(report: &mut Report) {
    const ROUNDS: usize = 5;
    const ASKED: [usize; 3] = [1_000, 1_000_000, 10_000_000];

    let (_srv, mut admin, mut conn) = util::start();
    let keys = ["pool:1k", "pool:1m", "pool:10m"];
    let bitmaps = ["bits:1k", "bits:1m", "bits:10m"];
    let held: Vec<usize> = keys
        .iter()
        .zip(ASKED)
        .map(|(key, n)| fill(&mut conn, key, n))
        .collect();
    for (bits, &n) in bitmaps.iter().zip(&held) {
        let _: i64 = redis::cmd("SETRANGE")
            .arg(*bits)
            .arg(0)
            .arg(vec![0xffu8; n.div_ceil(8)])
            .query(&mut admin)
            .expect("SETRANGE");
        // A pool that fell short of a multiple of 8: clear the bits past its end.
        for p in n..n.div_ceil(8) * 8 {
            let _: i64 = redis::cmd("SETBIT")
                .arg(*bits)
                .arg(p)
                .arg(0)
                .query(&mut admin)
                .expect("SETBIT");
        }
    }
    let sha = util::load_script(&mut admin, LUA_GET);

    const CORRAL_LABELS: [&str; 3] = ["corral, 1k", "corral, 1M", "corral, 10M"];
    const LUA_LABELS: [&str; 3] = ["Lua, 1k", "Lua, 1M", "Lua, 10M"];
    let corral: Vec<Workload> = (0..3)
        .map(|i| {
            let n = held[i].to_string();
            Workload::new(
                CORRAL_LABELS[i],
                vec![
                    (args(&["SLOT.GET", keys[i]]), is_int),
                    (args(&["SLOT.PUT", keys[i], &n]), is_one),
                ],
                &["slot.get", "slot.put"],
            )
        })
        .collect();
    let lua: Vec<Workload> = (0..3)
        .map(|i| {
            let n = held[i].to_string();
            Workload::new(
                LUA_LABELS[i],
                vec![
                    (args(&["EVALSHA", &sha, "1", bitmaps[i]]), is_int),
                    (args(&["SETBIT", bitmaps[i], &n, "0"]), is_one),
                ],
                &["evalsha"],
            )
        })
        .collect();
    let floor = Workload::new(
        "floor",
        vec![
            (args(&["SLOT.COUNT", keys[0]]), is_int),
            (args(&["GET", "missing"]), is_nil),
        ],
        &["slot.count", "get"],
    );
    // Lua's GET costs O(n): about 2 us at 1k, 7 at 1M, 50 at 10M.
    let work = [
        (&corral[0], 20_000),
        (&corral[1], 20_000),
        (&corral[2], 20_000),
        (&lua[0], 20_000),
        (&lua[1], 5_000),
        (&lua[2], 2_000),
        (&floor, 20_000),
    ];
    let best = best_of(&mut conn, &mut admin, &work, ROUNDS);

    let small = size(held[0], ASKED[0]);
    // For the charts: pool i as (label, held slots).
    let labels: Vec<String> = held
        .iter()
        .map(|&n| format!("{} slots", num(n as f64)))
        .collect();
    let slots = |i: usize| (labels[i].as_str(), held[i] as f64);
    const PAIR: &str = "SLOT.GET + SLOT.PUT (per pair)";
    report.add(
        Row::new(
            FAMILY,
            &format!(
                "server time, SLOT.GET + SLOT.PUT, {} (per pair)",
                size(held[2], ASKED[2])
            ),
            best.iter(2),
            "us",
        )
        .vs(&small, best.iter(0))
        .target(Target::RatioAtMost(1.5))
        .scale(PAIR, slots(2), slots(0)),
    );
    report.add(
        Row::new(
            FAMILY,
            &format!(
                "server time, SLOT.GET + SLOT.PUT, {} (per pair)",
                size(held[1], ASKED[1])
            ),
            best.iter(1),
            "us",
        )
        .vs(&small, best.iter(0))
        .scale(PAIR, slots(1), slots(0)),
    );
    // value / baseline = Lua's GET over corral's: how many times less server time.
    // Smallest pool first (no target there: Lua's scan is short).
    for (i, times) in [(0, None), (1, Some(25.0)), (2, Some(80.0))] {
        let row = Row::new(
            FAMILY,
            &format!(
                "server time, Lua allocator GET (EVALSHA: BITPOS + SETBIT), {}",
                size(held[i], ASKED[i])
            ),
            best.call(3 + i, 0),
            "us",
        )
        .vs("SLOT.GET, same pool size", best.call(i, 0))
        .versus_swapped(
            &format!("SLOT.GET, {} held", labels[i]),
            Kind::Lua,
            "Lua BITPOS + SETBIT",
        );
        report.add(match times {
            Some(t) => row.target(Target::RatioAtLeast(t)),
            None => row,
        });
    }
    report.add(
        Row::new(
            FAMILY,
            "server time, SLOT.COUNT (module command floor: parse, open the key, reply)",
            best.call(6, 0),
            "us",
        )
        .vs("GET on a missing key", best.call(6, 1)),
    );
}

/// (b) `MEMORY USAGE` of a pool of 10,000,000 anonymous held slots: at most 2 MB
/// (10^6 bytes), with, for scale, the Redis string bitmap holding the same slots
/// (1.25 MB, one `SETRANGE`), and the growth of `used_memory` while the pool was built
/// (what the allocator really handed out, slack included).
pub fn memory(report: &mut Report) {
    const ASKED: usize = 10_000_000;
    const MB: f64 = 1e6;
    let (_srv, mut admin, mut conn) = util::start();
    let (pool, held) = util::footprint(&mut admin, Some("pool"), || fill(&mut conn, "pool", ASKED));
    let (bitmap, ()) = util::footprint(&mut admin, Some("bits"), || {
        let r = conn.call(&[b"SETRANGE", b"bits", b"0", &vec![0xffu8; held.div_ceil(8)]]);
        assert!(is_int(&r.expect("SETRANGE")));
    });
    // used_memory also grew by a query buffer as big as SETRANGE's argument, which Redis
    // keeps until the client is idle or gone: the string itself is allocated to size, so
    // its growth is its MEMORY USAGE.
    let bitmap = Footprint {
        growth: bitmap.usage.expect("MEMORY USAGE bits"),
        ..bitmap
    };
    Memory {
        family: FAMILY,
        usage: &format!("MEMORY USAGE of a pool of {}", size(held, ASKED)),
        target: Target::AtMost(2.0),
        growth: "used_memory growth while that pool was built",
        baseline: "Redis string bitmap of the same slots",
        unit: "MB",
    }
    .report(report, pool.per(MB), bitmap.per(MB));
}
