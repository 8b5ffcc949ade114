#!/usr/bin/env python3
"""Synthetic multi-service traces (`t,service,count`, as in ../shared/traces) for the sparse-fleet
replays quoted in the README. Seeded; the same arguments write the same file.

  python3 benches/traces/fleet_traces.py daily  /tmp/daily.csv   # 20 services x 7 days, each
        back at its own minute every day (30-90 s at 2-8/s, +-20 s), every fourth one skipping
        weekends, plus two short random bursts a day each
  python3 benches/traces/fleet_traces.py sparse /tmp/sparse.csv  # 500 services x 1 day, each
        five 30 s bursts at 2/s at random times

Then e.g.: forecourt replay --trace /tmp/daily.csv
"""
import math
import random
import sys

DAY = 86_400


def poisson(rng, lam):
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def daily(rng):
    rows = []
    for s in range(20):
        minute, length, rate = rng.randrange(1440), rng.randrange(30, 91), rng.uniform(2, 8)
        for d in range(7):
            if s % 4 == 0 and d % 7 in (5, 6):
                continue
            start = d * DAY + minute * 60 + rng.randrange(-20, 21)
            for t in range(max(start, 0), start + length):
                n = poisson(rng, rate)
                if n:
                    rows.append((t, f"daily-{s:02}", n))
            for _ in range(2):
                start = d * DAY + rng.randrange(DAY)
                for t in range(start, start + rng.randrange(5, 40)):
                    n = poisson(rng, 3)
                    if n:
                        rows.append((t, f"daily-{s:02}", n))
    return rows


def sparse(rng):
    rows = []
    for s in range(500):
        for _ in range(5):
            start = rng.randrange(DAY - 30)
            rows.extend((t, f"fn-{s:04}", 2) for t in range(start, start + 30))
    return rows


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("daily", "sparse"):
        sys.exit(__doc__)
    rng = random.Random(3)
    rows = sorted(daily(rng) if sys.argv[1] == "daily" else sparse(rng))
    with open(sys.argv[2], "w") as out:
        out.write("t,service,count\n")
        out.writelines(f"{t},{s},{n}\n" for t, s, n in rows)
    print(f"{sys.argv[2]}: {len(rows)} rows")


if __name__ == "__main__":
    main()
