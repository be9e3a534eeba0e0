//! Without an engine: the driver is made, starts fail with `Unavailable`
//! naming the engine, and health says so. Needs no Docker.

use fnrs_driver::{Driver, DriverError, InstanceSpec};
use fnrs_driver_docker::{DockerDriver, DockerDriverConfig};

#[tokio::test]
async fn a_dead_engine_is_unavailable_and_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("unix://{}/docker.sock", dir.path().display());
    let d = DockerDriver::new(DockerDriverConfig {
        docker_host: Some(host.clone()),
        server_id: "S".into(),
        ..Default::default()
    })
    .unwrap();
    let spec = InstanceSpec {
        id: "fnrstest-none".into(),
        app_id: "A".into(),
        fn_id: "F".into(),
        image: "fnproject/hello".into(),
        env: vec![],
        memory_mb: 64,
        iofs_dir: None,
        stdin: false,
        syslog_url: None,
    };
    match d.start(spec).await {
        Err(DriverError::Unavailable(m)) => assert!(m.contains(&host), "{m}"),
        Err(e) => panic!("expected Unavailable, got {e:?}"),
        Ok(_) => panic!("started without an engine"),
    }
    assert!(matches!(
        d.cleanup_leftovers().await,
        Err(DriverError::Unavailable(_))
    ));
    let h = d.health().await;
    assert_eq!(h["ok"], false, "{h}");
    assert!(h["error"].as_str().unwrap().contains(&host), "{h}");
    // A bad reference is still refused without an engine.
    assert!(matches!(
        d.check_image("NOT valid").await,
        Err(DriverError::BadImage(_))
    ));
}

#[test]
fn an_unsupported_docker_host_is_refused() {
    let e = DockerDriver::new(DockerDriverConfig {
        docker_host: Some("ftp://x".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(e, DriverError::Unavailable(_)), "{e:?}");
}
