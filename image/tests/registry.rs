//! The registry client against Debian's docker-registry (the CNCF
//! distribution server) on 127.0.0.1, with an image the shared fixture
//! builds from Debian's busybox-static and pushes.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use bulkhead_e2e::registry::Registry;
use bulkhead_image::manifest::{self, Fetched, ImageConfig};
use bulkhead_image::registry::{Credentials, RegistryClient, RegistryConfig};
use bulkhead_image::unpack::{Compression, unpack};
use bulkhead_image::{ContentStore, Digest, Error, Reference};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_a_pushed_image_blob_by_blob_and_unpack_it() {
    let registry = Registry::start();
    let pushed = registry.push_busybox("test/busybox", "v1").await;
    let manifest_digest: Digest = pushed.manifest_digest.parse().unwrap();
    let tar = pushed.layer_tar;
    let client =
        RegistryClient::new(RegistryConfig { plain_http: vec![registry.host.clone()], ..Default::default() }).unwrap();
    let reference: Reference = format!("{}/test/busybox:v1", registry.host).parse().unwrap();

    let (digest, media_type, body) =
        client.manifest(&reference, &reference.object(), &Credentials::Anonymous).await.unwrap();
    assert_eq!(digest, manifest_digest);
    let Fetched::Manifest(m) = manifest::parse(media_type.as_deref(), &body).unwrap() else { panic!("a manifest") };

    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(&dir.path().join("content")).unwrap();
    client.blob(&reference, &m.config, &store, &Credentials::Anonymous).await.unwrap();
    let config = ImageConfig::parse(&store.read(&m.config.digest).unwrap()).unwrap();
    assert_eq!(config.config.cmd, Some(vec!["/bin/sh".to_string()]));
    let layer = &m.layers[0];
    let fetched = client.blob(&reference, layer, &store, &Credentials::Anonymous).await.unwrap();
    assert_eq!(fetched, layer.size);
    assert_eq!(
        client.blob(&reference, layer, &store, &Credentials::Anonymous).await.unwrap(),
        0,
        "a blob is fetched once"
    );

    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    let compression = Compression::from_media_type(&layer.media_type).unwrap();
    let unpacked =
        unpack(store.open_blob(&layer.digest).unwrap(), compression, &rootfs, Some(&config.rootfs.diff_ids[0]))
            .unwrap();
    assert_eq!(unpacked.diff_id, Digest::sha256_of(&tar));
    assert_eq!(std::fs::read(rootfs.join("bin/busybox")).unwrap(), std::fs::read("/bin/busybox").unwrap());
    assert_eq!(std::fs::read_link(rootfs.join("bin/sh")).unwrap().to_str(), Some("busybox"));

    // By digest, the manifest is verified; an unknown tag is NotFound naming the reference.
    let by_digest = reference.with_digest(manifest_digest.clone());
    assert_eq!(
        client.manifest(&by_digest, &by_digest.object(), &Credentials::Anonymous).await.unwrap().0,
        manifest_digest
    );
    let missing: Reference = format!("{}/test/busybox:nope", registry.host).parse().unwrap();
    let err = client.manifest(&missing, &missing.object(), &Credentials::Anonymous).await.unwrap_err();
    assert!(matches!(&err, Error::ImageNotFound { reference } if reference.contains("busybox:nope")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let host = format!("127.0.0.1:{port}");
    let client = RegistryClient::new(RegistryConfig { plain_http: vec![host.clone()], ..Default::default() }).unwrap();
    let reference: Reference = format!("{host}/x/y:z").parse().unwrap();
    let err = client.manifest(&reference, "z", &Credentials::Anonymous).await.unwrap_err().to_string();
    assert!(err.contains(&host), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_fetches_of_a_blob_download_it_once() {
    let registry = Registry::start();
    registry.push_busybox("test/busybox", "v1").await;
    let client =
        RegistryClient::new(RegistryConfig { plain_http: vec![registry.host.clone()], ..Default::default() }).unwrap();
    let reference: Reference = format!("{}/test/busybox:v1", registry.host).parse().unwrap();
    let (_, media_type, body) = client.manifest(&reference, "v1", &Credentials::Anonymous).await.unwrap();
    let Fetched::Manifest(m) = manifest::parse(media_type.as_deref(), &body).unwrap() else { panic!("a manifest") };
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let layer = &m.layers[0];
    let (a, b) = tokio::join!(
        client.blob(&reference, layer, &store, &Credentials::Anonymous),
        client.blob(&reference, layer, &store, &Credentials::Anonymous)
    );
    let mut fetched = [a.unwrap(), b.unwrap()];
    fetched.sort();
    assert_eq!(fetched, [0, layer.size], "one download, one wait");
}

/// Serves one blob twice: the first answer is cut after half the body; a
/// Range request then gets the rest as 206. Returns the Range headers seen.
fn flaky_blob_server(blob: Vec<u8>) -> (String, std::thread::JoinHandle<Vec<Option<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let mut ranges = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut range = None;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = Some(v.trim().trim_end_matches('-').to_owned());
                }
            }
            let mut out = stream;
            match range.as_deref().map(|r| r.parse::<usize>().unwrap()) {
                None => {
                    let head =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", blob.len());
                    out.write_all(head.as_bytes()).unwrap();
                    out.write_all(&blob[..blob.len() / 2]).unwrap();
                }
                Some(from) => {
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                        blob.len() - from,
                        blob.len() - 1,
                        blob.len()
                    );
                    out.write_all(head.as_bytes()).unwrap();
                    out.write_all(&blob[from..]).unwrap();
                }
            }
            ranges.push(range);
        }
        ranges
    });
    (host, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_blob_download_resumes_with_a_range_request() {
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::sha256_of(&blob);
    let (host, server) = flaky_blob_server(blob.clone());
    assert_eq!(fetch_blob(&host, "flaky/blob", &digest, blob.len()).await, blob);
    let ranges = server.join().unwrap();
    assert_eq!(ranges, vec![None, Some((blob.len() / 2).to_string())], "resumed from where it was cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_stalls_is_cancelled_after_the_progress_timeout() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    // Headers, a few bytes, then silence.
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        let mut out = stream;
        out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc").unwrap();
        std::thread::sleep(std::time::Duration::from_secs(2));
    });
    let config = RegistryConfig {
        plain_http: vec![host.clone()],
        progress_timeout: Some(std::time::Duration::from_secs(1)),
        ..Default::default()
    };
    let client = RegistryClient::new(config).unwrap();
    let reference: Reference = format!("{host}/slow/blob:v1").parse().unwrap();
    let desc = blob_descriptor(&Digest::sha256_of(b"x"), 1000);
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let started = std::time::Instant::now();
    let err = client.blob(&reference, &desc, &store, &Credentials::Anonymous).await.unwrap_err().to_string();
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "cancelled after about a second");
    assert!(err.contains("no data for 1s") && err.contains("pull_progress_timeout"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0, "the partial download is removed");
    server.join().unwrap();
}

