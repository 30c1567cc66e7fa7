// Migrating from fs-job-store to corral's JOB.* commands (its three workflows).
//
//   new JobStore({ dir })             → pick a key name: one JOB key is one store
//   store.create(request)             → JOB.CREATE store JSON(request)          → job id
//   store.pullJob()/pullWork() + setTimeout retry → JOB.PULL store worker lease BLOCK ms
//                                                   → [id, request, token] | nil
//   store.fulfill(id, value)          → JOB.FULFILL store id value TOKEN token  (ends the lease;
//                                       job.release() is not needed afterwards)
//   store.queue / unqueue / unqueueAll → JOB.QUEUE / JOB.UNQUEUE store id target…
//   store.pullNotification()          → JOB.PULLNOTIFY store worker lease BLOCK ms
//                                       → [id, value, waiting, token] | nil
//   notification.done(err, to_remove) → JOB.DONE store id worker ...to_remove
//   job.oncompromised                 → keyspace event `job.lapse` on the store's key
//                                       (then FULFILL … TOKEN answers -STALE, RENEW -NOTHELD)
//
// Run: REDIS_URL=redis://127.0.0.1:6379 node job_store.mjs
import assert from 'node:assert/strict';
import Redis from 'ioredis';

setTimeout(() => { console.error('timeout'); process.exit(1); }, 20000).unref();
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const store = 'jobs';
const redis = new Redis(url);      // job creation
const worker = new Redis(url);     // job fulfillment (its own connection: BLOCK holds it)
const notifier = new Redis(url);   // fulfillment notification
const worker2 = new Redis(url);    // a second fulfillment worker
await redis.del(store);

// ---- job creation --------------------------------------------------------------------
const id = await redis.call('JOB.CREATE', store, JSON.stringify({ calculate: '3+3' }));
const [ta, tb, tc] = ['https://a.example/hook', 'https://b.example/hook', 'https://c.example/hook']
  .map((t) => JSON.stringify(t)); // targets are any bytes: JSON-encode them yourself
assert.equal(await redis.call('JOB.QUEUE', store, id, ta, tb, tc), 3);
assert.equal(await redis.call('JOB.UNQUEUE', store, id, tc), 1); // c no longer wants it
const targets = [ta, tb];
console.log(`created job ${id}, targets a, b queued (c queued, then unqueued)`);

// ---- fulfillment notification: wait for a fulfilled job (no setTimeout retry loop) ----
const notification = notifier.call('JOB.PULLNOTIFY', store, 'notifier-1', 5000, 'BLOCK', 10000);
await waitFor(async () => map(await redis.call('JOB.INFO', store)).waiters === 1); // it waits

// ---- job fulfillment -----------------------------------------------------------------
const [jobId, request, token] = await worker.call('JOB.PULL', store, 'worker-1', 5000, 'BLOCK', 10000);
assert.equal(jobId, id);
// The job is exclusive: another worker finds nothing to pull.
assert.equal(await worker2.call('JOB.PULL', store, 'worker-2', 5000), null);
const [a, b] = JSON.parse(request).calculate.split('+').map(Number);
assert.equal(await worker.call('JOB.FULFILL', store, jobId, String(a + b), 'TOKEN', token), 1);
console.log(`worker-1 pulled job ${jobId} (${request}) exclusively and fulfilled it with ${a + b}`);
// FULFILL ended the lease: fs-job-store's job.release() afterwards is not needed (NOTHELD).
await assert.rejects(worker.call('JOB.RELEASE', store, jobId, 'worker-1'), /NOTHELD job \d+ is fulfilled/);

// The blocked notifier is handed the job the moment it is fulfilled.
const [nId, value, waiting, nToken] = await notification;
assert.equal(nId, id);
assert.equal(value, '6');
assert.deepEqual(waiting, targets);
console.log(`notifier-1 got job ${nId}: value ${value}, waiting ${waiting.join(', ')}`);
// notify: a.example succeeds, b.example fails → only a.example is removed.
assert.equal(await notifier.call('JOB.DONE', store, nId, 'notifier-1', targets[0]), 1);
// The remaining target is handed out again.
const [againId, , againWaiting, againToken] = await notifier.call('JOB.PULLNOTIFY', store, 'notifier-1', 5000);
assert.equal(againId, id);
assert.deepEqual(againWaiting, [targets[1]]);
assert.ok(againToken > nToken);
assert.equal(await notifier.call('JOB.DONE', store, id, 'notifier-1', targets[1]), 1);
assert.equal(await notifier.call('JOB.PULLNOTIFY', store, 'notifier-1', 5000), null);
console.log('b.example failed once, was retried, then done; nothing left to notify');

// ---- oncompromised: a worker that stops heart-beating loses its job -----------------
// corral raises keyspace events (module class 'd'): enable them, and restore afterwards.
const [, events] = await redis.config('GET', 'notify-keyspace-events');
await redis.config('SET', 'notify-keyspace-events', `${events}Kd`);
const sub = new Redis(url);
const channel = `__keyspace@${redis.options.db ?? 0}__:${store}`;
await sub.subscribe(channel);
const lapsed = new Promise((resolve) => sub.on('message', (ch, msg) => {
  if (ch === channel && msg === 'job.lapse') resolve(); // job.oncompromised
}));

