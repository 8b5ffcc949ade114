#!/usr/bin/env python3
"""Helpers of benches/compare/run.sh: parse wrk and `forecourt load` output, hold idle
connections, and turn the raw measurements into a Markdown table and a JSON file.

Standard library only.

    compare.py wait-http URL SECONDS
    compare.py record-wrk RAW TARGET CASE ROUND WRK_OUT CPU_TICKS BACKEND_TICKS CLK_TCK
                          FOREIGN_TICKS STEAL_TICKS
    compare.py record-load RAW TARGET CASE ROUND LOAD_JSON CPU_TICKS BACKEND_TICKS CLK_TCK
                           FOREIGN_TICKS STEAL_TICKS RATE
    compare.py record-rss RAW TARGET ROUND PID...
    compare.py min-rps RAW CASE ROUND
    compare.py idle --raw RAW --target T --port P --conns N --settle S --pids PID,...
                    [--baseline-kib K]
    compare.py warm-rss --port P --settle S --pids PID,...   (prints KiB)
    compare.py report RAW META_JSON OUT_JSON OUT_MD
"""

import json
import os
import re
import socket
import statistics
import sys
import time
import urllib.request

# --- small helpers -------------------------------------------------------------------------


def append(raw, record):
    with open(raw, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_raw(raw):
    with open(raw, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def status_kib(pid, field):
    """A `VmRSS`/`VmHWM` line of /proc/PID/status, in KiB (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def to_ms(text):
    """wrk prints durations as 512.00us, 1.23ms, 2.00s, 1.00m."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        return None
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# --- commands ------------------------------------------------------------------------------


def wait_http(url, seconds):
    deadline = time.time() + float(seconds)
    last = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if 200 <= r.status < 300:
                    return 0
                last = f"status {r.status}"
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = str(e)
        time.sleep(0.1)
    print(f"{url} did not answer 2xx within {seconds} s ({last})", file=sys.stderr)
    return 1


def disturbance(foreign, steal, clk_tck):
    """CPU time other processes (and the hypervisor, as steal) took during a measurement."""
    ms = lambda ticks: int(ticks) * 1000 // int(clk_tck)  # noqa: E731
    return {"foreign_cpu_ms": max(0, ms(foreign)), "steal_ms": ms(steal)}


def record_wrk(raw, target, case, rnd, path, ticks, backend_ticks, clk_tck, foreign, steal):
    text = open(path, encoding="utf-8", errors="replace").read()
    requests = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", text, re.M)
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    if not requests or not rps:
        print(f"wrk output not understood ({target}, {case}):\n{text}", file=sys.stderr)
        return 1
    n = int(requests.group(1))
    latency = {}
    for q, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M):
        latency[f"p{q}"] = to_ms(value)
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    socket_errors = {}
    if sock:
        socket_errors = dict(zip(["connect", "read", "write", "timeout"], map(int, sock.groups())))
        errors += socket_errors["connect"] + socket_errors["write"] + socket_errors["timeout"]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        errors += int(non2xx.group(1))
    cpu_s = int(ticks) / int(clk_tck)
    backend_s = int(backend_ticks) / int(clk_tck)
    append(raw, {
        "kind": "run", "tool": "wrk", "target": target, "case": case, "round": int(rnd),
        "requests": n, "rps": float(rps.group(1)),
        "proxy_cpu_us_per_req": (cpu_s * 1e6 / n) if n and target != "direct" else None,
        "backend_cpu_us_per_req": (backend_s * 1e6 / n) if n else None,
        "latency_ms": latency, "errors": errors, "socket_errors": socket_errors,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "seconds": float(requests.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[
            requests.group(3)],
        **disturbance(foreign, steal, clk_tck),
    })
    return 0


def record_load(raw, target, case, rnd, path, ticks, backend_ticks, clk_tck, foreign, steal,
                rate):
    try:
        report = json.load(open(path, encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"forecourt load output not understood ({target}): {e}", file=sys.stderr)
        return 1
    total = report["total"]
    n = total["ok"] + total["failed"]
    cpu_s = int(ticks) / int(clk_tck)
    backend_s = int(backend_ticks) / int(clk_tck)
    lat = total["latency_ms"]
    append(raw, {
        "kind": "run", "tool": "forecourt load", "target": target, "case": case,
        "round": int(rnd), "requests": n, "rate": float(rate),
        "rps": total["achieved_rps"],
        "proxy_cpu_us_per_req": (cpu_s * 1e6 / n) if n and target != "direct" else None,
        "backend_cpu_us_per_req": (backend_s * 1e6 / n) if n else None,
        "latency_ms": {"p50": lat["p50"], "p90": lat["p90"], "p99": lat["p99"],
                       "p99.9": lat["p999"], "max": lat["max"]},
        "dispatch_lag_ms": total["dispatch_lag_ms"],
        "errors": total["failed"], "waited": total["waited"],
        "seconds": report["window_s"],
        **disturbance(foreign, steal, clk_tck),
    })
    return 0


def record_rss(raw, target, rnd, pids):
    append(raw, {"kind": "rss", "target": target, "round": int(rnd),
                 "peak_rss_kib": sum(status_kib(p, "VmHWM") for p in pids),
                 "processes": len(pids)})
    return 0


def min_rps(raw, case, rnd):
    values = [r["rps"] for r in read_raw(raw)
              if r["kind"] == "run" and r["case"] == case and r["round"] == int(rnd)]
    print(int(min(values)) if values else 0)
    return 0


def request(sock, path="/"):
    """One keep-alive GET on a blocking socket; reads the whole answer."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the answer's head")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    head_l = head.lower()
    length = re.search(rb"\r\ncontent-length:\s*(\d+)", head_l)
    if length:
        need = int(length.group(1))
        while len(body) < need:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside the body")
            body += chunk
    elif b"chunked" in head_l:
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside the body")
            body += chunk
    if not head.startswith(b"HTTP/1.1 2"):
        raise ConnectionError(f"answer {head.splitlines()[0]!r}")


def idle(args):
    opts = dict(zip(args[::2], args[1::2]))
    port, conns = int(opts["--port"]), int(opts["--conns"])
    settle = float(opts.get("--settle", "2"))
    pids = [int(p) for p in opts["--pids"].split(",") if p]
    rss = lambda: sum(status_kib(p, "VmRSS") for p in pids)  # noqa: E731

    # Warm the proxy (its upstream pool, first-use allocations) on one connection.
    warm = socket.create_connection(("127.0.0.1", port))
    for _ in range(200):
        request(warm)
    warm.close()
    time.sleep(settle)
    before = rss()

    socks, failed, t0 = [], 0, time.time()
    for _ in range(conns):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            request(s)
            socks.append(s)
        except OSError as e:
            failed += 1
            if failed == 1:
                print(f"idle: connection failed: {e}", file=sys.stderr)
            if failed > 100:
                break
    opened = time.time() - t0
    time.sleep(settle)
    after = rss()
    # Which connections did the proxy keep open? A closed one reads EOF at once.
    still_open = 0
    for s in socks:
        s.setblocking(False)
        try:
            still_open += 0 if s.recv(1) == b"" else 1
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    held = len(socks)
    record = {
        "kind": "idle", "target": opts["--target"],
        "requested": conns, "opened": held, "still_open": still_open, "failed": failed,
        "open_seconds": round(opened, 2), "rss_before_kib": before, "rss_after_kib": after,
        "kib_per_conn": round((after - before) / held, 3) if held else None,
    }
    baseline = int(opts.get("--baseline-kib", "0"))
    if baseline and held:
        # Against the same proxy as configured for the throughput rounds (fewer preallocated
        # connection slots), warmed the same way: counts what a bigger limit preallocates too.
        record["rss_baseline_kib"] = baseline
        record["kib_per_conn_incl_prealloc"] = round((after - baseline) / held, 3)
    append(opts["--raw"], record)
    print(json.dumps(record))
    return 0 if held else 1


def warm_rss(args):
    """VmRSS of a freshly started proxy after the same warm-up as `idle` does."""
    opts = dict(zip(args[::2], args[1::2]))
    pids = [int(p) for p in opts["--pids"].split(",") if p]
    warm = socket.create_connection(("127.0.0.1", int(opts["--port"])))
    for _ in range(200):
        request(warm)
    warm.close()
    time.sleep(float(opts.get("--settle", "2")))
    print(sum(status_kib(p, "VmRSS") for p in pids))
    return 0


# --- the report ----------------------------------------------------------------------------

CASE_TEXT = {
    "small": "small GET, keep-alive",
    "1k": "1 KiB answer, keep-alive",
    "64k": "64 KiB answer, keep-alive",
    "close": "new connection per request",
    "fixed": "fixed rate (open loop)",
}
TARGET_TEXT = {"direct": "direct", "forecourt": "Forecourt", "pingora": "bare Pingora",
               "nginx": "nginx", "haproxy": "HAProxy"}


def fmt(value, digits=1, thousands=False):
    if value is None:
        return "—"
    if thousands:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def spread(row):
    """(max − min) / median of req/s over the rounds, as a percentage."""
    if row["case"] == "fixed" or not row["rps"] or row["rounds"] < 2:
        return "—"
    return f"{(row['rps_max'] - row['rps_min']) / row['rps'] * 100:.0f} %"


def paired_ratio(runs, target, other, field):
    """Median over rounds of target/other, each round's pair measured back to back."""
    by_round = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["target"]] = r
    ratios = []
    for pair in by_round.values():
        a, b = pair.get(target), pair.get(other)
        if a and b and a.get(field) and b.get(field):
            ratios.append(a[field] / b[field])
    return median(ratios)


def report(raw, meta_path, out_json, out_md):
    records = read_raw(raw)
    meta = json.load(open(meta_path, encoding="utf-8"))
    runs = [r for r in records if r["kind"] == "run"]
    idle_recs = [r for r in records if r["kind"] == "idle"]
    rss_recs = [r for r in records if r["kind"] == "rss"]
    targets = [t for t in meta["options"]["targets"]]
    cases = [c for c in meta["options"]["cases"]]

    summary = []
    for case in cases:
        case_runs = [r for r in runs if r["case"] == case]
        for target in targets:
            mine = [r for r in case_runs if r["target"] == target]
            if not mine:
                continue
            lat_keys = sorted({k for r in mine for k in r["latency_ms"]},
                              key=lambda k: float(k[1:]) if k[1:].replace(".", "").isdigit()
                              else 1e9)
            row = {
                "case": case, "target": target, "rounds": len(mine),
                "rps": median([r["rps"] for r in mine]),
                "rps_min": min(r["rps"] for r in mine),
                "rps_max": max(r["rps"] for r in mine),
                "proxy_cpu_us_per_req_min": min(
                    (r["proxy_cpu_us_per_req"] for r in mine
                     if r["proxy_cpu_us_per_req"] is not None), default=None),
                "proxy_cpu_us_per_req": median([r["proxy_cpu_us_per_req"] for r in mine]),
                "backend_cpu_us_per_req": median([r["backend_cpu_us_per_req"] for r in mine]),
                "latency_ms": {k: median([r["latency_ms"].get(k) for r in mine])
                               for k in lat_keys},
                "errors": sum(r["errors"] for r in mine),
                "ratios": {},
            }
            if case == "fixed":
                row["rate"] = median([r["rate"] for r in mine])
                row["dispatch_lag_ms_p99"] = median([r["dispatch_lag_ms"]["p99"] for r in mine])
            for other in ("nginx", "haproxy", "direct", "pingora"):
                if other == target or other not in targets:
                    continue
                row["ratios"][f"rps_vs_{other}"] = paired_ratio(case_runs, target, other, "rps")
                if other != "direct" and target != "direct":
                    row["ratios"][f"cpu_vs_{other}"] = paired_ratio(
                        case_runs, target, other, "proxy_cpu_us_per_req")
                p = "p99.9" if case == "fixed" else "p99"
                lat = [dict(r, _l=r["latency_ms"].get(p)) for r in case_runs]
                row["ratios"][f"{p}_vs_{other}"] = paired_ratio(lat, target, other, "_l")
            summary.append(row)
    # Best of the rounds (most req/s, least CPU per request): on a shared host, noise only ever
    # slows a measurement down, so this is a cross-check of the medians.
    for row in summary:
        row["ratios_best"] = {}
        for other in ("nginx", "haproxy"):
            o = next((x for x in summary if x["case"] == row["case"] and x["target"] == other),
                     None)
            if not o or other == row["target"] or row["target"] == "direct":
                continue
            row["ratios_best"][f"rps_vs_{other}"] = row["rps_max"] / o["rps_max"]
            if row["proxy_cpu_us_per_req_min"] and o["proxy_cpu_us_per_req_min"]:
                row["ratios_best"][f"cpu_vs_{other}"] = (row["proxy_cpu_us_per_req_min"]
                                                         / o["proxy_cpu_us_per_req_min"])

    memory = []
    for target in targets:
        peaks = [r["peak_rss_kib"] for r in rss_recs if r["target"] == target]
        idle_rec = next((r for r in idle_recs if r["target"] == target), None)
        memory.append({
            "target": target,
            "peak_rss_kib": median(peaks),
            "peak_rss_note": "backend process (no proxy)" if target == "direct" else None,
            "idle": idle_rec,
        })

    result = {"meta": meta, "summary": summary, "memory": memory, "raw": records}

    o = meta["options"]
    lines = [
        f"## Forecourt vs nginx vs HAProxy — {meta['date']}",
        "",
        f"{meta['host']['cpu_model']}, nproc {meta['host']['nproc']}, kernel "
        f"{meta['host']['kernel']}; Forecourt {meta['versions']['forecourt']}, "
        f"{meta['versions']['nginx']}, {meta['versions']['haproxy']}, "
        f"{meta['versions']['wrk']}.",
        f"Proxies on core {o['proxy_core']} (one worker each); backend and load generator on core "
        f"{o['load_core']}. {o['rounds']} rounds of {o['duration']} per measurement, targets "
        f"alternated; medians; ratios are medians of per-round pairs; spread = (max − min) / "
        f"median of req/s over the rounds.",
        "",
        "| case | target | req/s | spread | ×nginx | ×HAProxy | ×direct | proxy CPU µs/req "
        "| CPU ×nginx | CPU ×HAProxy | p50 ms | p99 ms | p99.9 ms | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in summary:
        ra, lat = row["ratios"], row["latency_ms"]
        case = CASE_TEXT.get(row["case"], row["case"])
        if row["case"] == "fixed":
            case += f" {row['rate']:,.0f}/s"
        lines.append(
            f"| {case} | {TARGET_TEXT.get(row['target'], row['target'])} "
            f"| {fmt(row['rps'], thousands=True)} "
            f"| {spread(row)} "
            f"| {fmt(ra.get('rps_vs_nginx'), 2)} | {fmt(ra.get('rps_vs_haproxy'), 2)} "
            f"| {fmt(ra.get('rps_vs_direct'), 2)} "
            f"| {fmt(row['proxy_cpu_us_per_req'], 1)} "
            f"| {fmt(ra.get('cpu_vs_nginx'), 2)} | {fmt(ra.get('cpu_vs_haproxy'), 2)} "
            f"| {fmt(lat.get('p50'), 3)} | {fmt(lat.get('p99'), 3)} "
            f"| {fmt(lat.get('p99.9'), 3)} | {row['errors']} |")
    costs = [r for r in summary if r["target"] == "forecourt" and "cpu_vs_pingora" in r["ratios"]]
    if costs:
        lines += [
            "",
            "What Forecourt's features (classification, predictor, tenants, metrics, balancing) "
            "cost over a bare Pingora pass-through with the same server settings:",
            "",
            "| case | Forecourt CPU µs/req | bare Pingora CPU µs/req | CPU ×Pingora "
            "| req/s ×Pingora |",
            "|---|--:|--:|--:|--:|",
        ]
        for row in costs:
            bare = next((x for x in summary
                         if x["case"] == row["case"] and x["target"] == "pingora"), {})
            lines.append(
                f"| {CASE_TEXT.get(row['case'], row['case'])} "
                f"| {fmt(row['proxy_cpu_us_per_req'], 1)} "
                f"| {fmt(bare.get('proxy_cpu_us_per_req'), 1)} "
                f"| {fmt(row['ratios'].get('cpu_vs_pingora'), 2)} "
                f"| {fmt(row['ratios'].get('rps_vs_pingora'), 2)} |")
    lines += [
        "",
        "Closed-loop cases: wrk -t1 -c" + str(o["connections"]) + " --latency (p50/p99 from wrk; "
        "wrk prints no p99.9). Fixed rate: `forecourt load`, open loop, latency from each "
        "request's scheduled time (no coordinated omission).",
        "",
        "| target | peak RSS (MiB) | idle conns held | KiB per idle conn | KiB per idle conn incl. "
        "preallocation |",
        "|---|--:|--:|--:|--:|",
    ]
    for m in memory:
        idle_rec = m["idle"] or {}
        held = idle_rec.get("still_open")
        lines.append(
            f"| {TARGET_TEXT.get(m['target'], m['target'])}"
            f"{' (backend)' if m['target'] == 'direct' else ''} "
            f"| {fmt(m['peak_rss_kib'] / 1024 if m['peak_rss_kib'] else None, 1)} "
            f"| {'—' if held is None else f'{held:,}'} "
            f"| {fmt(idle_rec.get('kib_per_conn'), 2)} "
            f"| {fmt(idle_rec.get('kib_per_conn_incl_prealloc'), 2)} |")
    lines.append("")
    notes = [r for r in records if r["kind"] == "note"]
    lines += [f"- {r['text']}" for r in notes]
    # A measurement during which other processes took more than 2 % of the machine.
    disturbed = [r for r in runs
                 if r.get("foreign_cpu_ms", 0) + max(0, r.get("steal_ms", 0))
                 > 0.02 * 1000 * r.get("seconds", 0) * meta["host"]["nproc"]]
    result["disturbed_runs"] = len(disturbed)
    if disturbed:
        worst = sorted(disturbed, key=lambda r: -r["foreign_cpu_ms"])[:6]
        lines.append(
            f"- {len(disturbed)} of {len(runs)} measurements shared the machine with other work "
            "(other processes or steal above 2 % of the machine): "
            + ", ".join(f"round {r['round']} {r['case']} {r['target']} "
                        f"({r['foreign_cpu_ms']} ms other, {r['steal_ms']} ms steal)"
                        for r in worst)
            + (", …" if len(disturbed) > len(worst) else "")
            + ". Medians over rounds damp this; rerun on a quiet machine to be sure.")
    else:
        lines.append("- No measurement saw other processes or steal above 2 % of the machine.")
    with open(out_json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    text = "\n".join(lines) + "\n"
    with open(out_md, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "wait-http":
        return wait_http(*args)
    if cmd == "record-wrk":
        return record_wrk(*args)
    if cmd == "record-load":
        return record_load(*args)
    if cmd == "record-rss":
        return record_rss(args[0], args[1], args[2], args[3:])
    if cmd == "min-rps":
        return min_rps(*args)
    if cmd == "idle":
        return idle(args)
    if cmd == "warm-rss":
        return warm_rss(args)
    if cmd == "append":  # compare.py append RAW JSON
        append(args[0], json.loads(args[1]))
        return 0
    if cmd == "report":
        return report(*args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
