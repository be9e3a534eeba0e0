#!/usr/bin/env python3
"""fnrs benchmark harness: see bench/README.md. Run through bench/run.sh.

Starts fnrs on a temp SQLite store, deploys the Rust FDK function, measures
it against the floor (the same function called directly over its unix socket
by the same client, fnrs-load), prints one table and writes JSON under
bench/results/. Every loop is bounded; every address is 127.0.0.1.
"""

import argparse
import datetime
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE_KB = 4

# The drivers measured. Docker's availability is decided at run time (an
# engine that answers, a static build of the functions, their images).
DRIVERS = {
    "process": {"available": True},
    "docker": {"available": False, "why": "not measured (no Docker engine)"},
}

# Labels on the containers the harness starts itself (floors), so cleanup
# finds them; fnrs labels its own with fnrs.app_id.
BENCH_LABEL = "fnrs-bench.session"

# The burst scenario: this many clients at once on a fn with one warm
# instance, for this many seconds.
BURST_CLIENTS = 32
BURST_SECS = 4

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


# --------------------------------------------------------------- docker ---

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Engine:
    """The Docker engine's HTTP API (standard library only), one keep-alive
    connection: `DOCKER_HOST` (unix:// or tcp://) or /var/run/docker.sock."""

    def __init__(self, host=None):
        self.host = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self.unix = None
        self.addr = None
        if self.host.startswith("unix://"):
            self.unix = self.host[len("unix://"):]
        elif self.host.startswith("/"):
            self.unix = self.host
        elif self.host.startswith(("tcp://", "http://")):
            self.addr = self.host.split("://", 1)[1].rstrip("/")
        else:
            raise ValueError(f"DOCKER_HOST {self.host!r} not supported (unix:// or tcp://)")
        self.conn = None

    def _connection(self, timeout):
        if self.unix:
            return UnixHTTPConnection(self.unix, timeout)
        return http.client.HTTPConnection(self.addr, timeout=timeout)

    def req(self, method, path, body=None, raw=None, timeout=30):
        """(status, parsed JSON or text). One retry on a fresh connection
        when the kept-alive one was closed."""
        headers = {}
        data = None
        if raw is not None:
            data = raw
            headers["Content-Type"] = "application/x-tar"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            if self.conn is None:
                self.conn = self._connection(timeout)
            self.conn.timeout = timeout
            if self.conn.sock is not None:
                self.conn.sock.settimeout(timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                out = r.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
            except Exception:
                self.conn.close()
                self.conn = None
                raise
        text = out.decode(errors="replace")
        if r.getheader("content-type", "").startswith("application/json") and text.strip():
            try:
                return r.status, json.loads(text)
            except ValueError:
                pass
        return r.status, text

    def ping(self):
        """None when the engine answers, else why not."""
        try:
            st, body = self.req("GET", "/_ping", timeout=3)
        except (OSError, http.client.HTTPException) as e:
            return f"{type(e).__name__}: {e}"
        return None if st == 200 else f"/_ping answered {st} {body!r:.100}"

    def image_exists(self, ref):
        st, _ = self.req("GET", f"/images/{ref}/json")
        return st == 200

    def build(self, tag, files, dockerfile):
        """Build `tag` from a context of {name: (bytes, mode)} and a Dockerfile."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, (data, mode) in list(files.items()) + [("Dockerfile",
                                                               (dockerfile.encode(), 0o644))]:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                ti.mode = mode
                tar.addfile(ti, io.BytesIO(data))
        st, out = self.req("POST", f"/build?t={tag}&rm=1&forcerm=1&q=1", raw=buf.getvalue(),
                           timeout=300)
        if st != 200 or '"error"' in str(out):
            raise RuntimeError(f"docker build {tag}: {st} {str(out)[-500:]}")

    def create(self, body, name=None):
        q = f"?name={name}" if name else ""
        st, out = self.req("POST", f"/containers/create{q}", body)
        if st != 201:
            raise RuntimeError(f"create container: {st} {out}")
        return out["Id"]

    def start(self, cid):
        st, out = self.req("POST", f"/containers/{cid}/start")
        if st not in (204, 304):
            raise RuntimeError(f"start container: {st} {out}")

    def remove(self, cid):
        st, out = self.req("DELETE", f"/containers/{cid}?force=1&v=1")
        if st not in (204, 404, 409):
            log(f"  warning: removing container {cid[:12]}: {st} {out}")

    def running(self, label):
        """Ids of running containers with the label (`key=value`)."""
        filt = urllib.parse.quote(json.dumps({"label": [label]}))
        st, out = self.req("GET", f"/containers/json?filters={filt}")
        return [c["Id"] for c in out] if st == 200 and isinstance(out, list) else []

    def all_with(self, label):
        filt = urllib.parse.quote(json.dumps({"label": [label]}))
        st, out = self.req("GET", f"/containers/json?all=1&filters={filt}")
        return [c["Id"] for c in out] if st == 200 and isinstance(out, list) else []


def static_triple():
    """The target for static binaries: musl when installed, else glibc
    with crt-static (as scripts/docker-setup.sh)."""
    try:
        r = subprocess.run(["rustup", "target", "list", "--installed"], capture_output=True,
                           text=True, timeout=60)
        if "x86_64-unknown-linux-musl" in r.stdout.split():
            return "x86_64-unknown-linux-musl", {}
    except (OSError, subprocess.SubprocessError):
        pass
    return "x86_64-unknown-linux-gnu", {"RUSTFLAGS": "-C target-feature=+crt-static"}


def is_static(path):
    try:
        r = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return True  # no ldd: trust the build flags
    out = r.stdout + r.stderr
    return "not a dynamic" in out or "statically linked" in out


# ---------------------------------------------------------------- tools ---

class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="fnrs-bench-")
        # The sandbox runs functions as nobody: it must reach the fn dirs.
        os.chmod(self.tmp, 0o755)
        self.procs = []
        self.bins = {}
        self.target = None
        # Docker: the engine (None when not usable, with the reason), the
        # functions' images, the floor containers alive, fnrs's apps there.
        self.engine = None
        self.docker_why = DRIVERS["docker"]["why"]
        self.docker_images = {}
        self.containers = set()
        self.docker_apps = []
        self.session = os.path.basename(self.tmp)

    # build ------------------------------------------------------------
    def build(self):
        target = os.environ.get("CARGO_TARGET_DIR")
        if not target:
            meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                                  cwd=ROOT, check=True, capture_output=True, text=True).stdout
            target = json.loads(meta)["target_directory"]
        self.target = target
        if not self.args.skip_build:
            log(f"building release binaries (target {target}) ...")
            subprocess.run(["cargo", "build", "--release", "--locked",
                            "-p", "fnrs-cli", "-p", "rust-hello", "-p", "fnrs-bench"],
                           cwd=ROOT, check=True)
        rel = os.path.join(target, "release")
        for b in ["fnrs", "rust-hello", "bench-fn", "fnrs-load", "bench-proxy"]:
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
        if "docker" in self.args.drivers:
            self.prepare_docker()

    def prepare_docker(self):
        """Static release builds of the functions in FROM scratch images,
        when an engine answers; else self.docker_why says why not."""
        try:
            eng = Engine()
        except ValueError as e:
            self.docker_why = f"not measured (no Docker engine: {e})"
            return
        why = eng.ping()
        if why:
            self.docker_why = f"not measured (no Docker engine at {eng.host}: {why})"
            log(f"docker driver: {self.docker_why}")
            return
        triple, env = static_triple()
        names = ["rust-hello", "bench-fn"]
        if not self.args.skip_build:
            log(f"building static release binaries for the images ({triple}) ...")
            r = subprocess.run(["cargo", "build", "--release", "--locked", "--target", triple,
                                "-p", "rust-hello", "-p", "fnrs-bench",
                                "--bin", "rust-hello", "--bin", "bench-fn"],
                               cwd=ROOT, env=dict(os.environ, **env))
            if r.returncode != 0:
                self.docker_why = f"not measured (static build for {triple} failed)"
                log(f"docker driver: {self.docker_why}")
                return
        for name in names:
            path = os.path.join(self.target, triple, "release", name)
            if not os.path.exists(path) or not is_static(path):
                self.docker_why = (f"not measured ({path} is not static)" if os.path.exists(path)
                                   else f"not measured (missing {path}: drop --skip-build)")
                log(f"docker driver: {self.docker_why}")
                return
            with open(path, "rb") as fh:
                data = fh.read()
            tag = f"fnrs-bench/{name}:{hashlib.sha256(data).hexdigest()[:12]}"
            if not eng.image_exists(tag):
                log(f"docker build {tag}")
                try:
                    eng.build(tag, {name: (data, 0o755)},
                              f'FROM scratch\nCOPY {name} /{name}\nENTRYPOINT ["/{name}"]\n')
                except (RuntimeError, OSError, http.client.HTTPException) as e:
                    self.docker_why = f"not measured (image build failed: {e})"
                    log(f"docker driver: {self.docker_why}")
                    return
            self.docker_images[name] = tag
        self.engine = eng
        log(f"docker driver: engine {eng.host}, images {self.docker_images}")

    # processes ----------------------------------------------------------
    def start_server(self, cpu, log_level=None):
        n = len(self.procs)
        data = os.path.join(self.tmp, f"server{n}")
        os.makedirs(os.path.join(data, "iofs"))
        env = dict(os.environ,
                   FN_PORT="0", FN_LISTEN="127.0.0.1",
                   FN_DB_URL=f"sqlite3://{data}/fn.db",
                   FN_LOG_LEVEL=log_level or self.args.log_level,
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

    def start_proxy(self, cpu, socks):
        """bench-proxy (a bare hyper TCP -> unix socket proxy) in front of
        the floor's instances: what the two HTTP hops alone cost."""
        cmd = taskset(cpu) + [self.bins["bench-proxy"]]
        for s_ in socks:
            cmd += ["--socket", f"unix:{s_}"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             start_new_session=True)
        self.procs.append(p)
        line = p.stdout.readline()
        m = re.search(r"proxy listening on (\S+)", line)
        if not m:
            p.kill()
            raise RuntimeError("bench-proxy did not start")
        return p, f"tcp:{m.group(1)}"

    def stop_proxy(self, p):
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

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
        if self.engine is not None:
            self.remove_containers()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def remove_containers(self):
        """The floor containers, and whatever fnrs left of its containers
        (it removes them itself when it stops)."""
        eng = self.engine
        try:
            ids = set(self.containers) | set(eng.all_with(f"{BENCH_LABEL}={self.session}"))
            for app_id in self.docker_apps:
                ids |= set(eng.all_with(f"fnrs.app_id={app_id}"))
            for cid in ids:
                eng.remove(cid)
            self.containers.clear()
            if ids:
                log(f"removed {len(ids)} containers")
        except (OSError, http.client.HTTPException) as e:
            log(f"  warning: removing containers: {e}")


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

    def fn(self, app_id, name, image, memory=128, idle_timeout=None):
        body = {"app_id": app_id, "name": name, "image": image,
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


# -------------------------------------------------------------- drivers ---

class ProcessKind:
    """The process driver: `file://` fn dirs; the floor is the binary alone."""
    name = "process"
    note = ""

    def __init__(self, b):
        self.b = b

    def image(self, fn_name):
        return "file://" + self.b.bins[fn_name + "-dir"]

    def start_floor(self, n, cpu, fn_name, poll=0.005):
        return self.b.start_direct(n, cpu, fn_name, poll)

    def stop_floor(self, insts):
        self.b.stop_direct(insts)

    def instances(self, srv, fn_id, fn_name):
        return count_instances(srv.pid, fn_name)


def fnrs_container_body(tag, hostdir, session, memory_mb=128):
    """A container as the Docker driver makes one (crates/fnrs-driver-docker,
    `container_body`): init, read-only root with a tmpfs /tmp, memory = swap,
    pids 50, Fn's ulimits, uid 1000 without capabilities, log driver none,
    iofs bound at /tmp/iofs; the same env as the floor."""
    mem = memory_mb << 20
    ul = [{"Name": n, "Soft": v, "Hard": v} for n, v in
          [("nofile", 350), ("memlock", 65536), ("sigpending", 5000), ("msgqueue", 819200)]]
    return {
        "Image": tag,
        "Env": ["FN_FORMAT=http-stream", "FN_LISTENER=unix:/tmp/iofs/lsnr.sock"],
        "Labels": {BENCH_LABEL: session},
        "User": "1000:1000",
        "AttachStdout": True, "AttachStderr": True, "AttachStdin": False,
        "OpenStdin": False, "StdinOnce": False, "Tty": False,
        "HostConfig": {
            "Init": True, "ReadonlyRootfs": True, "Memory": mem, "MemorySwap": mem,
            "MemorySwappiness": 0, "PidsLimit": 50, "Ulimits": ul, "Tmpfs": {"/tmp": ""},
            "Binds": [f"{hostdir}:/tmp/iofs"], "LogConfig": {"Type": "none", "Config": {}},
            "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"],
        },
    }


def plain_container_body(tag, hostdir, session):
    """`docker run -d --log-driver none -e FN_FORMAT=http-stream
    -e FN_LISTENER=unix:/tmp/iofs/lsnr.sock -v DIR:/tmp/iofs IMAGE`."""
    return {
        "Image": tag,
        "Env": ["FN_FORMAT=http-stream", "FN_LISTENER=unix:/tmp/iofs/lsnr.sock"],
        "Labels": {BENCH_LABEL: session},
        "HostConfig": {"Binds": [f"{hostdir}:/tmp/iofs"],
                       "LogConfig": {"Type": "none", "Config": {}}},
    }


class DockerKind:
    """The Docker driver: the functions' images; the floor is the same image
    run alone on the engine (not pinned, as fnrs's containers are not)."""
    name = "docker"
    note = "; containers unpinned"

    def __init__(self, b):
        self.b = b
        self.eng = b.engine

    def image(self, fn_name):
        return self.b.docker_images[fn_name]

    def hostdir(self):
        d = tempfile.mkdtemp(prefix="dfloor-", dir=self.b.tmp)
        os.chmod(d, 0o777)  # containers of fnrs's settings run as uid 1000
        return d

    def run(self, body):
        cid = self.eng.create(body)
        self.b.containers.add(cid)
        self.eng.start(cid)
        return cid

    def start_floor(self, n, cpu, fn_name, poll=0.005):
        out = []
        for _ in range(n):
            d = self.hostdir()
            cid = self.run(plain_container_body(self.image(fn_name), d, self.b.session))
            out.append((cid, os.path.join(d, "lsnr.sock")))
        deadline = time.time() + 30
        for cid, sock in out:
            while not os.path.exists(sock):
                if time.time() > deadline:
                    self.stop_floor(out)
                    raise RuntimeError(f"floor container {cid[:12]} did not create {sock}")
                time.sleep(poll)
        return out

    def stop_floor(self, insts):
        for cid, _ in insts:
            self.eng.remove(cid)
            self.b.containers.discard(cid)

    def instances(self, srv, fn_id, fn_name):
        return len(self.eng.running(f"fnrs.fn_id={fn_id}"))

    def engine_cold(self, n, server_cpu, cpu, body_of, poll=0.0005):
        """The engine's own create + start + socket ready, n times, then the
        first call over the socket (same client as everywhere). The harness
        makes the engine calls from the server's CPU, as fnrs would."""
        old = os.sched_getaffinity(0)
        if server_cpu is not None:
            os.sched_setaffinity(0, {int(server_cpu)})
        try:
            return self._engine_cold(n, cpu, body_of, poll)
        finally:
            os.sched_setaffinity(0, old)

    def _engine_cold(self, n, cpu, body_of, poll):
        rows = []
        for _ in range(n):
            d = self.hostdir()
            sock = os.path.join(d, "lsnr.sock")
            body = body_of(self.image("rust-hello"), d, self.b.session)
            t0 = time.perf_counter()
            cid = self.eng.create(body)
            self.b.containers.add(cid)
            t1 = time.perf_counter()
            self.eng.start(cid)
            t2 = time.perf_counter()
            deadline = t0 + 30
            try:
                while not os.path.exists(sock):
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"container {cid[:12]} did not create {sock}")
                    time.sleep(poll)
                t3 = time.perf_counter()
                r = self.b.load(cpu, [f"unix:{sock}"], "/call",
                                ["--requests", "1", "--fn-headers", "--max-seconds", "30"])
            finally:
                self.stop_floor([(cid, sock)])
            rows.append({"create_us": (t1 - t0) * 1e6, "start_us": (t2 - t0) * 1e6,
                         "ready_us": (t3 - t0) * 1e6, "first_call_us": r["latency"]["p50_us"],
                         "first_call_ttfb_us": r["ttfb"]["p50_us"]})
            time.sleep(0.05)
        return {"n": n, "median": {k: statistics.median(x[k] for x in rows) for k in rows[0]},
                "runs": rows}


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


