# Shared settings and helpers of the deploy/local scripts. Sourced, not run.
# shellcheck shell=bash

set -euo pipefail

FAREGATE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FAREGATE_CACHE="${FAREGATE_CACHE:-$HOME/.cache/faregate}"
TANSU_VERSION="0.6.0"
TANSU_BIN="${FAREGATE_TANSU:-$FAREGATE_CACHE/tansu-$TANSU_VERSION/bin/tansu}"
CHFRONT_DIR="$FAREGATE_ROOT/deploy/local/chfront"
CHFRONT_REQUIREMENTS="$CHFRONT_DIR/requirements.txt"
APT_PACKAGES=(cmake g++ make pkg-config libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev curl python3-venv docker-compose nginx caddy)

# A message that cannot be written (stderr is a pipe whose reader left) is dropped, never fatal:
# cleanup paths log, and must finish however the output is redirected.
log() { printf '[faregate] %s\n' "$*" >&2 || true; }
die() { printf '[faregate] error: %s\n' "$*" >&2; exit 1; }

# The venv is keyed by the requirements' hash, so a change of pins gets a fresh venv.
chfront_venv() {
    local hash
    hash="$(sha256sum "$CHFRONT_REQUIREMENTS" | cut -c1-12)"
    printf '%s/venv-chfront-%s' "$FAREGATE_CACHE" "$hash"
}

# The venv of deploy/validate's Kubernetes schema checks, keyed like the front's.
K8S_REQUIREMENTS="$FAREGATE_ROOT/deploy/k8s/requirements.txt"
k8s_validate_venv() {
    local hash
    hash="$(sha256sum "$K8S_REQUIREMENTS" | cut -c1-12)"
    printf '%s/venv-k8s-%s' "$FAREGATE_CACHE" "$hash"
}

# The venv with the official anthropic and openai SDKs the gateway tests drive.
CLIENTS_REQUIREMENTS="$FAREGATE_ROOT/tests/clients/requirements.txt"
clients_venv() {
    local hash
    hash="$(sha256sum "$CLIENTS_REQUIREMENTS" | cut -c1-12)"
    printf '%s/venv-clients-%s' "$FAREGATE_CACHE" "$hash"
}

# The venv with the LiteLLM proxy that tests/tests/litellm.rs runs (its own: LiteLLM pins SDK
# versions that clash with the clients' venv).
LITELLM_REQUIREMENTS="$FAREGATE_ROOT/tests/litellm/requirements.txt"
litellm_venv() {
    local hash
    hash="$(sha256sum "$LITELLM_REQUIREMENTS" | cut -c1-12)"
    printf '%s/venv-litellm-%s' "$FAREGATE_CACHE" "$hash"
}

# The venv of tests/tests/gateway_configs.rs: PyYAML and Envoy's API (envoy-data-plane).
GATEWAYS_REQUIREMENTS="$FAREGATE_ROOT/tests/gateways/requirements.txt"
gateways_venv() {
    local hash
    hash="$(sha256sum "$GATEWAYS_REQUIREMENTS" | cut -c1-12)"
    printf '%s/venv-gateways-%s' "$FAREGATE_CACHE" "$hash"
}

# The AI coding CLIs the gateway tests drive (Claude Code, Codex), pinned in
# tests/clients/package.json and installed with npm into a prefix keyed by its hash.
CLIS_PACKAGE="$FAREGATE_ROOT/tests/clients/package.json"
clis_prefix() {
    local hash
    hash="$(sha256sum "$CLIS_PACKAGE" | cut -c1-12)"
    printf '%s/clis-%s' "$FAREGATE_CACHE" "$hash"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# pid_alive PIDFILE NAME: true when the pid in PIDFILE runs a command line containing NAME.
pid_alive() {
    local pidfile="$1" name="$2" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$name"
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds.
wait_until() {
    local seconds="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.2
    done
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
