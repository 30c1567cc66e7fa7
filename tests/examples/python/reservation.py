"""redis-reservation, reproduced with corral's RESV commands (redis-py).

redis-reservation locks a resource for a worker, keeps the lock alive with a heartbeat and
lets it expire when the worker dies:
    reservation.lock(resource)             ->  RESV.LOCK resource worker ttl       (token or nil)
    reservation.wait_until_lock(resource)  ->  RESV.LOCK resource worker ttl BLOCK 0  (no polling)
    heartbeat every heartbeat_interval     ->  RESV.RENEW resource worker ttl
    reservation.release()                  ->  RESV.RELEASE resource worker  (-NOTHELD: lost)
Every grant returns a fencing token; RESV.CHECK guards a write with it, inside a script that
checks first (FENCED_SET below: its error aborts the script before the write; MULTI/EXEC would
not, an error there does not stop the write after it).
"""
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import redis

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
LOCK_TTL = 30 * 60 * 1000  # lock_ttl: 30 minutes (corral takes milliseconds)
signal.alarm(60)  # a hang fails the example instead of hanging it


def connect():
    return redis.Redis.from_url(URL, decode_responses=True, socket_timeout=15)


# A write guarded by the fencing token (README, "Guarding a write with the fencing token"):
# redis.call raises on RESV.CHECK's -NOTHELD / -STALE, which aborts the script before the SET.
FENCED_SET = """
redis.call('RESV.CHECK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('SET', KEYS[2], ARGV[3])
"""


def info(r, resource):
    reply = r.execute_command("RESV.INFO", resource)
    return dict(zip(reply[::2], reply[1::2]))  # holder, ttl, token are None when free


r = connect()
job_name = "nightly-report"
result = "{nightly-report}:result"  # the guarded data: same hash slot as the lock key
fenced_set = r.register_script(FENCED_SET)  # EVALSHA, loading the script if needed
r.delete(job_name, result)

# reservation.lock job_name: worker-1 gets it, worker-2 is told it is already held.
token1 = r.execute_command("RESV.LOCK", job_name, "worker-1", LOCK_TTL)
assert token1 is not None
assert r.execute_command("RESV.LOCK", job_name, "worker-2", LOCK_TTL) is None
print(f"worker-1 locked {job_name} (token {token1}); worker-2: reservation already held")

# The heartbeat, and a retried lock by the holder: same token back.
assert r.execute_command("RESV.RENEW", job_name, "worker-1", LOCK_TTL) == 1
assert r.execute_command("RESV.LOCK", job_name, "worker-1", LOCK_TTL) == token1

# reservation.wait_until_lock job_name: worker-2 blocks inside Redis until worker-1 releases.
with ThreadPoolExecutor() as ex:
    waiting = ex.submit(lambda: connect().execute_command(
        "RESV.LOCK", job_name, "worker-2", 1000, "BLOCK", 0))
    deadline = time.monotonic() + 10
    while info(r, job_name)["waiters"] != 1:
        assert time.monotonic() < deadline, "worker-2 never queued"
        time.sleep(0.02)
    assert not waiting.done()  # still blocked while worker-1 holds it
    assert r.execute_command("RESV.RELEASE", job_name, "worker-1") == 1
    token2 = waiting.result(timeout=10)
assert token2 > token1, (token1, token2)
print(f"worker-1 released; worker-2's wait_until_lock returned (token {token2})")

# worker-1 releasing again: "maybe the reservation was already lost?"
try:
    r.execute_command("RESV.RELEASE", job_name, "worker-1")
    raise AssertionError("releasing a lock we do not hold must fail")
except redis.ResponseError as e:
    assert str(e).startswith("NOTHELD"), e
    print(f"worker-1 release again -> {e}")

# worker-2 dies without heartbeating: its 1 s lock expires and worker-1 gets it.
token3 = r.execute_command("RESV.LOCK", job_name, "worker-1", LOCK_TTL, "BLOCK", 10000)
assert token3 is not None and token3 > token2, (token2, token3)
print(f"worker-2's lock expired; worker-1 locked it again (token {token3})")

# worker-2 wakes up: its heartbeat fails and a write fenced by its old token is refused.
try:
    r.execute_command("RESV.RENEW", job_name, "worker-2", LOCK_TTL)
    raise AssertionError("an expired lock must not renew")
except redis.ResponseError as e:
    assert str(e) == "NOTHELD the reservation is held by worker-1", e
assert r.execute_command("RESV.CHECK", job_name, "worker-1", token3) == 1
try:
    r.execute_command("RESV.CHECK", job_name, "worker-1", token1)
    raise AssertionError("an old token must be stale")
except redis.ResponseError as e:
    assert str(e).startswith("STALE"), e
    print(f"check with worker-1's first token -> {e}")


# The guarded write: worker-2 (lapsed) and worker-1 with its first token are refused and write
# nothing; worker-1 with its current token writes.
for holder, token, why in [("worker-2", token2, "NOTHELD the reservation is held by worker-1"),
                           ("worker-1", token1, "STALE")]:
    try:
        fenced_set(keys=[job_name, result], args=[holder, token, f"report by {holder}"])
        raise AssertionError(f"{holder}'s write with token {token} must be refused")
    except redis.ResponseError as e:
        assert str(e).startswith(why), e
        print(f"guarded write by {holder} with token {token} -> {e}")
assert r.get(result) is None
assert fenced_set(keys=[job_name, result], args=["worker-1", token3, "report by worker-1"]) == "OK"
assert r.get(result) == "report by worker-1"
print("guarded write by worker-1 with its current token went through")

assert r.execute_command("RESV.RELEASE", job_name, "worker-1") == 1
assert info(r, job_name)["holder"] is None
print("ok")
