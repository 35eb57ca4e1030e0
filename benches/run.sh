#!/usr/bin/env bash
# wheelgate's benchmark (issue 5): wheelgate against nginx serving the same files, on this machine.
#
# Why it exists: the targets in issue 5 are ratios to a static file server measured in the same
# run, so that the numbers mean something on whatever machine runs them. The script generates an
# upstream index (benches/gen_upstream.py), serves it with nginx, puts wheelgate in front, and
# measures with wrk, pip, uv and curl. It prints one table and exits 0 even when a target is
# missed: it is a measurement, not a test. It exits 1 only when it cannot measure (a tool missing,
# a server that does not start).
#
# Usage: benches/run.sh            (about 2 minutes on 2 cores; see benches/README.md)
# Environment:
#   BENCH_SECONDS=5    duration of each wrk run
#   BENCH_ROUNDS=3     wrk rounds per throughput comparison, wheelgate, nginx and hyper alone
#                      alternating (the best req/s of each side is kept, latencies are the median
#                      round's)
#   BENCH_MANY_ROUNDS=5  the same for the 1,000-connection row, whose rounds vary more
#   BENCH_BIG_ROUNDS=3   cold 1 GiB transfers, each on an empty store and each followed by nginx's;
#                      the best of each side is compared
#   BENCH_REPS=5       repetitions of each install; each runs direct, cold and warm back to back,
#                      and the ratios are the median of the repetitions' own ratios
#   BENCH_KEEP=1       keep the temporary directory (logs, store, nginx root) instead of deleting it
#   BENCH_TMPDIR=/tmp  where the temporary directory is created (needs ~2.5 GB free)
#   BENCH_ONLY=big,fleet  run only these sections (comma-separated): installs, big, upload, warm,
#                      many, fleet; all of them when unset
#   BENCH_BIN=PATH     a wheelgate binary built beforehand: used as is, nothing is rebuilt (cargo is
#                      then needed only for the warm and many sections' hyper_alone)
#   BENCH_BIG_MIB=200,1024  sizes of the big artifacts (gen_upstream.py --big-mib); smaller ones
#                      make the generation quick while working on sections that do not use them
#   BENCH_FLEET_SIDECARS=5   fleet: sidecar wheelgates chained to one central wheelgate
#   BENCH_FLEET_CLIENTS=50   fleet: cold installs started at once, round-robin over the sidecars
#   BENCH_FLEET_CLIENT=uv    fleet: the client, uv or pip
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCHES="$REPO/benches"
BIN=${BENCH_BIN:-"$REPO/target/release/wheelgate"}
SECONDS_PER_RUN=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
MANY_ROUNDS=${BENCH_MANY_ROUNDS:-5}
REPS=${BENCH_REPS:-5}
PIP_ACCEPT='application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01'

# True when the section is to run (BENCH_ONLY unset, or naming it).
want() { [ -z "${BENCH_ONLY:-}" ] || [[ ",$BENCH_ONLY," == *",$1,"* ]]; }

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- tools ---------------------------------------------------------------------------------------
ensure_tools() {
    local missing=()
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    command -v wrk >/dev/null || missing+=(wrk)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]} from the Debian packages"
        command -v apt-get >/dev/null || die "nginx and wrk are missing and there is no apt-get: install them and rerun"
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq || die "apt-get update failed: install nginx and wrk by hand and rerun"
        # The package manager starts nginx's system service on some machines; ours is separate.
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk \
            || "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk \
            || die "could not install nginx and wrk with apt-get: install them by hand and rerun"
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    local tools=(curl python3)
    # cargo builds wheelgate unless BENCH_BIN names one, and hyper_alone for the throughput rows.
    if [ -z "${BENCH_BIN:-}" ] || want warm || want many; then tools+=(cargo); fi
    want fleet && tools+=(flock)
    for tool in "${tools[@]}"; do
        command -v "$tool" >/dev/null || die "$tool is required and not on PATH"
    done
    # The real interpreter, not a pyenv shim: the clients run with an empty environment and a
    # temporary HOME, where a shim cannot find its configuration.
    PY=$(python3 -c 'import sys; print(sys.executable)') || die "python3 cannot report its interpreter"
}

ensure_binary() {
    if [ -n "${BENCH_BIN:-}" ]; then
        # A binary built elsewhere (another worktree, a release): measured as given.
        [ -x "$BIN" ] || die "BENCH_BIN=$BIN is not an executable"
    elif [ ! -x "$BIN" ] || [ -n "$(find "$REPO/src" "$REPO/Cargo.toml" "$REPO/Cargo.lock" -newer "$BIN" -print -quit)" ]; then
        say "building wheelgate (cargo build --release; a few minutes from clean)"
        (cd "$REPO" && cargo build --release --bin wheelgate) >&2 || die "cargo build --release failed"
    fi
    # Only the warm and many sections start hyper_alone; the others need no build at all.
    want warm || want many || return 0
    # The ceiling of the throughput rows (benches/hyper_alone.rs). cargo decides whether it is
    # fresh and names the executable, which has a hash in its file name.
    say "building benches/hyper_alone.rs (cargo build --release --bench hyper_alone)"
    HYPER_ALONE=$(cd "$REPO" && cargo build --release --bench hyper_alone --message-format=json-render-diagnostics \
        | "$PY" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "hyper_alone" and m.get("executable"):
        print(m["executable"])
') || die "cargo build --release --bench hyper_alone failed"
    [ -x "$HYPER_ALONE" ] || die "cargo did not report the hyper_alone executable"
}

# uv, installed with the machine's normal pip settings into a venv kept under target/ so later
# runs reuse it.
ensure_uv() {
    local venv="$REPO/target/bench-pyclients"
    if [ ! -f "$venv/.installed" ]; then
        say "installing uv into $venv"
        rm -rf "$venv"
        "$PY" -m venv "$venv" || die "cannot create a venv at $venv"
        "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --progress-bar off uv >&2 \
            || die "pip install uv failed (it needs the machine's usual package index)"
        touch "$venv/.installed"
    fi
    UV="$venv/bin/uv"
}

# --- processes -----------------------------------------------------------------------------------
NGINX_PID=""
WG_PID=""
HYPER_PIDS=()
FLEET_PIDS=()   # the fleet's central and sidecars
LAUNCHED_PID="" # the last wheelgate started, in case it never said where it listens
cleanup() {
    [ -n "$WG_PID" ] && kill "$WG_PID" 2>/dev/null && wait "$WG_PID" 2>/dev/null
    local pid
    for pid in "${HYPER_PIDS[@]}" "${FLEET_PIDS[@]}" $LAUNCHED_PID; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
        if [ "${BENCH_KEEP:-0}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # url: wait until it answers 200, at most 10 s
    local i
    for i in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

start_nginx() {
    DIRECT_PORT=$(free_port)
    UP_PORT=$(free_port)
    mkdir -p "$WORK/nginx/tmp"
    # Two servers on the same root: clients and wrk use DIRECT (the reference), wheelgate uses UP,
    # whose access log therefore counts exactly wheelgate's upstream requests.
    cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 2;
worker_rlimit_nofile 16384;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    types { text/html html; application/json json; }
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$DIRECT_PORT backlog=4096;
        root $WWW;
        access_log $WORK/nginx/direct.log;
    }
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        root $WWW;
        access_log $WORK/nginx/upstream.log;
    }
}
EOF
    "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' 2>>"$WORK/nginx/error.log" &
    NGINX_PID=$!
    wait_http "http://127.0.0.1:$DIRECT_PORT/simple/" || die "nginx did not start: $(tail -5 "$WORK/nginx/error.log")"
    : >"$WORK/nginx/direct.log"
    : >"$WORK/nginx/upstream.log"
    DIRECT="http://127.0.0.1:$DIRECT_PORT"
}

WG_RUN=0
start_wheelgate() { # store directory
    local store=$1 log
    WG_RUN=$((WG_RUN + 1))
    log="$WORK/wheelgate-$WG_RUN.log"
    cat >"$WORK/wheelgate-$WG_RUN.toml" <<EOF
[server]
listen = "127.0.0.1:0"
default_repository = "pypi"
max_upload_size = "1GiB"

[store]
path = "$store"

[[repository]]
name = "pypi"
type = "remote"
url = "http://127.0.0.1:$UP_PORT/simple/"

# The upload row publishes here; the other rows never touch it.
[[repository]]
name = "internal"
type = "hosted"

# The group rows: the hosted repository first, as users configure it, so that every page of the
# remote is asked of both members.
[[repository]]
name = "all"
type = "group"
members = ["internal", "pypi"]

[[user]]
name = "bench"
password_hash = "$BENCH_HASH"
roles = ["read", "publish"]
EOF
    launch_wheelgate "$WORK/wheelgate-$WG_RUN.toml" "$log"
    WG_PID=$LAUNCHED_PID
    WG=$LAUNCHED_URL
}

# Starts wheelgate on a configuration and waits for its address; sets LAUNCHED_PID and
# LAUNCHED_URL (globals, not printed: in a command substitution the server would be a subshell's
# child, out of cleanup's reach). The caller records the PID where cleanup finds it.
launch_wheelgate() { # config log
    local config=$1 log=$2
    # wheelgate's default log level: it is part of what is measured (one access-log line per
    # request), and "listening on" is logged at info.
    : >"$log" # before the server opens it, for the wait below
    env -u WHEELGATE_LOG "$BIN" serve --config "$config" 2>"$log" >&2 &
    LAUNCHED_PID=$!
    local i addr=""
    for i in $(seq 200); do
        addr=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -o 'listening on http://[0-9.:]*' | head -1 | sed 's|listening on http://||')
        [ -n "$addr" ] && break
        kill -0 "$LAUNCHED_PID" 2>/dev/null || die "wheelgate exited at start: $(tail -5 "$log")"
        sleep 0.1
    done
    [ -n "$addr" ] || die "wheelgate did not log 'listening on http://ADDR' within 20 s: $(tail -5 "$log")"
    LAUNCHED_URL="http://$addr"
}

