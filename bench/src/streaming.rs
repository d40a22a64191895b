//! `streaming`: the streaming benchmark. With one CRI client and one
//! streaming client (the `bulkhead-e2e` harness's, which speaks SPDY/3.1 as
//! kubectl and kubelet do), the same images, pods, host and run, for
//! bulkhead and for containerd's CRI plugin with runc and with crun:
//!
//! - **exec round trip**: the CRI `Exec` RPC for `/bin/busybox true` with
//!   stdout and stderr and no stdin or tty (what `kubectl exec POD -- true`
//!   asks), the SPDY upgrade on the returned URL with `v4.channel.k8s.io`,
//!   the error, stdout and stderr streams opened (each waiting for the
//!   server's reply, as client-go does), until the v4 status has come and
//!   the session has ended; p50 and p99, and each part's median;
//! - **port-forward throughput**: the `PortForward` RPC, a SPDY session on
//!   its URL, one connection (an error and a data stream) to a port on the
//!   pod's loopback, and 1 GiB through the data stream: from the pod (a
//!   busybox `nc` server runs `dd if=/dev/zero` for each connection; timed
//!   until the last byte has been read) and to the pod (`dd of=/dev/null
//!   count=N iflag=fullblock`, which answers with its record count once it
//!   has read all; timed until that answer). Time runs from opening the
//!   streams, so it includes the server's connection in the pod. MiB/s of
//!   each transfer; medians.
//!
//! The time stops at the last byte (or the answer), not at the end of the
//! stream: containerd, like the socat it replaced, waits up to 1 s for the
//! second direction once one has ended, and does not pass a half-close on.
//!
//! Each round runs every contender once, in a rotated order: its daemon
//! started on its own root (the images pulled beforehand), one pod whose
//! container runs both `nc` servers, a few unmeasured execs (the first waits
//! until both ports listen), the measured execs, then the transfers; then
//! the pod is removed, the daemon stopped and nothing may be left
//! (`bulkhead_bench::pods`, shared with `pod-start`).
//!
//! Run it as root through `bench/run-streaming.sh`; the results are in
//! `docs/benchmarks.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bulkhead_bench::daemon::Result;
use bulkhead_bench::pods::{BASELINE, Bench, CONTENDERS, Contender, PeerArgs, Pod, Workload, rpc_error};
use bulkhead_bench::{mean, median, ms, percentile, print_table, session, verdict};
use bulkhead_e2e::stream::{Finished, PortForward, RemoteCommand, Streams, Transport, read_all};
use bulkhead_proto::cri::runtime_service_client::RuntimeServiceClient;
use bulkhead_proto::cri::{ExecRequest, PortForwardRequest};
use clap::{Parser, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(
    args_override_self = true,
    about = "exec round trip and port-forward throughput over SPDY: bulkhead vs containerd+runc/crun"
)]
struct Args {
    /// Rounds (each runs every contender once, in a rotated order, on a fresh daemon and pod).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Exec: measured sessions per contender and round, one after another.
    #[arg(long, default_value_t = 40)]
    execs: usize,
    /// Exec: unmeasured sessions before them, in each contender's round.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Port-forward: MiB per transfer.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Port-forward: transfers per direction, contender and round.
    #[arg(long, default_value_t = 1)]
    transfers: usize,
    /// Port-forward: which directions to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Direction::FromPod, Direction::ToPod])]
    directions: Vec<Direction>,
    #[command(flatten)]
    peers: PeerArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Direction {
    /// The pod writes, the client reads.
    FromPod,
    /// The client writes, the pod reads.
    ToPod,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::FromPod => "pod → client",
            Direction::ToPod => "client → pod",
        }
    }

    fn port(self) -> u16 {
        match self {
            Direction::FromPod => SOURCE_PORT,
            Direction::ToPod => SINK_PORT,
        }
    }
}

/// The pod's server that writes `--mib` MiB of zeros to each connection.
const SOURCE_PORT: u16 = 9000;
/// The pod's server that reads `--mib` MiB from each connection, then
/// writes dd's record count to it.
const SINK_PORT: u16 = 9001;
/// The command each exec runs (the image has no /bin/true: busybox's applet).
const EXEC_CMD: [&str; 2] = ["/bin/busybox", "true"];
/// What `kubectl exec POD -- true` asks for.
const EXEC_STREAMS: Streams = Streams { stdin: false, stdout: true, stderr: true, tty: false };
const PROTOCOLS: &[&str] = &["v4.channel.k8s.io"];
/// The client's reads and writes on a data stream, as client-go's io.Copy.
const CHUNK: usize = 32 * 1024;
const MIB: u64 = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(120);

