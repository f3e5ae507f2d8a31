#!/bin/sh
# clustered-core log, nosync: see _sync.sh.
. /scenarios/lib.sh
LOGTYPE=clustered-core
MODE=nosync
. /scenarios/_sync.sh
