#!/usr/bin/env python3
"""`just compare`: the side-by-side of CPython's multiprocessing and mpcore.

For each workload it runs the Python version (mp_workloads.py, a fresh
interpreter) and the Rust version (the `compare` binary of mpbench),
alternating them `--rounds` times so that both see the same machine, and
prints one table. Standard library only.

    python3 benches/python/compare.py             # what `just compare` runs
    python3 benches/python/compare.py --quick     # small sizes, to check it works
    python3 benches/python/compare.py --svg /tmp/ratios.svg   # and draw the ratios
    python3 benches/python/compare.py --record    # the run the chapters quote

Every figure is a median: each program prints the median of `--runs` runs,
and the table takes the median over the rounds. The table printed has a
column of targets, the goals mpcore is held to (benches/README.md); the
chapters show the measurements only. `--record` runs every workload, and
the CPython-only ones of chapter 12, and writes them to
docs/data/compare.json, from which record.py renders the tables and the
charts that the chapters include: do it on a machine with nothing else
running.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
import record

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MIB = 1 << 20

# name: (what, unit, goal against Python, goal against the floor), each
# goal (kind, number) or None; benches/README.md lists them. Order is table
# order. A floor goal bounds mpcore's time over the floor's.
ROWS = [
    ("spawn_join", "spawn + join, returning a u64", "us/op", ("faster", 8.0), ("floor", 1.3)),
    ("spawn_join_spawn", "spawn + join, start method spawn", "us/op", ("faster", 10.0), None),
    ("spawn_join_forkserver", "spawn + join, start method forkserver", "us/op", ("faster", 5.0), ("floor", 2.0)),
    ("pool_map10", "Pool(2) + map 10 + close, mpcore default vs Python forkserver", "ms/op", ("faster", 3.0), None),
    ("queue_small", "Queue, 100,000 small ints child to parent", "msgs/s", ("faster", 8.0), ("floor", 1.0)),
    ("queue_1mib", "Queue, 1 MiB byte messages", "MB/s", ("faster", 3.0), None),
    ("pool_map_tiny", "Pool(2).map, 100,000 tiny tasks, default chunks", "tasks/s", ("faster", 6.0), None),
    ("pool_map_chunk1", "Pool(2).map, 20,000 tasks, chunksize 1", "tasks/s", ("faster", 5.0), None),
    ("map_async", "Pool(2).map_async + get, 100,000 tiny tasks, default chunks", "tasks/s", ("faster", 3.0), ("floor", 1.1)),
    ("apply_async_rtt", "apply_async(..).get() round trip", "us/op", ("faster", 2.0), None),
    ("value_incr", "2 processes x 100,000 locked Value increments", "incr/s", ("faster", 20.0), None),
    ("event_wake", "Event set-to-wake round trip, 2 processes", "us/op", ("faster", 1.0), ("floor", 1.5)),
    ("barrier_round", "Barrier(2) round between 2 processes", "us/op", ("faster", 10.0), None),
    ("joinable_queue", "JoinableQueue, 100,000 put/get/task_done, then join", "items/s", ("faster", 20.0), None),
    ("semaphore_uncontended", "Semaphore acquire + release, uncontended", "us/op", ("faster", 1.0), None),
    ("condition_pingpong", "Condition ping-pong round trip, 2 processes", "us/op", ("faster", 5.0), None),
    ("manager_dict", "Manager dict, d[k] = v then d[k] (two proxy calls)", "us/op", ("faster", 3.0), ("floor", 1.5)),
    ("manager_update", "Manager dict, 8 processes x 10,000 increments (Python: under a Lock; mpcore: update_with)", "incr/s", None, None),
    ("timing_normal", "timing job x2, normal (per loop step)", "ns/iter", None, None),
    ("timing_threads", "timing job x2, 2 threads (speed-up)", "x normal", None, ("floor", 1 / 0.9)),
    ("timing_processes", "timing job x2, 2 processes (speed-up)", "x normal", None, ("floor", 1 / 0.9)),
    ("pipe_rtt", "Pipe round trip of an int, parent and child", "us/op", ("faster", 5.0), ("floor", 1.0)),
    ("pipe_1mib", "Pipe send_bytes/recv_bytes, 1 MiB child to parent", "MB/s", None, ("floor", 1.0)),
    ("listener_rtt", "Listener/Client connect + round trip + close", "us/op", ("faster", 3.0), None),
]

# A row whose Python side is another workload than its own name: mpcore's
# pool under its default method (fork) against CPython's pool under the
# method Python 3.14 makes its default on Linux.
PYTHON_SIDE = {"pool_map10": "pool_map10_forkserver"}

# The CPython side of chapter 12's table that no row has: the pool and a
# round trip under the other start methods (mpbench::PYTHON_ONLY).
PYTHON_ONLY = ["pool_map10", "pool_map10_spawn", "apply_async_rtt_spawn", "apply_async_rtt_forkserver"]
PYTHON_ONLY_UNIT = {"pool_map10": "ms/op", "pool_map10_spawn": "ms/op"}

# What the floor column holds when it is not a raw fork + pipe: the
# forkserver row is measured against mpcore's own fork, timed in a fresh
# run of the compare binary that never started a fork server.
FLOOR_NAME = {
    "spawn_join_forkserver": "mpcore fork",
    "map_async": "mpcore map",
    # Chapter 13: a bare socket pair's ping-pong; mpcore's own Queue of
    # 1 MiB byte messages (put_bytes/get_bytes).
    "pipe_rtt": "socketpair",
    "pipe_1mib": "mpcore Queue",
}


def run_json(cmd):
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    if len(lines) != 1:
        raise SystemExit(f"compare.py: expected one JSON line from {cmd}, got {out!r}")
    return lines[0]


def rust_binary(args):
    if args.rust_bin:
        return args.rust_bin
    print("building the Rust side: cargo build --release -p mpbench --bin compare", file=sys.stderr)
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "mpbench", "--bin", "compare"],
        check=True,
        cwd=ROOT,
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return str(target / "release" / "compare")


def per_op(result):
    """Seconds per operation, from a JSON line."""
    return result["median_s"] / result["ops"]


def shown(unit, seconds_per_op):
    """The figure for the table, in the row's unit, from seconds per op."""
    if seconds_per_op is None:
        return None
    if unit == "us/op":
        return seconds_per_op * 1e6
    if unit == "ms/op":
        return seconds_per_op * 1e3
    if unit == "ns/iter":
        # A timing run is two jobs of `ops` loop steps each.
        return seconds_per_op * 1e9 / 2
    if unit == "MB/s":
        return MIB / seconds_per_op / 1e6
    return 1 / seconds_per_op  # msgs/s, tasks/s, incr/s


