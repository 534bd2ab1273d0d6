#!/usr/bin/env python3
"""The recorded runs that the chapters quote, in docs/data/.

Every measured figure in the course comes from two recorded runs, kept as
JSON in docs/data/ and rendered from there into the Markdown tables and
the charts that the chapters include (mdbook's {{#include}}):

    compare.json    `python3 benches/python/compare.py --record`: the
                    side-by-side of CPython and mpcore (chapters 10, 12)
    criterion.json  `python3 benches/python/record.py criterion`, after
                    `cargo bench -p mpbench`: criterion's medians, read
                    from target/criterion (chapters 10, 12)
    timing-*.txt    `python3 benches/python/record.py timing`: what
                    timing_demo prints for chapter 5's commands, and its
                    picture, docs/img/05-timeline.svg

Usage:

    python3 benches/python/record.py criterion   # read target/criterion, write criterion.json, render
    python3 benches/python/record.py timing      # run chapter 5's commands, write timing-*.txt
    python3 benches/python/record.py             # render the tables, the charts and the prose

Rendering also rewrites the figures that the chapters' prose quotes from
these runs: each is followed by a mark, an HTML comment that no reader
sees, naming where it comes from and in what unit it is written:

    costs 1,762 µs<!-- fig compare spawn_join python µs -->
    2.41 µs<!-- fig criterion queue "mpcore Queue ping-pong, 1,000 rounds" per µs -->
    478.835 ms<!-- fig timing default cpu normal time -->

So a new recording changes the prose's figures with the tables'; the
words around them are the author's to check (`git diff docs/`).

`just record` runs the benches, the side-by-side and this, in that order,
on a machine with nothing else running (benches/README.md). Standard
library only. crates/docs/tests/figures.rs checks that every figure the
chapters quote is one of these.
"""

import argparse
import datetime
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DATA = ROOT / "docs" / "data"

HOW = (
    "Do not edit: `just record` writes it, on a machine with nothing else running "
    "(cargo bench -p mpbench; python3 benches/python/compare.py --record; "
    "python3 benches/python/record.py criterion; python3 benches/python/record.py timing). "
    "See benches/README.md."
)

# The rows of compare.json that are chapter 12's, the start methods.
START_METHOD_ROWS = ["spawn_join", "spawn_join_spawn", "spawn_join_forkserver", "pool_map10"]

# How each unit of compare.py's table is written in the chapters.
UNIT_SHOWN = {"us/op": "µs/op", "ms/op": "ms/op", "ns/iter": "ns/step", "x normal": "x normal"}


def fmt(x):
    """A figure as the tables print it: three significant digits, at least
    the whole number, thousands separated by commas."""
    if x is None:
        return "-"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_time(ns):
    """A duration from nanoseconds, in the unit that keeps it readable."""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{fmt(ns / scale)} {unit}"
    return f"{fmt(ns)} ns"


def fmt_rate(per_s, what):
    if what == "bytes":
        return f"{fmt(per_s / 1e9)} GB/s" if per_s >= 1e9 else f"{fmt(per_s / 1e6)} MB/s"
    if per_s >= 1e6:
        return f"{fmt(per_s / 1e6)} million/s"
    return f"{fmt(per_s)}/s"


def cell(text):
    """Text as a Markdown table cell: no HTML tag, emphasis or column break."""
    return escape(text).replace("*", "\\*").replace("|", "\\|")


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def stamp(source):
    """The comment that opens every rendered table: where it comes from."""
    return f"<!-- From docs/data/{source}, rendered by benches/python/record.py. {HOW} -->"


# --- compare.json ---------------------------------------------------------


def compare_rows(compare, names=None):
    head = ["workload", "unit", "CPython", "mpcore", "mpcore / CPython", "floor", "mpcore / floor"]
    rows = []
    for row in compare["rows"]:
        if names is not None and row["name"] not in names:
            continue
        rows.append([
            cell(row["what"]),
            UNIT_SHOWN.get(row["unit"], row["unit"]),
            fmt(row["python"]),
            fmt(row["mpcore"]),
            f"{row['ratio']:.2f}x",
            fmt(row.get("floor")),
            "-" if row.get("over_floor") is None else f"{row['over_floor']:.2f}",
        ])
    return head, rows


