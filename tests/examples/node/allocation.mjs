// Migrating from atributo to corral's ALLOC.* commands (atributo's two README examples).
//
//   new Atributo({ db_filename })   → pick a key name: one ALLOC key is one atributo database
//   available(id)                   → ALLOC.AVAILABLE key id [TTL ms]   → 1 | 0
//   unavailable(id, destroy)        → ALLOC.UNAVAILABLE key id [REMOVE] → 1 | 0 | jobs dropped
//   instances()                     → ALLOC.INSTANCES key   → [id, 1|0, …] in allocation order
//   allocate(job) → (id, persisted) → ALLOC.ALLOCATE key job [ONLYFOR id] → [id, 1|0]
//   _allocate override (persist only for my instance) → ALLOCATE … ONLYFOR <my instance>
//   deallocate(job), jobs(id), has_jobs(id), instance(job)
//                                   → ALLOC.DEALLOCATE / ALLOC.JOBS / ALLOC.HASJOBS / ALLOC.INSTANCE
//   polling has_jobs before removing an instance → ALLOC.DRAIN key id BLOCK ms
// Same placement rule as atributo (md5 of the job id), so jobs land where they did before.
//
// Run: REDIS_URL=redis://127.0.0.1:6379 node allocation.mjs
import assert from 'node:assert/strict';
import Redis from 'ioredis';

setTimeout(() => { console.error('timeout'); process.exit(1); }, 20000).unref();
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

// A thin atributo-shaped wrapper: `onlyFor` plays the role of the _allocate override.
const atributo = (redis, key, onlyFor) => ({
  available: (id) => redis.call('ALLOC.AVAILABLE', key, id),
  unavailable: (id, destroy) => redis.call('ALLOC.UNAVAILABLE', key, id, ...(destroy ? ['REMOVE'] : [])),
  instances: async () => {
    const flat = await redis.call('ALLOC.INSTANCES', key);
    const out = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ id: flat[i], available: flat[i + 1] === 1 });
    return out;
  },
  allocate: async (job) => {
    const [instance, persisted] = await redis.call(
      'ALLOC.ALLOCATE', key, job, ...(onlyFor ? ['ONLYFOR', onlyFor] : []));
    return [instance, persisted === 1];
  },
  deallocate: (job) => redis.call('ALLOC.DEALLOCATE', key, job),
  jobs: (id) => redis.call('ALLOC.JOBS', key, id),
  has_jobs: async (id) => (await redis.call('ALLOC.HASJOBS', key, id)) === 1,
  instance: (job) => redis.call('ALLOC.INSTANCE', key, job),
});

const redis = new Redis(url);
await redis.del('atributo', 'atributo:override'); // fresh "databases"

// ---- Example 1 -------------------------------------------------------------------------
const ao = atributo(redis, 'atributo');
await ao.available('instance0');
await ao.available('instance1');
assert.deepEqual(await ao.instances(), [
  { id: 'instance0', available: true }, { id: 'instance1', available: true }]);

assert.deepEqual(await ao.allocate('job0'), ['instance1', true]);   // new allocation, persisted
assert.deepEqual(await ao.allocate('job1'), ['instance0', true]);
assert.deepEqual(await ao.jobs('instance0'), ['job1']);
assert.deepEqual(await ao.jobs('instance1'), ['job0']);
assert.equal(await ao.has_jobs('instance0'), true);
assert.equal(await ao.instance('job1'), 'instance0');
console.log('job0 → instance1, job1 → instance0 (same placement as atributo)');

await ao.unavailable('instance0', false);
assert.deepEqual(await ao.instances(), [
  { id: 'instance0', available: false }, { id: 'instance1', available: true }]);
assert.deepEqual(await ao.allocate('job1'), ['instance0', false]);  // sticky, not re-persisted
console.log('instance0 unavailable: job1 stays on instance0 (sticky)');

// Wait until instance0 has no jobs before removing it: DRAIN blocks instead of polling.
const drainer = new Redis(url);
assert.equal(await redis.call('ALLOC.DRAIN', 'atributo', 'instance0'), null); // job1 is still there
const drained = drainer.call('ALLOC.DRAIN', 'atributo', 'instance0', 'BLOCK', 10000);
await waitFor(async () => /corral_alloc_waiting:[1-9]/.test(await redis.info('corral')));
assert.equal(await ao.deallocate('job1'), 1);                        // instance0 finished job1
assert.equal(await drained, 1);
console.log('job1 deallocated: the blocked DRAIN of instance0 answered at once');

assert.deepEqual(await ao.allocate('job1'), ['instance1', true]);   // re-allocated
console.log('job1 re-allocated → instance1');

assert.equal(await ao.unavailable('instance0', true), 0);          // remove (0 jobs dropped)
assert.deepEqual(await ao.instances(), [{ id: 'instance1', available: true }]);
console.log('instance0 removed:', await ao.instances());

// ---- Example 2: the _allocate override, one atributo per instance --------------------
const ao0 = atributo(redis, 'atributo:override', 'instance0');
const ao1 = atributo(drainer, 'atributo:override', 'instance1');
await ao0.available('instance0');
await ao1.available('instance1');
for (const a of [ao0, ao1]) {
  assert.deepEqual(await a.instances(), [
    { id: 'instance0', available: true }, { id: 'instance1', available: true }]);
}
assert.deepEqual(await ao0.allocate('job0'), ['instance1', false]); // not ours: not persisted
assert.deepEqual(await ao1.jobs('instance1'), []);
assert.deepEqual(await ao1.allocate('job0'), ['instance1', true]);  // ours: persisted
assert.deepEqual(await ao1.jobs('instance1'), ['job0']);
assert.deepEqual(await ao1.allocate('job1'), ['instance0', false]);
assert.deepEqual(await ao1.jobs('instance0'), []);
assert.deepEqual(await ao0.allocate('job1'), ['instance0', true]);
assert.deepEqual(await ao1.jobs('instance0'), ['job1']);
assert.deepEqual(await ao1.allocate('job0'), ['instance1', false]); // persisted only once
assert.deepEqual(await ao0.allocate('job1'), ['instance0', false]);
console.log('override: each instance persisted only its own jobs (job0 → instance1, job1 → instance0)');

await Promise.all([redis.quit(), drainer.quit()]);

async function waitFor(cond) { // poll up to 5 s (only to know the DRAIN is already waiting)
  for (let i = 0; i < 500; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('condition not reached in 5 s');
}
