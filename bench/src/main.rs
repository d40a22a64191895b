//! `oci-lifecycle`: the cost of one container's whole life — create, start,
//! wait for init to exit, delete — running `/bin/true` from one
//! busybox-static bundle, for `bulkhead-oci`, the bulkhead library called in
//! process (`bulkhead_runtime::container::Runtime`), runc and crun.
//!
//! Every iteration runs each runtime once, in a rotated order (iteration `i`
//! starts with runtime `i mod k`), so a change of load on the host hits all
//! of them alike. Each runtime has its own state root and its own container
//! ids (which also name the containers' cgroups). This process is child
//! subreaper: a CLI's `create` leaves the container's init orphaned, so init
//! is reparented here and its exit is awaited with waitpid on the pid from
//! `--pid-file`. The CLIs' stdio goes to /dev/null and a log file, never to
//! a pipe, because init inherits it.
//!
//! The library refuses to spawn from a multi-threaded process, so this
//! program never starts a thread. Run it as root, through
//! `bench/run-oci-lifecycle.sh`; the results are in `docs/benchmarks.md`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use bulkhead_runtime::container::{CreateOptions, Runtime};
use clap::Parser;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

type Result<T> = std::result::Result<T, String>;

#[derive(Debug, Parser)]
#[command(about = "create → start → wait → delete of /bin/true: bulkhead-oci, the bulkhead library, runc and crun")]
struct Args {
    /// Measured lifecycles per runtime.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Unmeasured lifecycles per runtime before them (page cache, first-run costs).
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// The bulkhead-oci binary [default: next to this program].
    #[arg(long)]
    bulkhead_oci: Option<PathBuf>,
    #[arg(long, default_value = "/usr/sbin/runc")]
    runc: PathBuf,
    #[arg(long, default_value = "/usr/bin/crun")]
    crun: PathBuf,
    /// A static busybox, copied into the bundle's rootfs.
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// Where to make the bench's temporary directory [default: $TMPDIR or /tmp].
    #[arg(long)]
    workdir: Option<PathBuf>,
}

/// The time of each step of one container's life.
#[derive(Debug, Clone, Copy)]
struct Phases {
    create: Duration,
    start: Duration,
    wait: Duration,
    delete: Duration,
}

impl Phases {
    fn total(&self) -> Duration {
        self.create + self.start + self.wait + self.delete
    }
}

enum Driver {
    /// A runc-compatible command, run with `--root`; its stderr is appended to `log`.
    Cli { bin: PathBuf, log: File, log_path: PathBuf },
    /// In-process calls to the bulkhead library.
    Library(Runtime),
}

/// One runtime under test and its measurements.
struct Contender {
    name: &'static str,
    /// Short name used in container ids.
    tag: &'static str,
    root: PathBuf,
    /// Where a CLI writes init's pid, one file per container.
    pid_dir: PathBuf,
    driver: Driver,
    samples: Vec<Phases>,
}

impl Contender {
    /// A runc-compatible command at `bin`, or `None` (and a message) if it is not installed.
    fn cli(name: &'static str, tag: &'static str, bin: &Path, work: &Path) -> Result<Option<Contender>> {
        if !bin.is_file() {
            eprintln!("skipping {name}: {} is not installed", bin.display());
            return Ok(None);
        }
        let log_path = work.join(format!("{tag}.log"));
        let log = File::create(&log_path).map_err(|e| format!("create {}: {e}", log_path.display()))?;
        let pid_dir = work.join(tag).join("pids");
        fs::create_dir_all(&pid_dir).map_err(|e| format!("create {}: {e}", pid_dir.display()))?;
        let driver = Driver::Cli { bin: bin.to_owned(), log, log_path };
        Ok(Some(Contender { name, tag, root: work.join(tag).join("root"), pid_dir, driver, samples: Vec::new() }))
    }

    /// The bulkhead library, called in this process.
    fn library(work: &Path) -> Contender {
        let (tag, root) = ("lib", work.join("lib").join("root"));
        let driver = Driver::Library(Runtime::new(&root));
        Contender { name: "bulkhead library", tag, root, pid_dir: PathBuf::new(), driver, samples: Vec::new() }
    }