/// The container: both servers, each serving connection after connection.
fn workload(mib: u64) -> Workload {
    let script = format!(
        "/bin/busybox nc -ll -p {SOURCE_PORT} -e /bin/busybox dd if=/dev/zero bs=1M count={mib} & \
         /bin/busybox nc -ll -p {SINK_PORT} -e /bin/busybox sh -c '/bin/busybox dd of=/dev/null bs=1M count={mib} iflag=fullblock 2>&1' & \
         wait"
    );
    Workload {
        container: "servers".into(),
        command: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script],
        app: "streaming".into(),
        share_pid: false,
    }
}

// ------------------------------------------------------------------- exec

/// The parts of one exec round trip.
#[derive(Debug, Clone, Copy, Default)]
struct Exec {
    /// The Exec RPC, until the URL is back.
    rpc: Duration,
    /// TCP connect, the upgrade's 101 and the streams opened.
    connect: Duration,
    /// Until the v4 status has come and every stream has ended.
    finish: Duration,
    total: Duration,
}

/// Runs `cmd` in `container` over an exec session; its times and what came back.
async fn exec(rt: &mut RuntimeServiceClient<Channel>, container: &str, cmd: &[&str]) -> Result<(Exec, Finished)> {
    let t0 = Instant::now();
    let request = ExecRequest {
        container_id: container.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: EXEC_STREAMS.tty,
        stdin: EXEC_STREAMS.stdin,
        stdout: EXEC_STREAMS.stdout,
        stderr: EXEC_STREAMS.stderr,
    };
    let url = rt.exec(request).await.map_err(|s| rpc_error("Exec", &s))?.into_inner().url;
    let t1 = Instant::now();
    // The client panics on a failure: its own task turns that into an error.
    let (t2, done) = tokio::spawn(async move {
        let session = RemoteCommand::connect(&url, Transport::Spdy, EXEC_STREAMS, PROTOCOLS).await;
        let t2 = Instant::now();
        (t2, session.finish(TIMEOUT).await)
    })
    .await
    .map_err(|e| format!("exec {}: the streaming client failed: {e}", cmd.join(" ")))?;
    let t3 = Instant::now();
    let times = Exec { rpc: t1 - t0, connect: t2 - t1, finish: t3 - t2, total: t3 - t0 };
    Ok((times, done))
}

/// Execs until both servers listen (up to 20 s).
async fn wait_listening(rt: &mut RuntimeServiceClient<Channel>, pod: &Pod) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, done) = exec(rt, &pod.container, &["/bin/busybox", "netstat", "-ltn"]).await?;
        let out = String::from_utf8_lossy(&done.stdout);
        if [SOURCE_PORT, SINK_PORT].iter().all(|p| out.contains(&format!(":{p} "))) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("pod {}: the servers do not listen after 20 s: {out}", pod.name));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Measured exec round trips of `true`, checking each one's outcome.
async fn execs(rt: &mut RuntimeServiceClient<Channel>, pod: &Pod, warmup: usize, count: usize) -> Result<Vec<Exec>> {
    let mut samples = Vec::new();
    for i in 0..warmup + count {
        let (times, done) = exec(rt, &pod.container, &EXEC_CMD).await?;
        if done.exit_code() != Some(0) || !done.stdout.is_empty() || !done.stderr.is_empty() {
            return Err(format!(
                "exec {}: status {:?}, stdout {:?}, stderr {:?}",
                EXEC_CMD.join(" "),
                done.status,
                String::from_utf8_lossy(&done.stdout),
                String::from_utf8_lossy(&done.stderr)
            ));
        }
        if i >= warmup {
            samples.push(times);
        }
    }
    Ok(samples)
}

// ----------------------------------------------------------- port-forward

/// One transfer through a forwarded connection.
#[derive(Debug, Clone, Copy)]
struct Transfer {
    /// The PortForward RPC and the SPDY upgrade.
    setup: Duration,
    /// From opening the streams to the last byte (or the pod's answer).
    time: Duration,
    bytes: u64,
}

impl Transfer {
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.time.as_secs_f64()
    }
}

