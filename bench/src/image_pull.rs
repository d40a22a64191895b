//! `image-pull`: the time to pull and unpack one large image (default ~300 MB
//! uncompressed in 6 gzip layers of ~50 MB) from a docker-registry on
//! 127.0.0.1, for bulkhead and for containerd's CRI plugin, both driven by
//! the same CRI client (`PullImage`, then `RemoveImage`), against a floor:
//! the same layer blobs fetched with `curl` and piped into `tar -xz`, as
//! many at a time as bulkhead downloads (3).
//!
//! The image is built here from generated content that looks like a real
//! root filesystem's: directories of mixed-size files, most of random bytes
//! (like binaries: gzip gains nearly nothing), some of text (source, docs:
//! gzip shrinks them about 3×), and a few symlinks. It is pushed once to a
//! docker-registry started by the `bulkhead-e2e` fixture.
//!
//! Every round runs each contender once, in a rotated order (round `i`
//! starts with contender `i mod 3`). Each daemon is started for the round
//! on a fresh root, state directory and socket under the work directory,
//! waited for until its `ImageService` answers, and stopped (SIGTERM) and
//! removed after it: no content, snapshot or garbage collection carries
//! over from one round to the next, and start-up is not measured. Before
//! each timed pull the bench calls sync(2), so no contender pays for the
//! previous one's writeback. After each pull the bench checks that every
//! regular file of the image was unpacked (count and bytes).
//!
//! Run it as root through `bench/run-image-pull.sh`, which puts the work
//! directory (every contender's root and the registry's storage) on one
//! journaled ext4 file system of its own; the results are in
//! `docs/benchmarks.md`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bulkhead_bench::daemon::{ContainerdConfig, Daemon, write_containerd_config};
use bulkhead_bench::median;
use bulkhead_e2e::registry::{LayerCompression, Registry};
use bulkhead_proto::cri::image_service_client::ImageServiceClient;
use bulkhead_proto::cri::{ImageSpec, ListImagesRequest, PullImageRequest, RemoveImageRequest};
use clap::Parser;
use tonic::transport::Channel;

type Result<T> = std::result::Result<T, String>;

#[derive(Debug, Parser)]
#[command(about = "pull and unpack of one large image from a local registry: bulkhead, containerd, and curl | tar")]
struct Args {
    /// Measured rounds (each pulls once with every contender).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Unmeasured rounds before them (page cache, first-run costs).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Layers in the image.
    #[arg(long, default_value_t = 6)]
    layers: usize,
    /// Uncompressed size of each layer's files, MiB.
    #[arg(long, default_value_t = 50)]
    layer_mib: usize,
    /// Layers the floor fetches and unpacks at a time (bulkhead downloads 3 at a time).
    #[arg(long, default_value_t = 3)]
    parallel: usize,
    /// Seed of the generated content.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The bulkhead daemon [default: `bulkhead` next to this program].
    #[arg(long)]
    bulkhead: Option<PathBuf>,
    #[arg(long, default_value = "/usr/bin/containerd")]
    containerd: PathBuf,
    /// Where to make the bench's work directory [default: $TMPDIR or /tmp].
    #[arg(long)]
    workdir: Option<PathBuf>,
}

// ---------------------------------------------------------------- the image

/// splitmix64: a fast, seedable source of incompressible bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "fn",
    "let",
    "mut",
    "return",
    "if",
    "else",
    "match",
    "struct",
    "impl",
    "pub",
    "use",
    "self",
    "for",
    "in",
    "while",
    "loop",
    "break",
    "const",
    "static",
    "type",
    "where",
    "trait",
    "enum",
    "mod",
    "crate",
    "super",
    "the",
    "layer",
    "image",
    "pull",
    "registry",
    "digest",
    "manifest",
    "config",
    "snapshot",
    "content",
    "blob",
    "error",
    "result",
    "value",
    "buffer",
    "length",
    "offset",
    "index",
    "count",
    "state",
    "request",
    "response",
    "client",
    "server",
    "socket",
    "path",
    "file",
    "directory",
    "mount",
    "process",
    "thread",
    "signal",
    "timeout",
    "retry",
    "=",
    "{",
    "}",
    "(",
    ");",
    "->",
    "&&",
    "||",
    "0",
    "1",
    "42",
    "4096",
    "\"text\"",
    "// a comment:",
];

