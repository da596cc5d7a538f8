#!/bin/sh
# Runs the command ("$@", a pip call) with the build's secrets where they were given: pip_index_url (PIP_INDEX_URL:
# every package's index or mirror), pip_cert (PIP_CERT: the CA bundle a proxy's certificates need) and
# torch_index_url (in place of the --index-url the command names: torch's own mirror). BuildKit mounts them under
# /run/secrets only while that RUN runs: they are in no layer and not in `docker history`.
set -e
secrets="${SECRETS_DIR:-/run/secrets}"
if [ -s "$secrets/pip_index_url" ]; then
  PIP_INDEX_URL="$(cat "$secrets/pip_index_url")"
  export PIP_INDEX_URL
fi
if [ -s "$secrets/pip_cert" ]; then
  PIP_CERT="$secrets/pip_cert"
  export PIP_CERT
fi
if [ -s "$secrets/torch_index_url" ]; then
  torch="$(cat "$secrets/torch_index_url")"
  replace=0
  for argument do
    shift
    if [ "$replace" = 1 ]; then
      set -- "$@" "$torch"
      replace=0
      continue
    fi
    [ "$argument" = "--index-url" ] && replace=1
    set -- "$@" "$argument"
  done
fi
exec "$@"
