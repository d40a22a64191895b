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
/// This host's architecture as OCI image configs name it (`amd64`, `arm64`…).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

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
    /// How it authenticates clients.
    auth: Auth,
    /// `http`, or `https` with a self-signed certificate (`ca_file()`).
    scheme: &'static str,
}

/// A registry's authentication, as the fixture sets it up.
#[derive(Debug)]
enum Auth {
    None,
    /// htpasswd Basic auth.
    Basic(String, String),
    /// Bearer tokens from our own token server, which wants these Basic credentials.
    Token(TokenServer),
}

/// A token server of the test's own, as distribution's token auth expects:
/// ES256 JWTs carrying their certificate (x5c), trusted through the
/// registry's rootcertbundle.
#[derive(Debug)]
pub struct TokenServer {
    /// `http://127.0.0.1:<port>/token`
    pub realm: String,
    key_pkcs8: Vec<u8>,
    cert_der: Vec<u8>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    address: String,
}

const TOKEN_SERVICE: &str = "bulkhead-test";
const TOKEN_ISSUER: &str = "bulkhead-test-issuer";

fn openssl(args: &[&str]) {
    let status =
        Command::new("openssl").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// Makes, in `dir`, a CA of the test's own (`ca.crt`) and a server
/// certificate for 127.0.0.1 signed by it (`tls.crt`, `tls.key`).
pub fn make_server_certificate(dir: &std::path::Path) {
    let d = |name: &str| dir.join(name).to_str().expect("utf-8 path").to_owned();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &d("ca.key"),
        "-out",
        &d("ca.crt"),
        "-days",
        "1",
        "-subj",
        "/CN=bulkhead-test-ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &d("tls.key"),
        "-out",
        &d("tls.csr"),
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extensions");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &d("tls.csr"),
        "-CA",
        &d("ca.crt"),
        "-CAkey",
        &d("ca.key"),
        "-CAcreateserial",
        "-out",
        &d("tls.crt"),
        "-days",
        "1",
        "-extfile",
        &d("ext.cnf"),
    ]);
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenServer {
    /// Makes a key and a self-signed certificate in `dir` and starts serving
    /// tokens to `user`/`password` (anyone else gets 401).
    fn start(dir: &std::path::Path, user: &str, password: &str) -> TokenServer {
        let (key, cert) = (dir.join("token.key"), dir.join("token.crt"));
        let (pkcs8, der) = (dir.join("token.p8"), dir.join("token.der"));
        let p = |x: &std::path::Path| x.to_str().expect("utf-8 path").to_owned();
        openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &p(&key)]);
        openssl(&[
            "req",
            "-new",
            "-x509",
            "-key",
            &p(&key),
            "-out",
            &p(&cert),
            "-days",
            "1",
            "-subj",
            "/CN=bulkhead-test-token",
        ]);
        openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", &p(&key), "-outform", "DER", "-out", &p(&pkcs8)]);
        openssl(&["x509", "-in", &p(&cert), "-outform", "DER", "-out", &p(&der)]);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("token server port");
        let address = listener.local_addr().expect("address").to_string();
        let server = TokenServer {
            realm: format!("http://{address}/token"),
            key_pkcs8: std::fs::read(&pkcs8).expect("key"),
            cert_der: std::fs::read(&der).expect("cert"),
            stop: Default::default(),
            address,
        };
        let (minter, stop) = (server.minter(), server.stop.clone());
        let expected = format!("Basic {}", {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        });
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                serve_token(stream, &expected, &minter);
            }
        });
        server
    }

    fn minter(&self) -> Minter {
        Minter { key_pkcs8: self.key_pkcs8.clone(), cert_der: self.cert_der.clone() }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(&self.address);
    }
}

/// Signs tokens.
#[derive(Debug, Clone)]
struct Minter {
    key_pkcs8: Vec<u8>,
    cert_der: Vec<u8>,
}

impl Minter {
    /// A JWT granting `actions` on `repository`.
    fn mint(&self, repository: &str, actions: &[&str]) -> String {
        use base64::Engine;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)]});
        let claims = serde_json::json!({"iss": TOKEN_ISSUER, "sub": "tester", "aud": TOKEN_SERVICE,
            "exp": now + 600, "nbf": now - 60, "iat": now, "jti": format!("{now}-{repository}"),
            "access": [{"type": "repository", "name": repository, "actions": actions}]});
        let signing_input =
            format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.key_pkcs8,
            &rng,
        )
        .expect("token key");
        let signature = key.sign(&rng, signing_input.as_bytes()).expect("sign");
        format!("{signing_input}.{}", b64url(signature.as_ref()))
    }
}

