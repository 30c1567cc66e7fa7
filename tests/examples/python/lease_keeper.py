"""Recipe: a lease keeper (README, "Recipes" -> "Lease keeper"), with redis-py.

LeaseKeeper keeps one corral lease alive while work runs -- a RESV lock, a SEM permit or a JOB
work lease -- and tells the work the moment it is lost:
  - it renews every ttl/3 from a thread of its own (RESV.RENEW / SEM.RENEW / JOB.RENEW);
  - it renews at once when a `<family>.lapse` keyspace event names its key (the event names the
    key, not the holder: the renewal's answer says whether the lease that lapsed was ours);
  - a renewal answering -NOTHELD sets `keeper.lost` (a threading.Event) and stops the keeper.
A keeper cannot save a lease when the whole process stops (a GC pause, swapping, a suspended
VM): the final write must be guarded by the fencing token (FENCED_SET below), which the server
checks when the write arrives.

Run: REDIS_URL=redis://127.0.0.1:6379 python lease_keeper.py
"""
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

import redis

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
signal.alarm(60)  # a hang fails the example instead of hanging it


# ---- the keeper: copy from here ------------------------------------------------------------

@dataclass(frozen=True)
class Lease:
    """What a keeper renews: `<FAMILY>.RENEW key *who ms`."""
    family: str  # "resv", "sem" or "job"
    key: str
    who: tuple  # (holder,) for RESV and SEM; (job id, worker) for JOB

    @staticmethod
    def resv(key, holder):
        return Lease("resv", key, (holder,))

    @staticmethod
    def sem(key, holder):
        return Lease("sem", key, (holder,))

    @staticmethod
    def job(store, job_id, worker):
        return Lease("job", store, (job_id, worker))


