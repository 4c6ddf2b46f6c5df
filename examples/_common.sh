# Shared by the example scripts (sourced, not run).
# Exit 1 means "finished, some rows failed" (recorded in the manifest): go on. Stop otherwise.
# Uses the caller's $WS for the message.
partial_ok() {
  local rc=0
  "$@" || rc=$?
  if [ "$rc" -eq 1 ]; then
    echo "note: some rows failed (see the reason column of $WS/manifest.csv); continuing" >&2
  elif [ "$rc" -ne 0 ]; then
    exit "$rc"
  fi
}