def render_compare(compare, out):
    meta = (
        f"*`just compare`, recorded {compare['date']} on {compare['cpus']} CPUs, "
        f"Python {compare['python']}; each figure the median of {compare['rounds']} "
        f"alternations of {compare['runs']} runs.*"
    )
    head, rows = compare_rows(compare)
    (out / "compare.md").write_text(
        "\n".join([stamp("compare.json"), meta, "", table(head, rows), ""]), encoding="utf-8"
    )
    head, rows = compare_rows(compare, START_METHOD_ROWS)
    (out / "compare-start-methods.md").write_text(
        "\n".join([stamp("compare.json"), meta, "", table(head, rows), ""]), encoding="utf-8"
    )
    heading = f"just compare, {compare['date']}, {compare['cpus']} CPUs, Python {compare['python']}"
    ratios = [(row["what"], row["ratio"], row["unit"]) for row in compare["rows"]]
    (out / "compare.svg").write_text(ratio_chart(ratios, heading), encoding="utf-8")
    chosen = [r for r in ratios if r[0] in {row["what"] for row in compare["rows"] if row["name"] in START_METHOD_ROWS}]
    (out / "compare-start-methods.svg").write_text(ratio_chart(chosen, heading), encoding="utf-8")


def ratio_label(unit):
    """What a row's mpcore/CPython ratio means, by the row's unit."""
    if unit == "x normal":
        return "ratio of the speed-ups"
    if unit == "ns/iter":
        return "compiled against interpreted"
    return "how many times faster"


