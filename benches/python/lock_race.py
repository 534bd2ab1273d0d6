#!/usr/bin/env python3
"""Chapter 8's race in CPython: two processes add 1 to one shared Value
100,000 times each, started together by an Event, once without and once
with a Lock around each `v.value += 1`, as lock_demo does in Rust.
Standard library only; fork, as on Linux before Python 3.14.

    python3 benches/python/lock_race.py

prints, for each half, the total and how many updates were lost:

    without a lock 104156 95844 lost
    with a lock 200000 0 lost

(`v.value += 1` reads under the Value's own lock, then writes under it:
the pair is not atomic, so the other process's updates in between are
lost. How many depends on how the two processes overlap.)
"""

import multiprocessing as mp

N = 100_000


def count(v, go, lock):
    go.wait()
    for _ in range(N):
        if lock is None:
            v.value += 1
        else:
            with lock:
                v.value += 1


def increments(lock):
    v = mp.Value('i', 0)
    go = mp.Event()
    workers = [mp.Process(target=count, args=(v, go, lock)) for _ in range(2)]
    for w in workers:
        w.start()
    go.set()
    for w in workers:
        w.join()
    return v.value


if __name__ == '__main__':
    mp.set_start_method('fork')
    for name, lock in [('without a lock', None), ('with a lock', mp.Lock())]:
        total = increments(lock)
        print(name, total, 2 * N - total, 'lost')