def hot_phase(b, kind, srv, placement, fn_id, trigger_path, fn_name):
    """One run of the hot measurements (floor measured in the same run)."""
    a = b.args
    pl = PLACEMENTS[placement]
    n = a.seq_calls
    r = {"load_before": loadavg()}
    floor = kind.start_floor(1, pl["server"], fn_name)
    try:
        r["floor"] = seq_run(b, pl["client"], f"unix:{floor[0][1]}", "/call", n,
                             fn_headers=True)
        proxy, target = b.start_proxy(pl["server"], [floor[0][1]])
        try:
            r["proxy"] = seq_run(b, pl["client"], target, "/x", n, pid=proxy.pid)
        finally:
            b.stop_proxy(proxy)
    finally:
        kind.stop_floor(floor)
    r["invoke"] = seq_run(b, pl["client"], srv.target, f"/invoke/{fn_id}", n, pid=srv.pid)
    r["trigger"] = seq_run(b, pl["client"], srv.target, trigger_path, n, pid=srv.pid)
    r["conc"] = {}
    for c in a.clients:
        fnrs = conc_run(b, pl["client"], [srv.target], f"/invoke/{fn_id}", c, a.conc_secs,
                        pid=srv.pid)
        inst = max(1, kind.instances(srv, fn_id, fn_name))
        fnrs["instances"] = inst
        floor = kind.start_floor(min(inst, c), pl["server"], fn_name)
        try:
            direct = conc_run(b, pl["client"], [f"unix:{s}" for _, s in floor], "/call", c,
                              a.conc_secs, fn_headers=True)
            proxy, target = b.start_proxy(pl["server"], [s_ for _, s_ in floor])
            try:
                prox = conc_run(b, pl["client"], [target], "/x", c, a.conc_secs,
                                pid=proxy.pid)
            finally:
                b.stop_proxy(proxy)
        finally:
            kind.stop_floor(floor)
        direct["instances"] = len(floor)
        r["conc"][str(c)] = {"fnrs": fnrs, "floor": direct, "proxy": prox}
    r["load_after"] = loadavg()
    return r


