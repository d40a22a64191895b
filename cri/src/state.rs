//! The durable truth about pods and containers. Every object is one record
//! file under `<root>/pods` or `<root>/containers`, written atomically by
//! `bulkhead-store`; an in-memory index serves reads. Records that span two
//! objects are kept consistent by write order — a pod is written before its
//! containers and removed after them — so a crash at any instant leaves at
//! worst a container whose pod is gone, which [`State::open`] repairs.
//! Callers order concurrent requests per object with [`crate::locks`]:
//! creating a container and removing a pod both hold the pod's key, so a
//! container can never be written for a pod that is being removed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bulkhead_store::Collection;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    Ready,
    NotReady,
}

/// A pod sandbox as kubelet described it and as bulkhead runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
    pub state: PodState,
    /// Nanoseconds since the Unix epoch, as the CRI reports times.
    pub created_at: i64,
    pub runtime_handler: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// How the pod runs: namespaces, network, monitor.
    #[serde(default)]
    pub sandbox: SandboxInfo,
}

/// What bulkhead made for a pod, as the later calls need it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub hostname: String,
    pub log_directory: String,
    /// The pod's cgroup (cgroupfs form); containers go below it.
    pub cgroup_parent: String,
    /// CRI `NamespaceMode` of the network, pid and ipc namespaces.
    pub network_mode: i32,
    pub pid_mode: i32,
    pub ipc_mode: i32,
    /// The pod's network namespace, unless it uses the node's.
    pub netns: Option<std::path::PathBuf>,
    /// The pod's IPs, the pod IP first.
    pub ips: Vec<String>,
    pub monitor_pid: i32,
    pub privileged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

/// A container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub image_ref: String,
    pub state: ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub log_path: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// How the container was made.
    #[serde(default)]
    pub made: ContainerInfo,
}

/// A mount of a container as `ContainerStatus` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: i32,
}

/// What bulkhead made for a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// The image's id (`sha256:…`).
    pub image_id: String,
    /// The OCI bundle: config.json and the rootfs mount point.
    pub bundle: std::path::PathBuf,
    /// The overlay's writable layer and work directory.
    pub upper: std::path::PathBuf,
    pub stop_signal: i32,
    pub mounts: Vec<MountInfo>,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    pub uid: u32,
    pub gid: u32,
    pub supplemental_groups: Vec<u32>,
}

#[derive(Debug, Default)]
struct Index {
    pods: HashMap<String, PodRecord>,
    containers: HashMap<String, ContainerRecord>,
}

/// Pods and containers: durable records plus the in-memory index.
#[derive(Debug)]
pub struct State {
    pods: Collection<PodRecord>,
    containers: Collection<ContainerRecord>,
    index: Mutex<Index>,
}

/// What [`State::open`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub pods: usize,
    pub containers: usize,
    /// Container records whose pod was gone, removed during recovery.
    pub orphans_removed: Vec<String>,
}

impl State {
    /// Loads every pod and container under `root`, removing containers
    /// whose pod record is gone. Blocks on disk I/O.
    pub fn open(root: &Path) -> Result<(State, Recovered)> {
        let pods: Collection<PodRecord> = Collection::open(root.join("pods"))?;
        let containers: Collection<ContainerRecord> = Collection::open(root.join("containers"))?;
        let mut index = Index::default();
        let mut recovered = Recovered::default();
        for (id, pod) in pods.load_all()? {
            index.pods.insert(id, pod);
        }
        for (id, container) in containers.load_all()? {
            if index.pods.contains_key(&container.pod_id) {
                index.containers.insert(id, container);
            } else {
                containers.delete(&id)?;
                recovered.orphans_removed.push(id);
            }
        }
        recovered.pods = index.pods.len();
        recovered.containers = index.containers.len();
        Ok((State { pods, containers, index: Mutex::new(index) }, recovered))
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // Every update writes disk first and then replaces whole entries, so a
        // panicked holder cannot leave the index half-updated.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn pod(&self, id: &str) -> Option<PodRecord> {
        self.index().pods.get(id).cloned()
    }

