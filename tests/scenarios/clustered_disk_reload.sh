#!/bin/sh
# clustered-disk disk log: remove and reload without a full resync; see _disk_reload.sh.
. /scenarios/lib.sh
LOGTYPE=clustered-disk
. /scenarios/_disk_reload.sh
