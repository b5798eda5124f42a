# shellcheck shell=bash
# Sourced by scripts/{podman,test}: starts kiln's private Podman service (Debian's podman,
# `podman system service` serving the Docker-compatible API on its own socket, with its own
# storage), and stops only what it started, by pid.
#
#   podman_up     prints nothing; sets KILN_PODMAN_HOST (unix://…) and, when it started the
#                 service, KILN_PODMAN_STARTED_PID
#   podman_down   stops the service podman_up started (no-op otherwise)
#   podman_rootless_up    the same as an unprivileged user ($KILN_ROOTLESS_USER, made when
#                 missing, with sub-uids): sets KILN_ROOTLESS_HOST, KILN_ROOTLESS_STARTED_PID
#   podman_rootless_down  stops it, and the user's Podman pause process, by their pids
#
# Its images stay under $KILN_PODMAN_ROOT between runs (so a second run reuses the toolchain
# images); its socket, pidfile, run root and containers.conf are under $KILN_PODMAN_RUN.

KILN_PODMAN_ROOT=${KILN_PODMAN_ROOT:-/var/lib/kiln-podman}
KILN_PODMAN_RUN=${KILN_PODMAN_RUN:-/run/kiln-podman}
KILN_PODMAN_HOST="unix://$KILN_PODMAN_RUN/podman.sock"
KILN_PODMAN_STARTED_PID=

podman_log() { echo "podman: $*" >&2; }

# podman_answers [HOST]: true when a service answers at HOST (default KILN_PODMAN_HOST).
podman_answers() {
    DOCKER_HOST="${1:-$KILN_PODMAN_HOST}" timeout 10 docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1
}

# podman_is_ours PID: true when PID is a podman service using kiln's private storage.
podman_is_ours() {
    local pid="$1"
    [ -r "/proc/$pid/cmdline" ] &&
        tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qx -- "$KILN_PODMAN_ROOT/storage"
}

podman_wait_gone() {
    local pid="$1" i
    for ((i = 0; i < $2 * 10; i++)); do
        [ -d "/proc/$pid" ] || return 0
        sleep 0.1
    done
    return 1
}

podman_up() {
    local sock="$KILN_PODMAN_RUN/podman.sock" pidfile="$KILN_PODMAN_RUN/podman.pid"
    if [ -S "$sock" ] && podman_answers; then
        podman_log "using kiln's private Podman service already running at $KILN_PODMAN_HOST"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        podman_log "starting kiln's private Podman service needs root"
        return 1
    fi
    # Leftovers of a killed session: a pidfile whose process is gone (or is ours but hung),
    # and a socket nobody serves.
    if [ -f "$pidfile" ]; then
        local old
        old=$(cat "$pidfile" 2>/dev/null || true)
        if [ -n "$old" ] && podman_is_ours "$old"; then
            podman_log "stopping kiln's earlier Podman service (pid $old), which does not answer"
            kill "$old" 2>/dev/null || true
            podman_wait_gone "$old" 30 || kill -9 "$old" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    fi
    rm -f "$sock"
    mkdir -p "$KILN_PODMAN_ROOT/storage" "$KILN_PODMAN_RUN/runroot" "$KILN_PODMAN_RUN/tmp"
    # Containers the builder runs (a toolchain's RUN lines) take Podman's default limits: a
    # million open files, which a machine whose own hard limit is lower (a sandboxed CI
    # runner) refuses in `runc create`. kiln's steps set their own; these are the same.
    # runc, not crun: crun refuses a host that mounts cgroup v2 beside v1 ("cgroups in hybrid
    # mode not supported"), and docker.io brings runc anyway.
    cat >"$KILN_PODMAN_RUN/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF
    podman_log "starting kiln's private Podman service (log: $KILN_PODMAN_RUN/service.log)"
    # From its run directory: Podman (4.3, with conmon) leaves a file `oom` in its working
    # directory when a container is OOM-killed, which must not be the captain's checkout. The
    # subshell execs, so $! is the service's own pid.
    (cd "$KILN_PODMAN_RUN" && CONTAINERS_CONF="$KILN_PODMAN_RUN/containers.conf" \
        TMPDIR="$KILN_PODMAN_RUN/tmp" exec podman --root "$KILN_PODMAN_ROOT/storage" \
        --runroot "$KILN_PODMAN_RUN/runroot" system service --time=0 "$KILN_PODMAN_HOST" \
        >"$KILN_PODMAN_RUN/service.log" 2>&1 </dev/null) &
    KILN_PODMAN_STARTED_PID=$!
    echo "$KILN_PODMAN_STARTED_PID" >"$pidfile"
    podman_wait_answering "the Podman service" "$KILN_PODMAN_HOST" "$KILN_PODMAN_STARTED_PID" \
        "$KILN_PODMAN_RUN/service.log" && return 0
    local status=$?
    if [ "$status" = 2 ]; then
        podman_down
    else
        KILN_PODMAN_STARTED_PID=
        rm -f "$pidfile"
    fi
    return 1
}

