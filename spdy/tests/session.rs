//! Sessions talking to sessions, over `tokio::io::duplex` and TCP
//! loopback: streams both ways, half-close, reset, ping, GOAWAY, many
//! streams at once, a large transfer in bounded memory.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on failure, as tests do

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bulkhead_spdy::{Error, Incoming, Role, RstStatus, Session, Stream};
use common::{Pattern, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pair() -> (Session, Incoming, Session, Incoming) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (client, client_in) = Session::new(a, Role::Client);
    let (server, server_in) = Session::new(b, Role::Server);
    (client, client_in, server, server_in)
}

/// Accepts streams and echoes each until the peer's FIN, then FINs.
fn spawn_echo(mut incoming: Incoming) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(stream) = incoming.next().await {
            tokio::spawn(echo(stream));
        }
    })
}

async fn echo(stream: Stream) {
    let (mut r, mut w) = stream.split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

#[tokio::test]
async fn open_echo_and_half_close() {
    within(20, async {
        let (client, _ci, server, mut si) = pair();
        let srv = tokio::spawn(async move {
            let mut s = si.next().await.unwrap();
            assert_eq!(s.id(), 1);
            assert_eq!(s.header("streamtype"), Some("stdin"));
            assert_eq!(s.header("StreamType"), Some("stdin"));
            assert_eq!(s.header("port"), Some("80"));
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(&got).await.unwrap();
            s.write_all(b" back").await.unwrap();
            s.shutdown().await.unwrap();
            (server, si)
        });
        let mut s = client.open(&[("streamType", "stdin"), ("Port", "80")]).await.unwrap();
        assert_eq!(s.id(), 1);
        assert_eq!(s.headers(), &[("streamtype".into(), "stdin".into()), ("port".into(), "80".into())]);
        s.write_all(b"hello").await.unwrap();
        s.shutdown().await.unwrap();
        // A half-closed stream cannot be written, but still reads.
        let e = s.write_all(b"more").await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"hello back");
        // After EOF reads keep returning 0.
        assert_eq!(s.read(&mut [0; 8]).await.unwrap(), 0);
        let (_server, _si) = srv.await.unwrap();
        let second = client.open(&[("streamtype", "x")]).await;
        assert_eq!(second.unwrap().id(), 3, "client stream ids are odd and increase");
    })
    .await;
}

#[tokio::test]
async fn the_server_opens_streams_too() {
    within(20, async {
        let (_client, ci, server, _si) = pair();
        spawn_echo(ci);
        for (n, want_id) in [(0u8, 2u32), (1, 4), (2, 6)] {
            let mut s = server.open(&[("n", &n.to_string())]).await.unwrap();
            assert_eq!(s.id(), want_id);
            s.write_all(&[n; 3]).await.unwrap();
            s.shutdown().await.unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, [n; 3]);
        }
    })
    .await;
}

