#!/bin/sh
# Claude Code status line for Faregate: prints your budget, e.g. "$3.20 of $10.00 today".
#
# In ~/.claude/settings.json:
#   "statusLine": {"type": "command", "command": "/path/to/statusline.sh"}
#
# Claude Code runs it with the session JSON on stdin (not needed here) and shows the first line
# printed. The gateway is ANTHROPIC_BASE_URL (or FAREGATE_GATEWAY), the key FAREGATE_KEY, else
# ANTHROPIC_API_KEY, else ANTHROPIC_AUTH_TOKEN: the same settings Claude Code uses to reach
# Faregate. Needs curl, or `faregate` on PATH. The key goes to curl on stdin, never on a
# command line other users could read.

cat >/dev/null 2>&1 || true

base=${FAREGATE_GATEWAY:-${ANTHROPIC_BASE_URL:-http://127.0.0.1:8787}}
base=${base%/}
key=${FAREGATE_KEY:-${ANTHROPIC_API_KEY:-$ANTHROPIC_AUTH_TOKEN}}

if [ -z "$key" ]; then
    echo "Faregate: no key (set ANTHROPIC_API_KEY)"
    exit 0
fi

if command -v curl >/dev/null 2>&1; then
    line=$(printf 'x-api-key: %s\n' "$key" |
        curl -fsS --max-time 2 -H @- "$base/v1/me?format=statusline" 2>/dev/null)
elif command -v faregate >/dev/null 2>&1; then
    line=$(FAREGATE_KEY=$key faregate me --gateway "$base" --statusline 2>/dev/null)
else
    line="Faregate: install curl for the budget line"
fi

if [ -n "$line" ]; then
    printf '%s\n' "$line"
else
    echo "Faregate: budget unavailable"
fi
