//! The daemon's life: checks that refuse a bad start before anything is
//! created, the root and state directories (with their locks), the durable
//! state, the CRI socket, the optional metrics endpoint, and a graceful,
//! bounded shutdown on SIGTERM/SIGINT that never touches containers.
//!
//! A start that fails removes every directory it created, so a refused start
//! leaves the host as it found it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_image::ImageStore;
use bulkhead_image::registry::{HostConfig, RegistryConfig};
use bulkhead_network::Network;
use bulkhead_proto::cri::image_service_server::ImageServiceServer;
use bulkhead_proto::cri::runtime_service_server::RuntimeServiceServer;
use bulkhead_runtime::cgroups::{Driver, SYSTEMD_MARKER};
use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::locks::KeyedLocks;
use crate::metrics::Metrics;
use crate::service::{Context, Cri};
use crate::state::State;
use crate::{Error, Result, socket};

/// The largest CRI message accepted or sent, as kubelet's own client allows.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Refuses to run as anyone but root.
pub fn check_root() -> Result<()> {
    let euid = nix::unistd::geteuid();
    if euid.is_root() { Ok(()) } else { Err(Error::NotRoot { euid: euid.as_raw() }) }
}

/// Creates `dir` (and missing parents) with `mode`, remembering the topmost
/// directory it created so a failed start can remove it again.
fn create_dir(dir: &Path, mode: u32, created: &mut Vec<PathBuf>) -> Result<()> {
    let topmost_missing = dir.ancestors().take_while(|a| !a.exists()).last().map(Path::to_owned);
    DirBuilder::new().recursive(true).mode(mode).create(dir).map_err(Error::io("create directory", dir))?;
    created.extend(topmost_missing);
    Ok(())
}

/// Takes the exclusive lock of a root or state directory, recording our pid.
fn lock_dir(dir: &Path) -> Result<Flock<File>> {
    let path = dir.join("bulkhead.lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(Error::io("create lock file", &path))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => "pid unknown".to_owned(),
                pid => format!("pid {pid}"),
            };
            return Err(Error::Locked { path, holder });
        }
        Err((_, errno)) => return Err(Error::Io { op: "lock", path, source: errno.into() }),
    };
    let write_pid = |f: &mut File| -> std::io::Result<()> {
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}", std::process::id())
    };
    write_pid(&mut lock).map_err(Error::io("write lock file", &path))?;
    Ok(lock)
}

/// A daemon that has claimed its directories and socket and is ready to serve.
struct Ready {
    ctx: Arc<Context>,
    socket: socket::BoundSocket,
    metrics_listener: Option<tokio::net::TcpListener>,
    streaming_listener: crate::streaming::Listener,
    _locks: Vec<Flock<File>>,
}

/// What a start has claimed so far, so that a failed start can give it back:
/// directories it created (removed) and locks it holds (released after).
#[derive(Default)]
struct Claimed {
    dirs: Vec<PathBuf>,
    locks: Vec<Flock<File>>,
}

impl Claimed {
    /// Removes what this start created, then releases its locks.
    fn roll_back(self) {
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir_all(dir);
        }
        drop(self.locks);
    }
}

