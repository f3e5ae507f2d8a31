# Body of core_sync, core_nosync, clustered_core_sync, clustered_core_nosync
# (sourced after lib.sh with LOGTYPE=core|clustered-core and MODE=sync|nosync).
#
# A 64 MiB mirror with a dm-ulogd log. sync: leg 0 holds random data the other
# leg lacks, so the resync must copy it; nosync: every region is in sync at once.
# Then random writes through the mirror, full sync, the legs compare equal, and
# reads through the mirror (IN_SYNC requests) return the same data.

SECTORS=131072   # 64 MiB
REGION=1024      # 512 KiB regions: 128 of them
UUID=dmulogd-test-$LOGTYPE-$MODE

start_daemon
make_legs m0 $SECTORS

if [ "$MODE" = sync ]; then
    write_random /dev/mapper/m0_0 8 4
    create_mirror m0 $SECTORS userspace "$UUID" "$LOGTYPE" $REGION
else
    create_mirror m0 $SECTORS userspace "$UUID" "$LOGTYPE" $REGION nosync
fi
log "status after create: $(mirror_status m0)"
[ "$(region_count m0)" = 128 ] || fail "region count $(region_count m0), expected 128"
if [ "$MODE" = nosync ]; then
    [ "$(in_sync_count m0)" = 128 ] || fail "nosync log: in-sync count $(in_sync_count m0) right after create"
fi

write_random /dev/mapper/m0 8 20
write_random /dev/mapper/m0 1 63
wait_in_sync m0 60
log "status: $(mirror_status m0)"

_ls=$(mirror_log_status m0)
[ "$_ls" = "1 $LOGTYPE" ] || fail "log status '$_ls', expected '1 $LOGTYPE'"
[ "$(mirror_health m0)" = AA ] || fail "leg health $(mirror_health m0)"

compare_mirror m0

# Reads through the mirror ask the log IN_SYNC for every bio. Direct reads:
# buffered ones would be slow, as dm-raid1 fails readahead bios whose IN_SYNC
# answer would block (always, for a userspace log) and the page cache then
# reads page by page.
_mm=$(dd if=/dev/mapper/m0 bs=1M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
_ml=$(md5sum </dev/mapper/m0_0 | cut -d' ' -f1)
[ "$_mm" = "$_ml" ] || fail "reading the mirror gives other data than its legs"

daemon_alive || fail "dm-ulogd died"
remove_dev m0
daemon_alive || fail "dm-ulogd died after the table was removed"
pass
