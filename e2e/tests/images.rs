//! ImageService through the daemon's socket, against a private registry:
//! pull, list, status, filesystem usage, removal and the space it frees.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use bulkhead_e2e::cri::*;
use bulkhead_e2e::registry::Registry;
use bulkhead_e2e::{Daemon, Sandbox};
use tonic::Code;

async fn daemon_for(registry: &Registry) -> Daemon {
    let sandbox = Sandbox::new();
    let config = sandbox.dir.path().join("config.toml");
    // One image is pinned in every test daemon; it only exists in one test.
    std::fs::write(
        &config,
        format!("[image]\nplain_http_registries = [\"{0}\"]\npinned_images = [\"{0}/multi/app:v1\"]\n", registry.host),
    )
    .unwrap();
    Daemon::start_with(sandbox, &["--config", config.to_str().unwrap()]).await
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec { image: image.to_owned(), ..ImageSpec::default() })
}

fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.flatten().count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_list_status_and_remove_an_image() {
    let registry = Registry::start();
    let pushed = registry.push_busybox("test/busybox", "v1").await;
    let daemon = daemon_for(&registry).await;
    let mut images = daemon.image().await;
    let name = format!("{}/test/busybox:v1", registry.host);

    let pulled =
        images.pull_image(PullImageRequest { image: spec(&name), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(pulled.image_ref, pushed.config_digest, "the image ref is the image id");

    let list = images.list_images(ListImagesRequest::default()).await.unwrap().into_inner().images;
    assert_eq!(list.len(), 1);
    let image = &list[0];
    assert_eq!(image.id, pushed.config_digest);
    assert_eq!(image.repo_tags, vec![name.clone()]);
    assert_eq!(image.repo_digests, vec![format!("{}/test/busybox@{}", registry.host, pushed.manifest_digest)]);
    assert_eq!(image.uid.as_ref().map(|u| u.value), Some(1000), "the config's User");
    assert!(!image.pinned);
    assert!(image.size >= pushed.layer_size);

    // By tag, by digest, by id and by a short id.
    for by in [name.clone(), image.repo_digests[0].clone(), image.id.clone(), image.id[7..19].to_owned()] {
        let status =
            images.image_status(ImageStatusRequest { image: spec(&by), verbose: true }).await.unwrap().into_inner();
        assert_eq!(status.image.as_ref().map(|i| i.id.clone()), Some(pushed.config_digest.clone()), "{by}");
        let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
        assert_eq!(info["config"]["config"]["Cmd"][0], "/bin/sh");
    }
    let unknown =
        images.image_status(ImageStatusRequest { image: spec("nothing/here:v9"), verbose: false }).await.unwrap();
    assert!(unknown.into_inner().image.is_none(), "an unknown image is an empty status, not an error");

    let fs = images.image_fs_info(ImageFsInfoRequest {}).await.unwrap().into_inner();
    let used = fs.image_filesystems[0].used_bytes.as_ref().unwrap().value;
    assert!(used > pushed.layer_tar.len() as u64, "the unpacked layer counts: {used}");

    // The layer was unpacked once into its snapshot, file by file.
    let snapshots = daemon.sandbox.root.join("images/snapshots");
    let layer_dir = std::fs::read_dir(&snapshots).unwrap().flatten().find(|e| e.file_name() != "tmp").unwrap().path();
    assert_eq!(std::fs::read(layer_dir.join("fs/bin/busybox")).unwrap(), std::fs::read("/bin/busybox").unwrap());

    images.remove_image(RemoveImageRequest { image: spec(&name) }).await.unwrap();
    assert!(images.list_images(ListImagesRequest::default()).await.unwrap().into_inner().images.is_empty());
    assert_eq!(
        count_files(&daemon.sandbox.root.join("images/content/blobs/sha256")),
        0,
        "garbage collection freed the blobs"
    );
    assert_eq!(count_files(&snapshots), 1, "and the snapshot (tmp/ stays)");
    images.remove_image(RemoveImageRequest { image: spec(&name) }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pulls_are_clear_statuses() {
    let registry = Registry::start();
    let daemon = daemon_for(&registry).await;
    let mut images = daemon.image().await;
    let missing = format!("{}/test/absent:v1", registry.host);
    let err = images.pull_image(PullImageRequest { image: spec(&missing), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("test/absent:v1"), "{}", err.message());
    let err =
        images.pull_image(PullImageRequest { image: spec("Not A Reference"), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = images.pull_image(PullImageRequest { image: None, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("image.image"), "{}", err.message());
    assert!(images.list_images(ListImagesRequest::default()).await.unwrap().into_inner().images.is_empty());
    assert_eq!(count_files(&daemon.sandbox.root.join("images/content/ingest")), 0, "no temporaries left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_credentials_from_kubelet_are_used_and_wrong_ones_refused() {
    let registry = Registry::start_with_basic_auth("alice", "s3cret");
    let pushed = registry.push_busybox("private/busybox", "v1").await;
    let daemon = daemon_for(&registry).await;
    let mut images = daemon.image().await;
    let name = format!("{}/private/busybox:v1", registry.host);
    let auth = |user: &str, password: &str| {
        Some(AuthConfig { username: user.into(), password: password.into(), ..Default::default() })
    };

    let err = images.pull_image(PullImageRequest { image: spec(&name), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = images
        .pull_image(PullImageRequest { image: spec(&name), auth: auth("alice", "wrong"), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains(&registry.host), "{}", err.message());

    let pulled = images
        .pull_image(PullImageRequest { image: spec(&name), auth: auth("alice", "s3cret"), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(pulled.into_inner().image_ref, pushed.config_digest);
    // The base64 "auth" form of the same credentials works too.
    images.remove_image(RemoveImageRequest { image: spec(&name) }).await.unwrap();
    let encoded = AuthConfig { auth: "YWxpY2U6czNjcmV0".into(), ..Default::default() };
    images
        .pull_image(PullImageRequest { image: spec(&name), auth: Some(encoded), ..Default::default() })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_auth_file_are_used_when_kubelet_sends_none() {
    let registry = Registry::start_with_basic_auth("alice", "s3cret");
    let pushed = registry.push_busybox("private/busybox", "v1").await;
    let sandbox = Sandbox::new();
    // As `docker login` writes it (a URL key), the form the chart installs.
    let auth_file = sandbox.dir.path().join("auth.json");
    let write_auth = |password: &str| {
        let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("alice:{password}"));
        let text = format!("{{\"auths\":{{\"https://{}/v1/\":{{\"auth\":\"{token}\"}}}}}}", registry.host);
        std::fs::write(&auth_file, text).unwrap();
    };
    write_auth("s3cret");
    let config = sandbox.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[image]\nplain_http_registries = [\"{}\"]\nauth_file = \"{}\"\n", registry.host, auth_file.display()),
    )
    .unwrap();
    let daemon = Daemon::start_with(sandbox, &["--config", config.to_str().unwrap()]).await;
    let mut images = daemon.image().await;
    let name = format!("{}/private/busybox:v1", registry.host);
    let pulled = images.pull_image(PullImageRequest { image: spec(&name), ..Default::default() }).await.unwrap();
    assert_eq!(pulled.into_inner().image_ref, pushed.config_digest);
    // Read at each pull: a changed file counts at once; kubelet's credentials come first.
    images.remove_image(RemoveImageRequest { image: spec(&name) }).await.unwrap();
    write_auth("wrong");
    let err = images.pull_image(PullImageRequest { image: spec(&name), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let from_kubelet = AuthConfig { username: "alice".into(), password: "s3cret".into(), ..Default::default() };
    images
        .pull_image(PullImageRequest { image: spec(&name), auth: Some(from_kubelet), ..Default::default() })
        .await
        .unwrap();
    std::fs::write(&auth_file, "not json").unwrap();
    images.remove_image(RemoveImageRequest { image: spec(&name) }).await.unwrap();
    let err = images.pull_image(PullImageRequest { image: spec(&name), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("image.auth_file"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_layer_multi_platform_image_with_whiteouts_and_zstd_is_assembled_right() {
    use bulkhead_e2e::registry::{LayerCompression, layer};
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let registry = Registry::start();
    let layers = vec![
        (
            layer(&[
                ("etc/", Directory, ""),
                ("etc/gone", Regular, "1"),
                ("etc/kept", Regular, "1"),
                ("opt/", Directory, ""),
                ("opt/old", Regular, "1"),
            ]),
            LayerCompression::Gzip,
        ),
        (
            layer(&[
                ("etc/.wh.gone", Regular, ""),
                ("opt/", Directory, ""),
                ("opt/.wh..wh..opq", Regular, ""),
                ("opt/new", Regular, "2"),
            ]),
            LayerCompression::Zstd,
        ),
        (
            layer(&[
                ("bin/", Directory, ""),
                ("bin/tool", Regular, "x"),
                ("bin/alias", Link, "bin/tool"),
                ("bin/link", Symlink, "tool"),
            ]),
            LayerCompression::Plain,
        ),
    ];
    let (index_digest, config_digest) = registry.push_image("multi/app", "v1", &layers, true).await;
    let daemon = daemon_for(&registry).await;
    let mut images = daemon.image().await;
    let name = format!("{}/multi/app:v1", registry.host);
    let pulled =
        images.pull_image(PullImageRequest { image: spec(&name), ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(pulled.image_ref, config_digest, "the host platform's image out of the index");
    let listed = images.list_images(ListImagesRequest::default()).await.unwrap().into_inner().images;
    assert!(listed[0].pinned, "pinned by image.pinned_images");
    let image =
        images.image_status(ImageStatusRequest { image: spec(&name), verbose: true }).await.unwrap().into_inner();
    assert_eq!(image.image.unwrap().repo_digests, vec![format!("{}/multi/app@{index_digest}", registry.host)]);
    let info: serde_json::Value = serde_json::from_str(&image.info["info"]).unwrap();
    let chains: Vec<String> = serde_json::from_value(info["chainIDs"].clone()).unwrap();
    assert_eq!(chains.len(), 3);
    let snapshot = |i: usize| {
        daemon.sandbox.root.join("images/snapshots").join(chains[i].trim_start_matches("sha256:")).join("fs")
    };
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(
        std::fs::symlink_metadata(snapshot(1).join("etc/gone")).unwrap().file_type().is_char_device(),
        "a whiteout"
    );
    assert_eq!(xattr::get(snapshot(1).join("opt"), "trusted.overlay.opaque").unwrap(), Some(b"y".to_vec()));
    assert_eq!(std::fs::read_to_string(snapshot(1).join("opt/new")).unwrap(), "2", "from the zstd layer");
    assert_eq!(std::fs::symlink_metadata(snapshot(2).join("bin/tool")).unwrap().nlink(), 2, "a hard link");
    assert_eq!(std::fs::read_link(snapshot(2).join("bin/link")).unwrap().to_str(), Some("tool"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_that_escapes_fails_the_pull_and_leaves_no_image() {
    use bulkhead_e2e::registry::{LayerCompression, layer};
    let registry = Registry::start();
    let outside = tempfile::tempdir().unwrap();
    let escape = format!("../../../../../../../..{}/pwned", outside.path().display());
    let evil = layer(&[("ok", tar::EntryType::Regular, "1"), (&escape, tar::EntryType::Regular, "x")]);
    registry.push_image("evil/app", "v1", &[(evil, LayerCompression::Gzip)], false).await;
    let daemon = daemon_for(&registry).await;
    let mut images = daemon.image().await;
    let name = format!("{}/evil/app:v1", registry.host);
    let err = images.pull_image(PullImageRequest { image: spec(&name), ..Default::default() }).await.unwrap_err();
    assert!(err.message().contains("'..' would leave the layer"), "{}", err.message());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside");
    assert!(
        images.list_images(ListImagesRequest::default()).await.unwrap().into_inner().images.is_empty(),
        "no image recorded"
    );
    assert_eq!(count_files(&daemon.sandbox.root.join("images/snapshots/tmp")), 0, "the half-unpacked layer is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_blob_in_the_registry_fails_the_pull_cleanly() {
    let registry = Registry::start();
    let pushed = registry.push_busybox("test/busybox", "v1").await;
    // Damage the layer as stored by the registry: it now serves other bytes.
    let layer_digest = {
        let blobs = registry.storage().join("docker/registry/v2/blobs/sha256");
        let mut found = None;
        for prefix in std::fs::read_dir(&blobs).unwrap().flatten() {
            for blob in std::fs::read_dir(prefix.path()).unwrap().flatten() {
                let data = blob.path().join("data");
                if std::fs::metadata(&data).unwrap().len() == pushed.layer_size {
                    let mut bytes = std::fs::read(&data).unwrap();
                    let last = bytes.len() - 1;
                    bytes[last / 2] ^= 0xff;
                    std::fs::write(&data, bytes).unwrap();
                    found = Some(blob.file_name().to_string_lossy().into_owned());
                }
            }
        }
        found.expect("the layer blob in the registry's storage")
    };
    let daemon = daemon_for(&registry).await;
    let mut images = daemon.image().await;
    let name = format!("{}/test/busybox:v1", registry.host);
    let err = images.pull_image(PullImageRequest { image: spec(&name), ..Default::default() }).await.unwrap_err();
    assert!(err.message().contains(&layer_digest) && err.message().contains("verification"), "{}", err.message());
    assert!(images.list_images(ListImagesRequest::default()).await.unwrap().into_inner().images.is_empty());
    assert_eq!(count_files(&daemon.sandbox.root.join("images/content/ingest")), 0, "no temporaries left");
    assert!(!daemon.sandbox.root.join("images/content/blobs/sha256").join(&layer_digest).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_during_the_pull_is_a_clear_error_and_leaves_nothing() {
    let registry = Registry::start();
    registry.push_busybox("test/busybox", "v1").await;
    // A root on a 1 MiB tmpfs: busybox alone is bigger.
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(&sandbox.root).unwrap();
    nix::mount::mount(Some("tmpfs"), &sandbox.root, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=1m"))
        .unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let unmount = Unmount(sandbox.root.clone());
    let config = sandbox.dir.path().join("config.toml");
    std::fs::write(&config, format!("[image]\nplain_http_registries = [\"{}\"]\n", registry.host)).unwrap();
    let mut daemon = Daemon::start_with(sandbox, &["--config", config.to_str().unwrap()]).await;
    let mut images = daemon.image().await;
    let name = format!("{}/test/busybox:v1", registry.host);
    let err = images.pull_image(PullImageRequest { image: spec(&name), ..Default::default() }).await.unwrap_err();
    assert!(err.message().contains("No space left on device"), "{}", err.message());
    assert!(images.list_images(ListImagesRequest::default()).await.unwrap().into_inner().images.is_empty());
    assert_eq!(count_files(&daemon.sandbox.root.join("images/content/ingest")), 0);
    assert_eq!(count_files(&daemon.sandbox.root.join("images/snapshots/tmp")), 0);
    drop(images);
    // Stop the daemon, then take the tmpfs away, before the harness checks for leftovers.
    assert!(daemon.terminate().success());
    drop(unmount);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_are_counted_in_the_metrics() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let registry = Registry::start();
    let pushed = registry.push_busybox("test/busybox", "v1").await;
    let sandbox = Sandbox::new();
    let config = sandbox.dir.path().join("config.toml");
    let address = format!("127.0.0.1:{}", bulkhead_e2e::free_port());
    std::fs::write(
        &config,
        format!("[image]\nplain_http_registries = [\"{}\"]\n[metrics]\naddress = \"{address}\"\n", registry.host),
    )
    .unwrap();
    let daemon = Daemon::start_with(sandbox, &["--config", config.to_str().unwrap()]).await;
    let mut images = daemon.image().await;
    let name = format!("{}/test/busybox:v1", registry.host);
    images.pull_image(PullImageRequest { image: spec(&name), ..Default::default() }).await.unwrap();
    let missing = format!("{}/test/busybox:nope", registry.host);
    images.pull_image(PullImageRequest { image: spec(&missing), ..Default::default() }).await.unwrap_err();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    assert!(body.contains("bulkhead_image_pulls_total{result=\"ok\"} 1"), "{body}");
    assert!(body.contains("bulkhead_image_pulls_total{result=\"error\"} 1"), "{body}");
    let bytes: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("bulkhead_image_pull_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(bytes >= pushed.layer_size, "{bytes}");
    assert!(body.contains("bulkhead_image_pull_duration_seconds_count 2"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_fetched_from_the_registry_s_token_server() {
    let registry = Registry::start_with_token_auth("alice", "s3cret");
    let pushed = registry.push_busybox("tokens/busybox", "v1").await;
    let daemon = daemon_for(&registry).await;
    let mut images = daemon.image().await;
    let name = format!("{}/tokens/busybox:v1", registry.host);
    let err = images.pull_image(PullImageRequest { image: spec(&name), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "the token server refuses anonymous: {err:?}");
    assert!(err.message().contains("wrong or missing credentials"), "its message is passed on: {}", err.message());
    let auth = Some(AuthConfig { username: "alice".into(), password: "s3cret".into(), ..Default::default() });
    let pulled = images.pull_image(PullImageRequest { image: spec(&name), auth, ..Default::default() }).await.unwrap();
    assert_eq!(pulled.into_inner().image_ref, pushed.config_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_tried_in_order_before_the_registry() {
    let with_image = Registry::start();
    let pushed = with_image.push_busybox("test/busybox", "v1").await;
    let dead = |_: ()| format!("127.0.0.1:{}", bulkhead_e2e::free_port());
    let (dead_upstream, dead_mirror) = (dead(()), dead(()));
    let sandbox = Sandbox::new();
    let config = sandbox.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[image]\nplain_http_registries = [\"{up}\", \"{live}\"]\n\
             [[image.registries]]\nregistry = \"{dead_upstream}\"\nmirrors = [\"http://{dead_mirror}\", \"http://{live}\"]\n\
             [[image.registries]]\nregistry = \"{live}\"\nmirrors = [\"http://{dead_mirror}\"]\n",
            up = dead_upstream,
            live = with_image.host,
        ),
    )
    .unwrap();
    let daemon = Daemon::start_with(sandbox, &["--config", config.to_str().unwrap()]).await;
    let mut images = daemon.image().await;
    // The registry is down and the first mirror too: the second mirror serves it.
    let via_mirror = format!("{dead_upstream}/test/busybox:v1");
    let pulled = images.pull_image(PullImageRequest { image: spec(&via_mirror), ..Default::default() }).await.unwrap();
    assert_eq!(pulled.into_inner().image_ref, pushed.config_digest);
    // The only mirror is down: the registry itself serves it.
    let direct = format!("{}/test/busybox:v1", with_image.host);
    images.pull_image(PullImageRequest { image: spec(&direct), ..Default::default() }).await.unwrap();
    let tags = images.list_images(ListImagesRequest::default()).await.unwrap().into_inner().images[0].repo_tags.clone();
    assert_eq!(tags.len(), 2, "one image, named both ways: {tags:?}");
}

#[test]
fn bad_registry_settings_are_refused_naming_the_key() {
    let sandbox = Sandbox::new();
    let config = sandbox.dir.path().join("config.toml");
    std::fs::write(&config, "[[image.registries]]\nregistry = \"docker.io\"\nmirrors = [\"mirror.example.com\"]\n")
        .unwrap();
    let (status, stderr) = bulkhead_e2e::run_to_exit({
        let mut c = sandbox.command(&[]);
        c.arg("--config").arg(&config);
        c
    });
    assert!(!status.success());
    assert!(stderr.contains("image.registries[0].mirrors"), "{stderr}");
}

/// A registry that serves one image's manifest and config, then stalls in
/// the middle of the layer: a pull that hangs until something kills it.
fn stalling_registry() -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use bulkhead_e2e::registry::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256};
    use std::io::{BufRead, BufReader, Write};
    let layer = vec![7u8; 100_000];
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(b"whatever")]}})
    .to_string();
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(&layer), "size": layer.len()}]})
    .to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_seen = stop.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if stop_seen.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let mut out = stream;
            let path = request.split_whitespace().nth(1).unwrap_or_default().to_owned();
            let (body, kind): (&[u8], &str) = if path.contains("/manifests/") {
                (manifest.as_bytes(), OCI_MANIFEST)
            } else if path.ends_with(&sha256(config.as_bytes())) {
                (config.as_bytes(), "application/octet-stream")
            } else {
                // The layer: half of it, then nothing.
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", layer.len());
                let _ = out.write_all(head.as_bytes());
                let _ = out.write_all(&layer[..layer.len() / 2]);
                let keep = out;
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_secs(60));
                    drop(keep);
                });
                continue;
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(body);
        }
    });
    (host, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_pull_restarts_with_no_image_and_no_leftovers() {
    let (host, stop) = stalling_registry();
    let sandbox = Sandbox::new();
    let config = sandbox.dir.path().join("config.toml");
    std::fs::write(&config, format!("[image]\nplain_http_registries = [\"{host}\"]\n")).unwrap();
    let mut daemon = Daemon::start_with(sandbox, &["--config", config.to_str().unwrap()]).await;
    let mut images = daemon.image().await;
    let name = format!("{host}/stalls/forever:v1");
    let pull =
        tokio::spawn(
            async move { images.pull_image(PullImageRequest { image: spec(&name), ..Default::default() }).await },
        );
    let ingest = daemon.sandbox.root.join("images/content/ingest");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while count_files(&ingest) == 0 {
        assert!(std::time::Instant::now() < deadline, "the layer download never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    daemon.kill9();
    assert!(pull.await.unwrap().is_err(), "the client sees the pull fail");
    assert_eq!(count_files(&ingest), 1, "the crash left a partial download");
    daemon.restart().await;
    assert_eq!(count_files(&ingest), 0, "cleared at start");
    let listed = daemon.image().await.list_images(ListImagesRequest::default()).await.unwrap().into_inner().images;
    assert!(listed.is_empty(), "no half-pulled image is visible");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_registry_is_trusted_through_its_configured_ca_file_only() {
    let registry = Registry::start_with_tls();
    let pushed = registry.push_busybox("tls/busybox", "v1").await;
    let name = format!("{}/tls/busybox:v1", registry.host);
    // Without the CA: TLS verification fails, and says so.
    let plain = Daemon::start().await;
    let err = plain
        .image()
        .await
        .pull_image(PullImageRequest { image: spec(&name), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&registry.host), "{}", err.message());
    let lower = err.message().to_lowercase();
    assert!(lower.contains("certificate") || lower.contains("issuer"), "the TLS cause is named: {}", err.message());
    drop(plain);
    // With the registry's CA file configured: trusted.
    let sandbox = Sandbox::new();
    let config = sandbox.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[image.registries]]\nregistry = \"{}\"\nca_file = \"{}\"\n",
            registry.host,
            registry.ca_file().display()
        ),
    )
    .unwrap();
    let daemon = Daemon::start_with(sandbox, &["--config", config.to_str().unwrap()]).await;
    let pulled =
        daemon.image().await.pull_image(PullImageRequest { image: spec(&name), ..Default::default() }).await.unwrap();
    assert_eq!(pulled.into_inner().image_ref, pushed.config_digest);
}
