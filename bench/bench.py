#!/usr/bin/env python3
"""fnrs benchmark harness: see bench/README.md. Run through bench/run.sh.

Starts fnrs on a temp SQLite store, deploys the Rust FDK function, measures
it against the floor (the same function called directly over its unix socket
by the same client, fnrs-load), prints one table and writes JSON under
bench/results/. Every loop is bounded; every address is 127.0.0.1.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE_KB = 4

# The drivers measured. Docker is for later: its row stays in the table.
DRIVERS = {
    "process": {"available": True},
    "docker": {"available": False, "why": "not measured yet (slot for the docker driver)"},
}

# CPU placements: which CPUs the server (and so its function instances,
# which inherit its affinity) and the client run on.
PLACEMENTS = {
    "cross": {"server": "0", "client": "1", "what": "server+fn on cpu0, client on cpu1"},
    "same": {"server": "0", "client": "0", "what": "server, fn and client all on cpu0"},
    "free": {"server": None, "client": None, "what": "no pinning"},
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def loadavg():
    """Load average, and how many compilers (other people's builds) run."""
    with open("/proc/loadavg") as f:
        la = " ".join(f.read().split()[:3])
    builds = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    builds += f.read().strip() in ("rustc", "cc1", "cc1plus", "ld", "cargo")
            except OSError:
                pass
    return f"{la} (compilers {builds})"


def taskset(cpu):
    return ["taskset", "-c", cpu] if cpu is not None else []


# --------------------------------------------------------------- /proc ---

def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def reset_peak_rss(pid):
    # Writing 5 to clear_refs resets VmHWM to the current RSS.
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def descendants(pid):
    """Pids of all descendants of pid, with their command names."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        ppid = int(s.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append((int(d), comm))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c[0])
    return out


def count_instances(server_pid, comm):
    return sum(1 for _, c in descendants(server_pid) if c == comm)


def rss_of_tree_kb(pids):
    return sum(status_kb(p, "VmRSS") or 0 for p in pids)


# ---------------------------------------------------------------- tools ---

class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="fnrs-bench-")
        # The sandbox runs functions as nobody: it must reach the fn dirs.
        os.chmod(self.tmp, 0o755)
        self.procs = []
        self.bins = {}

    # build ------------------------------------------------------------
    def build(self):
        target = os.environ.get("CARGO_TARGET_DIR")
        if not target:
            meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                                  cwd=ROOT, check=True, capture_output=True, text=True).stdout
            target = json.loads(meta)["target_directory"]
        if not self.args.skip_build:
            log(f"building release binaries (target {target}) ...")
            subprocess.run(["cargo", "build", "--release", "--locked",
                            "-p", "fnrs-cli", "-p", "rust-hello", "-p", "fnrs-bench"],
                           cwd=ROOT, check=True)
        rel = os.path.join(target, "release")
        for b in ["fnrs", "rust-hello", "bench-fn", "fnrs-load"]:
            p = os.path.join(rel, b)
            if not os.path.exists(p):
                sys.exit(f"missing {p}: build it (drop --skip-build)")
            self.bins[b] = p
        # Function directories (what a sandboxed function sees): the binary
        # itself is the entrypoint, as a func.yaml would name it.
        for name in ["rust-hello", "bench-fn"]:
            d = os.path.join(self.tmp, "fns", name)
            os.makedirs(d)
            os.chmod(os.path.dirname(d), 0o755)
            os.chmod(d, 0o755)
            shutil.copy2(self.bins[name], os.path.join(d, name))
            with open(os.path.join(d, "func.yaml"), "w") as f:
                f.write(f"schema_version: 20180708\nname: {name}\nversion: 0.0.1\n"
                        f"entrypoint: ./{name}\nformat: http-stream\nmemory: 128\n")
            self.bins[name + "-dir"] = d

    # processes ----------------------------------------------------------
    def start_server(self, cpu):
        n = len(self.procs)
        data = os.path.join(self.tmp, f"server{n}")
        os.makedirs(os.path.join(data, "iofs"))
        env = dict(os.environ,
                   FN_PORT="0", FN_LISTEN="127.0.0.1",
                   FN_DB_URL=f"sqlite3://{data}/fn.db",
                   FN_LOG_LEVEL=self.args.log_level,
                   FN_IOFS_PATH=f"{data}/iofs",
                   FN_DISABLE_DEBUG_USER_LOGS="true",
                   # Accounting only: 1000 idle 8 MB fns plus 32 hot 128 MB ones.
                   FN_MAX_TOTAL_MEMORY_BYTES=str(64 << 30),
                   FN_MAX_QUEUE_WAIT_MSECS="30000")
        errf = open(os.path.join(data, "server.log"), "w")
        p = subprocess.Popen(taskset(cpu) + [self.bins["fnrs"], "serve"], env=env,
                             stdout=subprocess.PIPE, stderr=errf, text=True,
                             start_new_session=True)
        self.procs.append(p)
        deadline = time.time() + 30
        addr = None
        while time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            m = re.search(r"fnrs listening on (\S+)", line)
            if m:
                addr = m.group(1)
                break
        if addr is None:
            sys.exit(f"fnrs did not start: see {data}/server.log")
        log(f"fnrs pid {p.pid} on {addr} (cpu {cpu})")
        return Server(self, p, addr, data)

    def start_direct(self, n, cpu, name="rust-hello", poll=0.005):
        """n instances of the function started alone (the floor)."""
        out = []
        for i in range(n):
            d = tempfile.mkdtemp(prefix="floor-", dir=self.tmp)
            sock = os.path.join(d, "lsnr.sock")
            env = dict(os.environ, FN_FORMAT="http-stream", FN_LISTENER=f"unix:{sock}")
            p = subprocess.Popen(taskset(cpu) + [self.bins[name]], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
            out.append((p, sock))
        deadline = time.time() + 10
        for p, sock in out:
            while not os.path.exists(sock):
                if time.time() > deadline or p.poll() is not None:
                    sys.exit(f"floor instance did not create {sock}")
                time.sleep(poll)
        return out

    def stop_server(self, srv):
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(60)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            srv.proc.wait()

    def stop_direct(self, insts):
        for p, _ in insts:
            p.terminate()
        for p, _ in insts:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def load(self, cpu, targets, path="/", extra=(), timeout=None):
        cmd = taskset(cpu) + [self.bins["fnrs-load"]]
        for t in targets:
            cmd += ["--target", t]
        cmd += ["--path", path] + list(extra)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or 600)
        if r.returncode != 0:
            raise RuntimeError(f"fnrs-load failed: {r.stderr.strip()}")
        out = json.loads(r.stdout)
        if out["errors"]:
            log(f"  warning: {out['errors']} errors: {out.get('last_error')} {out['statuses']}")
        return out

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Server:
    def __init__(self, bench, proc, addr, data):
        self.bench, self.proc, self.addr, self.data = bench, proc, addr, data
        self.pid = proc.pid
        self.target = f"tcp:{addr}"

    def api(self, method, path, body=None, timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.addr}{path}", data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def app(self, name):
        st, a = self.api("POST", "/v2/apps", {"name": name})
        if st != 200:
            raise RuntimeError(f"create app: {st} {a}")
        return a["id"]

    def fn(self, app_id, name, fn_dir, memory=128, idle_timeout=None):
        body = {"app_id": app_id, "name": name, "image": f"file://{fn_dir}",
                "format": "http-stream", "memory": memory}
        if idle_timeout:
            body["idle_timeout"] = idle_timeout
        st, f = self.api("POST", "/v2/fns", body)
        if st != 200:
            raise RuntimeError(f"create fn: {st} {f}")
        return f["id"]

    def trigger(self, app_id, fn_id, name, source):
        st, t = self.api("POST", "/v2/triggers", {"app_id": app_id, "fn_id": fn_id,
                                                  "name": name, "type": "http",
                                                  "source": source})
        if st != 200:
            raise RuntimeError(f"create trigger: {st} {t}")

    def rss_kb(self):
        return status_kb(self.pid, "VmRSS")


# ------------------------------------------------------------- phases ---

def seq_run(b, cpu, target, path, n, fn_headers=False, pid=None, warmup=200):
    extra = ["--requests", str(n), "--warmup", str(warmup), "--max-seconds", "120"]
    if fn_headers:
        extra.append("--fn-headers")
    if pid:
        extra += ["--server-pid", str(pid)]
    return b.load(cpu, [target], path, extra)


def conc_run(b, cpu, targets, path, clients, secs, fn_headers=False, pid=None):
    extra = ["--clients", str(clients), "--duration", str(secs), "--warmup", "20",
             "--max-seconds", str(secs + 60)]
    if fn_headers:
        extra.append("--fn-headers")
    if pid:
        extra += ["--server-pid", str(pid)]
    return b.load(cpu, targets, path, extra)


def hot_phase(b, srv, placement, fn_id, trigger_path, fn_name):
    """One run of the hot measurements (floor measured in the same run)."""
    a = b.args
    pl = PLACEMENTS[placement]
    n = a.seq_calls
    r = {"load_before": loadavg()}
    floor = b.start_direct(1, pl["server"], fn_name)
    try:
        r["floor"] = seq_run(b, pl["client"], f"unix:{floor[0][1]}", "/call", n,
                             fn_headers=True)
    finally:
        b.stop_direct(floor)
    r["invoke"] = seq_run(b, pl["client"], srv.target, f"/invoke/{fn_id}", n, pid=srv.pid)
    r["trigger"] = seq_run(b, pl["client"], srv.target, trigger_path, n, pid=srv.pid)
    r["conc"] = {}
    for c in a.clients:
        fnrs = conc_run(b, pl["client"], [srv.target], f"/invoke/{fn_id}", c, a.conc_secs,
                        pid=srv.pid)
        inst = max(1, count_instances(srv.pid, fn_name))
        fnrs["instances"] = inst
        floor = b.start_direct(min(inst, c), pl["server"], fn_name)
        try:
            direct = conc_run(b, pl["client"], [f"unix:{s}" for _, s in floor], "/call", c,
                              a.conc_secs, fn_headers=True)
        finally:
            b.stop_direct(floor)
        direct["instances"] = len(floor)
        r["conc"][str(c)] = {"fnrs": fnrs, "floor": direct}
    r["load_after"] = loadavg()
    return r


def strip(run):
    run = dict(run)
    run.pop("samples_us", None)
    return run


def idle_phase(b, srv, placement, fn_id):
    pl = PLACEMENTS[placement]
    out = {}
    for ms, n in [(200, b.args.idle_calls[0]), (2000, b.args.idle_calls[1])]:
        r = b.load(pl["client"], [srv.target], f"/invoke/{fn_id}",
                   ["--requests", str(n), "--warmup", "50", "--interval-ms", str(ms),
                    "--samples", "--max-seconds", "120"])
        out[f"{ms}ms"] = r
    return out


def cold_phase(b, srv, app_id, placement):
    pl = PLACEMENTS[placement]
    rows = []
    for i in range(b.args.cold_fns):
        fn_id = srv.fn(app_id, f"cold{placement}{i}", b.bins["rust-hello-dir"], memory=128)
        r = b.load(pl["client"], [srv.target], f"/invoke/{fn_id}",
                   ["--requests", "1", "--show-headers", "--max-seconds", "30"])
        call_id = (r.get("last_headers") or {}).get("fn-call-id")
        row = {"total_us": r["latency"]["p50_us"], "ttfb_us": r["ttfb"]["p50_us"],
               "errors": r["errors"]}
        for _ in range(50):
            if not call_id:
                break
            st, rec = srv.api("GET", f"/v2/fns/{fn_id}/calls/{call_id}")
            if st == 200 and isinstance(rec, dict):
                cs = (rec.get("stats") or {}).get("cold_start") or {}
                row["start_us"] = cs.get("start_us")
                row["ready_us"] = cs.get("ready_us")
                break
            time.sleep(0.02)
        rows.append(row)
        time.sleep(0.05)
    st, metrics = srv.api("GET", "/metrics")
    phases = {}
    if st == 200 and isinstance(metrics, str):
        for ph in ["start", "ready"]:
            s = re.search(r'fn_cold_start_seconds_sum\{[^}]*phase="%s"[^}]*\} (\S+)' % ph, metrics)
            c = re.search(r'fn_cold_start_seconds_count\{[^}]*phase="%s"[^}]*\} (\S+)' % ph,
                          metrics)
            if s and c and float(c.group(1)) > 0:
                phases[ph] = {"mean_us": float(s.group(1)) / float(c.group(1)) * 1e6,
                              "count": float(c.group(1))}

    def med(k):
        v = [r[k] for r in rows if r.get(k) is not None]
        return statistics.median(v) if v else None
    summary = {k: med(k) for k in ["start_us", "ready_us", "ttfb_us", "total_us"]}
    # The floor: the same binary started alone (no sandbox, no cgroup):
    # time from spawn to its socket, then its first call.
    floor = []
    for _ in range(min(5, len(rows))):
        t0 = time.perf_counter()
        inst = b.start_direct(1, pl["server"], "rust-hello", poll=0.0002)
        ready = (time.perf_counter() - t0) * 1e6
        try:
            r = b.load(pl["client"], [f"unix:{inst[0][1]}"], "/call",
                       ["--requests", "1", "--fn-headers", "--max-seconds", "30"])
        finally:
            b.stop_direct(inst)
        floor.append({"ready_us": ready, "first_call_us": r["latency"]["p50_us"]})
    summary["floor_ready_us"] = statistics.median(x["ready_us"] for x in floor)
    summary["floor_first_call_us"] = statistics.median(x["first_call_us"] for x in floor)
    if summary["ready_us"] is not None and summary["ttfb_us"] is not None:
        # What is neither the driver's start nor the wait for the socket:
        # routing, lookup, reservation before, and the call itself after.
        summary["other_us"] = summary["ttfb_us"] - summary["ready_us"]
    if summary["start_us"] is not None and summary["ready_us"] is not None:
        summary["ready_wait_us"] = summary["ready_us"] - summary["start_us"]
    return {"fns": len(rows), "median": summary, "metrics": phases, "calls": rows}


def stream_phase(b, srv, app_id, placement):
    pl = PLACEMENTS[placement]
    fn_id = srv.fn(app_id, f"stream{placement}", b.bins["bench-fn-dir"], memory=128)
    b.load(pl["client"], [srv.target], f"/invoke/{fn_id}", ["--requests", "3", "--body", "0"])
    out = {}
    for label, size in [("1MiB", 1 << 20), ("64MiB", 64 << 20)]:
        time.sleep(0.2)
        reset = reset_peak_rss(srv.pid)
        before = status_kb(srv.pid, "VmHWM")
        rss_before = srv.rss_kb()
        r = b.load(pl["client"], [srv.target], f"/invoke/{fn_id}",
                   ["--requests", "3", "--body", str(size), "--max-seconds", "120"])
        after = status_kb(srv.pid, "VmHWM")
        out[label] = {"ttfb_us": r["ttfb"]["p50_us"], "total_us": r["latency"]["p50_us"],
                      "bytes": r["bytes"] // max(r["count"], 1), "errors": r["errors"],
                      "rss_before_kb": rss_before, "hwm_before_kb": before,
                      "hwm_after_kb": after, "hwm_reset": reset,
                      "peak_growth_kb": (after - before) if (after and before) else None}
    # Floor: the same function alone, same client.
    floor = b.start_direct(1, pl["server"], "bench-fn")
    try:
        for label, size in [("1MiB", 1 << 20), ("64MiB", 64 << 20)]:
            r = b.load(pl["client"], [f"unix:{floor[0][1]}"], "/call",
                       ["--requests", "3", "--fn-headers", "--body", str(size),
                        "--warmup", "1", "--max-seconds", "120"])
            out[label]["floor_ttfb_us"] = r["ttfb"]["p50_us"]
            out[label]["floor_total_us"] = r["latency"]["p50_us"]
    finally:
        b.stop_direct(floor)
    return out


def instances_phase(b, srv, app_id, counts):
    """RSS of the server per idle instance: deploy fns, call each once.
    Run on a fresh server, so earlier phases' memory does not hide growth."""
    out = {"steps": []}
    warm = srv.fn(app_id, "idlewarm", b.bins["rust-hello-dir"], memory=8, idle_timeout=3600)
    b.load(None, [srv.target], f"/invoke/{warm}", ["--requests", "100"])
    time.sleep(1)
    base = srv.rss_kb()
    base_inst = count_instances(srv.pid, "rust-hello")
    out["base_rss_kb"] = base
    made = 0
    for target in counts:
        t0 = time.time()
        failed = None
        while made < target and time.time() - t0 < b.args.instances_secs:
            fn_id = srv.fn(app_id, f"idle{made}", b.bins["rust-hello-dir"], memory=8,
                           idle_timeout=3600)
            try:
                r = b.load(None, [srv.target], f"/invoke/{fn_id}",
                           ["--requests", "1", "--max-seconds", "30"])
            except RuntimeError as e:
                failed = str(e)
                break
            if r["errors"]:
                failed = f"call {made}: {r['statuses']} {r.get('last_error')}"
                break
            made += 1
        time.sleep(2)
        rss = srv.rss_kb()
        tree = descendants(srv.pid)
        inst = sum(1 for _, c in tree if c == "rust-hello") - base_inst
        step = {"wanted": target, "fns_called": made, "instances_alive": inst,
                "rss_kb": rss, "secs": round(time.time() - t0, 1),
                "processes_per_instance": round(len(tree) / max(inst, 1), 2),
                "instance_tree_rss_kb_each": rss_of_tree_kb([p for p, _ in tree]) / max(inst, 1),
                "per_instance_kb": (rss - base) / made if made else None,
                "load": loadavg()}
        if failed or made < target:
            step["stopped"] = failed or f"time limit {b.args.instances_secs}s"
        log(f"  idle instances: {step}")
        out["steps"].append(step)
        if made < target:
            break
    return out


def compact(report, lines=200):
    """perf's padding and long tails off, so reports stay readable in git."""
    out = [re.sub(r"\s{3,}", "   ", ln).rstrip() for ln in report.splitlines()[:lines]]
    return "\n".join(out) + "\n"


def profile_phase(b, srv, fn_id, placement, secs, clients):
    """perf record (cpu-clock, dwarf call graphs) of the server under load."""
    pl = PLACEMENTS[placement]
    os.makedirs(b.args.out, exist_ok=True)
    data = os.path.join(b.tmp, "perf.data")
    b.load(pl["client"], [srv.target], f"/invoke/{fn_id}", ["--requests", "500"])
    rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g",
                            "--call-graph", "dwarf,8192", "-p", str(srv.pid), "-o", data],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    r = b.load(pl["client"], [srv.target], f"/invoke/{fn_id}",
               ["--clients", str(clients), "--duration", str(secs), "--server-pid",
                str(srv.pid), "--max-seconds", str(secs + 30)])
    rec.send_signal(signal.SIGINT)
    rec.wait(120)
    out = {"load": strip(r), "data": data}
    for name, extra in [("self", ["--no-children", "--sort", "dso,symbol"]),
                        ("children", ["--children", "--sort", "symbol"])]:
        rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--percent-limit", "0.7",
                              "-g", "none"] + extra,
                             capture_output=True, text=True, timeout=600)
        path = os.path.join(b.args.out, f"profile-{placement}-c{clients}-{name}.txt")
        with open(path, "w") as fh:
            fh.write(compact(rep.stdout))
        out[name] = path
    log(f"  profile written: {out['self']} {out['children']}")
    return out


