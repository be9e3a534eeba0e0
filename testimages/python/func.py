# A Python function on the real Fn Python FDK (PyPI `fdk`), http-stream.
# The same file runs in the Docker image (fnrs-test/python) and as a local
# process in the end-to-end tests, so both drivers face the same function.
# Body: JSON {"name": …} → a greeting; "sleep N" sleeps; "crash" exits;
# "oom" allocates until the memory limit kills it; "boom" raises.
import io
import json
import os
import sys
import time

from fdk import response


def handler(ctx, data: io.BytesIO = None):
    raw = data.getvalue().decode("utf-8", "replace") if data else ""
    print("python fdk handling " + ctx.CallID(), flush=True)
    if raw.startswith("sleep "):
        time.sleep(float(raw.split()[1]))
        return response.Response(ctx, response_data="slept " + raw.split()[1])
    if raw == "crash":
        os._exit(1)
    if raw == "oom":
        hog = []
        while True:
            hog.append(bytearray(16 * 1024 * 1024))
    if raw == "boom":
        raise Exception("user asked for boom")
    name = "World"
    try:
        name = json.loads(raw).get("name", name)
    except (ValueError, AttributeError):
        pass
    print("greeting " + name, file=sys.stderr, flush=True)
    return response.Response(
        ctx,
        response_data=json.dumps({"message": "Hello " + name, "runtime": "python"}),
        headers={"Content-Type": "application/json"},
    )
