"""Recipe: leader election with observers (README, "Recipes" -> "Leader election with
observers"), with redis-py.

Candidates campaign with `RESV.LOCK election <id> <ttl> BLOCK 0`: the first is elected at once,
the others wait in line inside Redis. The leader heart-beats with RESV.RENEW every ttl/3; when it
stops (crashed, hung, partitioned) its lease lapses at its deadline on the server's clock and the
next candidate in line is elected in the same step. The fencing token of a leader's lease is its
term: terms only increase, so a resource that keeps the highest term it has accepted refuses an
old leader. Observers follow resv.grant / resv.release / resv.lapse keyspace events and read
RESV.INFO for who leads now.

Run: REDIS_URL=redis://127.0.0.1:6379 python leader_election.py
"""
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
signal.alarm(60)  # a hang fails the example instead of hanging it
ELECTION = "{cluster}:leader"
TTL = 500  # a leader that stops heart-beating is replaced within 500 ms
MARGIN = 1.0  # what a loaded machine may add to that, in this demonstration (seconds)


def connect():
    return redis.Redis.from_url(URL, decode_responses=True, socket_timeout=15)


def as_map(flat):
    return dict(zip(flat[::2], flat[1::2]))


# ---- candidates and observers: copy from here ----------------------------------------------

class Candidate:
    def __init__(self, node_id):
        self.id = node_id
        # No socket timeout: the campaign blocks a connection for as long as it takes.
        self.r = redis.Redis.from_url(URL, decode_responses=True)
        self.term = self.deposed = None
        self._stop = threading.Event()

    def campaign(self):
        """Waits in line until elected; answers the term, and heart-beats from then on."""
        self.term = self.r.execute_command("RESV.LOCK", ELECTION, self.id, TTL, "BLOCK", 0)
        self.elected_at = time.monotonic()
        self.last_renewal = (self.elected_at, self.elected_at)  # (sent, answered)
        self._heart = threading.Thread(target=self._beat, daemon=True)
        self._heart.start()
        return self.term

    def _beat(self):
        while not self._stop.wait(TTL / 3000):
            self.heartbeat()

    def heartbeat(self):
        sent = time.monotonic()
        try:
            self.r.execute_command("RESV.RENEW", ELECTION, self.id, TTL)
            self.last_renewal = (sent, time.monotonic())
        except redis.RedisError as e:
            # NOTHELD: the lease lapsed (a pause longer than the TTL) and another candidate leads.
            # Any other failure: a leader that cannot renew cannot know it still leads.
            self.deposed = e
            self._stop.set()

    def stop_heartbeat(self):
        self._stop.set()
        self._heart.join()

    def resign(self):
        """A graceful hand-over: the next candidate in line is elected at once."""
        self.stop_heartbeat()
        return self.r.execute_command("RESV.RELEASE", ELECTION, self.id)


class Observer:
    """Follows who leads: the election key's events, and RESV.INFO after each grant."""

    def __init__(self):
        self.r = connect()
        self.log = []  # (event, leader, term) in the order the server raised them
        self._events = self.r.pubsub()
        db = self.r.connection_pool.connection_kwargs.get("db", 0)
        self._events.subscribe(f"__keyspace@{db}__:{ELECTION}")
        assert self._events.get_message(timeout=5)["type"] == "subscribe"
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self):
        while True:
            msg = self._events.get_message(timeout=1)
            if msg is None or msg["type"] != "message":
                continue
            event = msg["data"]
            # corral's events only (not Redis's own, such as `expired`); heartbeats are not news.
            if not event.startswith("resv.") or event == "resv.renew":
                continue
            if event == "resv.grant":
                info = as_map(self.r.execute_command("RESV.INFO", ELECTION))
                self.log.append((event, info["holder"], info["token"]))
            else:
                self.log.append((event, None, None))


# ---- a resource the leader commands --------------------------------------------------------

# A row that keeps the term of its last write (the token column) and refuses an older one: once
# a new leader has written, a deposed leader cannot. (Written as a script here; in SQL:
# UPDATE ... SET value = $1, term = $2 WHERE id = $3 AND term <= $2.)
FENCED_UPDATE = """
local term = tonumber(redis.call('HGET', KEYS[1], 'term') or '0')
if tonumber(ARGV[1]) < term then
  return redis.error_reply('STALE term ' .. ARGV[1] .. ' is older than ' .. term)
end
redis.call('HSET', KEYS[1], 'term', ARGV[1], 'value', ARGV[2])
return 1
"""


