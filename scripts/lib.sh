# Shared helpers of Pier's scripts (sourced, not run).
set -euo pipefail
PIER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# cargo-fuzz for scripts/fuzz parsers (0.13 builds with rustc 1.95; it needs nightly flags, given by RUSTC_BOOTSTRAP=1).
CARGO_FUZZ_VERSION=0.13.2

# cargo_tool BIN CRATE VERSION [--locked]: install a cargo binary unless that version is already installed.
cargo_tool() {
  local bin="$1" crate="$2" version="$3" locked="${4:-}"
  if command -v "$bin" >/dev/null && "$bin" --version 2>/dev/null | grep -qw -- "$version"; then
    note "$crate $version present"
  else
    note "cargo install $crate $version (first time only; several minutes on 2 cores)"
    cargo install "$crate" --version "$version" $locked
  fi
}

# apt_install PKG...: install the Debian packages that are missing (runs apt-get update once per call).
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  note "apt-get install ${missing[*]} (first time only)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Environment for running wrangler offline and without prompts: its own Node 22 (wrangler 4 needs Node >= 22.12),
# no telemetry, no login, config kept inside the project.
wrangler_env() {
  export PATH="$PIER_ROOT/node_modules/.bin:$PATH"
  export WRANGLER_SEND_METRICS=false WRANGLER_SEND_ERROR_REPORTS=false WRANGLER_HIDE_BANNER=true
  export CLOUDFLARE_CF_FETCH_ENABLED=false
  export XDG_CONFIG_HOME="$PIER_ROOT/.wrangler/xdg"
}

# free_port: print a TCP port that is free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL SECONDS PID: wait until URL answers at all (any HTTP status), failing early if PID died.
wait_http() {
  local url="$1" secs="$2" pid="$3" i
  for ((i = 0; i < secs * 4; i++)); do
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url")" != 000 ] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.25
  done
  return 1
}

# stop_pid PID: SIGTERM, then SIGKILL after 10 s; also takes the process group's children down.
stop_pid() {
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  kill -KILL "$pid" 2>/dev/null || true
}

# spin_cli: print the path of a Spin CLI, or fail (status 1) when there is none: $PIER_SPIN if set, `spin` on PATH,
# else the shared tools folder beside the repository (../shared/tools/spin; for a git worktree elsewhere, beside its
# main checkout), whose first call unpacks the binary into ~/.cache. The candidate must answer `--version` offline.
spin_cli() {
  local candidates=() c common
  [ -n "${PIER_SPIN:-}" ] && candidates+=("$PIER_SPIN")
  c="$(command -v spin 2>/dev/null)" && candidates+=("$c")
  candidates+=("$PIER_ROOT/../shared/tools/spin")
  if common="$(git -C "$PIER_ROOT" rev-parse --path-format=absolute --git-common-dir 2>/dev/null)"; then
    candidates+=("$(dirname "$(dirname "$common")")/shared/tools/spin")
  fi
  for c in "${candidates[@]}"; do
    if [ -x "$c" ] && "$c" --version </dev/null >/dev/null 2>&1; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

# cargo_wasip2 ARGS...: run `cargo ARGS --target wasm32-wasip2` in the current directory. With rustup's wasm32-wasip2
# std installed it is a plain cargo call; without it, Debian's rustc builds std from source (-Zbuild-std) against
# Debian's wasi-libc, linked by rustup's wasm-component-ld (see scripts/setup and TOOLCHAIN notes in the README).
cargo_wasip2() {
  if [ -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip2/lib" ]; then
    cargo "$@" --target wasm32-wasip2
    return
  fi
  [ -x /usr/bin/rustc ] && [ -d /usr/lib/wasm32-wasi ] || die "no wasm32-wasip2 std and no Debian rustc-web/wasi-libc: run scripts/setup"
  local rustup_bin
  rustup_bin="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin"
  [ -x "$rustup_bin/wasm-component-ld" ] || die "wasm-component-ld not found in $rustup_bin"
  # Scoped to this build: -Zbuild-std is unstable, and RUSTC_BOOTSTRAP in a host build's environment breaks it.
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
  CARGO_TARGET_WASM32_WASIP2_LINKER="$rustup_bin/wasm-component-ld" \
  CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-L native=/usr/lib/wasm32-wasi -C link-self-contained=no -C link-arg=--wasm-ld-path=$rustup_bin/gcc-ld/wasm-ld" \
    /usr/bin/cargo "$@" --target wasm32-wasip2 -Zbuild-std=std,panic_abort
}