class LeaseKeeper:
    """Keeps `lease`, granted for `ttl` ms, alive until stop() (or the end of a `with` block).

    `lost` is set when the lease is lost; `reason` is then the error that said so and `lost_by`
    what found out ("its heartbeat" or "a lapse event"). Needs keyspace events of module keys
    (`notify-keyspace-events Kd`); without them it still renews, it only learns of a lapse at
    its next renewal instead of at once.
    """

    def __init__(self, r, lease, ttl):
        self.r, self.lease, self.ttl = r, lease, ttl
        self.lost = threading.Event()
        self.reason = self.lost_by = None
        self.renewals = 0
        self._stop = threading.Event()
        self._last_renewed = None  # time.monotonic() when the last successful renewal was sent
        self._renew("start")  # raises NOTHELD if the lease is already gone
        db = r.connection_pool.connection_kwargs.get("db", 0)
        self._events = r.pubsub()  # a connection of its own
        self._events.subscribe(f"__keyspace@{db}__:{lease.key}")
        assert self._events.get_message(timeout=5)["type"] == "subscribe"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        interval = self.ttl / 3000
        next_renewal = time.monotonic() + interval
        while not self._stop.is_set():
            # Wait for an event until the next renewal is due (in short slices, so stop() is quick).
            wait = min(max(next_renewal - time.monotonic(), 0), 0.05)
            try:
                msg = self._events.get_message(timeout=wait)
            except redis.ConnectionError:  # redis-py subscribes again when it reconnects
                msg = None
                time.sleep(wait)
            if msg and msg["type"] == "message" and msg["data"] == f"{self.lease.family}.lapse":
                self._renew("a lapse event")
            elif time.monotonic() >= next_renewal:
                next_renewal = time.monotonic() + interval
                self._renew("its heartbeat")
        self._events.close()

    def _renew(self, by):
        sent = time.monotonic()
        try:
            self.r.execute_command(f"{self.lease.family.upper()}.RENEW", self.lease.key,
                                   *self.lease.who, self.ttl)
            self.renewals += 1
            self._last_renewed = sent
        except redis.RedisError as e:
            if by == "start":
                raise
            if str(e).startswith("NOTHELD"):
                self._lose(e, by)  # the server says so: someone else has it, or nobody does
            elif time.monotonic() - self._last_renewed >= self.ttl / 1000:
                # No renewal got through for a whole TTL: the lease may have lapsed, assume it has.
                self._lose(e, by)
            # else a passing error (a reconnect, a timeout): the next heartbeat tries again

    def _lose(self, reason, by):
        self.reason, self.lost_by = reason, by
        self.lost.set()
        self._stop.set()

    def stop(self):
        """Stops renewing (before releasing the lease, or once it is lost)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---- the guarded write ---------------------------------------------------------------------

# README, "Guarding a write with the fencing token": redis.call raises on RESV.CHECK's -NOTHELD
# or -STALE, which aborts the script before the SET.
FENCED_SET = """
redis.call('RESV.CHECK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('SET', KEYS[2], ARGV[3])
"""


# ---- the demonstration ---------------------------------------------------------------------

def pause_process(seconds):
    """Stops this whole process (every thread, the keeper's included) for `seconds`: what a long
    GC pause, swapping or a suspended VM does to a worker."""
    pid = os.getpid()
    subprocess.run(["sh", "-c", f"kill -STOP {pid}; sleep {seconds}; kill -CONT {pid}"], check=True)


def wait_for(what, predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.01)


def as_map(flat):
    return dict(zip(flat[::2], flat[1::2]))


def connect():
    return redis.Redis.from_url(URL, decode_responses=True, socket_timeout=15)


r = connect()
fenced_set = r.register_script(FENCED_SET)
LOCK, RESULT = "{report}:lock", "{report}:result"  # same hash slot (Redis Cluster)
SEM, STORE = "{report}:sem", "{report}:jobs"
r.delete(LOCK, RESULT, SEM, STORE)
# corral's events are keyspace events of the module class: enable them (K = keyspace channel,
# d = module events), keeping what the server already had.
events = r.config_get("notify-keyspace-events")["notify-keyspace-events"]
r.config_set("notify-keyspace-events", events + "Kd")


def happy_path():
    """Work outlives the TTL, three kinds of lease at once."""
    ttl, work_s = 700, 2.0  # almost three TTLs
    token = r.execute_command("RESV.LOCK", LOCK, "worker-1", ttl)
    sem_token = r.execute_command("SEM.ACQUIRE", SEM, "worker-1", 2, ttl)
    job_id = r.execute_command("JOB.CREATE", STORE, "build report")
    _, _, job_token = r.execute_command("JOB.PULL", STORE, "worker-1", ttl)
    # The controls: the same leases taken without a keeper.
    r.execute_command("SEM.ACQUIRE", SEM, "idle-worker", 2, ttl)
    idle_job = r.execute_command("JOB.CREATE", STORE, "idle job")
    r.execute_command("JOB.PULL", STORE, "idle-worker", ttl)

    started = time.monotonic()
    keepers = [LeaseKeeper(r, Lease.resv(LOCK, "worker-1"), ttl),
               LeaseKeeper(r, Lease.sem(SEM, "worker-1"), ttl),
               LeaseKeeper(r, Lease.job(STORE, job_id, "worker-1"), ttl)]
    # The work: steps that each check the keeper first.
    for _ in range(10):
        assert not keepers[0].lost.is_set(), keepers[0].reason
        time.sleep(work_s / 10)
    elapsed = time.monotonic() - started
    assert elapsed >= work_s
    for keeper in keepers:
        assert not keeper.lost.is_set(), (keeper.lease.family, keeper.reason)
        assert keeper.renewals >= 3, (keeper.lease.family, keeper.renewals)
    # Still held under the same tokens, long after one TTL.
    info = as_map(r.execute_command("RESV.INFO", LOCK))
    assert (info["holder"], info["token"]) == ("worker-1", token), info
    holders = r.execute_command("SEM.HOLDERS", SEM)  # [holder, ttl, permits, token, ...]
    assert (len(holders), holders[0], holders[3]) == (4, "worker-1", sem_token), \
        f"only worker-1 holds a permit, the idle one lapsed: {holders}"
    idle = as_map(r.execute_command("JOB.GET", STORE, idle_job))
    assert (idle["holder"], idle["reason"]) == (None, "lapsed"), f"the idle job lease lapsed: {idle}"
    # The final writes, each guarded by its token.
    assert fenced_set(keys=[LOCK, RESULT], args=["worker-1", token, "report v1"]) == "OK"
    assert r.execute_command("JOB.FULFILL", STORE, job_id, "done", "TOKEN", job_token) == 1
    for keeper in keepers:
        keeper.stop()  # stop renewing, then release
    assert r.execute_command("RESV.RELEASE", LOCK, "worker-1") == 1
    assert r.execute_command("SEM.RELEASE", SEM, "worker-1") == 1
    renewed = ", ".join(f"{k.lease.family} renewed {k.renewals}x" for k in keepers)
    print(f"happy path: worked {elapsed:.1f} s under {ttl} ms leases ({renewed}); the unkept "
          "permit and job lease lapsed; guarded write and FULFILL ... TOKEN accepted")


def loss_path():
    """The process pauses past its TTL; another holder takes the lock."""
    ttl = 500
    token_a = r.execute_command("RESV.LOCK", LOCK, "worker-A", ttl)
    keeper = LeaseKeeper(r, Lease.resv(LOCK, "worker-A"), ttl)
    # worker-B waits for the lock inside Redis (its own connection, its own thread).
    b_token = []
    b = threading.Thread(target=lambda: b_token.append(
        connect().execute_command("RESV.LOCK", LOCK, "worker-B", 5000, "BLOCK", 0)))
    b.start()
    wait_for("worker-B queued", lambda: as_map(r.execute_command("RESV.INFO", LOCK))["waiters"] == 1)
    time.sleep(0.3)  # worker-A works; its keeper renews
    # worker-A checks its keeper one last time, then its process stops for 1.5 s (three TTLs)
    # before it writes its result. Nothing in the process runs, the keeper included.
    assert not keeper.lost.is_set()
    pause_process(1.5)
    # Meanwhile, on the server's clock, the lease lapsed and went to worker-B, the first waiter.
    # (The demo waits for worker-B's reply so what follows does not depend on timing.)
    b.join(timeout=5)
    assert b_token, "worker-B's lock: not within 5 s"
    token_b = b_token[0]
    assert token_b > token_a, (token_b, token_a)
    # worker-A resumes, still believing it holds the lock, and writes: refused by the fence.
    try:
        fenced_set(keys=[LOCK, RESULT], args=["worker-A", token_a, "report by A"])
        raise AssertionError("worker-A's write after the pause must be refused")
    except redis.ResponseError as e:
        assert str(e).startswith("NOTHELD the reservation is held by worker-B"), e
        print(f"loss path: worker-A's guarded write after the pause -> {e}")
    assert r.get(RESULT) == "report v1"
    # worker-A's keeper finds out at once (its overdue heartbeat or the resv.lapse event renews,
    # and the renewal answers NOTHELD) and sets `lost`, which the work checks.
    assert keeper.lost.wait(timeout=3), "worker-A's keeper did not notice the loss"
    assert str(keeper.reason).startswith("NOTHELD the reservation is held by worker-B"), keeper.reason
    print(f"loss path: worker-A's keeper stopped its work ({keeper.lost_by}): {keeper.reason}")
    keeper.stop()
    # worker-B, the holder, writes under its token.
    assert fenced_set(keys=[LOCK, RESULT], args=["worker-B", token_b, "report by B"]) == "OK"
    assert r.execute_command("RESV.RELEASE", LOCK, "worker-B") == 1


def lapse_event():
    """A lease ended by someone else: the lapse event, not the next heartbeat, tells the keeper."""
    ttl = 10000  # next heartbeat in 3.3 s
    r.execute_command("RESV.LOCK", LOCK, "worker-C", ttl)
    with LeaseKeeper(r, Lease.resv(LOCK, "worker-C"), ttl) as keeper:
        renewals = keeper.renewals
        # An operator shortens the key's TTL (eviction under maxmemory acts alike): the lease
        # lapses in 50 ms, raising resv.lapse; the keeper renews at once, is told NOTHELD, and
        # sets `lost`.
        r.pexpire(LOCK, 50)
        assert keeper.lost.wait(timeout=2), "the keeper did not notice the lapse"
        assert keeper.lost_by == "a lapse event", keeper.lost_by
        assert keeper.renewals == renewals  # no heartbeat came in between
        assert str(keeper.reason).startswith("NOTHELD the reservation is not held"), keeper.reason
        print(f"lapse event: worker-C's keeper stopped its work at once: {keeper.reason}")


happy_path()
loss_path()
lapse_event()
r.config_set("notify-keyspace-events", events)
print("ok")