/// Text that compresses as source code does (about 3× with gzip).
fn text(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 80);
    while out.len() < size {
        let indent = rng.range(0, 4) * 4;
        out.extend(std::iter::repeat_n(b' ', indent));
        for _ in 0..rng.range(2, 12) {
            out.extend_from_slice(WORDS[rng.range(0, WORDS.len())].as_bytes());
            out.push(b' ');
        }
        out.push(b'\n');
    }
    out.truncate(size);
    out
}

/// What a layer or an image holds: regular files and their bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Files {
    count: u64,
    bytes: u64,
}

impl std::ops::AddAssign for Files {
    fn add_assign(&mut self, other: Files) {
        self.count += other.count;
        self.bytes += other.bytes;
    }
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).map_err(|e| format!("tar path {path}: {e}"))?;
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h.set_cksum();
    Ok(h)
}

/// Layer `n`'s tar: directories of 40 files until `target` bytes of file
/// content. By count 80 % of files are small (256 B–8 KiB), 19 % medium
/// (8–128 KiB), 1 % large (256 KiB–4 MiB); 30 % of files are text, the rest
/// random bytes; one symlink per directory.
fn build_layer(n: usize, target: usize, rng: &mut Rng) -> Result<(Vec<u8>, Files)> {
    let mut b = tar::Builder::new(Vec::with_capacity(target + target / 8));
    let mut files = Files::default();
    let append = |b: &mut tar::Builder<Vec<u8>>, h: &tar::Header, data: &[u8]| {
        b.append(h, data).map_err(|e| format!("tar append: {e}"))
    };
    for dir in ["opt/", "opt/bench/"] {
        append(&mut b, &header(dir, tar::EntryType::Directory, 0o755, 0)?, &[])?;
    }
    let top = format!("opt/bench/layer{n}/");
    append(&mut b, &header(&top, tar::EntryType::Directory, 0o755, 0)?, &[])?;
    let mut buf = Vec::new();
    let mut d = 0;
    while (files.bytes as usize) < target {
        let dir = format!("{top}d{d:03}/");
        append(&mut b, &header(&dir, tar::EntryType::Directory, 0o755, 0)?, &[])?;
        for f in 0..40 {
            let class = rng.range(0, 100);
            let size = match class {
                0..80 => rng.range(256, 8 << 10),
                80..99 => rng.range(8 << 10, 128 << 10),
                _ => rng.range(256 << 10, 4 << 20),
            };
            let is_text = rng.range(0, 10) < 3;
            let (name, mode) =
                if is_text { (format!("{dir}f{f:02}.txt"), 0o644) } else { (format!("{dir}f{f:02}.bin"), 0o755) };
            if is_text {
                buf = text(rng, size);
            } else {
                buf.resize(size, 0);
                rng.fill(&mut buf);
            }
            append(&mut b, &header(&name, tar::EntryType::Regular, mode, size as u64)?, &buf)?;
            files += Files { count: 1, bytes: size as u64 };
        }
        let mut link = header(&format!("{dir}latest"), tar::EntryType::Symlink, 0o777, 0)?;
        link.set_link_name("f00.bin").map_err(|e| format!("tar link: {e}"))?;
        link.set_cksum();
        append(&mut b, &link, &[])?;
        d += 1;
    }
    Ok((b.into_inner().map_err(|e| format!("tar: {e}"))?, files))
}

/// The image's repository in the registry.
const REPO: &str = "bench/large";

/// A layer blob as the registry serves it.
#[derive(Debug, Clone)]
struct Blob {
    digest: String,
    size: u64,
}

