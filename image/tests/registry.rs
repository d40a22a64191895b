//! The registry client against Debian's docker-registry (the CNCF
//! distribution server) on 127.0.0.1, with images built and pushed by the
//! test itself from Debian's busybox-static.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead_image::manifest::{self, Fetched, ImageConfig};
use bulkhead_image::registry::{Credentials, RegistryClient, RegistryConfig};
use bulkhead_image::unpack::{Compression, unpack};
use bulkhead_image::{ContentStore, Digest, Error, Reference};

/// A private registry: its storage in a temp dir, on a free loopback port.
struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    host: String,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("storage").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .args(["serve"])
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry; scripts/deps installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Registry { child, _dir: dir, host }
    }

    /// Pushes a blob with the monolithic upload of the distribution API.
    async fn push_blob(&self, http: &reqwest::Client, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let start = http.post(format!("http://{}/v2/{repo}/blobs/uploads/", self.host)).send().await.unwrap();
        assert_eq!(start.status(), 202);
        let location = start.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with("http") { location } else { format!("http://{}{location}", self.host) };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = http.put(format!("{location}{sep}digest={digest}")).body(bytes.to_vec()).send().await.unwrap();
        assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
        digest
    }

    /// Pushes a one-layer image of busybox; returns (manifest digest, layer tar, layer digest).
    async fn push_busybox(&self, repo: &str, tag: &str) -> (Digest, Vec<u8>) {
        let http = reqwest::Client::new();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        let busybox = std::fs::read("/bin/busybox").unwrap();
        h.set_path("bin/busybox").unwrap();
        h.set_mode(0o755);
        h.set_size(busybox.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, busybox.as_slice()).unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_path("bin/sh").unwrap();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_link_name("busybox").unwrap();
        l.set_mode(0o777);
        l.set_size(0);
        l.set_mtime(1_600_000_000);
        l.set_cksum();
        b.append(&l, &[][..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let layer = gz.finish().unwrap();
        let layer_digest = self.push_blob(&http, repo, &layer).await;
        let config = serde_json::json!({
            "architecture": manifest::Platform::host().architecture, "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [Digest::sha256_of(&tar).to_string()]}
        })
        .to_string();
        let config_digest = self.push_blob(&http, repo, config.as_bytes()).await;
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
            "config": {"mediaType": manifest::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest.to_string(), "size": layer.len()}]
        })
        .to_string();
        let put = http
            .put(format!("http://{}/v2/{repo}/manifests/{tag}", self.host))
            .header("content-type", manifest::OCI_MANIFEST)
            .body(m.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
        (Digest::sha256_of(m.as_bytes()), tar)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_a_pushed_image_blob_by_blob_and_unpack_it() {
    let registry = Registry::start();
    let (manifest_digest, tar) = registry.push_busybox("test/busybox", "v1").await;
    let client = RegistryClient::new(RegistryConfig { plain_http: vec![registry.host.clone()] }).unwrap();
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
    let client = RegistryClient::new(RegistryConfig { plain_http: vec![host.clone()] }).unwrap();
    let reference: Reference = format!("{host}/x/y:z").parse().unwrap();
    let err = client.manifest(&reference, "z", &Credentials::Anonymous).await.unwrap_err().to_string();
    assert!(err.contains(&host), "{err}");
}
