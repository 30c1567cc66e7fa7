"""callosum-server-slots, reproduced with corral's SLOT commands (redis-py).

callosum-server-slots hands a server the lowest free slot number and takes it back:
    new CallosumServerSlots()   ->  pick a key name: one pool is one key
    slots.get()                 ->  SLOT.GET pool
    slots.put(slot)             ->  SLOT.PUT pool slot  (a slot not taken answers -NOTHELD
                                    where the library emitted 'error')
corral adds what a pool shared between processes needs: a slot taken as a lease
(HOLDER id TTL ms, renewed with SLOT.RENEW) comes back by itself when its server dies, and a
bounded pool (LIMIT n) can wait in line for a slot (BLOCK ms).
"""
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import redis

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
signal.alarm(60)  # a hang fails the example instead of hanging it


def connect():
    return redis.Redis.from_url(URL, decode_responses=True, socket_timeout=15)


r = connect()
pool = "callosum:slots"

# The sequence callosum-server-slots guarantees: always the lowest available slot.
slot_a = r.execute_command("SLOT.GET", pool)
slot_b = r.execute_command("SLOT.GET", pool)
slot_c = r.execute_command("SLOT.GET", pool)
assert (slot_a, slot_b, slot_c) == (0, 1, 2), (slot_a, slot_b, slot_c)
r.execute_command("SLOT.PUT", pool, slot_a)  # after the slot is no longer used
slot_d = r.execute_command("SLOT.GET", pool)
slot_e = r.execute_command("SLOT.GET", pool)
assert (slot_d, slot_e) == (0, 3), (slot_d, slot_e)
print(f"get -> {slot_a}, {slot_b}, {slot_c}; put {slot_a}; get -> {slot_d}, {slot_e}")
assert r.execute_command("SLOT.COUNT", pool) == 4

# The library's 'error' event: putting back a slot that is not taken.
try:
    r.execute_command("SLOT.PUT", pool, 7)
    raise AssertionError("putting back an untaken slot must fail")
except redis.ResponseError as e:
    assert str(e).startswith("NOTHELD"), e
    print(f"put 7 -> error: {e}")

# A server's slot as a lease in a bounded pool of one slot: server-a takes it for 1 s and
# then "crashes" (never renews); server-b waits in line and gets the slot when it lapses.
leased = "callosum:leased-slots"
slot, token_a = r.execute_command(
    "SLOT.GET", leased, "HOLDER", "server-a", "TTL", 1000, "LIMIT", 1, "WITHTOKEN")
assert slot == 0
assert r.execute_command("SLOT.RENEW", leased, slot, 1000, "HOLDER", "server-a") == 1
assert r.execute_command("SLOT.GET", leased, "HOLDER", "server-b", "LIMIT", 1) is None
print(f"server-a holds slot {slot} (token {token_a}); the pool is full for server-b")

with ThreadPoolExecutor() as ex:
    waiting = ex.submit(lambda: connect().execute_command(
        "SLOT.GET", leased, "HOLDER", "server-b", "TTL", 30000, "LIMIT", 1,
        "BLOCK", 10000, "WITHTOKEN"))
    slot_b, token_b = waiting.result(timeout=20)
assert slot_b == 0 and token_b > token_a, (slot_b, token_b, token_a)
holder, ttl, token = r.execute_command("SLOT.HOLDER", leased, 0)
assert holder == "server-b" and 0 < ttl <= 30000 and token == token_b
print(f"server-a's lease lapsed; server-b got slot {slot_b} (token {token_b})")

# server-a's late heartbeat tells it the slot is gone (and whose it is now).
try:
    r.execute_command("SLOT.RENEW", leased, 0, 1000, "HOLDER", "server-a")
    raise AssertionError("a lapsed slot must not renew")
except redis.ResponseError as e:
    assert str(e) == "NOTHELD slot 0 is held by server-b", e
    print(f"server-a renew -> {e}")

assert r.execute_command("SLOT.PUT", leased, 0, "HOLDER", "server-b") == 1
info = r.execute_command("SLOT.INFO", leased)  # an empty pool is deleted: the empty map
assert dict(zip(info[::2], info[1::2])) == {"held": 0, "highest": -1, "leased": 0, "waiters": 0}
print("ok")