    pub fn container(&self, id: &str) -> Option<ContainerRecord> {
        self.index().containers.get(id).cloned()
    }

    pub fn pods(&self) -> Vec<PodRecord> {
        self.index().pods.values().cloned().collect()
    }

    pub fn containers(&self) -> Vec<ContainerRecord> {
        self.index().containers.values().cloned().collect()
    }

    /// Creates or replaces a pod record, durably.
    pub fn put_pod(&self, pod: PodRecord) -> Result<()> {
        self.pods.put(&pod.id, &pod)?;
        self.index().pods.insert(pod.id.clone(), pod);
        Ok(())
    }

    /// Creates or replaces a container record, durably; its pod must exist.
    pub fn put_container(&self, container: ContainerRecord) -> Result<()> {
        if !self.index().pods.contains_key(&container.pod_id) {
            return Err(Error::PodNotFound { id: container.pod_id });
        }
        self.containers.put(&container.id, &container)?;
        self.index().containers.insert(container.id.clone(), container);
        Ok(())
    }

    /// Removes a container record; returns whether it existed.
    pub fn remove_container(&self, id: &str) -> Result<bool> {
        let existed = self.containers.delete(id)?;
        Ok(self.index().containers.remove(id).is_some() || existed)
    }

    /// Removes a pod and, first, every container record of it.
    pub fn remove_pod(&self, id: &str) -> Result<bool> {
        let children: Vec<String> =
            self.index().containers.values().filter(|c| c.pod_id == id).map(|c| c.id.clone()).collect();
        for child in children {
            self.remove_container(&child)?;
        }
        let existed = self.pods.delete(id)?;
        Ok(self.index().pods.remove(id).is_some() || existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pod(id: &str) -> PodRecord {
        PodRecord {
            id: id.into(),
            name: "web".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
            state: PodState::Ready,
            created_at: 1,
            runtime_handler: String::new(),
            labels: BTreeMap::from([("app".into(), "web".into())]),
            annotations: BTreeMap::new(),
            sandbox: SandboxInfo::default(),
        }
    }

    fn container(id: &str, pod_id: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            pod_id: pod_id.into(),
            name: "c".into(),
            attempt: 0,
            image: "busybox".into(),
            image_ref: "sha256:00".into(),
            state: ContainerState::Created,
            created_at: 2,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            log_path: String::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            made: ContainerInfo::default(),
        }
    }

    #[test]
    fn objects_survive_reopen_and_removal_is_child_first() {
        let dir = tempfile::tempdir().unwrap();
        let (state, rec) = State::open(dir.path()).unwrap();
        assert_eq!(rec, Recovered::default());
        state.put_pod(pod("p1")).unwrap();
        state.put_container(container("c1", "p1")).unwrap();
        state.put_container(container("c2", "p1")).unwrap();
        assert!(state.put_container(container("c3", "nope")).unwrap_err().to_string().contains("nope"));
        drop(state);

        let (state, rec) = State::open(dir.path()).unwrap();
        assert_eq!((rec.pods, rec.containers), (1, 2));
        assert_eq!(state.pod("p1"), Some(pod("p1")));
        assert!(state.remove_pod("p1").unwrap());
        assert!(!state.remove_pod("p1").unwrap());
        assert!(state.containers().is_empty());
        drop(state);
        let (_, rec) = State::open(dir.path()).unwrap();
        assert_eq!((rec.pods, rec.containers), (0, 0));
    }

    #[test]
    fn orphaned_containers_are_repaired_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _) = State::open(dir.path()).unwrap();
        state.put_pod(pod("p1")).unwrap();
        state.put_container(container("c1", "p1")).unwrap();
        drop(state);
        // A crash that removed the pod record but not its container's.
        std::fs::remove_file(dir.path().join("pods/p1.json")).unwrap();
        let (state, rec) = State::open(dir.path()).unwrap();
        assert_eq!(rec.orphans_removed, vec!["c1".to_string()]);
        assert!(state.container("c1").is_none());
        assert!(!dir.path().join("containers/c1.json").exists());
    }
}