/// Moves `mib` MiB in `direction` through one forwarded connection to the pod.
async fn transfer(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &Pod,
    direction: Direction,
    mib: u64,
) -> Result<Transfer> {
    let port = direction.port();
    let t0 = Instant::now();
    let request = PortForwardRequest { pod_sandbox_id: pod.id.clone(), port: vec![i32::from(port)] };
    let url = rt.port_forward(request).await.map_err(|s| rpc_error("PortForward", &s))?.into_inner().url;
    let bytes = mib * MIB;
    let outcome = tokio::spawn(async move {
        let mut forward = PortForward::connect(&url).await;
        let t1 = Instant::now();
        let (mut data, mut error) = forward.open(port).await;
        let mut buf = vec![0u8; CHUNK];
        let mut answer = Vec::new();
        let mut read = 0u64;
        let fail = match direction {
            Direction::FromPod => {
                while read < bytes {
                    match tokio::time::timeout(TIMEOUT, data.read(&mut buf)).await {
                        Ok(Ok(0)) => break,
                        Ok(Ok(n)) => read += n as u64,
                        Ok(Err(e)) => return Err(format!("read after {read} bytes: {e}")),
                        Err(_) => return Err(format!("nothing to read for {TIMEOUT:?} after {read} bytes")),
                    }
                }
                (read != bytes).then(|| format!("{read} bytes came, not {bytes}"))
            }
            Direction::ToPod => {
                let mut sent = 0u64;
                while sent < bytes {
                    let n = (bytes - sent).min(CHUNK as u64) as usize;
                    if let Err(e) = data.write_all(&buf[..n]).await {
                        return Err(format!("write after {sent} bytes: {e}"));
                    }
                    sent += n as u64;
                }
                // dd's answer: "N+0 records in\nN+0 records out\n".
                let expected = format!("{mib}+0 records out");
                while !String::from_utf8_lossy(&answer).contains(&expected) {
                    match tokio::time::timeout(TIMEOUT, data.read(&mut buf)).await {
                        Ok(Ok(0)) => break,
                        Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                        Ok(Err(e)) => return Err(format!("read the answer: {e}")),
                        Err(_) => return Err(format!("no answer within {TIMEOUT:?}")),
                    }
                }
                let answer = String::from_utf8_lossy(&answer);
                (!answer.contains(&expected)).then(|| format!("the pod read less than {mib} MiB: {answer:?}"))
            }
        };
        let t2 = Instant::now();
        // Untimed: our half-close, the rest of the data stream (nothing
        // more may come), and the error stream, which must be empty.
        let _ = data.shutdown().await;
        let rest = read_all(&mut data, Duration::from_secs(10)).await;
        let error = read_all(&mut error, Duration::from_secs(10)).await;
        forward.close().await;
        let fail = fail
            .or_else(|| (!rest.is_empty()).then(|| format!("{} bytes more than asked came", rest.len())))
            .or_else(|| (!error.is_empty()).then(|| format!("error stream: {}", String::from_utf8_lossy(&error))));
        match fail {
            Some(message) => Err(message),
            None => Ok((t1, t2)),
        }
    })
    .await;
    let (t1, t2) = match outcome {
        Ok(Ok(times)) => times,
        Ok(Err(message)) => return Err(format!("port-forward {}: {message}", direction.name())),
        Err(e) => return Err(format!("port-forward {}: the streaming client failed: {e}", direction.name())),
    };
    Ok(Transfer { setup: t1 - t0, time: t2 - t1, bytes })
}

// ------------------------------------------------------------------ bench

#[derive(Debug, Default)]
struct Results {
    execs: BTreeMap<Contender, Vec<Exec>>,
    transfers: BTreeMap<(Contender, Direction), Vec<Transfer>>,
}

async fn measure(args: Args, bulkhead: PathBuf, work: PathBuf, run: PathBuf) -> Result<()> {
    let bench = Bench::prepare(args.peers.clone(), workload(args.mib), bulkhead, &work, &run).await?;
    println!("pod: one container, {}", bench.workload.command.join(" "));
    println!(
        "exec: {} over SPDY ({}), stdout and stderr; {} rounds × {} per contender after {} unmeasured",
        EXEC_CMD.join(" "),
        PROTOCOLS.join(", "),
        args.rounds,
        args.execs,
        args.warmup
    );
    println!(
        "port-forward: {} MiB per transfer, {} per direction, contender and round, one SPDY data stream, {} KiB reads and writes",
        args.mib,
        args.transfers,
        CHUNK / 1024
    );
    println!();
    let mut results = Results::default();
    let outcome = async {
        for round in 0..args.rounds {
            for k in 0..CONTENDERS.len() {
                let who = CONTENDERS[(round + k) % CONTENDERS.len()];
                let (samples, transfers) = session!(bench, who, |s| {
                    let (pod, _) = s.maker.start(&mut s.rt, bench.next_pod()).await?;
                    s.pods.push(pod.clone());
                    wait_listening(&mut s.rt, &pod).await?;
                    let samples = execs(&mut s.rt, &pod, args.warmup, args.execs).await?;
                    let mut transfers = Vec::new();
                    for _ in 0..args.transfers {
                        for &direction in &args.directions {
                            transfers.push((direction, transfer(&mut s.rt, &pod, direction, args.mib).await?));
                        }
                    }
                    Ok((samples, transfers))
                })
                .map_err(|e| format!("{} round {}: {e}", who.name(), round + 1))?;
                let at =
                    |q: f64, f: fn(&Exec) -> Duration| ms(percentile(&samples.iter().map(f).collect::<Vec<_>>(), q));
                let mut line = format!(
                    "{:<6} {:<16} exec p50 {:.2} ms, p99 {:.2} ms (RPC {:.2}, upgrade + streams {:.2}, the rest {:.2})",
                    round + 1,
                    who.name(),
                    at(0.5, |x| x.total),
                    at(0.99, |x| x.total),
                    at(0.5, |x| x.rpc),
                    at(0.5, |x| x.connect),
                    at(0.5, |x| x.finish)
                );
                for (direction, t) in &transfers {
                    line.push_str(&format!("; {} {:.0} MiB/s", direction.name(), t.mib_per_s()));
                }
                println!("{line}");
                results.execs.entry(who).or_default().extend(samples);
                for (direction, t) in transfers {
                    results.transfers.entry((who, direction)).or_default().push(t);
                }
            }
        }
        Ok(())
    }
    .await;
    bench.finish(outcome).await?;
    report(&args, &results);
    Ok(())
}

