# A hot function (format: http): one HTTP/1.1 request per call on stdin, one
# HTTP/1.1 response per call on stdout. Needs only Debian's python3.
# Body "teapot" answers 418; the reply echoes what the function received.
import json
import sys

inp = sys.stdin.buffer
out = sys.stdout.buffer


def read_body(headers):
    if "content-length" in headers:
        return inp.read(int(headers["content-length"][0]))
    if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
        body = b""
        while True:
            size = int(inp.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while inp.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return body
            body += inp.read(size)
            inp.readline()
    return b""


while True:
    line = inp.readline()
    if not line:
        break
    method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers = {}
    order = []
    while True:
        h = inp.readline().decode("latin-1").rstrip("\r\n")
        if h == "":
            break
        k, v = h.split(":", 1)
        headers.setdefault(k.lower(), []).append(v.strip())
        order.append(k)
    body = read_body(headers)
    print("http-python: call %s" % headers.get("fn_call_id", ["?"])[0], file=sys.stderr)
    reply = json.dumps({
        "method": method,
        "target": target,
        "header_order": order,
        "call_id": headers.get("fn_call_id", [""])[0],
        "deadline": headers.get("fn_deadline", [""])[0],
        "request_url": headers.get("fn_request_url", [""])[0],
        "headers": headers,
        "body": body.decode("utf-8", "replace"),
    }).encode()
    status = "418 I'm a teapot" if body == b"teapot" else "200 OK"
    out.write(("HTTP/1.1 %s\r\nContent-Type: application/json\r\nX-Echo-Method: %s\r\n"
               "Content-Length: %d\r\n\r\n" % (status, method, len(reply))).encode() + reply)
    out.flush()
