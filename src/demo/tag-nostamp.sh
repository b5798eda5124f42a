#!/usr/bin/env bash
# tag.sh TAG: the fork's release helper in its shape that commits nothing: it checks that
# every command builds and tags the patch head itself (the version comes from build flags),
# for this tree and every staging module.
set -euo pipefail

TAG=${1:?usage: tag.sh TAG (for example v1.28.2-k3s1)}
if git rev-parse --quiet --verify "refs/tags/${TAG}" >/dev/null; then
	echo "tag.sh: tag ${TAG} already exists" >&2
	exit 1
fi
for old in $(git tag --points-at HEAD); do
	git tag -d "${old}" >/dev/null
done

for cmd in cmd/*/; do
	go build -o /dev/null "./${cmd}"
done

git tag "${TAG}"
for dir in staging/src/k8s.io/*/; do
	module=$(basename "${dir}")
	git tag "staging/src/k8s.io/${module}/${TAG}"
done

for tag in $(git tag --points-at HEAD); do
	echo "git push \$REMOTE ${tag}"
done
