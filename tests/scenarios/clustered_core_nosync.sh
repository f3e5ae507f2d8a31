#!/bin/sh
# shellcheck disable=SC2034 # LOGTYPE and MODE are read by the sourced body
# clustered-core log, nosync: see _sync.sh.
. /scenarios/lib.sh
LOGTYPE=clustered-core
MODE=nosync
. /scenarios/_sync.sh