def strip(run):
    run = dict(run)
    run.pop("samples_us", None)
    return run


def idle_floor_phase(b, kind, placement, fn_name):
    """The same idle calls on the function alone: what sleeping costs the
    machine itself (the wake-ups of idle CPUs and threads); and through the
    bare proxy (`<ms>ms proxy`): what it costs two HTTP hops."""
    pl = PLACEMENTS[placement]
    out = {}
    floor = kind.start_floor(1, pl["server"], fn_name)
    try:
        for ms, n in [(200, b.args.idle_calls[0]), (2000, b.args.idle_calls[1])]:
            out[f"{ms}ms"] = b.load(pl["client"], [f"unix:{floor[0][1]}"], "/call",
                                    ["--requests", str(n), "--warmup", "50", "--interval-ms",
                                     str(ms), "--fn-headers", "--max-seconds", "120"])
        proxy, target = b.start_proxy(pl["server"], [floor[0][1]])
        try:
            for ms, n in [(200, b.args.idle_calls[0]), (2000, b.args.idle_calls[1])]:
                out[f"{ms}ms proxy"] = b.load(pl["client"], [target], "/call",
                                              ["--requests", str(n), "--warmup", "50",
                                               "--interval-ms", str(ms), "--max-seconds", "120"])
        finally:
            b.stop_proxy(proxy)
    finally:
        kind.stop_floor(floor)
    return out


