#!/bin/bash
# Bring the pinned Claude Code CLI to the device in parts, one carried file per call:
#   here:   bash tools/fullscale/cli.sh pack            → .clicarry/claude.xz.00, .01, … (≤ 50 MiB each)
#   device: bash tools/fullscale/cli.sh take            → copies the carried parts to /tmp/clicarry and, once all
#           are there, unpacks the binary where phases.py points SPARKKIT_CLAUDE_DIR (/tmp/cc), checked by sha256
set -euo pipefail
case "${1:-}" in
pack)
  grep -qx '/.clicarry/' .git/info/exclude 2>/dev/null || echo '/.clicarry/' >> .git/info/exclude
  bin=$(readlink -f "${SPARKKIT_CLAUDE_DIR:-.sparkkit/claude-code}/node_modules/.bin/claude")
  rm -rf .clicarry && mkdir .clicarry
  sha256sum "$bin" | cut -d' ' -f1 > .clicarry/claude.sha256
  xz -T0 -6 -c "$bin" | split -d -b 50m - .clicarry/claude.xz.
  ls -la .clicarry ;;
take)
  mkdir -p /tmp/clicarry && cp .clicarry/claude.* /tmp/clicarry/ 2>/dev/null || true
  n=$(ls /tmp/clicarry/claude.xz.* 2>/dev/null | wc -l); want=${PARTS:-0}
  echo "CLI parts here: $n of $want"
  if [ "$n" -ge "$want" ] && [ "$want" -gt 0 ]; then
    exe=/tmp/cc/node_modules/@anthropic-ai/claude-code/bin/claude.exe
    mkdir -p "$(dirname "$exe")"
    cat /tmp/clicarry/claude.xz.* | xz -d > "$exe.partial"
    if [ "$(sha256sum "$exe.partial" | cut -d' ' -f1)" = "$(cat /tmp/clicarry/claude.sha256)" ]; then
      chmod +x "$exe.partial" && mv "$exe.partial" "$exe" && echo "CLI unpacked: $("$exe" --version)"
    else
      echo "CLI parts do not add up (sha256 differs): not unpacked"; rm -f "$exe.partial"
    fi
  fi ;;
*) echo "usage: cli.sh pack|take"; exit 2 ;;
esac
