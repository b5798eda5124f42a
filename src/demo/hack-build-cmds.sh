#!/usr/bin/env bash
# hack/build-cmds.sh: builds every command the way kubernetes' hack/ scripts do: from a copy
# of the tree staged under _output/ (rsync), binaries into _output/bin.
set -euo pipefail
root=$(pwd)
stage=_output/local/go/src/k8s.io/kubernetes
mkdir -p "${stage}" _output/bin
rsync -a --delete --exclude=/_output --exclude=/.git ./ "${stage}/"
echo "+++ [hack] Building go targets for $(go env GOOS)/$(go env GOARCH):"
cd "${stage}"
for cmd in cmd/*/; do
	name=$(basename "${cmd}")
	echo "    k8s.io/kubernetes/cmd/${name}"
	go build -o "${root}/_output/bin/${name}" "./${cmd}"
done
