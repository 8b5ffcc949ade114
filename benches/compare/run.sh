#!/usr/bin/env bash
# Side-by-side benchmark: Forecourt's sample backend directly, then through Forecourt, nginx and
# HAProxy. Run on demand, never in CI. Options and the fairness rules: benches/compare/README.md.
#
#   bash benches/compare/run.sh [--rounds 3] [--duration 5s] [--idle-conns 10000] ...
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY="$HERE/compare.py"

ROUNDS=3
DURATION=5s
WARMUP=1s
CONNECTIONS=32
IDLE_CONNS=10000
RATE=auto
RATE_FRACTION=0.25
PRECISE_TIMING=1
TARGETS="direct forecourt pingora nginx haproxy"
CASES="small 1k 64k close fixed"
PORT_BASE=19100
PROXY_CORE=0
LOAD_CORE=1
INSTALL=1
BUILD=1
OUT_DIR="$HERE/results"
BIN="$ROOT/target/release/forecourt"
PASSTHROUGH="$ROOT/target/release/examples/passthrough"

usage() {
  sed -n '/^## Options/,/^## /p' "$HERE/README.md" | sed '$d' >&2
  exit "${1:-2}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --idle-conns) IDLE_CONNS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --no-precise-timing) PRECISE_TIMING=0; shift ;;
    --targets) TARGETS=$2; shift 2 ;;
    --cases) CASES=$2; shift 2 ;;
    --port-base) PORT_BASE=$2; shift 2 ;;
    --proxy-core) PROXY_CORE=$2; shift 2 ;;
    --load-core) LOAD_CORE=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --out) OUT_DIR=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage ;;
  esac
done

say() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# "5s", "2m" or "7" → whole seconds (the fixed-rate trace has one row per second).
seconds() {
  case "$1" in
    *m) echo $(( ${1%m} * 60 )) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
  esac
}
DURATION_S=$(seconds "$DURATION")
[[ "$DURATION_S" =~ ^[0-9]+$ && "$DURATION_S" -ge 1 ]] || die "--duration takes whole seconds, e.g. 5s"
[[ "$ROUNDS" =~ ^[0-9]+$ && "$ROUNDS" -ge 1 ]] || die "--rounds takes a positive number"