    /// Runs the CLI with `--root` and `args`; stdin and stdout are /dev/null.
    fn run_cli(&self, args: &[&std::ffi::OsStr]) -> Result<()> {
        let Driver::Cli { bin, log, log_path } = &self.driver else {
            return Err(format!("{} is not a command", self.name));
        };
        let stderr = log.try_clone().map_err(|e| format!("dup {}: {e}", log_path.display()))?;
        let status = Command::new(bin)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .status()
            .map_err(|e| format!("run {}: {e}", bin.display()))?;
        if status.success() {
            return Ok(());
        }
        let words: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        Err(format!("{} {}: {status}; the end of its stderr:\n{}", bin.display(), words.join(" "), tail(log_path)))
    }

    /// Creates container `id` and returns its init's pid.
    fn create(&self, id: &str, bundle: &Path) -> Result<i32> {
        if let Driver::Library(runtime) = &self.driver {
            let state =
                runtime.create(id, bundle, &CreateOptions::default()).map_err(|e| format!("create {id}: {e}"))?;
            return Ok(state.pid);
        }
        let pid_file = self.pid_dir.join(format!("{id}.pid"));
        self.run_cli(&[
            "create".as_ref(),
            "--bundle".as_ref(),
            bundle.as_ref(),
            "--pid-file".as_ref(),
            pid_file.as_ref(),
            id.as_ref(),
        ])?;
        let text = fs::read_to_string(&pid_file).map_err(|e| format!("read {}: {e}", pid_file.display()))?;
        text.trim().parse().map_err(|_| format!("{}: {text:?} is not a pid", pid_file.display()))
    }

    fn start(&self, id: &str) -> Result<()> {
        match &self.driver {
            Driver::Library(runtime) => runtime.start(id).map_err(|e| format!("start {id}: {e}")),
            Driver::Cli { .. } => self.run_cli(&["start".as_ref(), id.as_ref()]),
        }
    }

    fn delete(&self, id: &str) -> Result<()> {
        match &self.driver {
            Driver::Library(runtime) => runtime.delete(id, false).map_err(|e| format!("delete {id}: {e}")),
            Driver::Cli { .. } => self.run_cli(&["delete".as_ref(), id.as_ref()]),
        }
    }

    /// Kills and deletes container `id` if it exists, ignoring errors.
    fn force_delete(&self, id: &str) {
        let _ = match &self.driver {
            Driver::Library(runtime) => runtime.delete(id, true).map_err(|e| e.to_string()),
            Driver::Cli { .. } => self.run_cli(&["delete".as_ref(), "--force".as_ref(), id.as_ref()]),
        };
        reap_exited();
    }

    /// One measured life of container `id`; on failure the container is force-deleted.
    fn lifecycle(&self, id: &str, bundle: &Path) -> Result<Phases> {
        let t0 = Instant::now();
        let result = self.create(id, bundle).and_then(|pid| {
            let t1 = Instant::now();
            self.start(id)?;
            let t2 = Instant::now();
            wait_exit(pid)?;
            let t3 = Instant::now();
            self.delete(id)?;
            let t4 = Instant::now();
            Ok(Phases { create: t1 - t0, start: t2 - t1, wait: t3 - t2, delete: t4 - t3 })
        });
        result.map_err(|e| {
            self.force_delete(id);
            format!("{}: {e}", self.name)
        })
    }

    /// The containers under this runtime's root whose ids start with `prefix`.
    fn leftover_ids(&self, prefix: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.root) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|name| name.starts_with(prefix))
            .collect()
    }
}

/// Waits for container init `pid`, our child since we are its subreaper, and
/// checks that `/bin/true` exited 0.
fn wait_exit(pid: i32) -> Result<()> {
    match waitpid(Pid::from_raw(pid), None) {
        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
        Ok(status) => Err(format!("init {pid} ended with {status:?}, not exit 0")),
        Err(errno) => Err(format!("waitpid {pid}: {errno} (init was not reparented to this process?)")),
    }
}

/// Reaps every child that has exited: the runtimes' intermediate processes
/// are reparented here too.
fn reap_exited() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// The last lines of a log file, indented.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].iter().map(|l| format!("    {l}\n")).collect()
}