def idle_phase(b, srv, placement, fn_id):
    pl = PLACEMENTS[placement]
    out = {}
    for ms, n in [(200, b.args.idle_calls[0]), (2000, b.args.idle_calls[1])]:
        r = b.load(pl["client"], [srv.target], f"/invoke/{fn_id}",
                   ["--requests", str(n), "--warmup", "50", "--interval-ms", str(ms),
                    "--samples", "--max-seconds", "120"])
        out[f"{ms}ms"] = r
    return out


def cold_phase(b, kind, srv, app_id, placement):
    pl = PLACEMENTS[placement]
    rows = []
    # Docker: the engine's own create + start + socket ready of the same
    # image, interleaved with fnrs's cold starts (same engine state: the
    # containers alive, the load): with fnrs's container settings (the
    # goal's reference) each time, and as a plain `docker run -d` (5 times).
    eng_runs = {"fnrs_settings": [], "plain": []}
    for i in range(b.args.cold_fns):
        fn_id = srv.fn(app_id, f"cold{placement}{i}", kind.image("rust-hello"), memory=128)
        r = b.load(pl["client"], [srv.target], f"/invoke/{fn_id}",
                   ["--requests", "1", "--show-headers", "--max-seconds", "30"])
        call_id = (r.get("last_headers") or {}).get("fn-call-id")
        row = {"total_us": r["latency"]["p50_us"], "ttfb_us": r["ttfb"]["p50_us"],
               "errors": r["errors"], "fn_id": fn_id}
        for _ in range(50):
            if not call_id:
                break
            st, rec = srv.api("GET", f"/v2/fns/{fn_id}/calls/{call_id}")
            if st == 200 and isinstance(rec, dict):
                cs = (rec.get("stats") or {}).get("cold_start") or {}
                for k in ["reserve_us", "start_us", "ready_us", "first_byte_us"]:
                    row[k] = cs.get(k)
                break
            time.sleep(0.02)
        rows.append(row)
        time.sleep(0.05)
        if kind.name == "docker":
            eng_runs["fnrs_settings"] += kind.engine_cold(1, pl["server"], pl["client"],
                                                          fnrs_container_body)["runs"]
            if i < 5:
                eng_runs["plain"] += kind.engine_cold(1, pl["server"], pl["client"],
                                                      plain_container_body)["runs"]
    st, metrics = srv.api("GET", "/metrics")
    phases = {}
    if st == 200 and isinstance(metrics, str):
        for ph in ["reserve", "start", "ready", "first_byte"]:
            s = re.search(r'fn_cold_start_seconds_sum\{[^}]*phase="%s"[^}]*\} (\S+)' % ph, metrics)
            c = re.search(r'fn_cold_start_seconds_count\{[^}]*phase="%s"[^}]*\} (\S+)' % ph,
                          metrics)
            if s and c and float(c.group(1)) > 0:
                phases[ph] = {"mean_us": float(s.group(1)) / float(c.group(1)) * 1e6,
                              "count": float(c.group(1))}

    def med(k):
        v = [r[k] for r in rows if r.get(k) is not None]
        return statistics.median(v) if v else None
    if kind.name == "docker":
        driver_timings(srv, rows)
    summary = {k: med(k) for k in ["reserve_us", "start_us", "ready_us", "first_byte_us",
                                   "ttfb_us", "total_us", "own_us",
                                   "in_engine_us", "image_us", "attach_us"]}
    engine = None
    if kind.name == "docker":
        engine = {k: {"n": len(v), "runs": v,
                      "median": {q: statistics.median(x[q] for x in v) for q in v[0]}}
                  for k, v in eng_runs.items()}
        m = engine["fnrs_settings"]["median"]
        summary["floor_ready_us"] = m["ready_us"]
        summary["floor_first_call_us"] = m["first_call_us"]
        summary["engine_create_us"] = m["create_us"]
        summary["engine_start_us"] = m["start_us"]
        summary["plain_ready_us"] = engine["plain"]["median"]["ready_us"]
    else:
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
    out = {"fns": len(rows), "median": summary, "metrics": phases, "calls": rows}
    if engine:
        out["engine"] = engine
    return out


