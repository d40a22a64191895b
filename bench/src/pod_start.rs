//! `pod-start`: the headline pod benchmark. With one CRI client, the same
//! images, host and run, for bulkhead and for containerd's CRI plugin with
//! runc and with crun (one containerd, two runtime handlers):
//!
//! - **latency**: RunPodSandbox + CreateContainer + StartContainer, then
//!   ContainerStatus until it says RUNNING, of a busybox container running
//!   `/bin/busybox sleep 3600`, one pod after another; p50 and p99;
//! - **memory**: with M pods running, the PSS (`/proc/PID/smaps_rollup`) of
//!   the runtime's own per-pod processes — bulkhead's monitors (and their
//!   pid-namespace holders when the pod shares one), containerd's shims and
//!   pause processes — divided by M, and the daemon's own PSS;
//! - **scale**: the wall time until 110 pods run, started by 8 clients at once.
//!
//! Rounds interleave the contenders in a rotated order. Each contender's
//! daemon is started for its turn and stopped after it, once every pod it
//! ran has been removed and nothing of them is left; the daemons, images,
//! pods and these checks are `bulkhead_bench::pods`, shared with the
//! streaming bench (`--share-pid` gives pods one pid namespace).
//!
//! Run it as root through `bench/run-pod-start.sh`; the results are in
//! `docs/benchmarks.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bulkhead_bench::daemon::{Result, connect};
use bulkhead_bench::pods::{
    BASELINE, Bench, CONTENDERS, Contender, Kind, PAUSE_ARGS, PeerArgs, Proc, Session, Steps, Workload, mentions,
    processes, remove_pod,
};
use bulkhead_bench::{mean, ms, percentile, session, verdict};
use bulkhead_proto::cri::runtime_service_client::RuntimeServiceClient;
use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    args_override_self = true,
    about = "pod start latency, per-pod memory and 110-pod start time: bulkhead vs containerd+runc/crun"
)]
struct Args {
    /// Which measurements to make.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Phase::Latency, Phase::Memory, Phase::Scale])]
    phases: Vec<Phase>,
    /// Latency: measured pods per contender and round, started one after another.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Latency: rounds (each runs every contender once, in a rotated order).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Latency: unmeasured pods at the start of each contender's round.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Memory: pods running while PSS is read.
    #[arg(long, default_value_t = 20)]
    memory_pods: usize,
    /// Scale: pods to start.
    #[arg(long, default_value_t = 110)]
    scale_pods: usize,
    /// Scale: clients starting pods at once (each with its own connection).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Pods share one pid namespace (namespace_options.pid POD; kubelet's
    /// shareProcessNamespace) instead of one per container (CONTAINER, kubelet's default).
    #[arg(long)]
    share_pid: bool,
    #[command(flatten)]
    peers: PeerArgs,
    /// Write every latency sample to this CSV file (contender, round, pod
    /// index in the round, pods already running, each step in ms).
    #[arg(long)]
    samples: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Phase {
    Latency,
    Memory,
    Scale,
}

/// The workload.
const WORKLOAD_ARGS: [&str; 3] = ["/bin/busybox", "sleep", "3600"];
const CONTAINER_NAME: &str = "sleep";

// --------------------------------------------------------- host processes

fn program(p: &Proc) -> &str {
    p.argv.first().map(|a| a.rsplit('/').next().unwrap_or(a)).unwrap_or("")
}

/// The proportional set size of a process, KiB.
fn pss_kib(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{path}: no Pss line"))
}

/// What the memory phase reads.
#[derive(Debug, Clone, Default)]
struct Memory {
    pods: usize,
    /// The per-pod runtime processes, by program name: (count, PSS KiB).
    per_pod: BTreeMap<String, (usize, u64)>,
    daemon_kib: u64,
}

impl Memory {
    fn per_pod_mib(&self) -> f64 {
        let total: u64 = self.per_pod.values().map(|(_, kib)| kib).sum();
        total as f64 / 1024.0 / self.pods as f64
    }

