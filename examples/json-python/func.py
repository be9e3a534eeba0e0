# A hot function (format: json): one JSON object per line in, one out.
# Needs only Debian's python3. {"name": "teapot"} answers 418.
import json
import sys

while True:
    line = sys.stdin.readline()
    if not line:
        break
    req = json.loads(line)
    name = "World"
    try:
        name = json.loads(req.get("body") or "{}").get("name", name)
    except Exception:
        pass
    proto = req.get("protocol", {})
    print("json-python: call %s" % req.get("call_id"), file=sys.stderr)
    reply = {
        "body": json.dumps({
            "message": "Hello %s" % name,
            "call_id": req.get("call_id"),
            "deadline": req.get("deadline"),
            "content_type": req.get("content_type"),
            "method": proto.get("method"),
            "request_url": proto.get("request_url"),
            "headers": proto.get("headers"),
        }),
        "content_type": "application/json",
        "protocol": {
            "status_code": 418 if name == "teapot" else 200,
            "headers": {"X-Echo-Call-Id": [req.get("call_id", "")]},
        },
    }
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
