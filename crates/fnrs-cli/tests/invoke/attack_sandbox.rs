//! A hostile function against the sandbox, through the `fnrs` binary:
//! descriptors the server was started with, shell evaluation of its config.

use std::path::PathBuf;

use serde_json::json;

use crate::common::{BIN, FnDir, Srv, py_venv};

/// A wrapper that starts fnrs as a shell holding fd 7 on a host file would
/// (`exec 7>>file`, inheritable), and that file.
struct Fd7Wrapper {
    dir: tempfile::TempDir,
}

impl Fd7Wrapper {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("fnrs-fd7-")
            .tempdir()
            .unwrap();
        let file = dir.path().join("host-file");
        std::fs::write(&file, "").unwrap();
        let script = dir.path().join("fnrs");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec 7>>'{}'\nexec '{BIN}' \"$@\"\n",
                file.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("fnrs")
    }

    fn written(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host-file")).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_inherited_descriptors_stay_out_of_functions() {
    let w = Fd7Wrapper::new();
    let d = FnDir::new(
        "./run.sh",
        "default",
        &[(
            "run.sh",
            "#!/bin/sh\n(echo pwned >&7) 2>/dev/null && echo fd7=open || echo fd7=closed\n\
             echo \"fds=$(ls /proc/self/fd | tr '\\n' ,)\"\n",
        )],
    );
    for pool in ["4", "0"] {
        let s = Srv::start_bin_with(&w.bin(), &[("FN_PROCESS_POOL_SIZE", pool)]).await;
        let f = s
            .func("fd7", &d.image(), json!({"format": "default"}))
            .await;
        for _ in 0..2 {
            let a = s.invoke(&f, "").await;
            assert_eq!(a.status, 200, "pool {pool}: {a:?}");
            assert!(a.body.contains("fd7=closed"), "pool {pool}: {}", a.body);
            // ls's own: stdio and the directory it reads.
            assert!(a.body.contains("fds=0,1,2,3,\n"), "pool {pool}: {}", a.body);
        }
        assert_eq!(w.written(), "", "pool {pool}: a function wrote to fd 7");
        if pool != "0" {
            s.pool_ready(4).await;
        }
        let id = s.server_id().await;
        s.stop_and_check_clean(&id, &[d.dir.path()]).await;
    }
}

