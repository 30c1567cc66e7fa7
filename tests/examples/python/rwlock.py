"""Recipe: a read-write lock on one SEM key (README, "Recipes" -> "Read-write lock"), redis-py.

A semaphore of `capacity` permits: a reader takes 1, a writer takes all of them
(PERMITS capacity), so a writer holds the key alone and readers share it. SEM serves waiters
strictly first come, first served, and a request that does not fit holds up every later one: a
reader arriving after a waiting writer queues behind it even when a permit is free, so readers
cannot starve a writer, and the readers queued behind a writer get in together when it releases.
Rules: every client passes the same capacity (the most readers at once); each acquisition uses a
holder id of its own (asking again under a held id re-grants what it holds: no upgrade).

Run: REDIS_URL=redis://127.0.0.1:6379 python rwlock.py
"""
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import redis

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
signal.alarm(60)  # a hang fails the example instead of hanging it


# ---- the lock: copy from here ------------------------------------------------------------

class RWLock:
    """A read-write lock on the SEM key `key`; every client passes the same `capacity`."""

    def __init__(self, r, key, capacity, ttl):
        self.r, self.key, self.capacity, self.ttl = r, key, capacity, ttl

    def read(self, holder, block=None):
        """A shared lock: 1 permit. The fencing token, or None (after waiting up to `block` ms)."""
        return self._acquire(holder, 1, block)

    def write(self, holder, block=None):
        """An exclusive lock: every permit."""
        return self._acquire(holder, self.capacity, block)

    def release(self, holder):
        return self.r.execute_command("SEM.RELEASE", self.key, holder)

    def _acquire(self, holder, permits, block):
        wait = () if block is None else ("BLOCK", block)
        return self.r.execute_command("SEM.ACQUIRE", self.key, holder, self.capacity, self.ttl,
                                      "PERMITS", permits, *wait)


# ---- the demonstration -------------------------------------------------------------------

KEY = "report:rwlock"
CAPACITY, TTL = 4, 30000  # up to 4 readers; a crashed holder frees in 30 s
BLOCK = 10000


def connect():
    return redis.Redis.from_url(URL, decode_responses=True, socket_timeout=15)


admin = connect()
admin.delete(KEY)
# redis-py's client is a pool: a blocking acquire takes a connection of its own while it waits.
lock = RWLock(connect(), KEY, CAPACITY, TTL)


def info():
    flat = admin.execute_command("SEM.INFO", KEY)  # permits, holders, next_expiry_ms, last_token, waiters
    return dict(zip(flat[::2], flat[1::2]))


def wait_for(what, predicate):
    deadline = time.monotonic() + 5
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within 5 s"
        time.sleep(0.01)


with ThreadPoolExecutor(max_workers=4) as pool:
    # Three readers hold the lock together.
    for reader in ("reader-1", "reader-2", "reader-3"):
        assert lock.read(reader) is not None, f"{reader} reads at once"
    assert info()["permits"] == 3
    print("reader-1, reader-2, reader-3 hold the read lock")

    # A writer asks for all 4 permits: it waits.
    writer = pool.submit(lock.write, "writer", BLOCK)
    wait_for("the writer queues", lambda: info()["waiters"] == 1)

    # Readers arriving after the writer wait behind it, although a permit is free for each.
    late = {}
    for i, reader in enumerate(("reader-4", "reader-5")):
        late[reader] = pool.submit(lock.read, reader, BLOCK)
        wait_for(f"{reader} queues", lambda: info()["waiters"] == 2 + i)
    assert info()["permits"] == 3  # one permit free, and still nobody granted
    assert not writer.done() and not any(f.done() for f in late.values())
    # A reader that does not wait is refused while anyone waits, even though it would fit.
    assert lock.read("reader-6") is None
    print("writer waits for 4 permits; reader-4 and reader-5, arriving later, queue behind it "
          "(1 permit free); reader-6 without BLOCK is refused")

    # The first readers finish. The writer gets the lock when the last one releases.
    assert lock.release("reader-1") == 1
    assert lock.release("reader-2") == 1
    assert info()["waiters"] == 3  # reader-3 still reads: the writer still waits
    assert not writer.done()
    assert lock.release("reader-3") == 1
    write_token = writer.result(timeout=5)
    assert write_token is not None, "the writer is granted"
    now = info()
    assert (now["permits"], now["holders"], now["waiters"]) == (4, 1, 2), now  # the writer alone
    assert not any(f.done() for f in late.values())
    print(f"the readers released; the writer holds all 4 permits alone (token {write_token})")

    # The writer finishes: every reader queued behind it gets in at once.
    assert lock.release("writer") == 1
    late_tokens = {reader: f.result(timeout=5) for reader, f in late.items()}
    assert all(t is not None and t > write_token for t in late_tokens.values()), late_tokens
    now = info()
    assert (now["permits"], now["holders"], now["waiters"]) == (2, 2, 0), now
    print("the writer released; reader-4 and reader-5 read together")

# No upgrade: a reader asking for the write lock under its own id gets its read permit back (the
# idempotent re-grant), not the exclusive lock. Release, then write under another id.
assert lock.write("reader-4") == late_tokens["reader-4"]
assert info()["permits"] == 2
for reader in late:
    assert lock.release(reader) == 1
assert admin.exists(KEY) == 0  # free: the key is gone
print("ok")
