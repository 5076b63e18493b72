#!/usr/bin/env bash
# Builds and installs `mcpgate` and `mcpgate-broker`, and their shell
# completions.
#
#   ./install.sh                 # release build into /usr/local (root) or ~/.local
#   PREFIX=/opt/mcpgate ./install.sh
#   MCPGATE_INSTALL_PROFILE=debug ./install.sh   # faster build, for trying things out
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${PREFIX:-}" ]; then
  if [ "$(id -u)" = 0 ]; then PREFIX=/usr/local; else PREFIX="$HOME/.local"; fi
fi
profile_flag=(--release)
profile_dir=release
if [ "${MCPGATE_INSTALL_PROFILE:-release}" = debug ]; then profile_flag=(); profile_dir=debug; fi

command -v cargo >/dev/null || { echo "install.sh: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

# One build of the whole workspace's binaries (the same command the tests
# use, so an existing build is reused), then a copy: both tools share one
# compilation of their dependencies.
cargo build --quiet --locked --workspace --bins "${profile_flag[@]}"
built="${CARGO_TARGET_DIR:-target}/$profile_dir"
mkdir -p "$PREFIX/bin"
for tool in mcpgate mcpgate-broker; do
  install -m 0755 "$built/$tool" "$PREFIX/bin/$tool"
done

bin="$PREFIX/bin"
share="$PREFIX/share"
mkdir -p "$share/bash-completion/completions" "$share/zsh/site-functions" "$share/fish/vendor_completions.d"
for tool in mcpgate mcpgate-broker; do
  "$bin/$tool" completions bash > "$share/bash-completion/completions/$tool"
  "$bin/$tool" completions zsh > "$share/zsh/site-functions/_$tool"
  "$bin/$tool" completions fish > "$share/fish/vendor_completions.d/$tool.fish"
done

echo "installed mcpgate and mcpgate-broker in $bin" >&2
case ":$PATH:" in
  *":$bin:"*) ;;
  *) echo "note: $bin is not on your PATH; add it, e.g. export PATH=\"$bin:\$PATH\"" >&2 ;;
esac