# podman_wait_answering WHAT HOST PID LOG: waits up to 60 s for the service PID to answer at
# HOST; 1 when it exited first (LOG's end shown), 2 when it never answered.
podman_wait_answering() {
    local what=$1 host=$2 pid=$3 log=$4 i
    for ((i = 0; i < 600; i++)); do
        if podman_answers "$host"; then
            podman_log "$what (pid $pid) answers at $host"
            return 0
        fi
        if ! [ -d "/proc/$pid" ]; then
            podman_log "$what exited while starting; its log ends with:"
            tail -n 20 "$log" >&2
            return 1
        fi
        sleep 0.1
    done
    podman_log "$what did not answer within 60 s; see $log"
    return 2
}

podman_down() {
    local pid="${KILN_PODMAN_STARTED_PID:-}"
    [ -n "$pid" ] || return 0
    KILN_PODMAN_STARTED_PID=
    podman_log "stopping the Podman service it started (pid $pid)"
    kill "$pid" 2>/dev/null || true
    podman_wait_gone "$pid" 60 || {
        podman_log "the Podman service (pid $pid) did not stop in 60 s; killing it"
        kill -9 "$pid" 2>/dev/null || true
    }
    rm -f "$KILN_PODMAN_RUN/podman.pid" "$KILN_PODMAN_RUN/podman.sock"
}

KILN_ROOTLESS_USER=${KILN_ROOTLESS_USER:-kiln-rootless}
KILN_ROOTLESS_HOST=
KILN_ROOTLESS_STARTED_PID=
KILN_ROOTLESS_PAUSE_WAS=

# podman_rootless_env: the rootless user's uid, gid, home and runtime directory, as shell
# assignments (rl_uid, rl_gid, rl_home, rl_run).
podman_rootless_ids() {
    rl_uid=$(id -u "$KILN_ROOTLESS_USER") || return 1
    rl_gid=$(id -g "$KILN_ROOTLESS_USER") || return 1
    rl_home=$(getent passwd "$KILN_ROOTLESS_USER" | cut -d: -f6)
    if [ -z "$rl_uid" ] || [ "$rl_uid" = 0 ] || [ -z "$rl_home" ]; then
        podman_log "the user $KILN_ROOTLESS_USER has no uid, is root or has no home"
        return 1
    fi
    rl_run=/run/user/$rl_uid
}

# podman_next_subids FILE: the first id after every range FILE gives out (at least 100000).
podman_next_subids() {
    awk -F: 'BEGIN { next_free = 100000 } NF >= 3 { end = $2 + $3; if (end > next_free) next_free = end } END { print next_free }' "$1" 2>/dev/null || echo 100000
}

# podman_as_user ARGS…: runs ARGS as the rootless user, with only its own environment.
podman_as_user() {
    setpriv --reuid="$rl_uid" --regid="$rl_gid" --init-groups -- \
        env -i HOME="$rl_home" USER="$KILN_ROOTLESS_USER" LOGNAME="$KILN_ROOTLESS_USER" \
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin XDG_RUNTIME_DIR="$rl_run" "$@"
}

