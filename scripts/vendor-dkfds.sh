#!/usr/bin/env bash
# Vendors Det Fælles Designsystem (npm `dkfds`, pinned) into static/vendor/dkfds/: the minified
# stylesheet and script, only the fonts and icons the stylesheet refers to, and the licence.
# The result is committed, so `make run` needs neither npm nor the network; run this again
# only to move to another version (change VERSION and INTEGRITY together).
set -euo pipefail
VERSION=11.2.0
INTEGRITY=$(npm view "dkfds@$VERSION" dist.integrity)
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUT="$HERE/static/vendor/dkfds"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack "dkfds@$VERSION" --silent >/dev/null)
GOT="sha512-$(openssl dgst -sha512 -binary "$WORK/dkfds-$VERSION.tgz" | base64 -w0)"
[ "$GOT" = "$INTEGRITY" ] || { echo "dkfds $VERSION: integrity mismatch" >&2; exit 1; }
tar xzf "$WORK/dkfds-$VERSION.tgz" -C "$WORK"
DIST="$WORK/package/dist"
rm -rf "$OUT" && mkdir -p "$OUT/css" "$OUT/js"
cp "$DIST/css/dkfds.min.css" "$OUT/css/"
cp "$DIST/js/dkfds.min.js" "$OUT/js/"
cp "$WORK/package/LICENSE.md" "$OUT/LICENSE.md"
# Every url(../…) the stylesheet names, and nothing else.
grep -o 'url(\.\./[^)]*)' "$DIST/css/dkfds.min.css" | sed -e 's/^url(\.\.\///' -e 's/)$//' \
  -e 's/[?#].*$//' | sort -u | while read -r rel; do
  if [ -f "$DIST/$rel" ]; then mkdir -p "$OUT/$(dirname "$rel")" && cp "$DIST/$rel" "$OUT/$rel"; fi
done
printf 'dkfds %s from the npm registry, %s\n' "$VERSION" "$INTEGRITY" > "$OUT/VERSION"
du -sh "$OUT"
