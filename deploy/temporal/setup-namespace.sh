#!/bin/sh
# One-shot (admin-tools image): the namespace and the custom search attributes the gateway writes
# (CpoId, JobStatus: Keyword; ErrorCode: KeywordList; as contracts/temporal.py SEARCH_ATTRIBUTES). Existing ones are kept; anything else that goes wrong fails the
# job, and with it `compose up` (the API and the worker wait for this job to succeed).
set -eu
ns="${NAMESPACE:?}"
addr="${TEMPORAL_ADDRESS:?}"
tries=0
until temporal operator cluster health --address "$addr" >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -lt 60 ] || { echo "Temporal at $addr is not healthy after 120 s" >&2; exit 1; }
  sleep 2
done
temporal operator namespace describe --address "$addr" -n "$ns" >/dev/null 2>&1 \
  || temporal operator namespace create --address "$addr" -n "$ns" --retention 7d
existing="$(temporal operator search-attribute list --address "$addr" -n "$ns")"
for pair in CpoId=Keyword JobStatus=Keyword ErrorCode=KeywordList; do
  attr="${pair%%=*}"
  type="${pair#*=}"
  if printf '%s\n' "$existing" | grep -Eq "^[[:space:]]*$attr[[:space:]]+$type[[:space:]]*$"; then
    echo "search attribute $attr ($type) exists"
  elif printf '%s\n' "$existing" | grep -Eq "^[[:space:]]*$attr[[:space:]]"; then
    echo "search attribute $attr exists with another type: fix it by hand" >&2; exit 1
  else
    temporal operator search-attribute create --address "$addr" -n "$ns" --name "$attr" --type "$type"
  fi
done
echo "namespace $ns and its search attributes are ready"
