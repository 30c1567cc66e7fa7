"""@eqworks/passbuddy, reproduced with corral's SEM commands (redis-py).

passbuddy is a semaphore whose permits expire (a sorted set of uuid -> timeout); corral keeps
the same holders-by-expiry in one key and waits in line instead of polling:
    new PassBuddy({prefix, name, capacity, TTL})  ->  key "<prefix>:<name>", a uuid per consumer
    pass.acquire()   ->  SEM.ACQUIRE key uuid capacity TTL         ("acquire or extend")
    pass.use()       ->  the same ACQUIRE with BLOCK maxAttempts x retryInterval
    pass.release()   ->  SEM.RELEASE key uuid     (-NOTHELD once the permit is gone)
A permit is reclaimed at exactly its TTL (passbuddy: 2 x TTL).
"""
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import redis

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
CAPACITY, TTL = 2, 10000  # passbuddy defaults: 10 permits, 5000 ms
MAX_ATTEMPTS, RETRY_INTERVAL = 20, 500  # use() waits up to 10 s
signal.alarm(60)  # a hang fails the example instead of hanging it


def connect():
    return redis.Redis.from_url(URL, decode_responses=True, socket_timeout=15)


r = connect()
key = "passbuddy-test:testlock"
a, b, c, d = (str(uuid.uuid4()) for _ in range(4))


def acquire(holder, ttl=TTL, con=r, block=None):
    extra = () if block is None else ("BLOCK", block)
    return con.execute_command("SEM.ACQUIRE", key, holder, CAPACITY, ttl, *extra)


def waiters():
    reply = r.execute_command("SEM.INFO", key)
    return dict(zip(reply[::2], reply[1::2]))["waiters"]


# Two consumers take the two permits; b's is short-lived (a lambda that will die).
token_a = acquire(a)
token_b = acquire(b, ttl=1500)
assert token_b > token_a
assert acquire(a) == token_a  # acquire() again extends a's permit: same token, even when full
assert acquire(c) is None  # at capacity: denied
assert r.execute_command("SEM.COUNT", key) == 2
holders = r.execute_command("SEM.HOLDERS", key)  # [holder, ttl, permits, token, ...]
assert holders[0::4] == [b, a], holders  # earliest expiry first, as passbuddy's sorted set
print(f"a and b hold the 2 permits; c is denied; holders by expiry: b ({holders[1]} ms), a")

# c's use() waits in line; b never releases, its permit is reclaimed at its TTL and goes to c.
token_c = acquire(c, block=MAX_ATTEMPTS * RETRY_INTERVAL)
assert token_c is not None and token_c > token_b
print(f"b's permit expired; c acquired it (token {token_c})")
try:
    r.execute_command("SEM.RELEASE", key, b)
    raise AssertionError("an expired permit must not be releasable")
except redis.ResponseError as e:
    assert str(e).startswith("NOTHELD"), e
    print(f"b release -> {e}")

# d blocks while a and c hold; a's release (releaseOnEnd) hands the permit to d at once.
with ThreadPoolExecutor() as ex:
    waiting = ex.submit(acquire, d, TTL, connect(), MAX_ATTEMPTS * RETRY_INTERVAL)
    deadline = time.monotonic() + 10
    while waiters() < 1:
        assert time.monotonic() < deadline, "d never queued"
        time.sleep(0.02)
    assert not waiting.done()
    assert r.execute_command("SEM.RELEASE", key, a) == 1
    token_d = waiting.result(timeout=20)
assert token_d > token_c
print(f"a released; d acquired (token {token_d})")
try:
    r.execute_command("SEM.RELEASE", key, a)  # releasing twice
    raise AssertionError("a second release must fail")
except redis.ResponseError as e:
    assert str(e).startswith("NOTHELD"), e

assert r.execute_command("SEM.RELEASE", key, c) == 1
assert r.execute_command("SEM.RELEASE", key, d) == 1
assert r.execute_command("SEM.COUNT", key) == 0 and r.exists(key) == 0
print("ok")