stop_wheelgate() {
    [ -n "$WG_PID" ] || return 0
    kill -TERM "$WG_PID" 2>/dev/null
    wait "$WG_PID" 2>/dev/null
    WG_PID=""
}

# Starts benches/hyper_alone.rs serving a file; sets HYPER_URL to its base URL. (Not printed:
# in a command substitution the server would be a subshell's child, out of cleanup's reach.)
start_hyper_alone() { # file content-type
    local portfile
    portfile=$(mktemp -p "$WORK")
    "$HYPER_ALONE" "$1" "$2" >"$portfile" 2>>"$WORK/hyper_alone.log" &
    HYPER_PIDS+=($!)
    local i
    for i in $(seq 100); do
        [ -s "$portfile" ] && break
        sleep 0.1
    done
    [ -s "$portfile" ] || die "hyper_alone did not start: $(tail -3 "$WORK/hyper_alone.log")"
    HYPER_URL="http://127.0.0.1:$(cat "$portfile")"
}

proc_kb() { # field of /proc/<wheelgate>/status, in KiB
    awk -v f="$1:" '$1 == f { print $2 }' "/proc/$WG_PID/status"
}

upstream_lines() { wc -l <"$WORK/nginx/upstream.log"; }

# Waits (up to 60 s) until wheelgate answers a HEAD for the file at the URL from its store.
wait_hit() { # url
    local i
    for i in $(seq 600); do
        curl -sI "$1" | grep -qi '^x-wheelgate-cache: hit' && return 0
        sleep 0.1
    done
    say "warning: $1 was not stored within 60 s"
}

# The absolute URL wheelgate's JSON page gives for a file of a project.
wg_file_url() { # project filename [repository path, default /simple]
    local base="$WG${3:-/simple}/$1/"
    curl -sf -H 'Accept: application/vnd.pypi.simple.v1+json' "$base" | "$PY" -c '
import json, sys, urllib.parse
page_url, filename = sys.argv[1], sys.argv[2]
for f in json.load(sys.stdin)["files"]:
    if f["filename"] == filename:
        print(urllib.parse.urljoin(page_url, f["url"]).split("#")[0]); break
' "$base" "$2"
}

