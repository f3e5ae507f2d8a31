#!/bin/sh
# core log, nosync: see _sync.sh.
. /scenarios/lib.sh
LOGTYPE=core
MODE=nosync
. /scenarios/_sync.sh
