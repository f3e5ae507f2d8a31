#!/bin/sh
# shellcheck disable=SC2034 # LOGTYPE and MODE are read by the sourced body
# disk disk log: remove and reload without a full resync; see _disk_reload.sh.
. /scenarios/lib.sh
LOGTYPE=disk
. /scenarios/_disk_reload.sh