async fn prepare(config: Config, config_file: Option<PathBuf>, claimed: &mut Claimed) -> Result<Ready> {
    let cgroup_driver = Driver::choose(config.cgroup_driver(), Path::new(SYSTEMD_MARKER))?;
    let metrics_address = config.metrics_address().map_err(|message| Error::Config {
        origin: PathBuf::from("effective configuration"),
        key: "metrics.address".into(),
        message,
    })?;
    // A live daemon on the socket: refuse before creating anything.
    socket::probe(&config.socket)?;

    create_dir(&config.root, 0o711, &mut claimed.dirs)?;
    create_dir(&config.state, 0o711, &mut claimed.dirs)?;
    if let Some(parent) = config.socket.parent() {
        create_dir(parent, 0o711, &mut claimed.dirs)?;
    }
    claimed.locks.push(lock_dir(&config.root)?);
    claimed.locks.push(lock_dir(&config.state)?);

    let root = config.root.clone();
    let pod_cidrs = config.pod_cidrs();
    let network_options = bulkhead_network::Options {
        netns_dir: config.state.join("netns"),
        bridge: config.network.bridge.clone(),
        mtu: config.network.mtu,
        cni: bulkhead_network::cni::Settings {
            conf_dir: config.network.cni_conf_dir.clone(),
            bin_dirs: config.network.cni_bin_dirs.clone(),
            timeout: Duration::from_secs(config.network.cni_timeout_seconds),
        },
    };
    let registry = RegistryConfig {
        plain_http: config.image.plain_http_registries.clone(),
        hosts: config
            .image
            .registries
            .iter()
            .map(|h| HostConfig {
                registry: h.registry.clone(),
                mirrors: h.mirrors.clone(),
                ca_file: h.ca_file.clone(),
                skip_verify: h.skip_verify,
            })
            .collect(),
        max_concurrent_layers: config.image.max_concurrent_downloads,
        progress_timeout: match config.image.pull_progress_timeout_seconds {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        },
    };
    let (state, images, network) = tokio::task::spawn_blocking(move || -> Result<_> {
        let (state, recovered) = State::open(&root)?;
        for orphan in &recovered.orphans_removed {
            tracing::warn!(container_id = %orphan, "removed the record of a container whose pod record was gone");
        }
        let images = ImageStore::open(&root.join("images"), registry)?;
        let network = Network::open(&root.join("network"), pod_cidrs, network_options)?;
        tracing::info!(
            pods = recovered.pods,
            containers = recovered.containers,
            images = images.list()?.len(),
            "state recovered"
        );
        Ok((state, Arc::new(images), network))
    })
    .await
    .map_err(|e| Error::Internal(format!("state loading task failed: {e}")))??;

    // The network of every pod no record owns goes; the nftables table
    // and the bridge are rebuilt from the pods that remain.
    let live: Vec<String> = state.pods().into_iter().map(|p| p.id).collect();
    if let Err(e) = network.reconcile(&live).await {
        tracing::error!(error = %e, "reconciling pod networks failed; continuing");
    }

    let metrics_listener = match metrics_address {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| Error::Metrics { address: address.to_string(), source })?,
        ),
        None => None,
    };
    let streaming_address = config.streaming_address().map_err(|message| Error::Config {
        origin: PathBuf::from("effective configuration"),
        key: "streaming.address".into(),
        message,
    })?;
    let streaming_listener = crate::streaming::bind(&config.streaming, streaming_address).await?;
    let streaming_bound = streaming_listener
        .local_addr()
        .map_err(|e| Error::Streaming { address: streaming_address.to_string(), message: e.to_string() })?;
    let streaming = crate::streaming::Streaming::new(streaming_bound, streaming_listener.is_tls(), Default::default());
    let socket = socket::bind(&config.socket)?;
    let ctx = Arc::new(Context {
        config,
        config_file,
        cgroup_driver,
        state,
        images,
        network,
        locks: KeyedLocks::new(),
        metrics: Metrics::default(),
        events: crate::events::Events::default(),
        streaming,
    });
    Ok(Ready { ctx, socket, metrics_listener, streaming_listener, _locks: std::mem::take(&mut claimed.locks) })
}

/// Tells the service manager how the daemon is (sd_notify(3): `READY=1`,
/// `STOPPING=1`) when it asked, through `$NOTIFY_SOCKET` (a path, or an
/// abstract name after `@`); nothing otherwise. Best effort: a manager
/// that went away must not stop the daemon.
fn notify_service_manager(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let target = target.to_string_lossy().into_owned();
    let address = match target.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()),
        None => std::os::unix::net::SocketAddr::from_pathname(&target),
    };
    let sent = address.and_then(|address| {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &address)
    });
    if let Err(e) = sent {
        tracing::warn!(socket = %target, error = %e, "could not notify the service manager");
    }
}

