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
        // reqwest needs a process-wide TLS provider even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
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
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer_tar).expect("gzip");
        let layer = gz.finish().expect("gzip");
        let layer_digest = self.push_blob(&http, repo, &layer).await;
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "User": "1000"},
            "rootfs": {"type": "layers", "diff_ids": [sha256(&layer_tar)]}
        })
        .to_string();
        let config_digest = self.push_blob(&http, repo, config.as_bytes()).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer.len()}]
        })
        .to_string();
        let put = self
            .request(http.put(format!("http://{}/v2/{repo}/manifests/{tag}", self.host)))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
            .expect("push manifest");
        assert_eq!(put.status(), 201);
        Pushed {
            manifest_digest: sha256(manifest.as_bytes()),
            config_digest,
            layer_tar,
            layer_size: layer.len() as u64,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