/// Answers each request with the response `route` gives for its path.
fn tiny_server(route: impl Fn(&str) -> Vec<u8> + Send + 'static, requests: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests).flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or_default().to_owned();
            let mut out = stream;
            out.write_all(&route(&path)).unwrap();
        }
    });
    host
}

fn http_response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len())
        .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_redirect_to_storage_is_followed() {
    let blob = b"blob content served from storage".to_vec();
    let digest = Digest::sha256_of(&blob);
    let served = blob.clone();
    let host = tiny_server(
        move |path| {
            if path.starts_with("/storage/") {
                http_response("200 OK", "", &served)
            } else {
                http_response("307 Temporary Redirect", "Location: /storage/object\r\n", b"")
            }
        },
        2,
    );
    assert_eq!(fetch_blob(&host, "r/blob", &digest, blob.len()).await, blob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let body =
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#
            .to_vec();
    let host = tiny_server(
        move |_| http_response("200 OK", "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n", &body),
        1,
    );
    let client = RegistryClient::new(RegistryConfig { plain_http: vec![host.clone()], ..Default::default() }).unwrap();
    let asked = Digest::sha256_of(b"some other manifest");
    let reference: Reference = format!("{host}/r/app@{asked}").parse().unwrap();
    let err = client.manifest(&reference, &reference.object(), &Credentials::Anonymous).await.unwrap_err();
    assert!(matches!(&err, Error::BlobMismatch { digest, .. } if digest == &asked), "{err}");
}

fn blob_descriptor(digest: &Digest, size: usize) -> manifest::Descriptor {
    serde_json::from_value(serde_json::json!({
        "mediaType": "application/octet-stream", "digest": digest.to_string(), "size": size
    }))
    .unwrap()
}

/// Fetches blob `digest` of `repo` from the plain-HTTP registry at `host`
/// into a fresh store and returns the stored bytes.
async fn fetch_blob(host: &str, repo: &str, digest: &Digest, size: usize) -> Vec<u8> {
    let client =
        RegistryClient::new(RegistryConfig { plain_http: vec![host.to_owned()], ..Default::default() }).unwrap();
    let reference: Reference = format!("{host}/{repo}:v1").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    client.blob(&reference, &blob_descriptor(digest, size), &store, &Credentials::Anonymous).await.unwrap();
    store.read(digest).unwrap()
}
