// Migrating from callosum-server-slots to corral's SLOT.* commands.
//
//   new CallosumServerSlots()   → pick a key name: one pool is one key ('callosum:slots')
//   callosumServerSlots.get()   → SLOT.GET pool                          → lowest free slot
//   callosumServerSlots.put(s)  → SLOT.PUT pool s                        → 1
//   .on('error', fn)            → the command rejects: -NOTHELD for a slot that is not held
// and what the library could not do:
//   a slot that comes back when its server dies → SLOT.GET pool HOLDER id TTL ms,
//                                                  heartbeat: SLOT.RENEW pool slot ms HOLDER id
//   a fixed number of slots, waiting in line    → SLOT.GET pool LIMIT n BLOCK timeout
//
// Run: REDIS_URL=redis://127.0.0.1:6379 node slots.mjs
import assert from 'node:assert/strict';
import Redis from 'ioredis';

setTimeout(() => { console.error('timeout'); process.exit(1); }, 20000).unref();

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(url);
const pool = 'callosum:slots';
const bounded = 'callosum:bounded';
await redis.del(pool, bounded); // start from empty pools, so the example can be re-run

const get = () => redis.call('SLOT.GET', pool);
const put = (slot) => redis.call('SLOT.PUT', pool, slot);

// The guarantee from callosum-server-slots' README: always the lowest free slot.
const slotA = await get(); assert.equal(slotA, 0);
const slotB = await get(); assert.equal(slotB, 1);
const slotC = await get(); assert.equal(slotC, 2);
await put(slotA);
const slotD = await get(); assert.equal(slotD, 0);
const slotE = await get(); assert.equal(slotE, 3);
console.log('got', [slotA, slotB, slotC], 'put', slotA, 'then got', [slotD, slotE]);
assert.equal(await redis.call('SLOT.COUNT', pool), 4);

// Where the library emitted 'error', corral refuses the command: a slot that is not
// held can never be put back, so it can never be handed out twice.
await put(slotE);
await assert.rejects(put(slotE), /^ReplyError: NOTHELD slot 3 is not held/);
console.log('put of slot 3 twice → NOTHELD (the library\'s error event)');

// --- Beyond the library: slots that lapse when their server dies --------------------
// Each server takes its slot as a lease and heartbeats it. A bounded pool (LIMIT 1)
// makes the next server wait in line until the slot is free again.
const serverA = new Redis(url);
const serverB = new Redis(url);

const [slotOfA, tokenA] = await serverA.call(
  'SLOT.GET', bounded, 'HOLDER', 'server-a', 'TTL', 1000, 'LIMIT', 1, 'WITHTOKEN');
assert.equal(slotOfA, 0);
assert.equal(await serverA.call('SLOT.RENEW', bounded, slotOfA, 1000, 'HOLDER', 'server-a'), 1);
const [holder, ttl, token] = await redis.call('SLOT.HOLDER', bounded, slotOfA);
assert.equal(holder, 'server-a');
assert.ok(ttl > 0 && ttl <= 1000);
assert.equal(token, tokenA);
console.log(`server-a holds slot ${slotOfA} (token ${tokenA}), lease 1 s, renewed by a heartbeat`);

// The pool is full: without BLOCK, server-b is told so at once.
assert.equal(await serverB.call('SLOT.GET', bounded, 'HOLDER', 'server-b', 'LIMIT', 1), null);

// server-a "crashes" (stops renewing). server-b waits in line and is handed slot 0
// the moment server-a's lease lapses — no polling.
const [slotOfB, tokenB] = await serverB.call(
  'SLOT.GET', bounded, 'HOLDER', 'server-b', 'TTL', 5000, 'LIMIT', 1, 'BLOCK', 10000, 'WITHTOKEN');
assert.equal(slotOfB, 0);
assert.ok(tokenB > tokenA, 'fencing tokens increase');
console.log(`server-a stopped renewing; server-b was handed slot ${slotOfB} (token ${tokenB})`);

// server-a comes back: its heartbeat tells it the slot is gone.
await assert.rejects(
  serverA.call('SLOT.RENEW', bounded, slotOfA, 1000, 'HOLDER', 'server-a'),
  /NOTHELD slot 0 is held by server-b/);
console.log('server-a heartbeat → NOTHELD: it must take a new slot');

// A waiting server is handed a slot that is put back, too.
const waiting = serverA.call('SLOT.GET', bounded, 'HOLDER', 'server-a', 'LIMIT', 1, 'BLOCK', 10000);
await waitFor(async () => info(await redis.call('SLOT.INFO', bounded)).waiters === 1);
assert.equal(await serverB.call('SLOT.PUT', bounded, 0, 'HOLDER', 'server-b'), 1);
assert.equal(await waiting, 0);
assert.equal((await redis.call('SLOT.HOLDER', bounded, 0))[0], 'server-a');
console.log('server-b put slot 0 back; waiting server-a got it at once');

await Promise.all([redis.quit(), serverA.quit(), serverB.quit()]);

// *.INFO replies are maps; over RESP2 (ioredis' default) they arrive as [k, v, k, v, …].
function info(flat) {
  const m = {};
  for (let i = 0; i < flat.length; i += 2) m[flat[i]] = flat[i + 1];
  return m;
}

// Poll a condition (only used to know a client is already blocked), up to 5 s.
async function waitFor(cond) {
  for (let i = 0; i < 500; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('condition not reached in 5 s');
}