def profile_cold_phase(b, srv, app_id, placement, n):
    """perf record (cpu-clock, dwarf call graphs) of the server during n
    cold starts; also a per-thread wall-clock split from the call records."""
    data = os.path.join(b.tmp, "perf-cold.data")
    rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "4999", "-g",
                            "--call-graph", "dwarf,8192", "-p", str(srv.pid), "-o", data],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    b.args.cold_fns = n
    cold = cold_phase(b, srv, app_id, placement)
    rec.send_signal(signal.SIGINT)
    rec.wait(120)
    path = os.path.join(b.args.out, f"profile-cold-{placement}-children.txt")
    rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--percent-limit", "0.7",
                          "-g", "none", "--children", "--sort", "symbol"],
                         capture_output=True, text=True, timeout=600)
    with open(path, "w") as fh:
        fh.write(compact(rep.stdout))
    log(f"  cold profile written: {path} (data {data})")
    return {"cold": cold["median"], "report": path, "data": data}


# ---------------------------------------------------------- reporting ---

def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summarize_runs(runs, clients):
    """Medians over repeated runs; ratios are taken per run first."""
    s = {"runs": len(runs)}
    for k in ["floor", "invoke", "trigger"]:
        s[k] = {q: med([r[k]["latency"][q] for r in runs])
                for q in ["p50_us", "p90_us", "p99_us", "p999_us", "mean_us"]}
        s[k]["rps"] = med([r[k]["rps"] for r in runs])
    for k in ["invoke", "trigger"]:
        for q in ["p50_us", "p99_us"]:
            s[k][f"overhead_{q}"] = med([r[k]["latency"][q] - r["floor"]["latency"][q]
                                         for r in runs])
            s[k][f"ratio_{q}"] = med([r[k]["latency"][q] / r["floor"]["latency"][q]
                                      for r in runs])
        s[k]["cpu_us_per_call"] = med([r[k]["server"]["cpu_us_per_call"] for r in runs])
    s["conc"] = {}
    for c in clients:
        c = str(c)
        rows = [r["conc"][c] for r in runs]
        s["conc"][c] = {
            "fnrs_rps": med([x["fnrs"]["rps"] for x in rows]),
            "floor_rps": med([x["floor"]["rps"] for x in rows]),
            "ratio": med([x["fnrs"]["rps"] / x["floor"]["rps"] for x in rows
                          if x["floor"]["rps"]]),
            "fnrs_p50_us": med([x["fnrs"]["latency"]["p50_us"] for x in rows]),
            "fnrs_p99_us": med([x["fnrs"]["latency"]["p99_us"] for x in rows]),
            "floor_p50_us": med([x["floor"]["latency"]["p50_us"] for x in rows]),
            "floor_p99_us": med([x["floor"]["latency"]["p99_us"] for x in rows]),
            "cpu_us_per_call": med([x["fnrs"]["server"]["cpu_us_per_call"] for x in rows]),
            "rss_kb": med([x["fnrs"]["server"]["rss_kb_end"] for x in rows]),
            "instances": med([x["fnrs"]["instances"] for x in rows]),
            "errors": sum(x["fnrs"]["errors"] + x["floor"]["errors"] for x in rows),
        }
    s["loads"] = [r["load_before"] for r in runs]
    return s


