//! An acknowledged write is never lost: SIGKILL right after (and during) a
//! burst of creates, restart on the same data, every acknowledged object is there.

use serde_json::json;

use crate::both;
use crate::common::*;

async fn acknowledged_creates_survive_sigkill(b: Backend) {
    let mut s = Srv::start(b).await;
    let app_id = id(&s.app("base").await);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let base = s.server.url();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let http = s.http.clone();
        let (base, tx, app_id) = (base.clone(), tx.clone(), app_id.clone());
        tasks.push(tokio::spawn(async move {
            let (path, body) = if i % 2 == 0 {
                ("/v2/apps", json!({"name": format!("app{i}")}))
            } else {
                (
                    "/v2/fns",
                    json!({"app_id": app_id, "name": format!("fn{i}"), "image": "img"}),
                )
            };
            if let Ok(r) = http.post(format!("{base}{path}")).json(&body).send().await
                && r.status() == 200
                && let Ok(v) = r.json::<serde_json::Value>().await
            {
                let _ = tx.send((path, id(&v), body["name"].as_str().unwrap().to_owned()));
            }
        }));
    }
    drop(tx);
    // Kill as soon as half the burst is acknowledged, with the rest in flight.
    let mut acked = Vec::new();
    while let Some(a) = rx.recv().await {
        acked.push(a);
        if acked.len() == 150 {
            s.server.kill9();
            break;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    while let Ok(a) = rx.try_recv() {
        acked.push(a);
    }
    assert!(acked.len() >= 150, "{} acknowledged", acked.len());
    s.server.restart().await.expect("restarts on the same data");
    for (path, oid, name) in &acked {
        let (st, v) = s.get(&format!("{path}/{oid}")).await;
        assert_eq!(
            st, 200,
            "{path}/{oid} ({name}) was acknowledged but is gone"
        );
        assert_eq!(v["name"], name.as_str());
    }
}

both!(acknowledged_creates_survive_sigkill);
