//! `bulkhead-monitor`: the per-pod monitor, started by the daemon. It
//! detaches at once; the line `ready <pid>` on stdout says it serves.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "bulkhead's per-pod monitor (started by the bulkhead daemon)")]
struct Args {
    /// The pod sandbox id.
    #[arg(long)]
    pod_id: String,
    /// The pod's state directory.
    #[arg(long)]
    dir: PathBuf,
    /// The runtime core's state root.
    #[arg(long)]
    runtime_root: PathBuf,
    /// The control socket (its path must fit a unix socket address).
    #[arg(long)]
    socket: PathBuf,
    /// Give the pod a UTS namespace with this hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Give the pod an IPC namespace of its own.
    #[arg(long)]
    new_ipc: bool,
    /// Give the pod a pid namespace its containers share.
    #[arg(long)]
    new_pid: bool,
    /// Move into this cgroup (cgroupfs path), created if needed.
    #[arg(long)]
    cgroup: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let options = bulkhead_monitor::Options {
        pod_id: args.pod_id,
        dir: args.dir,
        runtime_root: args.runtime_root,
        socket: args.socket,
        hostname: args.hostname,
        new_ipc: args.new_ipc,
        new_pid: args.new_pid,
        cgroup: args.cgroup,
    };
    if let Err(message) = bulkhead_monitor::run(options) {
        eprintln!("bulkhead-monitor: {message}");
        std::process::exit(1);
    }
}
