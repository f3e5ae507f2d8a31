#!/bin/sh
# kernel disk log: remove and reload without a full resync; see _disk_reload.sh.
. /scenarios/lib.sh
LOGTYPE=kernel
. /scenarios/_disk_reload.sh