const id2 = await redis.call('JOB.CREATE', store, JSON.stringify({ calculate: '4+4' }));
const [slowId, , slowToken] = await worker.call('JOB.PULL', store, 'worker-1', 500); // 500 ms lease
assert.equal(slowId, id2);
// worker-1 stalls. worker-2 waits and is handed the job when worker-1's lease lapses.
const [fastId, , fastToken] = await worker2.call('JOB.PULL', store, 'worker-2', 5000, 'BLOCK', 10000);
await lapsed;
console.log(`worker-1's lease lapsed (job.lapse event); worker-2 pulled job ${fastId}`);
assert.equal(fastId, id2);
assert.ok(fastToken > slowToken);
await assert.rejects(worker.call('JOB.RENEW', store, id2, 'worker-1', 5000),
  /NOTHELD job \d+ is held by worker-2/);
await assert.rejects(worker.call('JOB.FULFILL', store, id2, '8', 'TOKEN', slowToken), /^ReplyError: STALE/);
assert.equal(await worker2.call('JOB.FULFILL', store, id2, '8', 'TOKEN', fastToken), 1);
console.log('worker-1\'s late fulfil → STALE; worker-2\'s result was stored');

const job = map(await redis.call('JOB.GET', store, id2));
assert.equal(job.state, 'fulfilled');
assert.equal(job.value, '8');

// ---- beyond fs-job-store: what BullMQ, Sidekiq and SQS users expect, one command each ----
const queue = 'queue';
await redis.del(queue);
// UNIQUE: a retried enqueue answers the same id and creates nothing.
const bulk = await redis.call('JOB.CREATE', queue, 'bulk', 'UNIQUE', 'report-42');
assert.equal(await redis.call('JOB.CREATE', queue, 'bulk', 'UNIQUE', 'report-42'), bulk);
// PRIORITY: pulled first. DELAY: pending only 300 ms from now.
const urgent = await redis.call('JOB.CREATE', queue, 'urgent', 'PRIORITY', 10);
const later = await redis.call('JOB.CREATE', queue, 'later', 'DELAY', 300);
// ATTEMPTS + BACKOFF: after 2 failed attempts (50 ms, then 100 ms apart) it is `failed`, the
// dead letter; KEEP: a finished job is deleted 60 s later.
const poison = await redis.call('JOB.CREATE', queue, 'poison', 'ATTEMPTS', 2, 'BACKOFF', 50, 'KEEP', 60000);
// One round trip per job: FULFILL … NEXT fulfils, then answers what JOB.PULL would.
let [jid, , tok] = await worker.call('JOB.PULL', queue, 'w', 5000);
assert.equal(jid, urgent);
[jid, , tok] = await worker.call('JOB.FULFILL', queue, jid, 'ok', 'TOKEN', tok, 'NEXT', 'w', 5000);
assert.equal(jid, bulk);
[jid, , tok] = await worker.call('JOB.FULFILL', queue, jid, 'ok', 'TOKEN', tok, 'NEXT', 'w', 5000);
assert.equal(jid, poison);
assert.equal(await worker.call('JOB.FAIL', queue, poison, 'w', 'boom'), 'delayed');
[jid] = await worker.call('JOB.PULL', queue, 'w', 5000, 'BLOCK', 5000); // after its backoff
assert.equal(jid, poison);
assert.equal(await worker.call('JOB.FAIL', queue, poison, 'w', 'boom again'), 'failed');
[jid, , tok] = await worker.call('JOB.PULL', queue, 'w', 5000, 'BLOCK', 5000); // once due
assert.equal(jid, later);
// A notification worker's heartbeat: RENEW extends its notification lease.
assert.equal(await redis.call('JOB.QUEUE', queue, later, ta), 1);
assert.equal(await worker.call('JOB.FULFILL', queue, later, 'ok', 'TOKEN', tok, 'NEXT', 'w', 5000), null);
const [nid] = await notifier.call('JOB.PULLNOTIFY', queue, 'n', 1000);
assert.equal(await notifier.call('JOB.RENEW', queue, nid, 'n', 5000), 1);
assert.equal(await notifier.call('JOB.DONE', queue, nid, 'n', ta), 1);
// The dead letter: listed, inspected, retried.
assert.deepEqual(await redis.call('JOB.LIST', queue, 'failed'), [poison]);
const dead = map(await redis.call('JOB.GET', queue, poison));
assert.equal(dead.state, 'failed');
assert.equal(dead.attempts, 2);
assert.equal(dead.reason, 'boom again');
assert.equal(await redis.call('JOB.RETRY', queue, poison), 1);
assert.equal(map(await redis.call('JOB.INFO', queue)).pending, 1);
console.log(`queue: urgent first, one round trip per job, poison job ${poison} dead-lettered then retried`);
await redis.del(queue);

await redis.config('SET', 'notify-keyspace-events', events);
await Promise.all([redis, worker, worker2, notifier, sub].map((c) => c.quit()));

// JOB.INFO / JOB.GET answer maps: [k, v, k, v, …] over RESP2 (ioredis' protocol).
function map(flat) { return Object.fromEntries(flat.flatMap((v, i) => (i % 2 ? [] : [[v, flat[i + 1]]]))); }
async function waitFor(cond) { // poll up to 5 s (only to observe, never to coordinate)
  for (let i = 0; i < 500 && !(await cond()); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(await cond(), 'condition not reached in 5 s');
}