    fn describe(&self) -> String {
        self.per_pod
            .iter()
            .map(|(name, (count, kib))| {
                format!("{count} × {name} ({:.2} MiB each)", *kib as f64 / 1024.0 / (*count).max(1) as f64)
            })
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

// ------------------------------------------------------------------ pods

/// The per-pod runtime processes of a session's daemon, and its own PSS.
fn read_memory(s: &Session) -> Result<Memory> {
    let procs = processes();
    // Monitors name their pod's state directory, shims containerd's socket.
    let marker = s.dirs[1].display().to_string();
    let mut chosen: Vec<&Proc> = Vec::new();
    match s.who.kind() {
        Kind::Bulkhead => {
            // Every process of the monitor's program (the monitor and,
            // with a shared pid namespace, the namespace's pid 1 it forks,
            // which never execs); container processes run busybox.
            chosen.extend(procs.iter().filter(|p| program(p) == "bulkhead-monitor" && mentions(p, &marker)));
        }
        Kind::Containerd => {
            let shims: BTreeSet<i32> = procs
                .iter()
                .filter(|p| program(p) == "containerd-shim-runc-v2" && mentions(p, &marker))
                .map(|p| p.pid)
                .collect();
            chosen.extend(procs.iter().filter(|p| shims.contains(&p.pid)));
            chosen.extend(procs.iter().filter(|p| shims.contains(&p.ppid) && p.argv == PAUSE_ARGS));
        }
    }
    let pids: BTreeSet<i32> = chosen.iter().map(|p| p.pid).collect();
    let mut per_pod: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for p in chosen {
        let name = if p.argv == PAUSE_ARGS {
            "pause".to_owned()
        } else if pids.contains(&p.ppid) {
            // A monitor's child that never exec'd: its pid namespace's pid 1.
            format!("{} (pid-namespace holder)", program(p))
        } else {
            program(p).to_owned()
        };
        let entry = per_pod.entry(name).or_default();
        entry.0 += 1;
        entry.1 += pss_kib(p.pid)?;
    }
    let pods = s.pods.len();
    // Each pod must have its own: a monitor, or a shim and a pause.
    let expect: &[&str] = match s.who.kind() {
        Kind::Bulkhead => &["bulkhead-monitor"],
        Kind::Containerd => &["containerd-shim-runc-v2", "pause"],
    };
    for name in expect {
        let count = per_pod.get(*name).map_or(0, |(c, _)| *c);
        if count < pods {
            return Err(format!("{}: {count} {name} processes for {pods} pods", s.who.name()));
        }
    }
    let daemon = s.daemon.pid().ok_or_else(|| format!("{} is not running", s.who.name()))?;
    Ok(Memory { pods, per_pod, daemon_kib: pss_kib(daemon)? })
}

/// Starts `count` pods with `concurrency` clients, each on its own
/// connection; returns the wall time until every container runs.
async fn start_many(bench: &Bench, s: &mut Session, count: usize, concurrency: usize) -> Result<Duration> {
    let mut clients = Vec::new();
    for _ in 0..concurrency.max(1) {
        clients.push(RuntimeServiceClient::new(connect(&s.socket).await?));
    }
    let numbers: Arc<Vec<usize>> = Arc::new((0..count).map(|_| bench.next_pod()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    nix::unistd::sync();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut rt in clients {
        let (numbers, next, started, errors, maker) =
            (numbers.clone(), next.clone(), started.clone(), errors.clone(), s.maker.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&n) = numbers.get(i) else { break };
                match maker.start(&mut rt, n).await {
                    Ok((pod, _)) => started.lock().unwrap_or_else(PoisonError::into_inner).push(pod),
                    Err(e) => {
                        errors.lock().unwrap_or_else(PoisonError::into_inner).push(e);
                        break;
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let wall = t0.elapsed();
    s.pods.extend(std::mem::take(&mut *started.lock().unwrap_or_else(PoisonError::into_inner)));
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(PoisonError::into_inner));
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    Ok(wall)
}

/// Removes every pod of the session with `concurrency` clients; returns the wall time.
async fn remove_many(s: &mut Session, concurrency: usize) -> Result<Duration> {
    let mut clients = Vec::new();
    for _ in 0..concurrency.max(1) {
        clients.push(RuntimeServiceClient::new(connect(&s.socket).await?));
    }
    let pods = Arc::new(Mutex::new(std::mem::take(&mut s.pods)));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut rt in clients {
        let (pods, failed) = (pods.clone(), failed.clone());
        tasks.spawn(async move {
            loop {
                let Some(pod) = pods.lock().unwrap_or_else(PoisonError::into_inner).pop() else { break };
                if let Err(e) = remove_pod(&mut rt, &pod).await {
                    failed.lock().unwrap_or_else(PoisonError::into_inner).push((pod, e));
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let wall = t0.elapsed();
    let failed = std::mem::take(&mut *failed.lock().unwrap_or_else(PoisonError::into_inner));
    if failed.is_empty() {
        return Ok(wall);
    }
    let message = failed.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>().join("\n");
    s.pods.extend(failed.into_iter().map(|(pod, _)| pod));
    Err(message)
}
// ----------------------------------------------------------------- phases

#[derive(Debug, Default)]
struct Results {
    latency: BTreeMap<Contender, Vec<Steps>>,
    teardown: BTreeMap<Contender, Vec<Duration>>,
    memory: BTreeMap<Contender, Memory>,
    scale: BTreeMap<Contender, (Duration, Duration, Memory)>,
}

async fn latency(bench: &Bench, args: &Args, results: &mut Results) -> Result<()> {
    println!();
    println!(
        "latency: {} rounds × {} pods per contender (after {} unmeasured), one at a time",
        args.rounds, args.pods, args.warmup
    );
    println!(
        "round  contender          p50 ms   p99 ms  max ms   (RunPodSandbox/Create/Start/Status p50)  teardown p50 ms"
    );
    for round in 0..args.rounds {
        for k in 0..CONTENDERS.len() {
            let who = CONTENDERS[(round + k) % CONTENDERS.len()];
            let (samples, teardown) = session!(bench, who, |s| {
                nix::unistd::sync();
                let mut samples = Vec::new();
                for i in 0..args.warmup + args.pods {
                    let n = bench.next_pod();
                    let (pod, steps) = s.maker.start(&mut s.rt, n).await?;
                    s.pods.push(pod);
                    if i >= args.warmup {
                        samples.push(steps);
                    }
                }
                let mut teardown = Vec::new();
                while let Some(pod) = s.pods.pop() {
                    match remove_pod(&mut s.rt, &pod).await {
                        Ok(d) => teardown.push(d),
                        Err(e) => {
                            s.pods.push(pod);
                            return Err(e);
                        }
                    }
                }
                Ok((samples, teardown))
            })?;
            let totals: Vec<Duration> = samples.iter().map(|s| s.total).collect();
            let p50 = |f: fn(&Steps) -> Duration| ms(percentile(&samples.iter().map(f).collect::<Vec<_>>(), 0.5));
            println!(
                "{:<6} {:<16} {:>8.2} {:>8.2} {:>7.2}   ({:.2}/{:.2}/{:.2}/{:.2})  {:>28.2}",
                round + 1,
                who.name(),
                ms(percentile(&totals, 0.5)),
                ms(percentile(&totals, 0.99)),
                ms(percentile(&totals, 1.0)),
                p50(|s| s.run),
                p50(|s| s.create),
                p50(|s| s.start),
                p50(|s| s.status),
                ms(percentile(&teardown, 0.5)),
            );
            if let Some(path) = &args.samples {
                let mut csv = String::new();
                if round == 0 && k == 0 {
                    csv.push_str("contender,round,index,running,run_ms,create_ms,start_ms,status_ms,total_ms\n");
                }
                for (i, x) in samples.iter().enumerate() {
                    csv.push_str(&format!(
                        "{},{},{i},{},{:.3},{:.3},{:.3},{:.3},{:.3}\n",
                        who.name(),
                        round + 1,
                        i + args.warmup,
                        ms(x.run),
                        ms(x.create),
                        ms(x.start),
                        ms(x.status),
                        ms(x.total)
                    ));
                }
                use std::io::Write as _;
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(csv.as_bytes()))
                    .map_err(|e| format!("write {}: {e}", path.display()))?;
            }
            results.latency.entry(who).or_default().extend(samples);
            results.teardown.entry(who).or_default().extend(teardown);
        }
    }
    Ok(())
}

async fn memory(bench: &Bench, args: &Args, results: &mut Results) -> Result<()> {
    let m = args.memory_pods;
    println!();
    println!("memory: PSS with {m} pods running (started one at a time, read 2 s after the last)");
    for who in CONTENDERS {
        let memory = session!(bench, who, |s| {
            for _ in 0..m {
                let n = bench.next_pod();
                let (pod, _) = s.maker.start(&mut s.rt, n).await?;
                s.pods.push(pod);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            read_memory(&s)
        })?;
        println!(
            "{:<16} {:.2} MiB per pod: {}; daemon {:.1} MiB",
            who.name(),
            memory.per_pod_mib(),
            memory.describe(),
            memory.daemon_kib as f64 / 1024.0
        );
        results.memory.insert(who, memory);
    }
    Ok(())
}

async fn scale(bench: &Bench, args: &Args, results: &mut Results) -> Result<()> {
    let (count, concurrency) = (args.scale_pods, args.concurrency);
    println!();
    println!("scale: {count} pods, {concurrency} clients at once, until every container runs");
    for who in CONTENDERS {
        let (wall, teardown, memory) = session!(bench, who, |s| {
            let wall = start_many(bench, &mut s, count, concurrency).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let memory = read_memory(&s)?;
            let teardown = remove_many(&mut s, concurrency).await?;
            Ok((wall, teardown, memory))
        })?;
        println!(
            "{:<16} {count} pods running after {:.2} s ({:.1} pods/s); then {:.2} MiB PSS per pod, daemon {:.1} MiB; removed in {:.2} s",
            who.name(),
            wall.as_secs_f64(),
            count as f64 / wall.as_secs_f64(),
            memory.per_pod_mib(),
            memory.daemon_kib as f64 / 1024.0,
            teardown.as_secs_f64()
        );
        results.scale.insert(who, (wall, teardown, memory));
    }
    Ok(())
}

fn report(args: &Args, r: &Results) {
    if !r.latency.is_empty() {
        let totals = |who: Contender| r.latency[&who].iter().map(|s| s.total).collect::<Vec<_>>();
        let step = |who: Contender, f: fn(&Steps) -> Duration| {
            ms(percentile(&r.latency[&who].iter().map(f).collect::<Vec<_>>(), 0.5))
        };
        let base = totals(BASELINE);
        let (b50, b99) = (ms(percentile(&base, 0.5)), ms(percentile(&base, 0.99)));
        println!();
        println!(
            "pod + container ready (RunPodSandbox + CreateContainer + StartContainer + ContainerStatus RUNNING), {} samples each, ms:",
            base.len()
        );
        println!();
        println!(
            "| contender | p50 | p99 | mean | RunPodSandbox p50 | CreateContainer p50 | StartContainer p50 | ContainerStatus p50 | p50 ÷ containerd+runc's | p99 ÷ containerd+runc's | teardown p50 |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for who in CONTENDERS {
            let t = totals(who);
            let (p50, p99) = (ms(percentile(&t, 0.5)), ms(percentile(&t, 0.99)));
            println!(
                "| {} | {p50:.1} | {p99:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.3} | {:.3} | {:.1} |",
                who.name(),
                ms(mean(&t)),
                step(who, |s| s.run),
                step(who, |s| s.create),
                step(who, |s| s.start),
                step(who, |s| s.status),
                p50 / b50,
                p99 / b99,
                ms(percentile(&r.teardown[&who], 0.5)),
            );
        }
        let polls: Vec<u32> = CONTENDERS.iter().flat_map(|w| r.latency[w].iter().map(|s| s.polls)).collect();
        let at_once = polls.iter().filter(|&&p| p == 1).count();
        println!();
        println!(
            "ContainerStatus said RUNNING at the first call after StartContainer in {at_once} of {} starts",
            polls.len()
        );
        let ratio = ms(percentile(&totals(Contender::Bulkhead), 0.5)) / b50;
        println!(
            "goal: bulkhead's p50 at most 1/5 of containerd+runc's: {:.3} ({:.1}× faster): {}",
            ratio,
            1.0 / ratio,
            verdict(ratio <= 0.2)
        );
    }
    if !r.memory.is_empty() {
        println!();
        println!(
            "per-pod runtime memory, PSS with {} pods running ({}):",
            args.memory_pods,
            if args.share_pid { "pid namespace per pod" } else { "pid namespace per container" }
        );
        println!();
        println!("| contender | PSS per pod MiB | per-pod processes | daemon PSS MiB |");
        println!("|---|---:|---|---:|");
        for (who, m) in &r.memory {
            println!(
                "| {} | {:.2} | {} | {:.1} |",
                who.name(),
                m.per_pod_mib(),
                m.describe(),
                m.daemon_kib as f64 / 1024.0
            );
        }
        if let Some(m) = r.memory.get(&Contender::Bulkhead) {
            let mib = m.per_pod_mib();
            println!();
            println!("goal: at most 2 MiB PSS per pod: {mib:.2} MiB: {}", verdict(mib <= 2.0));
        }
    }
    if !r.scale.is_empty() {
        let base = r.scale.get(&BASELINE).map(|(w, _, _)| w.as_secs_f64());
        println!();
        println!("{} pods, {} clients at once, until every container runs:", args.scale_pods, args.concurrency);
        println!();
        println!(
            "| contender | wall s | pods/s | ÷ containerd+runc's | PSS per pod MiB (all running) | daemon PSS MiB | removal s |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (who, (wall, teardown, m)) in &r.scale {
            let w = wall.as_secs_f64();
            println!(
                "| {} | {w:.2} | {:.1} | {} | {:.2} | {:.1} | {:.2} |",
                who.name(),
                args.scale_pods as f64 / w,
                base.map_or("-".into(), |b| format!("{:.3}", w / b)),
                m.per_pod_mib(),
                m.daemon_kib as f64 / 1024.0,
                teardown.as_secs_f64()
            );
        }
        if let (Some(b), Some((w, _, _))) = (base, r.scale.get(&Contender::Bulkhead)) {
            let ratio = w.as_secs_f64() / b;
            println!();
            println!(
                "goal: {} pods in at most 1/4 of containerd+runc's time: {ratio:.3} ({:.1}× faster): {}",
                args.scale_pods,
                1.0 / ratio,
                verdict(ratio <= 0.25)
            );
        }
    }
}

// ------------------------------------------------------------------- main

async fn measure(args: Args, bulkhead: PathBuf, work: PathBuf, run: PathBuf) -> Result<()> {
    let workload = Workload {
        container: CONTAINER_NAME.into(),
        command: WORKLOAD_ARGS.iter().map(|s| s.to_string()).collect(),
        app: "pod-start".into(),
        share_pid: args.share_pid,
    };
    let bench = Bench::prepare(args.peers.clone(), workload, bulkhead, &work, &run).await?;
    println!(
        "pods: namespace_options network POD, ipc POD, pid {}; container: {} as the image's user, default security context",
        if args.share_pid { "POD" } else { "CONTAINER" },
        WORKLOAD_ARGS.join(" ")
    );
    let mut results = Results::default();
    let outcome = async {
        if args.phases.contains(&Phase::Latency) {
            latency(&bench, &args, &mut results).await?;
        }
        if args.phases.contains(&Phase::Memory) {
            memory(&bench, &args, &mut results).await?;
        }
        if args.phases.contains(&Phase::Scale) {
            scale(&bench, &args, &mut results).await?;
        }
        Ok::<(), String>(())
    }
    .await;
    bench.finish(outcome).await?;
    report(&args, &results);
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let peers = args.peers.clone();
    bulkhead_bench::pods::main("pod-start", &peers, |bulkhead, work, run| measure(args, bulkhead, work, run))
}