/// Makes the bundle: a rootfs of busybox with `/bin/true` linked to it, and
/// the config.json of `spec_cli spec` running `/bin/true` without a terminal.
fn make_bundle(dir: &Path, busybox: &Path, spec_cli: &Path) -> Result<()> {
    let bin = dir.join("rootfs/bin");
    fs::create_dir_all(&bin).map_err(|e| format!("create {}: {e}", bin.display()))?;
    fs::copy(busybox, bin.join("busybox")).map_err(|e| format!("copy {}: {e}", busybox.display()))?;
    symlink("busybox", bin.join("true")).map_err(|e| format!("symlink {}/true: {e}", bin.display()))?;
    let status = Command::new(spec_cli)
        .arg("spec")
        .arg("--bundle")
        .arg(dir)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("run {} spec: {e}", spec_cli.display()))?;
    if !status.success() {
        return Err(format!("{} spec: {status}", spec_cli.display()));
    }
    let config = dir.join("config.json");
    let text = fs::read_to_string(&config).map_err(|e| format!("read {}: {e}", config.display()))?;
    let mut spec: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    let process = spec
        .get_mut("process")
        .and_then(|p| p.as_object_mut())
        .ok_or_else(|| format!("{}: no process object", config.display()))?;
    process.insert("args".into(), serde_json::json!(["/bin/true"]));
    process.insert("terminal".into(), serde_json::json!(false));
    let text = serde_json::to_string_pretty(&spec).map_err(|e| e.to_string())?;
    fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))
}

/// Runs `warmup + iterations` rounds, each runtime once per round, rotated.
fn measure(contenders: &mut [Contender], bundle: &Path, args: &Args, prefix: &str) -> Result<()> {
    let k = contenders.len();
    let rounds = args.warmup + args.iterations;
    for i in 0..rounds {
        for j in 0..k {
            let contender = &mut contenders[(i + j) % k];
            let id = format!("{prefix}-{}-{i}", contender.tag);
            let phases = contender.lifecycle(&id, bundle)?;
            if i >= args.warmup {
                contender.samples.push(phases);
            }
        }
        reap_exited();
        if (i + 1) % 50 == 0 || i + 1 == rounds {
            eprintln!("round {}/{rounds} ({} warm-up)", i + 1, args.warmup);
        }
    }
    Ok(())
}

/// Median, p90 (nearest rank) and mean of durations, in milliseconds.
fn stats(samples: impl Iterator<Item = Duration>) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = samples.map(|d| d.as_secs_f64() * 1e3).collect();
    if ms.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 { ms[n / 2] } else { (ms[n / 2 - 1] + ms[n / 2]) / 2.0 };
    let p90 = ms[(n * 9).div_ceil(10) - 1];
    let mean = ms.iter().sum::<f64>() / n as f64;
    (median, p90, mean)
}

fn report(contenders: &[Contender]) {
    let median = |c: &Contender| stats(c.samples.iter().map(Phases::total)).0;
    println!("\n| runtime | median ms | p90 ms | mean ms |\n|---|---:|---:|---:|");
    for c in contenders {
        let (median, p90, mean) = stats(c.samples.iter().map(Phases::total));
        println!("| {} | {median:.2} | {p90:.2} | {mean:.2} |", c.name);
    }
    let reference = |name: &str| contenders.iter().find(|c| c.name == name).map(median);
    let (oci, library) = (reference("bulkhead-oci"), reference("bulkhead library"));
    let ratio = |m: f64, r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{:.2}", m / r));
    println!("\n| runtime | median / bulkhead-oci's | median / library's |\n|---|---:|---:|");
    for c in contenders {
        let m = median(c);
        println!("| {} | {} | {} |", c.name, ratio(m, oci), ratio(m, library));
    }
    println!("\nmedian ms of each step:\n\n| runtime | create | start | wait | delete |\n|---|---:|---:|---:|---:|");
    for c in contenders {
        let step = |f: fn(&Phases) -> Duration| stats(c.samples.iter().map(f)).0;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            c.name,
            step(|p| p.create),
            step(|p| p.start),
            step(|p| p.wait),
            step(|p| p.delete)
        );
    }
}

