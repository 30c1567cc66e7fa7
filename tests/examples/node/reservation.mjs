// Migrating from redis-reservation to corral's RESV.* commands.
//
//   new ReserveResource(by, host, port, heartbeat_interval, lock_ttl)
//                      → one connection per worker; lock_ttl is in ms here (was seconds);
//                        key `reservation-<resource>`, holder `<hostname>-<by>-<pid>` as before
//   lock(resource)             → RESV.LOCK key holder ttl          → token (true) | nil (false)
//   wait_until_lock(resource)  → RESV.LOCK key holder ttl BLOCK 0  → token; waits in line
//                                                                    (the library polled every 1 s)
//   the heartbeat (GET + EXPIRE) → RESV.RENEW key holder ttl  every heartbeat_interval
//   release() (an unconditional DEL) → RESV.RELEASE key holder → 1 | -NOTHELD (the lock was lost;
//                                      someone else's lock is never deleted)
// new: every lock carries a fencing token; RESV.CHECK key holder token guards a write with it,
//      inside a script that checks first (fencedSet below: its error aborts it before the write;
//      MULTI/EXEC would not, an error there does not stop the write after it).
//
// Run: REDIS_URL=redis://127.0.0.1:6379 node reservation.mjs
import assert from 'node:assert/strict';
import os from 'node:os';
import Redis from 'ioredis';

setTimeout(() => { console.error('timeout'); process.exit(1); }, 20000).unref();
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

// A write guarded by the fencing token (README, "Guarding a write with the fencing token"):
// redis.call raises on RESV.CHECK's -NOTHELD / -STALE, which aborts the script before the SET.
const FENCED_SET = `
redis.call('RESV.CHECK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('SET', KEYS[2], ARGV[3])`;

// The library's API on top of corral.
class Reservation {
  constructor(by, url, heartbeatInterval, lockTtl) {
    Object.assign(this, { by, heartbeatInterval, lockTtl, redis: new Redis(url) });
    this.holder = `${os.hostname()}-${by}-${process.pid}`;
    this.redis.defineCommand('fencedSet', { numberOfKeys: 2, lua: FENCED_SET });
  }
  // Writes `value` to `dataKey` only while this worker still holds the lock under its token.
  // In Redis Cluster both keys must hash to one slot: `{<lock key>}:…` does.
  write(dataKey, value) {
    return this.redis.fencedSet(this.key, dataKey, this.holder, this.token, value);
  }
  async lock(resource, ...block) {
    const key = `reservation-${resource}`;
    const token = await this.redis.call('RESV.LOCK', key, this.holder, this.lockTtl, ...block);
    if (token === null) return false;
    Object.assign(this, { key, token });
    this.heartbeat = setInterval(() => {
      this.redis.call('RESV.RENEW', key, this.holder, this.lockTtl)
        .catch((err) => { console.log(`${this.by}: heartbeat failed: ${err.message}`); this.stop(); });
    }, this.heartbeatInterval);
    return true;
  }
  async wait_until_lock(resource) { // BLOCK 0 waits forever; the connection is this worker's own
    assert.ok(await this.lock(resource, 'BLOCK', 0));
    return this.key; // reserve_key
  }
  async release() { this.stop(); return this.redis.call('RESV.RELEASE', this.key, this.holder); }
  stop() { clearInterval(this.heartbeat); } // (also: what a crash looks like to the server)
}

const job_name = 'report-job';
const key = `reservation-${job_name}`;
const result = `{${key}}:result`; // the guarded data: same hash slot as the lock key
const admin = new Redis(url);
await admin.del(key, result);
const info = async () => { // RESV.INFO is a map: [k, v, k, v, …] over RESP2; holder null when free
  const flat = await admin.call('RESV.INFO', key);
  return Object.fromEntries(flat.flatMap((v, i) => (i % 2 ? [] : [[v, flat[i + 1]]])));
};

// heartbeat every 250 ms, reservation lasts 1 s unless renewed
const worker1 = new Reservation('worker-1', url, 250, 1000);
const worker2 = new Reservation('worker-2', url, 250, 1000);
const worker3 = new Reservation('worker-3', url, 250, 1000);

// lock(): worker-1 gets it, worker-2 is told it is held.
assert.equal(await worker1.lock(job_name), true);
assert.equal(await worker2.lock(job_name), false);
console.log(`worker-1 locked ${job_name} (token ${worker1.token}); worker-2: Reservation already held`);

// wait_until_lock(): worker-2 waits in line inside Redis.
const waiting = worker2.wait_until_lock(job_name);

// worker-1 works for 2 s, twice its TTL: the heartbeat keeps the reservation.
await new Promise((r) => setTimeout(r, 2000));
let now = await info();
assert.equal(now.holder, worker1.holder);
assert.equal(now.token, worker1.token);
assert.equal(now.waiters, 1);
console.log(`after 2 s worker-1 still holds it (heartbeat), ${now.waiters} waiter`);

// release(): the lock goes straight to the waiting worker-2, with a larger token.
assert.equal(await worker1.release(), 1);
assert.equal(await waiting, key);
assert.ok(worker2.token > worker1.token);
console.log(`worker-1 released; worker-2 got it at once (token ${worker2.token})`);

// Fencing: worker-1's old token no longer guards anything.
await assert.rejects(admin.call('RESV.CHECK', key, worker1.holder, worker1.token),
  { message: `NOTHELD the reservation is held by ${worker2.holder}` });
assert.equal(await admin.call('RESV.CHECK', key, worker2.holder, worker2.token), 1);

// worker-2 "crashes": no heartbeat, no release. worker-3 waits and is granted the moment
// the reservation lapses (at most 1 s later), without polling.
worker2.stop();
assert.equal(await worker3.wait_until_lock(job_name), key);
assert.ok(worker3.token > worker2.token);
console.log(`worker-2 stopped heart-beating; worker-3 got the lock when it lapsed (token ${worker3.token})`);

// worker-2 was only paused: it wakes up and writes its result, guarded by its old token.
// Refused, and nothing is written; worker-3, the holder, writes.
await assert.rejects(worker2.write(result, 'report by worker-2'), (err) => {
  console.log(`worker-2's guarded write: ${err.message}`);
  return err.message.startsWith(`NOTHELD the reservation is held by ${worker3.holder}`);
});
assert.equal(await admin.get(result), null);
assert.equal(await worker3.write(result, 'report by worker-3'), 'OK');
assert.equal(await admin.get(result), 'report by worker-3');
console.log("worker-3's guarded write went through");

// worker-2 comes back and releases: corral tells it the reservation was lost.
await assert.rejects(worker2.release(), (err) => {
  console.log(`worker-2 release: ${err.message} (Could not release lock, maybe the reservation was already lost?)`);
  return err.message === `NOTHELD the reservation is held by ${worker3.holder}`;
});

assert.equal(await worker3.release(), 1);
assert.equal((await info()).holder, null);
await Promise.all([admin, worker1, worker2, worker3].map((w) => (w.redis ?? w).quit()));
