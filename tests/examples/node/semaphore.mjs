// Migrating from @eqworks/passbuddy to corral's SEM.* commands.
//
//   new PassBuddy({ prefix, name, capacity, TTL, maxAttempts, retryInterval, redisClient })
//          → key `${prefix}-${name}` (as passbuddy), holder = a uuid per PassBuddy instance
//   acquire()    → SEM.ACQUIRE key uuid capacity TTL BLOCK maxAttempts×retryInterval
//                  (acquire or extend; waits in line instead of retrying; nil → at capacity)
//   release()    → SEM.RELEASE key uuid   (-NOTHELD if the permit already lapsed or was released)
//   use()        → acquire() unless isHeld;  bind(fn, releaseOnComplete) → use(), fn, [release()]
//   handler({ acquireOnStart, releaseOnEnd }) → the same middleware around acquire()/release()
//   isHeld       → local estimate of the deadline; the server's view: SEM.HOLDERS key
// A permit is reclaimed exactly at its TTL by the server's clock (passbuddy: at 2×TTL, by the
// clients' clocks), and handed to the first waiter at once.
//
// Run: REDIS_URL=redis://127.0.0.1:6379 node semaphore.mjs
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import Redis from 'ioredis';

setTimeout(() => { console.error('timeout'); process.exit(1); }, 20000).unref();
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

class PassBuddyCapacityError extends Error {}

class PassBuddy {
  constructor({ prefix = 'passbuddy', name = 'semaphore', capacity = 10, TTL = 5000,
    maxAttempts = 5, retryInterval = 500, redisClient } = {}) {
    Object.assign(this, { name, capacity, TTL, wait: maxAttempts * retryInterval });
    this.key = `${prefix}-${name}`;
    this.uuid = randomUUID();
    this.client = redisClient ?? new Redis(url); // its own connection: a BLOCK holds it
    this.heldUntil = 0;
  }
  get isHeld() { return this.heldUntil > Date.now(); }
  async acquire() {
    const sent = Date.now(); // the server's deadline is at least sent + TTL
    const token = await this.client.call(
      'SEM.ACQUIRE', this.key, this.uuid, this.capacity, this.TTL, 'BLOCK', this.wait);
    if (token === null) throw new PassBuddyCapacityError(`Semaphore ${this.name} is at capacity`);
    this.heldUntil = sent + this.TTL;
    return token;
  }
  async release() { this.heldUntil = 0; return this.client.call('SEM.RELEASE', this.key, this.uuid); }
  async use() { if (!this.isHeld) await this.acquire(); }
  bind(callback, releaseOnComplete = false) {
    return async (...args) => {
      await this.use();
      try { return await callback(...args); } finally { if (releaseOnComplete) await this.release(); }
    };
  }
  handler({ acquireOnStart = false, releaseOnEnd = true } = {}) {
    return async (req, res, next) => {
      try {
        if (releaseOnEnd) res.once('finish', () => this.release().catch(() => {}));
        if (acquireOnStart) await this.acquire();
        next();
      } catch (err) { next(err); }
    };
  }
}

const STAGE = 'dev';
const passOptions = { prefix: `passbuddy-${STAGE}`, name: 'testlock', capacity: 2, TTL: 2000 };
const key = `passbuddy-${STAGE}-testlock`;
const admin = new Redis(url);
await admin.del(key);
const count = () => admin.call('SEM.COUNT', key);
const pool = { query: async (sql) => ({ rows: [{ sql }] }) }; // stands in for node-pg

// The README's flow: a bound query, the Express middleware, use(), acquire().
const pass = new PassBuddy(passOptions);
const query = pass.bind((...args) => pool.query(...args));
const { rows } = await query('SELECT 1');
assert.deepEqual(rows, [{ sql: 'SELECT 1' }]);
assert.equal(pass.isHeld, true);
assert.equal(await count(), 1);
const res = new EventEmitter(); // an Express response, as far as the middleware cares
await pass.handler({ releaseOnEnd: true })({}, res, (err) => assert.ifError(err));
res.emit('finish');
await waitFor(async () => (await count()) === 0);
console.log('bound query ran under a permit; the middleware released it when the response ended');

await pass.use().then(() => pool.query('SELECT 2'));
const token = await pass.acquire(); // acquire again = extend: same permit, same token
assert.equal(await pass.acquire(), token);
assert.equal(await count(), 1);

// A second consumer fills the semaphore (capacity 2); an impatient third gives up.
const other = new PassBuddy(passOptions);
const otherToken = await other.acquire();
const holders = await admin.call('SEM.HOLDERS', key); // [holder, ttl, permits, token, …]
assert.deepEqual([holders[0], holders[4]].sort(), [pass.uuid, other.uuid].sort());
const impatient = new PassBuddy({ ...passOptions, maxAttempts: 1, retryInterval: 300 });
await assert.rejects(impatient.acquire(), PassBuddyCapacityError);
console.log('2 of 2 permits held; impatient consumer: Semaphore testlock is at capacity');

// A patient consumer waits in line (no polling) and gets a permit the moment one is released.
const patient = new PassBuddy({ ...passOptions, TTL: 10000 });
const granted = patient.acquire();
await waitFor(async () => /corral_sem_waiting:[1-9]/.test(await admin.info('corral')));
assert.equal(await pass.release(), 1);
await granted;
assert.equal(patient.isHeld, true);
console.log('pass released; the waiting consumer was granted at once');

// `other` "crashes" without releasing: the next consumer waits; other's permit lapses at its TTL.
const next = new PassBuddy({ ...passOptions, maxAttempts: 10 }); // waits up to 5 s
const nextToken = await next.acquire();
assert.ok(nextToken > otherToken, 'fencing tokens increase');
await assert.rejects(other.release(), /^ReplyError: NOTHELD/);
console.log('a crashed consumer\'s permit lapsed at its TTL and went to the next; its release → NOTHELD');

for (const p of [patient, next]) assert.equal(await p.release(), 1);
assert.equal(await count(), 0);
await Promise.all([pass, other, impatient, patient, next].map((p) => p.client.quit()));
await admin.quit();

async function waitFor(cond) { // poll up to 5 s (only to observe, never to coordinate)
  for (let i = 0; i < 500; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('condition not reached in 5 s');
}
