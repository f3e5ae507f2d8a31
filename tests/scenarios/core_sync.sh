#!/bin/sh
# shellcheck disable=SC2034 # LOGTYPE and MODE are read by the sourced body
# core log, sync: see _sync.sh.
. /scenarios/lib.sh
LOGTYPE=core
MODE=sync
. /scenarios/_sync.sh
