//! The agent with the Docker driver: calls run in real containers, hot
//! http-stream instances are reused, the default format goes through attach,
//! pull errors reach the caller with Fn's status and message, and shutdown
//! removes every container of the server.
//!
//! Needs `bash scripts/docker-setup.sh` and `. /var/tmp/fnrs-docker/env.sh`;
//! fails without them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::ListContainersOptionsBuilder;
use bytes::Bytes;
use fnrs_agent::{Agent, AgentConfig, InvokeCall};
use fnrs_datastore::{Datastore, MemoryStore};
use fnrs_driver::Driver;
use fnrs_driver_docker::{DockerDriver, DockerDriverConfig, LABEL_SERVER};
use fnrs_model::{App, DateTime, Fn};
use fnrs_protocol::{BoxBody, full_body};
use http_body_util::BodyExt;

fn var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run `bash scripts/docker-setup.sh` and \
             `. /var/tmp/fnrs-docker/env.sh` first"
        ),
    }
}

struct Setup {
    agent: Arc<Agent>,
    store: Arc<MemoryStore>,
    driver: Arc<DockerDriver>,
    app: Arc<App>,
    _iofs: tempfile::TempDir,
}

async fn setup() -> Setup {
    assert_eq!(var("FNRS_TEST_DOCKER"), "1");
    let iofs = tempfile::tempdir().unwrap();
    let server_id = fnrs_model::new_id();
    let config = AgentConfig {
        iofs_path: iofs.path().to_path_buf(),
        server_id: Some(server_id.clone()),
        hot_start_timeout: Duration::from_secs(30),
        ..AgentConfig::default()
    };
    let lock_dir = config.lock_dir.clone();
    let driver = Arc::new(
        DockerDriver::new(DockerDriverConfig {
            server_id,
            is_live: Arc::new(move |id| fnrs_agent::server_is_live(&lock_dir, id)),
            ..DockerDriverConfig::default()
        })
        .unwrap(),
    );
    let store = Arc::new(MemoryStore::new());
    let now = DateTime::now();
    let app = App {
        id: fnrs_model::new_id(),
        name: "dockerapp".into(),
        config: Default::default(),
        annotations: Default::default(),
        syslog_url: None,
        shape: String::new(),
        created_at: now,
        updated_at: now,
    };
    store.insert_app(&app).await.unwrap();
    let agent = Agent::start(
        config,
        store.clone(),
        vec![driver.clone() as Arc<dyn Driver>],
    )
    .await
    .unwrap();
    Setup {
        agent,
        store,
        driver,
        app: Arc::new(app),
        _iofs: iofs,
    }
}

impl Setup {
    async fn func(&self, image: &str, format: Option<&str>) -> Arc<Fn> {
        let now = DateTime::now();
        let f = Fn {
            id: fnrs_model::new_id(),
            name: format!("f{}", fnrs_model::new_id().to_lowercase()),
            app_id: self.app.id.clone(),
            image: image.into(),
            format: format.map(str::to_string),
            memory: 128,
            timeout: 30,
            idle_timeout: 30,
            config: Default::default(),
            annotations: Default::default(),
            shape: String::new(),
            created_at: now,
            updated_at: now,
        };
        self.store.insert_fn(&f).await.unwrap();
        Arc::new(f)
    }

    async fn invoke(&self, func: &Arc<Fn>, body: &str) -> (u16, String) {
        let call = InvokeCall {
            app: self.app.clone(),
            func: func.clone(),
            trigger: None,
            method: http::Method::POST,
            url: format!("http://127.0.0.1/invoke/{}", func.id),
            headers: http::HeaderMap::new(),
            body: full_body(Bytes::from(body.to_string())) as BoxBody,
            detached: false,
        };
        let r = tokio::time::timeout(Duration::from_secs(120), self.agent.invoke(call))
            .await
            .expect("call did not finish in time");
        match r {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&body).to_string())
            }
            Err(e) => (e.error.status, e.error.message.to_string()),
        }
    }

    /// Containers of this server that exist now.
    async fn containers(&self) -> usize {
        let filter = format!("{LABEL_SERVER}={}", self.agent.server_id());
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&HashMap::from([("label", vec![filter.as_str()])]))
            .build();
        self.driver
            .client()
            .unwrap()
            .list_containers(Some(opts))
            .await
            .unwrap()
            .len()
    }
}

#[tokio::test]
async fn hot_http_stream_and_cold_default_calls_in_containers() {
    let s = setup().await;
    let rust = s.func(&var("FNRS_TEST_DOCKER_IMAGE_RUST"), None).await;
    for _ in 0..2 {
        let (status, body) = s.invoke(&rust, r#"{"name":"agent"}"#).await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["message"], "Hello agent");
        assert_eq!(v["fn_id"], rust.id.as_str());
    }
    assert_eq!(s.agent.instance_count(), 1, "the hot instance is reused");
    assert_eq!(s.containers().await, 1);

    let shell = s
        .func(&var("FNRS_TEST_DOCKER_IMAGE_SHELL"), Some("default"))
        .await;
    let (status, body) = s.invoke(&shell, "cold call").await;
    assert_eq!((status, body.as_str()), (200, "got:cold call"));

    let health = s.agent.health().await;
    assert_eq!(health["drivers"]["docker"]["ok"], true, "{health}");

    s.agent.shutdown(Duration::from_secs(10)).await;
    assert_eq!(s.containers().await, 0, "shutdown left containers");
}

#[tokio::test]
async fn pull_errors_reach_the_caller() {
    let s = setup().await;
    let missing = format!("{}/fnrs-test/missing:nope", var("FNRS_TEST_REGISTRY"));
    // The engine has no credentials for the test registry: a refused pull.
    let f = s.func(&missing, None).await;
    let (status, message) = s.invoke(&f, "").await;
    assert!(status >= 400, "{status} {message}");
    assert!(
        message.starts_with(&format!("Failed to pull image '{missing}': ")),
        "{message}"
    );
    let vol = s
        .func(&var("FNRS_TEST_DOCKER_IMAGE_VOLUME"), Some("default"))
        .await;
    assert_eq!(
        s.invoke(&vol, "").await,
        (400, "image has Volume definition".to_string())
    );
    assert_eq!(s.containers().await, 0);
    s.agent.shutdown(Duration::from_secs(10)).await;
}