/// Every directory of the cgroup hierarchies under /sys/fs/cgroup.
fn cgroup_dirs() -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut todo = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.insert(entry.path());
                todo.push(entry.path());
            }
        }
    }
    found
}

/// Removes what the bench left behind — containers under the state roots,
/// cgroups named after its ids, the work directory — and says what it found.
/// Fails if anything remains.
fn clean_up(contenders: &[Contender], work: &Path, prefix: &str, cgroups_before: &BTreeSet<PathBuf>) -> Result<()> {
    let mut remaining = Vec::new();
    for c in contenders {
        for id in c.leftover_ids(prefix) {
            eprintln!("cleanup: {}: container {id} was left behind; force-deleting it", c.name);
            c.force_delete(&id);
        }
        remaining.extend(c.leftover_ids(prefix).into_iter().map(|id| format!("{}: container {id}", c.name)));
    }
    reap_exited();
    let new_cgroups: Vec<PathBuf> = cgroup_dirs().difference(cgroups_before).cloned().collect();
    // Deepest first, so children go before their parents.
    for dir in new_cgroups.iter().rev() {
        let ours = dir.components().any(|c| c.as_os_str().to_string_lossy().starts_with(prefix));
        if !ours {
            eprintln!("cleanup: cgroup {} appeared during the bench, not named after it: left alone", dir.display());
            continue;
        }
        eprintln!("cleanup: cgroup {} was left behind; removing it", dir.display());
        if let Err(e) = fs::remove_dir(dir) {
            remaining.push(format!("cgroup {}: {e}", dir.display()));
        }
    }
    let mounts = bulkhead_runtime::mountinfo::read(Path::new("/proc/self/mountinfo")).map_err(|e| e.to_string())?;
    remaining.extend(
        mounts.iter().filter(|m| m.mountpoint.starts_with(work)).map(|m| format!("mount {}", m.mountpoint.display())),
    );
    if remaining.is_empty() {
        fs::remove_dir_all(work).map_err(|e| format!("remove {}: {e}", work.display()))
    } else {
        Err(format!("left behind (so {} is kept):\n  {}", work.display(), remaining.join("\n  ")))
    }
}

fn run(args: &Args) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root: containers need it".into());
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("prctl(PR_SET_CHILD_SUBREAPER): {e}"))?;
    let bulkhead_oci = match &args.bulkhead_oci {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?.with_file_name("bulkhead-oci"),
    };
    let prefix = format!("bhb{}", std::process::id());
    let work =
        args.workdir.clone().unwrap_or_else(std::env::temp_dir).join(format!("bulkhead-bench.{}", std::process::id()));
    fs::create_dir(&work).map_err(|e| format!("create {}: {e}", work.display()))?;
    let cgroups_before = cgroup_dirs();

    let mut contenders = Vec::new();
    let outcome = (|| {
        contenders.extend(Contender::cli("bulkhead-oci", "oci", &bulkhead_oci, &work)?);
        contenders.push(Contender::library(&work));
        contenders.extend(Contender::cli("runc", "runc", &args.runc, &work)?);
        contenders.extend(Contender::cli("crun", "crun", &args.crun, &work)?);
        let spec_cli = if args.runc.is_file() { &args.runc } else { &bulkhead_oci };
        let bundle = work.join("bundle");
        make_bundle(&bundle, &args.busybox, spec_cli)?;
        println!(
            "oci-lifecycle: {} iterations (+{} warm-up) of create → start → wait → delete of /bin/true; \
             config.json from `{} spec`; runtimes: {}",
            args.iterations,
            args.warmup,
            spec_cli.display(),
            contenders.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
        );
        measure(&mut contenders, &bundle, args, &prefix)
    })();
    match (outcome, clean_up(&contenders, &work, &prefix, &cgroups_before)) {
        (Ok(()), Ok(())) => {
            report(&contenders);
            Ok(())
        }
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(bench), Err(cleanup)) => Err(format!("{bench}\n{cleanup}")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oci-lifecycle: {e}");
            ExitCode::FAILURE
        }
    }
}
