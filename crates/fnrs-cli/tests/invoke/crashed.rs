//! What a crashed server leaves is removed at the next start, whether or
//! not its lock file survived.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::common::{Srv, py_fn};
use crate::settings::server_cgroups;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_servers_cgroups_go_at_the_next_start_even_without_its_lock_file() {
    let s = Srv::start().await;
    let id = s.server_id().await;
    let d = py_fn("    return response.Response(ctx, response_data='hi')");
    let f = s
        .func("hot", &d.image(), json!({"idle_timeout": 300}))
        .await;
    let a = s.invoke(&f, "").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(s.instances().await, 1, "a hot instance runs");
    assert!(!server_cgroups("fnrs", &id).is_empty());
    let mut s = s;
    s.server.kill9();
    // Its lock file goes too (a reboot's tmpfs, a careless cleanup).
    let lock = Path::new("/run/fnrs").join(format!("{id}.lock"));
    let _ = std::fs::remove_file(&lock);
    assert!(!lock.exists());
    assert!(
        !server_cgroups("fnrs", &id).is_empty(),
        "its cgroups outlive it"
    );
    let next = Srv::start().await;
    let mut left = Vec::new();
    for _ in 0..100 {
        left = server_cgroups("fnrs", &id);
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        left.is_empty(),
        "cgroups of the crashed server left: {left:?}"
    );
    let pool_root = Path::new("/run/fnrs-pool").join(format!("fnrs%{id}"));
    assert!(!pool_root.exists(), "{} left", pool_root.display());
    drop(next);
}
