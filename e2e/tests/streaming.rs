//! Exec, Attach and PortForward through the streaming server, driven by
//! our own client speaking SPDY/3.1 and WebSocket as kubectl and crictl do:
//! terminals with resizes, separate stdout and stderr, stdin's end, exit
//! codes in the v4 status, 100 MiB through exec with the daemon's memory
//! bounded, attach to running containers, port forwarding to httpd and nc
//! with 20 connections at once, bad, used and expired tokens, and the
//! idle timeout closing silent sessions.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use bulkhead_e2e::cri::*;
use bulkhead_e2e::pod::{Node, container_config, node, pod_config, remove_pod, run_container, run_pod, wait_state};
use bulkhead_e2e::stream::{
    PortForward, RemoteCommand, Streams, Transport, read_all, upgrade_request, ws_channels, ws_connect,
};
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const V4: &[&str] = &["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
const V5: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
const LONG: Duration = Duration::from_secs(30);

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script.into()]
}

async fn exec_url(node: &Node, id: &str, cmd: Vec<String>, streams: Streams) -> String {
    let req = ExecRequest {
        container_id: id.into(),
        cmd,
        tty: streams.tty,
        stdin: streams.stdin,
        stdout: streams.stdout,
        stderr: streams.stderr,
    };
    node.daemon.runtime().await.exec(req).await.unwrap().into_inner().url
}

async fn attach_url(node: &Node, id: &str, streams: Streams) -> String {
    let req = AttachRequest {
        container_id: id.into(),
        stdin: streams.stdin,
        tty: streams.tty,
        stdout: streams.stdout,
        stderr: streams.stderr,
    };
    node.daemon.runtime().await.attach(req).await.unwrap().into_inner().url
}

async fn port_forward_url(node: &Node, pod_id: &str, ports: Vec<i32>) -> String {
    let req = PortForwardRequest { pod_sandbox_id: pod_id.into(), port: ports };
    node.daemon.runtime().await.port_forward(req).await.unwrap().into_inner().url
}

fn pipes() -> Streams {
    Streams { stdin: true, stdout: true, stderr: true, tty: false }
}

fn terminal() -> Streams {
    Streams { stdin: true, stdout: true, stderr: false, tty: true }
}

