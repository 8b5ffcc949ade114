#!/usr/bin/env python3
"""Many services on one proxy: the real `forecourt` binary with N services, idle and under a light
load, measured from outside the process. Run on demand, never in CI.

    python3 benches/scale/run.py [--services 100,1000,10000] [--idle 30] [--bin PATH] [--out DIR]

Per N it writes a policy file with N services (each with a path route and one fixed instance, the
instances spread over --backends sample backends on 127.0.0.1, health checks every 30 s), starts
the backends and `forecourt run`, waits for every service to be ready, then measures:

- RSS after start and after the idle window (VmRSS of the proxy process);
- CPU while idle: utime + stime over --idle seconds with no traffic, in % of one core;
- the size of GET /metrics and GET /v1/forecasts;
- the control loop's tick time over the idle window (p50 and p99 of the ticks that fell in it, from
  `forecourt_control_loop_tick_seconds` read before and after; bucket upper bounds);
- request latency through the proxy at --rate req/s for --load seconds spread over 100 of the
  services, sent by `forecourt load --precise-timing --spread random` (open loop, uniformly random
  send times, latency from each request's scheduled time; the control loop ticks once a second, so
  every tick falls inside the load),
  next to the same trace sent to a backend directly;
- that latency split in two: the requests in flight while the control loop ticked (it starts a
  tick 20 ms into every wall-clock second; a tick is taken to last the p99 bucket bound of the
  ticks during the load) and the others, p50 and p99 of each, with the direct run split at the
  same times for comparison (`forecourt load --samples` gives each request's scheduled wall-clock
  time and latency);
- with --active N (default 1,000; 0 skips it), for the row with N services: every service gets
  1 request a second for --active-seconds, so each holds a forecast ensemble, then the idle
  measurements and the load are repeated with all of them modelled (row "N active").

By default (--no-pin turns it off) the proxy runs on CPU 0 and the backends and load generator
on the other CPUs (taskset), so a tick competes only with the proxy's own threads.

Prints two Markdown tables and writes them, with the raw numbers as JSON, to --out.
"""

import argparse
import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(msg):
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def policy(n, proxy_port, admin_port, backends, interval):
    lines = [
        "listeners:",
        f"  proxy: 127.0.0.1:{proxy_port}",
        f"  admin: 127.0.0.1:{admin_port}",
        "defaults:",
        "  health_check:",
        "    path: /healthz",
        f"    interval: {interval}",
        "    timeout: 1s",
        "    healthy_threshold: 1",
        "services:",
    ]
    for i in range(n):
        port = backends[i % len(backends)]
        lines += [
            f"  - name: svc-{i:05}",
            f"    routes: [{{ path_prefix: /svc-{i:05}/ }}]",
            f"    instances: [{{ address: \"127.0.0.1:{port}\" }}]",
        ]
    return "\n".join(lines) + "\n"


