// Recipe: leader election with observers (README, "Recipes" → "Leader election with observers").
//
// Candidates campaign with `RESV.LOCK election <id> <ttl> BLOCK 0`: the first is elected at once,
// the others wait in line inside Redis. The leader heart-beats with RESV.RENEW every ttl/3; when
// it stops (crashed, hung, partitioned) its lease lapses at its deadline on the server's clock and
// the next candidate in line is elected in the same step. The fencing token of a leader's lease
// is its term: terms only increase, so a resource that keeps the highest term it has accepted
// refuses an old leader. Observers follow resv.grant / resv.release / resv.lapse keyspace events
// and read RESV.INFO for who leads now.
//
// Run: REDIS_URL=redis://127.0.0.1:6379 node leader_election.mjs
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import Redis from 'ioredis';

setTimeout(() => { console.error('timeout'); process.exit(1); }, 20000).unref();
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const ELECTION = '{cluster}:leader';
const TTL = 500; // a leader that stops heart-beating is replaced within 500 ms
const MARGIN = 1000; // what a loaded machine may add to that, in this demonstration
const map = (flat) => Object.fromEntries(flat.flatMap((v, i) => (i % 2 ? [] : [[v, flat[i + 1]]])));

// ---- candidates and observers: copy from here ---------------------------------------------

class Candidate {
  constructor(url, id) {
    this.id = id;
    this.redis = new Redis(url); // its own connection: the campaign blocks it
  }

  // Waits in line until elected; answers the term.
  async campaign() {
    this.term = await this.redis.call('RESV.LOCK', ELECTION, this.id, TTL, 'BLOCK', 0);
    this.electedAt = performance.now();
    this.lastRenewal = { sent: this.electedAt, answered: this.electedAt };
    this.timer = setInterval(() => { this.renewing = this.heartbeat(); }, Math.floor(TTL / 3));
    return this.term;
  }

  async heartbeat() {
    const sent = performance.now();
    try {
      await this.redis.call('RESV.RENEW', ELECTION, this.id, TTL);
      this.lastRenewal = { sent, answered: performance.now() };
    } catch (err) {
      // NOTHELD: the lease lapsed (a pause longer than the TTL) and another candidate leads.
      // Any other failure: a leader that cannot renew cannot know it still leads.
      this.stepDown(err);
    }
  }

  stepDown(why) {
    clearInterval(this.timer);
    this.deposed = why;
  }

  // A graceful hand-over: the next candidate in line is elected at once.
  resign() {
    clearInterval(this.timer);
    return this.redis.call('RESV.RELEASE', ELECTION, this.id);
  }
}

// Follows who leads: the election key's events, and RESV.INFO after each grant.
class Observer {
  constructor(url) {
    this.events = new Redis(url);
    this.redis = new Redis(url);
    this.log = []; // { event, at, leader?, term? } in the order the server raised them
  }

  async start() {
    const channel = `__keyspace@${this.redis.options.db ?? 0}__:${ELECTION}`;
    this.events.on('message', async (ch, event) => {
      // corral's events only (not Redis's own, such as `expired`); heartbeats are not news.
      if (ch !== channel || !event.startsWith('resv.') || event === 'resv.renew') return;
      const entry = { event, at: performance.now() };
      this.log.push(entry);
      if (event === 'resv.grant') {
        const { holder, token } = map(await this.redis.call('RESV.INFO', ELECTION));
        Object.assign(entry, { leader: holder, term: token });
      }
    });
    await this.events.subscribe(channel);
  }
}

// ---- a resource the leader commands -------------------------------------------------------

// A row that keeps the term of its last write (the token column) and refuses an older one: once
// a new leader has written, a deposed leader cannot. (Written as a script here; in SQL:
// UPDATE … SET value = $1, term = $2 WHERE id = $3 AND term <= $2.)
const FENCED_UPDATE = `
local term = tonumber(redis.call('HGET', KEYS[1], 'term') or '0')
if tonumber(ARGV[1]) < term then
  return redis.error_reply('STALE term ' .. ARGV[1] .. ' is older than ' .. term)
end
redis.call('HSET', KEYS[1], 'term', ARGV[1], 'value', ARGV[2])
return 1`;

// ---- the demonstration --------------------------------------------------------------------

const admin = new Redis(url);
admin.defineCommand('fencedUpdate', { numberOfKeys: 1, lua: FENCED_UPDATE });
const ROW = '{cluster}:config';
await admin.del(ELECTION, ROW);
const info = async () => map(await admin.call('RESV.INFO', ELECTION));
const within = (ms, promise, what) => Promise.race([promise,
  sleep(ms, null, { ref: false }).then(() => { throw new Error(`${what}: not within ${ms} ms`); })]);
