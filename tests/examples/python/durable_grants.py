"""Durable grants: what a failover does to a lock, and what WAIT and fencing tokens do about it.

Redis replicates asynchronously: a grant acknowledged by the primary may not have reached the
replica when the primary fails, and the promoted replica then knows nothing of it.
  (a) A grant confirmed by `WAIT 1 <timeout>` (reply >= 1) is on the replica: it survives the
      failover; the new primary refuses other holders and lapses it at its deadline.
  (b) A grant the replica never received is lost: the new primary grants the key to someone
      else while the old holder still believes it holds it. WAIT tells the old holder (reply 0),
      and the fencing token still protects the resource: the new grant's token is larger, so a
      resource that keeps the highest token refuses the old holder's late write.
On Redis 7.2+ (and Valkey) `WAITAOF 1 1 <timeout>` also confirms the grant is fsynced to the
AOF of the primary and of a replica; the program turns AOF on for that.

Needs REDIS_URL (a primary) and REDIS_REPLICA_URL (its replica, in sync). It promotes the
replica (`REPLICAOF NO ONE`): run it against throwaway servers only.
"""
import os
import signal
import time

import redis

PRIMARY_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
REPLICA_URL = os.environ.get("REDIS_REPLICA_URL", "redis://127.0.0.1:6380")
TTL = 3000  # ms: long enough to check the grant on the replica and fail over before it lapses
signal.alarm(60)  # a hang fails the example instead of hanging it


def connect(url):
    # One connection per client, never a pool: WAIT and WAITAOF wait for the writes made on
    # *their own* connection, so they must follow the grant on the same one.
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=15,
                                single_connection_client=True)


def resv_info(r, key):
    reply = r.execute_command("RESV.INFO", key)
    return dict(zip(reply[::2], reply[1::2]))  # holder, ttl, token are None when free


def aof_ready(server):
    p = server.info("persistence")
    return p["aof_enabled"] == 1 and p["aof_rewrite_in_progress"] == 0 \
        and p["aof_rewrite_scheduled"] == 0


