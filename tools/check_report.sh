#!/usr/bin/env bash
# Checks an evaluation report (report.html written by `mmattn eval`):
#   1. it is self-contained: the only URL in it is the SVG namespace (no scripts, images, fonts
#      or style sheets fetched from anywhere);
#   2. it renders: a headless Chromium screenshot (1200x1600) is written to OUT.png and is
#      non-trivial (> 10 KB; a blank page is ~5 KB).
# Without Chromium / Chrome (chromium, chromium-browser, google-chrome), step 2 prints
# "skipped: no chromium" and the script exits 0.
# Usage: tools/check_report.sh PATH.html [OUT.png]   (OUT.png defaults to PATH.png)
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 PATH.html [OUT.png]" >&2
  exit 2
fi
html=$1
out=${2:-${html%.html}.png}
[ -f "$html" ] || { echo "check_report: FAIL: no such file: $html" >&2; exit 1; }

external=$(grep -o 'https\?://[^"'"'"' <>)]*' "$html" | grep -vx 'http://www.w3.org/2000/svg' || true)
if [ -n "$external" ]; then
  echo "check_report: FAIL: $html references external resources:" >&2
  echo "$external" | sort -u | head -5 >&2
  exit 1
fi
echo "check_report: self-contained: ok"

browser=""
for b in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$b" >/dev/null 2>&1; then
    browser=$b
    break
  fi
done
if [ -z "$browser" ]; then
  echo "check_report: skipped: no chromium (tried chromium, chromium-browser, google-chrome)"
  exit 0
fi

abs=$(realpath "$html")
url="file://$(printf '%s' "$abs" | sed -e 's/%/%25/g' -e 's/ /%20/g' -e 's/#/%23/g' -e 's/?/%3F/g')"
out_abs=$(realpath -m "$out")
mkdir -p "$(dirname "$out_abs")"
rm -f "$out_abs"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
rc=0
timeout 120 "$browser" --headless --disable-gpu --no-sandbox --hide-scrollbars --user-data-dir="$profile" \
  --screenshot="$out_abs" --window-size=1200,1600 "$url" >"$profile/log" 2>&1 || rc=$?
if [ ! -f "$out_abs" ]; then
  echo "check_report: FAIL: $browser wrote no screenshot (exit code $rc); its last output:" >&2
  tail -5 "$profile/log" >&2
  exit 1
fi
size=$(stat -c %s "$out_abs")
if [ "$size" -le 10240 ]; then
  echo "check_report: FAIL: $out_abs is only $size bytes (blank page?)" >&2
  exit 1
fi
echo "check_report: rendered with $browser: $out_abs ($size bytes): ok"
