//! The shell scripts of the release's container steps. Values reach them only through the
//! environment (`"$NEW_FORK_TAG"`), never by splicing text into the script, and every name was
//! checked against kiln's allowlist before a step was planned.

/// Rebase the old release's k3s patches onto the new upstream tag, as `git rebase --onto
/// NEW_COMMIT OLD_COMMIT PATCHES_TIP` does, without a work tree (a Kubernetes checkout is
/// 24,000 files): each patch, oldest first (merges left out, as rebase does), is merged onto
/// the head so far with its parent as the base (git's ort merge, rebase's own) and committed
/// with its author, date and message kept and the pinned committer; a patch that becomes empty
/// is dropped, one that was empty to begin with kept. git 2.39 has no `merge-tree
/// --merge-base`: a throwaway commit of the head's tree on the patch's parent makes that
/// parent the merge base.
pub(super) const REBASE: &str = r#"set -euo pipefail
cd /in/fork
git fetch --quiet --no-tags --update-shallow /in/upstream "+refs/tags/${NEW_K8S}:refs/tags/${NEW_K8S}"
test "$(git rev-parse "${NEW_K8S}^{commit}")" = "${NEW_COMMIT}"
# PATCHES_TIP: the old tag's stamp commit's parent, or the tag's commit when it has none.
head="${NEW_COMMIT}"
for patch in $(git rev-list --reverse --topo-order --no-merges "${OLD_COMMIT}..${PATCHES_TIP}"); do
    parent=$(git rev-parse "${patch}^")
    head_tree=$(git rev-parse "${head}^{tree}")
    ours=$(git commit-tree -p "${parent}" -m kiln-rebase-base "${head_tree}")
    status=0
    merged=$(git merge-tree --write-tree --name-only --no-messages "${ours}" "${patch}") || status=$?
    if [ "${status}" -eq 1 ]; then
        echo "kiln: the k3s patches do not apply to ${NEW_K8S}; conflicting paths:" >&2
        printf '%s\n' "${merged}" | tail -n +2 | sed '/^$/d; s/^/  /' >&2
        echo "  (applying $(git log -1 --format='%h %s' "${patch}"))" >&2
        exit 3
    elif [ "${status}" -ne 0 ]; then
        exit "${status}"
    fi
    tree=$(printf '%s\n' "${merged}" | head -n 1)
    if [ "${tree}" = "${head_tree}" ] && [ "$(git rev-parse "${patch}^{tree}")" != "$(git rev-parse "${parent}^{tree}")" ]; then
        continue
    fi
    git cat-file commit "${patch}" | sed '1,/^$/d' >/tmp/message
    head=$(GIT_AUTHOR_NAME=$(git log -1 --format=%an "${patch}") \
        GIT_AUTHOR_EMAIL=$(git log -1 --format=%ae "${patch}") \
        GIT_AUTHOR_DATE=@$(git log -1 --format=%ad --date=raw "${patch}") \
        git commit-tree -p "${head}" -F /tmp/message "${tree}")
done
git update-ref --no-deref HEAD "${head}"
git rev-parse HEAD >/out/head
git log --reverse --format='%H %s' "${NEW_COMMIT}..HEAD" >/out/patches
git -c pack.threads=1 -c pack.reuseDelta=false -c pack.reuseObject=false bundle create --quiet /out/rebase.bundle "${NEW_COMMIT}..HEAD"
"#;

/// Run the rebased tree's own tag.sh, then check and record its tag set. Every tag.sh variant
/// is taken: one that commits a stamp on top of the patches or one that tags the patch head
/// itself; lightweight, annotated or signed tags (peeled to their commit, the tag object kept
/// in the bundle); its `git push $REMOTE <tag>` lines are the push list, everything else it
/// prints is its log, shown as the step runs.
pub(super) const TAG: &str = r#"set -euo pipefail
cd /in/upstream
git fetch --quiet /in/rebase.bundle HEAD
HEAD_COMMIT=$(cat /in/head)
git -c advice.detachedHead=false checkout --quiet --detach "${HEAD_COMMIT}"
if [ ! -x ./tag.sh ]; then
    echo "kiln: the rebased tree has no executable tag.sh" >&2
    exit 3
fi
status=0
./tag.sh "${NEW_FORK_TAG}" | tee /tmp/tag.sh.out || status=$?
git tag -d v0.0.0 >/dev/null 2>&1 || true
[ "$status" -eq 0 ] || exit "$status"
STAMP=$(git rev-parse HEAD)
if [ "${STAMP}" != "${HEAD_COMMIT}" ] && [ "$(git rev-parse HEAD~1)" != "${HEAD_COMMIT}" ]; then
    echo "kiln: tag.sh left HEAD neither at the rebased patches nor one stamp commit on top of them" >&2
    exit 3
fi
expected=$(( 1 + $(find staging/src/k8s.io -mindepth 1 -maxdepth 1 -type d | wc -l) ))
# name, the commit it names (an annotated or signed tag peeled), and the tag object if any.
git for-each-ref --format='%(refname:strip=2) %(objecttype) %(objectname) %(*objectname)' refs/tags |
    awk -v t="${NEW_FORK_TAG}" '$1 == t || substr($1, length($1) - length(t)) == "/" t' |
    awk '$2 == "tag" { print $1, $4, $3; next } { print $1, $3 }' |
    LC_ALL=C sort >/out/tags
