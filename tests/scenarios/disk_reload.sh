#!/bin/sh
# disk disk log: remove and reload without a full resync; see _disk_reload.sh.
. /scenarios/lib.sh
LOGTYPE=disk
. /scenarios/_disk_reload.sh