# --- measurements --------------------------------------------------------------------------------
# wrk with our reporter; prints "rps p50_us p99_us errors bytes_per_req" where errors are socket
# errors plus responses with status >= 400.
run_wrk() { # connections url [header]
    local conns=$1 url=$2 out
    local args=(-t2 -c"$conns" -d"${SECONDS_PER_RUN}s" --latency --timeout 10s -s "$BENCHES/wrk_report.lua")
    [ $# -ge 3 ] && args+=(-H "$3")
    out=$(wrk "${args[@]}" "$url" 2>&1)
    echo "$out" >>"$WORK/wrk.log"
    echo "$out" | awk '/^WRK / {
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%s %s %s %d %s\n", v["rps"], v["p50_us"], v["p99_us"],
            v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"], v["bytes_per_req"] }'
}

# Times one isolated install; prints seconds, or "FAIL". The client sees only PATH, a fresh HOME
# and settings that disable every configuration file, like the integration tests.
timed_install() { # pip|uv index_url
    local client=$1 url=$2 home target start end rc
    home=$(mktemp -d "$WORK/home.XXXXXX")
    target="$home/target"
    start=$EPOCHREALTIME
    if [ "$client" = pip ]; then
        env -i PATH="$PATH" HOME="$home" PIP_CONFIG_FILE=/dev/null PYTHONDONTWRITEBYTECODE=1 \
            "$PY" -m pip install --no-cache-dir --disable-pip-version-check --no-input --progress-bar off \
            --target "$target" --index-url "$url" "$REQUIREMENT" >"$home/log" 2>&1
    else
        env -i PATH="$PATH" HOME="$home" UV_NO_CONFIG=1 UV_PYTHON_DOWNLOADS=never PYTHONDONTWRITEBYTECODE=1 \
            "$UV" pip install --no-cache --no-config --python "$PY" \
            --target "$target" --index-url "$url" "$REQUIREMENT" >"$home/log" 2>&1
    fi
    rc=$?
    end=$EPOCHREALTIME
    if [ $rc -ne 0 ] || [ ! -d "$target/bench_app" ]; then
        say "$client install from $url failed (exit $rc): $(tail -3 "$home/log")"
        cat "$home/log" >>"$WORK/install-failures.log"
        echo FAIL
    else
        awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
    fi
    rm -rf "$home"
}

median_of() { printf '%s\n' "$@" | grep -v -e FAIL -e n/a | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) print "FAIL"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# The ratio of each repetition's times (a / b, pairwise), one per line.
pair_ratios() { # "a1 a2 ..." "b1 b2 ..."
    paste <(printf '%s\n' $1) <(printf '%s\n' $2) | while read -r a b; do ratio "$a" "$b"; done
}

# --- the fleet -----------------------------------------------------------------------------------
# README's "At fleet scale": sidecars whose remote repository is one central wheelgate, which
# alone asks the upstream (nginx's UP server, whose log therefore counts the fleet's upstream
# requests). The processes are in FLEET_PIDS for cleanup; SIDECARS holds the sidecars' URLs.
SIDECARS=()
CENTRAL_PID=""

# The central: the nginx upstream behind a wheelgate that only its `sidecar` user, a token user,
# may read (as tests/it/chaining.rs sets it up). Sets CENTRAL, CENTRAL_PID and CENTRAL_TOKEN.
start_central() { # dir
    local dir=$1
    mkdir -p "$dir"
    CENTRAL_TOKEN=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')
    printf '%s\n' "$CENTRAL_TOKEN" >"$dir/sidecar-token"
    cat >"$dir/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:0"
default_repository = "pypi"

[store]
path = "$dir/store"

# Sidecars read with their token; nobody else does (the metrics too need it).
[access]
anonymous_read = false

[[repository]]
name = "pypi"
type = "remote"
url = "http://127.0.0.1:$UP_PORT/simple/"

[[user]]
name = "sidecar"
token_file = "$dir/sidecar-token"
roles = ["read"]
EOF
    launch_wheelgate "$dir/proxy.toml" "$WORK/wheelgate-fleet-central.log"
    CENTRAL_PID=$LAUNCHED_PID
    CENTRAL=$LAUNCHED_URL
    FLEET_PIDS+=("$CENTRAL_PID")
}

# A sidecar with an empty store in dir, its default repository the central, with the central's
# token in [repository.auth] (sent as __token__). Appends its URL to SIDECARS.
start_sidecar() { # dir
    local dir=$1
    mkdir -p "$dir"
    printf '%s\n' "$CENTRAL_TOKEN" >"$dir/central-token"
    cat >"$dir/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:0"
default_repository = "pypi"

[store]
path = "$dir/store"

[[repository]]
name = "pypi"
type = "remote"
url = "$CENTRAL/simple/"

[repository.auth]
password_file = "$dir/central-token"
EOF
    launch_wheelgate "$dir/proxy.toml" "$WORK/wheelgate-fleet-$(basename "$dir").log"
    FLEET_PIDS+=("$LAUNCHED_PID")
    SIDECARS+=("$LAUNCHED_URL")
}

# Stops the sidecars, and the central too with "all", gracefully as stop_wheelgate does.
stop_fleet() { # [all]
    local pid keep=()
    for pid in "${FLEET_PIDS[@]}"; do
        if [ "${1:-}" != all ] && [ "$pid" = "$CENTRAL_PID" ]; then keep+=("$pid"); continue; fi
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    FLEET_PIDS=("${keep[@]}")
    SIDECARS=()
}

# A process's CPU time so far (utime + stime of all its threads), in clock ticks: fields 14 and
# 15 of /proc/PID/stat, counted after the ") " that ends the command name.
proc_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# The CPU ticks of a process's children it has waited for (fields 16 and 17, cutime and cstime).
child_ticks() { awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$1/stat"; }
# nginx's workers' CPU ticks, all together.
nginx_ticks() {
    local pid total=0
    for pid in $(pgrep -P "$NGINX_PID"); do total=$((total + $(proc_ticks "$pid"))); done
    echo "$total"
}
central_ticks() { proc_ticks "$CENTRAL_PID"; }

# Page and file body bytes the central has sent (wheelgate_served_bytes_total, both sources).
central_served_bytes() {
    curl -sf -u "__token__:$CENTRAL_TOKEN" "$CENTRAL/-/metrics" \
        | awk '/^wheelgate_served_bytes_total[{ ]/ { b += $NF } END { printf "%.0f\n", b }'
}

# Upstream requests after line `from` of nginx's upstream log whose path matches regex; prints
# "requests distinct_paths".
upstream_counts() { # from regex
    tail -n +"$(($1 + 1))" "$WORK/nginx/upstream.log" \
        | awk -v re="$2" '$7 ~ re { n++; if (!seen[$7]++) d++ } END { print n + 0, d + 0 }'
}

# Runs FLEET_CLIENTS cold installs at once, client i through index i mod (number of indexes),
# each isolated as timed_install isolates it. They wait on a lock the script holds until every one of them has
# started, so that they hit the fleet together. Sets FLEET_WALL (seconds from the release to the
# last exit) and FLEET_FAILED; client i's time (or FAIL) is in $WORK/fleet/TAG/i.
run_fleet_clients() { # tag index_url...
    local tag=$1
    shift
    local urls=("$@") dir="$WORK/fleet/$tag" lock="$WORK/fleet/$tag.lock" fd i pids=() start
    mkdir -p "$dir/ready"
    exec {fd}>"$lock"
    flock -x "$fd"
    for ((i = 0; i < FLEET_CLIENTS; i++)); do
        (
            exec {fd}>&-
            touch "$dir/ready/$i"
            flock -s "$lock" true
            timed_install "$FLEET_CLIENT" "${urls[i % ${#urls[@]}]}" >"$dir/$i"
        ) &
        pids+=($!)
    done
    # A client that reaches flock after the release goes at once: nothing waits forever.
    until [ "$(find "$dir/ready" -type f | wc -l)" -ge "$FLEET_CLIENTS" ]; do sleep 0.05; done
    sleep 0.2
    start=$EPOCHREALTIME
    flock -u "$fd"
    exec {fd}>&-
    wait "${pids[@]}"
    FLEET_WALL=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f\n", b - a }')
    local times ok
    mapfile -t times < <(cat "$dir"/[0-9]*)
    ok=$(printf '%s\n' "${times[@]}" | grep -v FAIL | sort -g)
    FLEET_FAILED=$(printf '%s\n' "${times[@]}" | grep -c FAIL)
    say "fleet $tag: $FLEET_CLIENTS installs in ${FLEET_WALL}s; per client (s): min $(head -1 <<<"$ok"), median $(median_of "${times[@]}"), max $(tail -1 <<<"$ok"); $FLEET_FAILED failed"
}

# The CPU time of the sidecars so far, in clock ticks.
sidecar_ticks() {
    local pid total=0
    for pid in "${FLEET_PIDS[@]}"; do
        [ "$pid" = "$CENTRAL_PID" ] || total=$((total + $(proc_ticks "$pid")))
    done
    echo "$total"
}

# A row of the central's CPU seconds per GB it served, from tick and byte deltas over a run.
cpu_row() { # label ticks bytes
    local hz per
    hz=$(getconf CLK_TCK)
    per=$(awk -v t="$2" -v b="$3" -v hz="$hz" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.1f\n", (t / hz) / (b / 1e9) }')
    row "$1" "$per" "$(awk -v t="$2" -v b="$3" -v hz="$hz" 'BEGIN { printf "%.2f s CPU, %.1f MB served", t / hz, b / 1e6 }')" "-" "-" "info"
}

# --- the table -----------------------------------------------------------------------------------
ROWS=()
# row metric wheelgate reference ratio target verdict
row() { ROWS+=("$1|$2|$3|$4|$5|$6"); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "FAIL" || b == "FAIL" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'; }
verdict() { # value op limit  (op: ge, le, lt, eq)
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
        if (v == "n/a" || v == "FAIL" || v == "") { print "FAIL"; exit }
        ok = (op == "ge" && v + 0 >= t + 0) || (op == "le" && v + 0 <= t + 0) ||
             (op == "lt" && v + 0 < t + 0) || (op == "eq" && v + 0 == t + 0)
        print (ok ? "pass" : "FAIL") }'
}
ms() { awk -v u="$1" 'BEGIN { printf "%.2f ms\n", u / 1000 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB\n", k / 1024 }'; }

print_table() {
    {
        echo "metric|wheelgate|reference|ratio|target|result"
        echo "------|---------|---------|-----|------|------"
        printf '%s\n' "${ROWS[@]}"
    } | column -t -s '|' -o ' | '
}

# --- main ----------------------------------------------------------------------------------------
main() {
    ensure_tools
    ensure_binary
    ensure_uv
    # Room for 1,000 client connections plus the servers' own (wrk, nginx and wheelgate inherit it).
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 4096 ] || say "warning: ulimit -n is $(ulimit -n); -c1000 may report errors"

    WORK=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/wheelgate-bench.XXXXXX") || die "cannot create a temporary directory"
    # nginx's workers may run as another user (www-data when started by root): the synthetic
    # upstream must be readable by them.
    chmod 755 "$WORK"
    WWW="$WORK/www"
    say "generating the upstream in $WWW"
    "$PY" "$BENCHES/gen_upstream.py" "$WWW" --manifest "$WORK/manifest.json" --big-mib "${BENCH_BIG_MIB:-200,1024}" || die "generating the upstream failed"
    manifest() { "$PY" -c 'import json,sys; m=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"m": m}))' "$WORK/manifest.json" "$1"; }
    REQUIREMENT=$(manifest 'm["requirement"]')
    HOT_PROJECT=$(manifest 'm["hot_wheel"]["project"]')
    HOT_FILE=$(manifest 'm["hot_wheel"]["filename"]')
    HOT_PATH=$(manifest 'm["hot_wheel"]["path"]')
    PAGE_PROJECT=$(manifest 'm["page_project"]')
    BIG_FILE=$(manifest 'm["big"][-1]["filename"]')
    BIG_PATH=$(manifest 'm["big"][-1]["path"]')
    MID_FILE=$(manifest 'm["big"][0]["filename"]')
    MID_PATH=$(manifest 'm["big"][0]["path"]')

    # The user the upload row publishes as, and the 200 MiB wheel it publishes.
    BENCH_PASSWORD=bench-upload-password
    BENCH_HASH=$(printf '%s\n' "$BENCH_PASSWORD" | "$BIN" hash-password) || die "wheelgate hash-password failed"
    UPLOAD_WHEEL="$WORK/bench_upload-1.0.0-py3-none-any.whl"
    "$PY" - "$UPLOAD_WHEEL" <<'PYEOF' || die "generating the upload wheel failed"
import os, sys, zipfile
meta = "Metadata-Version: 2.1\nName: bench-upload\nVersion: 1.0.0\n\n"
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_STORED) as wheel:
    with wheel.open("bench_upload/data.bin", "w", force_zip64=True) as data:
        for _ in range(200):
            data.write(os.urandom(1 << 20))
    wheel.writestr("bench_upload-1.0.0.dist-info/METADATA", meta)
    wheel.writestr("bench_upload-1.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    wheel.writestr("bench_upload-1.0.0.dist-info/RECORD", "")
PYEOF

    start_nginx
    say "nginx: $DIRECT (reference), upstream for wheelgate on port $UP_PORT"

    # Sections run in this order; each starts its own wheelgate process. The warm rows use the
    # store the last uv install left (or an empty one when installs are skipped).
    local store="$WORK/store-uv-$REPS"
    if want installs; then
    # 4. installs. Minimum upstream requests: what the client itself fetched from nginx directly
    # (each page and each file once; clients run without a cache).
    local client url
    for client in pip uv; do
        local direct=() cold=() warm=() before lines min cold_up=() warm_up=() i
        # Each repetition runs direct, cold and warm back to back, so that whatever drifts during
        # the run (disk writeback of earlier stores, the page cache) weighs on all three alike.
        for i in $(seq "$REPS"); do
            before=$(wc -l <"$WORK/nginx/direct.log")
            direct+=("$(timed_install "$client" "$DIRECT/simple/")")
            if [ "$i" = 1 ]; then
                min=$(tail -n +"$((before + 1))" "$WORK/nginx/direct.log" | awk '{ print $7 }' | sort -u | wc -l)
            fi
            stop_wheelgate
            start_wheelgate "$WORK/store-$client-$i"
            before=$(upstream_lines)
            cold+=("$(timed_install "$client" "$WG/simple/")")
            cold_up+=($(($(upstream_lines) - before)))
            before=$(upstream_lines)
            warm+=("$(timed_install "$client" "$WG/simple/")")
            warm_up+=($(($(upstream_lines) - before)))
        done
        say "$client: direct ${direct[*]} s, cold ${cold[*]} s, warm ${warm[*]} s; upstream requests cold ${cold_up[*]}, warm ${warm_up[*]} (minimum $min)"
        # Each repetition's direct, cold and warm installs run back to back, so their ratios are
        # taken pairwise (whatever drifts during the run weighs on both sides of each) and the
        # median of them is reported, with the median times beside it.
        local d c w r
        d=$(median_of "${direct[@]}"); c=$(median_of "${cold[@]}"); w=$(median_of "${warm[@]}")
        r=$(median_of $(pair_ratios "${cold[*]}" "${direct[*]}"))
        say "$client: cold/direct per repetition: $(pair_ratios "${cold[*]}" "${direct[*]}" | tr '\n' ' ')"
        row "$client install, cold (s)" "$c" "$d" "$r" "<= 1.10x" "$(verdict "$r" le 1.10)"
        r=$(median_of $(pair_ratios "${warm[*]}" "${direct[*]}"))
        say "$client: warm/direct per repetition: $(pair_ratios "${warm[*]}" "${direct[*]}" | tr '\n' ' ')"
        row "$client install, warm (s)" "$w" "$d" "$r" "<= 1.00x" "$(verdict "$r" le 1.00)"
        local worst_cold worst_warm
        worst_cold=$(printf '%s\n' "${cold_up[@]}" | sort -g | tail -1)
        worst_warm=$(printf '%s\n' "${warm_up[@]}" | sort -g | tail -1)
        row "$client upstream requests, cold" "$worst_cold" "$min (minimum)" "$(ratio "$worst_cold" "$min")" "= minimum" "$(verdict "$worst_cold" eq "$min")"
        row "$client upstream requests, warm" "$worst_warm" "0 (pages fresh)" "-" "= 0" "$(verdict "$worst_warm" eq 0)"
    done

    fi

    if want big; then
    # 5. the 1 GiB artifact, cold: BENCH_BIG_ROUNDS rounds (default 3), each on a fresh process and
    # an empty store (so VmHWM is that transfer's peak), each followed by nginx serving the same
    # file straight from its page cache; the best of each is compared (single transfers on a shared
    # VM vary by half). Then warm on another fresh process, on the last round's store.
    local big_url mid_url out ttfb total size code ref_ttfb round
    local best_total="" best_ttfb="" best_ref="" best_ref_ttfb="" hwm_cold=0 hwm
    local big_store="$WORK/store-big"
    # The floor: benches/relay_floor.py does only what a cold fetch must (receive, sha256, write,
    # send, the last bytes withheld until the digest matches) and reports its CPU. Each round
    # compares wheelgate's CPU over its transfer with the relay's over the same file from nginx.
    local relay_port ticks0 others0 others cpu relay_cpu floor hz
    local best_cpu="" best_relay_cpu="" best_floor=""
    hz=$(getconf CLK_TCK)
    relay_port=$(free_port)
    "$PY" "$BENCHES/relay_floor.py" "$relay_port" "$DIRECT_PORT" "$WORK" >"$WORK/relay-floor.log" 2>&1 &
    HYPER_PIDS+=($!) # cleanup stops it with the hyper_alone servers
    for round in $(seq "${BENCH_BIG_ROUNDS:-3}"); do
        stop_wheelgate
        rm -rf "$big_store"
        start_wheelgate "$big_store"
        big_url=$(wg_file_url bench-huge "$BIG_FILE")
        [ -n "$big_url" ] || die "wheelgate's page for bench-huge does not list $BIG_FILE"
        ticks0=$(proc_ticks "$WG_PID")
        others0=$(($(child_ticks $$) + $(nginx_ticks)))
        out=$(curl -s -o /dev/null -w '%{time_starttransfer} %{time_total} %{size_download} %{http_code}' "$big_url")
        cpu=$(awk -v a="$ticks0" -v b="$(proc_ticks "$WG_PID")" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')
        others=$(awk -v a="$others0" -v b="$(($(child_ticks $$) + $(nginx_ticks)))" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')
        read -r ttfb total size code <<<"$out"
        hwm=$(proc_kb VmHWM)
        [ "$hwm" -gt "$hwm_cold" ] && hwm_cold=$hwm
        say "1 GiB cold, round $round: HTTP $code, $size bytes, first byte ${ttfb}s, total ${total}s, CPU ${cpu}s (curl and nginx ${others}s), VmHWM $hwm KiB"
        [ "$code" = 200 ] && [ "$size" = "$(manifest 'm["big"][-1]["size"]')" ] || say "warning: the cold 1 GiB transfer was incomplete (HTTP $code, $size bytes)"
        # The commit (an fsync of the whole file) runs after the client has its bytes: let it end,
        # and every dirty page reach the disk, so no round pays for the one before.
        wait_hit "$big_url"
        sync
        read -r ref_ttfb ref_total <<<"$(curl -s -o /dev/null -w '%{time_starttransfer} %{time_total}' "$DIRECT$BIG_PATH")"
        say "1 GiB from nginx, round $round: first byte ${ref_ttfb}s, total ${ref_total}s"
        curl -s -o /dev/null "http://127.0.0.1:$relay_port/$(manifest 'm["big"][-1]["sha256"]')$BIG_PATH"
        # The relay reports once it has closed its file, which can be after curl has the bytes.
        for _ in $(seq 300); do
            [ "$(grep -c '^cpu ' "$WORK/relay-floor.log")" -ge "$round" ] && break
            sleep 0.1
        done
        relay_cpu=$(awk -v n="$round" '$1 == "cpu" && ++k == n && $5 == "ok" { print $2 }' "$WORK/relay-floor.log")
        [ -n "$relay_cpu" ] || die "the floor relay did not relay the 1 GiB file: $(tail -3 "$WORK/relay-floor.log")"
        # The least wall time this transfer could take here: the relay's CPU, plus what curl and
        # nginx spent on wheelgate's transfer, spread perfectly over the cores.
        floor=$(awk -v r="$relay_cpu" -v o="$others" -v n="$(nproc)" 'BEGIN { printf "%.2f", (r + o) / n }')
        say "1 GiB through the floor relay, round $round: CPU ${relay_cpu}s; floor for the transfer on $(nproc) cores ${floor}s"
        sync
        best_cpu=$(printf '%s\n' $best_cpu "$cpu" | sort -g | head -1)
        best_relay_cpu=$(printf '%s\n' $best_relay_cpu "$relay_cpu" | sort -g | head -1)
        best_floor=$(printf '%s\n' $best_floor "$floor" | sort -g | head -1)
        best_total=$(printf '%s\n' $best_total "$total" | sort -g | head -1)
        best_ttfb=$(printf '%s\n' $best_ttfb "$ttfb" | sort -g | head -1)
        best_ref=$(printf '%s\n' $best_ref "$ref_total" | sort -g | head -1)
        best_ref_ttfb=$(printf '%s\n' $best_ref_ttfb "$ref_ttfb" | sort -g | head -1)
    done
    local ttfb_ms ref_ms
    ttfb_ms=$(awk -v s="$best_ttfb" 'BEGIN { printf "%.1f", s * 1000 }')
    ref_ms=$(awk -v s="$best_ref_ttfb" 'BEGIN { printf "%.1f", s * 1000 }')
    row "1 GiB cold: time to first byte (ms)" "$ttfb_ms" "$ref_ms (nginx)" "$(ratio "$ttfb_ms" "$ref_ms")" "< 50 ms" "$(verdict "$ttfb_ms" lt 50)"
    local cold_ratio
    cold_ratio=$(ratio "$best_total" "$best_ref")
    row "1 GiB cold: transfer time (s)" "$(printf '%.2f' "$best_total")" "$(printf '%.2f' "$best_ref") (nginx)" "$cold_ratio" "<= 2.00x" "$(verdict "${cold_ratio%x}" le 2.00)"
    row "1 GiB cold: CPU (s)" "$best_cpu" "$(printf '%.2f' "$best_relay_cpu") (floor relay)" "$(ratio "$best_cpu" "$best_relay_cpu")" "-" "info"
    row "1 GiB cold: time against the floor (s)" "$(printf '%.2f' "$best_total")" "$best_floor (floor, $(nproc) cores)" "$(ratio "$best_total" "$best_floor")" "-" "info"
    row "1 GiB cold: peak RSS (VmHWM)" "$(mib "$hwm_cold")" "-" "-" "< 64 MiB" "$(verdict "$hwm_cold" lt 65536)"
    # The 200 MB artifact, cold: transfer time through wheelgate against nginx direct.
    local mid_total mid_ref
    mid_url=$(wg_file_url bench-huge "$MID_FILE")
    [ -n "$mid_url" ] || die "wheelgate's page for bench-huge does not list $MID_FILE"
    mid_total=$(curl -s -o /dev/null -w '%{time_total}' "$mid_url")
    wait_hit "$mid_url"
    sync
    mid_ref=$(curl -s -o /dev/null -w '%{time_total}' "$DIRECT$MID_PATH")
    row "200 MiB cold: transfer time (s)" "$(printf '%.2f' "$mid_total")" "$(printf '%.2f' "$mid_ref") (nginx)" "$(ratio "$mid_total" "$mid_ref")" "-" "info"
    stop_wheelgate
    start_wheelgate "$big_store"
    big_url=$(wg_file_url bench-huge "$BIG_FILE")
    out=$(curl -s -D "$WORK/big-warm.headers" -o /dev/null -w '%{time_starttransfer} %{time_total} %{size_download} %{http_code}' "$big_url")
    read -r ttfb total size code <<<"$out"
    local hwm_warm; hwm_warm=$(proc_kb VmHWM)
    say "1 GiB warm: HTTP $code, $size bytes, first byte ${ttfb}s, total ${total}s, VmHWM $hwm_warm KiB, $(grep -i '^x-wheelgate-cache' "$WORK/big-warm.headers" | tr -d '\r')"
    row "1 GiB warm: transfer time (s)" "$(printf '%.2f' "$total")" "$(printf '%.2f' "$best_ref") (nginx)" "$(ratio "$total" "$best_ref")" "-" "info"
    row "1 GiB warm: peak RSS (VmHWM)" "$(mib "$hwm_warm")" "-" "-" "< 64 MiB" "$(verdict "$hwm_warm" lt 65536)"
    stop_wheelgate
    rm -rf "$big_store"

    fi

    if want upload; then
    # 7. a 200 MiB upload to the hosted repository, on a fresh process (so VmHWM is the upload's
    # peak): the body is streamed to a temporary file, hashed three ways, its METADATA read, and
    # the file fsynced and recorded before the 200.
    stop_wheelgate
    start_wheelgate "$WORK/store-upload"
    local upload_out upload_code upload_total hwm_upload copy_total
    upload_out=$(curl -s -o "$WORK/upload.body" -w '%{http_code} %{time_total}' -u "bench:$BENCH_PASSWORD" \
        -F ':action=file_upload' -F 'protocol_version=1' -F 'name=bench-upload' -F 'version=1.0.0' \
        -F 'filetype=bdist_wheel' -F "content=@$UPLOAD_WHEEL" "$WG/internal/")
    read -r upload_code upload_total <<<"$upload_out"
    hwm_upload=$(proc_kb VmHWM)
    say "200 MiB upload: HTTP $upload_code in ${upload_total}s, VmHWM $hwm_upload KiB: $(head -c 200 "$WORK/upload.body")"
    # What the bytes cost on their own: one read, one sha256 and one fsynced copy of the file.
    copy_total=$("$PY" - "$UPLOAD_WHEEL" "$WORK/upload-copy" <<'PYEOF'
import hashlib, os, sys, time
start = time.monotonic()
digest = hashlib.sha256()
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as dst:
    while block := src.read(1 << 20):
        digest.update(block)
        dst.write(block)
    dst.flush()
    os.fsync(dst.fileno())
print(f"{time.monotonic() - start:.2f}")
PYEOF
)
    rm -f "$WORK/upload-copy"
    if [ "$upload_code" = 200 ]; then
        row "200 MiB upload: time (s)" "$(printf '%.2f' "$upload_total")" "$copy_total (hash + fsynced copy)" "$(ratio "$upload_total" "$copy_total")" "-" "info"
        row "200 MiB upload: peak RSS (VmHWM)" "$(mib "$hwm_upload")" "-" "-" "< 64 MiB" "$(verdict "$hwm_upload" lt 65536)"
    else
        row "200 MiB upload: time (s)" "HTTP $upload_code" "-" "-" "-" "FAIL"
    fi
    fi

    if want warm || want many; then
    stop_wheelgate
    start_wheelgate "$store"

    # 1-3. warm throughput and latency at 64 connections.
    local hot_url
    hot_url=$(wg_file_url "$HOT_PROJECT" "$HOT_FILE")
    [ -n "$hot_url" ] || die "wheelgate's page for $HOT_PROJECT does not list $HOT_FILE"
    curl -sf -o /dev/null "$hot_url" && curl -sf -o /dev/null "$hot_url" || die "wheelgate does not serve $hot_url"
    # The same page bytes as static files for nginx: what wheelgate renders, saved into its root.
    mkdir -p "$WWW/static"
    curl -sf -H "Accept: $PIP_ACCEPT" "$WG/simple/$PAGE_PROJECT/" -o "$WWW/static/page.json" || die "wheelgate does not serve /simple/$PAGE_PROJECT/"
    curl -sf -H 'Accept: text/html' "$WG/simple/$PAGE_PROJECT/" -o "$WWW/static/page.html" || die "wheelgate does not serve /simple/$PAGE_PROJECT/ as HTML"
    say "page sizes: JSON $(wc -c <"$WWW/static/page.json") bytes, HTML $(wc -c <"$WWW/static/page.html") bytes"
    local hyper_wheel hyper_json hyper_html
    start_hyper_alone "$WWW$HOT_PATH" application/octet-stream; hyper_wheel=$HYPER_URL
    start_hyper_alone "$WWW/static/page.json" application/vnd.pypi.simple.v1+json; hyper_json=$HYPER_URL
    start_hyper_alone "$WWW/static/page.html" text/html; hyper_html=$HYPER_URL
    say "wrk warm-up"
    SECONDS_PER_RUN=2 run_wrk 64 "$hot_url" >/dev/null
    SECONDS_PER_RUN=2 run_wrk 64 "$DIRECT$HOT_PATH" >/dev/null
    SECONDS_PER_RUN=2 run_wrk 64 "$hyper_wheel/" >/dev/null
    local loaded_rss; loaded_rss=$(proc_kb VmRSS)

    local rps p50 p99 err bpr rrps rp50 rp99 rerr rbpr hrps hp50 hp99 herr hbpr label
    if want warm; then
    # wrk's numbers move by 10-20% from one run to the next on two shared cores (nginx's most of
    # all: which worker takes which connections varies), so each side gets ROUNDS runs,
    # alternating, and keeps its best req/s; latencies and errors come from all its rounds.
    # The third side, hyper alone, is the ceiling: what the HTTP stack wheelgate is built on
    # reaches on the same bytes with no proxy work at all.
    rounds() { # wheelgate-url reference-url hyper-url header -> three lines: "rps p50 p99 errors bpr"
        local i wg=() ref=() hyper=()
        for ((i = 0; i < ROUNDS; i++)); do
            wg+=("$(run_wrk 64 "$1" "$4")")
            ref+=("$(run_wrk 64 "$2" "$4")")
            hyper+=("$(run_wrk 64 "$3" "$4")")
        done
        for side in wg ref hyper; do
            local -n runs=$side
            local best p50 p99 err bpr
            best=$(printf '%s\n' "${runs[@]}" | sort -g -k1 | tail -n1)
            p50=$(printf '%s\n' "${runs[@]}" | awk '{ print $2 }' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
            p99=$(printf '%s\n' "${runs[@]}" | awk '{ print $3 }' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
            err=$(printf '%s\n' "${runs[@]}" | awk '{ e += $4 } END { print e + 0 }')
            bpr=$(echo "$best" | awk '{ print $5 }')
            echo "$(echo "$best" | awk '{ print $1 }') $p50 $p99 $err $bpr"
        done
    }
    compare() { # label wheelgate-url reference-url hyper-url [header]
        label=$1
        say "wrk -c64: $label ($ROUNDS rounds each, alternating)"
        { read -r rps p50 p99 err bpr; read -r rrps rp50 rp99 rerr rbpr; read -r hrps hp50 hp99 herr hbpr; } \
            <<<"$(rounds "$2" "$3" "$4" "${5:-X-Bench: 1}")"
        say "  wheelgate $rps req/s ($bpr B/response, $err errors); nginx $rrps req/s ($rbpr B/response, $rerr errors); hyper alone $hrps req/s ($hbpr B/response, $herr errors, p99 $hp99 us)"
        r=$(ratio "$rps" "$rrps")
        row "$label: req/s (64 conns)" "$(printf '%.0f' "$rps")" "$(printf '%.0f' "$rrps")" "$r" ">= 1.00x" "$(verdict "$r" ge 1.00)"
        row "$label: req/s, ceiling" "$(printf '%.0f' "$rps")" "$(printf '%.0f' "$hrps") (hyper alone)" "$(ratio "$rps" "$hrps")" "-" "info"
        row "$label: p50 latency" "$(ms "$p50")" "$(ms "$rp50")" "$(ratio "$p50" "$rp50")" "-" "info"
        row "$label: p99 latency" "$(ms "$p99")" "$(ms "$rp99")" "$(ratio "$p99" "$rp99")" "< 5 ms" "$(verdict "$p99" lt 5000)"
        [ "$err" = 0 ] || row "$label: errors (64 conns)" "$err" "$rerr" "-" "= 0" "FAIL"
    }
    compare "artifact ~100 KiB" "$hot_url" "$DIRECT$HOT_PATH" "$hyper_wheel/"
    compare "page, pip Accept (JSON)" "$WG/simple/$PAGE_PROJECT/" "$DIRECT/static/page.json" "$hyper_json/" "Accept: $PIP_ACCEPT"
    compare "page, text/html" "$WG/simple/$PAGE_PROJECT/" "$DIRECT/static/page.html" "$hyper_html/" "Accept: text/html"

    # Group rows: the same page and file through the group `all` (hosted `internal`, then the
    # remote), against the remote directly, alternating rounds; issue 13's target is a group
    # page at 0.9x the remote page's req/s or better.
    local group_hot_url
    group_hot_url=$(wg_file_url "$HOT_PROJECT" "$HOT_FILE" /all/simple)
    [ -n "$group_hot_url" ] || die "wheelgate's group page for $HOT_PROJECT does not list $HOT_FILE"
    curl -sf -o /dev/null "$group_hot_url" || die "wheelgate does not serve $group_hot_url"
    versus_remote() { # label group-url remote-url target [header]
        local i g=() r=() best_g best_r ratio_g
        say "wrk -c64: $1 through the group against the remote ($ROUNDS rounds each, alternating)"
        for ((i = 0; i < ROUNDS; i++)); do
            g+=("$(run_wrk 64 "$2" "${5:-X-Bench: 1}")")
            r+=("$(run_wrk 64 "$3" "${5:-X-Bench: 1}")")
        done
        best_g=$(printf '%s\n' "${g[@]}" | sort -g -k1 | tail -n1 | awk '{ print $1 }')
        best_r=$(printf '%s\n' "${r[@]}" | sort -g -k1 | tail -n1 | awk '{ print $1 }')
        say "  group $best_g req/s; remote $best_r req/s"
        ratio_g=$(ratio "$best_g" "$best_r")
        row "$1 via group: req/s (64 conns)" "$(printf '%.0f' "$best_g")" "$(printf '%.0f' "$best_r") (remote)" "$ratio_g" "${4:--}" \
            "$([ -n "${4:-}" ] && verdict "$ratio_g" ge 0.90 || echo info)"
    }
    versus_remote "page, pip Accept (JSON)" "$WG/all/simple/$PAGE_PROJECT/" "$WG/simple/$PAGE_PROJECT/" ">= 0.90x" "Accept: $PIP_ACCEPT"
    versus_remote "artifact ~100 KiB" "$group_hot_url" "$hot_url" ""
    fi

    # 6. 1,000 connections on the warm artifact.
    if want many; then
    # Alternating rounds as at 64 connections: one run per side moved the ratio by 0.1 from one
    # run to the next. Each side keeps its best req/s, the median of its p99s and all its errors.
    say "wrk -c1000: artifact ($MANY_ROUNDS rounds each, alternating)"
    local many_wg=() many_ref=() i
    for ((i = 0; i < MANY_ROUNDS; i++)); do
        many_wg+=("$(run_wrk 1000 "$hot_url")")
        many_ref+=("$(run_wrk 1000 "$DIRECT$HOT_PATH")")
    done
    say "  rounds: wheelgate ${many_wg[*]// /,} | nginx ${many_ref[*]// /,}"
    best_of() { # runs... -> "best_rps median_p99 total_errors"
        local best p99 errors
        best=$(printf '%s\n' "$@" | awk '{ print $1 }' | sort -g | tail -n1)
        p99=$(printf '%s\n' "$@" | awk '{ print $3 }' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
        errors=$(printf '%s\n' "$@" | awk '{ e += $4 } END { print e + 0 }')
        echo "$best $p99 $errors"
    }
    read -r rps p99 err <<<"$(best_of "${many_wg[@]}")"
    read -r rrps rp99 rerr <<<"$(best_of "${many_ref[@]}")"
    say "  wheelgate $rps req/s ($err errors, p99 $p99 us); nginx $rrps req/s ($rerr errors, p99 $rp99 us)"
    row "artifact, 1000 conns: req/s" "$(printf '%.0f' "$rps")" "$(printf '%.0f' "$rrps")" "$(ratio "$rps" "$rrps")" "-" "info"
    row "artifact, 1000 conns: p99 latency" "$(ms "$p99")" "$(ms "$rp99")" "$(ratio "$p99" "$rp99")" "-" "info"
    row "artifact, 1000 conns: errors" "$err" "$rerr (nginx)" "-" "= 0" "$(verdict "$err" eq 0)"

    fi

    # Measured twice: 3 s after the last request (what the burst left), and once the quiet trim
    # has run (src/trim.rs: a 10 s tick that finds no request since the one before, so at most
    # 20 s after the last request) and the server has given its freed heap back: that is what an
    # idle sidecar holds.
    sleep 3
    local after; after=$(proc_kb VmRSS)
    row "RSS 3 s after the run (VmRSS)" "$(mib "$after")" "-" "-" "-" "info"
    sleep 20
    local idle; idle=$(proc_kb VmRSS)
    row "idle RSS after the run, quiet trim done (VmRSS)" "$(mib "$idle")" "-" "-" "< 40 MiB" "$(verdict "$idle" lt 40960)"
    row "RSS after warm-up, before the -c64 runs" "$(mib "$loaded_rss")" "-" "-" "-" "info"
    row "peak RSS of the last process (VmHWM)" "$(mib "$(proc_kb VmHWM)")" "-" "-" "-" "info"
    fi

    if want fleet; then
    # 8. the fleet: S sidecars chained to one central, and N cold clients started at once, spread
    # round-robin over the sidecars. The central alone asks the upstream, so nginx's UP log says
    # whether the fleet fetched each file and page once; the central's CPU time
    # (/proc/PID/stat) over the bytes it served to the sidecars (its wheelgate_served_bytes_total,
    # the page and file bodies it sent) is what one central costs per GB of fleet traffic.
    # uv by default: 50 pip processes on two cores spend most of the wall time in their own
    # interpreter start and resolver, which would hide the proxies (BENCH_FLEET_CLIENT=pip runs
    # pip anyway; neither needs a venv, both install with --target as timed_install does).
    FLEET_SIDECARS=${BENCH_FLEET_SIDECARS:-5}
    FLEET_CLIENTS=${BENCH_FLEET_CLIENTS:-50}
    FLEET_CLIENT=${BENCH_FLEET_CLIENT:-uv}
    # The references: one cold install through one plain wheelgate straight at nginx (the median
    # of three, each on a fresh store: one install is a fraction of a second), and, just before
    # each fleet run, the same clients all at once straight at nginx: what the clients cost by
    # themselves on these two cores, measured next to the run so that whatever else loads the
    # machine weighs on both.
    stop_wheelgate
    local refs=() i
    for i in 1 2 3; do
        start_wheelgate "$WORK/store-fleet-reference-$i"
        refs+=("$(timed_install "$FLEET_CLIENT" "$WG/simple/")")
        stop_wheelgate
    done
    local fleet_ref
    fleet_ref=$(median_of "${refs[@]}")
    say "fleet: one cold $FLEET_CLIENT install through one wheelgate: ${refs[*]} s"

    start_central "$WORK/fleet/central"
    for ((i = 1; i <= FLEET_SIDECARS; i++)); do start_sidecar "$WORK/fleet/sidecar-$i"; done
    say "fleet: central $CENTRAL, sidecars ${SIDECARS[*]}; $FLEET_CLIENTS cold $FLEET_CLIENT clients"
    local direct_wall from ticks bytes side files_n files_d pages_n pages_d cold_failed cold_wall
    run_fleet_clients direct-1 "$DIRECT/simple/"
    direct_wall=$FLEET_WALL
    from=$(upstream_lines); ticks=$(central_ticks); bytes=$(central_served_bytes); side=$(sidecar_ticks)
    run_fleet_clients cold "${SIDECARS[@]/%//simple/}"
    # What the central still does for the run once the last client is gone (stores' fsyncs).
    sleep 1
    ticks=$(($(central_ticks) - ticks)); bytes=$(($(central_served_bytes) - bytes)); side=$(($(sidecar_ticks) - side))
    cold_failed=$FLEET_FAILED; cold_wall=$FLEET_WALL
    read -r files_n files_d <<<"$(upstream_counts "$from" '^/packages/')"
    read -r pages_n pages_d <<<"$(upstream_counts "$from" '^/simple/')"
    say "fleet cold: upstream asked $files_n times for $files_d files, $pages_n times for $pages_d pages; central $ticks ticks for $bytes bytes; sidecars $side ticks (CLK_TCK $(getconf CLK_TCK))"
    tail -n +"$((from + 1))" "$WORK/nginx/upstream.log" | awk '{ print $7 }' | sort | uniq -d | sed 's/^/  asked more than once: /' >&2
    local per
    per=$(ratio "$files_n" "$files_d")
    row "fleet: upstream requests per artifact" "$per ($files_n for $files_d)" "1.00 (each once)" "-" "= 1.00" "$(verdict "$per" eq 1.00)"
    per=$(ratio "$pages_n" "$pages_d")
    row "fleet: upstream requests per page" "$per ($pages_n for $pages_d)" "1.00 (each once)" "-" "= 1.00" "$(verdict "$per" eq 1.00)"
    cpu_row "fleet: central CPU per served GB (s)" "$ticks" "$bytes"
    row "fleet: $FLEET_CLIENTS cold installs, wall time (s)" "$cold_wall" "$fleet_ref (1 install, 1 wheelgate)" "$(ratio "$cold_wall" "$fleet_ref")" "-" "info"
    row "fleet: $FLEET_CLIENTS cold installs, wall time against nginx" "$cold_wall" "$direct_wall ($FLEET_CLIENTS at once, direct)" "$(ratio "$cold_wall" "$direct_wall")" "-" "info"

    # The same clients again through new, empty sidecars: the central now serves everything from
    # its store, which is its steady state (sidecars that are warm themselves send it nothing).
    stop_fleet
    for ((i = 1; i <= FLEET_SIDECARS; i++)); do start_sidecar "$WORK/fleet/sidecar-again-$i"; done
    run_fleet_clients direct-2 "$DIRECT/simple/"
    direct_wall=$FLEET_WALL
    from=$(upstream_lines); ticks=$(central_ticks); bytes=$(central_served_bytes); side=$(sidecar_ticks)
    run_fleet_clients central-warm "${SIDECARS[@]/%//simple/}"
    sleep 1
    ticks=$(($(central_ticks) - ticks)); bytes=$(($(central_served_bytes) - bytes)); side=$(($(sidecar_ticks) - side))
    local warm_up
    warm_up=$(($(upstream_lines) - from))
    say "fleet, central warm: upstream asked $warm_up times; central $ticks ticks for $bytes bytes; sidecars $side ticks"
    cpu_row "fleet, central warm: central CPU per served GB (s)" "$ticks" "$bytes"
    row "fleet, central warm: upstream requests" "$warm_up" "0 (pages fresh)" "-" "= 0" "$(verdict "$warm_up" eq 0)"
    row "fleet, central warm: $FLEET_CLIENTS installs, wall time (s)" "$FLEET_WALL" "$direct_wall ($FLEET_CLIENTS at once, direct)" "$(ratio "$FLEET_WALL" "$direct_wall")" "-" "info"
    local failed=$((cold_failed + FLEET_FAILED))

    # Once more through the same sidecars, now warm with pages fresh: CI's steady state, in which
    # the central should hear nothing at all (its CPU meanwhile is what it costs idle).
    run_fleet_clients direct-3 "$DIRECT/simple/"
    direct_wall=$FLEET_WALL
    ticks=$(central_ticks); bytes=$(central_served_bytes)
    run_fleet_clients all-warm "${SIDECARS[@]/%//simple/}"
    ticks=$(($(central_ticks) - ticks)); bytes=$(($(central_served_bytes) - bytes))
    failed=$((failed + FLEET_FAILED))
    say "fleet, all warm: central $ticks ticks for $bytes bytes"
    row "fleet, sidecars warm: $FLEET_CLIENTS installs, wall time (s)" "$FLEET_WALL" "$direct_wall ($FLEET_CLIENTS at once, direct)" "$(ratio "$FLEET_WALL" "$direct_wall")" "-" "info"
    row "fleet, sidecars warm: bytes from the central" "$bytes" "0" "-" "= 0" "$(verdict "$bytes" eq 0)"
    row "fleet, sidecars warm: central CPU, idle (s)" "$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f\n", t / hz }')" "in ${FLEET_WALL} s" "-" "-" "info"
    row "fleet: failed installs" "$failed" "of $((3 * FLEET_CLIENTS))" "-" "= 0" "$(verdict "$failed" eq 0)"
    stop_fleet all
    fi

    if grep -qiE ' (ERROR|WARN) ' "$WORK"/wheelgate-*.log; then
        say "wheelgate logged warnings or errors:"
        grep -hiE ' (ERROR|WARN) ' "$WORK"/wheelgate-*.log | sed 's/\x1b\[[0-9;]*m//g' | sort | uniq -c | sort -rn | head -10 >&2
    fi

    echo
    echo "wheelgate benchmark ($(nproc) cores, wrk -t2 ${SECONDS_PER_RUN}s runs, installs: median of $REPS paired repetitions, $(manifest 'len(m["projects"])') projects)"
    print_table
}

main "$@"
exit 0
