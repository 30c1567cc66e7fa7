// Recipe: a lease keeper (README, "Recipes" → "Lease keeper").
//
// LeaseKeeper keeps one corral lease alive while work runs — a RESV lock, a SEM permit or a JOB
// work lease — and tells the work the moment it is lost:
//   - it renews every ttl/3 on a connection of its own (RESV.RENEW / SEM.RENEW / JOB.RENEW);
//   - it renews at once when a `<family>.lapse` keyspace event names its key (the event names the
//     key, not the holder: the renewal's answer says whether the lease that lapsed was ours);
//   - a renewal answering -NOTHELD aborts `keeper.signal` (an AbortSignal) and stops the keeper.
// A keeper cannot save a lease when the whole process stops (a GC pause, swapping, a suspended
// VM): the final write must be guarded by the fencing token (fencedSet below), which the server
// checks when the write arrives.
//
// Run: REDIS_URL=redis://127.0.0.1:6379 node lease_keeper.mjs
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import Redis from 'ioredis';

setTimeout(() => { console.error('timeout'); process.exit(1); }, 30000).unref();
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

// ---- the keeper: copy from here -----------------------------------------------------------

// What a keeper renews: the family's RENEW, on which key, for whom.
//   RESV.RENEW key holder ms · SEM.RENEW key holder ms · JOB.RENEW store id worker ms
const resvLease = (key, holder) => ({ family: 'resv', key, who: [holder] });
const semLease = (key, holder) => ({ family: 'sem', key, who: [holder] });
const jobLease = (store, id, worker) => ({ family: 'job', key: store, who: [id, worker] });

class LeaseKeeper {
  #abort = new AbortController();
  #timer;
  #lastRenewed; // performance.now() when the last successful renewal was sent

  // Keeps `lease`, granted for `ttl` ms, alive until stop(). Needs keyspace events of module
  // keys (`notify-keyspace-events Kd`); without them it still renews, it only learns of a
  // lapse at its next renewal instead of at once.
  static async start(redis, lease, ttl) {
    const keeper = new LeaseKeeper(redis, lease, ttl);
    await keeper.#renew('start'); // throws NOTHELD if the lease is already gone
    const channel = `__keyspace@${redis.options.db ?? 0}__:${lease.key}`;
    keeper.events.on('message', (ch, event) => {
      if (ch === channel && event === `${lease.family}.lapse`) keeper.#renew('a lapse event');
    });
    await keeper.events.subscribe(channel);
    keeper.#timer = setInterval(() => keeper.#renew('its heartbeat'), Math.floor(ttl / 3));
    return keeper;
  }

  constructor(redis, lease, ttl) {
    this.lease = lease;
    this.ttl = ttl;
    this.renewals = 0;
    this.lostBy = null; // what found out the loss: 'its heartbeat' or 'a lapse event'
    // Connections of its own: a renewal never waits behind the work's (blocking) commands.
    this.conn = redis.duplicate();
    this.events = redis.duplicate();
  }

  // Aborted (with the -NOTHELD error as its reason) when the lease is lost.
  get signal() { return this.#abort.signal; }

  async #renew(by) {
    if (this.signal.aborted || this.stopped) return;
    const { family, key, who } = this.lease;
    const sent = performance.now();
    try {
      await this.conn.call(`${family.toUpperCase()}.RENEW`, key, ...who, this.ttl);
      this.renewals += 1;
      this.#lastRenewed = Math.max(this.#lastRenewed ?? sent, sent);
    } catch (err) {
      if (by === 'start') throw err;
      if (err.message.startsWith('NOTHELD')) {
        this.#lose(err, by); // the server says so: someone else has it, or nobody does
      } else if (performance.now() - this.#lastRenewed >= this.ttl) {
        // No renewal got through for a whole TTL: the lease may have lapsed, assume it has.
        this.#lose(new Error(`no renewal succeeded for ${this.ttl} ms (${err.message})`), by);
      } // else a passing error (a reconnect): the next heartbeat tries again
    }
  }

  #lose(reason, by) {
    if (this.signal.aborted || this.stopped) return;
    this.lostBy = by;
    this.#abort.abort(reason);
    this.stop();
  }

  // Stops renewing (before releasing the lease, or once it is lost).
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.#timer);
    this.conn.disconnect();
    this.events.disconnect();
  }
}

// ---- the guarded write --------------------------------------------------------------------