# ---- the demonstration ---------------------------------------------------------------------

def wait_for(what, predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.01)


admin = connect()
ROW = "{cluster}:config"
fenced_update = admin.register_script(FENCED_UPDATE)
admin.delete(ELECTION, ROW)
# corral's events are keyspace events of the module class: enable them (K = keyspace channel,
# d = module events), keeping what the server already had.
events = admin.config_get("notify-keyspace-events")["notify-keyspace-events"]
admin.config_set("notify-keyspace-events", events + "Kd")


def info():
    return as_map(admin.execute_command("RESV.INFO", ELECTION))


observer = Observer()

with ThreadPoolExecutor(max_workers=2) as pool:
    # Three candidates campaign, in this order.
    c1, c2, c3 = (Candidate(f"node-{i}") for i in (1, 2, 3))
    term1 = c1.campaign()
    campaign2 = pool.submit(c2.campaign)
    wait_for("node-2 waits", lambda: info()["waiters"] == 1)
    campaign3 = pool.submit(c3.campaign)
    wait_for("node-3 waits", lambda: info()["waiters"] == 2)
    assert fenced_update(keys=[ROW], args=[term1, "set by node-1"]) == 1
    print(f"node-1 leads (term {term1}); node-2 and node-3 wait in line")

    # node-1 leads for three TTLs: its heartbeat keeps the lease.
    time.sleep(3 * TTL / 1000)
    now = info()
    assert (now["holder"], now["token"], now["waiters"]) == ("node-1", term1, 2), now
    assert c1.deposed is None, c1.deposed

    # node-1 stops heart-beating (it hangs; it does not release).
    c1.stop_heartbeat()
    sent, answered = c1.last_renewal
    term2 = campaign2.result(timeout=TTL / 1000 + MARGIN)
    elected = c2.elected_at
    # Never before the lease ran out (the renewal's deadline is at least its send time + TTL) ...
    assert elected - sent >= TTL / 1000 - 0.005, f"node-2 elected {elected - sent:.3f} s after the renewal"
    # ... and within TTL + margin of the last successful renewal.
    assert elected - answered <= TTL / 1000 + MARGIN, f"node-2 elected {elected - answered:.3f} s after it"
    assert term2 > term1, (term2, term1)
    print(f"node-1 stopped heart-beating; node-2 elected {(elected - answered) * 1000:.0f} ms after "
          f"its last renewal (term {term2})")

    # The observer saw the lapse, then the new grant, and RESV.INFO names the new leader.
    wait_for("the observer sees node-2", lambda: len(observer.log) >= 3)
    assert observer.log == [("resv.grant", "node-1", term1), ("resv.lapse", None, None),
                            ("resv.grant", "node-2", term2)], observer.log
    now = info()
    assert (now["holder"], now["token"], now["waiters"]) == ("node-2", term2, 1), now
    print("observer: resv.grant (node-1), resv.lapse, resv.grant (node-2)")

    # The new leader writes its term to the resource first; node-1, which was only paused, wakes
    # up: its next heartbeat tells it it was deposed, and its write under term 1 is refused.
    assert fenced_update(keys=[ROW], args=[term2, "set by node-2"]) == 1
    try:
        fenced_update(keys=[ROW], args=[term1, "late write by node-1"])
        raise AssertionError("node-1's write under its old term must be refused")
    except redis.ResponseError as e:
        assert str(e).startswith("STALE term"), e
    assert admin.hget(ROW, "value") == "set by node-2"
    c1.heartbeat()  # what its heartbeat thread does first when it wakes
    assert str(c1.deposed).startswith("NOTHELD the reservation is held by node-2"), c1.deposed
    print("node-1's late write under its old term was refused; its renewal answers NOTHELD")

    # node-2 resigns: node-3, next in line, is elected at once.
    assert c2.resign() == 1
    term3 = campaign3.result(timeout=MARGIN)
    assert term3 > term2, (term3, term2)
    wait_for("the observer sees node-3", lambda: len(observer.log) >= 5)
    assert observer.log[3:] == [("resv.release", None, None), ("resv.grant", "node-3", term3)], \
        observer.log
    print(f"node-2 resigned; node-3 elected at once (term {term3})")

assert c3.resign() == 1
assert info()["holder"] is None
admin.config_set("notify-keyspace-events", events)
print("ok")
