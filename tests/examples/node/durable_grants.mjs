// Durable grants: what a failover does to a lock, and what WAIT and fencing tokens do about it.
//
// Redis replicates asynchronously: a grant acknowledged by the primary may not have reached the
// replica when the primary fails, and the promoted replica then knows nothing of it.
//   (a) A grant confirmed by `WAIT 1 <timeout>` (reply >= 1) is on the replica: it survives the
//       failover; the new primary refuses other holders and lapses it at its deadline.
//   (b) A grant the replica never received is lost: the new primary grants the key to someone
//       else while the old holder still believes it holds it. WAIT tells the old holder (reply
//       0), and the fencing token still protects the resource: the new grant's token is larger,
//       so a resource that keeps the highest token refuses the old holder's late write.
// On Redis 7.2+ (and Valkey) `WAITAOF 1 1 <timeout>` also confirms the grant is fsynced to the
// AOF of the primary and of a replica; the program turns AOF on for that.
//
// Needs REDIS_URL (a primary) and REDIS_REPLICA_URL (its replica, in sync). It promotes the
// replica (`REPLICAOF NO ONE`): run it against throwaway servers only.
//
// Run: REDIS_URL=redis://127.0.0.1:6379 REDIS_REPLICA_URL=redis://127.0.0.1:6380 node durable_grants.mjs
import assert from 'node:assert/strict';
import Redis from 'ioredis';

setTimeout(() => { console.error('timeout'); process.exit(1); }, 60000).unref();
const primaryUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const replicaUrl = process.env.REDIS_REPLICA_URL ?? 'redis://127.0.0.1:6380';
const TTL = 3000; // ms: long enough to check the grant on the replica and fail over before it lapses

// An ioredis client is one connection: WAIT and WAITAOF wait for the writes made on *their own*
// connection, so they follow the grant on the same client.
const connect = (url) => new Redis(url);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function resvInfo(redis, key) { // holder, ttl, token are null when free
  const flat = await redis.call('RESV.INFO', key);
  return Object.fromEntries(flat.flatMap((v, i) => (i % 2 ? [] : [[v, flat[i + 1]]])));
}

async function info(redis, section) { // INFO as an object of strings
  const text = await redis.info(section);
  return Object.fromEntries(text.split('\r\n').filter((l) => l.includes(':')).map((l) => l.split(':')));
}

async function waitUntil(what, check, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(20);
  }
}

// A resource outside Redis that keeps the highest token it has accepted (README, "Guarding a
// write with the fencing token"); in SQL:
//   UPDATE orders SET value = $1, token = $2 WHERE id = $3 AND token <= $2
class FencedResource {
  value = null;
  token = 0;
  write(token, value) {
    if (token < this.token) return false; // a newer holder has written: refuse the stale one
    Object.assign(this, { value, token });
    return true;
  }
}

const primary = connect(primaryUrl); // the servers as an operator sees them
const replica = connect(replicaUrl);
const role = await replica.call('ROLE');
assert.ok(role[0] === 'slave' && role[3] === 'connected', `REDIS_REPLICA_URL is no synced replica: ${role}`);

// WAITAOF exists from Redis 7.2 on. Valkey reports redis_version 7.2.4 (its valkey_version is
// separate), so the one field tells both apart from Redis 7.0 and 7.1.
const server = await info(primary, 'server');
const [major, minor] = server.redis_version.split('.').map(Number);
const hasWaitaof = major > 7 || (major === 7 && minor >= 2);
if (hasWaitaof) {
  // WAITAOF counts AOF fsyncs, so turn the AOF on (fsynced before every reply) on both.
  for (const s of [primary, replica]) {
    await s.config('SET', 'appendonly', 'yes');
    await s.config('SET', 'appendfsync', 'always');
  }
  for (const s of [primary, replica]) {
    await waitUntil('the AOF to be on', async () => {
      const p = await info(s, 'persistence');
      return p.aof_enabled === '1' && p.aof_rewrite_in_progress === '0' && p.aof_rewrite_scheduled === '0';
    });
  }
}
const name = server.valkey_version ? `Valkey ${server.valkey_version}` : `Redis ${server.redis_version}`;
console.log(`${name}: WAIT${hasWaitaof ? ' and WAITAOF' : ' only (WAITAOF is Redis 7.2+)'}`);

// worker-a talks to the primary, over its own connection.
const workerA = connect(primaryUrl);

