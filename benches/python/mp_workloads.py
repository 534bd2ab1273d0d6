#!/usr/bin/env python3
"""The side-by-side workloads in CPython's multiprocessing.

Standard library only; the start method is pinned to fork, as mpcore
forks by default, except in the workloads named after another method,
which take it from mp.get_context(method). Each workload does its whole job once per run, is timed with
time.perf_counter over --runs runs, and its answer is checked after the
timer stops. One JSON object per line on stdout:

    {"impl": "python", "workload": "spawn_join", "ops": 200, "runs": 5, "median_s": 0.51}

Usage:

    python3 benches/python/mp_workloads.py                 # every workload
    python3 benches/python/mp_workloads.py spawn_join --runs 5
    python3 benches/python/mp_workloads.py --quick         # small sizes, 1 run

The sizes match mpbench::WORKLOADS (benches/src/lib.rs), but for
manager_update's (a tenth: the row compares rates).
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import sys
import threading
import time
from multiprocessing.connection import Client, Listener

MIB = 1 << 20

# name: (full-size ops, quick ops), as in mpbench::WORKLOADS.
SIZES = {
    "spawn_join": (200, 10),
    "spawn_join_spawn": (20, 2),
    "spawn_join_forkserver": (200, 10),
    "pool_map10": (20, 2),
    "queue_small": (100_000, 1_000),
    "queue_1mib": (200, 4),
    "pool_map_tiny": (100_000, 1_000),
    "pool_map_chunk1": (20_000, 200),
    "map_async": (100_000, 1_000),
    "apply_async_rtt": (2_000, 20),
    "value_incr": (200_000, 2_000),
    "event_wake": (2_000, 20),
    "barrier_round": (2_000, 20),
    "joinable_queue": (100_000, 1_000),
    "semaphore_uncontended": (1_000_000, 10_000),
    "condition_pingpong": (20_000, 200),
    "timing_normal": (1_000_000, 10_000),
    "timing_threads": (1_000_000, 10_000),
    "timing_processes": (1_000_000, 10_000),
    # Chapter 13: Pipe and Listener/Client.
    "pipe_rtt": (20_000, 200),
    "pipe_1mib": (200, 4),
    "listener_rtt": (2_000, 20),
    "manager_dict": (2_000, 20),
    # A tenth of mpcore's 80,000 (mpbench::WORKLOADS): the row compares
    # rates, and CPython's 80,000 locked increments take half a minute.
    "manager_update": (8_000, 800),
    # Python only (mpbench::PYTHON_ONLY): the pool under the other methods.
    "pool_map10_spawn": (20, 2),
    "pool_map10_forkserver": (20, 2),
    "apply_async_rtt_spawn": (2_000, 20),
    "apply_async_rtt_forkserver": (2_000, 20),
}

# The workloads that share one Pool(2) across their runs, and the start
# method of its workers; pool_map10 and its kin time a pool's whole life
# instead.
NEEDS_POOL = {
    "pool_map_tiny": "fork",
    "pool_map_chunk1": "fork",
    "map_async": "fork",
    "apply_async_rtt": "fork",
    "apply_async_rtt_spawn": "spawn",
    "apply_async_rtt_forkserver": "forkserver",
}


def nothing():
    pass


def spawn_join_with(method):
    """start + join of an empty target under one start method. The target
    is a module-level function: spawn and forkserver children find it by
    name, by importing this module."""
    ctx = mp.get_context(method)

    def workload(n, _ctx):
        for _ in range(n):
            p = ctx.Process(target=nothing)
            p.start()
            p.join()
        return n

    return workload


def pool_map10_with(method):
    """Pool(2), a map of 10 tiny tasks, close and join: a short pool's
    whole life under one start method."""
    ctx = mp.get_context(method)

    def workload(n, _ctx):
        total = 0
        for _ in range(n):
            pool = ctx.Pool(2)
            total += sum(pool.map(tiny, range(10)))
            pool.close()
            pool.join()
        assert total == n * 90, total
        return total

    return workload


def put_ints(q, n):
    for i in range(n):
        q.put(i)


def queue_small(n, _ctx):
    q = mp.Queue()
    p = mp.Process(target=put_ints, args=(q, n))
    p.start()
    total = 0
    for _ in range(n):
        total += q.get()
    p.join()
    assert total == n * (n - 1) // 2, total
    return total


def put_mib(q, n):
    message = b"\x07" * MIB
    for _ in range(n):
        q.put(message)


def queue_1mib(n, _ctx):
    q = mp.Queue()
    p = mp.Process(target=put_mib, args=(q, n))
    p.start()
    total = 0
    for _ in range(n):
        total += len(q.get())
    p.join()
    assert total == n * MIB, total
    return total


def tiny(x):
    return x * 2


def pool_map_tiny(n, pool):
    total = sum(pool.map(tiny, range(n)))
    assert total == n * (n - 1), total
    return total


def pool_map_chunk1(n, pool):
    total = sum(pool.map(tiny, range(n), chunksize=1))
    assert total == n * (n - 1), total
    return total


def map_async(n, pool):
    total = sum(pool.map_async(tiny, range(n)).get())
    assert total == n * (n - 1), total
    return total


def apply_async_rtt(n, pool):
    total = 0
    for i in range(n):
        total += pool.apply_async(tiny, (i,)).get()
    assert total == n * (n - 1), total
    return total


def add_locked(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def value_incr(n, _ctx):
    v = mp.Value("q", 0)
    ps = [mp.Process(target=add_locked, args=(v, n // 2)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    assert v.value == n, v.value
    return v.value


def pong(ping, pong_, rounds):
    for _ in range(rounds):
        ping.wait()
        ping.clear()
        pong_.set()


def event_wake(n, _ctx):
    ping, pong_ = mp.Event(), mp.Event()
    p = mp.Process(target=pong, args=(ping, pong_, n))
    p.start()
    for _ in range(n):
        ping.set()
        pong_.wait()
        pong_.clear()
    p.join()
    return n


def barrier_party(b, rounds):
    for _ in range(rounds):
        b.wait()


def barrier_round(n, _ctx):
    b = mp.Barrier(2)
    p = mp.Process(target=barrier_party, args=(b, n))
    p.start()
    for _ in range(n):
        b.wait()
    p.join()
    return n


def consume_joinable(q, n):
    for _ in range(n):
        q.get()
        q.task_done()


def joinable_queue(n, _ctx):
    q = mp.JoinableQueue()
    p = mp.Process(target=consume_joinable, args=(q, n))
    p.start()
    for i in range(n):
        q.put(i)
    q.join()
    p.join()
    return n


def semaphore_uncontended(n, _ctx):
    sem = mp.Semaphore(1)
    for _ in range(n):
        sem.acquire()
        sem.release()
    return n


def take_turns(cond, turn, rounds, odd):
    # Each side waits for its turn (the even ones the parent's, the odd
    # ones the child's), takes it and wakes the other.
    for i in range(rounds):
        mine = 2 * i + odd
        with cond:
            cond.wait_for(lambda: turn.value == mine)
            turn.value = mine + 1
            cond.notify()


def condition_pingpong(n, _ctx):
    cond = mp.Condition()
    turn = mp.Value("q", 0, lock=False)
    p = mp.Process(target=take_turns, args=(cond, turn, n, 1))
    p.start()
    take_turns(cond, turn, n, 0)
    p.join()
    assert turn.value == 2 * n, turn.value
    return n


def manager_dict(n, manager):
    d = manager.dict()
    total = 0
    for i in range(n):
        d["k"] = i
        total += d["k"]
    assert total == n * (n - 1) // 2, total
    return total


def add_managed(d, lock, n):
    # Python's proxies have no atomic update: d["hits"] += 1 is a get and
    # a set, so the exact count needs a lock around the pair.
    for _ in range(n):
        with lock:
            d["hits"] += 1


def manager_update(n, manager):
    d = manager.dict()
    d["hits"] = 0
    lock = mp.Lock()
    ps = [mp.Process(target=add_managed, args=(d, lock, n // 8)) for _ in range(8)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    assert d["hits"] == n, d["hits"]
    return n


def echo(conn, n):
    for _ in range(n):
        conn.send(conn.recv())


def pipe_rtt(n, _ctx):
    a, b = mp.Pipe()
    p = mp.Process(target=echo, args=(b, n))
    p.start()
    b.close()
    total = 0
    for i in range(n):
        a.send(i)
        total += a.recv()
    p.join()
    assert total == n * (n - 1) // 2, total
    return total


def send_mib(conn, n):
    message = b"\x07" * MIB
    for _ in range(n):
        conn.send_bytes(message)


def pipe_1mib(n, _ctx):
    r, w = mp.Pipe(duplex=False)
    p = mp.Process(target=send_mib, args=(w, n))
    p.start()
    w.close()
    total = 0
    for _ in range(n):
        total += len(r.recv_bytes())
    p.join()
    assert total == n * MIB, total
    return total


def connect_n(address, n):
    for i in range(n):
        with Client(address) as c:
            c.send(i)
            assert c.recv() == i


def listener_rtt(n, _ctx):
    address = os.path.join(tempfile.gettempdir(), f"mp-bench-{os.getpid()}.sock")
    with Listener(address) as listener:
        p = mp.Process(target=connect_n, args=(address, n))
        p.start()
        total = 0
        for _ in range(n):
            with listener.accept() as c:
                x = c.recv()
                c.send(x)
                total += x
        p.join()
    assert total == n * (n - 1) // 2, total
    return total


def job(q, n):
    # The tutorial's job, word for word but for the size.
    res = 0
    for i in range(n):
        res += i + i**2 + i**3
    q.put(res)


def expected_job(n):
    # sum of i + i^2 + i^3 for i < n, in closed form.
    s1 = n * (n - 1) // 2
    s2 = (n - 1) * n * (2 * n - 1) // 6
    return s1 + s2 + s1 * s1


def timing_normal(n, _ctx):
    res = 0
    for _ in range(2):
        for i in range(n):
            res += i + i**2 + i**3
    assert res == 2 * expected_job(n)
    return res


def timing_with(n, start):
    q = mp.Queue()
    workers = [start(target=job, args=(q, n)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    res = q.get() + q.get()
    assert res == 2 * expected_job(n)
    return res


def timing_threads(n, _ctx):
    return timing_with(n, threading.Thread)


def timing_processes(n, _ctx):
    return timing_with(n, mp.Process)


WORKLOADS = {
    "spawn_join": spawn_join_with("fork"),
    "spawn_join_spawn": spawn_join_with("spawn"),
    "spawn_join_forkserver": spawn_join_with("forkserver"),
    "pool_map10": pool_map10_with("fork"),
    "queue_small": queue_small,
    "queue_1mib": queue_1mib,
    "pool_map_tiny": pool_map_tiny,
    "pool_map_chunk1": pool_map_chunk1,
    "map_async": map_async,
    "apply_async_rtt": apply_async_rtt,
    "value_incr": value_incr,
    "event_wake": event_wake,
    "barrier_round": barrier_round,
    "joinable_queue": joinable_queue,
    "semaphore_uncontended": semaphore_uncontended,
    "condition_pingpong": condition_pingpong,
    "manager_dict": manager_dict,
    "manager_update": manager_update,
    "timing_normal": timing_normal,
    "timing_threads": timing_threads,
    "timing_processes": timing_processes,
    # Chapter 13: Pipe and Listener/Client.
    "pipe_rtt": pipe_rtt,
    "pipe_1mib": pipe_1mib,
    "listener_rtt": listener_rtt,
    # Python only (mpbench::PYTHON_ONLY).
    "pool_map10_spawn": pool_map10_with("spawn"),
    "pool_map10_forkserver": pool_map10_with("forkserver"),
    "apply_async_rtt_spawn": apply_async_rtt,
    "apply_async_rtt_forkserver": apply_async_rtt,
}


def measure(name, quick, runs):
    n = SIZES[name][1 if quick else 0]
    pool = mp.get_context(NEEDS_POOL[name]).Pool(2) if name in NEEDS_POOL else None
    if pool is not None:
        # Time a running pool: a spawned worker takes a while to import
        # this module, and the first tasks would wait for it.
        pool.map(tiny, range(8), chunksize=1)
    if name.startswith("manager_"):
        # One manager for the runs (in the place of the pool): its start
        # is not what the row times.
        pool = mp.Manager()
    try:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            WORKLOADS[name](n, pool)
            times.append(time.perf_counter() - start)
    finally:
        if name.startswith("manager_"):
            pool.shutdown()
        elif pool is not None:
            pool.terminate()
            pool.join()
    return {
        "impl": "python",
        "workload": name,
        "ops": n,
        "runs": runs,
        "median_s": statistics.median(times),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", help="names (default: all)")
    parser.add_argument("--runs", type=int, default=None, help="runs per workload (default 5, 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that it works")
    parser.add_argument("--list", action="store_true", help="print the workload names")
    args = parser.parse_args()
    if args.list:
        print("\n".join(WORKLOADS))
        return 0
    mp.set_start_method("fork")
    runs = args.runs or (1 if args.quick else 5)
    for name in args.workloads or list(WORKLOADS):
        if name not in WORKLOADS:
            print(f"mp_workloads.py: no workload named {name!r}", file=sys.stderr)
            return 2
        print(json.dumps(measure(name, args.quick, runs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