/// The layers of `reference`'s manifest, read back from the registry.
fn layer_blobs(host: &str, repo: &str, tag: &str) -> Result<Vec<Blob>> {
    let url = format!("http://{host}/v2/{repo}/manifests/{tag}");
    let out = Command::new("curl")
        .args(["-sSf", "-H", "Accept: application/vnd.oci.image.manifest.v1+json", &url])
        .output()
        .map_err(|e| format!("run curl: {e}"))?;
    if !out.status.success() {
        return Err(format!("curl {url}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("manifest from {url}: {e}"))?;
    let layers = manifest["layers"].as_array().ok_or_else(|| format!("manifest from {url}: no layers"))?;
    layers
        .iter()
        .map(|l| match (l["digest"].as_str(), l["size"].as_u64()) {
            (Some(digest), Some(size)) => Ok(Blob { digest: digest.to_owned(), size }),
            _ => Err(format!("manifest from {url}: a layer without digest or size: {l}")),
        })
        .collect()
}

// ------------------------------------------------------------- the daemons

/// An `ImageService` client once the daemon answers `ListImages` (up to 60 s).
async fn wait_ready(daemon: &mut Daemon, socket: &Path) -> Result<ImageServiceClient<Channel>> {
    daemon
        .wait_until(socket, |channel| async move {
            let mut client = ImageServiceClient::new(channel);
            match client.list_images(ListImagesRequest::default()).await {
                Ok(_) => Ok(client),
                Err(status) => Err(status.to_string()),
            }
        })
        .await
}

fn spec(reference: &str) -> Option<ImageSpec> {
    Some(ImageSpec { image: reference.to_owned(), ..Default::default() })
}

// ------------------------------------------------------------- contenders

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Contender {
    Bulkhead,
    Containerd,
    Floor,
}

const CONTENDERS: [Contender; 3] = [Contender::Bulkhead, Contender::Containerd, Contender::Floor];

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Bulkhead => "bulkhead",
            Contender::Containerd => "containerd",
            Contender::Floor => "floor",
        }
    }
}

/// One pull's measurements.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Start of the daemon until its ImageService answers (not in `pull`).
    startup: Duration,
    pull: Duration,
    /// When, within the pull, the last layer blob was in the content store
    /// (verified and renamed into `blobs/`), as a watcher polling every
    /// 10 ms saw it; none for the floor, which streams.
    downloaded: Option<Duration>,
    remove: Duration,
}

struct Bench {
    args: Args,
    work: PathBuf,
    bulkhead: PathBuf,
    registry_host: String,
    reference: String,
    blobs: Vec<Blob>,
    expected: Files,
}

impl Bench {
    async fn run(&self, who: Contender, round: &str) -> Result<Sample> {
        let dir = self.work.join(format!("{round}-{}", who.name()));
        fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let result = match who {
            Contender::Bulkhead => self.bulkhead(&dir).await,
            Contender::Containerd => self.containerd(&dir).await,
            Contender::Floor => self.floor(&dir),
        };
        let mounts = mounts_under(&dir);
        if !mounts.is_empty() {
            return Err(format!("{}: mounts left under {}: {mounts:?}", who.name(), dir.display()));
        }
        let sample = result.map_err(|e| format!("{} ({round}): {e}", who.name()))?;
        fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
        nix::unistd::sync();
        Ok(sample)
    }

