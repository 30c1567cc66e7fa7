"""A bounded worker pool: one JOB store, at most K running jobs of each kind (one SEM per kind).

Each worker loops:
    JOB.PULL store worker LEASE BLOCK …            the next job, under a work lease
    SEM.ACQUIRE running:<kind> worker K PERMIT_TTL BLOCK PERMIT_WAIT
        granted → JOB.RENEW (the work gets a whole lease), work, JOB.FULFILL … TOKEN, SEM.RELEASE
        nil     → JOB.RELEASE: the job goes back in line (not a failed attempt), pull again
The job comes first because its kind is only known once it is pulled; the worker waits for a
permit in the semaphore's FIFO queue while it holds the job, so the lease must outlast the wait
(LEASE > PERMIT_WAIT). A worker that dies loses nothing: its permit lapses after PERMIT_TTL, its
job lease after LEASE, and the job goes to another worker (a failed attempt, reason "lapsed").

Here machine m0 dies while its two workers run encode jobs; machines m1–m3 (two workers each,
in threads with a connection each) do all the jobs.
"""
import os
import signal
import threading
import time
from collections import Counter

import redis

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
STORE = "pool:jobs"
KINDS = ["encode", "resize", "upload"]
K = 2                 # at most K running jobs of a kind
JOBS = 36             # 12 of each kind, in pairs: encode, encode, resize, resize, upload, …
LEASE = 1500          # ms: the job's work lease
PERMIT_TTL = 1500     # ms: a permit lapses this long after it was taken, if not released
PERMIT_WAIT = 500     # ms: how long a worker waits for a permit before giving the job back
WORK = 0.01           # s: what a job takes
WORKERS = [f"m{m}-w{w}" for m in (1, 2, 3) for w in (1, 2)]
signal.alarm(60)  # a hang fails the example instead of hanging it


def connect():
    return redis.Redis.from_url(URL, decode_responses=True, socket_timeout=15,
                                single_connection_client=True)


def as_map(flat):
    return dict(zip(flat[::2], flat[1::2]))


def sem_key(kind):
    return f"pool:running:{kind}"