#[tokio::test]
async fn each_direction_closes_on_its_own() {
    within(20, async {
        let (client, _ci, _server, mut si) = pair();
        let mut c = client.open(&[]).await.unwrap();
        let mut s = si.next().await.unwrap();
        // The server finishes first; the client can still send.
        s.write_all(b"from server").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"from server");
        c.write_all(b"from client").await.unwrap();
        c.flush().await.unwrap();
        let mut buf = [0u8; 11];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"from client");
        c.shutdown().await.unwrap();
        assert_eq!(s.read(&mut buf).await.unwrap(), 0);
        // Shutting down twice is fine.
        c.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn reset_ends_both_directions() {
    within(20, async {
        let (client, _ci, server, mut si) = pair();
        let mut c = client.open(&[]).await.unwrap();
        let mut s = si.next().await.unwrap();
        c.write_all(b"before reset").await.unwrap();
        c.flush().await.unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        c.reset();
        // The peer's reads end, its writes fail with ConnectionReset.
        assert_eq!(s.read(&mut buf).await.unwrap(), 0);
        let mut err = None;
        for _ in 0..100 {
            match s.write_all(b"x").await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(err.unwrap().kind(), std::io::ErrorKind::ConnectionReset);
        // Our own side: reads end, writes fail.
        assert_eq!(c.read(&mut buf).await.unwrap(), 0);
        assert_eq!(c.write_all(b"x").await.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
        // The session is unharmed.
        client.ping().await.unwrap();
        server.ping().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_refused_stream_fails_open() {
    within(20, async {
        let (client, _ci, _server, si) = pair();
        drop(si);
        match client.open(&[("a", "b")]).await {
            Err(Error::Reset { stream_id: 1, status }) => assert_eq!(status, RstStatus::REFUSED_STREAM),
            other => panic!("{other:?}"),
        }
        client.ping().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn ping_both_ways() {
    within(20, async {
        let (client, _ci, server, _si) = pair();
        for _ in 0..5 {
            client.ping().await.unwrap();
            server.ping().await.unwrap();
        }
        let pings: Vec<_> = (0..20)
            .map(|_| {
                let c = client.clone();
                async move { c.ping().await }
            })
            .collect();
        for p in futures_join(pings).await {
            p.unwrap();
        }
    })
    .await;
}

async fn futures_join<F: std::future::Future + Send + 'static>(fs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn close_ends_the_session_on_both_sides() {
    within(20, async {
        let (client, _ci, server, mut si) = pair();
        let mut c = client.open(&[]).await.unwrap();
        let mut s = si.next().await.unwrap();
        c.write_all(b"last words").await.unwrap();
        client.close().await;
        assert!(client.is_closed());
        assert!(matches!(client.end_reason(), Some(Error::Closed)));
        // Data written before close arrived; then the session ended.
        let mut buf = [0u8; 10];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"last words");
        server.closed().await;
        assert!(si.next().await.is_none());
        assert!(s.read(&mut buf).await.is_err(), "the stream was cut, not finished");
        assert!(matches!(client.open(&[]).await, Err(Error::Closed)));
        assert!(server.open(&[]).await.is_err());
        assert!(client.ping().await.is_err());
        assert_eq!(c.write_all(b"x").await.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_session_ends_after_its_idle_timeout() {
    let (client, _ci, server, mut si) = pair();
    server.set_idle_timeout(Duration::from_secs(2));
    let mut c = client.open(&[]).await.unwrap();
    let mut s = si.next().await.unwrap();
    // A byte each second keeps it open past the timeout.
    let t0 = tokio::time::Instant::now();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.unwrap();
    }
    assert!(!server.is_closed());
    // Then nothing: it ends two seconds after the last frame.
    server.closed().await;
    let quiet = t0.elapsed();
    assert!(quiet >= Duration::from_secs(7) && quiet < Duration::from_millis(7500), "{quiet:?}");
    assert!(matches!(server.end_reason(), Some(Error::IdleTimeout(t)) if t == Duration::from_secs(2)));
    // The client sees the connection go, and its stream cut.
    client.closed().await;
    let mut byte = [0u8; 1];
    assert!(c.read(&mut byte).await.is_err());
}

#[tokio::test]
async fn dropping_every_handle_closes_the_session() {
    within(20, async {
        let (client, ci, server, mut si) = pair();
        let mut c = client.open(&[]).await.unwrap();
        c.write_all(b"bye").await.unwrap();
        drop(c);
        drop(ci);
        drop(client);
        let mut s = si.next().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        server.closed().await;
    })
    .await;
}

#[tokio::test]
async fn a_dropped_open_cancels_its_stream() {
    within(20, async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (client, _ci) = Session::new(a, Role::Client);
        // A peer that never answers SYN_STREAM.
        let mut raw = common::RawPeer::new(b);
        let open = client.open(&[("x", "y")]);
        assert!(tokio::time::timeout(Duration::from_millis(100), open).await.is_err());
        assert!(matches!(raw.recv().await, Some(bulkhead_spdy::frame::Frame::SynStream { stream_id: 1, .. })));
        match raw.recv().await {
            Some(bulkhead_spdy::frame::Frame::RstStream { stream_id: 1, status }) => {
                assert_eq!(status, RstStatus::CANCEL)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(client.stats().streams, 0);
    })
    .await;
}

async fn many_streams(client: Session, n: usize, size: usize) {
    let pattern = Arc::new(Pattern::new());
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = client.clone();
        let pattern = pattern.clone();
        tasks.push(tokio::spawn(async move {
            let s = client.open(&[("streamtype", "data"), ("requestid", &i.to_string())]).await.unwrap();
            let (mut r, mut w) = s.split();
            let offset = i as u64 * 977;
            let p2 = pattern.clone();
            let writer = tokio::spawn(async move {
                let mut buf = vec![0u8; size];
                p2.fill(&mut buf, offset);
                w.write_all(&buf).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.unwrap();
            writer.await.unwrap();
            assert_eq!(back.len(), size);
            assert!(pattern.check(&back, offset), "stream {i} corrupted");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_streams_over_duplex() {
    within(60, async {
        let (client, _ci, _server, si) = pair();
        spawn_echo(si);
        many_streams(client.clone(), 50, 200 * 1024).await;
        assert_eq!(client.stats().streams, 0, "finished streams are forgotten");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_connections_of_two_streams_over_tcp() {
    within(60, async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (_session, incoming) = Session::new(tcp, Role::Server);
                spawn_echo(incoming);
            }
        });
        let mut conns = Vec::new();
        for _ in 0..20 {
            conns.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (client, _ci) = Session::new(tcp, Role::Client);
                many_streams(client.clone(), 2, 64 * 1024).await;
                client.ping().await.unwrap();
                client.close().await;
            }));
        }
        for c in conns {
            c.await.unwrap();
        }
    })
    .await;
}

/// 200 MiB one way over TCP while the reader checks every byte; the
/// session's buffers stay at their bounds and the process does not grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mib_over_tcp_in_bounded_memory() {
    const TOTAL: u64 = 200 * 1024 * 1024;
    within(240, async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pattern = Arc::new(Pattern::new());
        let received = Arc::new(AtomicU64::new(0));
        let p = pattern.clone();
        let rcv = received.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (session, mut incoming) = Session::new(tcp, Role::Server);
            let mut s = incoming.next().await.unwrap();
            // A slow start: the sender must stall, not buffer.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let stalled = session.stats();
            let mut buf = vec![0u8; 48 * 1024];
            let mut off = 0u64;
            let mut max_buffered = stalled.recv_buffered;
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                assert!(p.check(&buf[..n], off), "bytes out of order at {off}");
                off += n as u64;
                rcv.store(off, Ordering::Relaxed);
                if off % (8 << 20) < n as u64 {
                    max_buffered = max_buffered.max(session.stats().recv_buffered);
                }
            }
            s.write_all(b"ok").await.unwrap();
            s.shutdown().await.unwrap();
            (off, stalled, max_buffered)
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, _ci) = Session::new(tcp, Role::Client);
        let mut s = client.open(&[("streamtype", "data")]).await.unwrap();
        let rss_before = common::rss();
        let mut chunk = vec![0u8; 256 * 1024];
        let mut sent = 0u64;
        let mut max_send_buffered = 0;
        while sent < TOTAL {
            let n = chunk.len().min((TOTAL - sent) as usize);
            pattern.fill(&mut chunk[..n], sent);
            s.write_all(&chunk[..n]).await.unwrap();
            sent += n as u64;
            max_send_buffered = max_send_buffered.max(client.stats().send_buffered);
            // However far the reader lags, the writer is never more than
            // the buffers on the way ahead of it (socket buffers included).
            let lag = sent - received.load(Ordering::Relaxed);
            assert!(lag < 48 << 20, "writer {lag} bytes ahead of the reader");
        }
        s.shutdown().await.unwrap();
        let mut ok = Vec::new();
        s.read_to_end(&mut ok).await.unwrap();
        assert_eq!(ok, b"ok");
        let rss_after = common::rss();
        let (got, stalled, max_buffered) = server.await.unwrap();
        assert_eq!(got, TOTAL);
        assert!(stalled.recv_buffered <= 128 * 1024, "{stalled:?}");
        assert!(max_buffered <= 128 * 1024, "receive buffer grew to {max_buffered}");
        assert!(max_send_buffered <= 64 * 1024, "send buffer grew to {max_send_buffered}");
        assert!(
            rss_after < rss_before + (64 << 20),
            "memory grew from {} MiB to {} MiB",
            rss_before >> 20,
            rss_after >> 20
        );
        client.close().await;
    })
    .await;
}

/// While the reader sleeps, the writer cannot get far ahead: it stalls
/// on the receiver's full buffer and TCP, instead of buffering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_stalls_the_writer() {
    within(30, async {
        // A small pipe, so "far ahead" is measurable.
        let (a, b) = tokio::io::duplex(16 * 1024);
        let (client, _ci) = Session::new(a, Role::Client);
        let (server, mut si) = Session::new(b, Role::Server);
        let mut c = client.open(&[]).await.unwrap();
        let mut s = si.next().await.unwrap();
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        let writer = tokio::spawn(async move {
            let buf = vec![7u8; 16 * 1024];
            for _ in 0..256 {
                c.write_all(&buf).await.unwrap();
                w.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
            c.shutdown().await.unwrap();
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ahead = written.load(Ordering::Relaxed);
        // Receive buffer 128 KiB + pipe 16 KiB + send buffer 64 KiB + the
        // writer's batch (256 KiB at most, here bounded by the 64 KiB send
        // buffer) + reader read-ahead 64 KiB.
        assert!(ahead <= 400 * 1024, "writer ran {ahead} bytes ahead of a sleeping reader");
        assert!(server.stats().recv_buffered <= 128 * 1024);
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|b| *b == 7));
            total += n;
        }
        assert_eq!(total, 256 * 16 * 1024);
        writer.await.unwrap();
    })
    .await;
}

/// Both sides writing large amounts at once on several streams does not
/// deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_duplex_transfers_do_not_deadlock() {
    within(60, async {
        let (client, _ci, _server, si) = pair();
        spawn_echo(si);
        many_streams(client, 4, 4 << 20).await;
    })
    .await;
}

#[tokio::test]
async fn streams_split_and_halves_close_independently() {
    within(20, async {
        let (client, _ci, _server, mut si) = pair();
        let c = client.open(&[("k", "v")]).await.unwrap();
        let (mut r, mut w) = c.split();
        assert_eq!(r.header("k"), Some("v"));
        assert_eq!(w.id(), r.id());
        let mut s = si.next().await.unwrap();
        w.write_all(b"abc").await.unwrap();
        drop(w); // FIN
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abc");
        s.write_all(b"def").await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"def");
    })
    .await;
}

#[tokio::test]
async fn a_dropped_reader_does_not_stall_the_session() {
    within(30, async {
        let (client, _ci, server, mut si) = pair();
        let c = client.open(&[]).await.unwrap();
        let s = si.next().await.unwrap();
        let (r, _w) = s.split();
        drop(r);
        // 2 MiB to a stream nobody reads: dropped, not buffered, and the
        // session goes on.
        let (_cr, mut cw) = c.split();
        cw.write_all(&vec![1u8; 2 << 20]).await.unwrap();
        cw.shutdown().await.unwrap();
        client.ping().await.unwrap();
        assert_eq!(server.stats().recv_buffered, 0);
    })
    .await;
}

#[tokio::test]
async fn headers_are_lowercased_and_merged_on_the_wire() {
    within(20, async {
        let (client, _ci, _server, mut si) = pair();
        let _c = client.open(&[("X-Multi", "a"), ("x-multi", "b"), ("Other", "")]).await.unwrap();
        let s = si.next().await.unwrap();
        assert_eq!(
            s.headers(),
            &[("x-multi".into(), "a".into()), ("x-multi".into(), "b".into()), ("other".into(), "".into())]
        );
        assert!(matches!(client.open(&[("", "v")]).await, Err(Error::Header(_))));
    })
    .await;
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + Unpin + 'static>() {}
    check::<Session>();
    check::<Incoming>();
    check::<Stream>();
    check::<bulkhead_spdy::ReadHalf>();
    check::<bulkhead_spdy::WriteHalf>();
    check::<Error>();
}
