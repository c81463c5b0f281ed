#!/usr/bin/env bash
# Builds the Debian package: the release binary, completions and man page generated from it,
# then cargo-deb with the metadata in Cargo.toml. Prints the path of the .deb.
#   bash deploy/package.sh            (needs cargo-deb: cargo install cargo-deb --locked)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "cargo-deb is required: cargo install cargo-deb --locked" >&2; exit 1; }
cargo build --release --locked >&2
bin=target/release/csirt
mkdir -p target/assets
"$bin" completions bash >target/assets/csirt.bash
"$bin" completions zsh >target/assets/_csirt
"$bin" completions fish >target/assets/csirt.fish
"$bin" manpage | gzip -9n >target/assets/csirt.1.gz
mkdir -p target/debian
deb=target/debian/csirt.deb
rm -f "$deb"
cargo deb --no-build --output "$deb" >&2
echo "$deb"