def wait_until(what, check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class FencedResource:
    """A resource outside Redis that keeps the highest token it has accepted (README, "Guarding
    a write with the fencing token"); in SQL:
        UPDATE orders SET value = $1, token = $2 WHERE id = $3 AND token <= $2"""

    def __init__(self):
        self.value, self.token = None, 0

    def write(self, token, value):
        if token < self.token:
            return False  # a newer holder has written: refuse the stale one
        self.value, self.token = value, token
        return True


primary = connect(PRIMARY_URL)   # the servers as an operator sees them
replica = connect(REPLICA_URL)
role = replica.execute_command("ROLE")
assert role[0] == "slave" and role[3] == "connected", f"REDIS_REPLICA_URL is no synced replica: {role}"

# WAITAOF exists from Redis 7.2 on. Valkey reports redis_version 7.2.4 (its valkey_version is
# separate), so the one field tells both apart from Redis 7.0 and 7.1.
server_info = primary.info("server")
version = tuple(int(x) for x in server_info["redis_version"].split(".")[:2])
has_waitaof = version >= (7, 2)
if has_waitaof:
    # WAITAOF counts AOF fsyncs, so turn the AOF on (fsynced before every reply) on both.
    for server in (primary, replica):
        server.config_set("appendonly", "yes")
        server.config_set("appendfsync", "always")
    for server in (primary, replica):
        wait_until("the AOF to be on", lambda: aof_ready(server))
name = f"Valkey {server_info['valkey_version']}" if "valkey_version" in server_info \
    else f"Redis {server_info['redis_version']}"
print(f"{name}: WAIT{' and WAITAOF' if has_waitaof else ' only (WAITAOF is Redis 7.2+)'}")

# worker-a talks to the primary, over its own connection.
worker_a = connect(PRIMARY_URL)

# (a) A grant confirmed by WAIT survives the failover.
token_a = worker_a.execute_command("RESV.LOCK", "orders:1", "worker-a", TTL)
assert token_a is not None
acked = worker_a.execute_command("WAIT", 1, 2000)  # replicas that have the grant
assert acked >= 1, f"WAIT 1 2000 answered {acked}: the grant is not on the replica"
if has_waitaof:
    fsynced = worker_a.execute_command("WAITAOF", 1, 1, 2000)  # [local, replicas] fsynced
    assert fsynced == [1, 1], f"WAITAOF 1 1 2000 answered {fsynced}"
on_replica = resv_info(replica, "orders:1")
assert (on_replica["holder"], on_replica["token"]) == ("worker-a", token_a), on_replica
print(f"(a) worker-a locked orders:1 (token {token_a}); WAIT -> {acked}"
      f"{f', WAITAOF -> {fsynced}' if has_waitaof else ''}; the replica has it")

# The failover: the primary is gone (as far as anyone can tell) and the replica is promoted.
assert replica.execute_command("REPLICAOF", "NO", "ONE") == "OK"
assert replica.execute_command("ROLE")[0] == "master"
worker_b = connect(REPLICA_URL)  # worker-b talks to the new primary

# The new primary kept worker-a's grant: worker-b is refused...
assert worker_b.execute_command("RESV.LOCK", "orders:1", "worker-b", TTL) is None
left = resv_info(worker_b, "orders:1")["ttl"]
# ...until the new primary lapses it at its deadline, and hands it to worker-b, who waits.
started = time.monotonic()
token_b = worker_b.execute_command("RESV.LOCK", "orders:1", "worker-b", TTL, "BLOCK", 10000)
waited = (time.monotonic() - started) * 1000
assert token_b is not None, "the new primary never lapsed worker-a's grant"
assert waited >= left - 250, f"granted after {waited:.0f} ms, but worker-a had {left} ms left"
assert token_b > token_a, (token_a, token_b)
print(f"(a) after the failover worker-b was refused, then got orders:1 when worker-a's grant "
      f"lapsed {waited:.0f} ms later ({left} ms were left), token {token_b}")

# (b) A grant the replica never received is lost. The old primary is still up, cut off from
# the failover (a partition): worker-a's client still talks to it. The promotion above cut the
# link, so nothing granted there from now on can reach the new primary.
token_a2 = worker_a.execute_command("RESV.LOCK", "orders:2", "worker-a", TTL)
assert token_a2 is not None  # the old primary does not know it was replaced
acked = worker_a.execute_command("WAIT", 1, 300)
assert acked == 0, f"WAIT answered {acked}, but no replica is attached any more"
if has_waitaof:
    fsynced = worker_a.execute_command("WAITAOF", 1, 1, 300)
    assert fsynced == [1, 0], f"WAITAOF 1 1 300 answered {fsynced}"  # on local disk only
print(f"(b) worker-a locked orders:2 on the old primary (token {token_a2}); WAIT -> 0"
      f"{f', WAITAOF -> {fsynced}' if has_waitaof else ''}: the grant is not durable")
# A careful worker-a stops here: it releases the grant (or lets it lapse) and retries. This
# one goes ahead, to show what the fencing token still protects.
resource = FencedResource()
assert resource.write(token_a2, "written by worker-a")

assert resv_info(worker_b, "orders:2")["holder"] is None  # the new primary never heard of it
token_b2 = worker_b.execute_command("RESV.LOCK", "orders:2", "worker-b", TTL)
assert token_b2 is not None
assert resv_info(primary, "orders:2")["holder"] == "worker-a"  # both believe they hold it
assert token_b2 > token_a2, f"new token {token_b2} is not above the lost one {token_a2}"
print(f"(b) the new primary granted orders:2 to worker-b too (token {token_b2} > {token_a2})")

assert resource.write(token_b2, "written by worker-b")
assert not resource.write(token_a2, "late write by worker-a"), "a stale write was accepted"
assert resource.value == "written by worker-b"
print("(b) the resource took worker-b's write and refused worker-a's late one")

# The Redis setting that narrows the partition window: a primary with fewer than
# min-replicas-to-write replicas (acked within min-replicas-max-lag seconds) refuses writes.
primary.config_set("min-replicas-to-write", 1)
try:
    worker_a.execute_command("RESV.LOCK", "orders:3", "worker-a", TTL)
    raise AssertionError("a primary without replicas granted despite min-replicas-to-write")
except redis.ResponseError as e:
    assert str(e).startswith("NOREPLICAS"), e
    print(f"with min-replicas-to-write 1 the old primary refuses: {e}")
primary.config_set("min-replicas-to-write", 0)

assert worker_b.execute_command("RESV.RELEASE", "orders:1", "worker-b") == 1
assert worker_b.execute_command("RESV.RELEASE", "orders:2", "worker-b") == 1
print("ok")