# --- tools ---------------------------------------------------------------------------------
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
# Debian puts nginx and haproxy in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"
need nginx nginx
need haproxy haproxy
need wrk wrk
need taskset util-linux
need pgrep procps
need python3 python3
need curl curl
if [ ${#missing[@]} -gt 0 ]; then
  [ "$INSTALL" -eq 1 ] || die "missing packages: ${missing[*]} (run without --no-install)"
  say "installing ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NCPU=$(nproc)
if [ "$NCPU" -le "$PROXY_CORE" ] || [ "$NCPU" -le "$LOAD_CORE" ]; then
  die "cores $PROXY_CORE and $LOAD_CORE needed, this machine has $NCPU"
fi

# --- Forecourt, built when missing or older than its sources -----------------------------
if [ "$BUILD" -eq 1 ]; then
  newer=""
  if [ -x "$BIN" ]; then
    newer=$(find "$ROOT" \( -path "$ROOT/target" -o -path "$ROOT/.git" -o -path "$ROOT/benches" \) \
      -prune -o \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -newer "$BIN" -print \
      | head -n1)
  fi
  if [ ! -x "$BIN" ] || [ ! -x "$PASSTHROUGH" ] || [ -n "$newer" ]; then
    say "building Forecourt and the bare Pingora pass-through (release)${newer:+, $newer is newer than the binary}"
    (cd "$ROOT" && cargo build --release -j2 -p forecourt-proxy --bin forecourt --example passthrough)
    touch "$BIN" "$PASSTHROUGH"  # cargo leaves them alone when nothing changed
  fi
fi
[ -x "$BIN" ] || die "$BIN is missing"
[ -x "$PASSTHROUGH" ] || die "$PASSTHROUGH is missing"

# --- processes, cleaned up on any exit -------------------------------------------------------
WORK=$(mktemp -d /tmp/forecourt-compare.XXXXXX)
chmod 755 "$WORK"  # nginx workers run as nobody when started by root
RAW="$WORK/raw.jsonl"
: >"$RAW"
STARTED=()   # long-running processes: backend and proxies
CURRENT=""   # the load generator running now

cleanup() {
  trap - EXIT INT TERM
  if [ -n "$CURRENT" ]; then kill "$CURRENT" 2>/dev/null || true; fi
  local p left
  for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    left=0
    for p in "${STARTED[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
    [ "$left" -eq 0 ] && break
    sleep 0.1
  done
  for p in "${STARTED[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -n "${KEEP_WORK:-}" ]; then say "work files kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# Runs a command in the background and waits for it, so that Ctrl-C is handled at once.
run_fg() {
  "$@" &
  CURRENT=$!
  local rc=0
  wait "$CURRENT" || rc=$?
  CURRENT=""
  return "$rc"
}

forget() {  # drop a stopped process from STARTED
  local p keep=()
  for p in "${STARTED[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  STARTED=("${keep[@]}")
}

stop() {
  local pid=$1
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget "$pid"
}

BACKEND_PORT=$((PORT_BASE + 1))
declare -A PORT=(
  [direct]=$BACKEND_PORT
  [forecourt]=$((PORT_BASE + 10))
  [pingora]=$((PORT_BASE + 40))
  [nginx]=$((PORT_BASE + 20))
  [haproxy]=$((PORT_BASE + 30))
)
ADMIN_PORT=$((PORT_BASE + 11))
declare -A PID=()

for t in $TARGETS; do
  [ -n "${PORT[$t]:-}" ] || die "unknown target $t (direct forecourt pingora nginx haproxy)"
done
for c in $CASES; do
  case "$c" in small|1k|64k|close|fixed) ;; *) die "unknown case $c (small 1k 64k close fixed)" ;; esac
done

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for t in "${!PORT[@]}"; do
  port_free "${PORT[$t]}" || die "port ${PORT[$t]} is in use (choose --port-base)"
done
port_free "$ADMIN_PORT" || die "port $ADMIN_PORT is in use (choose --port-base)"

# Process ids of a target: nginx's master and its worker; otherwise the one process.
pids_of() {
  local main=${PID[$1]}
  echo "$main"
  if [ "$1" = nginx ]; then pgrep -P "$main" || true; fi
}
# stat_ticks AWK_EXPR PID...: a /proc/<pid>/stat field expression, in clock ticks, summed.
stat_ticks() {
  local expr=$1 t=0 p v
  shift
  for p in "$@"; do
    v=$(awk "{print $expr}" "/proc/$p/stat" 2>/dev/null || echo 0)
    t=$((t + v))
  done
  echo "$t"
}
cpu_ticks() { stat_ticks '$14 + $15' "$@"; }  # utime + stime
CLK_TCK=$(getconf CLK_TCK)

# Disturbance check: user CPU time the whole machine spent during a measurement, minus what
# the proxy, the backend and the load generator spent, is what other processes took. Also the
# hypervisor's steal time. Both in clock ticks, summed over all cores.
utime_ticks() { stat_ticks '$14' "$@"; }
snapshot() {  # sets SNAP_USER, SNAP_STEAL, SNAP_OURS, SNAP_CHILDREN for the processes given
  read -r SNAP_USER SNAP_STEAL < <(awk '/^cpu /{print $2 + $3, $9; exit}' /proc/stat)
  SNAP_OURS=$(utime_ticks "$@")
  # `times` (no fork, so it sees this shell's reaped children: the load generators) → ticks.
  times >"$WORK/times"
  SNAP_CHILDREN=$(awk -v hz="$CLK_TCK" 'NR == 2 { split($1, a, "m"); sub("s", "", a[2]);
    printf "%d", (a[1] * 60 + a[2]) * hz }' "$WORK/times")
}
# Sets FOREIGN and STEAL: ticks since the snapshot given as its first four arguments. Not to be
# called in a subshell (`times` would not see the load generator).
disturbance() {
  local u0=$1 s0=$2 o0=$3 c0=$4
  shift 4
  snapshot "$@"
  FOREIGN=$(( (SNAP_USER - u0) - (SNAP_OURS - o0) - (SNAP_CHILDREN - c0) ))
  STEAL=$((SNAP_STEAL - s0))
}

start_backend() {
  taskset -c "$LOAD_CORE" "$BIN" backend --port "$BACKEND_PORT" >"$WORK/backend.log" 2>&1 &
  PID[direct]=$!
  STARTED+=("${PID[direct]}")
  python3 "$PY" wait-http "http://127.0.0.1:$BACKEND_PORT/healthz" 15 \
    || die "the sample backend did not start: $(tail -5 "$WORK/backend.log")"
}

# $2: connections the proxy must hold (sizes nginx's and HAProxy's preallocated tables).
# Returns 1 (with a message) when the proxy does not answer.
start_proxy() {
  local t=$1 conns=${2:-1024} dir="$WORK/$1" limit
  limit=$(ulimit -n)
  [ "$limit" = unlimited ] && limit=1048576
  mkdir -p "$dir"
  case "$t" in
    forecourt)
      cat >"$dir/policy.yaml" <<EOF
listeners: { proxy: 127.0.0.1:${PORT[forecourt]}, admin: 127.0.0.1:$ADMIN_PORT }
defaults:
  health_check: { interval: 1h, timeout: 1s, healthy_threshold: 1 }  # probed once, at start
services:
  - name: bench
    routes: [{ path_prefix: / }]
    instances: [{ address: 127.0.0.1:$BACKEND_PORT }]
EOF
      taskset -c "$PROXY_CORE" "$BIN" run -c "$dir/policy.yaml" --threads 1 \
        >"$dir/forecourt.log" 2>&1 &
      ;;
    pingora)
      taskset -c "$PROXY_CORE" "$PASSTHROUGH" "127.0.0.1:${PORT[pingora]}" \
        "127.0.0.1:$BACKEND_PORT" 1 >"$dir/pingora.log" 2>&1 &
      ;;
    nginx)
      mkdir -p "$dir/logs" "$dir/tmp"
      cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $(( conns * 2 + 1024 < limit ? conns * 2 + 1024 : limit ));
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections $((conns + 1024)); }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  upstream backend {
    server 127.0.0.1:$BACKEND_PORT;
    keepalive 64;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:${PORT[nginx]} backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
      taskset -c "$PROXY_CORE" nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/logs/error.log" \
        -g 'daemon off;' >"$dir/stdout.log" 2>&1 &
      ;;
    haproxy)
      cat >"$dir/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $((conns + 100))
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:${PORT[haproxy]}
  default_backend be