actual=$(wc -l </out/tags)
if [ "$actual" -ne "$expected" ] || awk -v s="${STAMP}" '$2 != s { bad = 1 } END { exit !bad }' /out/tags; then
    echo "kiln: expected ${expected} tags on the tagged commit ${STAMP}, found:" >&2
    cut -d' ' -f1,2 /out/tags >&2
    exit 3
fi
# The push list: only tag.sh's `git push $REMOTE <tag>` lines.
grep -E '^git push \$(REMOTE|\{REMOTE\}) [^ ]+$' /tmp/tag.sh.out | LC_ALL=C sort >/out/push || true
if [ -s /out/push ] && [ "$(wc -l </out/push)" -ne "$actual" ]; then
    echo "kiln: tag.sh printed $(wc -l </out/push) git push lines for ${actual} tags" >&2
    exit 3
fi
awk '{ print "refs/tags/" $1 }' /out/tags | xargs git -c pack.threads=1 -c pack.reuseDelta=false -c pack.reuseObject=false bundle create --quiet /out/tag.bundle "^${NEW_COMMIT}"
"#;

/// Branch k3s, apply the go.mod and Go edits, tidy against kiln's proxy, commit.
pub(super) const K3S_TIDY: &str = r#"set -euo pipefail
cd /in/k3s
BASE=$(git rev-parse HEAD)
git checkout --quiet -b "${NEW_FORK_TAG}"
cp -a /in/edit/. .
# The sums the fetch step checked against the checksum database (pinned since): offline,
# nothing else could vouch for a module go.sum does not list yet. Tidy keeps what it needs.
if [ -f /in/sums ]; then
    cat /in/sums >>go.sum
fi
go mod tidy
# Re-hash every tracked file: a same-size edit (go.mod's v1.28.1-k3s1 -> v1.28.2-k3s1) made
# within the second the index last saw the file can pass git's stat check unnoticed.
git add --renormalize -- .
git add -A
git commit --quiet --signoff -m "Update to ${NEW_K8S}"
git rev-parse HEAD >/out/head
git -c pack.threads=1 -c pack.reuseDelta=false -c pack.reuseObject=false bundle create --quiet /out/k3s.bundle "${BASE}..refs/heads/${NEW_FORK_TAG}"
"#;

/// Installs kiln's `curl` and `git` first in PATH (`/tmp/kiln-bin`): a URL resolves only to a file kiln
/// serves itself (`/tmp/kiln-served`, e.g. kubernetes' build/dependencies.yaml at the new tag,
/// from the upstream tree kiln holds) or one a fetch step pinned (`/in/urls`); with
/// `KILN_URL_RECORD=1` (the fetch step only) any other URL is downloaded — from
/// `KILN_DOWNLOAD_MIRROR/<host>/<path>` when a mirror is set — into `/out/urls`. Files are kept
/// as `<scheme>/<host>/<path>`; clones (`git clone URL`) as `clone/<scheme>/<host>/<path>/<ref>.bundle`.
/// Any URL it cannot resolve fails naming it.
pub(super) const URL_SHIM: &str = r#"set -euo pipefail
mkdir -p /tmp/kiln-bin /tmp/kiln-served
: >/tmp/kiln-url-failures
if [ -n "${KILN_DEPENDENCIES_YAML:-}" ]; then
    # As k3s's version.sh asks for it: at the Kubernetes version (the fork tag without its
    # -k3sN, or with it).
    for v in "${NEW_K8S}" "${NEW_FORK_TAG}"; do
        d=/tmp/kiln-served/https/raw.githubusercontent.com/kubernetes/kubernetes/$v/build
        mkdir -p "$d"
        printf '%s\n' "${KILN_DEPENDENCIES_YAML}" >"$d/dependencies.yaml"
    done
