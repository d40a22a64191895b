//! The daemon as kubelet and an operator meet it: over its socket, through
//! its exit codes and stderr, and across crashes and restarts.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use bulkhead_e2e::cri::*;
use bulkhead_e2e::{Daemon, Sandbox, free_port, run_to_exit};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_names_bulkhead_and_cri_v1() {
    let daemon = Daemon::start().await;
    let v = daemon.runtime().await.version(VersionRequest { version: "v1".into() }).await.unwrap().into_inner();
    assert_eq!(v.runtime_name, "bulkhead");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.version, "0.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_true_conditions_and_verbose_config() {
    let daemon = Daemon::start().await;
    let mut rt = daemon.runtime().await;
    let status = rt.status(StatusRequest { verbose: false }).await.unwrap().into_inner();
    assert!(status.info.is_empty(), "info only when verbose");
    // One handler, the default; the features built say so (this kernel has mount_setattr).
    let handlers = &status.runtime_handlers;
    assert_eq!(handlers.len(), 1);
    assert_eq!(handlers[0].name, "");
    assert!(handlers[0].features.unwrap().recursive_read_only_mounts);
    assert!(status.features.unwrap().supplemental_groups_policy);
    let conditions = status.status.unwrap().conditions;
    let get = |kind: &str| conditions.iter().find(|c| c.r#type == kind).cloned().unwrap();
    let runtime = get("RuntimeReady");
    assert!(runtime.status, "{runtime:?}");
    let network = get("NetworkReady");
    // Native mode with the embedded pod CIDR: ready.
    assert!(network.status && network.reason.is_empty(), "{network:?}");

    let verbose = rt.status(StatusRequest { verbose: true }).await.unwrap().into_inner();
    let config: serde_json::Value = serde_json::from_str(&verbose.info["config"]).unwrap();
    assert_eq!(config["root"], daemon.sandbox.root.display().to_string());
    assert_eq!(config["socket"], daemon.sandbox.socket.display().to_string());
    assert_eq!(config["log"]["level"], "info");
    for key in ["cgroupDriver", "host", "network", "objects"] {
        let value: serde_json::Value = serde_json::from_str(&verbose.info[key]).unwrap();
        assert!(!value.is_null(), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_config_reports_the_cgroup_driver_in_use() {
    let daemon = Daemon::start().await;
    let resp = daemon.runtime().await.runtime_config(RuntimeConfigRequest {}).await.unwrap().into_inner();
    let expected =
        if Path::new("/run/systemd/system").is_dir() { CgroupDriver::Systemd } else { CgroupDriver::Cgroupfs };
    assert_eq!(resp.linux.unwrap().cgroup_driver(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbuilt_rpcs_answer_unimplemented_naming_themselves() {
    let daemon = Daemon::start().await;
    let err = daemon.runtime().await.checkpoint_container(CheckpointContainerRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("CheckpointContainer"), "{}", err.message());
    let err =
        daemon.runtime().await.list_pod_sandbox_metrics(ListPodSandboxMetricsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("ListPodSandboxMetrics"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_created_with_mode_0660_in_a_new_directory() {
    let daemon = Daemon::start().await;
    let meta = std::fs::metadata(&daemon.sandbox.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_socket_refuses_and_the_first_keeps_serving() {
    let daemon = Daemon::start().await;
    let other = Sandbox::new();
    let mut cmd = other.command(&[]);
    cmd.arg("--socket").arg(&daemon.sandbox.socket);
    let (status, stderr) = run_to_exit(cmd);
    assert!(!status.success());
    assert!(stderr.contains("held by a live daemon"), "{stderr}");
    assert!(stderr.contains(&daemon.sandbox.socket.display().to_string()), "{stderr}");
    error_line(&stderr);
    assert!(!other.root.exists(), "the refused daemon created nothing");
    daemon.runtime().await.version(VersionRequest::default()).await.unwrap();
    assert!(other.sweep().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_root_refuses() {
    let daemon = Daemon::start().await;
    let other = Sandbox::new();
    let mut cmd = other.command(&[]);
    cmd.arg("--root").arg(&daemon.sandbox.root);
    let (status, stderr) = run_to_exit(cmd);
    assert!(!status.success());
    assert!(stderr.contains("locked by another bulkhead daemon"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", daemon.pid())), "{stderr}");
    assert!(!other.state.exists() && !other.socket.exists(), "the refused daemon rolled back what it created");
    daemon.runtime().await.version(VersionRequest::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_written_before_kill_9_is_there_after_restart() {
    let mut daemon = Daemon::start().await;
    daemon
        .runtime()
        .await
        .update_runtime_config(UpdateRuntimeConfigRequest {
            runtime_config: Some(RuntimeConfig {
                network_config: Some(NetworkConfig { pod_cidr: "10.244.7.0/24,fd00:10:244:7::/64".into() }),
            }),
        })
        .await
        .unwrap();
    daemon.kill9();
    assert!(daemon.sandbox.socket.exists(), "a killed daemon leaves its socket behind");
    daemon.restart().await;
    assert!(daemon.log_text().contains("replacing stale socket"), "{}", daemon.log_text());
    let status = daemon.runtime().await.status(StatusRequest { verbose: true }).await.unwrap().into_inner();
    let network: serde_json::Value = serde_json::from_str(&status.info["network"]).unwrap();
    assert_eq!(network["podCidrs"], "10.244.7.0/24,fd00:10:244:7::/64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_pod_cidr_is_invalid_argument_naming_the_field() {
    let daemon = Daemon::start().await;
    let err = daemon
        .runtime()
        .await
        .update_runtime_config(UpdateRuntimeConfigRequest {
            runtime_config: Some(RuntimeConfig {
                network_config: Some(NetworkConfig { pod_cidr: "10.0.0.0/99".into() }),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("runtime_config.network_config.pod_cidr"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_removes_the_socket() {
    let mut daemon = Daemon::start().await;
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "{status}:\n{}", daemon.log_text());
    assert!(!daemon.sandbox.socket.exists());
    assert!(daemon.log_text().contains("bulkhead stopped"));
}

#[test]
fn the_service_manager_hears_ready_and_stopping() {
    // As systemd's Type=notify: a datagram socket named by NOTIFY_SOCKET.
    let sandbox = Sandbox::new();
    let path = sandbox.dir.path().join("notify.sock");
    let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut cmd = sandbox.command(&[]);
    cmd.env("NOTIFY_SOCKET", &path).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut buf = [0u8; 64];
    let n = manager.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    assert!(sandbox.socket.exists(), "ready means the CRI socket is there");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let n = manager.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_bad_config_file_is_refused_naming_the_key_and_creating_nothing() {
    let sandbox = Sandbox::new();
    for (text, key) in [
        ("[log]\nlevel = \"info\"\nformat = \"xml\"\n", "log.format"),
        ("[runtime]\ncgroup_drivr = \"cgroupfs\"\n", "runtime.cgroup_drivr"),
        ("shutdown_timeout_seconds = -1\n", "shutdown_timeout_seconds"),
    ] {
        let file = sandbox.dir.path().join("config.toml");
        std::fs::write(&file, text).unwrap();
        let mut cmd = sandbox.command(&[]);
        cmd.arg("--config").arg(&file);
        let (status, stderr) = run_to_exit(cmd);
        assert!(!status.success(), "{text}");
        assert!(stderr.contains(&format!("key `{key}`")), "{text}: {stderr}");
        assert!(stderr.contains(&file.display().to_string()), "{stderr}");
        error_line(&stderr);
        assert!(!sandbox.root.exists() && !sandbox.state.exists());
        let check = run_to_exit({
            let mut c = std::process::Command::new(bulkhead_e2e::binary());
            c.args(["config", "check"]).arg(&file);
            c
        });
        assert!(!check.0.success() && check.1.contains(key), "config check: {}", check.1);
    }
    assert!(sandbox.sweep().is_empty());
}

#[test]
fn a_bad_flag_value_is_refused_naming_the_flag() {
    let sandbox = Sandbox::new();
    let (status, stderr) = run_to_exit(sandbox.command(&["--root", "relative/root"]));
    assert!(!status.success());
    assert!(error_line(&stderr).contains("--root"), "{stderr}");
    let (status, stderr) = run_to_exit(sandbox.command(&["--metrics-addr", "localhost"]));
    assert!(!status.success());
    assert!(error_line(&stderr).contains("--metrics-addr"), "{stderr}");
    assert!(!sandbox.root.exists());
}

#[test]
fn a_missing_explicit_config_file_is_refused() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command(&["--config", "/nonexistent/bulkhead.toml"]);
    cmd.arg("--log-level=debug");
    let (status, stderr) = run_to_exit(cmd);
    assert!(!status.success());
    assert!(stderr.contains("/nonexistent/bulkhead.toml"), "{stderr}");
    assert!(!sandbox.root.exists());
}

#[test]
fn the_default_config_prints_and_checks_clean() {
    let sandbox = Sandbox::new();
    let out = std::process::Command::new(bulkhead_e2e::binary()).args(["config", "default"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("root = \"/var/lib/bulkhead\"") && text.contains("\n# "), "{text}");
    let file = sandbox.dir.path().join("default.toml");
    std::fs::write(&file, &text).unwrap();
    let check =
        std::process::Command::new(bulkhead_e2e::binary()).args(["config", "check"]).arg(&file).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

#[test]
fn a_non_root_start_is_refused_creating_nothing() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command(&[]);
    cmd.uid(65534).gid(65534);
    let (status, stderr) = run_to_exit(cmd);
    assert!(!status.success());
    assert!(stderr.contains("must run as root"), "{stderr}");
    assert!(stderr.contains("uid 65534"), "{stderr}");
    assert!(!sandbox.root.exists() && !sandbox.state.exists());
}

#[test]
fn an_unwritable_root_is_refused_and_what_was_created_is_removed() {
    let sandbox = Sandbox::new();
    // A regular file where a directory is needed: nothing can be created below it.
    let blocker = sandbox.dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let root = blocker.join("root");
    let mut cmd = sandbox.command(&[]);
    cmd.arg("--root").arg(&root);
    let (status, stderr) = run_to_exit(cmd);
    assert!(!status.success());
    assert!(stderr.contains(&root.display().to_string()), "{stderr}");
    error_line(&stderr);
    assert!(!sandbox.state.exists() && !sandbox.socket.exists());

    // A read-only root: the directory exists but nothing can be written in it.
    let ro = sandbox.dir.path().join("ro-root");
    std::fs::create_dir(&ro).unwrap();
    nix::mount::mount(Some(&ro), &ro, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap();
    nix::mount::mount(
        None::<&str>,
        &ro,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .unwrap();
    let mut cmd = sandbox.command(&[]);
    cmd.arg("--root").arg(&ro);
    let (status, stderr) = run_to_exit(cmd);
    nix::mount::umount2(&ro, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert!(!status.success());
    assert!(stderr.contains(&ro.display().to_string()) && stderr.contains("Read-only"), "{stderr}");
    assert!(!sandbox.state.exists() && !sandbox.socket.exists());
    assert!(sandbox.sweep().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_errors_per_rpc() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let daemon = Daemon::start_with(Sandbox::new(), &["--metrics-addr", &address]).await;
    let mut rt = daemon.runtime().await;
    rt.version(VersionRequest::default()).await.unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: "abc".into() }).await.unwrap_err();
    let body = http_get(&address, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    // The harness's readiness probe also called Version.
    assert!(body.contains("bulkhead_grpc_requests_total{rpc=\"Version\"}"), "{body}");
    assert!(body.contains("bulkhead_grpc_errors_total{rpc=\"StopPodSandbox\",code=\"NotFound\"} 1"), "{body}");
    assert!(body.contains("bulkhead_grpc_request_duration_seconds_bucket{le="), "{body}");
    assert!(http_get(&address, "/nope").await.starts_with("HTTP/1.1 404"));
}

async fn http_get(address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_rpc_span() {
    let daemon = Daemon::start_with(Sandbox::new(), &["--log-format", "json", "--log-level", "debug"]).await;
    daemon
        .runtime()
        .await
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: "pod-42".into(), verbose: false })
        .await
        .unwrap_err();
    let log = daemon.log_text();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines.iter().any(|l| l["span"]["rpc"] == "PodSandboxStatus" && l["span"]["pod_id"] == "pod-42"), "{log}");
}

/// The one line that states why the daemon refused to start.
fn error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("bulkhead: error: ")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line: {stderr}");
    errors[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_grace_period_when_a_client_hangs() {
    let sandbox = Sandbox::new();
    let config = sandbox.dir.path().join("config.toml");
    std::fs::write(&config, "shutdown_timeout_seconds = 1\n").unwrap();
    let mut daemon = Daemon::start_with(sandbox, &["--config", config.to_str().unwrap()]).await;
    // A client that connects and never finishes its HTTP/2 handshake.
    let hung = std::os::unix::net::UnixStream::connect(&daemon.sandbox.socket).unwrap();
    let started = std::time::Instant::now();
    let status = daemon.terminate();
    let took = started.elapsed();
    drop(hung);
    assert_eq!(status.code(), Some(0), "{}", daemon.log_text());
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_ready_names_a_broken_cni_configuration_and_a_missing_pod_cidr() {
    let sandbox = Sandbox::new();
    let conf_dir = sandbox.dir.path().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("10-broken.conflist"), "{\"cniVersion\":").unwrap();
    let config = sandbox.dir.path().join("config.toml");
    std::fs::write(&config, format!("[network]\npod_cidr = \"\"\ncni_conf_dir = \"{}\"\n", conf_dir.display()))
        .unwrap();
    let daemon = Daemon::start_with(sandbox, &["--config", config.to_str().unwrap()]).await;
    let network_ready = || async {
        let status = daemon.runtime().await.status(StatusRequest { verbose: false }).await.unwrap().into_inner();
        status.status.unwrap().conditions.into_iter().find(|c| c.r#type == "NetworkReady").unwrap()
    };
    let ready = network_ready().await;
    assert!(!ready.status && ready.reason == "NetworkPluginNotReady", "{ready:?}");
    assert!(ready.message.contains("10-broken.conflist"), "{ready:?}");
    // Without a CNI configuration the node is in native mode, which needs a pod CIDR.
    std::fs::remove_file(conf_dir.join("10-broken.conflist")).unwrap();
    let ready = network_ready().await;
    assert!(!ready.status && ready.reason == "NoPodCidr", "{ready:?}");
}
