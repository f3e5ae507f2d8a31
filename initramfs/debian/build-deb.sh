#!/bin/sh
# build-deb.sh [OUTDIR]
#
# Builds the Debian package OUTDIR/dm-ulogd_VERSION_amd64.deb (OUTDIR
# defaults to target/debian) with dpkg-dev's own tools, and prints its path:
#
#   1. `make install DESTDIR=OUTDIR/stage PREFIX=/usr
#      SYSTEMDUNITDIR=/lib/systemd/system`: exactly the files `make install`
#      installs (the release binary: BIN, built when missing, see Makefile).
#   2. Debian's additions: /usr/share/doc/dm-ulogd/{copyright,changelog.gz},
#      the man page gzipped (-9n), DEBIAN/{postinst,prerm,postrm,md5sums}.
#   3. dpkg-gencontrol writes DEBIAN/control from initramfs/debian/control
#      and initramfs/debian/changelog (Version, Installed-Size).
#   4. dpkg-deb --root-owner-group --build: every file owned by root:root,
#      whoever builds it.
#
# The version is the changelog's; it must be Cargo.toml's.
# Needs dpkg-dev, make and (if the binary is missing) cargo.
set -eu
umask 022
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${1:-$top/target/debian}

for c in dpkg-gencontrol dpkg-parsechangelog dpkg-deb make md5sum gzip; do
    command -v "$c" >/dev/null 2>&1 || {
        echo "build-deb.sh: $c not found: apt-get install dpkg-dev make" >&2
        exit 1
    }
done

version=$(dpkg-parsechangelog -l "$here/changelog" -S Version)
crate=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$top/Cargo.toml" | head -n 1)
if [ "$version" != "$crate" ]; then
    echo "build-deb.sh: initramfs/debian/changelog is at $version, Cargo.toml at $crate:" \
        "add a changelog entry for $crate (dch --changelog initramfs/debian/changelog -v $crate)" >&2
    exit 1
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$out/stage
rm -rf "$stage"
mkdir -m 755 "$stage"

# shellcheck disable=SC2086 # BIN: one word when set
make -C "$top" --no-print-directory install DESTDIR="$stage" PREFIX=/usr \
    SYSTEMDUNITDIR=/lib/systemd/system ${BIN:+BIN="$BIN"} >/dev/null

doc=$stage/usr/share/doc/dm-ulogd
install -d -m 755 "$doc"
install -m 644 "$here/copyright" "$doc/copyright"
gzip -9n <"$here/changelog" >"$doc/changelog.gz"
chmod 644 "$doc/changelog.gz"
gzip -9n "$stage/usr/share/man/man8/dm-ulogd.8"

install -d -m 755 "$stage/DEBIAN"
for s in postinst prerm postrm; do
    install -m 755 "$here/$s" "$stage/DEBIAN/$s"
done
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
    xargs md5sum) >"$stage/DEBIAN/md5sums"
chmod 644 "$stage/DEBIAN/md5sums"

# dpkg-gencontrol reads and writes debian/* relative to the working
# directory: give it a private one.
gen=$out/gencontrol
rm -rf "$gen"
mkdir -p "$gen/debian"
: >"$gen/debian/substvars"
(cd "$gen" && dpkg-gencontrol -c"$here/control" -l"$here/changelog" \
    -f"$gen/debian/files" -P"$stage" -pdm-ulogd)
chmod 644 "$stage/DEBIAN/control"

deb=$out/dm-ulogd_${version}_amd64.deb
rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
