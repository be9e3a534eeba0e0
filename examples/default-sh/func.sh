#!/bin/sh
# A cold function (format: default): the request body arrives on stdin, the
# response is what goes to stdout; a non-zero exit fails the call.
input=$(cat)
if [ "$input" = "fail" ]; then
    echo "failing as asked" >&2
    exit 3
fi
printf 'Hello from a cold function\n'
printf 'call_id=%s\nmethod=%s\nrequest_url=%s\ndeadline=%s\n' "$FN_CALL_ID" "$FN_METHOD" "$FN_REQUEST_URL" "$FN_DEADLINE"
# Names like FN_HEADER_Content-Type are not valid shell variables, so read
# them from the process environment itself.
tr '\0' '\n' < /proc/$$/environ | grep '^FN_HEADER_' | sort
printf 'input=%s\n' "$input"
