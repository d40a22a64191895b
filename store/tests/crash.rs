//! A writer killed with SIGKILL at an arbitrary instant leaves every record
//! either at a version it fully wrote or at the one before: never torn, never
//! missing once written.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::{Command, Stdio};
use std::time::Duration;

use bulkhead_store::{Collection, Durability};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Pod {
    id: String,
    version: u64,
    // A payload big enough that a torn write would be likely to show.
    labels: Vec<String>,
}

const DIR_ENV: &str = "BULKHEAD_STORE_CRASH_DIR";
/// "volatile" makes the helper write without fsyncs: a kill -9 must not tear those either.
const VOLATILE_ENV: &str = "BULKHEAD_STORE_CRASH_VOLATILE";
const IDS: u64 = 8;

/// Not a test on its own: the child process that `kill_9_mid_write_leaves_whole_records`
/// runs and kills. It rewrites IDS records with ever-growing versions forever.
#[test]
#[ignore = "helper process for kill_9_mid_write_leaves_whole_records"]
fn crash_writer_helper() {
    let Ok(dir) = std::env::var(DIR_ENV) else { return };
    let durability = if std::env::var_os(VOLATILE_ENV).is_some() { Durability::Volatile } else { Durability::Durable };
    let c: Collection<Pod> = Collection::open_with(dir, durability).unwrap();
    for version in 1.. {
        for i in 0..IDS {
            let id = format!("pod-{i}");
            let labels = (0..64).map(|l| format!("label-{l}-{version}")).collect();
            c.put(&id, &Pod { id: id.clone(), version, labels }).unwrap();
        }
        if version == 3 {
            println!("ready");
        }
    }
}

#[test]
fn kill_9_mid_write_leaves_whole_records() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..6 {
        let mut writer = Command::new(std::env::current_exe().unwrap());
        writer.args(["--exact", "crash_writer_helper", "--ignored", "--nocapture", "--test-threads=1"]);
        writer.env(DIR_ENV, dir.path());
        if round % 2 == 1 {
            writer.env(VOLATILE_ENV, "1");
        }
        let mut child = writer.stdout(Stdio::piped()).spawn().unwrap();
        // Wait until at least three full rounds were written, then kill at a random-ish point.
        let mut out = child.stdout.take().unwrap();
        let mut buf = [0u8; 4096];
        let mut seen = String::new();
        while !seen.contains("ready") {
            let n = std::io::Read::read(&mut out, &mut buf).unwrap();
            assert!(n > 0, "writer exited before it was ready");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        std::thread::sleep(Duration::from_millis(7 * (round + 1)));
        child.kill().unwrap();
        child.wait().unwrap();

        let c: Collection<Pod> = Collection::open(dir.path()).unwrap();
        let all = c.load_all().unwrap();
        assert_eq!(all.len() as u64, IDS, "every record written survives");
        for (id, pod) in &all {
            assert_eq!(id, &pod.id);
            assert!(pod.version >= 3);
            assert_eq!(pod.labels.len(), 64);
            assert!(pod.labels.iter().all(|l| l.ends_with(&format!("-{}", pod.version))));
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".json") || n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "open() cleaned temporaries: {leftovers:?}");
    }
}
