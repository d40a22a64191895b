//! Pods for whole-system tests: a daemon with its own bridge and pod CIDR
//! and the busybox image pulled from a private registry, pod and container
//! configs as kubelet sends them, and the calls tests repeat.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test support fails loudly by design

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bulkhead_proto::cri::*;

use crate::registry::Registry;
use crate::{Daemon, Sandbox};

/// A daemon with its own bridge and pod CIDR, and the busybox image pulled.
pub struct Node {
    pub daemon: Daemon,
    /// The busybox image, pulled.
    pub image: String,
    pub registry: Registry,
}

pub async fn node(pod_cidr: &str) -> Node {
    node_with(pod_cidr, "").await
}

/// [`node`] with more config (TOML appended after the `[network]` section's keys).
pub async fn node_with(pod_cidr: &str, network_extra: &str) -> Node {
    let registry = Registry::start();
    registry.push_busybox("test/busybox", "v1").await;
    let sandbox = Sandbox::new();
    let config = sandbox.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[image]\nplain_http_registries = [\"{}\"]\n{}{network_extra}",
            registry.host,
            sandbox.network_config(pod_cidr)
        ),
    )
    .unwrap();
    let daemon = Daemon::start_with(sandbox, &["--config", config.to_str().unwrap()]).await;
    let image = format!("{}/test/busybox:v1", registry.host);
    let spec = Some(ImageSpec { image: image.clone(), ..ImageSpec::default() });
    daemon.image().await.pull_image(PullImageRequest { image: spec, ..Default::default() }).await.unwrap();
    Node { daemon, image, registry }
}

pub fn pod_config(node: &Node, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: node.daemon.sandbox.dir.path().join("logs").join(name).display().to_string(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".into(), name.into())]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/{}/{name}", node.daemon.sandbox.bridge()),
            ..LinuxPodSandboxConfig::default()
        }),
        ..PodSandboxConfig::default()
    }
}

pub fn container_config(node: &Node, name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(ImageSpec { image: node.image.clone(), ..ImageSpec::default() }),
        command: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script.into()],
        envs: vec![KeyValue { key: "GREETING".into(), value: "hello from env".into() }],
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("container".into(), name.into())]),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 0 }),
                ..LinuxContainerSecurityContext::default()
            }),
            ..LinuxContainerConfig::default()
        }),
        ..ContainerConfig::default()
    }
}

pub async fn exec(node: &Node, id: &str, script: &str) -> (i32, String) {
    let cmd = vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script.into()];
    let out = node
        .daemon
        .runtime()
        .await
        .exec_sync(ExecSyncRequest { container_id: id.into(), cmd, timeout: 10 })
        .await
        .unwrap()
        .into_inner();
    (out.exit_code, String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

pub async fn container_status(node: &Node, id: &str) -> ContainerStatus {
    let req = ContainerStatusRequest { container_id: id.into(), verbose: false };
    node.daemon.runtime().await.container_status(req).await.unwrap().into_inner().status.unwrap()
}

pub async fn wait_state(node: &Node, id: &str, state: ContainerState) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = container_status(node, id).await;
        if status.state == state as i32 {
            return status;
        }
        assert!(Instant::now() < deadline, "{id} never reached {state:?}: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a pod; returns its id and config (as CreateContainer wants it).
pub async fn run_pod(node: &Node, mut config: PodSandboxConfig) -> (String, PodSandboxConfig) {
    config.linux.get_or_insert_with(LinuxPodSandboxConfig::default);
    let req = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
    let id = node.daemon.runtime().await.run_pod_sandbox(req).await.unwrap().into_inner().pod_sandbox_id;
    (id, config)
}

/// Creates and starts a container; returns its id.
pub async fn run_container(node: &Node, pod: &(String, PodSandboxConfig), config: ContainerConfig) -> String {
    let mut rt = node.daemon.runtime().await;
    let req = CreateContainerRequest {
        pod_sandbox_id: pod.0.clone(),
        config: Some(config),
        sandbox_config: Some(pod.1.clone()),
    };
    let id = rt.create_container(req).await.unwrap().into_inner().container_id;
    rt.start_container(StartContainerRequest { container_id: id.clone() }).await.unwrap();
    id
}

/// Stops and removes a pod.
pub async fn remove_pod(node: &Node, pod_id: &str) {
    let mut rt = node.daemon.runtime().await;
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod_id.into() }).await.unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id.into() }).await.unwrap();
}

/// PodSandboxStatus of `pod_id`.
pub async fn pod_status(node: &Node, pod_id: &str) -> PodSandboxStatus {
    let req = PodSandboxStatusRequest { pod_sandbox_id: pod_id.into(), verbose: false };
    node.daemon.runtime().await.pod_sandbox_status(req).await.unwrap().into_inner().status.unwrap()
}
