#!/bin/sh
# Host set-up for the foreign-architecture builds and guests (aarch64, i686,
# s390x), as root on Debian 12. Called by setup-host.sh; idempotent and quiet
# when everything is already there.
#
#   dpkg architectures arm64 and s390x (their kernels, busybox-static, dmsetup
#     and fio are downloaded as .debs by fetch-kernel.sh and build-image.sh,
#     never installed);
#   qemu-system-arm (qemu-system-aarch64) and qemu-system-misc (qemu-system-s390x);
#   binutils (readelf: the ELF checks and the foreign libraries' NEEDED entries);
#   gcc-s390x-linux-gnu + libc6-dev-s390x-cross (the linker and static glibc for
#     s390x: Rust serves no musl std for s390x);
#   the Rust targets aarch64-unknown-linux-musl, i686-unknown-linux-musl and
#     s390x-unknown-linux-gnu (aarch64 and i686 link with rust-lld, see
#     .cargo/config.toml).
set -eu

PKGS="qemu-system-arm qemu-system-misc gcc-s390x-linux-gnu libc6-dev-s390x-cross binutils"
FOREIGN="arm64 s390x"
TARGETS="aarch64-unknown-linux-musl i686-unknown-linux-musl s390x-unknown-linux-gnu"

need_root() {
    [ "$(id -u)" -eq 0 ] || { echo "setup-arch.sh: need root to $1" >&2; exit 1; }
}

update=0
have=$(dpkg --print-foreign-architectures)
for a in $FOREIGN; do
    if ! echo "$have" | grep -qx "$a"; then
        need_root "add the dpkg architecture $a"
        echo "setup-arch.sh: dpkg --add-architecture $a" >&2
        dpkg --add-architecture "$a"
        update=1
    fi
done
# The foreign package lists exist once apt-get update ran after adding them.
for a in $FOREIGN; do
    ls /var/lib/apt/lists/*_binary-"${a}"_Packages >/dev/null 2>&1 || update=1
done

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done

export DEBIAN_FRONTEND=noninteractive
if [ "$update" = 1 ]; then
    need_root "update the package lists"
    apt-get update -qq >/dev/null
fi
if [ -n "$missing" ]; then
    need_root "install:$missing"
    echo "setup-arch.sh: installing:$missing" >&2
    [ "$update" = 1 ] || apt-get update -qq >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

rustup=$(command -v rustup || echo "$HOME/.cargo/bin/rustup")
if [ -x "$rustup" ]; then
    installed=$("$rustup" target list --installed 2>/dev/null)
    for t in $TARGETS; do
        if ! echo "$installed" | grep -qx "$t"; then
            echo "setup-arch.sh: adding rust target $t" >&2
            "$rustup" target add "$t" >/dev/null
        fi
    done
else
    echo "setup-arch.sh: rustup not found; add the targets $TARGETS yourself" >&2
    exit 1
fi
