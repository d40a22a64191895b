//! A session against a peer that writes frames by hand: exactly what goes
//! on the wire, and what the session does with what spdystream (or a
//! broken peer) may send.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on failure, as tests do

mod common;

use std::time::Duration;

use bulkhead_spdy::frame::{Frame, GoAwayStatus, RstStatus, Setting, setting};
use bulkhead_spdy::{Error, Role, Session};
use common::{RawPeer, XorShift, data, h, syn, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Everything the peer gets on stream `id` up to its FIN (skipping
/// WINDOW_UPDATEs); FIN may ride on the last data or come alone.
async fn read_stream(peer: &mut RawPeer<DuplexStream>, id: u32) -> Vec<u8> {
    let mut got = Vec::new();
    loop {
        match peer.recv_skip_wu().await {
            Some(Frame::Data { stream_id, fin, data }) if stream_id == id => {
                got.extend_from_slice(&data);
                if fin {
                    return got;
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

fn server() -> (Session, bulkhead_spdy::Incoming, RawPeer<DuplexStream>) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (s, i) = Session::new(a, Role::Server);
    (s, i, RawPeer::new(b))
}

fn client() -> (Session, bulkhead_spdy::Incoming, RawPeer<DuplexStream>) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (s, i) = Session::new(a, Role::Client);
    (s, i, RawPeer::new(b))
}

#[tokio::test]
async fn syn_stream_gets_an_empty_syn_reply_and_data_flows() {
    within(20, async {
        let (_server, mut incoming, mut peer) = server();
        peer.send(syn(1, &[("streamtype", "stdout"), ("port", "8080")])).await;
        assert_eq!(peer.recv().await, Some(Frame::SynReply { stream_id: 1, fin: false, headers: vec![] }));
        let mut s = incoming.next().await.unwrap();
        assert_eq!(s.headers(), &h(&[("streamtype", "stdout"), ("port", "8080")])[..]);
        peer.send(data(1, false, b"ping")).await;
        peer.send(data(1, true, b"")).await; // spdystream's Close(): an empty DATA with FIN
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        s.write_all(b"pong").await.unwrap();
        s.shutdown().await.unwrap();
        assert_eq!(read_stream(&mut peer, 1).await, b"pong");
    })
    .await;
}

#[tokio::test]
async fn our_syn_stream_is_what_spdystream_expects() {
    within(20, async {
        let (session, _incoming, mut peer) = client();
        let open = tokio::spawn(async move {
            let s = session.open(&[("streamType", "error"), ("X-A", "1"), ("x-a", "2")]).await;
            (session, s)
        });
        match peer.recv().await {
            Some(Frame::SynStream { stream_id, associated_id, priority, slot, fin, unidirectional, headers }) => {
                assert_eq!((stream_id, associated_id, priority, slot, fin, unidirectional), (1, 0, 0, 0, false, false));
                // decode() splits NUL-joined values again: one name on the wire.
                assert_eq!(headers, h(&[("streamtype", "error"), ("x-a", "1"), ("x-a", "2")]));
            }
            other => panic!("{other:?}"),
        }
        peer.send(Frame::SynReply { stream_id: 1, fin: false, headers: vec![] }).await;
        let (_session, s) = open.await.unwrap();
        let mut s = s.unwrap();
        s.write_all(&vec![9u8; 100 * 1024]).await.unwrap();
        s.shutdown().await.unwrap();
        let mut total = 0;
        loop {
            match peer.recv().await.unwrap() {
                Frame::Data { stream_id: 1, fin, data } => {
                    assert!(data.len() <= bulkhead_spdy::MAX_DATA_FRAME);
                    total += data.len();
                    if fin {
                        break;
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(total, 100 * 1024);
    })
    .await;
}

#[tokio::test]
async fn pings_are_echoed_and_ours_are_answered() {
    within(20, async {
        let (server, _incoming, mut peer) = server();
        // A client's ping (odd): echoed with the same id.
        peer.send(Frame::Ping { id: 1 }).await;
        assert_eq!(peer.recv().await, Some(Frame::Ping { id: 1 }));
        peer.send(Frame::Ping { id: 0x7fff_ffff }).await;
        assert_eq!(peer.recv().await, Some(Frame::Ping { id: 0x7fff_ffff }));
        // The server's own pings are even; the peer echoes them.
        let p = tokio::spawn(async move { server.ping().await.map(|_| server) });
        assert_eq!(peer.recv().await, Some(Frame::Ping { id: 2 }));
        peer.send(Frame::Ping { id: 2 }).await;
        let server = p.await.unwrap().unwrap();
        // An even id from the peer is a reply to nothing: not echoed.
        peer.send(Frame::Ping { id: 40 }).await;
        let p = tokio::spawn(async move { server.ping().await });
        assert_eq!(peer.recv().await, Some(Frame::Ping { id: 4 }));
        peer.send(Frame::Ping { id: 4 }).await;
        p.await.unwrap().unwrap();
    })
    .await;
}

/// SETTINGS with a tiny initial window and WINDOW_UPDATEs are accepted;
/// we do not wait for window: 1 MiB goes out with no WINDOW_UPDATE from
/// the peer, as spdystream never sends one.
#[tokio::test]
async fn no_send_window_is_enforced() {
    within(20, async {
        let (_server, mut incoming, mut peer) = server();
        peer.send(Frame::Settings {
            clear: false,
            entries: vec![Setting { flags: 0, id: setting::INITIAL_WINDOW_SIZE, value: 1 }],
        })
        .await;
        peer.send(Frame::WindowUpdate { stream_id: 0, delta: 1 }).await;
        peer.send(syn(1, &[])).await;
        peer.send(Frame::WindowUpdate { stream_id: 1, delta: 0x7fff_ffff }).await;
        let mut s = incoming.next().await.unwrap();
        let writer = tokio::spawn(async move {
            s.write_all(&vec![1u8; 1 << 20]).await.unwrap();
            s.shutdown().await.unwrap();
            s
        });
        assert!(matches!(peer.recv().await, Some(Frame::SynReply { stream_id: 1, .. })));
        let mut total = 0;
        loop {
            match peer.recv().await.unwrap() {
                Frame::Data { fin, data, .. } => {
                    total += data.len();
                    if fin {
                        break;
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(total, 1 << 20);
        writer.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn window_updates_follow_what_is_read() {
    within(20, async {
        let (_server, mut incoming, mut peer) = server();
        peer.send(syn(1, &[])).await;
        let mut s = incoming.next().await.unwrap();
        assert!(matches!(peer.recv().await, Some(Frame::SynReply { .. })));
        for _ in 0..4 {
            peer.send(data(1, false, &[5u8; 16 * 1024])).await;
        }
        let mut buf = vec![0u8; 64 * 1024];
        s.read_exact(&mut buf).await.unwrap();
        let mut stream_delta = 0;
        let mut session_delta = 0;
        while stream_delta < 64 * 1024 || session_delta < 64 * 1024 {
            match peer.recv().await.unwrap() {
                Frame::WindowUpdate { stream_id: 1, delta } => stream_delta += delta,
                Frame::WindowUpdate { stream_id: 0, delta } => session_delta += delta,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((stream_delta, session_delta), (64 * 1024, 64 * 1024));
    })
    .await;
}

#[tokio::test]
async fn frames_for_unknown_streams_are_ignored() {
    within(20, async {
        let (server, _incoming, mut peer) = server();
        peer.send(data(7, false, b"nobody")).await;
        peer.send(data(9, true, b"")).await;
        peer.send(Frame::SynReply { stream_id: 11, fin: false, headers: vec![] }).await;
        peer.send(Frame::Headers { stream_id: 13, fin: true, headers: h(&[("a", "b")]) }).await;
        peer.send(Frame::RstStream { stream_id: 15, status: RstStatus::CANCEL }).await;
        peer.send(Frame::WindowUpdate { stream_id: 17, delta: 5 }).await;
        // An unknown control type (CREDENTIAL, 10) is skipped.
        peer.send_raw(&[0x80, 3, 0, 10, 0, 0, 0, 4, 1, 2, 3, 4]).await;
        peer.send(Frame::Ping { id: 3 }).await;
        assert_eq!(peer.recv().await, Some(Frame::Ping { id: 3 }));
        assert!(!server.is_closed());
    })
    .await;
}

#[tokio::test]
async fn an_oversized_control_frame_is_goaway_protocol_error() {
    within(20, async {
        let (server, _incoming, mut peer) = server();
        // SYN_STREAM claiming 16 MiB - 1: refused before any of it is read.
        peer.send_raw(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff]).await;
        assert_eq!(
            peer.recv().await,
            Some(Frame::GoAway { last_good_stream_id: 0, status: GoAwayStatus::PROTOCOL_ERROR })
        );
        assert_eq!(peer.recv().await, None, "then the connection is shut");
        server.closed().await;
        match server.end_reason() {
            Some(Error::Protocol(e)) => assert!(e.to_string().contains("SYN_STREAM"), "{e}"),
            other => panic!("{other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn a_broken_header_stream_is_goaway_protocol_error() {
    within(20, async {
        let (server, _incoming, mut peer) = server();
        peer.send(syn(1, &[("a", "b")])).await;
        assert!(matches!(peer.recv().await, Some(Frame::SynReply { stream_id: 1, .. })));
        // A SYN_STREAM whose block is not the continuation of the zlib stream.
        peer.send_raw(&[0x80, 3, 0, 1, 0, 0, 0, 16, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0, 1]).await;
        loop {
            match peer.recv().await {
                Some(Frame::GoAway { last_good_stream_id: 1, status }) => {
                    assert_eq!(status, GoAwayStatus::PROTOCOL_ERROR);
                    break;
                }
                Some(Frame::WindowUpdate { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        server.closed().await;
    })
    .await;
}

#[tokio::test]
async fn a_bad_header_block_resets_only_its_stream() {
    within(20, async {
        let (_server, mut incoming, mut peer) = server();
        // Valid zlib, invalid name/value block: count 5, nothing follows.
        let block = peer.compress(&[0, 0, 0, 5]);
        let mut raw = vec![0x80, 3, 0, 1, 0, 0, 0, (10 + block.len()) as u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        raw.extend_from_slice(&block);
        peer.send_raw(&raw).await;
        assert_eq!(peer.recv().await, Some(Frame::RstStream { stream_id: 1, status: RstStatus::PROTOCOL_ERROR }));
        peer.send(syn(3, &[("ok", "yes")])).await;
        assert!(matches!(peer.recv().await, Some(Frame::SynReply { stream_id: 3, .. })));
        assert_eq!(incoming.next().await.unwrap().header("ok"), Some("yes"));
    })
    .await;
}

#[tokio::test]
async fn invalid_stream_ids_are_reset() {
    within(20, async {
        let (_server, mut incoming, mut peer) = server();
        // Even ids belong to the server.
        peer.send(syn(2, &[])).await;
        assert_eq!(peer.recv().await, Some(Frame::RstStream { stream_id: 2, status: RstStatus::PROTOCOL_ERROR }));
        peer.send(syn(5, &[])).await;
        assert!(matches!(peer.recv().await, Some(Frame::SynReply { stream_id: 5, .. })));
        // Ids must grow.
        peer.send(syn(3, &[])).await;
        assert_eq!(peer.recv().await, Some(Frame::RstStream { stream_id: 3, status: RstStatus::PROTOCOL_ERROR }));
        peer.send(syn(5, &[])).await;
        assert_eq!(peer.recv().await, Some(Frame::RstStream { stream_id: 5, status: RstStatus::PROTOCOL_ERROR }));
        assert_eq!(incoming.next().await.unwrap().id(), 5);
    })
    .await;
}

#[tokio::test]
async fn data_after_fin_resets_the_stream() {
    within(20, async {
        let (_server, mut incoming, mut peer) = server();
        peer.send(syn(1, &[])).await;
        assert!(matches!(peer.recv().await, Some(Frame::SynReply { .. })));
        peer.send(data(1, true, b"end")).await;
        peer.send(data(1, false, b"more")).await;
        assert_eq!(
            peer.recv_skip_wu().await,
            Some(Frame::RstStream { stream_id: 1, status: RstStatus::STREAM_ALREADY_CLOSED })
        );
        let s = incoming.next().await.unwrap();
        drop(s);
    })
    .await;
}

#[tokio::test]
async fn syn_stream_with_fin_reads_empty_and_unidirectional_gets_no_reply() {
    within(20, async {
        let (_server, mut incoming, mut peer) = server();
        peer.send(Frame::SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 3,
            slot: 0,
            fin: true,
            unidirectional: false,
            headers: vec![],
        })
        .await;
        assert!(matches!(peer.recv().await, Some(Frame::SynReply { stream_id: 1, .. })));
        let mut s = incoming.next().await.unwrap();
        assert_eq!(s.read(&mut [0u8; 4]).await.unwrap(), 0);
        s.write_all(b"answer").await.unwrap();
        drop(s);
        assert_eq!(read_stream(&mut peer, 1).await, b"answer");
        peer.send(Frame::SynStream {
            stream_id: 3,
            associated_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: true,
            headers: vec![],
        })
        .await;
        let mut u = incoming.next().await.unwrap();
        assert_eq!(u.write_all(b"x").await.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
        peer.send(data(3, true, b"one way")).await;
        let mut got = Vec::new();
        u.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"one way");
        peer.send(Frame::Ping { id: 1 }).await;
        assert_eq!(peer.recv().await, Some(Frame::Ping { id: 1 }), "no SYN_REPLY for the unidirectional stream");
    })
    .await;
}

/// The peer's GOAWAY: no new streams; streams it accepted go on; streams
/// it did not fail; the session ends once nothing is left.
#[tokio::test]
async fn goaway_from_the_peer() {
    within(20, async {
        let (session, mut incoming, mut peer) = server();
        peer.send(syn(1, &[])).await;
        assert!(matches!(peer.recv().await, Some(Frame::SynReply { stream_id: 1, .. })));
        let mut s1 = incoming.next().await.unwrap();
        // The server opens stream 2; the peer never answers it.
        let s2 = tokio::spawn({
            let session = session.clone();
            async move { session.open(&[]).await }
        });
        assert!(matches!(peer.recv().await, Some(Frame::SynStream { stream_id: 2, .. })));
        peer.send(Frame::GoAway { last_good_stream_id: 0, status: GoAwayStatus::OK }).await;
        match s2.await.unwrap() {
            Err(Error::GoneAway { stream_id: 2, last_good_stream_id: 0 }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(session.open(&[]).await, Err(Error::GoingAway(GoAwayStatus::OK))));
        // Stream 1 (the peer's own) carries on.
        peer.send(data(1, true, b"still here")).await;
        let mut got = Vec::new();
        s1.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"still here");
        assert!(!session.is_closed());
        s1.write_all(b"bye").await.unwrap();
        s1.shutdown().await.unwrap();
        assert_eq!(read_stream(&mut peer, 1).await, b"bye");
        // Nothing left: our GOAWAY, and the connection is shut.
        assert_eq!(peer.recv_skip_wu().await, Some(Frame::GoAway { last_good_stream_id: 1, status: GoAwayStatus::OK }));
        assert_eq!(peer.recv().await, None);
        session.closed().await;
    })
    .await;
}

#[tokio::test]
async fn our_close_sends_goaway_with_the_last_peer_stream() {
    within(20, async {
        let (session, mut incoming, mut peer) = server();
        peer.send(syn(1, &[])).await;
        peer.send(syn(7, &[])).await;
        assert!(matches!(peer.recv().await, Some(Frame::SynReply { stream_id: 1, .. })));
        assert!(matches!(peer.recv().await, Some(Frame::SynReply { stream_id: 7, .. })));
        let mut s = incoming.next().await.unwrap();
        s.write_all(b"queued before close").await.unwrap();
        session.close().await;
        assert_eq!(peer.recv().await, Some(data(1, false, b"queued before close")));
        assert_eq!(peer.recv().await, Some(Frame::GoAway { last_good_stream_id: 7, status: GoAwayStatus::OK }));
        assert_eq!(peer.recv().await, None);
    })
    .await;
}

#[tokio::test]
async fn the_peer_closing_the_connection_ends_the_session() {
    within(20, async {
        let (session, mut incoming, mut peer) = server();
        peer.send(syn(1, &[])).await;
        let mut s = incoming.next().await.unwrap();
        peer.send(data(1, false, b"partial")).await;
        drop(peer);
        session.closed().await;
        assert!(matches!(session.end_reason(), Some(Error::PeerClosed)));
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"partial");
        let e = s.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted);
        assert!(incoming.next().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn a_truncated_frame_is_an_io_error() {
    within(20, async {
        let (session, _incoming, mut peer) = server();
        peer.send_raw(&[0x80, 3, 0, 6, 0, 0, 0, 4, 0]).await;
        drop(peer);
        session.closed().await;
        assert!(matches!(session.end_reason(), Some(Error::Io(_))), "{:?}", session.end_reason());
    })
    .await;
}

#[tokio::test]
async fn a_ping_flood_cannot_grow_the_queue() {
    within(30, async {
        let (a, b) = tokio::io::duplex(4 * 1024);
        let (session, _incoming) = Session::new(a, Role::Server);
        let mut peer = RawPeer::new(b);
        // Send pings without reading the answers: the session must stop
        // reading once its queue and the pipe are full.
        let flood = tokio::spawn(async move {
            for id in 0..100_000u32 {
                let ping = [0x80, 3, 0, 6, 0, 0, 0, 4];
                let mut f = ping.to_vec();
                f.extend_from_slice(&(id * 2 + 1).to_be_bytes());
                if tokio::time::timeout(Duration::from_millis(200), peer.io.write_all(&f)).await.is_err() {
                    return (peer, id);
                }
            }
            (peer, 100_000)
        });
        let (mut peer, sent) = flood.await.unwrap();
        assert!(sent < 100_000, "the session kept reading");
        assert!(session.stats().control_queued <= 256, "{:?}", session.stats());
        // Drain: every ping is answered, in order.
        let mut next = 1;
        while next < sent * 2 + 1 {
            let mut f = [0u8; 12];
            peer.io.read_exact(&mut f).await.unwrap();
            assert_eq!(u32::from_be_bytes([f[8], f[9], f[10], f[11]]), next);
            next += 2;
        }
    })
    .await;
}

/// Garbage never panics: random bytes and valid traffic with flipped bits
/// end the session (or are ignored), nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_ends_the_session_without_panic() {
    within(120, async {
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        // Valid traffic from a client, to corrupt.
        let mut valid = Vec::new();
        {
            let mut c = bulkhead_spdy::headers::HeaderCompressor::new();
            for f in [
                syn(1, &[("streamtype", "error")]),
                syn(3, &[("streamtype", "stdin")]),
                data(3, false, b"some input"),
                Frame::Ping { id: 1 },
                Frame::WindowUpdate { stream_id: 1, delta: 100 },
                Frame::Headers { stream_id: 1, fin: false, headers: h(&[("x", "y")]) },
                data(3, true, b""),
                Frame::RstStream { stream_id: 1, status: RstStatus::CANCEL },
                Frame::GoAway { last_good_stream_id: 0, status: GoAwayStatus::OK },
            ] {
                bulkhead_spdy::frame::encode(&f, &mut c, &mut valid).unwrap();
            }
        }
        for round in 0..300 {
            let input: Vec<u8> = match round % 3 {
                0 => (0..(rng.next() % 4096)).map(|_| rng.next() as u8).collect(),
                1 => {
                    let mut v = valid.clone();
                    for _ in 0..(rng.next() % 6 + 1) {
                        let i = (rng.next() as usize) % v.len();
                        v[i] ^= 1 << (rng.next() % 8);
                    }
                    v
                }
                _ => {
                    // Control frames with random payloads.
                    let mut v = Vec::new();
                    for _ in 0..8 {
                        let len = (rng.next() % 64) as usize;
                        v.extend_from_slice(&[0x80, 3, 0, (rng.next() % 11) as u8, rng.next() as u8, 0, 0, len as u8]);
                        v.extend((0..len).map(|_| rng.next() as u8));
                    }
                    v
                }
            };
            let (a, b) = tokio::io::duplex(64 * 1024);
            let role = if round % 2 == 0 { Role::Server } else { Role::Client };
            let (session, mut incoming) = Session::new(a, role);
            // Accept and drain whatever streams appear, as a server would.
            tokio::spawn(async move {
                while let Some(mut s) = incoming.next().await {
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
                    });
                }
            });
            let (mut r, mut w) = tokio::io::split(b);
            let drain = tokio::spawn(async move { tokio::io::copy(&mut r, &mut tokio::io::sink()).await });
            let _ = w.write_all(&input).await;
            let _ = w.shutdown().await;
            tokio::time::timeout(Duration::from_secs(10), session.closed())
                .await
                .unwrap_or_else(|_| panic!("round {round}: session did not end"));
            assert!(session.end_reason().is_some());
            let _ = drain.await;
        }
    })
    .await;
}
