"""atributo, reproduced with corral's ALLOC commands (redis-py).

atributo keeps sticky job -> instance allocations in SQLite/PostgreSQL; corral keeps them in
one Redis key, with atributo's placement rule (md5 of the job id), so jobs land where they did:
    available(id)              ->  ALLOC.AVAILABLE key id        (add TTL ms for a heartbeat)
    unavailable(id, destroy)   ->  ALLOC.UNAVAILABLE key id [REMOVE]
    instances()                ->  ALLOC.INSTANCES key           ([id, 1|0, ...])
    allocate(job)              ->  ALLOC.ALLOCATE key job        ([instance, persisted])
    _allocate override         ->  ALLOC.ALLOCATE key job ONLYFOR <my instance>
    deallocate / jobs / has_jobs / instance  ->  ALLOC.DEALLOCATE / JOBS / HASJOBS / INSTANCE
    polling has_jobs before removing an instance  ->  ALLOC.DRAIN key id BLOCK ms
"""
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import redis

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
signal.alarm(60)  # a hang fails the example instead of hanging it


def connect():
    return redis.Redis.from_url(URL, decode_responses=True, socket_timeout=15)


r = connect()
key = "atributo"


def alloc(cmd, *args):
    return r.execute_command(f"ALLOC.{cmd}", key, *args)


def instances():
    flat = alloc("INSTANCES")
    return sorted((i, bool(a)) for i, a in zip(flat[::2], flat[1::2]))


# Make instances available, list them.
assert alloc("AVAILABLE", "instance0") == 1
assert alloc("AVAILABLE", "instance1") == 1
assert instances() == [("instance0", True), ("instance1", True)]

# Allocate jobs: new allocations are persisted, placed exactly as atributo places them.
assert alloc("ALLOCATE", "job0") == ["instance1", 1]
assert alloc("ALLOCATE", "job1") == ["instance0", 1]
assert alloc("JOBS", "instance0") == ["job1"]
assert alloc("JOBS", "instance1") == ["job0"]
assert alloc("HASJOBS", "instance0") == 1
assert alloc("INSTANCE", "job1") == "instance0"
print("job0 -> instance1, job1 -> instance0")

# Make instance0 unavailable but don't remove it: job1 stays where it is (sticky).
assert alloc("UNAVAILABLE", "instance0") == 1
assert instances() == [("instance0", False), ("instance1", True)]
assert alloc("ALLOCATE", "job1") == ["instance0", 0]
print("instance0 unavailable; job1 still on instance0 (persisted earlier)")

# Wait for instance0 to drain while its last job is deallocated, then re-allocate that job.
with ThreadPoolExecutor() as ex:
    drained = ex.submit(lambda: connect().execute_command(
        "ALLOC.DRAIN", key, "instance0", "BLOCK", 10000))
    deadline = time.monotonic() + 10
    while r.info("corral")["corral_alloc_waiting"] < 1:  # the DRAIN is blocked
        assert time.monotonic() < deadline, "DRAIN never blocked"
        time.sleep(0.02)
    assert alloc("DEALLOCATE", "job1") == 1
    assert drained.result(timeout=20) == 1
assert alloc("ALLOCATE", "job1") == ["instance1", 1]
print("job1 deallocated: instance0 drained; job1 -> instance1")

# Remove instance0 and its allocations (it has none left).
assert alloc("UNAVAILABLE", "instance0", "REMOVE") == 0
assert instances() == [("instance1", True)]
assert alloc("JOBS", "instance1") == ["job0", "job1"]

# atributo's second example: each instance persists only the jobs placed on itself.
key = "atributo-per-instance"
alloc("AVAILABLE", "instance0")
alloc("AVAILABLE", "instance1")
assert alloc("ALLOCATE", "job0", "ONLYFOR", "instance0") == ["instance1", 0]
assert alloc("JOBS", "instance1") == []
assert alloc("ALLOCATE", "job0", "ONLYFOR", "instance1") == ["instance1", 1]
assert alloc("ALLOCATE", "job1", "ONLYFOR", "instance1") == ["instance0", 0]
assert alloc("ALLOCATE", "job1", "ONLYFOR", "instance0") == ["instance0", 1]
assert alloc("ALLOCATE", "job0", "ONLYFOR", "instance1") == ["instance1", 0]  # only once
assert alloc("JOBS", "instance0") == ["job1"] and alloc("JOBS", "instance1") == ["job0"]
print("ONLYFOR: each instance persisted only its own job")
print("ok")