podman_rootless_up() {
    if [ "$(id -u)" != 0 ]; then
        podman_log "setting up the rootless Podman user needs root"
        return 1
    fi
    # kiln's own test user: its containers.conf and storage.conf are kiln's.
    local user=$KILN_ROOTLESS_USER free
    if ! id -u "$user" >/dev/null 2>&1; then
        podman_log "adding the user $user for rootless Podman"
        useradd --create-home --shell /usr/sbin/nologin "$user" || return 1
    fi
    podman_rootless_ids || return 1
    # useradd gives a new user sub-ids when /etc/login.defs says so (Debian's does); an
    # older user may have none: it gets the next free range.
    if ! grep -q "^$user:" /etc/subuid 2>/dev/null; then
        free=$(podman_next_subids /etc/subuid)
        usermod --add-subuids "$free-$((free + 65535))" "$user" || return 1
    fi
    if ! grep -q "^$user:" /etc/subgid 2>/dev/null; then
        free=$(podman_next_subids /etc/subgid)
        usermod --add-subgids "$free-$((free + 65535))" "$user" || return 1
    fi
    mkdir -p "$rl_run" && chown "$rl_uid:$rl_gid" "$rl_run" && chmod 700 "$rl_run" || return 1
    KILN_ROOTLESS_HOST="unix://$rl_run/podman/podman.sock"
    if podman_answers "$KILN_ROOTLESS_HOST"; then
        podman_log "using the rootless Podman service of $user already running at $KILN_ROOTLESS_HOST"
        return 0
    fi
    # The same limits and runtime as the rootful service; overlay storage (Podman 4.3 would
    # pick vfs, a whole copy per layer).
    podman_as_user mkdir -p "$rl_home/.config/containers" "$rl_run/podman"
    podman_as_user sh -c 'cat > "$HOME/.config/containers/containers.conf"' <"$KILN_PODMAN_RUN/containers.conf"
    printf '[storage]\ndriver = "overlay"\n' | podman_as_user sh -c 'cat > "$HOME/.config/containers/storage.conf"'
    # The pidfile is root's (the user's own directories are the user's to point elsewhere).
    mkdir -p "$KILN_PODMAN_RUN" || return 1
    local pidfile="$KILN_PODMAN_RUN/rootless.pid" old
    old=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$old" ] && [ -r "/proc/$old/cmdline" ] &&
        tr '\0' '\n' <"/proc/$old/cmdline" | grep -qx -- "$KILN_ROOTLESS_HOST"; then
        podman_log "stopping the earlier rootless Podman service (pid $old), which does not answer"
        kill "$old" 2>/dev/null || true
        podman_wait_gone "$old" 30 || kill -9 "$old" 2>/dev/null || true
    fi
    rm -f "$pidfile" "$rl_run/podman/podman.sock"
    # The user's pause process (it holds its user namespace) is stopped with the service only
    # when this service made it.
    KILN_ROOTLESS_PAUSE_WAS=$(cat "$rl_run/libpod/tmp/pause.pid" 2>/dev/null || true)
    podman_log "starting $user's rootless Podman service (log: $rl_run/podman/service.log)"
    # From the user's run directory (see podman_up); the subshell, setpriv and env exec, so
    # $! is the service's own pid.
    (cd "$rl_run/podman" && exec setpriv --reuid="$rl_uid" --regid="$rl_gid" --init-groups -- \
        env -i HOME="$rl_home" USER="$user" LOGNAME="$user" \
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin XDG_RUNTIME_DIR="$rl_run" \
        podman system service --time=0 "$KILN_ROOTLESS_HOST" \
        >"$rl_run/podman/service.log" 2>&1 </dev/null) &
    KILN_ROOTLESS_STARTED_PID=$!
    echo "$KILN_ROOTLESS_STARTED_PID" >"$pidfile"
    podman_wait_answering "the rootless Podman service" "$KILN_ROOTLESS_HOST" \
        "$KILN_ROOTLESS_STARTED_PID" "$rl_run/podman/service.log" && return 0
    local status=$?
    if [ "$status" = 2 ]; then
        podman_rootless_down
    else
        KILN_ROOTLESS_STARTED_PID=
        rm -f "$pidfile"
    fi
    return 1
}

podman_rootless_down() {
    local pid="${KILN_ROOTLESS_STARTED_PID:-}" pause
    [ -n "$pid" ] || return 0
    KILN_ROOTLESS_STARTED_PID=
    podman_log "stopping the rootless Podman service it started (pid $pid)"
    # A rootless Podman that makes its user namespace runs on as a child of the process it
    # was started as: the children go first, found by their parent's pid.
    local child children
    children=$(ps -o pid= --ppid "$pid" 2>/dev/null || true)
    for child in $children; do
        kill "$child" 2>/dev/null || true
    done
    for child in $children; do
        podman_wait_gone "$child" 60 || kill -9 "$child" 2>/dev/null || true
    done
    kill "$pid" 2>/dev/null || true
    podman_wait_gone "$pid" 60 || kill -9 "$pid" 2>/dev/null || true
    # Rootless Podman keeps a pause process holding its user namespace: the user's, and
    # stopped only when this service started it.
    pause=$(cat "$rl_run/libpod/tmp/pause.pid" 2>/dev/null || true)
    if [ -n "$pause" ] && [ "$pause" != "${KILN_ROOTLESS_PAUSE_WAS:-}" ] &&
        [ "$(stat -c %u "/proc/$pause" 2>/dev/null)" = "$rl_uid" ]; then
        kill "$pause" 2>/dev/null || true
    fi
    rm -f "$KILN_PODMAN_RUN/rootless.pid"
}
