#!/bin/sh
# clustered-core log, sync: see _sync.sh.
. /scenarios/lib.sh
LOGTYPE=clustered-core
MODE=sync
. /scenarios/_sync.sh