def driver_timings(srv, rows):
    """The Docker driver's debug line per container start (its requests to
    the engine, µs since its start began) into the cold rows, by fn id; and
    fnrs's own time: first byte minus its create and start requests."""
    by_fn = {}
    try:
        with open(os.path.join(srv.data, "server.log")) as fh:
            for line in fh:
                if "container started" in line:
                    kv = dict(re.findall(r"(\w+)=(\S+)", line))
                    if "fn_id" in kv and "start_us" in kv:
                        by_fn[kv["fn_id"]] = {k: int(kv[k]) for k in
                                              ["image_us", "create_us", "attach_us", "start_us"]}
    except OSError:
        return
    for row in rows:
        t = by_fn.get(row["fn_id"])
        if not t:
            continue
        row["driver"] = t
        row["image_us"] = t["image_us"]
        row["attach_us"] = t["attach_us"] - t["create_us"]
        row["in_engine_us"] = (t["create_us"] - t["image_us"]) + (t["start_us"] - t["attach_us"])
        row["own_us"] = row["ttfb_us"] - row["in_engine_us"]


def stream_phase(b, kind, srv, app_id, placement):
    pl = PLACEMENTS[placement]
    fn_id = srv.fn(app_id, f"stream{placement}", kind.image("bench-fn"), memory=128)
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
    floor = kind.start_floor(1, pl["server"], "bench-fn")
    try:
        for label, size in [("1MiB", 1 << 20), ("64MiB", 64 << 20)]:
            r = b.load(pl["client"], [f"unix:{floor[0][1]}"], "/call",
                       ["--requests", "3", "--fn-headers", "--body", str(size),
                        "--warmup", "1", "--max-seconds", "120"])
            out[label]["floor_ttfb_us"] = r["ttfb"]["p50_us"]
            out[label]["floor_total_us"] = r["latency"]["p50_us"]
    finally:
        kind.stop_floor(floor)
    return out


