#!/usr/bin/env bash
# The benchmark's baseline: the runbook's release of the demo world (v1.28.1 → v1.28.2) as a
# captain types it, with git and the docker CLI, in the same toolchain image kiln uses:
# clone, rebase and tag.sh in a container, the global sed on go.mod, go mod tidy and make in a
# container. Offline there is no proxy.golang.org to push the tags to, so the module proxy comes
# ready-made in PROXY (kiln's, unpacked before timing) — the baseline gets that work for free.
# With MODULE_PROXY (a world whose k3s requires third-party modules), tidy and the build run
# with the host's network and fetch those from it, as a captain's laptop does. k3s's `make` is
# dapper (a privileged container of its own): the baseline runs what dapper's container runs —
# scripts/download, scripts/build, scripts/package-cli — its curl and git clone sent to
# DOWNLOAD_MIRROR (the download stand-in: MIRROR/<host>/<path>), as a captain's would reach GitHub.
# Usage: runbook-release.sh WORLD IMAGE PROXY WORKDIR [MODULE_PROXY [DOWNLOAD_MIRROR]]
set -euo pipefail
world=$1 image=$2 proxy=$3 work=$4 module_proxy=${5:-} download_mirror=${6:-}
net=(--network none) goproxy=file:///proxy
if [ -n "$module_proxy" ]; then
    net=(--network host) goproxy="file:///proxy,$module_proxy"
fi
ident=(-e GIT_AUTHOR_NAME=Captain -e GIT_AUTHOR_EMAIL=captain@example.invalid
    -e GIT_COMMITTER_NAME=Captain -e GIT_COMMITTER_EMAIL=captain@example.invalid)
git clone --quiet "$world/fork.git" "$work/fork"
git -C "$work/fork" fetch --quiet "$world/upstream.git" refs/tags/v1.28.2:refs/tags/v1.28.2
docker run --rm --network none -u "$(id -u):$(id -g)" -v "$work:/w" -w /w/fork "${ident[@]}" \
    -e GOPROXY=off "$image" bash -c \
    'git checkout --quiet --detach v1.28.1-k3s1 && git rebase --quiet --onto v1.28.2 v1.28.1 v1.28.1-k3s1~1 && ./tag.sh v1.28.2-k3s1 >/dev/null'
git clone --quiet --branch release-1.28 "$world/k3s.git" "$work/k3s"
cd "$work/k3s"
git checkout --quiet -b v1.28.2-k3s1
sed -i -e 's/v1.28.1-k3s1/v1.28.2-k3s1/g' -e 's/k8s.io\/kubernetes v1.28.1/k8s.io\/kubernetes v1.28.2/' \
    -e '/^\tk8s.io\//s/v0.28.1$/v0.28.2/' go.mod
sed -i 's/golang:1.21.13-/golang:1.22.10-/' Dockerfile.dapper Dockerfile.test
sed -i "s/go-version: '1.21.13'/go-version: '1.22.10'/" .github/workflows/integration.yaml .github/workflows/unitcoverage.yaml
mkdir -p "$work/bin"
if [ -n "$download_mirror" ]; then
    net=(--network host)
    # curl URL -> curl MIRROR/<host>/<path>, every other argument as given.
    cat >"$work/bin/curl" <<'CURL'
#!/bin/bash
args=()
for a in "$@"; do
    case "$a" in
    http://* | https://*) args+=("${DOWNLOAD_MIRROR%/}/${a#*://}") ;;
    *) args+=("$a") ;;
    esac
done
exec /usr/bin/curl "${args[@]}"
CURL
    chmod +x "$work/bin/curl"
    # git clone URL -> MIRROR/<host>/<path>; the stand-in serves git's dumb HTTP, which has no
    # shallow clones, so --depth is dropped.
    cat >"$work/bin/git" <<'GIT'
#!/bin/bash
[ "${1:-}" = clone ] || exec /usr/bin/git "$@"
args=()
skip=
for a in "$@"; do
    if [ -n "$skip" ]; then skip=; continue; fi
    case "$a" in
    --depth) skip=1 ;;
    --depth=*) ;;
    http://* | https://*) args+=("${DOWNLOAD_MIRROR%/}/${a#*://}") ;;
    *) args+=("$a") ;;
    esac
done
exec /usr/bin/git "${args[@]}"
GIT
    chmod +x "$work/bin/git"
fi
docker run --rm "${net[@]}" -u "$(id -u):$(id -g)" -v "$work:/w" -v "$proxy:/proxy:ro" -w /w/k3s "${ident[@]}" \
    -e GOPROXY="$goproxy" -e GOSUMDB=off -e GOFLAGS=-mod=mod -e DOWNLOAD_MIRROR="$download_mirror" \
    -e PATH="/w/bin:/usr/local/bin:/usr/local/go/bin:/usr/lib/go-1.22/bin:/usr/bin:/bin" "$image" bash -c \
    'go mod tidy && git add -A && git commit --quiet -s -m "Update to v1.28.2" && ./scripts/download >/dev/null && ./scripts/build >/dev/null && ./scripts/package-cli'
test -x dist/artifacts/k3s
