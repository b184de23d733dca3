"""Merges the output of `crates/fidius/benches/compare.rs` from two builds into a markdown report.

Called by `ci/bench --against REV`: each input file holds the lines of several alternating runs of
one build (`fidius-compare-v1 <TAB> case <TAB> bytes per call <TAB> p50 ns <TAB> p99 ns`). Per case
and build, the report shows the median over runs of p50 and of p99, and new / old; also new / old
of the best (lowest) p50 of any run, which a busy machine disturbs least. Cases with `bytes` > 0
are bandwidth rows, shown in GB/s (10^9 bytes per second, from the p50 time).
"""

import argparse
import statistics
import sys

LINE_TAG = "fidius-compare-v1"
# The bandwidth target: the process tier's raw 16 MiB echo (in + out) moves at least half
# of what a plain in-process 16 MiB copy moves.
ECHO_CASE = "process raw echo 16 MiB"
COPY_CASE = "in-process 16 MiB copy"
TARGET = 0.5


def read(path):
    """case -> (bytes, [p50 ns], [p99 ns]), in the order cases first appear."""
    cases = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 5 or fields[0] != LINE_TAG:
                continue
            _, case, moved, p50, p99 = fields
            entry = cases.setdefault(case, (int(moved), [], []))
            entry[1].append(int(p50))
            entry[2].append(int(p99))
    return cases


def median(values):
    return statistics.median(values)


def micros(ns):
    return f"{ns / 1e3:.2f} µs"


def gbps(moved, ns):
    return moved / ns


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--old-label", required=True)
    parser.add_argument("--new-label", required=True)
    parser.add_argument("--header", required=True)
    parser.add_argument("old")
    parser.add_argument("new")
    args = parser.parse_args()
    old, new = read(args.old), read(args.new)
    if not old or not new:
        sys.exit("ci/bench: a build reported no cases (see its output above)")
    out = [
        f"## Comparison: new: {args.new_label}; old: {args.old_label}",
        "",
        args.header,
        "",
    ]

    names = list(new) + [case for case in old if case not in new]
    both = [case for case in names if case in old and case in new]
    latency = [case for case in both if new[case][0] == 0]
    bandwidth = [case for case in both if new[case][0] > 0]

    out += [
        "| case | old p50 | new p50 | new / old p50 | old p99 | new p99 | new / old p99 "
        "| new / old best p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in latency:
        o50, n50 = median(old[case][1]), median(new[case][1])
        o99, n99 = median(old[case][2]), median(new[case][2])
        out.append(
            f"| {case} | {micros(o50)} | {micros(n50)} | {n50 / o50:.2f}× "
            f"| {micros(o99)} | {micros(n99)} | {n99 / o99:.2f}× "
            f"| {min(new[case][1]) / min(old[case][1]):.2f}× |"
        )

    if bandwidth:
        out += [
            "",
            "| bandwidth (GB/s at p50; echo counts in + out) | old | new | new / old |",
            "|---|---|---|---|",
        ]
        for case in bandwidth:
            moved = new[case][0]
            o, n = gbps(moved, median(old[case][1])), gbps(moved, median(new[case][1]))
            out.append(f"| {case} | {o:.2f} | {n:.2f} | {n / o:.2f}× |")

    rows = []
    for label, side in (("old", old), ("new", new)):
        if ECHO_CASE in side and COPY_CASE in side:
            echo = gbps(side[ECHO_CASE][0], median(side[ECHO_CASE][1]))
            copy = gbps(side[COPY_CASE][0], median(side[COPY_CASE][1]))
            verdict = "met" if echo / copy >= TARGET else "not met"
            rows.append(
                f"| {label} | {echo:.2f} | {copy:.2f} | {echo / copy:.2f} ({verdict}) |"
            )
    if rows:
        out += [
            "",
            "Process tier raw 16 MiB echo GB/s (in+out) vs in-process 16 MiB copy GB/s:",
            "",
            "| build | process raw 16 MiB echo GB/s (in + out) | in-process 16 MiB copy GB/s "
            f"| echo / copy (target ≥ {TARGET}) |",
            "|---|---|---|---|",
            *rows,
        ]

    skipped = [case for case in names if case not in both]
    if skipped:
        out.append("")
    for case in skipped:
        missing = args.old_label if case not in old else args.new_label
        out.append(f"- skipped `{case}`: {missing} has no such case")
    print("\n".join(out))


if __name__ == "__main__":
    main()