def ratio_chart(ratios, heading, quick=False):
    """An SVG bar chart of the mpcore/CPython column, one bar per row, on a
    log scale around 1x: bars to the right are mpcore's advantage, to the
    left CPython's. Each bar says what its ratio means: for most rows how
    many times faster mpcore is, for the speed-up rows the ratio of the two
    speed-ups, for the per-step row compiled code against the interpreter.
    Written by hand, so that it needs nothing beyond the standard library."""
    ratios = [(what, ratio, unit) for what, ratio, unit in ratios]
    longest = max([len(what) for what, _, _ in ratios] + [0])
    label_w, plot_w, right, row_h, top = max(330, 7 * longest + 24), 420, 240, 26, 96
    lo = min([0.5] + [r / 1.5 for _, r, _ in ratios if r > 0])
    hi = max([2.0] + [r * 1.5 for _, r, _ in ratios])
    span = math.log10(hi) - math.log10(lo)

    def x(ratio):
        return label_w + plot_w * (math.log10(max(ratio, lo)) - math.log10(lo)) / span

    height = top + row_h * len(ratios) + 50
    width = max(label_w + plot_w + right, 7 * len(heading) + 20)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="22" font-size="15" font-weight="bold">'
        "mpcore / CPython, one bar per row of the table (log scale)</text>",
        f'<text x="10" y="42" fill="#555">{escape(heading)}</text>',
        '<text x="10" y="58" fill="#555">Times and rates: how many times faster mpcore is. '
        "Speed-ups: mpcore's over CPython's. Loop step: compiled against interpreted.</text>",
    ]
    if quick:
        out.append(
            '<text x="10" y="78" fill="#b00" font-weight="bold">'
            "A --quick run: small sizes, one round. Not the figures to quote.</text>"
        )
    axis_y = top + row_h * len(ratios) + 4
    for tick in [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]:
        if lo <= tick <= hi:
            tx = x(tick)
            out.append(f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{axis_y}" stroke="#ddd"/>')
            out.append(f'<text x="{tx:.1f}" y="{axis_y + 16}" text-anchor="middle" fill="#555">{tick:g}x</text>')
    one = x(1)
    for i, (what, ratio, unit) in enumerate(ratios):
        y = top + i * row_h
        start, end = sorted((one, x(ratio)))
        colour = "#2a7ab9" if ratio >= 1 else "#d9822b"
        if unit == "x normal":
            colour = "#7a9a3a"
        elif unit == "ns/iter":
            colour = "#999999"
        note = ratio_label(unit)
        out.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(what)}</text>')
        out.append(
            f'<rect class="bar" x="{start:.1f}" y="{y + 3}" width="{max(end - start, 1):.1f}" '
            f'height="{row_h - 8}" fill="{colour}"><title>{escape(what)}: {ratio:.2f}x</title></rect>'
        )
        side = "start" if ratio >= 1 else "end"
        tx = end + 4 if ratio >= 1 else start - 4
        text = f"{ratio:.2f}x" if unit not in ("x normal", "ns/iter") else f"{ratio:.2f}x ({note})"
        out.append(f'<text x="{tx:.1f}" y="{y + 15}" text-anchor="{side}">{escape(text)}</text>')
    out.append(f'<line x1="{one:.1f}" y1="{top - 6}" x2="{one:.1f}" y2="{axis_y}" stroke="black"/>')
    out.append(
        f'<text x="{one:.1f}" y="{axis_y + 32}" text-anchor="middle">'
        "1x: the same as CPython; right of it, mpcore is ahead</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --- criterion.json -------------------------------------------------------

GROUPS = ["spawn", "queue", "pool", "shared", "timing", "start_methods", "sync", "join_async"]


def read_criterion(root, only=None, old=None):
    """Criterion's median of every benchmark under `root`
    (target/criterion), from each one's new/benchmark.json and
    new/estimates.json. With `only` (some groups), those groups are read
    and every other is kept from `old` (the criterion.json recorded
    before), and the date says both."""
    benches = []
    stamps = []
    for info in sorted(Path(root).glob("**/new/benchmark.json")):
        bench = json.loads(info.read_text())
        estimates = json.loads((info.parent / "estimates.json").read_text())
        throughput = bench.get("throughput") or {}
        benches.append({
            "group": bench["group_id"],
            "name": bench["function_id"],
            "median_ns": estimates["median"]["point_estimate"],
            "elements": throughput.get("Elements"),
            "bytes": throughput.get("Bytes"),
        })
        stamps.append(info.parent.joinpath("estimates.json").stat().st_mtime)
    if only:
        benches = [b for b in benches if b["group"] in only]
        missing = [g for g in only if not any(b["group"] == g for b in benches)]
        if missing:
            raise SystemExit(f"record.py: no criterion results for {', '.join(missing)} under {root}")
        benches += [b for b in old["benches"] if b["group"] not in only]
    if not benches:
        raise SystemExit(f"record.py: no criterion results under {root}: run `cargo bench -p mpbench` first")
    missing = [g for g in GROUPS if not any(b["group"] == g for b in benches)]
    if missing:
        raise SystemExit(
            f"record.py: no criterion results for {', '.join(missing)} under {root}: "
            "the chapters quote every group, so record the whole `cargo bench -p mpbench`"
        )
    order = {g: i for i, g in enumerate(GROUPS)}
    benches.sort(key=lambda b: order.get(b["group"], len(GROUPS)))
    day = lambda t: datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d")
    dates = sorted({day(t) for t in stamps})
    if only:
        dates = sorted(set(dates) | set(old["date"].split(" to ")))
    return {"_how": HOW, "date": " to ".join([dates[0], dates[-1]] if len(dates) > 1 else dates), "benches": benches}


def per_element(bench):
    n = bench.get("elements")
    return bench["median_ns"] / n if n and n > 1 else None


def rate(bench):
    if bench.get("bytes"):
        return fmt_rate(bench["bytes"] / (bench["median_ns"] / 1e9), "bytes")
    n = bench.get("elements")
    if n and n > 1:
        return fmt_rate(n / (bench["median_ns"] / 1e9), "elements")
    return "-"


def render_criterion(criterion, out):
    meta = f"*`cargo bench -p mpbench`, criterion's medians, recorded {criterion['date']}.*"
    for group in GROUPS:
        benches = [b for b in criterion["benches"] if b["group"] == group]
        if not benches:
            continue
        rows = [
            [cell(b["name"]), fmt_time(b["median_ns"]),
             "-" if per_element(b) is None else fmt_time(per_element(b)), rate(b)]
            for b in benches
        ]
        text = table(["benchmark", "median", "per message, task or round", "throughput"], rows)
        (out / f"criterion-{group}.md").write_text(
            "\n".join([stamp("criterion.json"), meta, "", text, ""]), encoding="utf-8"
        )


def render_start_methods(compare, criterion, out):
    """Chapter 12's table: each start method's cost, mpcore's from
    criterion's start_methods group, CPython's from compare.json."""
    mp = {b["name"]: b["median_ns"] for b in criterion["benches"] if b["group"] == "start_methods"}
    py_rows = {row["name"]: row for row in compare["rows"]}
    py_only = compare.get("python_only", {})

    def py(row=None, only=None):
        """CPython's figure, in ns: a row's Python side, or a workload that
        only the Python side ran (compare.json's python_only)."""
        entry = py_rows[row] if row else py_only[only]
        return entry["python"] * (1e3 if entry["unit"] == "us/op" else 1e6)

    def ours(kind, method):
        return fmt_time(mp[f"mpcore {method}: {kind}"])

    rows = [
        ["spawn + join of an empty task"]
        + [ours("spawn_fn + join (u64)", m) for m in ("fork", "spawn", "forkserver")]
        + [fmt_time(py(n)) for n in ("spawn_join", "spawn_join_spawn", "spawn_join_forkserver")],
        ["Pool(2) created, a map of 10 tiny tasks, closed"]
        + [ours("Pool(2) + map 10 + close", m) for m in ("fork", "spawn", "forkserver")]
        # The row pool_map10 is CPython's pool under forkserver.
        + [fmt_time(py(only="pool_map10")), fmt_time(py(only="pool_map10_spawn")), fmt_time(py("pool_map10"))],
        ["one `apply_async(..).get()` round trip"]
        + [ours("apply_async(..).get()", m) for m in ("fork", "spawn", "forkserver")]
        + [fmt_time(py("apply_async_rtt")), fmt_time(py(only="apply_async_rtt_spawn")),
           fmt_time(py(only="apply_async_rtt_forkserver"))],
    ]
    head = ["workload", "mpcore fork", "mpcore spawn", "mpcore forkserver",
            "CPython fork", "CPython spawn", "CPython forkserver"]
    meta = (
        f"*mpcore: criterion's medians ({criterion['date']}); CPython: `just compare`'s "
        f"medians ({compare['date']}, Python {compare['python']}).*"
    )
    (out / "start-methods.md").write_text(
        "\n".join([stamp("criterion.json and docs/data/compare.json"), meta, "", table(head, rows), ""]),
        encoding="utf-8",
    )


# --- timing_demo's runs (chapter 5) ---------------------------------------

# The file each of chapter 5's commands writes, and the command's arguments.
TIMING_RUNS = {
    "default": ["--gil", "--io", "--svg", "/tmp/05-timeline.svg"],
    "n1e6": ["--n", "1000000", "--gil"],
    "n1e7": ["--n", "10000000", "--gil"],
    "n1000": ["--n", "1000"],
    "workers4": ["--workers", "4"],
}


def record_timing(out):
    """Runs chapter 5's commands with the release build of timing_demo,
    keeps what each printed in timing-NAME.txt, and the default run's
    picture as docs/img/05-timeline.svg."""
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "timing_demo"], check=True, cwd=ROOT)
    binary = ROOT / "target" / "release" / "timing_demo"
    for name, args in TIMING_RUNS.items():
        printed = subprocess.run([str(binary)] + args, check=True, stdout=subprocess.PIPE, text=True).stdout
        (out / f"timing-{name}.txt").write_text(printed, encoding="utf-8")
        print(f"recorded timing_demo {' '.join(args)} in {out / f'timing-{name}.txt'}", file=sys.stderr)
    shutil.copyfile("/tmp/05-timeline.svg", ROOT / "docs" / "img" / "05-timeline.svg")


