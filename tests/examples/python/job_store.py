"""fs-job-store, reproduced with corral's JOB commands (redis-py).

fs-job-store keeps jobs in a directory; corral keeps a store in one key, leases jobs to
workers with fencing tokens, and blocks instead of setTimeout polling:
    store.create(request)         ->  JOB.CREATE store request            (the job id)
    store.pullJob()               ->  JOB.PULL store worker lease BLOCK ms  ([id, request, token])
    job.oncompromised             ->  keyspace event job.lapse; RENEW then answers -NOTHELD
    store.fulfill(id, value)      ->  JOB.FULFILL store id value TOKEN token
    store.queue(id, target)       ->  JOB.QUEUE store id target
    store.pullNotification()      ->  JOB.PULLNOTIFY store worker lease BLOCK ms
                                      ([id, value, waiting, token])
    notification.done(err, done)  ->  JOB.DONE store id worker target...
"""
import json
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
store = "job-store"
r.config_set("notify-keyspace-events", "Kd")  # keyspace events of module keys (job.lapse)
events = r.pubsub()
events.subscribe(f"__keyspace@0__:{store}")
assert events.get_message(timeout=5)["type"] == "subscribe"

# Job creation, and a target that wants to hear the result.
job_id = r.execute_command("JOB.CREATE", store, json.dumps({"calculate": "3+3"}))
assert r.execute_command("JOB.QUEUE", store, job_id, "client-1") == 1
print(f"created job {job_id}")

with ThreadPoolExecutor() as ex:
    # The notification worker waits for a fulfilled job with targets (getANotification).
    notification = ex.submit(lambda: connect().execute_command(
        "JOB.PULLNOTIFY", store, "notifier", 30000, "BLOCK", 10000))

    # worker-1 pulls the job; it is exclusive: worker-2 gets nothing.
    id1, request, token1 = r.execute_command("JOB.PULL", store, "worker-1", 1000)
    assert id1 == job_id and json.loads(request) == {"calculate": "3+3"}
    assert r.execute_command("JOB.PULL", store, "worker-2", 30000) is None
    print(f"worker-1 pulled job {id1} (token {token1}); worker-2 got nothing")

    # worker-1 stalls past its lease: job.oncompromised arrives as a keyspace event.
    deadline = time.monotonic() + 10
    while (msg := events.get_message(timeout=1)) is None or msg["data"] != "job.lapse":
        assert time.monotonic() < deadline, "no job.lapse event"
    try:
        r.execute_command("JOB.RENEW", store, job_id, "worker-1", 1000)
        raise AssertionError("a lapsed lease must not renew")
    except redis.ResponseError as e:
        assert str(e).startswith("NOTHELD"), e
        print(f"worker-1 compromised (job.lapse); renew -> {e}")

    # worker-2's pullJob gets the job again, under a newer token.
    id2, _, token2 = r.execute_command("JOB.PULL", store, "worker-2", 30000, "BLOCK", 10000)
    assert id2 == job_id and token2 > token1
    try:  # worker-1's late result is refused by the fencing token
        r.execute_command("JOB.FULFILL", store, job_id, "5", "TOKEN", token1)
        raise AssertionError("a stale token must not fulfil")
    except redis.ResponseError as e:
        assert str(e).startswith("STALE"), e
    assert not notification.done()  # nothing fulfilled yet
    assert r.execute_command("JOB.FULFILL", store, job_id, "6", "TOKEN", token2) == 1
    print(f"worker-2 fulfilled job {job_id} with 6 (token {token2}); worker-1's 5 was refused")

    # The blocked notification worker is handed the value and its waiting targets.
    nid, value, waiting, ntoken = notification.result(timeout=20)
assert (nid, value, waiting) == (job_id, "6", ["client-1"]) and ntoken > token2
print(f"notifier: job {nid} = {value}, notify {waiting}")
assert r.execute_command("JOB.DONE", store, job_id, "notifier", *waiting) == 1

state = r.execute_command("JOB.GET", store, job_id)
state = dict(zip(state[::2], state[1::2]))
assert state["state"] == "fulfilled" and state["value"] == "6" and state["waiting"] == []
assert state["holder"] is None  # the notification lease ended with DONE
try:
    r.execute_command("JOB.FULFILL", store, job_id, "7")
    raise AssertionError("fulfilling twice must fail")
except redis.ResponseError as e:
    assert str(e).startswith("ALREADY"), e
assert r.execute_command("JOB.DELETE", store, job_id) == 1 and r.exists(store) == 0
events.close()

# Beyond fs-job-store: what BullMQ, Sidekiq and SQS users expect, one command each.
queue = "queue"
r.delete(queue)
# UNIQUE: a retried enqueue answers the same id and creates nothing.
bulk = r.execute_command("JOB.CREATE", queue, "bulk", "UNIQUE", "report-42")
assert r.execute_command("JOB.CREATE", queue, "bulk", "UNIQUE", "report-42") == bulk
# PRIORITY: pulled first. DELAY: pending only 300 ms from now.
urgent = r.execute_command("JOB.CREATE", queue, "urgent", "PRIORITY", 10)
later = r.execute_command("JOB.CREATE", queue, "later", "DELAY", 300)
# ATTEMPTS + BACKOFF: after 2 failed attempts it is `failed` (the dead letter); KEEP: a
# finished job is deleted 60 s later.
poison = r.execute_command("JOB.CREATE", queue, "poison", "ATTEMPTS", 2, "BACKOFF", 50, "KEEP", 60000)
# One round trip per job: FULFILL ... NEXT fulfils, then answers what JOB.PULL would.
jid, _, tok = r.execute_command("JOB.PULL", queue, "w", 5000)
assert jid == urgent
jid, _, tok = r.execute_command("JOB.FULFILL", queue, jid, "ok", "TOKEN", tok, "NEXT", "w", 5000)
assert jid == bulk
jid, _, tok = r.execute_command("JOB.FULFILL", queue, jid, "ok", "TOKEN", tok, "NEXT", "w", 5000)
assert jid == poison
assert r.execute_command("JOB.FAIL", queue, poison, "w", "boom") == "delayed"
jid, _, tok = r.execute_command("JOB.PULL", queue, "w", 5000, "BLOCK", 5000)  # after its backoff
assert jid == poison
assert r.execute_command("JOB.FAIL", queue, poison, "w", "boom again") == "failed"
jid, _, tok = r.execute_command("JOB.PULL", queue, "w", 5000, "BLOCK", 5000)  # once due
assert jid == later
# A notification worker's heartbeat: RENEW extends its notification lease.
assert r.execute_command("JOB.QUEUE", queue, later, "client-1") == 1
assert r.execute_command("JOB.FULFILL", queue, later, "ok", "TOKEN", tok, "NEXT", "w", 5000) is None
nid, _, _, _ = r.execute_command("JOB.PULLNOTIFY", queue, "n", 1000)
assert r.execute_command("JOB.RENEW", queue, nid, "n", 5000) == 1
assert r.execute_command("JOB.DONE", queue, nid, "n", "client-1") == 1
# The dead letter: listed, inspected, retried.
assert r.execute_command("JOB.LIST", queue, "failed") == [poison]
dead = r.execute_command("JOB.GET", queue, poison)
dead = dict(zip(dead[::2], dead[1::2]))
assert dead["state"] == "failed" and dead["attempts"] == 2 and dead["reason"] == "boom again"
assert r.execute_command("JOB.RETRY", queue, poison) == 1
print(f"queue: urgent first, one round trip per job, poison job {poison} dead-lettered then retried")
r.delete(queue)
print("ok")