    /// Times `PullImage` through `client`, checks the snapshots under
    /// `snapshots`, then times `RemoveImage` and checks the image is gone.
    async fn pull_and_remove(
        &self,
        client: &mut ImageServiceClient<Channel>,
        snapshots: &Path,
        blobs: &Path,
        startup: Duration,
    ) -> Result<Sample> {
        let paths: Vec<PathBuf> =
            self.blobs.iter().map(|b| blobs.join(b.digest.trim_start_matches("sha256:"))).collect();
        nix::unistd::sync();
        let t0 = Instant::now();
        let watcher = tokio::spawn(async move {
            loop {
                if paths.iter().all(|p| p.exists()) {
                    return t0.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let pulled = client
            .pull_image(PullImageRequest { image: spec(&self.reference), ..Default::default() })
            .await
            .map_err(|s| format!("PullImage: {s}"));
        let pull = t0.elapsed();
        let downloaded = match tokio::time::timeout(Duration::from_millis(100), watcher).await {
            Ok(Ok(at)) => Some(at.min(pull)),
            _ => None,
        };
        let pulled = pulled?;
        let image_ref = pulled.into_inner().image_ref;
        self.check_files(snapshots)?;
        let t1 = Instant::now();
        client
            .remove_image(RemoveImageRequest { image: spec(&image_ref) })
            .await
            .map_err(|s| format!("RemoveImage {image_ref}: {s}"))?;
        let remove = t1.elapsed();
        let left = client.list_images(ListImagesRequest::default()).await.map_err(|s| format!("ListImages: {s}"))?;
        let left = left.into_inner().images;
        if !left.is_empty() {
            return Err(format!("after RemoveImage, images remain: {left:?}"));
        }
        Ok(Sample { startup, pull, downloaded, remove })
    }

    /// Every regular file of the image, in the snapshot directories
    /// `<snapshots>/*/fs` (or `<snapshots>/*` for the floor).
    fn check_files(&self, snapshots: &Path) -> Result<()> {
        let mut found = Files::default();
        walk(snapshots, &mut found);
        if found != self.expected {
            return Err(format!(
                "unpacked {} files of {} bytes under {}; the image has {} files of {} bytes",
                found.count,
                found.bytes,
                snapshots.display(),
                self.expected.count,
                self.expected.bytes
            ));
        }
        Ok(())
    }

    async fn bulkhead(&self, dir: &Path) -> Result<Sample> {
        let config = dir.join("config.toml");
        let toml = format!("[image]\nplain_http_registries = [\"{}\"]\n", self.registry_host);
        fs::write(&config, toml).map_err(|e| format!("write {}: {e}", config.display()))?;
        let socket = dir.join("run/bulkhead.sock");
        let started = Instant::now();
        let mut daemon = Daemon::bulkhead(
            &self.bulkhead,
            [&dir.join("root"), &dir.join("state")],
            &socket,
            &config,
            "warn",
            &self.work.join("bulkhead.log"),
        )?;
        let mut client = wait_ready(&mut daemon, &socket).await?;
        let startup = started.elapsed();
        let root = dir.join("root/images");
        let sample = self
            .pull_and_remove(&mut client, &root.join("snapshots"), &root.join("content/blobs/sha256"), startup)
            .await;
        drop(client);
        let stopped = daemon.stop().await;
        let sample = sample?;
        stopped?;
        Ok(sample)
    }

    async fn containerd(&self, dir: &Path) -> Result<Sample> {
        let socket = dir.join("containerd.sock");
        let config = ContainerdConfig { sandbox_image: &self.reference, ..ContainerdConfig::default() };
        let config_path = write_containerd_config(dir, &self.registry_host, &config)?;
        let started = Instant::now();
        let mut daemon = Daemon::spawn(
            "containerd",
            Command::new(&self.args.containerd).arg("--config").arg(&config_path),
            &self.work.join("containerd.log"),
        )?;
        let mut client = wait_ready(&mut daemon, &socket).await?;
        let startup = started.elapsed();
        let snapshots = dir.join("root/io.containerd.snapshotter.v1.overlayfs/snapshots");
        let blobs = dir.join("root/io.containerd.content.v1.content/blobs/sha256");
        let sample = self.pull_and_remove(&mut client, &snapshots, &blobs, startup).await;
        drop(client);
        let stopped = daemon.stop().await;
        let sample = sample?;
        stopped?;
        Ok(sample)
    }

    /// `curl URL | tar -xz -C <dir>/<layer>`, `parallel` layers at a time.
    fn floor(&self, dir: &Path) -> Result<Sample> {
        for i in 0..self.blobs.len() {
            let layer = dir.join(format!("{i}/fs"));
            fs::create_dir_all(&layer).map_err(|e| format!("create {}: {e}", layer.display()))?;
        }
        let next = AtomicUsize::new(0);
        let errors = Mutex::new(Vec::new());
        nix::unistd::sync();
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..self.args.parallel.max(1) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(blob) = self.blobs.get(i) else { break };
                        let url = format!("http://{}/v2/{REPO}/blobs/{}", self.registry_host, blob.digest);
                        if let Err(e) = curl_tar(&url, &dir.join(format!("{i}/fs"))) {
                            errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(e);
                        }
                    }
                });
            }
        });
        let pull = t0.elapsed();
        let errors = errors.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        self.check_files(dir)?;
        Ok(Sample { startup: Duration::ZERO, pull, downloaded: None, remove: Duration::ZERO })
    }
}