// README, "Guarding a write with the fencing token": redis.call raises on RESV.CHECK's -NOTHELD
// or -STALE, which aborts the script before the SET.
const FENCED_SET = `
redis.call('RESV.CHECK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('SET', KEYS[2], ARGV[3])`;

// ---- the demonstration --------------------------------------------------------------------

// Stops this whole process (every thread, the keeper's timer and connections included) for
// `seconds`: what a long GC pause, swapping or a suspended VM does to a worker.
function pauseProcess(seconds) {
  const pid = process.pid;
  spawnSync('sh', ['-c', `kill -STOP ${pid}; sleep ${seconds}; kill -CONT ${pid}`]);
}

// Fails the example if `promise` has not settled within `ms`.
const within = (ms, promise, what) => Promise.race([promise,
  sleep(ms, null, { ref: false }).then(() => { throw new Error(`${what}: not within ${ms} ms`); })]);

const redis = new Redis(url);
redis.defineCommand('fencedSet', { numberOfKeys: 2, lua: FENCED_SET });
const map = (flat) => Object.fromEntries(flat.flatMap((v, i) => (i % 2 ? [] : [[v, flat[i + 1]]])));
const lock = '{report}:lock';
const result = '{report}:result'; // the guarded data: same hash slot as the lock
const sem = '{report}:sem';
const store = '{report}:jobs';
await redis.del(lock, result, sem, store);
// corral's events are keyspace events of the module class: enable them (K = keyspace channel,
// d = module events), keeping what the server already had.
const [, events] = await redis.config('GET', 'notify-keyspace-events');
await redis.config('SET', 'notify-keyspace-events', `${events}Kd`);

// ---- 1. Happy path: work outlives the TTL, three kinds of lease at once -------------------
{
  const TTL = 700;
  const WORK_MS = 2000; // almost three TTLs
  const token = await redis.call('RESV.LOCK', lock, 'worker-1', TTL);
  const semToken = await redis.call('SEM.ACQUIRE', sem, 'worker-1', 2, TTL);
  const jobId = await redis.call('JOB.CREATE', store, 'build report');
  const [, , jobToken] = await redis.call('JOB.PULL', store, 'worker-1', TTL);
  // The controls: the same leases taken without a keeper.
  await redis.call('SEM.ACQUIRE', sem, 'idle-worker', 2, TTL);
  const idleJob = await redis.call('JOB.CREATE', store, 'idle job');
  await redis.call('JOB.PULL', store, 'idle-worker', TTL);

  const started = performance.now();
  const keepers = await Promise.all([
    LeaseKeeper.start(redis, resvLease(lock, 'worker-1'), TTL),
    LeaseKeeper.start(redis, semLease(sem, 'worker-1'), TTL),
    LeaseKeeper.start(redis, jobLease(store, jobId, 'worker-1'), TTL),
  ]);
  const [resvKeeper] = keepers;
  // The work: steps that each check the signal first.
  for (let step = 0; step < 10; step++) {
    resvKeeper.signal.throwIfAborted();
    await sleep(WORK_MS / 10);
  }
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= WORK_MS);
  for (const keeper of keepers) {
    assert.equal(keeper.signal.aborted, false, `${keeper.lease.family}: ${keeper.signal.reason}`);
    assert.ok(keeper.renewals >= 3, `${keeper.lease.family}: ${keeper.renewals} renewals`);
  }
  // Still held under the same tokens, long after one TTL.
  const info = map(await redis.call('RESV.INFO', lock));
  assert.equal(info.holder, 'worker-1');
  assert.equal(info.token, token);
  const holders = await redis.call('SEM.HOLDERS', sem); // [holder, ttl, permits, token, …]
  assert.deepEqual([holders.length, holders[0], holders[3]], [4, 'worker-1', semToken],
    'only worker-1 holds a permit: the idle one lapsed');
  const idle = map(await redis.call('JOB.GET', store, idleJob));
  assert.deepEqual([idle.holder, idle.reason], [null, 'lapsed'], 'the idle job lease lapsed');
  // The final writes, each guarded by its token.
  assert.equal(await redis.fencedSet(lock, result, 'worker-1', token, 'report v1'), 'OK');
  assert.equal(await redis.call('JOB.FULFILL', store, jobId, 'done', 'TOKEN', jobToken), 1);
  for (const keeper of keepers) keeper.stop(); // stop renewing, then release
  assert.equal(await redis.call('RESV.RELEASE', lock, 'worker-1'), 1);
  assert.equal(await redis.call('SEM.RELEASE', sem, 'worker-1'), 1);
  console.log(`happy path: worked ${(elapsed / 1000).toFixed(1)} s under ${TTL} ms leases ` +
    `(${keepers.map((k) => `${k.lease.family} renewed ${k.renewals}×`).join(', ')}); ` +
    'the unkept permit and job lease lapsed; guarded write and FULFILL … TOKEN accepted');
}