// (a) A grant confirmed by WAIT survives the failover.
const tokenA = await workerA.call('RESV.LOCK', 'orders:1', 'worker-a', TTL);
assert.notEqual(tokenA, null);
let acked = await workerA.call('WAIT', 1, 2000); // replicas that have the grant
assert.ok(acked >= 1, `WAIT 1 2000 answered ${acked}: the grant is not on the replica`);
let fsynced;
if (hasWaitaof) {
  fsynced = await workerA.call('WAITAOF', 1, 1, 2000); // [local, replicas] fsynced
  assert.deepEqual(fsynced, [1, 1], `WAITAOF 1 1 2000 answered ${fsynced}`);
}
const onReplica = await resvInfo(replica, 'orders:1');
assert.equal(onReplica.holder, 'worker-a');
assert.equal(onReplica.token, tokenA);
console.log(`(a) worker-a locked orders:1 (token ${tokenA}); WAIT -> ${acked}`
  + `${hasWaitaof ? `, WAITAOF -> [${fsynced}]` : ''}; the replica has it`);

// The failover: the primary is gone (as far as anyone can tell) and the replica is promoted.
assert.equal(await replica.call('REPLICAOF', 'NO', 'ONE'), 'OK');
assert.equal((await replica.call('ROLE'))[0], 'master');
const workerB = connect(replicaUrl); // worker-b talks to the new primary

// The new primary kept worker-a's grant: worker-b is refused...
assert.equal(await workerB.call('RESV.LOCK', 'orders:1', 'worker-b', TTL), null);
const left = (await resvInfo(workerB, 'orders:1')).ttl;
// ...until the new primary lapses it at its deadline, and hands it to worker-b, who waits.
const started = Date.now();
const tokenB = await workerB.call('RESV.LOCK', 'orders:1', 'worker-b', TTL, 'BLOCK', 10000);
const waited = Date.now() - started;
assert.notEqual(tokenB, null, 'the new primary never lapsed worker-a\'s grant');
assert.ok(waited >= left - 250, `granted after ${waited} ms, but worker-a had ${left} ms left`);
assert.ok(tokenB > tokenA, `${tokenB} <= ${tokenA}`);
console.log(`(a) after the failover worker-b was refused, then got orders:1 when worker-a's grant `
  + `lapsed ${waited} ms later (${left} ms were left), token ${tokenB}`);

// (b) A grant the replica never received is lost. The old primary is still up, cut off from
// the failover (a partition): worker-a's client still talks to it. The promotion above cut the
// link, so nothing granted there from now on can reach the new primary.
const tokenA2 = await workerA.call('RESV.LOCK', 'orders:2', 'worker-a', TTL);
assert.notEqual(tokenA2, null); // the old primary does not know it was replaced
acked = await workerA.call('WAIT', 1, 300);
assert.equal(acked, 0, `WAIT answered ${acked}, but no replica is attached any more`);
if (hasWaitaof) {
  fsynced = await workerA.call('WAITAOF', 1, 1, 300);
  assert.deepEqual(fsynced, [1, 0], `WAITAOF 1 1 300 answered ${fsynced}`); // on local disk only
}
console.log(`(b) worker-a locked orders:2 on the old primary (token ${tokenA2}); WAIT -> 0`
  + `${hasWaitaof ? `, WAITAOF -> [${fsynced}]` : ''}: the grant is not durable`);
// A careful worker-a stops here: it releases the grant (or lets it lapse) and retries. This
// one goes ahead, to show what the fencing token still protects.
const resource = new FencedResource();
assert.ok(resource.write(tokenA2, 'written by worker-a'));

assert.equal((await resvInfo(workerB, 'orders:2')).holder, null); // the new primary never heard of it
const tokenB2 = await workerB.call('RESV.LOCK', 'orders:2', 'worker-b', TTL);
assert.notEqual(tokenB2, null);
assert.equal((await resvInfo(primary, 'orders:2')).holder, 'worker-a'); // both believe they hold it
assert.ok(tokenB2 > tokenA2, `new token ${tokenB2} is not above the lost one ${tokenA2}`);
console.log(`(b) the new primary granted orders:2 to worker-b too (token ${tokenB2} > ${tokenA2})`);

assert.ok(resource.write(tokenB2, 'written by worker-b'));
assert.ok(!resource.write(tokenA2, 'late write by worker-a'), 'a stale write was accepted');
assert.equal(resource.value, 'written by worker-b');
console.log('(b) the resource took worker-b\'s write and refused worker-a\'s late one');

// The Redis setting that narrows the partition window: a primary with fewer than
// min-replicas-to-write replicas (acked within min-replicas-max-lag seconds) refuses writes.
await primary.config('SET', 'min-replicas-to-write', 1);
await assert.rejects(workerA.call('RESV.LOCK', 'orders:3', 'worker-a', TTL), (err) => {
  console.log(`with min-replicas-to-write 1 the old primary refuses: ${err.message}`);
  return err.message.startsWith('NOREPLICAS');
});
await primary.config('SET', 'min-replicas-to-write', 0);

assert.equal(await workerB.call('RESV.RELEASE', 'orders:1', 'worker-b'), 1);
assert.equal(await workerB.call('RESV.RELEASE', 'orders:2', 'worker-b'), 1);
await Promise.all([primary, replica, workerA, workerB].map((c) => c.quit()));
console.log('ok');
