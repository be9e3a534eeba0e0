#!/bin/sh
# A `default`-format test function for the Docker driver's tests (busybox sh
# in a FROM scratch image). FNRS_TEST_MODE picks what it does.
case "${FNRS_TEST_MODE:-echo}" in
  echo)
    echo "fn.sh started" >&2
    input=$(cat)
    printf 'got:%s' "$input"
    ;;
  env)
    env | sort
    ;;
  id)
    id -u; id -g
    cat /proc/self/status | grep -i '^cap'
    ;;
  crash)
    echo "crashing" >&2
    exit 3
    ;;
  oom)
    # Doubles a string until the memory limit kills it.
    awk 'BEGIN { s = "xxxxxxxxxxxxxxxx"; while (1) { s = s s } }'
    ;;
  sleep)
    sleep 600
    ;;
  probe)
    # Prints what a listener on PROBE_PORT of the container's loopback
    # sends (the tests only ever probe loopback addresses).
    timeout 2 nc 127.0.0.1 "$PROBE_PORT" </dev/null 2>/dev/null
    echo "probed"
    ;;
  *)
    echo "unknown FNRS_TEST_MODE" >&2
    exit 2
    ;;
esac