fn report(args: &Args, r: &Results) {
    let ms_at = |who: Contender, q: f64, f: fn(&Exec) -> Duration| {
        ms(percentile(&r.execs[&who].iter().map(f).collect::<Vec<_>>(), q))
    };
    let total = |x: &Exec| x.total;
    let (b50, b99) = (ms_at(BASELINE, 0.5, total), ms_at(BASELINE, 0.99, total));
    println!();
    println!(
        "exec round trip ({}: Exec RPC, SPDY upgrade and streams, until the v4 status and the end), {} samples each, ms:",
        EXEC_CMD.join(" "),
        r.execs[&BASELINE].len()
    );
    let rows = CONTENDERS.map(|who| {
        let all: Vec<Duration> = r.execs[&who].iter().map(total).collect();
        let (p50, p99) = (ms_at(who, 0.5, total), ms_at(who, 0.99, total));
        let cells = [p50, p99, ms(mean(&all)), ms_at(who, 0.5, |x| x.rpc), ms_at(who, 0.5, |x| x.connect)];
        let mut row = vec![who.name().to_owned()];
        row.extend(cells.iter().chain([&ms_at(who, 0.5, |x| x.finish)]).map(|v| format!("{v:.2}")));
        row.extend([p50 / b50, p99 / b99].iter().map(|v| format!("{v:.3}")));
        row
    });
    print_table(
        &[
            "contender",
            "p50",
            "p99",
            "mean",
            "Exec RPC p50",
            "upgrade + streams p50",
            "run, status, end p50",
            "p50 ÷ containerd+runc's",
            "p99 ÷ containerd+runc's",
        ],
        1,
        &rows,
    );
    let (r50, r99) = (ms_at(Contender::Bulkhead, 0.5, total) / b50, ms_at(Contender::Bulkhead, 0.99, total) / b99);
    println!();
    println!(
        "goal: bulkhead's exec latency at most 1/3 of containerd+runc's: p50 {r50:.3} ({:.1}× faster): {}; p99 {r99:.3} ({:.1}× faster): {}",
        1.0 / r50,
        verdict(r50 <= 1.0 / 3.0),
        1.0 / r99,
        verdict(r99 <= 1.0 / 3.0)
    );

    println!();
    println!(
        "port-forward, {} MiB per transfer through one SPDY data stream, MiB/s (median, min–max of {} transfers per direction):",
        args.mib,
        args.rounds * args.transfers
    );
    let of = |who: Contender, d: Direction| r.transfers.get(&(who, d)).cloned().unwrap_or_default();
    let rates = |who: Contender, d: Direction| of(who, d).iter().map(Transfer::mib_per_s).collect::<Vec<_>>();
    let mut rows = Vec::new();
    for &direction in &args.directions {
        let base = median(&rates(BASELINE, direction));
        for who in CONTENDERS {
            let v = rates(who, direction);
            let (lo, hi) = v.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            let setup = percentile(&of(who, direction).iter().map(|t| t.setup).collect::<Vec<_>>(), 0.5);
            let mut row = vec![who.name().to_owned(), direction.name().to_owned()];
            row.extend([median(&v), lo, hi].iter().map(|x| format!("{x:.0}")));
            row.extend([format!("{:.2}", median(&v) / base), format!("{:.2}", ms(setup))]);
            rows.push(row);
        }
    }
    print_table(
        &["contender", "direction", "median MiB/s", "min", "max", "÷ containerd+runc's", "setup p50 ms"],
        2,
        &rows,
    );
    println!();
    for &direction in &args.directions {
        let ratio = median(&rates(Contender::Bulkhead, direction)) / median(&rates(BASELINE, direction));
        println!(
            "goal: bulkhead's port-forward throughput ({}) at least containerd+runc's: {ratio:.2}: {}",
            direction.name(),
            verdict(ratio >= 1.0)
        );
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let peers = args.peers.clone();
    bulkhead_bench::pods::main("streaming", &peers, |bulkhead, work, run| measure(args, bulkhead, work, run))
}
