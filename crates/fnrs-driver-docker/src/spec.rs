//! The container spec (contract §6): a pure function from an
//! [`InstanceSpec`] and the driver's settings to the engine's create request,
//! and the labels every container carries.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};
use bollard::query_parameters::{CreateContainerOptions, CreateContainerOptionsBuilder};
use fnrs_driver::{IOFS_MOUNT, InstanceSpec};

use crate::config::DockerDriverConfig;

/// Label on every container: the id of the server that made it.
pub const LABEL_SERVER: &str = "fnrs.server";
/// Label on every container: the app id.
pub const LABEL_APP: &str = "fnrs.app_id";
/// Label on every container: the fn id.
pub const LABEL_FN: &str = "fnrs.fn_id";

/// The uid:gid of unprivileged containers (as Fn).
pub const CONTAINER_USER: &str = "1000:1000";

/// A list filter for containers labelled by any server (`None`) or by one.
pub(crate) fn server_filter(server_id: Option<&str>) -> HashMap<String, Vec<String>> {
    let label = match server_id {
        None => LABEL_SERVER.to_string(),
        Some(id) => format!("{LABEL_SERVER}={id}"),
    };
    HashMap::from([("label".to_string(), vec![label])])
}

/// The create options: the container is named after the instance id.
pub(crate) fn create_options(spec: &InstanceSpec) -> CreateContainerOptions {
    CreateContainerOptionsBuilder::default()
        .name(&spec.id)
        .build()
}

