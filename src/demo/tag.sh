#!/usr/bin/env bash
# tag.sh TAG: stamp the version files, commit them, and tag this tree and every staging
# module with TAG. The k3s-io fork's release helper, as kiln's demo world carries it; run it
# inside the Go build container at the head of the rebased k3s patches.
set -euo pipefail

TAG=${1:?usage: tag.sh TAG (for example v1.28.2-k3s1)}
if git rev-parse --quiet --verify "refs/tags/${TAG}" >/dev/null; then
	echo "tag.sh: tag ${TAG} already exists" >&2
	exit 1
fi

# Tags left at HEAD by an earlier attempt would be pushed along with the new ones.
for old in $(git tag --points-at HEAD); do
	git tag -d "${old}" >/dev/null
done

# While stamping, a v0.0.0 tag keeps the tree from describing itself as a pseudo-version.
git tag v0.0.0
trap 'git tag -d v0.0.0 >/dev/null 2>&1 || true' EXIT

COMMIT=$(git rev-parse HEAD)
VERSION=${TAG#v}
MAJOR=${VERSION%%.*}
REST=${VERSION#*.}
MINOR=${REST%%.*}
BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)

FILES="staging/src/k8s.io/client-go/pkg/version/base.go staging/src/k8s.io/component-base/version/base.go"
for file in ${FILES}; do
	sed -i \
		-e "s|^\([[:space:]]*gitMajor[[:space:]]*string = \).*|\1\"${MAJOR}\"|" \
		-e "s|^\([[:space:]]*gitMinor[[:space:]]*string = \).*|\1\"${MINOR}\"|" \
		-e "s|^\([[:space:]]*gitVersion[[:space:]]*string = \).*|\1\"${TAG}\"|" \
		-e "s|^\([[:space:]]*gitCommit[[:space:]]*string = \).*|\1\"${COMMIT}\"|" \
		-e "s|^\([[:space:]]*gitTreeState[[:space:]]*string = \).*|\1\"clean\"|" \
		-e "s|^\([[:space:]]*buildDate[[:space:]]*string = \).*|\1\"${BUILD_DATE}\"|" \
		"${file}"
done

# Every command must still compile with the stamped files.
for cmd in cmd/*/; do
	go build -o /dev/null "./${cmd}"
done

# shellcheck disable=SC2086
git add ${FILES}
git commit --quiet -m "${TAG}"

git tag "${TAG}"
for dir in staging/src/k8s.io/*/; do
	module=$(basename "${dir}")
	git tag "staging/src/k8s.io/${module}/${TAG}"
done

for tag in $(git tag --points-at HEAD); do
	echo "git push \$REMOTE ${tag}"
done
