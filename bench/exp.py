#!/usr/bin/env python3
"""A quick A/B experiment on the hot path, smaller than bench/run.sh.

Starts `fnrs serve` (pinned to cpu 0) on a temp SQLite store with the process
driver, deploys one http-stream function, runs `fnrs-load` (pinned to cpu 1)
and prints the load's JSON summary, then one line per server thread name:
voluntary and involuntary context switches per call and CPU per call (from
/proc/<pid>/task/<tid>/schedstat, in ns). Run two builds alternately and
compare medians: this machine is noisy.

Environment:
  T          the directory holding release/{fnrs,fnrs-load,<FN>} (default:
             $CARGO_TARGET_DIR or ./target); build them with
             `cargo build --release --locked -p fnrs-cli -p fnrs-bench` and
             `examples/rust-hello/setup.sh release` (or use FN=bench-fn)
  N          calls (default 10000), sequential unless CLIENTS > 1
  CLIENTS    concurrent clients for a 3 s run (default 1)
  INTERVAL   ms between sequential calls (calls after idle)
  FN         rust-hello (logs a line per call) or bench-fn (no log)
  SCPU/CCPU  cpus of the server and of the client (default 0 / 1)
  PERF=file  `perf record` the server during the run
  STRACE=file  `strace -c -f` the server during the run (counts syscalls)
  KEEP=1     keep the temp dir
Bounded: N calls or 3 s; 127.0.0.1 only.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request

T = os.environ.get("T") or os.environ.get("CARGO_TARGET_DIR") or "target"
REL = os.path.join(T, "release")
N = int(os.environ.get("N", "10000"))
CLIENTS = os.environ.get("CLIENTS", "1")
FN = os.environ.get("FN", "rust-hello")


def fn_binary():
    for p in [os.path.join(REL, FN), os.path.join("examples", FN, "target", "release", FN)]:
        if os.path.exists(p):
            return p
    raise SystemExit(f"no {FN} binary under {REL}")


def main():
    tmp = tempfile.mkdtemp(prefix="fnrs-exp-")
    os.chmod(tmp, 0o755)
    d = f"{tmp}/fn"
    os.makedirs(d)
    os.chmod(d, 0o755)
    shutil.copy2(fn_binary(), f"{d}/{FN}")
    with open(f"{d}/func.yaml", "w") as f:
        f.write(f"schema_version: 20180708\nname: {FN}\nversion: 0.0.1\n"
                f"entrypoint: ./{FN}\nformat: http-stream\nmemory: 128\n")
    os.makedirs(f"{tmp}/iofs")
    env = dict(os.environ, FN_PORT="0", FN_LISTEN="127.0.0.1",
               FN_DB_URL=f"sqlite3://{tmp}/fn.db", FN_IOFS_PATH=f"{tmp}/iofs",
               FN_DISABLE_DEBUG_USER_LOGS="true", FN_LOG_LEVEL="error")
    srv = subprocess.Popen(["taskset", "-c", os.environ.get("SCPU", "0"), f"{REL}/fnrs", "serve"],
                           env=env, stdout=subprocess.PIPE, text=True)
    try:
        run(tmp, d, srv)
    finally:
        srv.terminate()
        srv.wait(timeout=30)
        if not os.environ.get("KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


def run(tmp, d, srv):
    addr = None
    deadline = time.time() + 30
    for line in srv.stdout:
        m = re.search(r"listening on (\S+)", line)
        if m:
            addr = m.group(1)
            break
        if time.time() > deadline:
            break
    if not addr:
        raise SystemExit("fnrs did not start")

    def api(method, path, body):
        r = urllib.request.Request(f"http://{addr}{path}", data=json.dumps(body).encode(),
                                   method=method, headers={"content-type": "application/json"})
        return json.loads(urllib.request.urlopen(r, timeout=30).read())

    app = api("POST", "/v2/apps", {"name": "exp"})
    fn = api("POST", "/v2/fns", {"app_id": app["id"], "name": "f", "image": f"file://{d}",
                                 "format": "http-stream", "memory": 128})

    def threads():
        out = {}
        for t in glob.glob(f"/proc/{srv.pid}/task/*"):
            try:
                name = open(f"{t}/comm").read().strip()
                status = open(f"{t}/status").read()
                vol = int(re.search(r"\bvoluntary_ctxt_switches:\s+(\d+)", status).group(1))
                invol = int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", status).group(1))
                ns = int(open(f"{t}/schedstat").read().split()[0])
            except (OSError, AttributeError, ValueError, IndexError):
                continue
            o = out.setdefault(name, [0, 0, 0])
            o[0] += vol
            o[1] += invol
            o[2] += ns
        return out

    load = ["taskset", "-c", os.environ.get("CCPU", "1"), f"{REL}/fnrs-load",
            "--target", f"tcp:{addr}", "--path", f"/invoke/{fn['id']}", "--warmup", "200",
            "--server-pid", str(srv.pid)]
    if os.environ.get("INTERVAL"):
        load += ["--requests", str(N), "--interval-ms", os.environ["INTERVAL"]]
    elif CLIENTS == "1":
        load += ["--requests", str(N)]
    else:
        load += ["--clients", CLIENTS, "--duration", "3"]
    # Warm up: start the instance, fill the caches.
    subprocess.run(load[:load.index("--warmup")] + ["--requests", "300"], capture_output=True,
                   timeout=120)
    before = threads()
    tracer = None
    if os.environ.get("STRACE"):
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", os.environ["STRACE"], "-p",
                                   str(srv.pid)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(1)
    elif os.environ.get("PERF"):
        tracer = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999",
                                   "--call-graph", "dwarf,8192", "-o", os.environ["PERF"],
                                   "-p", str(srv.pid)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    out = subprocess.run(load, capture_output=True, text=True, timeout=600).stdout
    after = threads()
    if tracer:
        tracer.send_signal(2)
        tracer.wait(timeout=60)
    r = json.loads(out)
    n = r.get("count") or N
    print(json.dumps({k: v for k, v in r.items() if not k.endswith("samples_us")}))
    for name, a in sorted(after.items()):
        b = before.get(name, [0, 0, 0])
        print(f"  {name:20s} vol/call {(a[0] - b[0]) / n:.2f} invol/call {(a[1] - b[1]) / n:.2f}"
              f" cpu_us/call {(a[2] - b[2]) / n / 1000:.2f}")


if __name__ == "__main__":
    main()