# The table prints figures as the recorded tables do.
fmt = record.fmt


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round of one run")
    parser.add_argument("--rounds", type=int, default=None, help="alternations per workload (default 3)")
    parser.add_argument("--runs", type=int, default=None, help="runs per program call (default 5)")
    parser.add_argument("--rust-bin", help="the mpbench `compare` binary (default: build it)")
    parser.add_argument("--svg", metavar="FILE", help="also draw the mpcore/Python ratios as an SVG chart in FILE")
    parser.add_argument(
        "--record", nargs="?", const=str(record.DATA), metavar="DIR",
        help="write the run to DIR/compare.json (default docs/data) and render the chapters' tables from it",
    )
    parser.add_argument("workloads", nargs="*", help="only these workloads")
    args = parser.parse_args()
    if args.record and (args.quick or args.workloads):
        parser.error("--record records the full run: no --quick, no list of workloads")
    rounds = args.rounds or (1 if args.quick else 3)
    runs = args.runs or (1 if args.quick else 5)
    binary = rust_binary(args)
    quick = ["--quick"] if args.quick else []
    python = [sys.executable, str(HERE / "mp_workloads.py")]

    medians = {}
    unavailable = {}
    for name, *_ in ROWS:
        if args.workloads and name not in args.workloads:
            continue
        py, rs, fl = [], [], []
        for _ in range(rounds):
            r = run_json([binary, name, "--runs", str(runs)] + quick)
            if "unavailable" in r:
                # This build of mpcore cannot start it yet: no row.
                unavailable[name] = r["unavailable"]
                break
            p = run_json(python + [PYTHON_SIDE.get(name, name), "--runs", str(runs)] + quick)
            py.append(per_op(p))
            rs.append(per_op(r))
            if r.get("floor_median_s") is not None:
                fl.append(r["floor_median_s"] / r["ops"])
            print(f"  {name}: python {p['median_s']:.4f} s, mpcore {r['median_s']:.4f} s", file=sys.stderr)
        if name in unavailable:
            continue
        medians[name] = (
            statistics.median(py),
            statistics.median(rs),
            statistics.median(fl) if fl else None,
        )

    python_only = {}
    if args.record:
        for name in PYTHON_ONLY:
            runs_py = [per_op(run_json(python + [name, "--runs", str(runs)])) for _ in range(rounds)]
            unit = PYTHON_ONLY_UNIT.get(name, "us/op")
            python_only[name] = {"unit": unit, "python": shown(unit, statistics.median(runs_py))}
            print(f"  {name}: python {python_only[name]['python']:.1f} {unit}", file=sys.stderr)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python3 benches/python/compare.py " + " ".join(sys.argv[1:])
    print(f"{command.strip()}  ({now}, {os.cpu_count()} CPUs, Python {platform.python_version()})")
    print("mpcore/Python: how many times faster mpcore is (higher is better);")
    print("mpcore/floor: mpcore's time over the floor's (1.00 is the floor);")
    print("the forkserver row's floor is mpcore's own fork, and its pool row is")
    print("mpcore's default method (fork) against Python's forkserver;")
    print("goal: the targets of benches/README.md, met or not in this run.")
    print()
    head = ["workload", "unit", "Python", "mpcore", "mpcore/Python", "floor", "mpcore/floor", "goal"]
    rows = []
    ratios = []
    recorded = []
    normal = medians.get("timing_normal")
    for name, what, unit, goal, floor_goal in ROWS:
        if name not in medians:
            continue
        py, rs, fl = medians[name]
        if unit == "x normal":
            if normal is None:
                continue
            # Speed-ups over normal; the floor is the 2-core ceiling, 2x.
            py_v, rs_v, fl_v = normal[0] / py, normal[1] / rs, 2.0
            ratio = rs_v / py_v
            over_floor = fl_v / rs_v
        else:
            py_v, rs_v, fl_v = shown(unit, py), shown(unit, rs), shown(unit, fl)
            ratio = py / rs
            over_floor = rs / fl if fl else None
        ratios.append((what, ratio, unit))
        recorded.append({
            "name": name, "what": what, "unit": unit,
            "python": py_v, "mpcore": rs_v, "ratio": round(ratio, 2),
            "floor": fl_v, "over_floor": None if over_floor is None else round(over_floor, 2),
            # What mpcore adds to the floor, in the row's unit.
            "over_floor_by": rs_v - fl_v if fl_v is not None and unit.endswith("/op") else None,
        })
        verdicts = []
        if goal is not None:
            ok = ratio >= goal[1]
            label = f">= {goal[1]:g}x Python" if goal[1] != 2.0 or name != "apply_async_rtt" else "<= 1/2 Python"
            if name == "event_wake":
                label = "no slower than Python"
            verdicts.append(f"{label} {'met' if ok else 'NOT met'}")
        if floor_goal is not None and over_floor is not None:
            ok = over_floor <= floor_goal[1]
            if unit == "x normal":
                verdicts.append(f">= 1.8x normal {'met' if ok else 'NOT met'}")
            else:
                floor_name = FLOOR_NAME.get(name, "floor")
                label = f"<= {floor_goal[1]:g}x {floor_name}"
                if unit.endswith("/s"):
                    label = f"at least the {floor_name}'s rate" if floor_goal[1] == 1.0 else label
                verdicts.append(f"{label} {'met' if ok else 'NOT met'}")
        rows.append(
            [what, unit, fmt(py_v), fmt(rs_v), f"{ratio:.2f}x", fmt(fl_v),
             "-" if over_floor is None else f"{over_floor:.2f}", "; ".join(verdicts) or "-"]
        )
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(head))
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for r in rows:
        print(line(r))
    for name, why in unavailable.items():
        print(f"not measured: {name}: {why}")
    if args.svg:
        heading = f"{command.strip()}  ({now}, {os.cpu_count()} CPUs, Python {platform.python_version()})"
        Path(args.svg).write_text(record.ratio_chart(ratios, heading, args.quick), encoding="utf-8")
        print(f"\nchart written to {args.svg}")
    if args.record:
        out = Path(args.record)
        data = {
            "_how": record.HOW,
            "date": now.split(" ")[0],
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "rounds": rounds,
            "runs": runs,
            "rows": recorded,
            "python_only": python_only,
        }
        (out / "compare.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nrecorded in {out / 'compare.json'}")
        record.render(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
