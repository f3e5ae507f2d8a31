#!/bin/sh
# core log, sync: see _sync.sh.
. /scenarios/lib.sh
LOGTYPE=core
MODE=sync
. /scenarios/_sync.sh