/// `curl -sSf URL | tar -xzf - -C DIR`; both must succeed.
fn curl_tar(url: &str, dir: &Path) -> Result<()> {
    let mut curl = Command::new("curl")
        .args(["-sSf", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run curl: {e}"))?;
    let pipe = curl.stdout.take().ok_or("curl's stdout")?;
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg("-")
        .arg("-C")
        .arg(dir)
        .stdin(pipe)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("run tar: {e}"))?;
    let mut curl_err = String::new();
    if let Some(mut err) = curl.stderr.take() {
        let _ = err.read_to_string(&mut curl_err);
    }
    let curl_status = curl.wait().map_err(|e| format!("wait for curl: {e}"))?;
    if !curl_status.success() {
        return Err(format!("curl {url}: {curl_status}: {curl_err}"));
    }
    if !tar.status.success() {
        return Err(format!("tar -xz -C {}: {}: {}", dir.display(), tar.status, String::from_utf8_lossy(&tar.stderr)));
    }
    Ok(())
}

/// Counts regular files and their bytes under `dir`, at any depth.
fn walk(dir: &Path, found: &mut Files) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        if meta.is_dir() {
            walk(&entry.path(), found);
        } else if meta.is_file() {
            *found += Files { count: 1, bytes: meta.len() };
        }
    }
}

/// Mount points at or under `dir`, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_owned)
        .collect()
}

// ------------------------------------------------------------------ report

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn report(bench: &Bench, samples: &BTreeMap<Contender, Vec<Sample>>) {
    let compressed: u64 = bench.blobs.iter().map(|b| b.size).sum();
    let mb = compressed as f64 / 1e6;
    let pulls = |c: Contender| samples[&c].iter().map(|s| secs(s.pull)).collect::<Vec<_>>();
    let med = |c: Contender| median(&pulls(c));
    let (b, c, f) = (med(Contender::Bulkhead), med(Contender::Containerd), med(Contender::Floor));
    println!();
    println!(
        "pull and unpack, {} rounds ({mb:.1} MB compressed, {:.1} MB of files):",
        samples[&Contender::Bulkhead].len(),
        bench.expected.bytes as f64 / 1e6
    );
    println!();
    println!(
        "| contender | median s | min s | max s | MB/s (compressed, at the median) | median / bulkhead's | median / floor's |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for who in CONTENDERS {
        let xs = pulls(who);
        let m = median(&xs);
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = xs.iter().copied().fold(0.0, f64::max);
        println!("| {} | {m:.2} | {min:.2} | {max:.2} | {:.0} | {:.2} | {:.2} |", who.name(), mb / m, m / b, m / f);
    }
    println!();
    for who in [Contender::Bulkhead, Contender::Containerd] {
        let start = median(&samples[&who].iter().map(|s| secs(s.startup)).collect::<Vec<_>>());
        let remove = median(&samples[&who].iter().map(|s| secs(s.remove)).collect::<Vec<_>>());
        let downloaded: Vec<f64> = samples[&who].iter().filter_map(|s| s.downloaded.map(secs)).collect();
        let after: Vec<f64> =
            samples[&who].iter().filter_map(|s| s.downloaded.map(|d| secs(s.pull) - secs(d))).collect();
        println!(
            "{}: every layer blob in the content store at {:.2} s (median), PullImage returned {:.2} s after that (median); start-up until ImageService answers (not measured) {start:.2} s; RemoveImage {remove:.2} s",
            who.name(),
            median(&downloaded),
            median(&after),
        );
    }
    println!();
    let speedup = c / b;
    let to_floor = b / f;
    println!(
        "containerd / bulkhead: {speedup:.3} (goal: at least 2): {}",
        if speedup >= 2.0 { "met" } else { "missed" }
    );
    println!("bulkhead / floor: {to_floor:.3} (goal: at most 1.3): {}", if to_floor <= 1.3 { "met" } else { "missed" });
}

// -------------------------------------------------------------------- main

async fn run(args: Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root: both daemons need it".into());
    }
    let bulkhead = bulkhead_bench::bulkhead_binary(args.bulkhead.as_deref())?;
    bulkhead_bench::require_files([bulkhead.as_path(), args.containerd.as_path()])?;
    let work = bulkhead_bench::work_dir("bulkhead-image-pull-", args.workdir.as_deref())?;
    println!("work directory: {}", work.path().display());
    let result = measure(args, bulkhead, work.path()).await;
    // Never remove a directory that still has something mounted under it.
    let left = mounts_under(work.path());
    if !left.is_empty() {
        let kept = work.keep();
        let err = format!("mounts left under {} (kept): {left:?}", kept.display());
        return Err(match result {
            Ok(()) => err,
            Err(e) => format!("{e}\n{err}"),
        });
    }
    work.close().map_err(|e| format!("remove the work directory: {e}"))?;
    result
}