def get(port, path, timeout=30.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def proc_stat(pid):
    """(utime + stime in seconds, RSS in bytes) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return cpu, rss


def histogram(metrics_text, name):
    """Cumulative buckets [(upper bound, count)] of a Prometheus histogram with no labels."""
    buckets = []
    for line in metrics_text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            count = float(line.rsplit(" ", 1)[1])
            buckets.append((float("inf") if le == "+Inf" else float(le), count))
    return buckets


def histogram_quantile(before, after, q):
    """The q quantile (bucket upper bound) of the observations between two readings, or None."""
    counts = dict(before)
    diff = [(bound, count - counts.get(bound, 0.0)) for bound, count in after]
    if not diff or diff[-1][1] <= 0:
        return None
    total = diff[-1][1]
    for bound, count in diff:
        if count >= q * total:
            return bound
    return None


TICKS = "forecourt_control_loop_tick_seconds"


def ticks(admin_port):
    _, text = get(admin_port, "/metrics")
    return histogram(text.decode(), TICKS)


def metric_value(admin_port, prefix):
    """The sum of every sample whose line starts with `prefix`."""
    _, text = get(admin_port, "/metrics")
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.decode().splitlines()
               if l.startswith(prefix))


# With --pin: the proxy on CPU 0, backends and load generator on the others, so what slows a
# request during a tick is the proxy's own work, not the load generator's.
PIN = {"proxy": [], "others": []}


def pin(cpus):
    """Sets PIN for `cpus` CPUs (nothing with fewer than two, or without taskset)."""
    if cpus >= 2 and shutil.which("taskset"):
        PIN["proxy"] = ["taskset", "-c", "0"]
        PIN["others"] = ["taskset", "-c", f"1-{cpus - 1}"]


def load(bin_path, port, services, rate, seconds, workdir, name):
    """`forecourt load` of `rate` req/s spread evenly over `services` for `seconds` to
    127.0.0.1:port (path /SERVICE/x); returns its total report and its samples
    [(scheduled unix s, latency s)]."""
    trace = os.path.join(workdir, f"{name}.csv")
    samples = os.path.join(workdir, f"{name}.samples.csv")
    per_service = rate / len(services)
    with open(trace, "w") as f:
        f.write("t,service,count\n")
        carry = {s: 0.0 for s in services}
        for t in range(int(seconds)):
            for svc in services:
                carry[svc] += per_service
                n = int(carry[svc])
                carry[svc] -= n
                if n:
                    f.write(f"{t},{svc},{n}\n")
    out = subprocess.run(
        PIN["others"] + [bin_path, "load", "--trace", trace, "--target", f"http://127.0.0.1:{port}",
         "--path-template", "/{service}/x", "--precise-timing", "--spread", "random", "--json",
         "--max-duration", f"{int(seconds) + 5}s", "--samples", samples],
        capture_output=True, check=True)
    with open(samples) as f:
        next(f)
        rows = [line.split(",") for line in f]
    return json.loads(out.stdout)["total"], [(int(r[1]) / 1e6, int(r[2]) / 1e6) for r in rows]


# The control loop starts a tick this far into every wall-clock second
# (orchestrator/src/control_loop.rs, TICK_OFFSET_MS).
TICK_OFFSET_S = 0.020


def split_by_tick(samples, tick_s):
    """Latency p50 / p99 (ms) and count of the requests whose flight [scheduled, scheduled +
    latency] overlapped a control-loop tick (taken as [k s + TICK_OFFSET_S, + tick_s]), and of
    the others."""
    during, outside = [], []
    for at, latency in samples:
        start = at - TICK_OFFSET_S
        second = math.floor(start)
        # Overlaps the tick of its own second, or reaches the next one.
        hit = start - second < tick_s or start + latency >= second + 1
        (during if hit else outside).append(latency)
    ms = lambda v: None if v is None else round(v * 1000, 2)
    return {
        "during_n": len(during), "during_p50_ms": ms(quantile(during, 0.5)),
        "during_p99_ms": ms(quantile(during, 0.99)),
        "outside_n": len(outside), "outside_p50_ms": ms(quantile(outside, 0.5)),
        "outside_p99_ms": ms(quantile(outside, 0.99)),
    }


def latency_during_ticks(args, admin_port, proxy_port, direct_port, sample, workdir, name):
    """Load through the proxy and straight to a backend; latency split by whether each request
    was in flight while the control loop ticked (the direct run split at the same times: what
    the split alone does on this machine)."""
    direct, direct_samples = load(args.bin, direct_port, sample, args.rate, args.load, workdir,
                                  f"{name}-direct")
    before = ticks(admin_port)
    proxied, proxied_samples = load(args.bin, proxy_port, sample, args.rate, args.load, workdir,
                                    f"{name}-proxied")
    tick_p99 = histogram_quantile(before, ticks(admin_port), 0.99) or 0.0
    row = {
        "direct_p50_ms": direct["latency_ms"]["p50"],
        "direct_p99_ms": direct["latency_ms"]["p99"],
        "proxied_p50_ms": proxied["latency_ms"]["p50"],
        "proxied_p99_ms": proxied["latency_ms"]["p99"],
        "proxied_max_ms": proxied["latency_ms"]["max"],
        "load_tick_p99_ms": round(tick_p99 * 1000, 2),
        "errors": direct["failed"] + proxied["failed"],
    }
    for prefix, samples in (("proxied", proxied_samples), ("direct", direct_samples)):
        split = split_by_tick(samples, tick_p99)
        row.update({f"{prefix}_{k}": v for k, v in split.items()})
    return row


def quantile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def wait_ready(admin_port, n, deadline_s):
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        try:
            status, body = get(admin_port, "/v1/services", timeout=5)
            if status == 200:
                services = json.loads(body).get("services", [])
                ready = sum(1 for s in services if s.get("ready", 0) > 0)
                if ready >= n:
                    return True
        except (OSError, ValueError, http.client.HTTPException):
            pass
        time.sleep(0.5)
    return False


def measure_idle(args, pid, admin_port):
    """RSS, CPU and tick times over an idle window, then the sizes of /metrics and /v1/forecasts."""
    _, rss_start = proc_stat(pid)
    before = ticks(admin_port)
    cpu0, _ = proc_stat(pid)
    t0 = time.time()
    time.sleep(args.idle)
    cpu1, rss_idle = proc_stat(pid)
    idle_cpu = 100.0 * (cpu1 - cpu0) / (time.time() - t0)
    after = ticks(admin_port)
    _, metrics = get(admin_port, "/metrics")
    _, forecasts = get(admin_port, "/v1/forecasts")
    ms = lambda v: None if v is None else round(v * 1000, 2)
    return {
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_idle_mb": round(rss_idle / 2**20, 1),
        "idle_cpu_percent": round(idle_cpu, 2),
        "tick_p50_ms": ms(histogram_quantile(before, after, 0.5)),
        "tick_p99_ms": ms(histogram_quantile(before, after, 0.99)),
        "metrics_mb": round(len(metrics) / 2**20, 3),
        "forecasts_mb": round(len(forecasts) / 2**20, 3),
        "modelled": int(metric_value(admin_port, "forecourt_forecast_modelled_services ")),
    }


def run_one(args, n, workdir):
    backends, procs, rows = [], [], []
    try:
        for _ in range(min(args.backends, n)):
            port = free_port()
            procs.append(subprocess.Popen(
                PIN["others"] + [args.bin, "backend", "--port", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            backends.append(port)
        proxy_port, admin_port = free_port(), free_port()
        path = os.path.join(workdir, f"services-{n}.yaml")
        with open(path, "w") as f:
            f.write(policy(n, proxy_port, admin_port, backends, args.health_interval))
        log = open(os.path.join(workdir, f"forecourt-{n}.log"), "w")
        started = time.time()
        proxy = subprocess.Popen(PIN["proxy"] + [args.bin, "run", "--config", path], stdout=log,
                                 stderr=log)
        procs.append(proxy)
        if not wait_ready(admin_port, n, args.start_timeout):
            raise RuntimeError(f"{n} services not ready within {args.start_timeout} s "
                               f"(log: {log.name})")
        ready_secs = time.time() - started
        say(f"{n} services ready in {ready_secs:.1f} s; settling {args.settle} s")
        time.sleep(args.settle)
        row = {"services": f"{n:,}", "ready_seconds": round(ready_secs, 1),
               "pinned": " ".join(PIN["proxy"] + ["|"] + PIN["others"])}
        row.update(measure_idle(args, proxy.pid, admin_port))
        sample = [f"svc-{i:05}" for i in range(0, n, max(1, n // 100))]
        say(f"{n} services: load {args.rate} req/s for {args.load} s over {len(sample)} services")
        row.update(latency_during_ticks(args, admin_port, proxy_port, backends[0], sample,
                                        workdir, f"idle-{n}"))
        rows.append(row)
        if n == args.active:
            services = [f"svc-{i:05}" for i in range(n)]
            say(f"{n} services: 1 req/s each for {args.active_seconds} s")
            busy, _ = load(args.bin, proxy_port, services, n, args.active_seconds, workdir,
                           "active")
            time.sleep(2)
            active = {"services": f"{n:,} active", "ready_seconds": row["ready_seconds"],
                      "pinned": row["pinned"]}
            active.update(measure_idle(args, proxy.pid, admin_port))
            # Every service stays modelled for an hour after its last request: the load below
            # runs while each tick forecasts all of them.
            active.update(latency_during_ticks(args, admin_port, proxy_port, backends[0], sample,
                                               workdir, f"active-{n}"))
            active["errors"] += busy["failed"]
            rows.append(active)
        return rows
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def table(rows):
    head = ("| services | modelled | RSS idle | CPU while idle | tick p50 / p99 | `/metrics` "
            "| `/v1/forecasts` | request p50 / p99 (direct) | request p50 / p99 / max (proxied) |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    ms = lambda v: "-" if v is None else f"{v}"
    body = ""
    for r in rows:
        body += (f'| {r["services"]} | {r["modelled"]:,} | {r["rss_idle_mb"]} MB '
                 f'| {r["idle_cpu_percent"]} % '
                 f'| {ms(r["tick_p50_ms"])} / {ms(r["tick_p99_ms"])} ms '
                 f'| {r["metrics_mb"]} MB | {r["forecasts_mb"]} MB '
                 f'| {r["direct_p50_ms"]} / {r["direct_p99_ms"]} ms '
                 f'| {r["proxied_p50_ms"]} / {r["proxied_p99_ms"]} / {r["proxied_max_ms"]} ms |\n')
    return head + body


def tick_table(rows):
    """Request latency split by whether the request was in flight during a control-loop tick."""
    head = ("| services | tick p99 under load | proxied, in flight during a tick: n, p50 / p99 "
            "| proxied, the others: n, p50 / p99 | p99 added by ticks "
            "| direct, same split: during / others p99 |\n|---|---|---|---|---|---|\n")
    body = ""
    for r in rows:
        added = (None if r["proxied_during_p99_ms"] is None or r["proxied_outside_p99_ms"] is None
                 else round(r["proxied_during_p99_ms"] - r["proxied_outside_p99_ms"], 2))
        body += (f'| {r["services"]} | ≤ {r["load_tick_p99_ms"]} ms '
                 f'| {r["proxied_during_n"]:,}: {r["proxied_during_p50_ms"]} / '
                 f'{r["proxied_during_p99_ms"]} ms '
                 f'| {r["proxied_outside_n"]:,}: {r["proxied_outside_p50_ms"]} / '
                 f'{r["proxied_outside_p99_ms"]} ms | {added} ms '
                 f'| {r["direct_during_p99_ms"]} / {r["direct_outside_p99_ms"]} ms |\n')
    return head + body


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", default="100,1000,10000")
    ap.add_argument("--backends", type=int, default=16)
    ap.add_argument("--health-interval", default="30s")
    ap.add_argument("--idle", type=float, default=30.0, help="idle window, seconds")
    ap.add_argument("--settle", type=float, default=10.0, help="wait after ready, seconds")
    ap.add_argument("--rate", type=float, default=500.0, help="load, req/s")
    ap.add_argument("--load", type=float, default=40.0, help="load duration, seconds")
    ap.add_argument("--start-timeout", type=float, default=300.0)
    ap.add_argument("--active", type=int, default=1000,
                    help="the row whose services all get traffic first (0: none)")
    ap.add_argument("--active-seconds", type=float, default=70.0)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "forecourt"))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the proxy to CPU 0 and the rest to the other CPUs")
    args = ap.parse_args()
    if not args.no_pin:
        pin(os.cpu_count() or 1)
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"no forecourt binary at {args.bin}: cargo build --release -p forecourt-proxy")
    counts = [int(s) for s in args.services.split(",") if s.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="forecourt-scale-") as workdir:
        for n in counts:
            for row in run_one(args, n, workdir):
                rows.append(row)
                say(json.dumps(row))
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(args.out, f"scale-{stamp}.json"), "w") as f:
        json.dump(rows, f, indent=1)
    text = table(rows) + "\n" + tick_table(rows)
    with open(os.path.join(args.out, f"scale-{stamp}.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
