#!/bin/sh
# shellcheck disable=SC2034 # LOGTYPE and MODE are read by the sourced body
# clustered-core log, sync: see _sync.sh.
. /scenarios/lib.sh
LOGTYPE=clustered-core
MODE=sync
. /scenarios/_sync.sh
