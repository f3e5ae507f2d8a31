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
#   DMULOGD_SCENARIOS  directory of scenario scripts (default: tests/scenarios)
#   DMULOGD_NO_FIO=1   leave fio out (its libraries are ~80 MB)
# The kernel comes from fetch-kernel.sh (initramfs/cache/).
set -eu

usage() { echo "usage: $0 OUT.cpio.gz DM_ULOGD_BINARY|none" >&2; exit 2; }
[ $# -eq 2 ] || usage
out=$1
bin=$2

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
scen=${DMULOGD_SCENARIOS:-$repo/tests/scenarios}

vmlinuz=$("$here/fetch-kernel.sh")
ktree=$(dirname "$(dirname "$vmlinuz")")
kver=${vmlinuz##*/vmlinuz-}
moddir=$ktree/lib/modules/$kver
[ -d "$moddir" ] || { echo "build-image.sh: no $moddir" >&2; exit 1; }

if [ "$bin" != none ] && [ ! -f "$bin" ]; then
    echo "build-image.sh: no dm-ulogd binary at $bin" >&2
    exit 1
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/dmulogd-image.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM

mkdir -p "$stage"/bin "$stage"/sbin "$stage"/usr/bin "$stage"/usr/sbin \
    "$stage"/lib/modules "$stage"/lib64 "$stage"/proc "$stage"/sys "$stage"/dev \
    "$stage"/run "$stage"/tmp "$stage"/root "$stage"/etc "$stage"/scenarios \
    "$stage"/var/run "$stage"/mnt

# --- busybox and its applets
bb=$(command -v busybox || true)
[ -n "$bb" ] || { echo "build-image.sh: busybox not found (apt-get install busybox-static)" >&2; exit 1; }
if ldd "$bb" >/dev/null 2>&1; then
    echo "build-image.sh: $bb is dynamically linked; install busybox-static" >&2
    exit 1
fi
cp "$bb" "$stage/bin/busybox"
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
copy_with_libs "$(command -v dmsetup)"
if [ "${DMULOGD_NO_FIO:-0}" != 1 ]; then
    copy_with_libs "$(command -v fio)"
fi
# Some libraries are found through /usr/lib as well as /lib on merged-/usr hosts.
[ -e "$stage/usr/lib" ] || ln -s ../lib "$stage/usr/lib"

# --- kernel modules, decompressed, plus their load order
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
virtio_blk loop cn dm-mod dm-log dm-region-hash dm-mirror dm-log-userspace
dm-flakey dm-delay"
: >"$stage/lib/modules/load-order"
for m in $MODULES; do
    alt=$(echo "$m" | tr - _)
    f=$(find "$moddir/kernel" \( -name "$m.ko" -o -name "$m.ko.*" -o -name "$alt.ko" -o -name "$alt.ko.*" \) | head -n1)
    if [ -z "$f" ]; then
        if grep -qE "/($m|$alt)\.ko" "$moddir/modules.builtin" 2>/dev/null; then
            continue # built in
        fi
        if [ "$m" = cn ]; then
            continue # the connector is built in on Debian's kernels (CONFIG_CONNECTOR=y)
        fi
        echo "build-image.sh: module $m not found in $moddir" >&2
        exit 1
    fi
    case $f in
        *.ko) cp "$f" "$stage/lib/modules/$m.ko" ;;
        *.ko.xz) xz -dc "$f" >"$stage/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" >"$stage/lib/modules/$m.ko" ;;
        *.ko.gz) gzip -dc "$f" >"$stage/lib/modules/$m.ko" ;;
        *) echo "build-image.sh: unknown module format $f" >&2; exit 1 ;;
    esac
    echo "$m" >>"$stage/lib/modules/load-order"
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

# --- archive
mkdir -p "$(dirname "$out")"
tmpout=$out.tmp.$$
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
    | gzip -1 >"$tmpout"
mv -f "$tmpout" "$out"
echo "$out"