fi
cat >/tmp/kiln-bin/curl <<'KILN_CURL'
#!/bin/bash
# kiln's curl: only URLs kiln serves or a fetch step pinned (see kiln's release scripts). Every
# failure is also noted in /tmp/kiln-url-failures, which fails the step even when the calling
# script ignores curl's exit status.
set -euo pipefail
failures=${KILN_URL_FAILURES:-/tmp/kiln-url-failures}
fail() {
    echo "kiln: $*" >&2
    echo "$*" >>"$failures"
    exit 22
}
out=
remote_name=
create_dirs=
urls=()
while [ $# -gt 0 ]; do
    arg=$1
    shift
    case "$arg" in
    -V | --version) exec /usr/bin/curl --version ;;
    -o | --output)
        [ $# -gt 0 ] || fail "curl: $arg needs a file name"
        out=$1
        shift
        ;;
    --output=*) out=${arg#--output=} ;;
    -O | --remote-name) remote_name=1 ;;
    --create-dirs) create_dirs=1 ;;
    -H | --header | -A | --user-agent | -u | --user | -d | --data | -X | --request | -w | --write-out | \
        --retry | --retry-delay | --retry-max-time | --connect-timeout | --max-time | -m | -e | --referer | \
        -b | --cookie | -c | --cookie-jar | -T | --upload-file | -x | --proxy | -r | --range | -z | --time-cond | \
        -K | --config | --cacert | --capath | -E | --cert | --key)
        [ $# -gt 0 ] && shift
        ;;
    http://* | https://*) urls+=("$arg") ;;
    --*) ;;
    -?*)
        # Bundled short options (-sfL, -sfLo FILE, -LoFILE): o takes the rest or the next word.
        flags=${arg#-}
        while [ -n "$flags" ]; do
            f=${flags:0:1}
            flags=${flags:1}
            case "$f" in
            o)
                if [ -n "$flags" ]; then
                    out=$flags
                else
                    [ $# -gt 0 ] || fail "curl: -o needs a file name"
                    out=$1
                    shift
                fi
                flags=
                ;;
            O) remote_name=1 ;;
            H | A | u | d | X | w | m | e | b | c | T | x | r | z | K | E)
                [ -n "$flags" ] || { [ $# -gt 0 ] && shift; }
                flags=
                ;;
            esac
        done
        ;;
    *) ;;
    esac
done
if [ "${#urls[@]}" -ne 1 ]; then
    fail "curl takes one URL here, got ${#urls[@]}: ${urls[*]:-none}"
fi
url=${urls[0]}
scheme=${url%%://*}
rest=${url#*://}
case "$rest" in
*'?'* | *'#'* | *..* | */ | '')
    fail "curl ${url}: not a URL kiln can pin (query, fragment, '..' or no file name)" ;;
esac
case "${rest%%/*}" in
*@*) fail "curl ${url}: credentials in a URL would reach the lockfile; use a .netrc" ;;
esac
key="${scheme}/${rest}"
file=
for root in ${KILN_URL_ROOTS:-/tmp/kiln-served /in/urls /out/urls}; do
    if [ -f "${root}/${key}" ]; then
        file="${root}/${key}"
        break
    fi
done
if [ -z "$file" ] && [ "${KILN_URL_RECORD:-}" = 1 ]; then
    from=$url
    if [ -n "${KILN_DOWNLOAD_MIRROR:-}" ]; then
        from="${KILN_DOWNLOAD_MIRROR%/}/${rest}"
    fi
    part=$(mktemp /tmp/kiln-download.XXXXXX)
    if ! /usr/bin/curl -sfL --retry 2 -o "$part" -- "$from"; then
        rm -f "$part"
        fail "downloading ${url} (from ${from}) failed"
    fi
    mkdir -p "/out/urls/${key%/*}"
    mv "$part" "/out/urls/${key}"
    echo "kiln: fetched ${url}" >&2
    file="/out/urls/${key}"
fi
if [ -z "$file" ]; then
    fail "curl ${url}: no fetch step pinned this URL (this step is offline; only what scripts/download fetched, or kiln serves, is reachable)"
fi
if [ -n "$remote_name" ] && [ -z "$out" ]; then
    out=${rest##*/}
fi
if [ -n "$out" ] && [ "$out" != - ]; then
    if [ -n "$create_dirs" ]; then
        mkdir -p "$(dirname "$out")"
    fi
    cp "$file" "$out"
else
    cat "$file"
fi
KILN_CURL
chmod 0755 /tmp/kiln-bin/curl
cat >/tmp/kiln-bin/git <<'KILN_GIT'
#!/bin/bash
# kiln's git: `git clone` of a remote repository resolves only to a clone a fetch step pinned
# (kept as `clone/<scheme>/<host>/<path>/<ref>.bundle` under the same roots as kiln's curl);
# with KILN_URL_RECORD=1 (the fetch step only) any other is cloned — from
# KILN_DOWNLOAD_MIRROR/<host>/<path> when a mirror is set — and kept. The whole history of the
# one ref is kept (a --depth is not: a bundle of a shallow clone cannot be cloned on its own).
# Everything else is git itself.
set -euo pipefail
real=/usr/bin/git
failures=${KILN_URL_FAILURES:-/tmp/kiln-url-failures}
fail() {
    echo "kiln: $*" >&2
    echo "$*" >>"$failures"
    exit 128
}
# A clone behind git's own options (`git -C d clone`, `git -c k=v clone`) is refused by name
# rather than passed by: kiln pins only what it sees.
first=
skip=
for a in "$@"; do
    if [ -n "$skip" ]; then
        skip=
        continue
    fi
    case "$a" in
    -C | -c | --git-dir | --work-tree | --namespace | --exec-path | --config-env)
        first=opt
        skip=1
        ;;
    -*) first=opt ;;
    *)
        if [ "$a" = clone ] && [ -n "$first" ]; then
            fail "git $*: run \`git clone URL DIR\` itself for kiln to pin it"
        fi
        break
        ;;
    esac
done
[ "${1:-}" = clone ] || exec "$real" "$@"
args=("$@")
shift
branch=
quiet=
words=()
while [ $# -gt 0 ]; do
    arg=$1
    shift
    case "$arg" in
    --branch=*) branch=${arg#--branch=} ;;
    -b?*) branch=${arg#-b} ;;
    -b | --branch)
        [ $# -gt 0 ] || fail "git clone: $arg needs a branch"
        branch=$1
        shift
        ;;
    -q | --quiet) quiet=1 ;;
    --depth | --shallow-since | --shallow-exclude | -o | --origin | -c | --config | -j | --jobs | \
        --reference | --reference-if-able | --separate-git-dir | -u | --upload-pack | --template | --filter)
        [ $# -gt 0 ] && shift
        ;;
    --recurse-submodules* | --recursive)
        fail "git clone ${arg}: submodules are not pinned by kiln; clone each repository" ;;
    --end-of-options)
        words+=("$@")
        break
        ;;
    -*) ;;
    *) words+=("$arg") ;;
    esac
