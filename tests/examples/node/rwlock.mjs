// Recipe: a read-write lock on one SEM key (README, "Recipes" → "Read-write lock").
//
// A semaphore of `capacity` permits: a reader takes 1, a writer takes all of them
// (PERMITS capacity), so a writer holds the key alone and readers share it. SEM serves waiters
// strictly first come, first served, and a request that does not fit holds up every later one:
// a reader arriving after a waiting writer queues behind it even when a permit is free, so
// readers cannot starve a writer, and the readers queued behind a writer get in together when it
// releases.
// Rules: every client passes the same capacity (the most readers at once); each acquisition uses
// a holder id of its own (asking again under a held id re-grants what it holds: no upgrade).
//
// Run: REDIS_URL=redis://127.0.0.1:6379 node rwlock.mjs
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import Redis from 'ioredis';

setTimeout(() => { console.error('timeout'); process.exit(1); }, 20000).unref();
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

// ---- the lock: copy from here -------------------------------------------------------------

class RWLock {
  // `redis` is this client's own connection (a BLOCKing acquire holds it while it waits).
  constructor(redis, key, { capacity, ttl }) {
    Object.assign(this, { redis, key, capacity, ttl });
  }

  // A shared lock: 1 permit. The fencing token, or null (after waiting up to `block` ms).
  read(holder, block) {
    return this.#acquire(holder, 1, block);
  }

  // An exclusive lock: every permit.
  write(holder, block) {
    return this.#acquire(holder, this.capacity, block);
  }

  release(holder) {
    return this.redis.call('SEM.RELEASE', this.key, holder);
  }

  #acquire(holder, permits, block) {
    const wait = block === undefined ? [] : ['BLOCK', block];
    return this.redis.call('SEM.ACQUIRE', this.key, holder, this.capacity, this.ttl,
      'PERMITS', permits, ...wait);
  }
}

// ---- the demonstration --------------------------------------------------------------------

const KEY = 'report:rwlock';
const OPTIONS = { capacity: 4, ttl: 30000 }; // up to 4 readers; a crashed holder frees in 30 s
const BLOCK = 10000;
const admin = new Redis(url);
await admin.del(KEY);
const info = async () => {
  const flat = await admin.call('SEM.INFO', KEY); // permits, holders, next_expiry_ms, last_token, waiters
  return Object.fromEntries(flat.flatMap((v, i) => (i % 2 ? [] : [[v, flat[i + 1]]])));
};
const waitFor = async (what, predicate) => {
  const deadline = Date.now() + 5000;
  while (!(await predicate())) {
    assert.ok(Date.now() < deadline, `${what}: not within 5 s`);
    await sleep(10);
  }
};
// Every client has its own connection and its own RWLock on the same key.
const clients = [];
const client = () => {
  const conn = new Redis(url);
  clients.push(conn);
  return new RWLock(conn, KEY, OPTIONS);
};
// A pending acquire whose settlement can be looked at.
const pending = (promise) => {
  const p = { promise, settled: false };
  promise.then(() => { p.settled = true; });
  return p;
};

// Three readers hold the lock together.
const readers = await Promise.all(['reader-1', 'reader-2', 'reader-3'].map(async (id) => {
  const lock = client();
  const token = await lock.read(id);
  assert.ok(token, `${id} reads at once`);
  return { id, lock };
}));
assert.equal((await info()).permits, 3);
console.log('reader-1, reader-2, reader-3 hold the read lock');

// A writer asks for all 4 permits: it waits.
const writerLock = client();
const writer = pending(writerLock.write('writer', BLOCK));
await waitFor('the writer queues', async () => (await info()).waiters === 1);

// Readers arriving after the writer wait behind it, although a permit is free for each.
const late = ['reader-4', 'reader-5'].map((id) => ({ id, lock: client() }));
for (const [i, r] of late.entries()) {
  r.wait = pending(r.lock.read(r.id, BLOCK));
  await waitFor(`${r.id} queues`, async () => (await info()).waiters === 2 + i);
}
let now = await info();
assert.equal(now.permits, 3); // one permit free, and still nobody granted
assert.ok(!writer.settled && late.every((r) => !r.wait.settled));
// A reader that does not wait is refused while anyone waits, even though it would fit.
assert.equal(await client().read('reader-6'), null);
console.log('writer waits for 4 permits; reader-4 and reader-5, arriving later, queue behind it ' +
  '(1 permit free); reader-6 without BLOCK is refused');

// The first readers finish. The writer gets the lock when the last one releases.
assert.equal(await readers[0].lock.release('reader-1'), 1);
assert.equal(await readers[1].lock.release('reader-2'), 1);
assert.equal((await info()).waiters, 3); // reader-3 still reads: the writer still waits
assert.ok(!writer.settled);
assert.equal(await readers[2].lock.release('reader-3'), 1);
const writeToken = await writer.promise;
assert.ok(writeToken, 'the writer is granted');
now = await info();
assert.deepEqual([now.permits, now.holders, now.waiters], [4, 1, 2]); // the writer alone
assert.ok(late.every((r) => !r.wait.settled));
console.log(`the readers released; the writer holds all 4 permits alone (token ${writeToken})`);

// The writer finishes: every reader queued behind it gets in at once.
assert.equal(await writerLock.release('writer'), 1);
const lateTokens = await Promise.all(late.map((r) => r.wait.promise));
for (const token of lateTokens) assert.ok(token > writeToken, `${token} > ${writeToken}`);
now = await info();
assert.deepEqual([now.permits, now.holders, now.waiters], [2, 2, 0]);
console.log('the writer released; reader-4 and reader-5 read together');

// No upgrade: a reader asking for the write lock under its own id gets its read permit back
// (the idempotent re-grant), not the exclusive lock. Release, then write under another id.
assert.equal(await late[0].lock.write('reader-4'), lateTokens[0]);
assert.equal((await info()).permits, 2);
for (const r of late) assert.equal(await r.lock.release(r.id), 1);
assert.equal(await admin.exists(KEY), 0); // free: the key is gone

await Promise.all([admin, ...clients].map((c) => c.quit()));
console.log('ok');
