#!/bin/sh
# build-image.sh OUT.cpio.gz DM_ULOGD_BINARY
#
# Builds the test initramfs (newc cpio, gzip) for the real-kernel harness:
#   busybox (static) with applet symlinks, dmsetup and fio with their shared
#   libraries, the kernel modules for virtio disks and dm-mirror with a
#   userspace log (decompressed, loaded in order by /init), /sbin/dm-ulogd,
#   /init (guest-init.sh) and every tests/scenarios/*.sh under /scenarios/.
#
# DM_ULOGD_BINARY may be "none": a placeholder that fails loudly is installed.
# Environment:
#   DMULOGD_ARCH       guest architecture: x86_64 (default), i686 (the x86_64
#                      guest with a 32-bit dm-ulogd), aarch64, s390x. For
#                      aarch64 and s390x busybox, dmsetup and fio come from
#                      Debian's .debs of that architecture (foreign-userland.sh).
#   DMULOGD_SCENARIOS  directory of scenario scripts (default: tests/scenarios)
#   DMULOGD_NO_FIO=1   leave fio out (its libraries are ~80 MB)
#   DMULOGD_NBD_CLIENT=1  add the guest's own NBD client: nbd-client with its
#                      libraries and the nbd and virtio_net modules (x86_64
#                      only; tests/power_cut.rs attaches its log device so)
# The kernel comes from fetch-kernel.sh (initramfs/cache/).
set -eu

usage() { echo "usage: $0 OUT.cpio.gz DM_ULOGD_BINARY|none" >&2; exit 2; }
[ $# -eq 2 ] || usage
out=$1
bin=$2

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
scen=${DMULOGD_SCENARIOS:-$repo/tests/scenarios}

arch=${DMULOGD_ARCH:-x86_64}
# The ELF machine a dm-ulogd binary for the architecture has (readelf -h).
case $arch in
    x86_64) machine="Advanced Micro Devices X86-64" ;;
    i686) machine="Intel 80386" ;;
    aarch64) machine="AArch64" ;;
    s390x) machine="IBM S/390" ;;
    *) echo "build-image.sh: unknown DMULOGD_ARCH $arch (x86_64, i686, aarch64, s390x)" >&2; exit 2 ;;
esac
export DMULOGD_ARCH=$arch

vmlinuz=$("$here/fetch-kernel.sh")
ktree=$(dirname "$(dirname "$vmlinuz")")
kver=${vmlinuz##*/vmlinuz-}
# Debian 12 and earlier ship the modules under /lib/modules, Debian 13
# (merged /usr) under /usr/lib/modules.
moddir=$ktree/lib/modules/$kver
[ -d "$moddir" ] || moddir=$ktree/usr/lib/modules/$kver
[ -d "$moddir" ] || { echo "build-image.sh: no lib/modules/$kver or usr/lib/modules/$kver in $ktree" >&2; exit 1; }

if [ "$bin" != none ]; then
    if [ ! -f "$bin" ]; then
        echo "build-image.sh: no dm-ulogd binary at $bin" >&2
        exit 1
    fi
    command -v readelf >/dev/null || { echo "build-image.sh: readelf not found (apt-get install binutils)" >&2; exit 1; }
    got=$(readelf -h "$bin" 2>/dev/null | sed -n 's/^ *Machine: *//p')
    [ "$got" = "$machine" ] || {
        echo "build-image.sh: $bin is for '$got', not $arch ($machine): initramfs/build-arch.sh $arch builds it" >&2
        exit 1
    }
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/dmulogd-image.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM

mkdir -p "$stage"/bin "$stage"/sbin "$stage"/usr/bin "$stage"/usr/sbin \
    "$stage"/lib/modules "$stage"/lib64 "$stage"/proc "$stage"/sys "$stage"/dev \
    "$stage"/run "$stage"/tmp "$stage"/root "$stage"/etc "$stage"/scenarios \
    "$stage"/var/run "$stage"/mnt

# --- busybox and its applets (the host's busybox-static lists them: the
# same Debian version as a foreign one)
bb=$(command -v busybox || true)
[ -n "$bb" ] || { echo "build-image.sh: busybox not found (apt-get install busybox-static)" >&2; exit 1; }
if ldd "$bb" >/dev/null 2>&1; then
    echo "build-image.sh: $bb is dynamically linked; install busybox-static" >&2
    exit 1
fi
case $arch in
    x86_64 | i686) cp "$bb" "$stage/bin/busybox" ;;
    *)
        # The foreign userland: its files at their own paths, libraries and
        # the dynamic loader included (ldd cannot run foreign binaries).
        userland=$("$here/foreign-userland.sh" "$arch")
        while read -r f; do
            mkdir -p "$stage$(dirname "$f")"
            cp -L "$userland$f" "$stage$f"
        done <"$userland/.files"
        ;;
esac
"$bb" --list-full | while read -r applet; do
    case $applet in */busybox|bin/sh|"") continue ;; esac
    dir=$(dirname "$applet")
    mkdir -p "$stage/$dir"
    ln -sf /bin/busybox "$stage/$applet"
done
ln -sf busybox "$stage/bin/sh"

