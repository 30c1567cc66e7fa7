// A bounded worker pool: one JOB store, at most K running jobs of each kind (one SEM per kind).
//
// Each worker loops:
//   JOB.PULL store worker LEASE BLOCK …            the next job, under a work lease
//   SEM.ACQUIRE running:<kind> worker K PERMIT_TTL BLOCK PERMIT_WAIT
//     granted → JOB.RENEW (the work gets a whole lease), work, JOB.FULFILL … TOKEN, SEM.RELEASE
//     nil     → JOB.RELEASE: the job goes back in line (not a failed attempt), pull again
// The job comes first because its kind is only known once it is pulled; the worker waits for a
// permit in the semaphore's FIFO queue while it holds the job, so the lease must outlast the wait
// (LEASE > PERMIT_WAIT). A worker that dies loses nothing: its permit lapses after PERMIT_TTL, its
// job lease after LEASE, and the job goes to another worker (a failed attempt, reason "lapsed").
//
// Here machine m0 dies while its two workers run encode jobs; machines m1–m3 (two workers each,
// async tasks with a connection each) do all the jobs.
//
// Run: REDIS_URL=redis://127.0.0.1:6379 node worker_pool.mjs
import assert from 'node:assert/strict';
import Redis from 'ioredis';

setTimeout(() => { console.error('timeout'); process.exit(1); }, 60000).unref();
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const STORE = 'pool:jobs';
const KINDS = ['encode', 'resize', 'upload'];
const K = 2; //               at most K running jobs of a kind
const JOBS = 36; //           12 of each kind, in pairs: encode, encode, resize, resize, upload, …
const LEASE = 1500; //        ms: the job's work lease
const PERMIT_TTL = 1500; //   ms: a permit lapses this long after it was taken, if not released
const PERMIT_WAIT = 500; //   ms: how long a worker waits for a permit before giving the job back
const WORK = 10; //           ms: what a job takes
const WORKERS = [1, 2, 3].flatMap((m) => [1, 2].map((w) => `m${m}-w${w}`));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const asMap = (flat) => Object.fromEntries(flat.flatMap((v, i) => (i % 2 ? [] : [[v, flat[i + 1]]])));
const semKey = (kind) => `pool:running:${kind}`;

// What the workers report, to check the pool's promises afterwards.
const stats = {
  running: {}, //             jobs of a kind between permit and release, right now
  maxRunning: {},
  fulfilled: new Map(), //    job id -> successful FULFILLs
  byWorker: {}, //            worker -> jobs it fulfilled
  gaveBack: 0, //             jobs given back after PERMIT_WAIT without a permit
  firstLiveEncode: null, //   when a live worker first got an encode permit
  errors: [],
};
let stop = false;

async function workOne(redis, worker, [id, request, token]) {
  const kind = request.split(':')[0];
  const permit = await redis.call('SEM.ACQUIRE', semKey(kind), worker, K, PERMIT_TTL, 'BLOCK', PERMIT_WAIT);
  if (permit === null) {
    // The kind stayed full for PERMIT_WAIT: give the job back (still pending, no attempt
    // counted) rather than sit on it past its lease.
    await redis.call('JOB.RELEASE', STORE, id, worker);
    stats.gaveBack += 1;
    return;
  }
  try {
    // The wait used part of the lease: renew it so the work gets a whole one.
    await redis.call('JOB.RENEW', STORE, id, worker, LEASE);
    stats.running[kind] = (stats.running[kind] ?? 0) + 1;
    stats.maxRunning[kind] = Math.max(stats.maxRunning[kind] ?? 0, stats.running[kind]);
    if (kind === 'encode') stats.firstLiveEncode ??= Date.now();
    await sleep(WORK); // the work
    stats.running[kind] -= 1; // before the permit goes: someone may take it at once
    // TOKEN: had the lease lapsed and the job gone to another worker, this answers -STALE
    // instead of fulfilling twice.
    await redis.call('JOB.FULFILL', STORE, id, `${request} done by ${worker}`, 'TOKEN', token);
    stats.fulfilled.set(id, (stats.fulfilled.get(id) ?? 0) + 1);
    stats.byWorker[worker] = (stats.byWorker[worker] ?? 0) + 1;
  } catch (err) { // NOTHELD/STALE: the lease lapsed (a stall); the job is not ours any more
    stats.errors.push(`${worker} job ${id}: ${err.message}`);
  } finally {
    await redis.call('SEM.RELEASE', semKey(kind), worker) // NOTHELD: the permit lapsed meanwhile
      .catch((err) => stats.errors.push(`${worker} permit for ${kind}: ${err.message}`));
  }
}