/// Builds and pushes the image, then runs the rounds and reports.
async fn measure(args: Args, bulkhead: PathBuf, work: &Path) -> Result<()> {
    // The image.
    let t = Instant::now();
    let mut rng = Rng(args.seed);
    let mut layers = Vec::new();
    let mut expected = Files::default();
    for n in 0..args.layers {
        let (tar, files) = build_layer(n, args.layer_mib << 20, &mut rng)?;
        expected += files;
        layers.push((tar, LayerCompression::Gzip));
    }
    let tar_bytes: usize = layers.iter().map(|(t, _)| t.len()).sum();
    let registry = Registry::start();
    let (repo, tag) = (REPO, "v1");
    registry.push_image(repo, tag, &layers, false).await;
    drop(layers);
    let blobs = layer_blobs(&registry.host, repo, tag)?;
    let compressed: u64 = blobs.iter().map(|b| b.size).sum();
    let reference = format!("{}/{repo}:{tag}", registry.host);
    println!(
        "image: {reference}, {} gzip layers, {} files, {:.1} MB of files, {:.1} MB of tar, {:.1} MB compressed ({:.2}); built and pushed in {:.1} s",
        blobs.len(),
        expected.count,
        expected.bytes as f64 / 1e6,
        tar_bytes as f64 / 1e6,
        compressed as f64 / 1e6,
        compressed as f64 / tar_bytes as f64,
        t.elapsed().as_secs_f64()
    );
    println!(
        "layer blobs, MB: {}",
        blobs.iter().map(|b| format!("{:.1}", b.size as f64 / 1e6)).collect::<Vec<_>>().join(", ")
    );

    let bench = Bench {
        args,
        work: work.to_owned(),
        bulkhead,
        registry_host: registry.host.clone(),
        reference,
        blobs,
        expected,
    };
    let mut samples: BTreeMap<Contender, Vec<Sample>> = CONTENDERS.iter().map(|c| (*c, Vec::new())).collect();
    println!();
    println!(
        "round   order                        bulkhead s (downloaded at)  containerd s (downloaded at)  floor s   start-up b/c s  RemoveImage b/c s"
    );
    let total = bench.args.warmup + bench.args.rounds;
    for i in 0..total {
        let measured = i >= bench.args.warmup;
        let label = if measured { format!("{}", i - bench.args.warmup + 1) } else { format!("w{}", i + 1) };
        let order: Vec<Contender> = (0..3).map(|k| CONTENDERS[(i + k) % 3]).collect();
        let mut round = BTreeMap::new();
        for who in &order {
            round.insert(*who, bench.run(*who, &format!("r{i}")).await?);
        }
        let p = |c: Contender| secs(round[&c].pull);
        let dl = |c: Contender| round[&c].downloaded.map_or("?".to_owned(), |d| format!("{:.2}", secs(d)));
        let names: Vec<&str> = order.iter().map(|c| c.name()).collect();
        println!(
            "{:<7} {:<28} {:>10.2} ({:>5})  {:>12.2} ({:>5})  {:>15.2}   {:.2}/{:.2}       {:.2}/{:.2}",
            if measured { label } else { format!("{label}*") },
            names.join(","),
            p(Contender::Bulkhead),
            dl(Contender::Bulkhead),
            p(Contender::Containerd),
            dl(Contender::Containerd),
            p(Contender::Floor),
            secs(round[&Contender::Bulkhead].startup),
            secs(round[&Contender::Containerd].startup),
            secs(round[&Contender::Bulkhead].remove),
            secs(round[&Contender::Containerd].remove),
        );
        if measured {
            for (who, sample) in round {
                samples.entry(who).or_default().push(sample);
            }
        }
    }
    if bench.args.warmup > 0 {
        println!("(* unmeasured)");
    }
    report(&bench, &samples);
    Ok(())
}

fn main() -> ExitCode {
    bulkhead_bench::main_with("image-pull", run(Args::parse()))
}