// ---- 2. Loss path: the process pauses past its TTL; another holder takes the lock ---------
{
  const TTL = 500;
  const tokenA = await redis.call('RESV.LOCK', lock, 'worker-A', TTL);
  const keeper = await LeaseKeeper.start(redis, resvLease(lock, 'worker-A'), TTL);
  // worker-B waits for the lock inside Redis (its own connection).
  const b = new Redis(url);
  const bLock = b.call('RESV.LOCK', lock, 'worker-B', 5000, 'BLOCK', 0);
  const deadline = Date.now() + 5000;
  while (map(await redis.call('RESV.INFO', lock)).waiters !== 1) {
    assert.ok(Date.now() < deadline, 'worker-B never queued');
    await sleep(10);
  }
  await sleep(300); // worker-A works; its keeper renews
  assert.equal(keeper.signal.aborted, false);
  // worker-A checks its signal one last time, then its process stops for 1.5 s (three TTLs)
  // before it writes its result. Nothing in the process runs, the keeper included.
  keeper.signal.throwIfAborted();
  pauseProcess(1.5);
  // Meanwhile, on the server's clock, the lease lapsed and went to worker-B, the first waiter.
  // (The demo waits for worker-B's reply so what follows does not depend on timing.)
  const tokenB = await within(5000, bLock, "worker-B's lock");
  assert.ok(tokenB > tokenA, `${tokenB} > ${tokenA}`);
  // worker-A resumes, still believing it holds the lock, and writes: refused by the fence.
  await assert.rejects(redis.fencedSet(lock, result, 'worker-A', tokenA, 'report by A'), (err) => {
    console.log(`loss path: worker-A's guarded write after the pause -> ${err.message}`);
    return err.message.startsWith('NOTHELD the reservation is held by worker-B');
  });
  assert.equal(await redis.get(result), 'report v1');
  // worker-A's keeper finds out at once (its overdue heartbeat or the resv.lapse event renews,
  // and the renewal answers NOTHELD) and aborts the signal the work checks.
  if (!keeper.signal.aborted) await within(3000, once(keeper.signal, 'abort'), 'the abort');
  assert.match(keeper.signal.reason.message, /^NOTHELD the reservation is held by worker-B/);
  assert.throws(() => keeper.signal.throwIfAborted(), /NOTHELD/);
  console.log(`loss path: worker-A's keeper aborted its work (${keeper.lostBy}): ` +
    `${keeper.signal.reason.message}`);
  // worker-B, the holder, writes under its token.
  assert.equal(await redis.fencedSet(lock, result, 'worker-B', tokenB, 'report by B'), 'OK');
  assert.equal(await redis.call('RESV.RELEASE', lock, 'worker-B'), 1);
  await b.quit();
}

// ---- 3. A lease ended by someone else: the lapse event, not the next heartbeat ------------
{
  const TTL = 10000; // next heartbeat in 3.3 s
  await redis.call('RESV.LOCK', lock, 'worker-C', TTL);
  const keeper = await LeaseKeeper.start(redis, resvLease(lock, 'worker-C'), TTL);
  const renewals = keeper.renewals;
  // An operator shortens the key's TTL (eviction under maxmemory acts alike): the lease lapses
  // in 50 ms, raising resv.lapse; the keeper renews at once, is told NOTHELD, and aborts.
  await redis.pexpire(lock, 50);
  await within(2000, once(keeper.signal, 'abort'), 'the abort');
  assert.equal(keeper.lostBy, 'a lapse event');
  assert.equal(keeper.renewals, renewals); // no heartbeat came in between
  assert.match(keeper.signal.reason.message, /^NOTHELD the reservation is not held/);
  console.log(`lapse event: worker-C's keeper aborted its work at once: ${keeper.signal.reason.message}`);
}

await redis.config('SET', 'notify-keyspace-events', events);
await redis.quit();
console.log('ok');
