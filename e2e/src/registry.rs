//! A private registry for tests: Debian's docker-registry (the CNCF
//! distribution server) on a free loopback port with throwaway storage, and
//! a small pusher that builds images from Debian's busybox-static and
//! uploads them with the distribution API.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// The OCI media types the fixtures use.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A running docker-registry; killed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`
    pub host: String,
    /// The Basic credentials it requires, if any.
    auth: Option<(String, String)>,
}

/// What a push produced.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest_digest: String,
    pub config_digest: String,
    /// The uncompressed layer tar.
    pub layer_tar: Vec<u8>,
    pub layer_size: u64,
}

impl Registry {
    /// A registry open to anyone.
    pub fn start() -> Registry {
        Registry::launch(None)
    }

    /// A registry that requires `user`/`password` (htpasswd, bcrypt).
    pub fn start_with_basic_auth(user: &str, password: &str) -> Registry {
        Registry::launch(Some((user.to_owned(), password.to_owned())))
    }

    fn launch(auth: Option<(String, String)>) -> Registry {
        let dir = tempfile::Builder::new().prefix("bulkhead-registry-").tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("storage").display()
        );
        if let Some((user, password)) = &auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (Debian package apache2-utils; scripts/deps installs it)");
            assert!(out.status.success());
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).expect("htpasswd file");
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: bulkhead-test\n    path: {}\n", file.display()));
        }
        std::fs::write(dir.path().join("config.yml"), config).expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
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
        Registry { child, dir, host, auth }
    }

    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((user, password)) => builder.basic_auth(user, Some(password)),
            None => builder,
        }
    }

    /// The registry's storage directory.
    pub fn storage(&self) -> std::path::PathBuf {
        self.dir.path().join("storage")
    }

    async fn push_blob(&self, http: &reqwest::Client, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let start = self
            .request(http.post(format!("http://{}/v2/{repo}/blobs/uploads/", self.host)))
            .send()
            .await
            .expect("start upload");
        assert_eq!(start.status(), 202);
        let location = start.headers()["location"].to_str().expect("location").to_owned();
        let location = if location.starts_with("http") { location } else { format!("http://{}{location}", self.host) };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .request(http.put(format!("{location}{sep}digest={digest}")))
            .body(bytes.to_vec())
            .send()
            .await
            .expect("upload");
        assert_eq!(put.status(), 201);
        digest
    }

    /// Pushes `repo:tag`: one gzip layer holding busybox and a `bin/sh` link.
    pub async fn push_busybox(&self, repo: &str, tag: &str) -> Pushed {
        let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_path("bin/busybox").expect("path");
        h.set_mode(0o755);
        h.set_size(busybox.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, busybox.as_slice()).expect("append");
        let mut l = tar::Header::new_gnu();
        l.set_path("bin/sh").expect("path");
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_link_name("busybox").expect("link");
        l.set_mode(0o777);
        l.set_size(0);
        l.set_mtime(1_600_000_000);
        l.set_cksum();
        b.append(&l, &[][..]).expect("append");
        let layer_tar = b.into_inner().expect("tar");
        let layer_size = compress(&layer_tar, LayerCompression::Gzip).len() as u64;
        let (manifest_digest, config_digest) =
            self.push_image(repo, tag, &[(layer_tar.clone(), LayerCompression::Gzip)], false).await;
        Pushed { manifest_digest, config_digest, layer_tar, layer_size }
    }

    async fn put_manifest(&self, http: &reqwest::Client, repo: &str, reference: &str, media_type: &str, body: &str) {
        let put = self
            .request(http.put(format!("http://{}/v2/{repo}/manifests/{reference}", self.host)))
            .header("content-type", media_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("push manifest");
        assert_eq!(put.status(), 201, "{}", put.text().await.unwrap_or_default());
    }

    /// Pushes an image of `layers` (uncompressed tars, bottom first) as
    /// `repo:tag`; with `as_index`, behind an index that also lists an image
    /// for another platform. Returns (the digest `tag` names, config digest).
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layers: &[(Vec<u8>, LayerCompression)],
        as_index: bool,
    ) -> (String, String) {
        // reqwest needs a process-wide TLS provider even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, compression) in layers {
            let blob = compress(tar, *compression);
            let digest = self.push_blob(&http, repo, &blob).await;
            descriptors
                .push(serde_json::json!({"mediaType": compression.media_type(), "digest": digest, "size": blob.len()}));
            diff_ids.push(sha256(tar));
        }
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "User": "1000"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        })
        .to_string();
        let config_digest = self.push_blob(&http, repo, config.as_bytes()).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": descriptors
        })
        .to_string();
        let manifest_digest = sha256(manifest.as_bytes());
        if !as_index {
            self.put_manifest(&http, repo, tag, OCI_MANIFEST, &manifest).await;
            return (manifest_digest, config_digest);
        }
        // Another platform's image (an empty one) beside ours, then the index.
        let other_config =
            serde_json::json!({"architecture": "s390x", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
                .to_string();
        let other_config_digest = self.push_blob(&http, repo, other_config.as_bytes()).await;
        let other = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": other_config_digest, "size": other_config.len()}, "layers": []})
        .to_string();
        self.put_manifest(&http, repo, &sha256(other.as_bytes()), OCI_MANIFEST, &other).await;
        self.put_manifest(&http, repo, &manifest_digest, OCI_MANIFEST, &manifest).await;
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sha256(other.as_bytes()), "size": other.len(), "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(), "platform": {"os": "linux", "architecture": arch}}
        ]})
        .to_string();
        self.put_manifest(&http, repo, tag, OCI_INDEX, &index).await;
        (sha256(index.as_bytes()), config_digest)
    }
}

/// How a pushed layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    Plain,
    Gzip,
    Zstd,
}

impl LayerCompression {
    fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Plain => "application/vnd.oci.image.layer.v1.tar",
            LayerCompression::Gzip => OCI_LAYER_GZIP,
            LayerCompression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

fn compress(tar: &[u8], compression: LayerCompression) -> Vec<u8> {
    match compression {
        LayerCompression::Plain => tar.to_vec(),
        LayerCompression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).expect("gzip");
            gz.finish().expect("gzip")
        }
        LayerCompression::Zstd => zstd::stream::encode_all(tar, 3).expect("zstd"),
    }
}

/// Builds a layer tar from (path, kind, content-or-link-target) entries,
/// without the tar crate's path checks, so tests can build hostile layers.
pub fn layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(if *kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let content: &[u8] = match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let link = &mut h.as_old_mut().linkname;
                link[..data.len()].copy_from_slice(data.as_bytes());
                b""
            }
            _ => data.as_bytes(),
        };
        h.set_size(content.len() as u64);
        h.set_cksum();
        b.append(&h, content).expect("append");
    }
    b.into_inner().expect("tar")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
