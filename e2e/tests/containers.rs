//! What a container's config asks for, seen from inside the container and
//! on the host: user and groups, capabilities, seccomp, read-only root and
//! mounts, memory limit and an OOM kill reported as OOMKilled, host network,
//! a host port reaching the container, and pods networked by CNI plugins.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{Read, Write};
use std::time::Duration;

use bulkhead_e2e::cri::*;
use bulkhead_e2e::pod::{
    Node, container_config, exec, node, pod_config, pod_status, remove_pod, run_container, run_pod, wait_state,
};

fn security(config: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    config.linux.get_or_insert_with(Default::default).security_context.get_or_insert_with(Default::default)
}

fn sleeper(node: &Node, name: &str) -> ContainerConfig {
    container_config(node, name, "exec /bin/busybox sleep 1000")
}

/// CapEff from /proc/self/status inside the container.
async fn effective_caps(node: &Node, id: &str) -> u64 {
    let (_, out) = exec(node, id, "/bin/busybox grep CapEff /proc/self/status").await;
    u64::from_str_radix(out.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_security_context_holds_inside_the_container() {
    let node = node("10.218.4.0/24").await;
    let pod = run_pod(&node, pod_config(&node, "sec")).await;

    // containerd's default capabilities; one added; all dropped.
    let default = run_container(&node, &pod, sleeper(&node, "default")).await;
    assert_eq!(effective_caps(&node, &default).await, 0xa80425fb, "containerd's 14 default capabilities");
    let seccomp_mode = |id: String| {
        let node = &node;
        async move {
            let (_, out) = exec(node, &id, "/bin/busybox grep Seccomp: /proc/self/status").await;
            out.split_whitespace().nth(1).unwrap().to_owned()
        }
    };
    assert_eq!(seccomp_mode(default.clone()).await, "0", "no profile asked: unconfined, as containerd");

    let mut config = sleeper(&node, "netadmin");
    let sc = security(&mut config);
    sc.capabilities = Some(Capability { add_capabilities: vec!["NET_ADMIN".into()], ..Capability::default() });
    sc.seccomp = Some(SecurityProfile { profile_type: 0, localhost_ref: String::new() }); // RuntimeDefault
    let netadmin = run_container(&node, &pod, config).await;
    assert_eq!(effective_caps(&node, &netadmin).await, 0xa80425fb | (1 << 12), "CAP_NET_ADMIN is bit 12");
    assert_eq!(seccomp_mode(netadmin.clone()).await, "2", "RuntimeDefault: a filter");
    let (code, out) = exec(&node, &netadmin, "/bin/busybox unshare -m true").await;
    assert_ne!(code, 0, "the default profile refuses unshare without CAP_SYS_ADMIN: {out}");

    let mut config = sleeper(&node, "nocaps");
    security(&mut config).capabilities =
        Some(Capability { drop_capabilities: vec!["ALL".into()], ..Capability::default() });
    let nocaps = run_container(&node, &pod, config).await;
    assert_eq!(effective_caps(&node, &nocaps).await, 0);

    // A user and groups; a read-only root; a read-only host mount.
    let host_dir = node.daemon.sandbox.dir.path().join("shared");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("from-host"), "hello").unwrap();
    let mut config = sleeper(&node, "user");
    let sc = security(&mut config);
    sc.run_as_user = Some(Int64Value { value: 1234 });
    sc.run_as_group = Some(Int64Value { value: 2345 });
    sc.supplemental_groups = vec![3456];
    sc.readonly_rootfs = true;
    sc.seccomp = Some(SecurityProfile { profile_type: 1, localhost_ref: String::new() }); // Unconfined
    config.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: host_dir.display().to_string(),
        readonly: true,
        ..Mount::default()
    }];
    let user = run_container(&node, &pod, config).await;
    let (_, ids) = exec(&node, &user, "/bin/busybox id -u; /bin/busybox id -g; /bin/busybox id -G").await;
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(&ids[..2], ["1234", "2345"]);
    assert!(ids[2].split_whitespace().any(|g| g == "3456"), "supplemental group: {ids:?}");
    let (code, _) = exec(&node, &user, "echo x > /new-file").await;
    assert_ne!(code, 0, "the root file system is read-only");
    let (code, out) = exec(&node, &user, "/bin/busybox cat /data/from-host && echo x > /data/written").await;
    assert!(code != 0 && out.starts_with("hello"), "the host directory is there, read-only: {out}");
    assert_eq!(seccomp_mode(user.clone()).await, "0", "Unconfined");
    remove_pod(&node, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_holds_and_an_oom_kill_is_reported() {
    let node = node("10.218.5.0/24").await;
    let pod = run_pod(&node, pod_config(&node, "mem")).await;
    let mut config = container_config(&node, "hog", "");
    // dd's 64 MiB buffer cannot fit under a 16 MiB limit.
    config.command =
        ["/bin/busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"].map(String::from).to_vec();
    config.linux.get_or_insert_with(Default::default).resources =
        Some(LinuxContainerResources { memory_limit_in_bytes: 16 * 1024 * 1024, ..Default::default() });
    let hog = run_container(&node, &pod, config).await;
    let status = wait_state(&node, &hog, ContainerState::ContainerExited).await;
    assert_eq!((status.reason.as_str(), status.exit_code), ("OOMKilled", 137), "{status:?}");
    remove_pod(&node, &pod.0).await;
}

/// One HTTP GET to `address`; the body.
fn http_get(address: std::net::SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_and_host_network_pods() {
    let node = node("10.218.6.0/24").await;
    // A web server behind host port 18096.
    let mut config = pod_config(&node, "web");
    config.port_mappings =
        vec![PortMapping { protocol: 0, container_port: 80, host_port: 18096, host_ip: String::new() }];
    let pod = run_pod(&node, config).await;
    let script = "/bin/busybox mkdir -p /www && echo served-by-pod > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www";
    let web = run_container(&node, &pod, container_config(&node, "httpd", script)).await;
    wait_state(&node, &web, ContainerState::ContainerRunning).await;
    // The bridge's gateway address is local to the node: the host port answers there.
    let address: std::net::SocketAddr = "10.218.6.1:18096".parse().unwrap();
    let mut body = String::new();
    for _ in 0..50 {
        body = std::panic::catch_unwind(|| http_get(address)).unwrap_or_default();
        if !body.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body.trim(), "served-by-pod");

    // A pod on the node's network sees the node's interfaces and hostname.
    let mut config = pod_config(&node, "hostnet");
    config.hostname = String::new();
    config.linux.get_or_insert_with(Default::default).security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption { network: 2, pid: 1, ipc: 0, ..NamespaceOption::default() }),
        ..LinuxSandboxSecurityContext::default()
    });
    let hostnet = run_pod(&node, config).await;
    let status = pod_status(&node, &hostnet.0).await;
    assert_eq!(status.network.unwrap().ip, "", "no pod IP on the node's network");
    let c = run_container(&node, &hostnet, sleeper(&node, "c")).await;
    let (_, out) = exec(&node, &c, "/bin/busybox hostname; /bin/busybox ip -o link").await;
    let node_name = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
    assert!(out.starts_with(&node_name), "{out}");
    assert!(out.contains(&node.daemon.sandbox.bridge()), "the node's own links: {out}");
    remove_pod(&node, &hostnet.0).await;
    remove_pod(&node, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_networked_by_cni_plugins_when_configured() {
    let node = node("10.218.7.0/24").await;
    let sandbox = &node.daemon.sandbox;
    let bridge = format!("{}c", sandbox.bridge());
    let ipam = sandbox.dir.path().join("cni-ipam");
    std::fs::create_dir_all(sandbox.dir.path().join("net.d")).unwrap();
    std::fs::write(
        sandbox.dir.path().join("net.d/10-e2e.conflist"),
        format!(
            r#"{{"cniVersion":"1.0.0","name":"e2e","plugins":[
                {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":true,
                  "ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.218.8.0/24"}}]],"dataDir":"{}"}}}}]}}"#,
            ipam.display()
        ),
    )
    .unwrap();
    let pod = run_pod(&node, pod_config(&node, "cni")).await;
    let status = pod_status(&node, &pod.0).await;
    let ip = status.network.unwrap().ip;
    assert!(ip.starts_with("10.218.8."), "the CNI range: {ip}");
    let c = run_container(&node, &pod, sleeper(&node, "c")).await;
    let (_, out) = exec(&node, &c, "/bin/busybox ip -o addr show eth0").await;
    assert!(out.contains(&ip), "{out}");
    remove_pod(&node, &pod.0).await;
    let leases: Vec<String> = std::fs::read_dir(ipam.join("e2e"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!leases.contains(&ip), "the plugin's lease is freed: {leases:?}");
    let _ = std::process::Command::new("ip").args(["link", "del", &bridge]).status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_sysctls_paths_and_limits_hold_inside_the_container() {
    let node = node("10.218.9.0/24").await;
    let mut pod_cfg = pod_config(&node, "knobs");
    pod_cfg.linux.get_or_insert_with(Default::default).sysctls =
        [("kernel.shm_rmid_forced".to_owned(), "1".to_owned())].into();
    let pod = run_pod(&node, pod_cfg).await;
    let mut config = sleeper(&node, "knobs");
    config.devices =
        vec![Device { container_path: "/dev/mynull".into(), host_path: "/dev/null".into(), permissions: "rwm".into() }];
    let linux = config.linux.get_or_insert_with(Default::default);
    linux.resources = Some(LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        oom_score_adj: 500,
        ..Default::default()
    });
    let sc = security(&mut config);
    sc.no_new_privs = true;
    sc.masked_paths = vec!["/proc/version".into()];
    sc.readonly_paths = vec!["/proc/sys".into()];
    let id = run_container(&node, &pod, config).await;
    let script = "echo dev:$(echo hi > /dev/mynull && echo ok); \
                  echo sysctl:$(/bin/busybox cat /proc/sys/kernel/shm_rmid_forced); \
                  echo nnp:$(/bin/busybox grep NoNewPrivs /proc/self/status | /bin/busybox tr -d ' \\t'); \
                  echo oom:$(/bin/busybox cat /proc/self/oom_score_adj); \
                  echo quota:$(/bin/busybox cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max 2>/dev/null); \
                  echo masked:$(/bin/busybox wc -c < /proc/version); \
                  echo procsys:$(echo 1 > /proc/sys/kernel/shm_rmid_forced 2>/dev/null && echo writable || echo read-only); \
                  echo hostname:$(/bin/busybox cat /etc/hostname)";
    let (code, out) = exec(&node, &id, script).await;
    assert_eq!(code, 0, "{out}");
    for expected in
        ["dev:ok", "sysctl:1", "nnp:NoNewPrivs:1", "oom:500", "masked:0", "procsys:read-only", "hostname:knobs"]
    {
        assert!(out.lines().any(|l| l == expected), "{expected:?} not in:\n{out}");
    }
    assert!(out.lines().any(|l| l == "quota:50000" || l == "quota:50000 100000"), "{out}");

    // ContainerStatus reports the resources and the user it runs with; an update shows there too.
    let status = bulkhead_e2e::pod::container_status(&node, &id).await;
    let resources = status.resources.and_then(|r| r.linux).unwrap();
    assert_eq!((resources.cpu_period, resources.cpu_quota, resources.oom_score_adj), (100_000, 50_000, 500));
    let user = status.user.and_then(|u| u.linux).unwrap();
    assert_eq!((user.uid, user.gid), (0, 0));
    let update = LinuxContainerResources { cpu_period: 100_000, cpu_quota: 20_000, ..Default::default() };
    let req = UpdateContainerResourcesRequest { container_id: id.clone(), linux: Some(update), ..Default::default() };
    node.daemon.runtime().await.update_container_resources(req).await.unwrap();
    let status = bulkhead_e2e::pod::container_status(&node, &id).await;
    assert_eq!(status.resources.and_then(|r| r.linux).unwrap().cpu_quota, 20_000);
    let (_, quota) =
        exec(&node, &id, "/bin/busybox cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max 2>/dev/null")
            .await;
    assert!(quota.starts_with("20000"), "{quota}");

    // A Localhost seccomp profile that does not exist; a user name the image does not know.
    let mut rt = node.daemon.runtime().await;
    let mut bad = sleeper(&node, "bad-profile");
    security(&mut bad).seccomp =
        Some(SecurityProfile { profile_type: 2, localhost_ref: "/nonexistent/profile.json".into() });
    let mut unknown_user = sleeper(&node, "bad-user");
    security(&mut unknown_user).run_as_username = "nobody-here".into();
    security(&mut unknown_user).run_as_user = None;
    for (config, named) in [(bad, "/nonexistent/profile.json"), (unknown_user, "nobody-here")] {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.0.clone(),
            config: Some(config),
            sandbox_config: Some(pod.1.clone()),
        };
        let err = rt.create_container(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains(named), "{}", err.message());
    }
    remove_pod(&node, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tty_container_writes_its_terminal_to_the_log() {
    let node = node("10.218.10.0/24").await;
    let pod = run_pod(&node, pod_config(&node, "tty")).await;
    let mut config = container_config(&node, "term", "/bin/busybox tty; echo from-a-terminal");
    config.tty = true;
    let id = run_container(&node, &pod, config).await;
    let status = wait_state(&node, &id, ContainerState::ContainerExited).await;
    assert_eq!(status.exit_code, 0, "{status:?}");
    let log = node.daemon.sandbox.dir.path().join("logs/tty/term/0.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").trim_end_matches('\r')).collect();
    assert!(lines.iter().any(|l| l.starts_with("/dev/pts/")), "a terminal: {text}");
    assert!(lines.contains(&"from-a-terminal"), "{text}");
    assert!(text.lines().all(|l| l.split(' ').nth(1) == Some("stdout")), "{text}");
    remove_pod(&node, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_held_open_when_asked_for_and_empty_otherwise() {
    let node = node("10.218.12.0/24").await;
    let pod = run_pod(&node, pod_config(&node, "stdin")).await;
    // `cat` waits on an open stdin; with none (/dev/null) it ends at once.
    let mut open = container_config(&node, "open", "/bin/busybox cat; echo stdin-closed");
    open.stdin = true;
    let open = run_container(&node, &pod, open).await;
    let closed =
        run_container(&node, &pod, container_config(&node, "closed", "/bin/busybox cat; echo stdin-closed")).await;
    let done = wait_state(&node, &closed, ContainerState::ContainerExited).await;
    assert_eq!(done.exit_code, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = bulkhead_e2e::pod::container_status(&node, &open).await;
    assert_eq!(still.state, ContainerState::ContainerRunning as i32, "cat still waits on its stdin");
    remove_pod(&node, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_container_shares_its_targets_pid_namespace() {
    let node = node("10.218.19.0/24").await;
    let mut pod_cfg = pod_config(&node, "target");
    let namespaces =
        |pid: i32, target_id: &str| NamespaceOption { pid, target_id: target_id.into(), ..Default::default() };
    pod_cfg.linux.get_or_insert_with(Default::default).security_context =
        Some(LinuxSandboxSecurityContext { namespace_options: Some(namespaces(1, "")), ..Default::default() });
    let pod = run_pod(&node, pod_cfg).await;
    let mut app = container_config(&node, "app", "exec /bin/busybox sleep 4321");
    security(&mut app).namespace_options = Some(namespaces(1, ""));
    let app = run_container(&node, &pod, app).await;
    // pid TARGET (3): the debug container sees the app's processes; a CONTAINER one does not.
    let mut debug = sleeper(&node, "debug");
    security(&mut debug).namespace_options = Some(namespaces(3, &app));
    let debug = run_container(&node, &pod, debug).await;
    let (_, seen) = exec(&node, &debug, "/bin/busybox ps").await;
    assert!(seen.contains("sleep 4321"), "{seen}");
    let mut alone = sleeper(&node, "alone");
    security(&mut alone).namespace_options = Some(namespaces(1, ""));
    let alone = run_container(&node, &pod, alone).await;
    let (_, seen) = exec(&node, &alone, "/bin/busybox ps").await;
    assert!(!seen.contains("sleep 4321"), "{seen}");

    let mut rt = node.daemon.runtime().await;
    let create = |name: &str, target: &str| {
        let mut config = sleeper(&node, name);
        security(&mut config).namespace_options = Some(namespaces(3, target));
        CreateContainerRequest {
            pod_sandbox_id: pod.0.clone(),
            config: Some(config),
            sandbox_config: Some(pod.1.clone()),
        }
    };
    let err = rt.create_container(create("nowhere", "no-such-container")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains("no-such-container"), "{err:?}");
    let err = rt.create_container(create("unnamed", "")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    rt.stop_container(StopContainerRequest { container_id: app.clone(), timeout: 0 }).await.unwrap();
    let err = rt.create_container(create("late", &app)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    // TARGET is for containers: a pod asking for it is refused, naming the field.
    let mut bad = pod_config(&node, "bad-target");
    bad.linux.get_or_insert_with(Default::default).security_context =
        Some(LinuxSandboxSecurityContext { namespace_options: Some(namespaces(3, &app)), ..Default::default() });
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(bad), runtime_handler: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("namespace_options.pid"), "{err:?}");
    remove_pod(&node, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recursive_read_only_mount_covers_the_mounts_below_it() {
    let node = node("10.218.20.0/24").await;
    let pod = run_pod(&node, pod_config(&node, "rro")).await;
    // A host directory with a tmpfs mounted below it.
    let host = tempfile::tempdir().unwrap();
    let sub = host.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    nix::mount::mount(Some("tmpfs"), &sub, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(sub.clone());
    let mount = |path: &str, recursive: bool| Mount {
        container_path: path.into(),
        host_path: host.path().display().to_string(),
        readonly: true,
        recursive_read_only: recursive,
        propagation: MountPropagation::PropagationPrivate as i32,
        ..Default::default()
    };
    let mut config = sleeper(&node, "rro");
    config.mounts = vec![mount("/rro", true), mount("/ro", false)];
    let id = run_container(&node, &pod, config).await;
    let (_, out) = exec(
        &node,
        &id,
        "for d in /rro /ro; do echo x > $d/sub/f 2>/dev/null && echo $d:sub-writable || echo $d:sub-read-only; done",
    )
    .await;
    assert!(out.contains("/rro:sub-read-only"), "{out}");
    assert!(out.contains("/ro:sub-writable"), "a plain read-only bind leaves mounts below it as they are: {out}");
    remove_pod(&node, &pod.0).await;
}
