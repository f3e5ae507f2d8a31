# Body of disk_reload (LOGTYPE=disk), clustered_disk_reload (clustered-disk) and
# kdisk_reload (LOGTYPE=kernel: the kernel's own disk log, a harness self-test).
#
# A mirror with a disk log reaches full sync; one region takes 64 sequential
# writes (dm-ulogd: at most 8 log device writes); a few regions are written; the
# table is removed and loaded again with the same uuid and log device. Regions
# that were clean are not resynced: the log's header and bitmap on disk say so,
# and the in-sync count right after the reload is (nearly) the full count. A
# region marked dirty on disk by hand, whose legs were made to differ, is
# resynced, so the legs compare equal in the end.

SECTORS=131072   # 64 MiB
REGION=1024      # 128 regions
NR=128
UUID=dmulogd-test-reload-$LOGTYPE

table_log() {
    if [ "$LOGTYPE" = kernel ]; then
        echo "disk /dev/mapper/m0_log $REGION"
    else
        echo "userspace $UUID $LOGTYPE /dev/mapper/m0_log $REGION"
    fi
}
expect_type=$LOGTYPE
[ "$LOGTYPE" = kernel ] && expect_type=disk

[ "$LOGTYPE" = kernel ] || start_daemon
make_legs m0 $SECTORS
make_log m0_log 2048
zero_dev /dev/mapper/m0_log
write_random /dev/mapper/m0_0 8 4

# shellcheck disable=SC2046
create_mirror m0 $SECTORS $(table_log)
wait_in_sync m0 60
log "status: $(mirror_status m0)"
_ls=$(mirror_log_status m0)
[ "$_ls" = "3 $expect_type $(devnum m0_log) A" ] ||
    fail "log status '$_ls', expected '3 $expect_type $(devnum m0_log) A'"
compare_mirror m0

if [ "$LOGTYPE" != kernel ]; then
    # 64 sequential 4 KiB writes into region 40 (a journal): its first mark
    # is written and flushed; every later mark finds the region still dirty
    # on the device (its clear not written yet) and costs no I/O, where the
    # kernel's disk log writes and flushes on each (measured: 1 write). The
    # remove below must still write its clear (the clean count).
    w0=$(log_device_writes)
    run dd if=/dev/urandom of=/dev/mapper/m0 bs=4k count=64 seek=$((40 * REGION / 8)) oflag=direct >/dev/null
    w1=$(log_device_writes)
    log "64 sequential 4 KiB writes into region 40: $((w1 - w0)) log device writes"
    [ $((w1 - w0)) -le 8 ] || fail "64 writes into one region cost $((w1 - w0)) log device writes"
fi

for r in 5 77 127; do
    write_region /dev/mapper/m0 $r $REGION
done
remove_dev m0

check_log_header /dev/mapper/m0_log $NR
clean=$(log_clean_count /dev/mapper/m0_log $NR)
log "after remove: header '$(log_header /dev/mapper/m0_log)', $clean/$NR regions clean on disk"
[ "$clean" -ge $((NR - 3)) ] || fail "only $clean/$NR regions clean on disk after a clean remove"

# Region 9 dirty on disk, and the legs differ there: the reload must resync it.
dirty_region /dev/mapper/m0_log 9 /dev/mapper/m0_1 $REGION
clean=$((clean - 1))

# shellcheck disable=SC2046
create_mirror m0 $SECTORS $(table_log)
c=$(in_sync_count m0)
log "status right after reload: $(mirror_status m0) ($clean clean on disk)"
[ "$(region_count m0)" = $NR ] || fail "region count $(region_count m0) after reload"
[ "$c" -ge "$clean" ] || fail "in-sync count $c right after reload, but $clean regions were clean on disk"
wait_in_sync m0 60
compare_mirror m0
[ "$LOGTYPE" = kernel ] || daemon_alive || fail "dm-ulogd died"
remove_dev m0
check_log_header /dev/mapper/m0_log $NR
[ "$(log_bit /dev/mapper/m0_log 9)" = 1 ] || fail "region 9 still dirty on disk after resync and remove"
pass
