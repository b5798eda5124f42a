#!/usr/bin/env bash
# tag.sh TAG: the fork's release helper in its newer shape. Stamps the version files, builds
# every command through hack/build-cmds.sh (kubernetes-style: the tree is staged under _output
# with rsync first), commits the stamp, and makes annotated tags for this tree and every
# staging module. It talks while it works; only its `git push ${REMOTE} <tag>` lines are the
# push list.
set -euo pipefail

TAG=${1:?usage: tag.sh TAG (for example v1.28.2-k3s1)}
if git rev-parse --quiet --verify "refs/tags/${TAG}" >/dev/null; then
	echo "tag.sh: tag ${TAG} already exists" >&2
	exit 1
fi
echo "+++ [tag.sh] releasing ${TAG} from $(git rev-parse --short HEAD)"

for old in $(git tag --points-at HEAD); do
	git tag -d "${old}" >/dev/null
done
git tag v0.0.0
trap 'git tag -d v0.0.0 >/dev/null 2>&1 || true' EXIT

COMMIT=$(git rev-parse HEAD)
VERSION=${TAG#v}
MAJOR=${VERSION%%.*}
REST=${VERSION#*.}
MINOR=${REST%%.*}
BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)

FILES="staging/src/k8s.io/client-go/pkg/version/base.go staging/src/k8s.io/component-base/version/base.go"
echo "+++ [tag.sh] stamping ${FILES}"
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

hack/build-cmds.sh

# shellcheck disable=SC2086
git add ${FILES}
git commit --quiet -m "${TAG}"

git tag -a -m "Kubernetes ${TAG}" "${TAG}"
for dir in staging/src/k8s.io/*/; do
	module=$(basename "${dir}")
	git tag -a -m "k8s.io/${module} ${TAG}" "staging/src/k8s.io/${module}/${TAG}"
done
echo "+++ [tag.sh] $(git tag --points-at HEAD | wc -l) tags on $(git rev-parse --short HEAD); push them with:"

for tag in $(git tag --points-at HEAD); do
	echo "git push \${REMOTE} ${tag}"
done
echo "+++ [tag.sh] done"
