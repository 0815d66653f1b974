#!/usr/bin/env bash
# Vendor axe-core (npm, pinned version and sha512) into .cache/axe-core (git-ignored) for the
# accessibility checks of tests/e2e/test_review_browser.py, which inject axe.min.js into every
# review page in Chromium. Needs npm; without it it says so and the browser test skips (or fails,
# under CI=true). Idempotent: does nothing when the pinned file is already there.
set -euo pipefail

VERSION=4.14.1
INTEGRITY="sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${AXE_CORE_DIR:-$root/.cache/axe-core}"

if [ -f "$dest/axe.min.js" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$VERSION" ]; then
  echo "axe-core $VERSION already at $dest"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "get-axe-core: npm not found; the accessibility checks in tests/e2e will skip" >&2
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "axe-core@$VERSION" --silent --loglevel=error >/dev/null)
tarball="$work/axe-core-$VERSION.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$actual" != "$INTEGRITY" ]; then
  echo "get-axe-core: axe-core-$VERSION.tgz does not match its pinned sha512" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work" package/axe.min.js package/LICENSE
mkdir -p "$dest"
cp "$work/package/axe.min.js" "$work/package/LICENSE" "$dest/"
echo "$VERSION" >"$dest/VERSION"
echo "axe-core $VERSION installed at $dest"
