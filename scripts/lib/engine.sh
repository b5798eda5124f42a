# shellcheck shell=bash
# Sourced by scripts/{demo,test,bench,engine}: finds a Docker engine that answers, or starts
# kiln's private one (Debian's docker.io), and stops only what it started, by pid.
#
#   engine_up     exports DOCKER_HOST; sets KILN_ENGINE_STARTED_PID when it started dockerd
#   engine_down   stops the dockerd engine_up started (no-op otherwise)
#
# The private engine keeps its images under $KILN_ENGINE_ROOT (so a second run reuses the
# bootstrapped toolchain images) and its socket, pidfile and exec-root under $KILN_ENGINE_RUN.

KILN_ENGINE_ROOT=${KILN_ENGINE_ROOT:-/var/lib/kiln-engine}
KILN_ENGINE_RUN=${KILN_ENGINE_RUN:-/run/kiln-engine}
KILN_ENGINE_STARTED_PID=

engine_log() { echo "engine: $*" >&2; }

# engine_answers HOST: true when a Docker engine answers at HOST.
engine_answers() {
    DOCKER_HOST="$1" timeout 10 docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1
}

# engine_is_ours PID: true when PID is a dockerd using kiln's private data root.
engine_is_ours() {
    local pid="$1"
    [ -r "/proc/$pid/cmdline" ] &&
        tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qx -- "$KILN_ENGINE_ROOT/data"
}

# engine_wait_gone PID SECONDS: waits for PID to exit.
engine_wait_gone() {
    local pid="$1" i
    for ((i = 0; i < $2 * 10; i++)); do
        [ -d "/proc/$pid" ] || return 0
        sleep 0.1
    done
    return 1
}

engine_up() {
    if [ -n "${DOCKER_HOST:-}" ] && engine_answers "$DOCKER_HOST"; then
        engine_log "using the engine at DOCKER_HOST=$DOCKER_HOST"
        return 0
    fi
    if [ -S /var/run/docker.sock ] && engine_answers unix:///var/run/docker.sock; then
        export DOCKER_HOST=unix:///var/run/docker.sock
        engine_log "using the system engine at $DOCKER_HOST"
        return 0
    fi
    local sock="$KILN_ENGINE_RUN/docker.sock" pidfile="$KILN_ENGINE_RUN/docker.pid"
    if [ -S "$sock" ] && engine_answers "unix://$sock"; then
        export DOCKER_HOST="unix://$sock"
        engine_log "using kiln's private engine already running at $DOCKER_HOST"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        engine_log "no Docker engine answers, and starting kiln's private one needs root"
        engine_log "run this as root, or start Docker and set DOCKER_HOST"
        return 1
    fi
    # Leftovers of a killed session: a pidfile whose process is gone (or is ours but hung),
    # and a socket nobody serves.
    if [ -f "$pidfile" ]; then
        local old
        old=$(cat "$pidfile" 2>/dev/null || true)
        if [ -n "$old" ] && engine_is_ours "$old"; then
            engine_log "stopping kiln's earlier engine (pid $old), which does not answer"
            kill "$old" 2>/dev/null || true
            engine_wait_gone "$old" 30 || kill -9 "$old" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    fi
    rm -f "$sock"
    mkdir -p "$KILN_ENGINE_ROOT/data" "$KILN_ENGINE_RUN/exec"
    engine_log "starting kiln's private dockerd (log: $KILN_ENGINE_RUN/dockerd.log)"
    dockerd \
        --host "unix://$sock" \
        --data-root "$KILN_ENGINE_ROOT/data" \
        --exec-root "$KILN_ENGINE_RUN/exec" \
        --pidfile "$pidfile" \
        --bridge=none --iptables=false --ip-masq=false \
        --log-level=warn \
        >"$KILN_ENGINE_RUN/dockerd.log" 2>&1 </dev/null &
    KILN_ENGINE_STARTED_PID=$!
    local i
    for ((i = 0; i < 600; i++)); do
        if [ -S "$sock" ] && engine_answers "unix://$sock"; then
            export DOCKER_HOST="unix://$sock"
            engine_log "dockerd (pid $KILN_ENGINE_STARTED_PID) answers at $DOCKER_HOST"
            return 0
        fi
        if ! [ -d "/proc/$KILN_ENGINE_STARTED_PID" ]; then
            engine_log "dockerd exited while starting; its log ends with:"
            tail -n 20 "$KILN_ENGINE_RUN/dockerd.log" >&2
            KILN_ENGINE_STARTED_PID=
            return 1
        fi
        sleep 0.1
    done
    engine_log "dockerd did not answer within 60 s; see $KILN_ENGINE_RUN/dockerd.log"
    engine_down
    return 1
}

engine_down() {
    local pid="${KILN_ENGINE_STARTED_PID:-}"
    [ -n "$pid" ] || return 0
    KILN_ENGINE_STARTED_PID=
    engine_log "stopping the dockerd it started (pid $pid)"
    kill "$pid" 2>/dev/null || return 0
    engine_wait_gone "$pid" 60 || {
        engine_log "dockerd (pid $pid) did not stop in 60 s; killing it"
        kill -9 "$pid" 2>/dev/null || true
    }
}