async function runWorker(worker) {
  const redis = new Redis(url); // its own connection: its BLOCKs hold it
  while (!stop) {
    const job = await redis.call('JOB.PULL', STORE, worker, LEASE, 'BLOCK', 100);
    if (job !== null) await workOne(redis, worker, job);
  }
  await redis.quit();
}

// The server's own count of permits in use, sampled while the pool runs.
const sampledMax = {};
async function monitor() {
  const redis = new Redis(url);
  while (!stop) {
    for (const kind of KINDS) {
      const { permits } = asMap(await redis.call('SEM.INFO', semKey(kind)));
      sampledMax[kind] = Math.max(sampledMax[kind] ?? 0, permits);
    }
    await sleep(5);
  }
  await redis.quit();
}

const admin = new Redis(url);
await admin.del(STORE, ...KINDS.map(semKey));
const ids = [];
for (let i = 0; i < JOBS; i++) {
  ids.push(await admin.call('JOB.CREATE', STORE, `${KINDS[Math.floor(i / 2) % 3]}:${i}`));
}

// Machine m0 takes the first two jobs (both encode), gets both encode permits, and dies: its
// connections close, nothing is released.
const deadSince = Date.now();
const deadJobs = [];
for (const worker of ['m0-w1', 'm0-w2']) {
  const redis = new Redis(url);
  const [id, request] = await redis.call('JOB.PULL', STORE, worker, LEASE);
  assert.ok(request.startsWith('encode:'), request);
  assert.notEqual(await redis.call('SEM.ACQUIRE', semKey('encode'), worker, K, PERMIT_TTL), null);
  deadJobs.push(id);
  redis.disconnect();
}
console.log(`m0 died holding jobs ${deadJobs} and both encode permits`);

const started = Date.now();
const tasks = [...WORKERS.map(runWorker), monitor()];
const deadline = started + 15000;
while ([...stats.fulfilled.values()].length < JOBS && Date.now() < deadline && !stats.errors.length) {
  await sleep(10);
}
const took = (Date.now() - started) / 1000;
stop = true;
await Promise.all(tasks);

assert.deepEqual(stats.errors, []);
// Every job done exactly once, within the bound.
assert.deepEqual([...stats.fulfilled.keys()].sort(), [...ids].sort());
assert.ok([...stats.fulfilled.values()].every((n) => n === 1), 'a job was fulfilled twice');
const info = asMap(await admin.call('JOB.INFO', STORE));
assert.deepEqual([info.fulfilled, info.pending, info.leased], [JOBS, 0, 0]);
assert.ok(took < 10, `the pool took ${took} s`);
// Never more than K of a kind at once: counted by the workers and sampled from the server.
assert.ok(KINDS.every((k) => stats.maxRunning[k] <= K), JSON.stringify(stats.maxRunning));
assert.ok(KINDS.some((k) => stats.maxRunning[k] === K), 'the limit never bound');
assert.ok(KINDS.every((k) => sampledMax[k] <= K), JSON.stringify(sampledMax));
// Every worker took part.
assert.deepEqual(Object.keys(stats.byWorker).sort(), [...WORKERS].sort());
// m0's permits counted against encode's K until they lapsed; meanwhile the workers that pulled
// encode jobs gave them back after PERMIT_WAIT. Its jobs' leases lapsed and others did them.
assert.ok(stats.firstLiveEncode - deadSince >= PERMIT_TTL - 50,
  `a live worker got an encode permit ${stats.firstLiveEncode - deadSince} ms after m0 died`);
assert.ok(stats.gaveBack > 0);
for (const id of deadJobs) {
  const job = asMap(await admin.call('JOB.GET', STORE, id));
  assert.deepEqual([job.state, job.attempts, job.reason], ['fulfilled', 1, 'lapsed']);
  assert.ok(!job.value.includes(' done by m0-'), job.value);
}
// Nothing left: every permit was released.
for (const kind of KINDS) assert.equal(asMap(await admin.call('SEM.INFO', semKey(kind))).holders, 0);

console.log(`${JOBS} jobs done once each in ${took.toFixed(2)} s by ${JSON.stringify(stats.byWorker)}`);
console.log(`most running at once per kind: ${JSON.stringify(stats.maxRunning)} (server: `
  + `${JSON.stringify(sampledMax)}), limit ${K}; ${stats.gaveBack} jobs given back while m0's encode permits were held`);
await admin.quit();
console.log('ok');