/// The pid an exec'd shell wrote to `path` in container `id` (waits up to 5 s for it).
async fn pid_in_file(node: &Node, id: &str, path: &str) -> String {
    for _ in 0..100 {
        let (_, out) = bulkhead_e2e::pod::exec(node, id, &format!("/bin/busybox cat {path} 2>/dev/null")).await;
        if !out.trim().is_empty() {
            return out.trim().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no pid in {path} of container {id}: the exec'd process did not start");
}

/// Whether process `pid` of container `id` is gone within 5 s.
async fn process_ends(node: &Node, id: &str, pid: &str) -> bool {
    for _ in 0..100 {
        let (code, _) = bulkhead_e2e::pod::exec(node, id, &format!("kill -0 {pid}")).await;
        if code != 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_spdy_and_websocket() {
    let node = node("10.218.13.0/24").await;
    let pod = run_pod(&node, pod_config(&node, "exec")).await;
    let id = run_container(&node, &pod, container_config(&node, "sleeper", "exec /bin/busybox sleep 1000")).await;

    for (transport, protocols) in [(Transport::Spdy, V4), (Transport::WebSocket, V5)] {
        // Separate stdout and stderr; the exit code in the v4 status.
        let url = exec_url(&node, &id, sh("echo out; echo err >&2; exit 3"), pipes()).await;
        let mut session = RemoteCommand::connect(&url, transport, pipes(), protocols).await;
        session.close_stdin().await;
        let done = session.finish(LONG).await;
        assert_eq!(String::from_utf8_lossy(&done.stdout), "out\n", "{transport:?}");
        assert_eq!(String::from_utf8_lossy(&done.stderr), "err\n", "{transport:?}");
        assert_eq!(done.exit_code(), Some(3), "{transport:?}: {}", done.status);
        assert!(done.status.contains("NonZeroExitCode"), "{}", done.status);

        // stdin reaches the process; its end is end of file.
        let url = exec_url(&node, &id, sh("/bin/busybox cat; echo done"), pipes()).await;
        let mut session = RemoteCommand::connect(&url, transport, pipes(), protocols).await;
        session.write_stdin(b"line one\nline two\n").await;
        assert!(session.stdout_until("line two", LONG).await.contains("line one"));
        session.close_stdin().await;
        let done = session.finish(LONG).await;
        assert_eq!(String::from_utf8_lossy(&done.stdout), "done\n", "{transport:?}");
        assert_eq!(done.exit_code(), Some(0), "{transport:?}: {}", done.status);

        // A terminal: output echoed, `stty size` following a resize.
        let url = exec_url(&node, &id, vec!["/bin/sh".into()], terminal()).await;
        let mut session = RemoteCommand::connect(&url, transport, terminal(), protocols).await;
        session.resize(100, 30).await;
        session.write_stdin(b"/bin/busybox stty size; echo tty-$((40+2))\n").await;
        let out = session.stdout_until("tty-42", LONG).await;
        assert!(out.contains("30 100"), "{transport:?}: {out:?}");
        session.resize(120, 40).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        session.write_stdin(b"/bin/busybox stty size; exit 7\n").await;
        let done = session.finish(LONG).await;
        assert!(
            String::from_utf8_lossy(&done.stdout).contains("40 120"),
            "{:?}",
            String::from_utf8_lossy(&done.stdout)
        );
        assert_eq!(done.exit_code(), Some(7), "{transport:?}: {}", done.status);
    }

    // Older protocols: v3 and v2 report failures as text, v4 over base64 WebSocket.
    let url = exec_url(&node, &id, sh("exit 5"), Streams { stdout: true, ..Streams::default() }).await;
    let session = RemoteCommand::connect(
        &url,
        Transport::Spdy,
        Streams { stdout: true, ..Streams::default() },
        &["v3.channel.k8s.io"],
    )
    .await;
    assert_eq!(session.protocol, "v3.channel.k8s.io");
    let done = session.finish(LONG).await;
    assert!(done.status.contains("non-zero exit code") && done.status.contains('5'), "{}", done.status);
    let url = exec_url(&node, &id, sh("echo b64"), Streams { stdout: true, ..Streams::default() }).await;
    let session = RemoteCommand::connect(
        &url,
        Transport::WebSocket,
        Streams { stdout: true, ..Streams::default() },
        &["v4.base64.channel.k8s.io"],
    )
    .await;
    assert_eq!(session.protocol, "v4.base64.channel.k8s.io");
    let done = session.finish(LONG).await;
    assert_eq!(String::from_utf8_lossy(&done.stdout), "b64\n");
    assert_eq!(done.exit_code(), Some(0));

    // A client that leaves kills its process, and only it.
    let url = exec_url(&node, &id, sh("echo $$ > /left; exec /bin/busybox sleep 600"), pipes()).await;
    let session = RemoteCommand::connect(&url, Transport::Spdy, pipes(), V4).await;
    let pid = pid_in_file(&node, &id, "/left").await;
    session.disconnect();
    assert!(process_ends(&node, &id, &pid).await, "the exec'd process outlived its client");
    wait_state(&node, &id, ContainerState::ContainerRunning).await;

    remove_pod(&node, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_mebibytes_through_exec_with_bounded_memory() {
    let node = node("10.218.14.0/24").await;
    let pod = run_pod(&node, pod_config(&node, "bulk")).await;
    let id = run_container(&node, &pod, container_config(&node, "sleeper", "exec /bin/busybox sleep 1000")).await;
    let pattern = b"0123456789abcde\n";
    const TOTAL: u64 = 100 * 1024 * 1024;
    let before = vm_hwm_kib(node.daemon.pid());
    for (transport, protocols) in [(Transport::Spdy, V4), (Transport::WebSocket, V5)] {
        let streams = Streams { stdout: true, ..Streams::default() };
        let script = format!("/bin/busybox yes 0123456789abcde | /bin/busybox head -c {TOTAL}");
        let url = exec_url(&node, &id, sh(&script), streams).await;
        let session = RemoteCommand::connect(&url, transport, streams, protocols).await;
        let (count, status) = session.count_stdout(Duration::from_secs(120), |i| pattern[(i % 16) as usize]).await;
        assert_eq!(count, TOTAL, "{transport:?}");
        assert!(status.contains("Success"), "{status}");
    }
    let grown = vm_hwm_kib(node.daemon.pid()).saturating_sub(before);
    assert!(grown < 32 * 1024, "the daemon's peak memory grew {grown} KiB moving 200 MiB");
    remove_pod(&node, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_to_running_containers() {
    let node = node("10.218.15.0/24").await;
    let pod = run_pod(&node, pod_config(&node, "attach")).await;

    // Pipes: two attachers at once both see the output, which the log keeps too.
    let mut config = container_config(&node, "reader", "while read l; do echo \"got $l\"; echo \"err $l\" >&2; done");
    config.stdin = true;
    let id = run_container(&node, &pod, config).await;
    let url = attach_url(&node, &id, pipes()).await;
    let mut first = RemoteCommand::connect(&url, Transport::Spdy, pipes(), V4).await;
    let url = attach_url(&node, &id, Streams { stdout: true, ..Streams::default() }).await;
    let mut second =
        RemoteCommand::connect(&url, Transport::WebSocket, Streams { stdout: true, ..Streams::default() }, V5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.write_stdin(b"hello\n").await;
    assert!(first.stdout_until("got hello", LONG).await.contains("got hello"));
    let seen = second.stdout_until("got hello", LONG).await;
    if !seen.contains("got hello") {
        let done = second.finish(LONG).await;
        panic!("the second attacher saw {seen:?}, then {done:?}");
    }
    // Detaching leaves the container running.
    drop(first);
    drop(second);
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_state(&node, &id, ContainerState::ContainerRunning).await;
    let log = node.daemon.sandbox.dir.path().join("logs/attach/reader/0.log");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("stdout F got hello") && text.contains("stderr F err hello"), "{text}");

    // A later attacher writes too; the container's exit ends the session with success.
    let url = attach_url(&node, &id, pipes()).await;
    let mut again = RemoteCommand::connect(&url, Transport::WebSocket, pipes(), V5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    again.write_stdin(b"again\n").await;
    assert!(again.stdout_until("got again", LONG).await.contains("got again"));
    node.daemon
        .runtime()
        .await
        .stop_container(StopContainerRequest { container_id: id.clone(), timeout: 0 })
        .await
        .unwrap();
    let done = again.finish(LONG).await;
    assert!(done.status.contains("Success"), "{}", done.status);

    // stdin_once: the first attacher's end of stdin is the container's.
    let mut config = container_config(&node, "once", "/bin/busybox cat; echo finished");
    config.stdin = true;
    config.stdin_once = true;
    let once = run_container(&node, &pod, config).await;
    let url = attach_url(&node, &once, pipes()).await;
    let mut session = RemoteCommand::connect(&url, Transport::Spdy, pipes(), V4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    session.write_stdin(b"only\n").await;
    assert!(session.stdout_until("only", LONG).await.contains("only"));
    session.close_stdin().await;
    let done = session.finish(LONG).await;
    assert!(String::from_utf8_lossy(&done.stdout).contains("finished"), "{:?}", done);
    let status = wait_state(&node, &once, ContainerState::ContainerExited).await;
    assert_eq!(status.exit_code, 0);

    // A terminal: an interactive shell, resized.
    let mut config = container_config(&node, "shell", "exec /bin/sh");
    config.stdin = true;
    config.tty = true;
    let shell = run_container(&node, &pod, config).await;
    let url = attach_url(&node, &shell, terminal()).await;
    let mut session = RemoteCommand::connect(&url, Transport::WebSocket, terminal(), V5).await;
    session.resize(90, 33).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    session.write_stdin(b"/bin/busybox stty size; echo at-$((6*7))\n").await;
    let out = session.stdout_until("at-42", LONG).await;
    assert!(out.contains("33 90"), "{out:?}");
    drop(session);
    wait_state(&node, &shell, ContainerState::ContainerRunning).await;

    // Attach with stdin to a container made without it is refused.
    let plain = run_container(&node, &pod, container_config(&node, "plain", "exec /bin/busybox sleep 1000")).await;
    let err = node
        .daemon
        .runtime()
        .await
        .attach(AttachRequest { container_id: plain, stdin: true, stdout: true, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    remove_pod(&node, &pod.0).await;
}

async fn http_get(stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin)) -> String {
    stream.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(LONG, stream.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_into_the_pod() {
    let node = node("10.218.16.0/24").await;
    let pod = run_pod(&node, pod_config(&node, "pf")).await;
    let script = "/bin/busybox mkdir -p /tmp/www && echo hello-from-httpd > /tmp/www/index.html && \
                  /bin/busybox httpd -p 127.0.0.1:8080 -h /tmp/www && \
                  exec /bin/busybox nc -ll -p 9000 -e /bin/busybox cat";
    let id = run_container(&node, &pod, container_config(&node, "servers", script)).await;
    // httpd listens on the pod's loopback only: nothing from outside the pod reaches it.
    for _ in 0..100 {
        let (code, _) =
            bulkhead_e2e::pod::exec(&node, &id, "/bin/busybox netstat -ltn | /bin/busybox grep -q ':9000'").await;
        if code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, listening) = bulkhead_e2e::pod::exec(&node, &id, "/bin/busybox netstat -ltn").await;
    assert!(listening.contains("127.0.0.1:8080") && listening.contains(":9000"), "{listening}");

    // SPDY: 20 connections at once over one session.
    let url = port_forward_url(&node, &pod.0, vec![8080]).await;
    let mut forward = PortForward::connect(&url).await;
    let mut connections = Vec::new();
    for _ in 0..20 {
        connections.push(forward.open(8080).await);
    }
    let gets: Vec<_> = connections
        .into_iter()
        .map(|(mut data, mut error)| {
            tokio::spawn(async move {
                let response = http_get(&mut data).await;
                // The client closes its side; the server then ends the error stream, empty.
                drop(data);
                (response, read_all(&mut error, LONG).await)
            })
        })
        .collect();
    for get in gets {
        let (response, error) = get.await.unwrap();
        assert!(error.is_empty(), "{}", String::from_utf8_lossy(&error));
        assert!(response.contains("200 OK") && response.contains("hello-from-httpd"), "{response}");
    }
    // nc echoes 4 MiB back, both directions closed cleanly.
    let (data, _error) = forward.open(9000).await;
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(data);
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    let mut buf = vec![0u8; 65536];
    while echoed.len() < payload.len() {
        let n = tokio::time::timeout(LONG, rd.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "end after {} bytes", echoed.len());
        echoed.extend_from_slice(&buf[..n]);
    }
    writer.await.unwrap();
    assert!(echoed == payload, "echo differs");
    drop(rd);
    // Nothing listens: the error stream says so.
    let (mut data, mut error) = forward.open(9999).await;
    let message = String::from_utf8_lossy(&read_all(&mut error, LONG).await).into_owned();
    assert!(message.contains("9999") && message.to_lowercase().contains("refused"), "{message}");
    assert!(read_all(&mut data, LONG).await.is_empty());
    forward.close().await;

    // WebSocket: one port per channel pair, each opening with its port.
    let url = port_forward_url(&node, &pod.0, vec![8080]).await;
    let (mut ws, protocol) = ws_connect(&format!("{url}?port=8080"), &["v4.channel.k8s.io"]).await;
    assert_eq!(protocol, "v4.channel.k8s.io");
    let mut request = vec![0u8];
    request.extend_from_slice(b"GET /index.html HTTP/1.0\r\n\r\n");
    ws.send(Message::Binary(request.into())).await.unwrap();
    let channels = ws_channels(&mut ws, Duration::from_secs(3)).await;
    let data = channels.get(&0).cloned().unwrap_or_default();
    assert_eq!(&data[..2], &8080u16.to_le_bytes(), "the data channel opens with the port");
    assert!(String::from_utf8_lossy(&data[2..]).contains("hello-from-httpd"), "{:?}", String::from_utf8_lossy(&data));
    assert_eq!(channels.get(&1).map(|e| e[..2].to_vec()), Some(8080u16.to_le_bytes().to_vec()));

    remove_pod(&node, &pod.0).await;
    // A removed pod's port cannot be forwarded.
    let err = node
        .daemon
        .runtime()
        .await
        .port_forward(PortForwardRequest { pod_sandbox_id: pod.0.clone(), port: vec![80] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_single_use_and_bad_requests_are_refused() {
    let node = node("10.218.17.0/24").await;
    let pod = run_pod(&node, pod_config(&node, "tokens")).await;
    let id = run_container(&node, &pod, container_config(&node, "sleeper", "exec /bin/busybox sleep 1000")).await;
    let streams = Streams { stdout: true, ..Streams::default() };
    let spdy = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", "v4.channel.k8s.io")];

    let url = exec_url(&node, &id, sh("echo once"), streams).await;
    let base = url.rsplit_once("/exec/").unwrap().0.to_owned();
    // A made-up token, a token of another kind.
    assert_eq!(upgrade_request(&format!("{base}/exec/AAAAAAAAAAAAAAAAAAAAAA"), &spdy).await.status, 404);
    let status = upgrade_request(&url.replace("/exec/", "/attach/"), &spdy).await.status;
    assert_eq!(status, 404, "a token is for its own kind only (and is used up)");
    let url = exec_url(&node, &id, sh("echo once"), streams).await;
    let session = RemoteCommand::connect(&url, Transport::Spdy, streams, V4).await;
    assert_eq!(String::from_utf8_lossy(&session.finish(LONG).await.stdout), "once\n");
    assert_eq!(upgrade_request(&url, &spdy).await.status, 404, "a used token");
    // No upgrade, or a protocol we do not speak.
    let url = exec_url(&node, &id, sh("true"), streams).await;
    let refused = upgrade_request(&url, &[]).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let url = exec_url(&node, &id, sh("true"), streams).await;
    let refused = upgrade_request(
        &url,
        &[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", "v9.channel.k8s.io")],
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.headers.iter().any(|(n, v)| n == "x-accepted-stream-protocol-versions" && v == "v4.channel.k8s.io")
    );

    // Bad requests at the RPC.
    let mut rt = node.daemon.runtime().await;
    let err = rt
        .exec(ExecRequest { container_id: id.clone(), cmd: vec![], stdout: true, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("cmd"), "{err:?}");
    let err =
        rt.exec(ExecRequest { container_id: id.clone(), cmd: sh("true"), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "no stream asked for");
    let err = rt
        .exec(ExecRequest { container_id: id.clone(), cmd: sh("true"), tty: true, stderr: true, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "tty with stderr");
    let err = rt
        .exec(ExecRequest { container_id: "nope".into(), cmd: sh("true"), stdout: true, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err =
        rt.port_forward(PortForwardRequest { pod_sandbox_id: pod.0.clone(), port: vec![70000] }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // A token left unused past its minute is refused.
    let late = exec_url(&node, &id, sh("echo late"), streams).await;

    // Exec into a stopped container: FailedPrecondition.
    rt.stop_container(StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.unwrap();
    let err = rt
        .exec(ExecRequest { container_id: id.clone(), cmd: sh("true"), stdout: true, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let err =
        rt.attach(AttachRequest { container_id: id.clone(), stdout: true, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(upgrade_request(&late, &spdy).await.status, 404, "an expired token");
    remove_pod(&node, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streaming_server_speaks_tls_when_configured() {
    let certs = tempfile::tempdir().unwrap();
    bulkhead_e2e::registry::make_server_certificate(certs.path());
    let extra = format!(
        "\n[streaming]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        certs.path().join("tls.crt").display(),
        certs.path().join("tls.key").display()
    );
    let node = bulkhead_e2e::pod::node_with("10.218.18.0/24", &extra).await;
    let pod = run_pod(&node, pod_config(&node, "tls")).await;
    let id = run_container(&node, &pod, container_config(&node, "sleeper", "exec /bin/busybox sleep 1000")).await;
    let streams = Streams { stdout: true, ..Streams::default() };
    let url = exec_url(&node, &id, sh("echo over-tls"), streams).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let session = RemoteCommand::connect_tls(&url, &certs.path().join("ca.crt"), streams, V4).await;
    let done = session.finish(LONG).await;
    assert_eq!(String::from_utf8_lossy(&done.stdout), "over-tls\n");
    assert_eq!(done.exit_code(), Some(0), "{}", done.status);
    remove_pod(&node, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sessions_are_closed_after_the_idle_timeout() {
    let node = bulkhead_e2e::pod::node_with("10.218.21.0/24", "\n[streaming]\nstream_idle_timeout_seconds = 2\n").await;
    let pod = run_pod(&node, pod_config(&node, "idle")).await;
    let script = "/bin/busybox nc -ll -p 9000 -e /bin/busybox cat & exec /bin/busybox sleep 1000";
    let id = run_container(&node, &pod, container_config(&node, "sleeper", script)).await;

    for (transport, protocols) in [(Transport::Spdy, V4), (Transport::WebSocket, V5)] {
        // Traffic every half second keeps a session open well past the timeout.
        let url = exec_url(&node, &id, sh("/bin/busybox cat"), pipes()).await;
        let mut session = RemoteCommand::connect(&url, transport, pipes(), protocols).await;
        let started = std::time::Instant::now();
        for i in 0..10 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            session.write_stdin(format!("tick-{i}\n").as_bytes()).await;
            let out = session.stdout_until(&format!("tick-{i}"), LONG).await;
            assert!(
                out.contains(&format!("tick-{i}")),
                "{transport:?}: the session ended after {:?}",
                started.elapsed()
            );
        }
        session.close_stdin().await;
        let done = session.finish(LONG).await;
        assert_eq!(done.exit_code(), Some(0), "{transport:?}: {}", done.status);

        // A silent one is closed by the server, and its process killed.
        let url = exec_url(&node, &id, sh("echo $$ > /idle; exec /bin/busybox sleep 600"), pipes()).await;
        let session = RemoteCommand::connect(&url, transport, pipes(), protocols).await;
        let started = std::time::Instant::now();
        let pid = pid_in_file(&node, &id, "/idle").await;
        session.finish(LONG).await;
        let silent = started.elapsed();
        assert!(silent >= Duration::from_millis(1900) && silent < Duration::from_secs(10), "{transport:?}: {silent:?}");
        assert!(process_ends(&node, &id, &pid).await, "{transport:?}: the exec'd process outlived its idle session");
        bulkhead_e2e::pod::exec(&node, &id, "/bin/busybox rm -f /idle").await;
    }

    // Port-forward sessions with nothing moving are closed too: SPDY, and a
    // WebSocket connected to a listener that says nothing.
    let url = port_forward_url(&node, &pod.0, vec![]).await;
    let forward = PortForward::connect(&url).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(LONG, forward.closed()).await.expect("the idle port-forward session was not closed");
    let silent = started.elapsed();
    assert!(silent >= Duration::from_millis(1900) && silent < Duration::from_secs(10), "port-forward: {silent:?}");
    let url = port_forward_url(&node, &pod.0, vec![9000]).await;
    let (mut ws, _) = ws_connect(&format!("{url}?port=9000"), &["v4.channel.k8s.io"]).await;
    let started = std::time::Instant::now();
    let drained = async { while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {} };
    tokio::time::timeout(LONG, drained).await.expect("the idle port-forward WebSocket was not closed");
    let silent = started.elapsed();
    assert!(silent >= Duration::from_millis(1900) && silent < Duration::from_secs(10), "WebSocket: {silent:?}");

    wait_state(&node, &id, ContainerState::ContainerRunning).await;
    remove_pod(&node, &pod.0).await;
}
