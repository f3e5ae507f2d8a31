#!/bin/sh
# shellcheck disable=SC2034 # LOGTYPE is read by the sourced body
# dm-ulogd killed with SIGKILL under write load, core logs; see _kill.sh.
. /scenarios/lib.sh
LOGTYPE=core
. /scenarios/_kill.sh