def timing_table(out, name, table, way):
    """One row of a recorded timing_demo run: (time in ms, speed-up)."""
    text = (out / f"timing-{name}.txt").read_text(encoding="utf-8")
    tables = text.split("\n\n")
    chosen = next(t for t in tables if t.startswith("CPU-bound" if table == "cpu" else "I/O-bound"))
    label = "multithread + GIL" if way == "gil" else way
    for line in chosen.splitlines():
        if line.startswith(label + " ") and not (way == "multithread" and line.startswith("multithread +")):
            cells = line.split()
            return float(cells[-3]), float(cells[-1].rstrip("x"))
    raise SystemExit(f"record.py: no row {way} in the {table} table of timing-{name}.txt")


# --- the figures the prose quotes -------------------------------------------

FIGURE = r"\d[\d,]*(?:\.\d+)?(?:[ \u00a0]?(?:ns|µs|ms|s|x|million|GB/s|MB/s))?"
MARK = re.compile(r"(?P<figure>" + FIGURE + r")(?P<mark><!-- fig (?P<key>[^>]*?) -->)")
SCALE = {"ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


def figure_value(key, compare, criterion, out):
    """A mark's figure, as (value in base units, kind): seconds, a ratio,
    a rate a second, bytes a second."""
    words = re.findall(r'"[^"]*"|\S+', key)
    source, rest = words[0], [w.strip('"') for w in words[1:]]
    if source == "compare":
        name, field = rest[0], rest[1]
        row = next(r for r in compare["rows"] if r["name"] == name)
        value = row[field]
        if field in ("ratio", "over_floor") or row["unit"] == "x normal":
            return value, "ratio"
        return from_unit(row["unit"], value)
    if source == "only":
        entry = compare["python_only"][rest[0]]
        return from_unit(entry["unit"], entry["python"])
    if source == "criterion":
        group, name, field = rest[0], rest[1], rest[2]
        bench = next(b for b in criterion["benches"] if b["group"] == group and b["name"] == name)
        seconds = bench["median_ns"] * 1e-9
        if field == "median":
            return seconds, "time"
        if field == "per":
            return seconds / bench["elements"], "time"
        if field == "rate":
            return bench["elements"] / seconds, "rate"
        if field == "bytes":
            return bench["bytes"] / seconds, "bytes"
    if source == "timing":
        name, table, way, field = rest[:4]
        time_ms, speedup = timing_table(out, name, table, way)
        return (time_ms * 1e-3, "timing") if field == "time" else (speedup, "speedup")
    raise SystemExit(f"record.py: a figure mark it cannot read: <!-- fig {key} -->")


def from_unit(unit, value):
    if unit == "us/op":
        return value * 1e-6, "time"
    if unit == "ms/op":
        return value * 1e-3, "time"
    if unit == "ns/iter":
        return value * 1e-9, "time"
    if unit == "MB/s":
        return value * 1e6, "bytes"
    return value, "rate"


def figure_text(key, value, kind):
    """The figure as the prose writes it, in the unit its mark names."""
    unit = key.split()[-1]
    if kind == "timing":
        return f"{value * 1e3:.3f} ms"
    if kind == "speedup":
        return f"{value:.2f}x"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "plain":
        return f"{value:.2f}"
    if unit in SCALE:
        if kind == "rate":
            value = 1 / value  # the time of one
        return f"{fmt(value / SCALE[unit])} {unit}"
    if unit == "million":
        return f"{fmt(value / 1e6)} million"
    if unit in ("GB/s", "MB/s"):
        return f"{fmt(value / (1e9 if unit == 'GB/s' else 1e6))} {unit}"
    raise SystemExit(f"record.py: a figure mark with a unit it does not know: {key}")


def render_prose(compare, criterion, out):
    """Rewrites every marked figure of the chapters from the data."""
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text(encoding="utf-8")

        def fill(m):
            value, kind = figure_value(m["key"], compare, criterion, out)
            return figure_text(m["key"], value, kind) + m["mark"]

        new = MARK.sub(fill, text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"rewrote the marked figures of {page.relative_to(ROOT)}", file=sys.stderr)


def render(out=DATA):
    out = Path(out)
    compare = json.loads((out / "compare.json").read_text()) if (out / "compare.json").exists() else None
    criterion = json.loads((out / "criterion.json").read_text()) if (out / "criterion.json").exists() else None
    if compare:
        render_compare(compare, out)
    if criterion:
        render_criterion(criterion, out)
    if compare and criterion:
        render_start_methods(compare, criterion, out)
        if out.resolve() == DATA.resolve():
            render_prose(compare, criterion, out)
    print(f"rendered the tables and charts in {out}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what", nargs="?", choices=["criterion", "timing"],
        help="criterion: record target/criterion first; timing: run chapter 5's commands first",
    )
    parser.add_argument("--criterion-dir", default=str(ROOT / "target" / "criterion"))
    parser.add_argument("--out", default=str(DATA), help="the data folder (default docs/data)")
    parser.add_argument(
        "--only", nargs="+", metavar="GROUP", choices=GROUPS,
        help="criterion: record only these groups (`cargo bench -p mpbench --bench GROUP` ran), "
        "and keep the others from the criterion.json recorded before",
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.what == "criterion":
        old = None
        if args.only:
            old = json.loads((out / "criterion.json").read_text(encoding="utf-8"))
        data = read_criterion(args.criterion_dir, args.only, old)
        (out / "criterion.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"recorded {len(data['benches'])} criterion medians in {out / 'criterion.json'}", file=sys.stderr)
    if args.what == "timing":
        record_timing(out)
    render(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