def instances_phase(b, srv, app_id, counts):
    """RSS of the server per idle instance: deploy fns, call each once.
    Run on a fresh server, so earlier phases' memory does not hide growth."""
    out = {"steps": []}
    image = ProcessKind(b).image("rust-hello")
    warm = srv.fn(app_id, "idlewarm", image, memory=8, idle_timeout=3600)
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
            fn_id = srv.fn(app_id, f"idle{made}", image, memory=8, idle_timeout=3600)
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


def cold_starts_total(srv):
    """`fn_cold_starts_total` from the server's /metrics (0 before any)."""
    st, text = srv.api("GET", "/metrics")
    for ln in (text if isinstance(text, str) else "").splitlines():
        if ln.startswith("fn_cold_starts_total"):
            return int(float(ln.split()[-1]))
    return 0


def burst_phase(b, kind, srv, app_id, placement):
    """A burst on a fn with one warm instance: BURST_CLIENTS clients at once
    for BURST_SECS. Latency from the first request on (no warm-up), the
    calls over 2 s, and how many instances the burst started."""
    pl = PLACEMENTS[placement]
    fn_id = srv.fn(app_id, f"burst{len(b.procs)}", kind.image(b.args.function),
                   idle_timeout=60)
    b.load(None, [srv.target], f"/invoke/{fn_id}", ["--requests", "1", "--max-seconds", "60"])
    time.sleep(0.5)
    before = cold_starts_total(srv)
    r = b.load(pl["client"], [srv.target], f"/invoke/{fn_id}",
               ["--clients", str(BURST_CLIENTS), "--threads", "2", "--duration",
                str(BURST_SECS), "--samples", "--max-seconds", str(BURST_SECS + 60)])
    started = cold_starts_total(srv) - before
    samples = r.pop("samples_us", []) or []
    lat = r["latency"]
    return {"clients": BURST_CLIENTS, "secs": BURST_SECS, "requests": r.get("count"),
            "errors": r["errors"], "p50_us": lat["p50_us"], "p99_us": lat["p99_us"],
            "max_us": lat["max_us"], "over_2s": sum(1 for v in samples if v > 2e6),
            "instances_started": started,
            "instances_after": kind.instances(srv, fn_id, b.args.function)}


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


def profile_cold_phase(b, kind, srv, app_id, placement, n):
    """perf record (cpu-clock, dwarf call graphs) of the server during n
    cold starts; also a per-thread wall-clock split from the call records."""
    data = os.path.join(b.tmp, "perf-cold.data")
    rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "4999", "-g",
                            "--call-graph", "dwarf,8192", "-p", str(srv.pid), "-o", data],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    b.args.cold_fns = n
    cold = cold_phase(b, kind, srv, app_id, placement)
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
    for k in ["floor", "proxy", "invoke", "trigger"]:
        if k == "proxy" and not all("proxy" in r for r in runs):
            continue
        s[k] = {q: med([r[k]["latency"][q] for r in runs])
                for q in ["p50_us", "p90_us", "p99_us", "p999_us", "mean_us"]}
        s[k]["rps"] = med([r[k]["rps"] for r in runs])
    for k in ["proxy", "invoke", "trigger"]:
        if k not in s:
            continue
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
        if all("proxy" in x for x in rows):
            s["conc"][c].update({
                "proxy_rps": med([x["proxy"]["rps"] for x in rows]),
                "proxy_ratio": med([x["proxy"]["rps"] / x["floor"]["rps"] for x in rows
                                    if x["floor"]["rps"]]),
                "proxy_cpu_us_per_call": med([x["proxy"]["server"]["cpu_us_per_call"]
                                              for x in rows]),
            })
    s["loads"] = [r["load_before"] for r in runs]
    return s


def f(v, unit="", nd=0):
    if v is None:
        return "n/a"
    return f"{v:,.{nd}f}{unit}"


def main_placement(d):
    if not d.get("available") or not d.get("placements"):
        return None
    return d["placements"].get("cross") or next(iter(d["placements"].values()))


def goals(res):
    """The goals of the issue, each with the measured number and met/not met."""
    out = []

    def row(metric, goal, value, met):
        out.append({"metric": metric, "goal": goal, "measured": value,
                    "met": None if met is None else bool(met)})
    main = main_placement(res["drivers"].get("process", {}))
    if main is not None and "summary" in main:
        process_goals(res, main, row)
    for drv, d in res["drivers"].items():
        for pl, pd in (d.get("placements") or {}).items():
            r = pd.get("burst")
            if r:
                row(f"burst, {drv} driver ({pl})", "p99 <= 100 ms, none over 2 s",
                    burst_line(r), r["p99_us"] <= 100_000 and r["over_2s"] == 0)
                break
    dk = res["drivers"].get("docker", {})
    dmain = main_placement(dk)
    goal = "<= engine create+start+ready+5 ms"
    if dmain is None or "cold" not in dmain:
        row("cold start, Docker driver", goal, dk.get("why", "not measured"), None)
    else:
        # The engine's create + start vary by tens of ms from one container
        # to the next, so the verdict is on fnrs's own time per cold start
        # (first byte minus its own create and start requests, paired); the
        # p50s of fnrs and of the engine alone (interleaved) are shown too.
        m = dmain.get("cold", {}).get("median", {})
        ttfb, eng, own = m.get("ttfb_us"), m.get("floor_ready_us"), m.get("own_us")
        ms = lambda v: f(v and v / 1000, " ms", 2)  # noqa: E731
        row("cold start, Docker driver", goal,
            f"fnrs's own time {ms(own)} beyond its create+start requests;"
            f" first byte {ms(ttfb)} vs the engine alone {ms(eng)} (+5 ms ="
            f" {ms(eng and eng + 5000)}); p50s over {dmain['cold']['fns']} cold starts each",
            None if own is None else own <= 5000)
    return out