/// Resolves when SIGTERM or SIGINT arrives, naming it.
async fn shutdown_signal() -> Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).map_err(Error::io("install SIGTERM handler", "signal"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::io("install SIGINT handler", "signal"))?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Runs the daemon until SIGTERM/SIGINT. Returns after a clean shutdown.
/// The caller has checked [`check_root`] and must shut its tokio runtime
/// down with a timeout, so a stuck blocking task cannot hold the exit.
pub async fn run(config: Config, config_file: Option<PathBuf>) -> Result<()> {
    let signal = tokio::spawn(shutdown_signal());
    let grace = Duration::from_secs(config.shutdown_timeout_seconds);
    let mut claimed = Claimed::default();
    let ready = match prepare(config, config_file, &mut claimed).await {
        Ok(ready) => ready,
        Err(e) => {
            claimed.roll_back();
            return Err(e);
        }
    };
    let Ready { ctx, socket, metrics_listener, streaming_listener, _locks } = ready;
    tracing::info!(url = ctx.streaming.base_url(), "streaming server listening");
    let streaming_task = tokio::spawn(crate::streaming::serve(ctx.clone(), streaming_listener));

    let metrics_task = metrics_listener.map(|listener| {
        tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics endpoint listening");
        tokio::spawn(ctx.metrics.clone().serve(listener))
    });

    tracing::info!(
        socket = %socket.path().display(),
        root = %ctx.config.root.display(),
        state = %ctx.config.state.display(),
        cgroup_driver = ctx.cgroup_driver.name(),
        version = env!("CARGO_PKG_VERSION"),
        "bulkhead is serving CRI v1"
    );
    let exits = tokio::spawn(crate::events::watch_exits(ctx.clone()));
    let (listener, _socket_file) = socket.into_parts();
    // The socket is bound and listening: connections wait in its backlog until served.
    notify_service_manager("READY=1");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cri = Cri::new(ctx.clone());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                RuntimeServiceServer::new(cri.clone())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                ImageServiceServer::new(cri)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );
    let server_ended_early;
    tokio::pin!(server);
    tokio::select! {
        joined = &mut server => {
            server_ended_early = Some(joined);
        }
        sig = signal => {
            let sig = sig.map_err(|e| Error::Internal(format!("signal task failed: {e}")))??;
            tracing::info!(signal = sig, grace_seconds = grace.as_secs(), "shutting down: no new connections; in-flight requests may finish");
            notify_service_manager("STOPPING=1");
            server_ended_early = None;
        }
    }
    if let Some(joined) = server_ended_early {
        let served = joined.map_err(|e| Error::Internal(format!("server task failed: {e}")))?;
        return served.map_err(|e| Error::Internal(format!("CRI server stopped: {e}")));
    }
    let _ = stop_tx.send(());
    match tokio::time::timeout(grace, &mut server).await {
        Ok(Ok(Ok(()))) => tracing::info!("all requests finished"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "CRI server ended with an error during shutdown"),
        Ok(Err(e)) => tracing::warn!(error = %e, "CRI server task failed during shutdown"),
        Err(_) => {
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "requests still running after the grace period; exiting anyway"
            );
            server.abort();
        }
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    exits.abort();
    streaming_task.abort();
    tracing::info!("bulkhead stopped; pods and containers were left running");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_directories_are_tracked_from_the_topmost() {
        let dir = tempfile::tempdir().unwrap();
        let mut created = Vec::new();
        create_dir(&dir.path().join("a/b/c"), 0o711, &mut created).unwrap();
        create_dir(&dir.path().join("a/b/d"), 0o711, &mut created).unwrap();
        create_dir(&dir.path().join("a/b"), 0o711, &mut created).unwrap();
        assert_eq!(created, vec![dir.path().join("a"), dir.path().join("a/b/d")]);
    }

    #[test]
    fn a_held_lock_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let err = lock_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(held);
        lock_dir(dir.path()).unwrap();
    }
}
