# A hot function (format: cloudevent): one CloudEvents 0.1 event per line in,
# one out. Needs only Debian's python3. Data {"name": "teapot"} answers 418.
import json
import sys

while True:
    line = sys.stdin.readline()
    if not line:
        break
    ev = json.loads(line)
    data = ev.get("data")
    name = data.get("name", "World") if isinstance(data, dict) else "World"
    print("cloudevent-python: event %s" % ev.get("eventID"), file=sys.stderr)
    reply = {
        "cloudEventsVersion": "0.1",
        "eventID": ev.get("eventID", ""),
        "source": "fn://cloudevent-python",
        "eventType": "hello.reply",
        "contentType": "application/json",
        "extensions": {
            "protocol": {
                "status_code": 418 if name == "teapot" else 200,
                "headers": {"X-Event-Id": [ev.get("eventID", "")]},
            },
        },
        "data": {"message": "Hello %s" % name, "received": ev},
    }
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