def process_goals(res, main, row):
    s = main["summary"]
    ov = s["invoke"]["overhead_p50_us"]
    px = s.get("proxy", {})
    row("hot p50 overhead over the floor, process driver", "<= 40 us",
        f"{f(ov, ' us', 1)} (/invoke), {f(s['trigger']['overhead_p50_us'], ' us', 1)} (/t);"
        f" a bare hyper proxy: {f(px.get('overhead_p50_us'), ' us', 1)}",
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
                         f" of {f(c[k]['floor_rps'])}/s direct"
                         + (f" (bare proxy {f(c[k]['proxy_ratio'] * 100, ' %')})"
                            if c[k].get("proxy_ratio") is not None else ""))
            ok = ok and c[k]["ratio"] >= 0.8
    if "8" in c and "32" in c:
        drop = c["32"]["fnrs_rps"] < c["8"]["fnrs_rps"] * 0.95
        parts.append("drop 8->32: " + ("yes" if drop else "no"))
        ok = ok and not drop
    row("throughput at 8 and at 32 clients", ">= 80 % of direct; no drop 8->32",
        "; ".join(parts), ok if parts else None)
    cpu = s["invoke"]["cpu_us_per_call"]
    row("server CPU per hot call", "<= 30 us",
        f"{f(cpu, ' us', 1)} (sequential /invoke; a bare hyper proxy:"
        f" {f(px.get('cpu_us_per_call'), ' us', 1)}); "
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
            f" (hot p99 {f(s['invoke']['p99_us'], ' us')})"
            + "".join(f"; {'bare proxy' if k.endswith('proxy') else 'alone'} after"
                      f" {k.split()[0]}: p50 {f(v['latency']['p50_us'], ' us')}"
                      for k, v in main.get("idle_floor", {}).items()),
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


def burst_line(r):
    ms = lambda v: f(v / 1000, " ms", 1)  # noqa: E731
    return (f"burst of {r['clients']} clients on one warm instance for {r['secs']} s:"
            f" {r['requests']} calls, p50 {ms(r['p50_us'])}, p99 {ms(r['p99_us'])},"
            f" max {ms(r['max_us'])}, {r['over_2s']} over 2 s, {r['errors']} errors;"
            f" {r['instances_started']} instances started ({r['instances_after']} alive after)")


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
            if "burst" in pd:
                P(f"\n== driver {drv}, placement {pl}: " + burst_line(pd["burst"]))
            if "summary" not in pd:
                continue
            s = pd["summary"]
            note = "; containers unpinned" if drv == "docker" else ""
            P(f"\n== driver {drv}, placement {pl} ({PLACEMENTS[pl]['what']}{note}),"
              f" load per run: {', '.join(s['loads'])}")
            P(f"{'sequential (us)':<22}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}"
              f"{'req/s':>9}{'+p50':>9}{'x p50':>7}{'+p99':>9}{'cpu/call':>10}")
            for k, label in [("floor", "floor (direct UDS)"), ("proxy", "bare hyper proxy"),
                             ("invoke", "/invoke"), ("trigger", "/t/app/src")]:
                if k not in s:
                    continue
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
            if all("proxy_rps" in r for r in s["conc"].values()):
                P("  bare hyper proxy over the same instances: " + "; ".join(
                    f"{c} clients {f(r['proxy_rps'])}/s = {f(r['proxy_ratio'] * 100, ' %')}"
                    f" of direct, {f(r['proxy_cpu_us_per_call'], ' us', 1)} CPU/call"
                    for c, r in s["conc"].items()))
            if "idle" in pd:
                for k, r in pd["idle"].items():
                    fl = pd.get("idle_floor", {}).get(k)
                    px = pd.get("idle_floor", {}).get(f"{k} proxy")
                    P(f"after {k} idle: n={r['count']} p50 {f(r['latency']['p50_us'])} us,"
                      f" max {f(r['latency']['max_us'])} us (hot p99"
                      f" {f(s['invoke']['p99_us'])} us)"
                      + (f"; the function alone: p50 {f(fl['latency']['p50_us'])} us"
                         f" (hot p50 {f(s['floor']['p50_us'])} us)" if fl else "")
                      + (f"; the bare proxy: p50 {f(px['latency']['p50_us'])} us,"
                         f" max {f(px['latency']['max_us'])} us" if px else ""))
            if "cold" in pd and drv == "docker":
                m = pd["cold"]["median"]
                P(f"cold start (p50 of {pd['cold']['fns']} new fns, us): reserve"
                  f" {f(m.get('reserve_us'))}, driver start"
                  f" {f(m.get('start_us'))}, +socket ready {f(m.get('ready_wait_us'))}"
                  f" (ready {f(m.get('ready_us'))}, the agent's first byte"
                  f" {f(m.get('first_byte_us'))}), rest to the client's first byte"
                  f" {f(m.get('other_us'))}; first byte {f(m.get('ttfb_us'))},"
                  f" total {f(m.get('total_us'))}")
                P(f"  of which in its create and start requests to the engine"
                  f" {f(m.get('in_engine_us'))}; fnrs's own time {f(m.get('own_us'))}"
                  f" (image check {f(m.get('image_us'))}, attach {f(m.get('attach_us'))})")
                e = pd["cold"]["engine"]
                P(f"the engine alone (p50 of {e['fnrs_settings']['n']}, same image and"
                  f" container settings, us): created after {f(m.get('engine_create_us'))},"
                  f" started after {f(m.get('engine_start_us'))}, socket after"
                  f" {f(m.get('floor_ready_us'))}, then first call"
                  f" {f(m.get('floor_first_call_us'))}; plain `docker run -d`"
                  f" (p50 of {e['plain']['n']}): socket after {f(m.get('plain_ready_us'))}")
            elif "cold" in pd:
                m = pd["cold"]["median"]
                P(f"cold start (p50 of {pd['cold']['fns']} new fns, us): reserve"
                  f" {f(m.get('reserve_us'))}, driver start"
                  f" {f(m.get('start_us'))}, +socket ready {f(m.get('ready_wait_us'))}"
                  f" (ready {f(m.get('ready_us'))}, the agent's first byte"
                  f" {f(m.get('first_byte_us'))}), rest to the client's first byte"
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
    P("\ngoals (placement cross when measured):")
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
    ap.add_argument("--burst-only", action="store_true",
                    help="only the burst scenario (one warm instance, 32 clients), per driver")
    ap.add_argument("--instances", help="comma list of idle instance counts (default 100,1000)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--profile", type=float, metavar="SECS",
                    help="only profile the server with perf for SECS under load")
    ap.add_argument("--profile-clients", type=int, default=1)
    ap.add_argument("--profile-cold", type=int, metavar="N",
                    help="only profile the server with perf during N cold starts")
    ap.add_argument("--drivers", default="process,docker",
                    help="comma list of process,docker (docker only when an engine answers)")
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
    a.drivers = a.drivers.split(",")
    for d in a.drivers:
        if d not in DRIVERS:
            sys.exit(f"unknown driver {d}")
    # Ctrl-C and SIGTERM both end in the cleanup below (servers, containers).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

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
            if drv not in a.drivers:
                res["drivers"][drv] = {"available": False, "why": "not selected (--drivers)"}
                continue
            if drv == "docker" and b.engine is None:
                res["drivers"][drv] = {"available": False, "why": b.docker_why}
                continue
            if drv != "docker" and not info["available"]:
                res["drivers"][drv] = dict(info)
                continue
            kind = DockerKind(b) if drv == "docker" else ProcessKind(b)
            d = {"available": True, "placements": {}}
            if drv == "docker":
                d["engine"] = b.engine.host
                d["images"] = dict(b.docker_images)
            res["drivers"][drv] = d
            for pl in placements:
                log(f"== {drv} / {pl} ({PLACEMENTS[pl]['what']}{kind.note}), load {loadavg()}")
                # Docker: the driver logs each start's engine requests (debug).
                srv = b.start_server(PLACEMENTS[pl]["server"],
                                     f"{a.log_level},fnrs_driver_docker=debug"
                                     if drv == "docker" else None)
                app_id = srv.app("bench")
                if drv == "docker":
                    b.docker_apps.append(app_id)
                fn_id = srv.fn(app_id, "hot", kind.image(a.function))
                srv.trigger(app_id, fn_id, "hot", "/hot")
                if a.profile_cold:
                    res["profile"] = profile_cold_phase(b, kind, srv, app_id, pl,
                                                        a.profile_cold)
                    print(json.dumps(res["profile"], indent=1))
                    return
                if a.burst_only:
                    d["placements"][pl] = {"burst": burst_phase(b, kind, srv, app_id, pl)}
                    log(f"  burst: {d['placements'][pl]['burst']}")
                    b.stop_server(srv)
                    if drv == "docker":
                        b.remove_containers()
                    continue
                if a.profile:
                    res["profile"] = profile_phase(b, srv, fn_id, pl, a.profile,
                                                   a.profile_clients)
                    print(json.dumps(res["profile"], indent=1))
                    return
                if "idle_rss_kb" not in res and drv == "process":
                    time.sleep(0.5)
                    res["idle_rss_kb"] = srv.rss_kb()
                runs = []
                for i in range(a.runs):
                    log(f"  run {i + 1}/{a.runs}, load {loadavg()}")
                    runs.append(hot_phase(b, kind, srv, pl, fn_id, "/t/bench/hot", a.function))
                pd = {"summary": summarize_runs(runs, a.clients),
                      "runs": [{k: v for k, v in r.items()} for r in runs]}
                log(f"  idle calls, load {loadavg()}")
                pd["idle"] = {k: strip(v) | {"samples_us": v.get("samples_us")}
                              for k, v in idle_phase(b, srv, pl, fn_id).items()}
                pd["idle_floor"] = {k: strip(v) for k, v in
                                    idle_floor_phase(b, kind, pl, a.function).items()}
                log(f"  cold starts, load {loadavg()}")
                pd["cold"] = cold_phase(b, kind, srv, app_id, pl)
                log(f"  burst, load {loadavg()}")
                pd["burst"] = burst_phase(b, kind, srv, app_id, pl)
                log(f"  streams, load {loadavg()}")
                pd["stream"] = stream_phase(b, kind, srv, app_id, pl)
                d["placements"][pl] = pd
                b.stop_server(srv)
                if drv == "docker":
                    b.remove_containers()
            if not a.no_instances and not a.burst_only and drv == "process":
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