backend be
  server s1 127.0.0.1:$BACKEND_PORT
EOF
      taskset -c "$PROXY_CORE" haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
      ;;
  esac
  PID[$t]=$!
  STARTED+=("${PID[$t]}")
  if ! python3 "$PY" wait-http "http://127.0.0.1:${PORT[$t]}/" 20; then
    say "$t did not start: $(tail -5 "$dir"/*.log 2>/dev/null)"
    return 1
  fi
  # The worker answered, so it exists; make sure pgrep lists it before measuring.
  if [ "$t" = nginx ]; then
    for _ in $(seq 50); do [ -n "$(pgrep -P "${PID[nginx]}")" ] && break; sleep 0.1; done
  fi
}

stop_proxy() {
  if [ -n "${PID[$1]:-}" ]; then stop "${PID[$1]}"; fi
  PID[$1]=""
}

path_of() {
  case "$1" in
    1k) echo /bytes/1024 ;;
    64k) echo /bytes/65536 ;;
    *) echo / ;;
  esac
}

# One measurement: warm-up, then the measured run with CPU ticks around it.
measure() {
  local t=$1 c=$2 r=$3 url
  url="http://127.0.0.1:${PORT[$1]}$(path_of "$2")"
  local pids=() out="$WORK/run-$t-$c-$r.txt" b0 b1 c0 c1
  mapfile -t pids < <(pids_of "$t")
  local ours=("${pids[@]}")
  [ "$t" = direct ] || ours+=("${PID[direct]}")
  local extra=()
  [ "$c" = close ] && extra=(-H 'Connection: close')
  if [ "$c" = fixed ]; then
    local trace="$WORK/trace-$RATE.csv"
    if [ ! -f "$trace" ]; then
      { echo "t,service,count"; for s in $(seq 0 $((DURATION_S - 1))); do echo "$s,bench,$RATE"; done; } >"$trace"
    fi
    local precise=()
    [ "$PRECISE_TIMING" -eq 1 ] && precise=(--precise-timing)
    c0=$(cpu_ticks "${pids[@]}"); b0=$(cpu_ticks "${PID[direct]}")
    snapshot "${ours[@]}"; local d0=("$SNAP_USER" "$SNAP_STEAL" "$SNAP_OURS" "$SNAP_CHILDREN")
    run_fg taskset -c "$LOAD_CORE" "$BIN" load --trace "$trace" --target "http://127.0.0.1:${PORT[$t]}" \
      --path-template / --json --timeout 5s "${precise[@]}" >"$out" 2>"$out.err" \
      || die "forecourt load failed against $t: $(tail -3 "$out.err")"
    c1=$(cpu_ticks "${pids[@]}"); b1=$(cpu_ticks "${PID[direct]}")
    disturbance "${d0[@]}" "${ours[@]}"
    python3 "$PY" record-load "$RAW" "$t" "$c" "$r" "$out" $((c1 - c0)) $((b1 - b0)) "$CLK_TCK" \
      "$FOREIGN" "$STEAL" "$RATE"
  else
    run_fg taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "${extra[@]}" "$url" >/dev/null 2>&1 || true
    c0=$(cpu_ticks "${pids[@]}"); b0=$(cpu_ticks "${PID[direct]}")
    snapshot "${ours[@]}"; local d0=("$SNAP_USER" "$SNAP_STEAL" "$SNAP_OURS" "$SNAP_CHILDREN")
    run_fg taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${extra[@]}" "$url" >"$out" 2>&1 \
      || die "wrk failed against $t: $(tail -3 "$out")"
    c1=$(cpu_ticks "${pids[@]}"); b1=$(cpu_ticks "${PID[direct]}")
    disturbance "${d0[@]}" "${ours[@]}"
    python3 "$PY" record-wrk "$RAW" "$t" "$c" "$r" "$out" $((c1 - c0)) $((b1 - b0)) "$CLK_TCK" \
      "$FOREIGN" "$STEAL"
  fi
}

