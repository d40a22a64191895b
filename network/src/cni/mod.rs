//! CNI mode: pod networks made by the standard CNI plugins of a cluster's
//! network add-on, run per the CNI spec 1.0 and 1.1 as libcni runs them.
//! A list's plugins are run in order for ADD (each given the previous
//! one's result), in reverse for DEL; CHECK from 0.4.0 on; STATUS and GC
//! from 1.1.0 on. Runtime capabilities (portMappings, bandwidth, ipRanges,
//! dns, cgroupPath) reach only the plugins that declare them. Every
//! attachment's config, arguments and result are cached on disk before
//! and after ADD, so DEL runs what ADD ran, also after a restart and after
//! the conf dir changed.

pub mod config;
pub mod exec;
pub mod result;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bulkhead_store::Collection;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use config::{NetworkList, Version};
use exec::Call;

use crate::nat::PortMapping;
use crate::{Error, Readiness, Result};

/// Where CNI configurations and plugins are, and how long a call may take.
#[derive(Debug, Clone)]
pub struct Settings {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    pub timeout: Duration,
}

/// One pod attachment: the sandbox's id, network namespace and interface,
/// and the `CNI_ARGS` pairs (kubelet's `K8S_POD_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub args: Vec<(String, String)>,
}

impl Attachment {
    /// An attachment with the arguments containerd passes for a pod.
    pub fn for_pod(pod_id: &str, netns: &Path, namespace: &str, name: &str, uid: &str) -> Attachment {
        let args = [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", namespace),
            ("K8S_POD_NAME", name),
            ("K8S_POD_INFRA_CONTAINER_ID", pod_id),
            ("K8S_POD_UID", uid),
        ];
        Attachment {
            container_id: pod_id.to_owned(),
            netns: netns.to_owned(),
            ifname: crate::native::POD_INTERFACE.to_owned(),
            args: args.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    fn cni_args(&self) -> String {
        self.args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
    }
}

/// Traffic shaping, in bits per second and bits (the bandwidth plugin's
/// `runtimeConfig.bandwidth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

/// The pod's DNS settings (`runtimeConfig.dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// The runtime capabilities offered to the plugins of a pod's ADD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub port_mappings: Vec<PortMapping>,
    pub bandwidth: Option<Bandwidth>,
    pub dns: Option<Dns>,
    /// Address ranges to allocate from (`ipRanges`): one set per family.
    pub ip_ranges: Vec<Vec<IpNet>>,
    pub cgroup_path: Option<String>,
}

impl RuntimeConfig {
    /// The capability arguments as libcni passes them, by capability name.
    fn capability_args(&self) -> Map<String, Value> {
        let mut args = Map::new();
        if !self.port_mappings.is_empty() {
            let ports: Vec<Value> = self
                .port_mappings
                .iter()
                .map(|p| {
                    let mut m = json!({"hostPort": p.host_port, "containerPort": p.container_port,
                                       "protocol": p.protocol.name()});
                    if let Some(ip) = p.host_ip {
                        m["hostIP"] = json!(ip.to_string());
                    }
                    m
                })
                .collect();
            args.insert("portMappings".into(), Value::Array(ports));
        }
        if let Some(b) = self.bandwidth {
            args.insert("bandwidth".into(), json!(b));
        }
        if let Some(dns) = &self.dns {
            args.insert("dns".into(), json!(dns));
        }
        if !self.ip_ranges.is_empty() {
            let ranges: Vec<Vec<Value>> = self
                .ip_ranges
                .iter()
                .map(|set| set.iter().map(|n| json!({"subnet": n.to_string()})).collect())
                .collect();
            args.insert("ipRanges".into(), json!(ranges));
        }
        if let Some(path) = &self.cgroup_path {
            args.insert("cgroupPath".into(), json!(path));
        }
        args
    }
}

/// What ADD gave the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Attached {
    /// The pod's addresses, IPv4 first.
    pub addresses: Vec<IpNet>,
    /// The last plugin's result, as it printed it.
    pub result: Value,
}

impl Attached {
    pub fn ips(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(IpNet::addr).collect()
    }
}

