//! Pods and containers through the daemon's socket, as kubelet drives
//! them, with a busybox image from a private registry: the pod's network,
//! hostname, DNS and files seen from inside the container (ExecSync), its
//! log file, stop with the timeout, exit reasons, listing with filters, and
//! after removal nothing left on the host (the harness sweeps and fails on
//! any process, cgroup, veth, mount or namespace left).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bulkhead_e2e::cri::*;
use bulkhead_e2e::pod::{
    container_config, container_status, exec, node, pod_config, pod_status, run_container, run_pod, wait_state,
};

mod pods {
    /// Nanoseconds since the Unix epoch, as the CRI reports times.
    pub fn now_ns() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
    }
}
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_containers_as_kubelet_expects_and_leaves_nothing() {
    let node = node("10.218.1.0/24").await;
    let mut rt = node.daemon.runtime().await;
    // kubelet's evented PLEG: every event, in order, from now on.
    let mut stream = rt.get_container_events(GetEventsRequest {}).await.unwrap().into_inner();
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(Ok(event))) =
            tokio::time::timeout(Duration::from_secs(3), stream.message()).await.map(|r| r.transpose())
        {
            seen.push((event.container_id, ContainerEventType::try_from(event.container_event_type).unwrap()));
        }
        seen
    });
    let (pod_id, config) = run_pod(&node, pod_config(&node, "web-0")).await;
    // The same name again: AlreadyExists, naming the pod that holds it.
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&pod_id), "{}", err.message());

    let status = rt
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: pod_id.clone(), verbose: true })
        .await
        .unwrap()
        .into_inner();
    let pod = status.status.unwrap();
    assert_eq!(pod.state, PodSandboxState::SandboxReady as i32);
    let pod_ip = pod.network.unwrap().ip;
    assert!(pod_ip.starts_with("10.218.1."), "{pod_ip}");
    assert!(status.info.contains_key("info"));

    // A long-running container: environment, hostname, DNS, address and
    // /dev/shm seen from inside; its output in the CRI log.
    let script =
        "trap 'echo got-term' TERM; echo started; echo to-stderr >&2; while true; do /bin/busybox sleep 0.1; done";
    let create = CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(container_config(&node, "app", script)),
        sandbox_config: Some(config.clone()),
    };
    let app = rt.create_container(create.clone()).await.unwrap().into_inner().container_id;
    assert_eq!(container_status(&node, &app).await.state, ContainerState::ContainerCreated as i32);
    let err = rt.create_container(create).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{}", err.message());
    rt.start_container(StartContainerRequest { container_id: app.clone() }).await.unwrap();
    let running = wait_state(&node, &app, ContainerState::ContainerRunning).await;
    assert!(running.started_at >= running.created_at && running.started_at > 0);

    let (code, out) = exec(&node, &app, "echo $GREETING; /bin/busybox hostname; /bin/busybox cat /etc/resolv.conf; /bin/busybox ip -o addr show eth0; /bin/busybox id -u; /bin/busybox mount | /bin/busybox grep /dev/shm").await;
    assert_eq!(code, 0, "{out}");
    for expected in [
        "hello from env",
        "web-0",
        "nameserver 10.96.0.10",
        "search default.svc.cluster.local",
        "options ndots:5",
        &pod_ip,
        "\n0\n",
        "/dev/shm",
    ] {
        assert!(out.contains(expected), "{expected:?} not in {out}");
    }
    let (code, _) = exec(&node, &app, "exit 7").await;
    assert_eq!(code, 7, "ExecSync returns the command's exit code");

    // Stats, and a resource update seen in the container's cgroup.
    let (code, out) = exec(&node, &app, "/bin/busybox dd if=/dev/zero of=/written bs=1k count=64").await;
    assert_eq!(code, 0, "{out}");
    let stats = rt.container_stats(ContainerStatsRequest { container_id: app.clone() }).await.unwrap().into_inner();
    let stats = stats.stats.unwrap();
    assert!(stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert!(stats.memory.unwrap().working_set_bytes.is_some());
    assert!(stats.writable_layer.unwrap().used_bytes.unwrap().value >= 64 * 1024, "the file written counts");
    let pod_stats = rt.pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: pod_id.clone() }).await.unwrap();
    let linux = pod_stats.into_inner().stats.unwrap().linux.unwrap();
    assert_eq!(linux.network.unwrap().default_interface.unwrap().name, "eth0");
    assert_eq!(linux.containers.len(), 1);
    let listed = rt.list_container_stats(ListContainerStatsRequest { filter: None }).await.unwrap().into_inner();
    assert_eq!(listed.stats.len(), 1);
    let limit = 96 * 1024 * 1024;
    let update = UpdateContainerResourcesRequest {
        container_id: app.clone(),
        linux: Some(LinuxContainerResources { memory_limit_in_bytes: limit, ..LinuxContainerResources::default() }),
        ..UpdateContainerResourcesRequest::default()
    };
    rt.update_container_resources(update).await.unwrap();
    let (_, seen) = exec(
        &node,
        &app,
        "/bin/busybox cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null",
    )
    .await;
    assert!(seen.contains(&limit.to_string()), "the new limit inside the container: {seen}");

    let log = node.daemon.sandbox.dir.path().join("logs/web-0/app/0.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" stdout F started\n") && text.contains(" stderr F to-stderr\n"), "{text}");

    // The stop signal (SIGTERM) reaches the container, which only logs it:
    // SIGKILL follows after the timeout.
    let started = Instant::now();
    rt.stop_container(StopContainerRequest { container_id: app.clone(), timeout: 1 }).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "the timeout was honoured");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" stdout F got-term\n"), "the stop signal arrived: {text}");
    let stopped = wait_state(&node, &app, ContainerState::ContainerExited).await;
    assert_eq!((stopped.exit_code, stopped.reason.as_str()), (137, "Error"));
    assert!(stopped.finished_at >= stopped.started_at);
    rt.stop_container(StopContainerRequest { container_id: app.clone(), timeout: 1 }).await.unwrap(); // idempotent

    // A container that completes.
    let create = CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(container_config(&node, "job", "echo done")),
        sandbox_config: Some(config.clone()),
    };
    let job = rt.create_container(create).await.unwrap().into_inner().container_id;
    rt.start_container(StartContainerRequest { container_id: job.clone() }).await.unwrap();
    let done = wait_state(&node, &job, ContainerState::ContainerExited).await;
    assert_eq!((done.exit_code, done.reason.as_str()), (0, "Completed"));

    // Listing with filters.
    let by_label = ContainerFilter {
        label_selector: HashMap::from([("container".into(), "job".into())]),
        ..ContainerFilter::default()
    };
    let listed = rt.list_containers(ListContainersRequest { filter: Some(by_label) }).await.unwrap().into_inner();
    assert_eq!(listed.containers.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [job.as_str()]);
    let all = rt.list_containers(ListContainersRequest { filter: None }).await.unwrap().into_inner();
    assert_eq!(all.containers.len(), 2);
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter { id: pod_id[..12].into(), ..PodSandboxFilter::default() }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pods.items.len(), 1);

    rt.remove_container(RemoveContainerRequest { container_id: job.clone() }).await.unwrap();
    rt.remove_container(RemoveContainerRequest { container_id: job.clone() }).await.unwrap(); // idempotent
    let err =
        rt.container_status(ContainerStatusRequest { container_id: job.clone(), verbose: false }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await.unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await.unwrap();
    let pod = pod_status(&node, &pod_id).await;
    assert_eq!(pod.state, PodSandboxState::SandboxNotready as i32);
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await.unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await.unwrap();
    assert!(rt.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner().items.is_empty());
    assert!(rt.list_containers(ListContainersRequest::default()).await.unwrap().into_inner().containers.is_empty());

    use ContainerEventType::*;
    let seen = collector.await.unwrap();
    let of = |id: &str| seen.iter().filter(|(c, _)| c == id).map(|(_, e)| *e).collect::<Vec<_>>();
    assert_eq!(
        of(&pod_id),
        [ContainerCreatedEvent, ContainerStartedEvent, ContainerStoppedEvent, ContainerDeletedEvent]
    );
    assert_eq!(of(&app), [ContainerCreatedEvent, ContainerStartedEvent, ContainerStoppedEvent, ContainerDeletedEvent]);
    assert_eq!(of(&job), [ContainerCreatedEvent, ContainerStartedEvent, ContainerStoppedEvent, ContainerDeletedEvent]);
    // The harness (Daemon's drop) fails the test on any leftover.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_statuses_and_leave_nothing() {
    let node = node("10.218.2.0/24").await;
    let mut rt = node.daemon.runtime().await;
    let err = rt.run_pod_sandbox(RunPodSandboxRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("config"), "{}", err.message());
    let mut config = pod_config(&node, "bad");
    config.port_mappings =
        vec![PortMapping { protocol: 0, container_port: 80, host_port: 99999, host_ip: String::new() }];
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("port_mappings"), "{}", err.message());

    let err = rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: "nope".into() }).await.unwrap();
    let err = rt.start_container(StartContainerRequest { container_id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("nope"), "{}", err.message());

    let (pod_id, config) = run_pod(&node, pod_config(&node, "api")).await;
    // An image that is not present; a host path that does not exist.
    let mut missing_image = container_config(&node, "c1", "true");
    missing_image.image = Some(ImageSpec { image: "example.com/nothing:here".into(), ..ImageSpec::default() });
    let mut missing_path = container_config(&node, "c2", "true");
    missing_path.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: "/nonexistent/bulkhead-e2e".into(),
        ..Mount::default()
    }];
    for (bad, code, named) in [
        (missing_image, Code::NotFound, "example.com/nothing:here"),
        (missing_path, Code::InvalidArgument, "/nonexistent/bulkhead-e2e"),
    ] {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(bad),
            sandbox_config: Some(config.clone()),
        };
        let err = rt.create_container(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
        assert!(err.message().contains(named), "{}", err.message());
    }
    assert!(rt.list_containers(ListContainersRequest::default()).await.unwrap().into_inner().containers.is_empty());
    let containers_dir = node.daemon.sandbox.state.join("containers");
    assert!(std::fs::read_dir(&containers_dir).map(|d| d.count() == 0).unwrap_or(true), "nothing half-made");
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_outlive_a_daemon_kill_9_and_are_adopted_on_restart() {
    let mut node = node("10.218.3.0/24").await;
    let mut pods = Vec::new();
    for i in 0..20 {
        let pod = run_pod(&node, pod_config(&node, &format!("keep-{i}"))).await;
        // The first pod's container ends by itself while the daemon is down.
        let script = if i == 0 {
            "echo before; while [ ! -e /tmp/go ]; do /bin/busybox sleep 0.05; done; echo during; exit 42"
        } else {
            "while true; do echo tick; /bin/busybox sleep 0.2; done"
        };
        let id = run_container(&node, &pod, container_config(&node, "app", script)).await;
        pods.push((pod.0, id));
    }
    let (first_pod, first) = pods[0].clone();
    wait_state(&node, &first, ContainerState::ContainerRunning).await;
    let ip_before = pod_status(&node, &first_pod).await.network.unwrap().ip;

    node.daemon.kill9();
    // While the daemon is down the first container finishes.
    let before_exit = pods::now_ns();
    let go = node.daemon.sandbox.state.join("containers").join(&first).join("rootfs/tmp/go");
    std::fs::create_dir_all(go.parent().unwrap()).unwrap();
    std::fs::write(&go, "").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.daemon.restart().await;
    let mut rt = node.daemon.runtime().await;

    let listed = rt.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner().items;
    assert_eq!(listed.len(), 20);
    assert!(listed.iter().all(|p| p.state == PodSandboxState::SandboxReady as i32));
    let done = wait_state(&node, &first, ContainerState::ContainerExited).await;
    assert_eq!(done.exit_code, 42, "the true exit code of a container that ended during the downtime");
    assert!(done.finished_at >= before_exit, "and its true time");
    let pod = pod_status(&node, &first_pod).await;
    assert_eq!(pod.network.unwrap().ip, ip_before, "the pod keeps its address");
    let log = node.daemon.sandbox.dir.path().join("logs/keep-0/app/0.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" stdout F before\n") && text.contains(" stdout F during\n"), "no line lost: {text}");
    for (_, id) in &pods[1..] {
        assert_eq!(container_status(&node, id).await.state, ContainerState::ContainerRunning as i32);
    }
    let (code, out) = exec(&node, &pods[1].1, "echo still here").await;
    assert_eq!((code, out.as_str()), (0, "still here\n"));
    for (pod_id, _) in &pods {
        rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await.unwrap();
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_monitor_died_is_not_ready_and_still_removed_cleanly() {
    let node = node("10.218.11.0/24").await;
    let mut rt = node.daemon.runtime().await;
    let pod = run_pod(&node, pod_config(&node, "orphan")).await;
    let id = run_container(&node, &pod, container_config(&node, "app", "exec /bin/busybox sleep 1000")).await;
    let pod_id = pod.0;
    let verbose = rt
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: pod_id.clone(), verbose: true })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    let monitor = info["sandbox"]["monitor_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor), nix::sys::signal::Signal::SIGKILL).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pod = pod_status(&node, &pod_id).await;
    assert_eq!(pod.state, PodSandboxState::SandboxNotready as i32, "the monitor's death is reported");
    // Stop and Remove still work, and the harness finds nothing left (the
    // container's processes included).
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await.unwrap();
    let killed = container_status(&node, &id).await;
    assert_eq!((killed.state, killed.exit_code), (ContainerState::ContainerExited as i32, 137), "{killed:?}");
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id }).await.unwrap();
}