/// The create body of `spec`'s container: joined to `network` when given,
/// else on the engine's default network with the host's name `hostname`.
pub(crate) fn container_body(
    spec: &InstanceSpec,
    config: &DockerDriverConfig,
    network: Option<&str>,
    hostname: Option<&str>,
) -> ContainerCreateBody {
    let mib = 1024 * 1024;
    let memory = (spec.memory_mb as i64).saturating_mul(mib);
    let mut labels = HashMap::new();
    labels.insert(LABEL_SERVER.to_string(), config.server_id.clone());
    labels.insert(LABEL_APP.to_string(), spec.app_id.clone());
    labels.insert(LABEL_FN.to_string(), spec.fn_id.clone());
    let ul = |name: &str, v: Option<u64>| {
        v.map(|v| ResourcesUlimits {
            name: Some(name.to_string()),
            soft: Some(v as i64),
            hard: Some(v as i64),
        })
    };
    let u = config.ulimits;
    let ulimits: Vec<ResourcesUlimits> = [
        ul("nofile", u.nofile),
        ul("memlock", u.memlock),
        ul("sigpending", u.sigpending),
        ul("msgqueue", u.msgqueue),
    ]
    .into_iter()
    .flatten()
    .collect();
    let tmpfs = config.readonly_rootfs.then(|| {
        let opts = if config.max_tmpfs_inodes > 0 {
            format!("nr_inodes={}", config.max_tmpfs_inodes)
        } else {
            String::new()
        };
        HashMap::from([("/tmp".to_string(), opts)])
    });
    let binds = spec
        .iofs_dir
        .as_ref()
        .map(|d| vec![format!("{}:{IOFS_MOUNT}", config.engine_iofs_path(d))]);
    let storage_opt = (config.max_fs_size_mb > 0)
        .then(|| HashMap::from([("size".to_string(), format!("{}M", config.max_fs_size_mb))]));
    let host_config = HostConfig {
        init: Some(true),
        readonly_rootfs: Some(config.readonly_rootfs),
        memory: Some(memory),
        memory_swap: Some(memory),
        memory_swappiness: Some(0),
        pids_limit: (config.max_pids > 0).then_some(config.max_pids as i64),
        ulimits: Some(ulimits),
        tmpfs,
        binds,
        storage_opt,
        network_mode: network.map(str::to_string),
        log_config: Some(log_config(spec)),
        cap_drop: config.unprivileged.then(|| vec!["ALL".to_string()]),
        security_opt: config
            .unprivileged
            .then(|| vec!["no-new-privileges".to_string()]),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        hostname: if network.is_none() {
            hostname.map(str::to_string)
        } else {
            None
        },
        user: config.unprivileged.then(|| CONTAINER_USER.to_string()),
        attach_stdin: Some(spec.stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(spec.stdin),
        stdin_once: Some(spec.stdin),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The container's log driver: `none` (fnrs reads the output through the
/// attach streams), or Docker's `syslog` driver when the app has a
/// `syslog_url`, configured as Fn does (facility user, RFC 5424, a tag naming
/// the app and fn). Attach still delivers the output for the call logs.
fn log_config(spec: &InstanceSpec) -> HostConfigLogConfig {
    match spec.syslog_url.as_deref().filter(|u| !u.is_empty()) {
        None => HostConfigLogConfig {
            typ: Some("none".to_string()),
            config: None,
        },
        Some(url) => HostConfigLogConfig {
            typ: Some("syslog".to_string()),
            config: Some(HashMap::from([
                ("syslog-address".to_string(), url.to_string()),
                ("syslog-facility".to_string(), "user".to_string()),
                ("syslog-format".to_string(), "rfc5424".to_string()),
                (
                    "tag".to_string(),
                    format!("app_id={},fn_id={}", spec.app_id, spec.fn_id),
                ),
            ])),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::Ulimits;

    fn instance() -> InstanceSpec {
        InstanceSpec {
            id: "ID".into(),
            app_id: "APP".into(),
            fn_id: "FN".into(),
            image: "x/y:1".into(),
            env: vec![("A".into(), "b".into()), ("C".into(), "d e=f".into())],
            memory_mb: 64,
            iofs_dir: Some("/tmp/iofs123".into()),
            stdin: false,
            syslog_url: None,
        }
    }

    fn config() -> DockerDriverConfig {
        DockerDriverConfig {
            server_id: "SRV".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_fn() {
        let spec = instance();
        assert_eq!(create_options(&spec).name.as_deref(), Some("ID"));
        let b = container_body(&spec, &config(), None, Some("host1"));
        assert_eq!(b.image.as_deref(), Some("x/y:1"));
        assert_eq!(b.env, Some(vec!["A=b".to_string(), "C=d e=f".to_string()]));
        let labels = b.labels.unwrap();
        assert_eq!(labels.len(), 3);
        assert_eq!(labels[LABEL_SERVER], "SRV");
        assert_eq!(labels[LABEL_APP], "APP");
        assert_eq!(labels[LABEL_FN], "FN");
        assert_eq!(b.user.as_deref(), Some(CONTAINER_USER));
        assert_eq!(b.hostname.as_deref(), Some("host1"));
        assert_eq!(
            (b.attach_stdin, b.open_stdin, b.stdin_once),
            (Some(false), Some(false), Some(false))
        );
        assert_eq!((b.attach_stdout, b.attach_stderr), (Some(true), Some(true)));
        assert_eq!(b.tty, Some(false));
        // The image's own entrypoint and cmd.
        assert_eq!((b.entrypoint, b.cmd), (None, None));
        let h = b.host_config.unwrap();
        assert_eq!(h.init, Some(true));
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.memory, Some(64 << 20));
        assert_eq!(h.memory_swap, Some(64 << 20));
        assert_eq!(h.memory_swappiness, Some(0));
        assert_eq!(h.pids_limit, Some(50));
        let ulimits: Vec<(String, i64, i64)> = h
            .ulimits
            .unwrap()
            .into_iter()
            .map(|u| (u.name.unwrap(), u.soft.unwrap(), u.hard.unwrap()))
            .collect();
        assert_eq!(
            ulimits,
            vec![
                ("nofile".to_string(), 350, 350),
                ("memlock".to_string(), 65536, 65536),
                ("sigpending".to_string(), 5000, 5000),
                ("msgqueue".to_string(), 819200, 819200),
            ]
        );
        assert_eq!(
            h.tmpfs,
            Some(HashMap::from([("/tmp".to_string(), String::new())]))
        );
        assert_eq!(h.binds, Some(vec!["/tmp/iofs123:/tmp/iofs".to_string()]));
        assert_eq!(h.storage_opt, None);
        assert_eq!(h.network_mode, None);
        let log = h.log_config.unwrap();
        assert_eq!((log.typ.as_deref(), log.config), (Some("none"), None));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(h.security_opt, Some(vec!["no-new-privileges".to_string()]));
        assert_eq!(h.privileged, None);
    }

    #[test]
    fn settings_change_the_spec() {
        let mut spec = instance();
        spec.stdin = true;
        spec.iofs_dir = Some(PathBuf::from("/agent/iofs/fnrs/S/i1"));
        spec.memory_mb = 1 << 20;
        let c = DockerDriverConfig {
            readonly_rootfs: false,
            unprivileged: false,
            max_pids: 0,
            ulimits: Ulimits {
                nofile: Some(10),
                memlock: None,
                sigpending: None,
                msgqueue: None,
            },
            max_fs_size_mb: 100,
            iofs_translate: Some(("/agent/iofs".into(), "/engine/iofs/".into())),
            ..config()
        };
        let b = container_body(&spec, &c, Some("net1"), Some("host1"));
        // On a network of its own the container keeps the engine's hostname.
        assert_eq!(b.hostname, None);
        assert_eq!(b.user, None);
        assert_eq!(
            (b.attach_stdin, b.open_stdin, b.stdin_once),
            (Some(true), Some(true), Some(true))
        );
        let h = b.host_config.unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("net1"));
        assert_eq!(h.readonly_rootfs, Some(false));
        assert_eq!(h.tmpfs, None);
        assert_eq!(h.pids_limit, None);
        assert_eq!(h.memory, Some(1 << 40));
        assert_eq!(h.cap_drop, None);
        assert_eq!(h.security_opt, None);
        assert_eq!(h.ulimits.unwrap().len(), 1);
        assert_eq!(
            h.storage_opt,
            Some(HashMap::from([("size".to_string(), "100M".to_string())]))
        );
        assert_eq!(
            h.binds,
            Some(vec!["/engine/iofs/fnrs/S/i1:/tmp/iofs".to_string()])
        );
        // A tmpfs inode limit; no iofs directory, no bind.
        spec.iofs_dir = None;
        let c = DockerDriverConfig {
            max_tmpfs_inodes: 99,
            ..config()
        };
        let h = container_body(&spec, &c, None, None).host_config.unwrap();
        assert_eq!(
            h.tmpfs,
            Some(HashMap::from([(
                "/tmp".to_string(),
                "nr_inodes=99".to_string()
            )]))
        );
        assert_eq!(h.binds, None);
    }

    #[test]
    fn syslog_url_uses_the_syslog_log_driver() {
        let mut spec = instance();
        spec.syslog_url = Some("udp://127.0.0.1:514".into());
        let log = container_body(&spec, &config(), None, None)
            .host_config
            .unwrap()
            .log_config
            .unwrap();
        assert_eq!(log.typ.as_deref(), Some("syslog"));
        let c = log.config.unwrap();
        assert_eq!(c["syslog-address"], "udp://127.0.0.1:514");
        assert_eq!(c["syslog-facility"], "user");
        assert_eq!(c["syslog-format"], "rfc5424");
        assert_eq!(c["tag"], "app_id=APP,fn_id=FN");
        // An empty URL is none.
        spec.syslog_url = Some(String::new());
        let log = log_config(&spec);
        assert_eq!(log.typ.as_deref(), Some("none"));
    }

    #[test]
    fn server_filters() {
        assert_eq!(server_filter(None)["label"], vec![LABEL_SERVER.to_string()]);
        assert_eq!(
            server_filter(Some("S1"))["label"],
            vec![format!("{LABEL_SERVER}=S1")]
        );
    }
}