# --- dynamically linked tools and their libraries (ldd), at their own paths
copy_with_libs() {
    src=$1
    dst=$stage$src
    mkdir -p "$(dirname "$dst")"
    cp -L "$src" "$dst"
    ldd "$src" | while read -r a b c _; do
        # "libx.so => /path (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        case $b in
            "=>") lib=$c ;;
            *) lib=$a ;;
        esac
        case $lib in /*) ;; *) continue ;; esac
        [ -e "$stage$lib" ] && continue
        mkdir -p "$stage$(dirname "$lib")"
        cp -L "$lib" "$stage$lib"
    done
}
case $arch in
    x86_64 | i686)
        copy_with_libs "$(command -v dmsetup)"
        if [ "${DMULOGD_NO_FIO:-0}" != 1 ]; then
            copy_with_libs "$(command -v fio)"
        fi
        if [ "${DMULOGD_NBD_CLIENT:-0}" = 1 ]; then
            nbdc=$(command -v nbd-client || PATH=$PATH:/usr/sbin:/sbin command -v nbd-client) ||
                { echo "build-image.sh: nbd-client not found (apt-get install nbd-client)" >&2; exit 1; }
            copy_with_libs "$nbdc"
        fi
        ;;
    *) [ "${DMULOGD_NO_FIO:-0}" != 1 ] || rm -f "$stage/usr/bin/fio" ;;
esac
# Some libraries are found through /usr/lib as well as /lib on merged-/usr hosts.
[ -e "$stage/usr/lib" ] || ln -s ../lib "$stage/usr/lib"

# --- kernel modules, decompressed, plus their load order. The disks: virtio
# over PCI on x86_64 and aarch64 (-M virt), over channel I/O on s390x, whose
# virtio core and virtio_ccw are built in. A module's dependencies (modinfo)
# go before it: arm64's dm-mod needs dax; 6.1's virtio_pci needs virtio,
# virtio_ring and virtio_pci_{modern,legacy}_dev (5.10 has neither of the
# last two, 6.12 has all of them built in).
case $arch in
    s390x) DISK_MODULES="virtio_blk" ;;
    *) DISK_MODULES="virtio_pci virtio_blk" ;;
esac
MODULES="$DISK_MODULES loop cn dm-mod dm-log dm-region-hash dm-mirror dm-log-userspace
dm-flakey dm-delay"
if [ "${DMULOGD_NBD_CLIENT:-0}" = 1 ]; then
    MODULES="$MODULES virtio_net nbd"
fi
: >"$stage/lib/modules/load-order"
# module_file NAME: the module's file in the kernel tree, or nothing.
module_file() {
    _alt=$(echo "$1" | tr - _)
    find "$moddir/kernel" \( -name "$1.ko" -o -name "$1.ko.*" -o -name "$_alt.ko" -o -name "$_alt.ko.*" \) | head -n1
}
add_module() {
    grep -qx "$1" "$stage/lib/modules/load-order" && return 0
    f=$(module_file "$1")
    if [ -z "$f" ]; then
        if grep -qE "/($1|$(echo "$1" | tr - _))\.ko" "$moddir/modules.builtin" 2>/dev/null; then
            return 0 # built in
        fi
        if [ "$1" = cn ]; then
            return 0 # the connector is built in on Debian's kernels (CONFIG_CONNECTOR=y)
        fi
        echo "build-image.sh: module $1 not found in $moddir" >&2
        exit 1
    fi
    for dep in $(modinfo -F depends "$f" | tr , ' '); do
        add_module "$dep"
    done
    f=$(module_file "$1") # the recursion reused the variable
    case $f in
        *.ko) cp "$f" "$stage/lib/modules/$1.ko" ;;
        *.ko.xz) xz -dc "$f" >"$stage/lib/modules/$1.ko" ;;
        *.ko.zst) zstd -qdc "$f" >"$stage/lib/modules/$1.ko" ;;
        *.ko.gz) gzip -dc "$f" >"$stage/lib/modules/$1.ko" ;;
        *) echo "build-image.sh: unknown module format $f" >&2; exit 1 ;;
    esac
    echo "$1" >>"$stage/lib/modules/load-order"
}
for m in $MODULES; do
    add_module "$m"
done

# --- dm-ulogd
if [ "$bin" = none ]; then
    cat >"$stage/sbin/dm-ulogd" <<'EOF'
#!/bin/sh
echo "dm-ulogd: placeholder: this image was built without a dm-ulogd binary" >&2
exit 1
EOF
    chmod 755 "$stage/sbin/dm-ulogd"
else
    cp "$bin" "$stage/sbin/dm-ulogd"
    chmod 755 "$stage/sbin/dm-ulogd"
fi

# --- /init, scenarios, a few files
cp "$here/guest-init.sh" "$stage/init"
chmod 755 "$stage/init"
if [ -d "$scen" ]; then
    for s in "$scen"/*.sh; do
        [ -f "$s" ] || continue
        cp "$s" "$stage/scenarios/"
    done
fi
[ -f "$stage/scenarios/lib.sh" ] || { echo "build-image.sh: no lib.sh in $scen" >&2; exit 1; }
chmod 755 "$stage"/scenarios/*.sh
echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
echo "root:x:0:" >"$stage/etc/group"
printf 'PS1="[guest \\w]# "\n' >"$stage/etc/profile"
echo "$kver" >"$stage/etc/dmulogd-kernel"
echo "$arch" >"$stage/etc/dmulogd-arch"

# --- archive
mkdir -p "$(dirname "$out")"
tmpout=$out.tmp.$$
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
    | gzip -1 >"$tmpout"
mv -f "$tmpout" "$out"
echo "$out"
