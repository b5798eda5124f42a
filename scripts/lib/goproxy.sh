# shellcheck shell=bash
# Sourced by scripts/demo, scripts/bench and scripts/refresh-lockfile: the stand-ins for
# proxy.golang.org and for the download servers k3s's scripts/download asks (GitHub releases,
# k3s.io) — a demo world's goproxy/ (GOPROXY layout) and downloads/ (<host>/<path>) behind
# python3's http.server on a free loopback port.
#
#   goproxy_up WORLD/goproxy   serves WORLD; exports KILN_GO_PROXY=http://127.0.0.1:PORT/goproxy
#                    and, when WORLD/downloads exists, KILN_DOWNLOAD_MIRROR=…/downloads; its
#                    request log (one line per request) goes to $KILN_GOPROXY_LOG (default
#                    /dev/null)
#   goproxy_down     stops it by its pid (no-op when not started)

KILN_GOPROXY_PID=

goproxy_up() {
    local dir=$1 port=5600 i
    goproxy_down
    command -v python3 >/dev/null || scripts/setup python3
    if [ ! -d "$dir" ]; then
        echo "goproxy: $dir is not a directory (a demo world's goproxy/)" >&2
        return 1
    fi
    # The first loopback port nothing listens on.
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((port + 1))
    done
    local root name
    root=$(dirname "$dir")
    name=$(basename "$dir")
    python3 -m http.server --bind 127.0.0.1 --directory "$root" "$port" >/dev/null 2>>"${KILN_GOPROXY_LOG:-/dev/null}" &
    KILN_GOPROXY_PID=$!
    for ((i = 0; i < 100; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            export KILN_GO_PROXY="http://127.0.0.1:$port/$name"
            if [ -d "$root/downloads" ]; then
                export KILN_DOWNLOAD_MIRROR="http://127.0.0.1:$port/downloads"
            fi
            echo "goproxy: stand-in module proxy on $KILN_GO_PROXY (pid $KILN_GOPROXY_PID)" >&2
            return 0
        fi
        sleep 0.1
    done
    echo "goproxy: python3 -m http.server did not start" >&2
    goproxy_down
    return 1
}

goproxy_down() {
    if [ -n "$KILN_GOPROXY_PID" ]; then
        kill "$KILN_GOPROXY_PID" 2>/dev/null || true
        wait "$KILN_GOPROXY_PID" 2>/dev/null || true
        KILN_GOPROXY_PID=
    fi
    unset KILN_GO_PROXY KILN_DOWNLOAD_MIRROR
}
