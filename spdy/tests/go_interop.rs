//! Against the real thing: spdystream v0.2.0 (what Kubernetes vendors), as
//! a client talking to our server and as a server our client talks to.
//! `tests/go/interop.go` is the Go side. It needs `go` and the spdystream
//! source in GOPATH layout (Debian: `apt-get install golang-go
//! golang-github-docker-spdystream-dev`, which `scripts/deps` does);
//! without them the tests say so and pass, except under CI, where they
//! fail. `SPDYSTREAM_GOPATH` overrides `/usr/share/gocode`.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on failure, as tests do

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bulkhead_spdy::{Role, Session, Stream};
use common::within;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Skips a test whose Go side is missing; under CI, missing is a failure.
fn skip(why: &str) -> Option<PathBuf> {
    assert!(std::env::var_os("CI").is_none(), "CI must run the Go interop tests: {why}");
    eprintln!("skipping: {why}");
    None
}

/// Builds the Go peer, or says why not.
fn go_peer() -> Option<PathBuf> {
    let gopath = std::env::var("SPDYSTREAM_GOPATH").unwrap_or_else(|_| "/usr/share/gocode".into());
    if !Path::new(&gopath).join("src/github.com/moby/spdystream/connection.go").exists() {
        return skip(&format!("no spdystream source under {gopath}/src/github.com/moby/spdystream"));
    }
    let out = std::env::temp_dir().join(format!("bulkhead-spdy-interop-{}", std::process::id()));
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/interop.go");
    let status = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", &gopath)
        .status();
    match status {
        Ok(s) if s.success() => Some(out),
        Ok(s) => panic!("building the Go peer failed: {s}"),
        Err(e) => skip(&format!("cannot run go: {e}")),
    }
}

async fn serve_stream(stream: Stream) {
    match stream.header("streamtype") {
        Some("reset-me") => stream.reset(),
        _ => {
            let (mut r, mut w) = stream.split();
            tokio::io::copy(&mut r, &mut w).await.unwrap();
            w.shutdown().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdystream_client_against_our_server() {
    let Some(peer) = go_peer() else { return };
    within(120, async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut child = tokio::process::Command::new(&peer)
            .args(["client", &addr.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let (session, mut incoming) = Session::new(tcp, Role::Server);
        let first = incoming.next().await.unwrap();
        assert_eq!(first.id(), 1);
        assert_eq!(first.header("streamtype"), Some("error"));
        assert_eq!(first.header("port"), Some("8080"));
        tokio::spawn(serve_stream(first));
        let server = tokio::spawn(async move {
            let mut n = 1;
            while let Some(s) = incoming.next().await {
                n += 1;
                tokio::spawn(serve_stream(s));
            }
            n
        });
        // The server pings the Go client too.
        session.ping().await.unwrap();
        let status = child.wait().await.unwrap();
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
        assert!(status.success(), "Go client failed: {status}");
        assert_eq!(out.trim(), "client ok");
        // Its GOAWAY and close end our session.
        tokio::time::timeout(Duration::from_secs(10), session.closed()).await.unwrap();
        assert_eq!(server.await.unwrap(), 1 + 40 + 1 + 1);
    })
    .await;
    let _ = std::fs::remove_file(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_against_a_spdystream_server() {
    let Some(peer) = go_peer() else { return };
    within(120, async {
        let mut child = tokio::process::Command::new(&peer)
            .arg("server")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = lines.next_line().await.unwrap().unwrap();
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (session, mut incoming) = Session::new(tcp, Role::Client);

        // Echo, small and large.
        for (i, size) in [5usize, 100_000, 8 << 20].into_iter().enumerate() {
            let s = session.open(&[("streamType", "data"), ("requestID", &i.to_string())]).await.unwrap();
            let (mut r, mut w) = s.split();
            let payload: Vec<u8> = (0..size).map(|k| (k * 7 + i) as u8).collect();
            let expect = payload.clone();
            let writer = tokio::spawn(async move {
                w.write_all(&payload).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.unwrap();
            writer.await.unwrap();
            assert!(back == expect, "echo of {size} bytes differs");
        }

        // Many at once.
        let mut tasks = Vec::new();
        for i in 0..30 {
            let session = session.clone();
            tasks.push(tokio::spawn(async move {
                let mut s = session.open(&[("streamtype", "data"), ("n", &i.to_string())]).await.unwrap();
                let msg = format!("message {i}").repeat(1000);
                s.write_all(msg.as_bytes()).await.unwrap();
                s.shutdown().await.unwrap();
                let mut back = String::new();
                s.read_to_string(&mut back).await.unwrap();
                assert_eq!(back, msg);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }

        // Pings both ways.
        session.ping().await.unwrap();
        let mut p = session.open(&[("streamtype", "ping")]).await.unwrap();
        let mut pong = String::new();
        p.read_to_string(&mut pong).await.unwrap();
        assert_eq!(pong, "pong");

        // The Go server opens a stream to us.
        let mut rev = session.open(&[("streamtype", "reverse")]).await.unwrap();
        let mut from_go = incoming.next().await.unwrap();
        assert_eq!(from_go.id(), 2);
        assert_eq!(from_go.header("from"), Some("go"));
        let mut got = String::new();
        from_go.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "from the go server");
        from_go.write_all(b"thanks").await.unwrap();
        from_go.shutdown().await.unwrap();
        let mut rest = Vec::new();
        rev.read_to_end(&mut rest).await.unwrap();
        drop(rev);

        session.close().await;
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "Go server failed: {status}");
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("server ok"));
    })
    .await;
    let _ = std::fs::remove_file(peer);
}