note() {  # a line for the report's footnotes, and the terminal
  say "$*"
  python3 "$PY" append "$RAW" "$(python3 -c 'import json,sys; print(json.dumps({"kind":"note","text":sys.argv[1]}))' "$*")"
}

# --- the run ---------------------------------------------------------------------------------
read -ra TARGET_LIST <<<"$TARGETS"
read -ra CASE_LIST <<<"$CASES"
n_targets=${#TARGET_LIST[@]}
say "targets: ${TARGET_LIST[*]}; cases: ${CASE_LIST[*]}; $ROUNDS rounds of $DURATION; work dir $WORK"

start_backend
for r in $(seq 1 "$ROUNDS"); do
  # Fresh proxies each round, so that each round's peak RSS is its own.
  for t in "${TARGET_LIST[@]}"; do
    [ "$t" = direct ] || start_proxy "$t" || die "$t did not start"
  done
  # Rotate the order of the targets from round to round.
  order=()
  for i in $(seq 0 $((n_targets - 1))); do order+=("${TARGET_LIST[$(( (i + r - 1) % n_targets ))]}"); done
  for c in "${CASE_LIST[@]}"; do
    if [ "$c" = fixed ] && [ "$RATE" = auto ]; then
      base=$(python3 "$PY" min-rps "$RAW" small "$r")
      [ "$base" -gt 0 ] || die "--rate auto needs the small case first (or give --rate)"
      RATE=$(python3 -c "import sys; print(max(500, int(float(sys.argv[1]) * float(sys.argv[2]) // 500 * 500)))" "$base" "$RATE_FRACTION")
      note "fixed rate: $RATE requests/s (${RATE_FRACTION} of the slowest target's small-GET throughput in round $r)"
    fi
    for t in "${order[@]}"; do
      say "round $r/$ROUNDS  case $c  target $t"
      measure "$t" "$c" "$r"
    done
  done
  for t in "${TARGET_LIST[@]}"; do
    mapfile -t pids < <(pids_of "$t")
    python3 "$PY" record-rss "$RAW" "$t" "$r" "${pids[@]}"
    [ "$t" = direct ] || stop_proxy "$t"
  done
done

# --- idle keep-alive connections -------------------------------------------------------------
if [ "$IDLE_CONNS" -gt 0 ]; then
  # HAProxy wants two descriptors per connection it may hold (client and server side), even
  # for idle ones: N idle connections need a limit of about 2N plus a margin.
  want=$((IDLE_CONNS * 2 + 1024))
  if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want" 2>/dev/null || ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
  fi
  have=$(ulimit -n)
  if [ "$have" != unlimited ] && [ "$have" -lt "$want" ]; then
    fits=$(( ((have - 1024) / 2) / 500 * 500 ))
    if [ "$fits" -lt 1000 ]; then
      note "idle connections skipped: ulimit -n is $have and could not be raised to $want (needs root or a higher hard limit)"
      IDLE_CONNS=0
    else
      note "idle connections: ulimit -n could not be raised to $want (hard limit $(ulimit -Hn)); measuring $fits connections instead of $IDLE_CONNS"
      IDLE_CONNS=$fits
    fi
  fi
  if [ "$IDLE_CONNS" -gt 0 ]; then
    for t in "${TARGET_LIST[@]}"; do
      [ "$t" = direct ] && continue
      say "idle: $t, $IDLE_CONNS keep-alive connections"
      # Baseline: the proxy as configured for the rounds, warmed the same way.
      if ! start_proxy "$t"; then note "idle connections: $t did not start"; stop_proxy "$t"; continue; fi
      baseline=$(python3 "$PY" warm-rss --port "${PORT[$t]}" --settle 1 \
        --pids "$(pids_of "$t" | paste -sd,)")
      stop_proxy "$t"
      if ! start_proxy "$t" "$IDLE_CONNS"; then
        note "idle connections: $t did not start when sized for $IDLE_CONNS connections"
        stop_proxy "$t"
        continue
      fi
      run_fg taskset -c "$LOAD_CORE" python3 "$PY" idle --raw "$RAW" --target "$t" \
        --port "${PORT[$t]}" --conns "$IDLE_CONNS" --settle 2 --baseline-kib "$baseline" \
        --pids "$(pids_of "$t" | paste -sd,)" >/dev/null \
        || note "idle connections against $t failed"
      stop_proxy "$t"
    done
  fi
fi

# --- the report ------------------------------------------------------------------------------
NGINX_LOG="$WORK/nginx/logs/error.log"
if [ -s "$NGINX_LOG" ]; then
  note "nginx error log: $(wc -l <"$NGINX_LOG") lines, e.g. $(head -1 "$NGINX_LOG" | cut -c1-160)"
fi

DATE=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$OUT_DIR"
python3 - "$WORK/meta.json" <<EOF
import json, platform, subprocess, sys
def out(*cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except Exception as e:
        return f"unknown ({e})"
model = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
rev = out("git", "-C", "$ROOT", "rev-parse", "--short", "HEAD")
dirty = subprocess.run(["git", "-C", "$ROOT", "status", "--porcelain", "--untracked-files=no"],
                       capture_output=True, text=True).stdout.strip()
meta = {
    "date": "$DATE",
    "host": {"nproc": $NCPU, "cpu_model": model, "kernel": platform.release()},
    "versions": {
        "forecourt": rev + (" (modified tree)" if dirty else ""),
        "nginx": out("nginx", "-v").replace("nginx version: ", ""),
        "haproxy": " ".join(out("haproxy", "-v").split()[:3]),
        "wrk": " ".join(out("wrk", "-v").split()[:2]),
    },
    "options": {
        "rounds": $ROUNDS, "duration": "$DURATION", "warmup": "$WARMUP",
        "connections": $CONNECTIONS, "idle_conns": $IDLE_CONNS, "rate": "$RATE",
        "rate_fraction": $RATE_FRACTION, "precise_timing": bool($PRECISE_TIMING),
        "targets": "$TARGETS".split(), "cases": "$CASES".split(),
        "proxy_core": $PROXY_CORE, "load_core": $LOAD_CORE,
    },
}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
EOF
python3 "$PY" report "$RAW" "$WORK/meta.json" "$OUT_DIR/$DATE.json" "$OUT_DIR/$DATE.md"
say "wrote $OUT_DIR/$DATE.json and $OUT_DIR/$DATE.md"
