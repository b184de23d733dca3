"""The hand-rolled alternative to fidius's process tier, measured in the same `ci/bench` run:
`multiprocessing.Pool` round trips (raw bytes, and a small call with JSON arguments), a bare
`multiprocessing.Pipe` ping-pong (the floor for anything pipe-based), and `Pool.map` throughput on the
same CPU-bound function the fidius rows run.

Usage: python multiprocessing_baseline.py ITERATIONS SPIN_N CALLS_EACH MAX_WORKERS  (prints JSON)
"""
import json
import multiprocessing
import sys
import time


def echo(data):
    return data


def add_json(args):
    a, b = json.loads(args)
    return json.dumps(a + b).encode()


def spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def ping_pong(conn):
    while True:
        message = conn.recv_bytes()
        if not message:
            return
        conn.send_bytes(message)


def latency(call, iterations):
    for _ in range(iterations // 10):
        call()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    samples.sort()
    return {"p50_ns": samples[len(samples) // 2], "p99_ns": samples[len(samples) * 99 // 100]}


def main():
    iterations, spin_n, calls_each, max_workers = map(int, sys.argv[1:5])
    report = {}
    with multiprocessing.Pool(1) as pool:
        report["raw"] = latency(lambda: pool.apply(echo, (b"0123456789abcdef",)), iterations)
        report["typed"] = latency(lambda: pool.apply(add_json, (b"[40, 2]",)), iterations)
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.Process(target=ping_pong, args=(theirs,))
    child.start()
    report["pipe"] = latency(
        lambda: (ours.send_bytes(b"0123456789abcdef"), ours.recv_bytes()), iterations
    )
    ours.send_bytes(b"")
    child.join()
    throughput = {}
    for workers in range(1, max_workers + 1):
        with multiprocessing.Pool(workers) as pool:
            pool.map(spin, [spin_n] * workers, chunksize=1)
            rounds = []
            for _ in range(3):
                started = time.perf_counter()
                pool.map(spin, [spin_n] * (workers * calls_each), chunksize=1)
                rounds.append(workers * calls_each / (time.perf_counter() - started))
            rounds.sort()
            throughput[str(workers)] = rounds[1]
    report["cpu_calls_per_s"] = throughput
    print(json.dumps(report))


if __name__ == "__main__":
    main()
