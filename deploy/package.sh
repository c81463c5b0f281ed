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
# cargo-deb (3.8) writes no DEBIAN/md5sums and has no option for it; dh_md5sums would. Add it
# as dh_md5sums does (every file outside DEBIAN/ except the conffiles, which dpkg tracks on its
# own), so that `dpkg --verify csirt` and debsums can tell a changed binary. dpkg-deb -R/-b keep
# owners and modes (/etc/csirt/csirt.toml 0640) when run as root.
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
dpkg-deb -R "$deb" "$tree/pkg"
(
    cd "$tree/pkg"
    find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort \
        | grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles 2>/dev/null || true) \
        | xargs -d '\n' md5sum >DEBIAN/md5sums
)
chmod 0644 "$tree/pkg/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz -b "$tree/pkg" "$deb" >&2
echo "$deb"