/// Answers one token request: `scope=repository:<name>:<actions>`.
fn serve_token(stream: std::net::TcpStream, expected_auth: &str, minter: &Minter) {
    use std::io::{BufRead, BufReader};
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    let _ = reader.read_line(&mut request_line);
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) <= 2 {
            break;
        }
        if let Some(v) = line.strip_prefix("Authorization: ").or_else(|| line.strip_prefix("authorization: ")) {
            authorized = v.trim() == expected_auth;
        }
    }
    let scope = request_line
        .split_whitespace()
        .nth(1)
        .and_then(|target| target.split_once('?'))
        .and_then(|(_, query)| query.split('&').find_map(|kv| kv.strip_prefix("scope=")))
        .map(|s| s.replace("%3A", ":").replace("%2F", "/").replace("%2C", ","))
        .unwrap_or_default();
    let repository = scope.split(':').nth(1).unwrap_or_default().to_owned();
    let mut out = stream;
    let reply = if authorized {
        let body = serde_json::json!({"token": minter.mint(&repository, &["pull"])}).to_string();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        let body = r#"{"details":"wrong or missing credentials"}"#;
        format!("HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
    };
    let _ = std::io::Write::write_all(&mut out, reply.as_bytes());
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
        Registry::launch(|_| Auth::None)
    }

    /// A registry that requires `user`/`password` (htpasswd, bcrypt).
    pub fn start_with_basic_auth(user: &str, password: &str) -> Registry {
        Registry::launch(|_| Auth::Basic(user.to_owned(), password.to_owned()))
    }

    /// A registry that requires Bearer tokens from a token server of the
    /// test's own, which hands them to `user`/`password`.
    pub fn start_with_token_auth(user: &str, password: &str) -> Registry {
        Registry::launch(|dir| Auth::Token(TokenServer::start(dir, user, password)))
    }

    /// A registry served over TLS with a certificate of its own (for
    /// 127.0.0.1), which clients must be told to trust: `ca_file()`.
    pub fn start_with_tls() -> Registry {
        Registry::launch_with(|_| Auth::None, true)
    }

    /// The PEM certificate of the CA that signed a TLS registry's certificate.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn launch(make_auth: impl FnOnce(&std::path::Path) -> Auth) -> Registry {
        Registry::launch_with(make_auth, false)
    }

    fn launch_with(make_auth: impl FnOnce(&std::path::Path) -> Auth, tls: bool) -> Registry {
        let dir = tempfile::Builder::new().prefix("bulkhead-registry-").tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("storage").display()
        );
        if tls {
            make_server_certificate(dir.path());
            let (key, cert) = (dir.path().join("tls.key"), dir.path().join("tls.crt"));
            config.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
        }
        let auth = make_auth(dir.path());
        if let Auth::Token(server) = &auth {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                server.realm,
                dir.path().join("token.crt").display()
            ));
        }
        if let Auth::Basic(user, password) = &auth {
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
        let scheme = if tls { "https" } else { "http" };
        Registry { child, dir, host, auth, scheme }
    }

    fn request(&self, builder: reqwest::RequestBuilder, repo: &str) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::Basic(user, password) => builder.basic_auth(user, Some(password)),
            // The fixture holds the signing key: it mints its own push token.
            Auth::Token(server) => builder.bearer_auth(server.minter().mint(repo, &["pull", "push"])),
            Auth::None => builder,
        }
    }

    /// The registry's storage directory.
    pub fn storage(&self) -> std::path::PathBuf {
        self.dir.path().join("storage")
    }

    async fn push_blob(&self, http: &reqwest::Client, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let start = self
            .request(http.post(format!("{}://{}/v2/{repo}/blobs/uploads/", self.scheme, self.host)), repo)
            .send()
            .await
            .expect("start upload");
        assert_eq!(start.status(), 202);
        let location = start.headers()["location"].to_str().expect("location").to_owned();
        let location =
            if location.starts_with("http") { location } else { format!("{}://{}{location}", self.scheme, self.host) };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .request(http.put(format!("{location}{sep}digest={digest}")), repo)
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
            .request(http.put(format!("{}://{}/v2/{repo}/manifests/{reference}", self.scheme, self.host)), repo)
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
        // The fixture trusts its own TLS registry's certificate.
        let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("HTTP client");
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, compression) in layers {
            let blob = compress(tar, *compression);
            let digest = self.push_blob(&http, repo, &blob).await;
            descriptors
                .push(serde_json::json!({"mediaType": compression.media_type(), "digest": digest, "size": blob.len()}));
            diff_ids.push(sha256(tar));
        }
        let config = serde_json::json!({
            "architecture": oci_arch(), "os": "linux",
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
            {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(), "platform": {"os": "linux", "architecture": oci_arch()}}
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