/// Config keys bash itself uses and values that would expand, chain or
/// read as options in a shell; `names`: also names that are no shell
/// identifiers.
fn hostile_config(names: bool) -> serde_json::Map<String, serde_json::Value> {
    let pairs: &[(&str, &str)] = &[
        ("n", "a[$(echo PWNED-n >&2)]"),
        ("A", "$(echo PWNED-A >&2)"),
        ("fd", "0"),
        ("kv", "x=y"),
        ("v", "`echo PWNED-v >&2`"),
        ("PS4", "$(echo PWNED-ps4 >&2)"),
        ("BASH_ENV", "/proc/self/fd/0"),
        ("IFS", "/="),
        ("UID", "12345"),
        ("RANDOM", "7"),
        ("semi", "a; echo PWNED-semi >&2"),
        ("lines", "one\ntwo\n$(echo PWNED-lines >&2)\n"),
        ("dash", "-i"),
    ];
    let odd: &[(&str, &str)] = &[("-u", "leading dash key"), ("sp ace", " x  y ")];
    let odd = if names { odd } else { &[] };
    pairs
        .iter()
        .chain(odd)
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reaches_functions_unevaluated() {
    // http-stream: every variable name a shell identifier (Fn's own and the
    // config's). The FDK runs without a shell of its own (which would reset
    // IFS).
    let venv = py_venv();
    let hot = FnDir::new(
        &format!(
            "{} {} /function/func.py handler",
            venv.join("bin/python3").display(),
            venv.join("bin/fdk").display()
        ),
        "http-stream",
        &[(
            "func.py",
            "import json, os, sys\nfrom fdk import response\n\n\
             def handler(ctx, data=None):\n\
             \x20   print('env-printed', file=sys.stderr, flush=True)\n\
             \x20   return response.Response(ctx, response_data=json.dumps(dict(os.environ)))\n",
        )],
    );
    // default: headers as FN_HEADER_<Name-With-Dashes>, odd config names.
    let cold = FnDir::new(
        "./run.py",
        "default",
        &[(
            "run.py",
            "#!/usr/bin/python3\nimport json, os, sys\n\
             print(json.dumps(dict(os.environ)))\n\
             print('env-printed', file=sys.stderr)\n",
        )],
    );
    // Prebuilt sandboxes (root's default), direct starts, and launchers
    // outside the sandbox (uid 0 has no prebuilt ones, and those launchers
    // get no private network: `none`).
    for (pool, uid, net) in [
        ("4", "65534", "private"),
        ("0", "65534", "private"),
        ("4", "0", "none"),
    ] {
        let s = Srv::start_with(&[
            ("FN_PROCESS_POOL_SIZE", pool),
            ("FN_PROCESS_UID", uid),
            ("FN_PROCESS_NETWORK", net),
        ])
        .await;
        for (name, d, format, names) in [
            ("hot", &hot, "http-stream", false),
            ("cold", &cold, "default", true),
        ] {
            let what = format!("{name}, pool {pool}, uid {uid}");
            let config = hostile_config(names);
            let f = s
                .func(
                    name,
                    &d.image(),
                    json!({"format": format, "config": config}),
                )
                .await;
            if pool != "0" {
                s.pool_ready(4).await;
            }
            let a = s
                .send(
                    s.http
                        .post(s.url(&format!("/invoke/{f}")))
                        .header("x-evil", "$(echo PWNED-header >&2); `id`")
                        .body(""),
                )
                .await;
            assert_eq!(a.status, 200, "{what}: {a:?}");
            let env: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{what}: {e}: {}", a.body));
            for (k, v) in &config {
                assert_eq!(env.get(k), Some(v), "{what}: {k}");
            }
            if format == "default" {
                assert_eq!(
                    env["FN_HEADER_X-Evil"], "$(echo PWNED-header >&2); `id`",
                    "{what}"
                );
            }
            for k in env.keys() {
                assert!(
                    k.starts_with("FN_")
                        || config.contains_key(k)
                        || ["PATH", "HOME", "LANG", "PWD", "APPVAR"].contains(&k.as_str()),
                    "{what}: unexpected variable {k}"
                );
            }
            let log = s.log_with(&f, &a.call_id(), "env-printed").await;
            assert!(!log.contains("PWNED"), "{what}: {log}");
        }
        if pool != "0" {
            s.pool_ready(4).await;
        }
        let id = s.server_id().await;
        s.stop_and_check_clean(&id, &[hot.dir.path(), cold.dir.path()])
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_answer_goes_to_nobody() {
    // A hot `http` function that answers its first call twice; every later
    // call of the same instance gets "fresh".
    let d = FnDir::new(
        "./run.py",
        "http",
        &[(
            "run.py",
            r#"#!/usr/bin/python3
import sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
def read_request():
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        c = inp.read(1)
        if not c:
            sys.exit(0)
        head += c
    for l in head.split(b"\r\n"):
        if l.lower().startswith(b"content-length:"):
            inp.read(int(l.split(b":")[1]))
def answer(body):
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
read_request()
out.write(answer(b"first") + answer(b"secret of the first caller"))
out.flush()
while True:
    read_request()
    out.write(answer(b"fresh"))
    out.flush()
"#,
        )],
    );
    let s = Srv::start().await;
    let f = s.func("twice", &d.image(), json!({"format": "http"})).await;
    for _ in 0..2 {
        let a = s.invoke(&f, "{}").await;
        assert_eq!((a.status, a.body.as_str()), (200, "first"), "{a:?}");
    }
    assert_eq!(s.until_instances(0).await, 0, "each instance ended");
    s.pool_ready(4).await;
    let id = s.server_id().await;
    s.stop_and_check_clean(&id, &[d.dir.path()]).await;
}