const waitFor = async (what, predicate) => {
  const deadline = Date.now() + 5000;
  while (!(await predicate())) {
    assert.ok(Date.now() < deadline, `${what}: not within 5 s`);
    await sleep(10);
  }
};
// corral's events are keyspace events of the module class: enable them (K = keyspace channel,
// d = module events), keeping what the server already had.
const [, events] = await admin.config('GET', 'notify-keyspace-events');
await admin.config('SET', 'notify-keyspace-events', `${events}Kd`);

const observer = new Observer(url);
await observer.start();

// Three candidates campaign, in this order.
const [c1, c2, c3] = ['node-1', 'node-2', 'node-3'].map((id) => new Candidate(url, id));
const term1 = await c1.campaign();
const campaign2 = c2.campaign();
await waitFor('node-2 waits', async () => (await info()).waiters === 1);
const campaign3 = c3.campaign();
await waitFor('node-3 waits', async () => (await info()).waiters === 2);
assert.equal(await admin.fencedUpdate(ROW, term1, 'set by node-1'), 1);
console.log(`node-1 leads (term ${term1}); node-2 and node-3 wait in line`);

// node-1 leads for three TTLs: its heartbeat keeps the lease.
await sleep(3 * TTL);
let now = await info();
assert.deepEqual([now.holder, now.token, now.waiters], ['node-1', term1, 2]);
assert.equal(c1.deposed, undefined);

// node-1 stops heart-beating (it hangs; it does not release).
clearInterval(c1.timer);
await c1.renewing; // a renewal already on its way still counts
const { sent, answered } = c1.lastRenewal;
const term2 = await within(TTL + MARGIN, campaign2, 'a new leader');
const elected = c2.electedAt;
// Never before the lease ran out (the renewal's deadline is at least its send time + TTL) …
assert.ok(elected - sent >= TTL - 5, `node-2 elected ${elected - sent} ms after the renewal`);
// … and within TTL + margin of the last successful renewal.
assert.ok(elected - answered <= TTL + MARGIN, `node-2 elected ${elected - answered} ms after it`);
assert.ok(term2 > term1, `term ${term2} > ${term1}`);
console.log(`node-1 stopped heart-beating; node-2 elected ${Math.round(elected - answered)} ms after ` +
  `its last renewal (term ${term2})`);

// The observer saw the lapse, then the new grant, and RESV.INFO names the new leader.
await waitFor('the observer sees node-2', () => observer.log.at(-1)?.leader === 'node-2');
assert.deepEqual(observer.log.map((e) => [e.event, e.leader, e.term]), [
  ['resv.grant', 'node-1', term1],
  ['resv.lapse', undefined, undefined],
  ['resv.grant', 'node-2', term2],
]);
now = await info();
assert.deepEqual([now.holder, now.token, now.waiters], ['node-2', term2, 1]);
console.log('observer: resv.grant (node-1), resv.lapse, resv.grant (node-2)');

// The new leader writes its term to the resource first; node-1, which was only paused, wakes
// up: its next heartbeat tells it it was deposed, and its write under term 1 is refused.
assert.equal(await admin.fencedUpdate(ROW, term2, 'set by node-2'), 1);
await assert.rejects(admin.fencedUpdate(ROW, term1, 'late write by node-1'), /STALE term/);
assert.equal(await admin.hget(ROW, 'value'), 'set by node-2');
await c1.heartbeat(); // what its timer does first when it wakes
assert.match(c1.deposed?.message, /^NOTHELD the reservation is held by node-2/);
console.log("node-1's late write under its old term was refused; its renewal answers NOTHELD");

// node-2 resigns: node-3, next in line, is elected at once.
assert.equal(await c2.resign(), 1);
const term3 = await within(MARGIN, campaign3, 'node-3 elected');
assert.ok(term3 > term2);
await waitFor('the observer sees node-3', () => observer.log.at(-1)?.leader === 'node-3');
assert.deepEqual(observer.log.slice(3).map((e) => [e.event, e.leader]),
  [['resv.release', undefined], ['resv.grant', 'node-3']]);
console.log(`node-2 resigned; node-3 elected at once (term ${term3})`);

assert.equal(await c3.resign(), 1);
assert.equal((await info()).holder, null);
await admin.config('SET', 'notify-keyspace-events', events);
await Promise.all([admin, observer.events, observer.redis, c1.redis, c2.redis, c3.redis]
  .map((c) => c.quit()));
console.log('ok');