def f(v, unit="", nd=0):
    if v is None:
        return "n/a"
    return f"{v:,.{nd}f}{unit}"


def goals(res):
    """The goals of the issue, each with the measured number and met/not met."""
    out = []
    p = res["drivers"]["process"]
    main = p["placements"].get("cross") or next(iter(p["placements"].values()))
    s = main["summary"]

    def row(metric, goal, value, met):
        out.append({"metric": metric, "goal": goal, "measured": value,
                    "met": None if met is None else bool(met)})
    ov = s["invoke"]["overhead_p50_us"]
    row("hot p50 overhead over the floor, process driver", "<= 40 us",
        f"{f(ov, ' us', 1)} (/invoke), {f(s['trigger']['overhead_p50_us'], ' us', 1)} (/t)",
        ov is not None and ov <= 40 and s["trigger"]["overhead_p50_us"] <= 40)
    p99 = max(s["invoke"]["p99_us"], s["trigger"]["p99_us"])
    row("hot p99 through fnrs", "<= 500 us",
        f"{f(s['invoke']['p99_us'], ' us')} (/invoke), {f(s['trigger']['p99_us'], ' us')} (/t)",
        p99 <= 500)
    c = s["conc"]
    parts, ok = [], True
    for k in ["8", "32"]:
        if k in c:
            parts.append(f"{k}: {f(c[k]['fnrs_rps'])}/s = {f(c[k]['ratio'] * 100, ' %')}"
                         f" of {f(c[k]['floor_rps'])}/s direct")
            ok = ok and c[k]["ratio"] >= 0.8
    if "8" in c and "32" in c:
        drop = c["32"]["fnrs_rps"] < c["8"]["fnrs_rps"] * 0.95
        parts.append("drop 8->32: " + ("yes" if drop else "no"))
        ok = ok and not drop
    row("throughput at 8 and at 32 clients", ">= 80 % of direct; no drop 8->32",
        "; ".join(parts), ok if parts else None)
    cpu = s["invoke"]["cpu_us_per_call"]
    row("server CPU per hot call", "<= 30 us",
        f"{f(cpu, ' us', 1)} (sequential /invoke); "
        + ", ".join(f"{k} clients: {f(v['cpu_us_per_call'], ' us', 1)}" for k, v in c.items()),
        cpu is not None and cpu <= 30)
    cold = main.get("cold", {}).get("median", {})
    row("cold start, process driver, Rust function", "<= 10 ms to first byte",
        f"{f(cold.get('ttfb_us', None) and cold['ttfb_us'] / 1000, ' ms', 2)} p50 over "
        f"{main.get('cold', {}).get('fns', 0)} fns",
        cold.get("ttfb_us") is not None and cold["ttfb_us"] <= 10_000)
    idle = main.get("idle", {})
    if idle:
        worst = {k: v["latency"]["max_us"] for k, v in idle.items()}
        meds = {k: v["latency"]["p50_us"] for k, v in idle.items()}
        row("call after 200 ms / 2 s idle", "within the hot p99",
            f"200ms: p50 {f(meds['200ms'], ' us')} max {f(worst['200ms'], ' us')}; "
            f"2s: p50 {f(meds['2000ms'], ' us')} max {f(worst['2000ms'], ' us')}"
            f" (hot p99 {f(s['invoke']['p99_us'], ' us')})",
            max(worst.values()) <= s["invoke"]["p99_us"])
    inst = res.get("instances")
    idle_rss = res.get("idle_rss_kb")
    per = None
    if inst and inst["steps"]:
        per = inst["steps"][-1]["per_instance_kb"]
    row("server RSS idle; per idle instance", "<= 20 MB; <= 64 KB",
        f"{f(idle_rss and idle_rss / 1024, ' MB', 1)}; "
        + ", ".join(f"{st['fns_called']} inst: {f(st['per_instance_kb'], ' KB', 1)}"
                    for st in (inst or {}).get("steps", [])),
        None if idle_rss is None or per is None else (idle_rss <= 20 * 1024 and per <= 64))
    st = main.get("stream", {}).get("64MiB")
    if st:
        g = st["peak_growth_kb"]
        row("64 MiB streamed response", "server peak RSS grows by <= 8 MB",
            f"+{f(g and g / 1024, ' MB', 1)} (ttfb {f(st['ttfb_us'], ' us')}, total "
            f"{f(st['total_us'] / 1000, ' ms', 1)})", g is not None and g <= 8 * 1024)
    return out


