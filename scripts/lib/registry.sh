# shellcheck shell=bash
# Sourced by scripts/demo: a private Debian docker-registry on a free loopback port, with its
# own config and storage in a temporary directory, standing in for Docker Hub.
#
#   registry_up     starts it; exports KILN_DEMO_REGISTRY=127.0.0.1:PORT
#   registry_down   stops it by its pid and removes its storage (no-op when not started)

KILN_REGISTRY_PID=
KILN_REGISTRY_DIR=

registry_up() {
    local port=5500
    # The first loopback port nothing listens on.
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        port=$((port + 1))
    done
    KILN_REGISTRY_DIR=$(mktemp -d /tmp/kiln-demo-registry.XXXXXX)
    cat >"$KILN_REGISTRY_DIR/config.yml" <<CONFIG
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $KILN_REGISTRY_DIR/data
http:
  addr: 127.0.0.1:$port
  secret: kiln-demo
CONFIG
    docker-registry serve "$KILN_REGISTRY_DIR/config.yml" >"$KILN_REGISTRY_DIR/log" 2>&1 &
    KILN_REGISTRY_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            export KILN_DEMO_REGISTRY="127.0.0.1:$port"
            echo "registry: docker-registry on $KILN_DEMO_REGISTRY (pid $KILN_REGISTRY_PID)" >&2
            return 0
        fi
        sleep 0.1
    done
    echo "registry: docker-registry did not start; its log:" >&2
    cat "$KILN_REGISTRY_DIR/log" >&2
    return 1
}

registry_down() {
    if [ -n "$KILN_REGISTRY_PID" ]; then
        kill "$KILN_REGISTRY_PID" 2>/dev/null || true
        wait "$KILN_REGISTRY_PID" 2>/dev/null || true
        KILN_REGISTRY_PID=
    fi
    if [ -n "$KILN_REGISTRY_DIR" ]; then
        rm -rf "$KILN_REGISTRY_DIR"
        KILN_REGISTRY_DIR=
    fi
}