done
url=${words[0]:-}
case "$url" in
http://* | https://* | git://* | ssh://*) ;;
*@*:* | *.*:*)
    fail "git clone ${url}: write the repository as a URL (https://host/path) for kiln to pin it" ;;
*) exec "$real" "${args[@]}" ;;
esac
dir=${words[1]:-}
if [ -z "$dir" ]; then
    dir=${url%/}
    dir=${dir##*/}
    dir=${dir%.git}
fi
scheme=${url%%://*}
rest=${url#*://}
rest=${rest%/}
ref=${branch:-HEAD}
case "$rest/$ref" in
*'?'* | *'#'* | *..* | *//* | *[[:space:]]* | *%*)
    fail "git clone ${url} ${ref}: not a repository and ref kiln can pin" ;;
esac
case "${rest%%/*}" in
*@*) fail "git clone ${url}: credentials in a URL would reach the lockfile; use a credential helper" ;;
esac
# The ref as one path component (a branch may hold '/').
key="clone/${scheme}/${rest}/${ref//\//%2F}.bundle"
file=
for root in ${KILN_URL_ROOTS:-/tmp/kiln-served /in/urls /out/urls}; do
    if [ -f "${root}/${key}" ]; then
        file="${root}/${key}"
        break
    fi
done
branch_args=()
[ -n "$branch" ] && branch_args=(--branch "$branch")
if [ -z "$file" ] && [ "${KILN_URL_RECORD:-}" = 1 ]; then
    from=$url
    if [ -n "${KILN_DOWNLOAD_MIRROR:-}" ]; then
        from="${KILN_DOWNLOAD_MIRROR%/}/${rest}"
    fi
    work=$(mktemp -d /tmp/kiln-clone.XXXXXX)
    if ! GIT_ALLOW_PROTOCOL=http:https:git:ssh:file "$real" -c advice.detachedHead=false clone \
        --quiet --single-branch "${branch_args[@]}" --end-of-options "$from" "$work/repo" >"$work/log" 2>&1; then
        cat "$work/log" >&2
        fail "cloning ${url} ${ref} (from ${from}) failed"
    fi
    refs=(HEAD)
    if [ -n "$branch" ]; then
        for r in "refs/heads/${branch}" "refs/tags/${branch}"; do
            "$real" -C "$work/repo" rev-parse --quiet --verify "$r" >/dev/null && refs+=("$r")
        done
    else
        head=$("$real" -C "$work/repo" symbolic-ref --quiet HEAD || true)
        [ -n "$head" ] && refs+=("$head")
    fi
    # Repacked afresh first: a bundle would reuse the deltas of the pack the server sent, and
    # a server repacks when it likes; the pin is of the objects, byte for byte.
    if ! "$real" -C "$work/repo" -c pack.threads=1 repack -a -d -f -q >"$work/log" 2>&1 ||
        ! "$real" -C "$work/repo" -c pack.threads=1 bundle create --quiet "$work/bundle" \
            "${refs[@]}" >>"$work/log" 2>&1; then
        cat "$work/log" >&2
        fail "keeping the clone of ${url} ${ref} failed"
    fi
    mkdir -p "/out/urls/${key%/*}"
    mv "$work/bundle" "/out/urls/${key}"
    rm -rf "$work"
    echo "kiln: fetched ${url} ${ref}" >&2
    file="/out/urls/${key}"
fi
if [ -z "$file" ]; then
    fail "git clone ${url} ${ref}: no fetch step pinned this repository (this step is offline; only what scripts/download cloned, or scripts/build cloned when kiln walked it, is reachable)"
fi
"$real" -c advice.detachedHead=false clone --quiet --single-branch "${branch_args[@]}" \
    --end-of-options "$file" "$dir" >&2
"$real" -C "$dir" remote set-url origin "$url"
[ -n "$quiet" ] || echo "Cloning into '${dir}'... (kiln: pinned)" >&2
KILN_GIT
chmod 0755 /tmp/kiln-bin/git
export PATH="/tmp/kiln-bin:${PATH}"
# git past kiln's (`/usr/bin/git clone https://…`) reaches no network: only kiln's git, which
# pins what it fetches, lifts this for its own clone.
export GIT_ALLOW_PROTOCOL=file
# A URL kiln's curl refused or could not fetch fails the step, whatever the caller did; they
# are listed however the step ends.
url_failures() {
    if [ -s /tmp/kiln-url-failures ]; then
        echo "kiln: the step asked for URLs it could not have:" >&2
        sed 's/^/  /' /tmp/kiln-url-failures >&2
        : >/tmp/kiln-url-failures
        exit 3
    fi
}
trap url_failures EXIT
"#;

/// k3s's `scripts/download`, with network: every URL it asks for is fetched once and kept
/// (`/out/urls`), pinned by the lockfile; the build replays it offline from those files.
pub(super) const DOWNLOAD: &str = r#"set -euo pipefail
cd /in/k3s
# The release branch as k3s-tidy starts it: the edit applied, the fetch step's checked sums.
git checkout --quiet -b "${NEW_FORK_TAG}"
cp -a /in/edit/. .
if [ -f /in/sums ]; then
    cat /in/sums >>go.sum
fi
mkdir -p /out/urls
if [ ! -x scripts/download ]; then
    echo "kiln: k3s's scripts/download is not executable" >&2
    exit 3
fi
export KILN_URL_RECORD=1
./scripts/download
url_failures
# scripts/build clones too (k3s clones its CNI plugins there). Walk it here, with network and a
# go that compiles nothing (`go build`/`go install` only touch their -o file), so that every
# clone and URL it asks for is pinned now; the build replays them offline. Where the walk
# stops early, what comes after is not pinned, and the build names it.
if [ -x scripts/build ]; then
    go=$(command -v go)
    mkdir -p /tmp/kiln-walk
    cat >/tmp/kiln-walk/go <<KILN_GO
#!/bin/bash
case "\${1:-}" in
build | install)
    out=
    prev=
    for a in "\$@"; do
        [ "\$prev" = -o ] && out=\$a
        case "\$a" in -o=*) out=\${a#-o=} ;; esac
        prev=\$a
    done
    if [ -n "\$out" ]; then
        mkdir -p "\$(dirname "\$out")"
        : >"\$out"
        chmod 0755 "\$out"
    fi
    exit 0
    ;;
esac
exec "${go}" "\$@"
KILN_GO
    chmod 0755 /tmp/kiln-walk/go
    walked=0
    PATH="/tmp/kiln-bin:/tmp/kiln-walk:${PATH}" ./scripts/build >/tmp/kiln-walk.log 2>&1 || walked=$?
    grep '^kiln: fetched' /tmp/kiln-walk.log >&2 || true
    if [ "$walked" -ne 0 ]; then
        echo "kiln: walking scripts/build for its clones stopped early (status ${walked}):" >&2
        tail -n 5 /tmp/kiln-walk.log | sed 's/^/  /' >&2
    fi
fi
url_failures
"#;

/// Build k3s the way k3s's own Dockerfile does (never dapper's `make`): `scripts/download`
/// replayed offline from what the fetch step pinned, `scripts/build`, `scripts/package-cli`.
/// A k3s without `scripts/build` is built by `SKIP_VALIDATE=1 make`, as the runbook does.
pub(super) const BUILD: &str = r#"set -euo pipefail
cd /in/k3s
git fetch --quiet /in/k3s.bundle "refs/heads/${NEW_FORK_TAG}:refs/heads/${NEW_FORK_TAG}"
git checkout --quiet "${NEW_FORK_TAG}"
if [ -x scripts/build ]; then
    if [ -x scripts/download ]; then
        ./scripts/download
    fi
    ./scripts/build
    if [ -x scripts/package-cli ]; then
        ./scripts/package-cli
    fi
else
    SKIP_VALIDATE=1 make
fi
url_failures
mkdir -p /out/artifacts
cp -a dist/artifacts/. /out/artifacts/
"#;

/// Resolve k3s's module graph after the go.mod edit, with network: kiln's proxy first, then
/// what earlier fetches kept, then the module proxy (`KILN_MODULE_PROXY`, not part of the key: the outputs are pinned). Keeps,
/// in GOPROXY layout, every module version Go fetched that kiln does not serve itself
/// (`KILN_SERVED`), and their go.sum lines.
pub(super) const FETCH: &str = r#"set -euo pipefail
# No globbing: module paths are data here.
set -f
cd /in/k3s
# What k3s's committed go.sum pins, before the edit: `module version[/go.mod]`.
sed -n 's/^\([^ ]*\) \([^ ]*\) h1:.*/\1 \2/p' go.sum >/tmp/pinned 2>/dev/null || : >/tmp/pinned
cp -a /in/edit/. .
# What earlier fetches fetched (/cache/fetched) before the network: Go checks what it reads
# there against go.sum and the checksum database as it checks any download (only what one of
# them covers is ever kept there, below).
export GOMODCACHE=/tmp/kiln-fetch GOPROXY="file:///in/proxy,file:///cache/fetched,${KILN_MODULE_PROXY}"
if ! go mod tidy >/tmp/fetch.log 2>&1 || ! go mod download >>/tmp/fetch.log 2>&1; then
    echo "kiln: resolving k3s's modules through ${KILN_MODULE_PROXY} failed:" >&2
    tail -n 20 /tmp/fetch.log >&2
    exit 3
fi
# Whether module path $1 (as written or case-escaped) is under one of the prefixes $2.
under() {
    local p
    for p in $2; do
        case "$1/" in "$p"/*) return 0 ;; esac
    done
    return 1
}
served() { under "$1" "${KILN_SERVED}"; }
cd "${GOMODCACHE}/cache/download"
mkdir -p /out/proxy
find . -path '*/@v/*' -type f \( -name '*.mod' -o -name '*.zip' -o -name '*.info' \) | LC_ALL=C sort |
while read -r f; do
    module=${f#./}
    module=${module%%/@v/*}
    served "$module" && continue
    mkdir -p "/out/proxy/${f%/*}"
    case "$f" in
    *.info)
        # Only what every proxy says the same way: a proxy may add fields (Origin) that others
        # leave out, and Go keeps them.
        version=$(sed -n 's/.*"Version":"\([^"]*\)".*/\1/p' "$f")
        time=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$f")
        printf '{"Version":"%s","Time":"%s"}\n' "$version" "$time" >"/out/proxy/$f"
        ;;
    *) cp "$f" "/out/proxy/$f" ;;
    esac
done
# The version lists, sorted: Go appends to its own in download order.
find /out/proxy -type d -name '@v' | while read -r d; do
    find "$d" -maxdepth 1 -name '*.mod' -printf '%f\n' | sed 's/\.mod$//' | LC_ALL=C sort >"$d/list"
done
# Kept for later fetches, best effort: only a .mod or .zip that Go checks whenever it reads it
# (its path is under the checksum database, or k3s's committed go.sum pins it); no .info
# (nothing checks it) and no version lists (a query always asks the module proxy). Each file
# is written whole aside and renamed into place, never replacing one already kept.
keep() {
    local f=$1 module version kind key tmp
    module=${f#./}
    module=${module%%/@v/*}
    version=${f##*/}
    kind=${version##*.}
    version=${version%.*}
    if under "$module" "${KILN_NOSUMDB}"; then
        key="$(printf '%s' "$module" | sed 's/!\([a-z]\)/\U\1/g') $(printf '%s' "$version" | sed 's/!\([a-z]\)/\U\1/g')"
        [ "$kind" = mod ] && key="$key/go.mod"
        grep -qxF -- "$key" /tmp/pinned || return 0
    fi
    [ -e "/cache/fetched/$f" ] && return 0
    mkdir -p "/cache/fetched/${f%/*}" || return 0
    tmp=$(mktemp "/cache/fetched/${f%/*}/.kiln.XXXXXX") || return 0
    cp "$f" "$tmp" && mv -n "$tmp" "/cache/fetched/$f"
    rm -f "$tmp"
    return 0
}
cd /out/proxy
find . -type f \( -name '*.mod' -o -name '*.zip' \) | while read -r f; do
    keep "$f" || true
done
cd /in/k3s
while read -r module version sum; do
    served "$module" || printf '%s %s %s\n' "$module" "$version" "$sum"
done <go.sum | LC_ALL=C sort >/out/sums
"#;

#[cfg(test)]
mod tests {
    use super::URL_SHIM;

    /// The shim installed from the here-document `marker`, written into `dir` and run there
    /// as an offline step runs it: pins under `root`, refusals noted in `failures`.
    fn offline<'a>(
        dir: &'a std::path::Path,
        marker: &str,
        root: &'a std::path::Path,
        failures: &'a std::path::Path,
    ) -> impl Fn(&[&str]) -> std::process::Output + 'a {
        let shim = dir.join(format!("{}-shim", marker.to_ascii_lowercase()));
        std::fs::write(&shim, installed(marker)).unwrap();
        move |args: &[&str]| {
            std::process::Command::new("bash")
                .arg(&shim)
                .args(args)
                .current_dir(dir)
                .env("KILN_URL_ROOTS", root)
                .env("KILN_URL_FAILURES", failures)
                .env_remove("KILN_URL_RECORD")
                .output()
                .unwrap()
        }
    }

    /// The script the steps install from the here-document delimited by `marker`.
    fn installed(marker: &str) -> &'static str {
        let open = format!("<<'{marker}'\n");
        let start = URL_SHIM.find(&open).unwrap() + open.len();
        let end = URL_SHIM.find(&format!("\n{marker}\n")).unwrap();
        &URL_SHIM[start..=end]
    }

    fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn kilns_git_clones_only_pinned_repositories_in_every_argument_form() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        git(&src, &["init", "--quiet", "--initial-branch=main"]);
        std::fs::write(src.join("f"), "one\n").unwrap();
        git(&src, &["add", "f"]);
        git(&src, &["commit", "--quiet", "-m", "one"]);
        git(&src, &["tag", "-a", "-m", "v1", "v1"]);
        let tagged = git(&src, &["rev-parse", "HEAD"]);
        std::fs::write(src.join("f"), "two\n").unwrap();
        git(&src, &["commit", "--quiet", "-am", "two"]);
        let head = git(&src, &["rev-parse", "HEAD"]);
        // Pinned as the fetch step keeps them: the tag, and the default branch (no --branch).
        let root = dir.path().join("urls");
        let pins = root.join("clone/https/example.com/r.git");
        std::fs::create_dir_all(&pins).unwrap();
        for (bundle, refs) in [
            ("v1", vec!["v1^{commit}", "refs/tags/v1"]),
            ("HEAD", vec!["HEAD", "refs/heads/main"]),
        ] {
            let mut args = vec!["bundle", "create", "--quiet"];
            let path = pins.join(format!("{bundle}.bundle"));
            args.push(path.to_str().unwrap());
            if bundle == "v1" {
                // A bundle's HEAD, as the fetch step's clone of --branch v1 has it.
                git(&src, &["checkout", "--quiet", "--detach", "v1"]);
                args.extend(["HEAD", "refs/tags/v1"]);
            } else {
                git(&src, &["checkout", "--quiet", "main"]);
                args.extend(refs.iter().copied());
            }
            git(&src, &args);
        }
        let failures = dir.path().join("failures");
        let run = offline(dir.path(), "KILN_GIT", &root, &failures);
        let url = "https://example.com/r.git";
        for (args, out, commit) in [
            (
                vec![
                    "clone",
                    "--quiet",
                    "--single-branch",
                    "--depth=1",
                    "--branch=v1",
                    url,
                    "c1",
                ],
                "c1",
                &tagged,
            ),
            (
                vec!["clone", "-b", "v1", "--depth", "1", url, "c2"],
                "c2",
                &tagged,
            ),
            (
                vec!["clone", "--branch", "v1", "--end-of-options", url, "c3"],
                "c3",
                &tagged,
            ),
            (vec!["clone", "-bv1", url, "c4"], "c4", &tagged),
            (vec!["clone", url], "r", &head),
        ] {
            let ran = run(&args);
            assert!(
                ran.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&ran.stderr)
            );
            let cloned = dir.path().join(out);
            assert_eq!(&git(&cloned, &["rev-parse", "HEAD"]), commit, "{args:?}");
            assert_eq!(
                git(&cloned, &["remote", "get-url", "origin"]).trim(),
                url,
                "{args:?}"
            );
        }
        assert!(!failures.exists() || std::fs::read_to_string(&failures).unwrap().is_empty());

        // Anything not pinned is refused and noted; scp-like remotes are refused as unpinnable.
        for (args, said) in [
            (
                vec!["clone", "--branch=v2", url, "x1"],
                "git clone https://example.com/r.git v2: no fetch step pinned this repository",
            ),
            (
                vec!["clone", "https://example.com/other.git", "x2"],
                "git clone https://example.com/other.git HEAD: no fetch step pinned",
            ),
            (
                vec!["clone", "git@example.com:r.git", "x3"],
                "write the repository as a URL",
            ),
            (
                vec!["clone", "--recurse-submodules", url, "x4"],
                "submodules are not pinned",
            ),
            (
                vec!["-C", "sub", "clone", url, "x5"],
                "run `git clone URL DIR` itself",
            ),
            (
                vec!["clone", "https://user:token@example.com/r.git", "x6"],
                "credentials in a URL",
            ),
            (
                vec!["clone", "--branch=a%b", url, "x7"],
                "not a repository and ref kiln can pin",
            ),
        ] {
            let ran = run(&args);
            assert!(!ran.status.success(), "{args:?}");
            let stderr = String::from_utf8_lossy(&ran.stderr);
            assert!(stderr.contains(said), "{args:?}: {stderr}");
            assert!(
                std::fs::read_to_string(&failures).unwrap().contains(said),
                "{args:?}"
            );
        }
        // Everything else is git itself: a local clone, and other commands.
        let ran = run(&["clone", "--quiet", src.to_str().unwrap(), "local"]);
        assert!(
            ran.status.success(),
            "{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        let ran = run(&["-C", "local", "rev-parse", "HEAD"]);
        assert_eq!(String::from_utf8_lossy(&ran.stdout), head);
    }

    #[test]
    fn kilns_curl_serves_pinned_urls_in_every_argument_form_and_notes_each_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("urls");
        let pinned = root.join("https/example.com/a/b.tar");
        std::fs::create_dir_all(pinned.parent().unwrap()).unwrap();
        std::fs::write(&pinned, "pinned bytes").unwrap();
        let failures = dir.path().join("failures");
        let run = offline(dir.path(), "KILN_CURL", &root, &failures);
        let url = "https://example.com/a/b.tar";
        for (args, file) in [
            (vec!["-sfL", url, "-o", "o1"], "o1"),
            (vec!["-sfLo", "o2", url], "o2"),
            (vec!["-LoO3", url], "O3"),
            (vec!["--output=o4", "--compressed", "-H", "X: y", url], "o4"),
            (vec!["-o", "sub/o5", "--create-dirs", url], "sub/o5"),
            (vec!["-sfLO", url], "b.tar"),
        ] {
            let out = run(&args);
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                std::fs::read_to_string(dir.path().join(file)).unwrap(),
                "pinned bytes",
                "{args:?}"
            );
        }
        let out = run(&["--compressed", "-sfL", url]);
        assert_eq!(out.stdout, b"pinned bytes");
        assert!(!failures.exists() || std::fs::read_to_string(&failures).unwrap().is_empty());

        // Refused, each noted for the step to fail on even if the caller ignores the status.
        for (args, said) in [
            (
                vec!["-sfL", "https://example.com/other.tar"],
                "no fetch step pinned this URL",
            ),
            (
                vec!["https://example.com/a/../../etc/passwd"],
                "not a URL kiln can pin",
            ),
            (
                vec!["https://example.com/a/b.tar?x=1"],
                "not a URL kiln can pin",
            ),
            (vec!["-x", "http://proxy:3128"], "takes one URL here, got 0"),
            (
                vec![url, "https://example.com/a/c"],
                "takes one URL here, got 2",
            ),
            (vec![url, "-o"], "-o needs a file name"),
            (
                vec!["https://user:token@example.com/a/b.tar"],
                "credentials in a URL",
            ),
        ] {
            let out = run(&args);
            assert_eq!(out.status.code(), Some(22), "{args:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(said), "{args:?}: {stderr}");
            assert!(
                std::fs::read_to_string(&failures).unwrap().contains(said),
                "{args:?}"
            );
        }
    }

    /// The rebase step's script (run on the host, its paths moved into a temp dir) makes the
    /// very commits `git rebase --onto` makes: authors, dates, zones and messages kept, a patch
    /// already upstream dropped, an empty one kept; a conflict names its path and exits 3.
    #[test]
    fn the_rebase_script_makes_git_rebase_s_commits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let git = |cwd: &std::path::Path, args: &[&str], date: Option<&str>| {
            let mut command = std::process::Command::new("git");
            command
                .current_dir(cwd)
                .args(args)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_AUTHOR_NAME", "K3s Developer")
                .env("GIT_AUTHOR_EMAIL", "dev@kiln.invalid")
                .env("GIT_COMMITTER_NAME", "Captain")
                .env("GIT_COMMITTER_EMAIL", "captain@kiln.invalid")
                .env("GIT_COMMITTER_DATE", "@1700000000 +0000");
            if let Some(date) = date {
                command.env("GIT_AUTHOR_DATE", date);
            }
            let out = command.output().unwrap();
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let repo = root.join("repo");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "--quiet", "-b", "main"], None);
        std::fs::write(repo.join("f"), "a\n").unwrap();
        std::fs::write(repo.join("g"), "g\n").unwrap();
        git(&repo, &["add", "."], None);
        git(
            &repo,
            &["commit", "--quiet", "-m", "base"],
            Some("@1600000000 +0100"),
        );
        let old = git(&repo, &["rev-parse", "HEAD"], None);
        std::fs::write(repo.join("f"), "x\n").unwrap();
        git(
            &repo,
            &["commit", "--quiet", "-am", "upstream"],
            Some("@1600000100 +0100"),
        );
        git(&repo, &["tag", "v2"], None);
        let new = git(&repo, &["rev-parse", "HEAD"], None);
        git(&repo, &["checkout", "--quiet", "-b", "fork", &old], None);
        std::fs::write(repo.join("f"), "x\n").unwrap();
        git(
            &repo,
            &["commit", "--quiet", "-am", "already upstream"],
            Some("@1600000200 +0200"),
        );
        git(
            &repo,
            &["commit", "--quiet", "--allow-empty", "-m", "empty"],
            Some("@1600000300 -0500"),
        );
        std::fs::write(repo.join("g"), "h\n").unwrap();
        git(
            &repo,
            &[
                "commit",
                "--quiet",
                "-am",
                "patch\n\n  body\n\nSigned-off-by: d",
            ],
            Some("@1600000400 +0000"),
        );
        let tip = git(&repo, &["rev-parse", "HEAD"], None);

        // The script on a fresh clone (no work tree) of `repo` named `name`, its outputs in
        // `name-out`.
        let run = |name: &str, new: &str| {
            let fork = root.join(name);
            git(
                root,
                &[
                    "clone",
                    "--quiet",
                    "--no-checkout",
                    "--no-tags",
                    &repo.to_string_lossy(),
                    &fork.to_string_lossy(),
                ],
                None,
            );
            let out = root.join(format!("{name}-out"));
            std::fs::create_dir_all(&out).unwrap();
            let script = super::REBASE
                .replace("/in/fork", &fork.to_string_lossy())
                .replace("/in/upstream", &repo.to_string_lossy())
                .replace("/out/", &format!("{}/", out.display()))
                .replace("/tmp/message", &root.join("message").to_string_lossy());
            std::process::Command::new("bash")
                .args(["-c", &script])
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_AUTHOR_NAME", "Captain")
                .env("GIT_AUTHOR_EMAIL", "captain@kiln.invalid")
                .env("GIT_COMMITTER_NAME", "Captain")
                .env("GIT_COMMITTER_EMAIL", "captain@kiln.invalid")
                .env("GIT_AUTHOR_DATE", "@1700000000 +0000")
                .env("GIT_COMMITTER_DATE", "@1700000000 +0000")
                .env("NEW_K8S", "v2")
                .env("NEW_COMMIT", new)
                .env("OLD_COMMIT", &old)
                .env("PATCHES_TIP", &tip)
                .output()
                .unwrap()
        };
        let output = run("fork", &new);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let head = std::fs::read_to_string(root.join("fork-out/head")).unwrap();

        let rebased = root.join("rebased");
        git(
            root,
            &[
                "clone",
                "--quiet",
                &repo.to_string_lossy(),
                &rebased.to_string_lossy(),
            ],
            None,
        );
        git(&rebased, &["checkout", "--quiet", "--detach", &tip], None);
        git(
            &rebased,
            &["rebase", "--quiet", "--onto", &new, &old, &tip],
            Some("@1700000000 +0000"),
        );
        let want = git(&rebased, &["rev-parse", "HEAD"], None);
        assert_eq!(head.trim(), want);
        let subjects = git(
            &rebased,
            &["log", "--reverse", "--format=%s", &format!("{new}..HEAD")],
            None,
        );
        assert_eq!(subjects, "empty\npatch");

        // The patch's change made upstream differently: a conflict on g.
        git(&repo, &["checkout", "--quiet", "main"], None);
        std::fs::write(repo.join("g"), "upstream's g\n").unwrap();
        git(&repo, &["commit", "--quiet", "-am", "g upstream"], None);
        git(&repo, &["tag", "-f", "v2"], None);
        let moved = git(&repo, &["rev-parse", "HEAD"], None);
        let output = run("fork2", &moved);
        assert_eq!(output.status.code(), Some(3));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("conflicting paths:\n  g\n"), "{stderr}");
        assert!(stderr.contains("(applying "), "{stderr}");
    }
}