/// One attachment's cache record, libcni's `cniCacheV1` fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CacheEntry {
    kind: String,
    container_id: String,
    /// The configuration file's text that ADD ran.
    config: String,
    config_path: PathBuf,
    if_name: String,
    network_name: String,
    netns: PathBuf,
    cni_args: Vec<(String, String)>,
    capability_args: Map<String, Value>,
    /// `null` until ADD finished.
    result: Value,
}

/// The CNI runner of a node.
#[derive(Debug)]
pub struct Cni {
    settings: Settings,
    cache: Collection<CacheEntry>,
    /// The configuration bytes whose plugins answered VERSION well.
    validated: Mutex<Option<Vec<u8>>>,
}

/// The cache record of an attachment: one per pod interface, whatever
/// the network (only one list is in force at a time).
fn cache_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

impl Cni {
    /// A runner with its result cache under `cache_dir`.
    pub fn open(settings: Settings, cache_dir: &Path) -> Result<Cni> {
        Ok(Cni { settings, cache: Collection::open(cache_dir.join("results"))?, validated: Mutex::new(None) })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The network list in force, `None` when the conf dir has none.
    pub fn network(&self) -> Result<Option<NetworkList>> {
        config::load(&self.settings.conf_dir)
    }

    fn network_required(&self) -> Result<NetworkList> {
        self.network()?.ok_or_else(|| Error::CniNoConfig { dir: self.settings.conf_dir.clone() })
    }

    async fn call(&self, list: &NetworkList, index: usize, call: &Call<'_>, stdin: &Value) -> Result<Option<Value>> {
        let plugin = &list.plugins[index];
        let bytes = serde_json::to_vec(stdin).map_err(|e| Error::CniConfig {
            path: list.source.clone(),
            reason: format!("cannot encode plugins[{index}]: {e}"),
        })?;
        exec::invoke(&self.settings.bin_dirs, &plugin.kind, call, &bytes, self.settings.timeout).await
    }

    /// Asks every plugin of `list` which versions it speaks; each must
    /// speak the list's. Done once per configuration.
    pub async fn validate(&self, list: &NetworkList) -> Result<()> {
        if self.validated.lock().map(|v| v.as_deref() == Some(&list.bytes[..])).unwrap_or(false) {
            return Ok(());
        }
        let version = list.version.to_string();
        for (index, plugin) in list.plugins.iter().enumerate() {
            let call = Call { command: "VERSION", container_id: "", netns: None, ifname: "", args: "" };
            let answer = self.call(list, index, &call, &json!({"cniVersion": version})).await?;
            let supported: Vec<String> = answer
                .as_ref()
                .and_then(|a| a.get("supportedVersions"))
                .and_then(Value::as_array)
                .map(|l| l.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            if !supported.iter().filter_map(|v| Version::parse(v)).any(|v| v == list.version) {
                return Err(Error::CniVersion {
                    plugin: plugin.kind.clone(),
                    version,
                    supported: supported.join(", "),
                });
            }
        }
        if let Ok(mut validated) = self.validated.lock() {
            *validated = Some(list.bytes.clone());
        }
        Ok(())
    }

    /// The stdin of plugin `index`: its config with the list's name and
    /// version, the previous result and the capabilities it declares.
    fn plugin_config(
        list: &NetworkList,
        index: usize,
        prev: Option<&Value>,
        capability_args: &Map<String, Value>,
    ) -> Value {
        let plugin = &list.plugins[index];
        let mut config = plugin.config.clone();
        config.insert("name".into(), json!(list.name));
        config.insert("cniVersion".into(), json!(list.version.to_string()));
        if let Some(prev) = prev.filter(|p| !p.is_null()) {
            config.insert("prevResult".into(), prev.clone());
        }
        let runtime: Map<String, Value> = capability_args
            .iter()
            .filter(|(name, _)| plugin.has_capability(name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !runtime.is_empty() {
            config.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        Value::Object(config)
    }

    /// Whether pods can get a network: a configuration is present and
    /// parses, its plugins are installed and speak its version, and (1.1)
    /// each answers STATUS well.
    pub async fn readiness(&self) -> Readiness {
        let not_ready = |e: Error| Readiness {
            ready: false,
            reason: "NetworkPluginNotReady".into(),
            message: format!("Network plugin returns error: {e}"),
        };
        let list = match self.network_required() {
            Ok(list) => list,
            Err(e) => return not_ready(e),
        };
        if let Err(e) = self.status(&list).await {
            return not_ready(e);
        }
        Readiness { ready: true, reason: String::new(), message: String::new() }
    }

    /// Validates `list` and, from 1.1.0 on, runs STATUS on each plugin.
    pub async fn status(&self, list: &NetworkList) -> Result<()> {
        self.validate(list).await?;
        if list.version < Version::V1_1_0 {
            return Ok(());
        }
        for index in 0..list.plugins.len() {
            let call = Call { command: "STATUS", container_id: "", netns: None, ifname: "", args: "" };
            self.call(list, index, &call, &Self::plugin_config(list, index, None, &Map::new())).await?;
        }
        Ok(())
    }

    /// Runs ADD for the pod over the list in force. On failure, DEL is run
    /// over the whole list so nothing is left half-made, and the ADD error
    /// returned.
    pub async fn add(&self, attachment: &Attachment, runtime: &RuntimeConfig) -> Result<Attached> {
        let list = self.network_required()?;
        self.validate(&list).await?;
        let config = String::from_utf8(list.bytes.clone())
            .map_err(|_| Error::CniConfig { path: list.source.clone(), reason: "not UTF-8".into() })?;
        let id = cache_id(&attachment.container_id, &attachment.ifname);
        let mut entry = CacheEntry {
            kind: "cniCacheV1".into(),
            container_id: attachment.container_id.clone(),
            config,
            config_path: list.source.clone(),
            if_name: attachment.ifname.clone(),
            network_name: list.name.clone(),
            netns: attachment.netns.clone(),
            cni_args: attachment.args.clone(),
            capability_args: runtime.capability_args(),
            result: Value::Null,
        };
        // Written first: a crash mid-ADD still leaves what DEL needs.
        self.cache.put(&id, &entry)?;
        match self.add_list(&list, attachment, &entry.capability_args).await {
            Ok(result) => {
                entry.result = result.clone();
                self.cache.put(&id, &entry)?;
                Ok(Attached { addresses: result::pod_addresses(&result, &attachment.ifname), result })
            }
            Err(e) => {
                let _ = self.del_list(&list, attachment, &entry.capability_args, None).await;
                let _ = self.cache.delete(&id);
                Err(e)
            }
        }
    }

    async fn add_list(
        &self,
        list: &NetworkList,
        attachment: &Attachment,
        capability_args: &Map<String, Value>,
    ) -> Result<Value> {
        let args = attachment.cni_args();
        let call = Call {
            command: "ADD",
            container_id: &attachment.container_id,
            netns: Some(&attachment.netns),
            ifname: &attachment.ifname,
            args: &args,
        };
        let mut prev: Option<Value> = None;
        for index in 0..list.plugins.len() {
            let stdin = Self::plugin_config(list, index, prev.as_ref(), capability_args);
            let result = self.call(list, index, &call, &stdin).await?.ok_or_else(|| Error::CniPlugin {
                plugin: list.plugins[index].kind.clone(),
                command: "ADD",
                code: None,
                message: "printed no result".into(),
            })?;
            prev = Some(result);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    async fn del_list(
        &self,
        list: &NetworkList,
        attachment: &Attachment,
        capability_args: &Map<String, Value>,
        prev: Option<&Value>,
    ) -> Result<()> {
        let args = attachment.cni_args();
        let call = Call {
            command: "DEL",
            container_id: &attachment.container_id,
            netns: Some(&attachment.netns),
            ifname: &attachment.ifname,
            args: &args,
        };
        // prevResult is part of DEL from 0.4.0 on.
        let prev = prev.filter(|_| list.version >= Version::V0_4_0);
        for index in (0..list.plugins.len()).rev() {
            let stdin = Self::plugin_config(list, index, prev, capability_args);
            self.call(list, index, &call, &stdin).await?;
        }
        Ok(())
    }

    /// The cached attachment of `container_id` on `ifname`.
    fn cached(&self, container_id: &str, ifname: &str) -> Result<Option<(String, CacheEntry)>> {
        let id = cache_id(container_id, ifname);
        Ok(self.cache.get(&id)?.map(|entry| (id, entry)))
    }

    fn cached_list(entry: &CacheEntry) -> Result<NetworkList> {
        let single = entry.config_path.extension().and_then(|e| e.to_str()) != Some("conflist");
        config::parse(&entry.config_path, entry.config.clone().into_bytes(), single)
    }

    /// Runs DEL for the attachment with the configuration, arguments and
    /// result ADD used (from the cache), else with the list in force.
    /// Idempotent: nothing cached and no configuration is nothing to do.
    /// The cache entry goes only when every plugin's DEL succeeded.
    pub async fn del(&self, attachment: &Attachment) -> Result<()> {
        match self.cached(&attachment.container_id, &attachment.ifname)? {
            Some((id, entry)) => {
                let list = Self::cached_list(&entry)?;
                let cached = Attachment {
                    container_id: entry.container_id.clone(),
                    netns: attachment.netns.clone(),
                    ifname: entry.if_name.clone(),
                    args: entry.cni_args.clone(),
                };
                self.del_list(&list, &cached, &entry.capability_args, Some(&entry.result)).await?;
                self.cache.delete(&id)?;
                Ok(())
            }
            None => match self.network()? {
                Some(list) => self.del_list(&list, attachment, &Map::new(), None).await,
                None => Ok(()),
            },
        }
    }

    /// Runs CHECK (0.4.0 on, unless the list disables it) with the cached result.
    pub async fn check(&self, attachment: &Attachment) -> Result<()> {
        let Some((_, entry)) = self.cached(&attachment.container_id, &attachment.ifname)? else {
            return Err(Error::CniNotAttached { container_id: attachment.container_id.clone() });
        };
        let list = Self::cached_list(&entry)?;
        if list.version < Version::V0_4_0 || list.disable_check {
            return Ok(());
        }
        let args = attachment.cni_args();
        let call = Call {
            command: "CHECK",
            container_id: &attachment.container_id,
            netns: Some(&attachment.netns),
            ifname: &attachment.ifname,
            args: &args,
        };
        for index in 0..list.plugins.len() {
            let stdin = Self::plugin_config(&list, index, Some(&entry.result), &entry.capability_args);
            self.call(&list, index, &call, &stdin).await?;
        }
        Ok(())
    }

    /// Whether the pod has a cached attachment on `ifname`.
    pub fn is_attached(&self, container_id: &str, ifname: &str) -> Result<bool> {
        Ok(self.cached(container_id, ifname)?.is_some())
    }

    /// The pod ids with a cached attachment.
    pub fn attached(&self) -> Result<Vec<String>> {
        Ok(self.cache.load_all()?.into_iter().map(|(_, e)| e.container_id).collect())
    }

    /// Garbage collection, as libcni does it: DEL for every cached
    /// attachment whose pod is not in `valid`, then (1.1.0 on, unless the
    /// list disables it) GC on each plugin with the valid attachments.
    pub async fn gc(&self, valid: &[String]) -> Result<()> {
        for (_, entry) in self.cache.load_all()? {
            if !valid.contains(&entry.container_id) {
                let stale = Attachment {
                    container_id: entry.container_id.clone(),
                    netns: entry.netns.clone(),
                    ifname: entry.if_name.clone(),
                    args: entry.cni_args.clone(),
                };
                self.del(&stale).await?;
            }
        }
        let Some(list) = self.network()? else {
            return Ok(());
        };
        if list.version < Version::V1_1_0 || list.disable_gc {
            return Ok(());
        }
        let ifname = crate::native::POD_INTERFACE;
        let attachments: Vec<Value> = valid.iter().map(|id| json!({"containerID": id, "ifname": ifname})).collect();
        let call = Call { command: "GC", container_id: "", netns: None, ifname: "", args: "" };
        for index in 0..list.plugins.len() {
            let mut stdin = Self::plugin_config(&list, index, None, &Map::new());
            stdin["cni.dev/valid-attachments"] = Value::Array(attachments.clone());
            self.call(&list, index, &call, &stdin).await?;
        }
        Ok(())
    }
}
