# A Python function on the real Fn Python FDK (PyPI `fdk`), http-stream.
import io
import json

from fdk import response


def handler(ctx, data: io.BytesIO = None):
    name = "World"
    try:
        body = json.loads(data.getvalue())
        name = body.get("name", name)
    except (ValueError, AttributeError):
        pass
    print("python fdk handling " + ctx.CallID(), flush=True)
    return response.Response(
        ctx,
        response_data=json.dumps({"message": "Hello " + name, "runtime": "python"}),
        headers={"Content-Type": "application/json"},
    )