class Stats:
    """What the workers report, to check the pool's promises afterwards."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = Counter()        # jobs of a kind between permit and release, right now
        self.max_running = Counter()
        self.fulfilled = Counter()      # job id -> successful FULFILLs
        self.by_worker = Counter()      # worker -> jobs it fulfilled
        self.gave_back = 0              # jobs given back after PERMIT_WAIT without a permit
        self.first_live_encode = None   # when a live worker first got an encode permit
        self.errors = []


stats = Stats()
stop = threading.Event()


def work_one(r, worker, job_id, request, token):
    kind = request.split(":")[0]
    permit = r.execute_command("SEM.ACQUIRE", sem_key(kind), worker, K, PERMIT_TTL,
                               "BLOCK", PERMIT_WAIT)
    if permit is None:
        # The kind stayed full for PERMIT_WAIT: give the job back (still pending, no attempt
        # counted) rather than sit on it past its lease.
        r.execute_command("JOB.RELEASE", STORE, job_id, worker)
        with stats.lock:
            stats.gave_back += 1
        return
    try:
        # The wait used part of the lease: renew it so the work gets a whole one.
        r.execute_command("JOB.RENEW", STORE, job_id, worker, LEASE)
        with stats.lock:
            stats.running[kind] += 1
            stats.max_running[kind] = max(stats.max_running[kind], stats.running[kind])
            if kind == "encode" and stats.first_live_encode is None:
                stats.first_live_encode = time.monotonic()
        time.sleep(WORK)  # the work
        with stats.lock:
            stats.running[kind] -= 1  # before the permit goes: someone may take it at once
        # TOKEN: had the lease lapsed and the job gone to another worker, this answers -STALE
        # instead of fulfilling twice.
        r.execute_command("JOB.FULFILL", STORE, job_id, f"{request} done by {worker}",
                          "TOKEN", token)
        with stats.lock:
            stats.fulfilled[job_id] += 1
            stats.by_worker[worker] += 1
    except redis.ResponseError as e:  # NOTHELD/STALE: the lease lapsed (a stall); job not ours
        with stats.lock:
            stats.errors.append(f"{worker} job {job_id}: {e}")
    finally:
        try:
            r.execute_command("SEM.RELEASE", sem_key(kind), worker)
        except redis.ResponseError as e:  # NOTHELD: the permit lapsed while we worked
            with stats.lock:
                stats.errors.append(f"{worker} permit for {kind}: {e}")


def run_worker(worker, ready):
    r = connect()
    ready.wait()
    while not stop.is_set():
        job = r.execute_command("JOB.PULL", STORE, worker, LEASE, "BLOCK", 100)
        if job is not None:
            work_one(r, worker, *job)
    r.close()


admin = connect()
admin.delete(STORE, *map(sem_key, KINDS))
ids = [admin.execute_command("JOB.CREATE", STORE, f"{KINDS[i // 2 % 3]}:{i}") for i in range(JOBS)]

# Machine m0 takes the first two jobs (both encode), gets both encode permits, and dies: its
# connections close, nothing is released.
dead_since = time.monotonic()
dead_jobs = []
for worker in ("m0-w1", "m0-w2"):
    r = connect()
    job_id, request, _ = r.execute_command("JOB.PULL", STORE, worker, LEASE)
    assert request.startswith("encode:"), request
    assert r.execute_command("SEM.ACQUIRE", sem_key("encode"), worker, K, PERMIT_TTL) is not None
    dead_jobs.append(job_id)
    r.close()
print(f"m0 died holding jobs {dead_jobs} and both encode permits")

# The server's own count of permits in use, sampled while the pool runs.
sampled_max = Counter()


def monitor():
    r = connect()
    while not stop.is_set():
        for kind in KINDS:
            sampled_max[kind] = max(sampled_max[kind],
                                    as_map(r.execute_command("SEM.INFO", sem_key(kind)))["permits"])
        time.sleep(0.005)
    r.close()


ready = threading.Event()
threads = [threading.Thread(target=run_worker, args=(w, ready)) for w in WORKERS]
threads.append(threading.Thread(target=monitor))
for t in threads:
    t.start()
started = time.monotonic()
ready.set()
deadline = started + 15
while sum(stats.fulfilled.values()) < JOBS and time.monotonic() < deadline and not stats.errors:
    time.sleep(0.01)
took = time.monotonic() - started
stop.set()
for t in threads:
    t.join()

assert not stats.errors, stats.errors
# Every job done exactly once, within the bound.
assert sorted(stats.fulfilled) == sorted(ids) and set(stats.fulfilled.values()) == {1}, stats.fulfilled
info = as_map(admin.execute_command("JOB.INFO", STORE))
assert (info["fulfilled"], info["pending"], info["leased"]) == (JOBS, 0, 0), info
assert took < 10, f"the pool took {took:.1f} s"
# Never more than K of a kind at once: counted by the workers and sampled from the server.
assert all(stats.max_running[k] <= K for k in KINDS), stats.max_running
assert any(stats.max_running[k] == K for k in KINDS), stats.max_running  # the limit did bind
assert all(sampled_max[k] <= K for k in KINDS), sampled_max
# Every worker took part.
assert set(stats.by_worker) == set(WORKERS), stats.by_worker
# m0's permits counted against encode's K until they lapsed; meanwhile the workers that pulled
# encode jobs gave them back after PERMIT_WAIT. Its jobs' leases lapsed and others did them.
assert stats.first_live_encode - dead_since >= PERMIT_TTL / 1000 - 0.05, \
    f"a live worker got an encode permit {stats.first_live_encode - dead_since:.3f} s after m0 died"
assert stats.gave_back > 0
for job_id in dead_jobs:
    job = as_map(admin.execute_command("JOB.GET", STORE, job_id))
    assert (job["state"], job["attempts"], job["reason"]) == ("fulfilled", 1, "lapsed"), job
    assert " done by m0-" not in job["value"], job
# Nothing left: every permit was released.
for kind in KINDS:
    assert as_map(admin.execute_command("SEM.INFO", sem_key(kind)))["holders"] == 0

print(f"{JOBS} jobs done once each in {took:.2f} s by {dict(sorted(stats.by_worker.items()))}")
print(f"most running at once per kind: {dict(stats.max_running)} (server: {dict(sampled_max)}), "
      f"limit {K}; {stats.gave_back} jobs given back while m0's encode permits were held")
print("ok")
