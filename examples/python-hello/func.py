# An http-stream function using the Python FDK from PyPI (`fdk`).
# Input: optional JSON {"name": "...", "status": 404}; "boom" raises.
import io
import json
import logging

from fdk import response


def handler(ctx, data: io.BytesIO = None):
    name = "World"
    status = None
    try:
        body = json.loads(data.getvalue())
        name = body.get("name", name)
        status = body.get("status")
    except Exception:
        pass
    if name == "boom":
        raise Exception("user asked for boom")
    logging.getLogger().info("hello from func")
    headers = {"Content-Type": "application/json", "X-Custom": "yes"}
    if status:
        headers["Location"] = "/elsewhere"
    return response.Response(
        ctx,
        response_data=json.dumps({"message": "Hello {0}".format(name), "call_id": ctx.CallID(),
                                  "fn_id": ctx.FnID(), "app_id": ctx.AppID()}),
        headers=headers,
        status_code=status or 200)