def print_report(res):
    lines = []
    P = lines.append
    P(f"fnrs benchmark {res['started']}  mode={res['mode']}  runs={res['runs']}"
      f"  function={res['function']}  git={res['git']}")
    P(f"load before: {res['load_start']}  after: {res.get('load_end')}")
    for drv, d in res["drivers"].items():
        if not d.get("available"):
            P(f"\n== driver {drv}: {d.get('why')}")
            continue
        for pl, pd in d["placements"].items():
            s = pd["summary"]
            P(f"\n== driver {drv}, placement {pl} ({PLACEMENTS[pl]['what']}),"
              f" load per run: {', '.join(s['loads'])}")
            P(f"{'sequential (us)':<22}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}"
              f"{'req/s':>9}{'+p50':>9}{'x p50':>7}{'+p99':>9}{'cpu/call':>10}")
            for k, label in [("floor", "floor (direct UDS)"), ("invoke", "/invoke"),
                             ("trigger", "/t/app/src")]:
                r = s[k]
                P(f"{label:<22}{f(r['p50_us']):>9}{f(r['p90_us']):>9}{f(r['p99_us']):>9}"
                  f"{f(r['p999_us']):>9}{f(r['rps']):>9}"
                  f"{f(r.get('overhead_p50_us'), '', 1) if k != 'floor' else '':>9}"
                  f"{f(r.get('ratio_p50_us'), '', 2) if k != 'floor' else '':>7}"
                  f"{f(r.get('overhead_p99_us')) if k != 'floor' else '':>9}"
                  f"{f(r.get('cpu_us_per_call'), '', 1) if k != 'floor' else '':>10}")
            P(f"{'concurrent /invoke':<22}{'req/s':>9}{'direct':>9}{'ratio':>7}{'p50':>9}"
              f"{'p99':>9}{'dir p50':>9}{'dir p99':>9}{'cpu/call':>10}{'RSS MB':>8}{'inst':>5}")
            for c, r in s["conc"].items():
                P(f"{c + ' clients':<22}{f(r['fnrs_rps']):>9}{f(r['floor_rps']):>9}"
                  f"{f(r['ratio'], '', 2):>7}{f(r['fnrs_p50_us']):>9}{f(r['fnrs_p99_us']):>9}"
                  f"{f(r['floor_p50_us']):>9}{f(r['floor_p99_us']):>9}"
                  f"{f(r['cpu_us_per_call'], '', 1):>10}"
                  f"{f(r['rss_kb'] and r['rss_kb'] / 1024, '', 1):>8}{f(r['instances']):>6}")
            if "idle" in pd:
                for k, r in pd["idle"].items():
                    P(f"after {k} idle: n={r['count']} p50 {f(r['latency']['p50_us'])} us,"
                      f" max {f(r['latency']['max_us'])} us (hot p99"
                      f" {f(s['invoke']['p99_us'])} us)")
            if "cold" in pd:
                m = pd["cold"]["median"]
                P(f"cold start (p50 of {pd['cold']['fns']} new fns, us): driver start"
                  f" {f(m.get('start_us'))}, +socket ready {f(m.get('ready_wait_us'))}"
                  f" (ready {f(m.get('ready_us'))}), rest to first byte"
                  f" {f(m.get('other_us'))}; first byte {f(m.get('ttfb_us'))},"
                  f" total {f(m.get('total_us'))}; the binary alone (no sandbox): socket"
                  f" after {f(m.get('floor_ready_us'))}, first call {f(m.get('floor_first_call_us'))}")
            if "stream" in pd:
                for k, r in pd["stream"].items():
                    P(f"stream {k}: ttfb {f(r['ttfb_us'])} us (direct"
                      f" {f(r.get('floor_ttfb_us'))}), total {f(r['total_us'] / 1000, '', 1)}"
                      f" ms (direct {f(r.get('floor_total_us', 0) / 1000, '', 1)}), server"
                      f" peak RSS +{f(r['peak_growth_kb'] and r['peak_growth_kb'] / 1024, '', 1)}"
                      f" MB")
    P(f"\nserver RSS idle (after start and deploy, before calls):"
      f" {f(res.get('idle_rss_kb') and res['idle_rss_kb'] / 1024, ' MB', 1)}")
    for st in (res.get("instances") or {}).get("steps", []):
        P(f"idle instances: {st['fns_called']}/{st['wanted']} fns called,"
          f" {st['instances_alive']} alive, server RSS {f(st['rss_kb'] / 1024, ' MB', 1)},"
          f" {f(st['per_instance_kb'], ' KB', 1)} per instance"
          + f" ({st.get('processes_per_instance')} processes and"
          f" {f(st.get('instance_tree_rss_kb_each'), ' KB')} RSS each outside the server)"
          + (f" (stopped: {st['stopped']})" if st.get("stopped") else ""))
    P("\ngoals (driver process, placement cross when measured):")
    P(f"{'metric':<44}{'goal':<34}{'met':<9}measured")
    for g in res["goals"]:
        met = "n/a" if g["met"] is None else ("met" if g["met"] else "NOT met")
        P(f"{g['metric']:<44}{g['goal']:<34}{met:<9}{g['measured']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- main ---

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes (under 2 minutes)")
    ap.add_argument("--runs", type=int, help="repeated hot runs (median reported)")
    ap.add_argument("--placements", help="comma list of cross,same,free")
    ap.add_argument("--function", default="rust-hello", choices=["rust-hello", "bench-fn"],
                    help="the trivial function of the hot measurements")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--no-instances", action="store_true", help="skip the idle-instances phase")
    ap.add_argument("--instances", help="comma list of idle instance counts (default 100,1000)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--profile", type=float, metavar="SECS",
                    help="only profile the server with perf for SECS under load")
    ap.add_argument("--profile-clients", type=int, default=1)
    ap.add_argument("--profile-cold", type=int, metavar="N",
                    help="only profile the server with perf during N cold starts")
    ap.add_argument("--log-level", default="warn")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    quick = a.quick
    a.runs = a.runs or (1 if quick else 3)
    a.seq_calls = 2000 if quick else 10000
    a.conc_secs = 1.0 if quick else 3.0
    a.clients = [1, 8, 32]
    a.cold_fns = 5 if quick else 20
    a.idle_calls = (3, 1) if quick else (10, 5)
    a.instances_secs = 60 if quick else 240
    counts = [int(x) for x in (a.instances or ("20" if quick else "100,1000")).split(",")]
    placements = (a.placements or ("cross" if quick else "cross,same")).split(",")
    for p in placements:
        if p not in PLACEMENTS:
            sys.exit(f"unknown placement {p}")

    b = Bench(a)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    res = {"started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "mode": "quick" if quick else "full", "runs": a.runs, "function": a.function,
           "git": git + ("+dirty" if dirty else ""), "load_start": loadavg(),
           "cpus": os.cpu_count(), "drivers": {}}
    try:
        b.build()
        res["load_start"] = loadavg()
        for drv, info in DRIVERS.items():
            if not info["available"]:
                res["drivers"][drv] = dict(info)
                continue
            d = {"available": True, "placements": {}}
            res["drivers"][drv] = d
            for pl in placements:
                log(f"== {drv} / {pl} ({PLACEMENTS[pl]['what']}), load {loadavg()}")
                srv = b.start_server(PLACEMENTS[pl]["server"])
                app_id = srv.app("bench")
                fn_dir = b.bins[a.function + "-dir"]
                fn_id = srv.fn(app_id, "hot", fn_dir)
                srv.trigger(app_id, fn_id, "hot", "/hot")
                if a.profile_cold:
                    res["profile"] = profile_cold_phase(b, srv, app_id, pl, a.profile_cold)
                    print(json.dumps(res["profile"], indent=1))
                    return
                if a.profile:
                    res["profile"] = profile_phase(b, srv, fn_id, pl, a.profile,
                                                   a.profile_clients)
                    print(json.dumps(res["profile"], indent=1))
                    return
                if "idle_rss_kb" not in res:
                    time.sleep(0.5)
                    res["idle_rss_kb"] = srv.rss_kb()
                runs = []
                for i in range(a.runs):
                    log(f"  run {i + 1}/{a.runs}, load {loadavg()}")
                    runs.append(hot_phase(b, srv, pl, fn_id, "/t/bench/hot", a.function))
                pd = {"summary": summarize_runs(runs, a.clients),
                      "runs": [{k: v for k, v in r.items()} for r in runs]}
                log(f"  idle calls, load {loadavg()}")
                pd["idle"] = {k: strip(v) | {"samples_us": v.get("samples_us")}
                              for k, v in idle_phase(b, srv, pl, fn_id).items()}
                log(f"  cold starts, load {loadavg()}")
                pd["cold"] = cold_phase(b, srv, app_id, pl)
                log(f"  streams, load {loadavg()}")
                pd["stream"] = stream_phase(b, srv, app_id, pl)
                d["placements"][pl] = pd
                b.stop_server(srv)
            if not a.no_instances:
                log(f"== idle instances {counts} (fresh server, no pinning), load {loadavg()}")
                srv = b.start_server(None)
                res["instances"] = instances_phase(b, srv, srv.app("idle"), counts)
                b.stop_server(srv)
        res["load_end"] = loadavg()
        res["goals"] = goals(res)
        report = print_report(res)
        print(report)
        os.makedirs(a.out, exist_ok=True)
        name = f"{res['started'].replace(':', '')}-{res['mode']}.json"
        with open(os.path.join(a.out, name), "w") as fh:
            json.dump(res, fh, indent=1)
        with open(os.path.join(a.out, f"latest-{res['mode']}.txt"), "w") as fh:
            fh.write(report + "\n")
        log(f"wrote {os.path.join(a.out, name)}")
    finally:
        b.cleanup()


if __name__ == "__main__":
    main()
