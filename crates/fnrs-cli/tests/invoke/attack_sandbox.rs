//! A hostile function against the sandbox, through the `fnrs` binary:
//! descriptors the server was started with, shell evaluation of its config.

use std::path::PathBuf;

use serde_json::json;

use crate::common::{BIN, FnDir, Srv};

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
        let id = s.server_id().await;
        s.stop_and_check_clean(&id, &[d.dir.path()]).await;
    }
}
