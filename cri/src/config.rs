//! The daemon's configuration: a TOML file whose every key has an embedded
//! default, so bulkhead runs with no file at all. Unknown keys and bad values
//! are refused, naming the key. The commented default file that
//! `bulkhead config default` prints is generated from [`Config::default`] and
//! [`KEY_DOCS`], so the two can never disagree.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bulkhead_network::PodCidrs;
use bulkhead_runtime::cgroups::Driver;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where the daemon looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/bulkhead/config.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub shutdown_timeout_seconds: u64,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub runtime: RuntimeConfig,
    pub image: ImageConfig,
    pub network: NetworkConfig,
    pub streaming: StreamingConfig,
}

/// The streaming server (Exec, Attach, PortForward URLs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// `host:port` to listen on; port 0 picks a free one.
    pub address: String,
    /// PEM certificate chain and key for TLS; both empty: plain HTTP.
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// How long a client may take to open a session's streams.
    pub stream_creation_timeout_seconds: u64,
    /// How long a session may move nothing either way before it is
    /// closed (kubelet's and containerd's default: 4 h); 0: never.
    pub stream_idle_timeout_seconds: u64,
}

/// The longest idle timeout accepted: 30 days.
const MAX_STREAM_IDLE_TIMEOUT_SECONDS: u64 = 30 * 86400;

impl StreamingConfig {
    /// The idle timeout, if there is one.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        (self.stream_idle_timeout_seconds > 0).then(|| std::time::Duration::from_secs(self.stream_idle_timeout_seconds))
    }
}

impl Default for StreamingConfig {
    fn default() -> StreamingConfig {
        StreamingConfig {
            address: "127.0.0.1:0".into(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            stream_creation_timeout_seconds: 30,
            stream_idle_timeout_seconds: 4 * 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    /// Registry hosts (`host:port`) reached over plain HTTP instead of TLS.
    pub plain_http_registries: Vec<String>,
    /// Cancel a pull whose download receives nothing for this long; 0: never.
    pub pull_progress_timeout_seconds: u64,
    /// Per-registry mirrors and TLS settings.
    pub registries: Vec<RegistryHost>,
    /// Images reported as pinned, which kubelet never garbage-collects.
    pub pinned_images: Vec<String>,
    /// How many layers of one image download and unpack at once.
    pub max_concurrent_downloads: usize,
    /// Registry credentials (a Docker config.json / .dockerconfigjson),
    /// used when kubelet sends none; empty: none.
    pub auth_file: String,
}

/// One registry's mirrors and TLS settings (containerd's hosts.toml).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryHost {
    /// The registry: `docker.io`, `registry.k8s.io`, `host:port`.
    pub registry: String,
    /// Mirrors, tried in order before the registry: `https://host[:port]`.
    pub mirrors: Vec<String>,
    /// PEM CA certificates trusted for the registry and its mirrors.
    pub ca_file: Option<PathBuf>,
    /// Do not verify TLS certificates (insecure).
    pub skip_verify: bool,
}

impl Default for ImageConfig {
    fn default() -> ImageConfig {
        ImageConfig {
            plain_http_registries: Vec::new(),
            pull_progress_timeout_seconds: 300,
            registries: Vec::new(),
            pinned_images: Vec::new(),
            max_concurrent_downloads: 3,
            auth_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` of the Prometheus endpoint; empty turns it off.
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    pub cgroup_driver: CgroupDriverChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriverChoice {
    Auto,
    Systemd,
    Cgroupfs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    pub pod_cidr: String,
    /// Native mode's Linux bridge.
    pub bridge: String,
    pub mtu: u32,
    /// CNI mode is in force when this directory holds a configuration.
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_timeout_seconds: u64,
}

impl Default for NetworkConfig {
    fn default() -> NetworkConfig {
        NetworkConfig {
            pod_cidr: "10.88.0.0/16".into(),
            bridge: "bulkhead0".into(),
            mtu: 1500,
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            cni_timeout_seconds: 60,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            root: PathBuf::from("/var/lib/bulkhead"),
            state: PathBuf::from("/run/bulkhead"),
            socket: PathBuf::from("/run/bulkhead/bulkhead.sock"),
            shutdown_timeout_seconds: 10,
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            runtime: RuntimeConfig::default(),
            image: ImageConfig::default(),
            network: NetworkConfig::default(),
            streaming: StreamingConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig { level: "info".into(), format: LogFormat::Text }
    }
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig { cgroup_driver: CgroupDriverChoice::Auto }
    }
}

/// One line of documentation per key, in the order the default file shows them.
pub const KEY_DOCS: &[(&str, &str)] = &[
    ("root", "Durable state: metadata, images, snapshots. Flag: --root."),
    ("state", "State that does not outlive a reboot: locks, pod monitor sockets. Flag: --state."),
    ("socket", "The CRI gRPC unix socket kubelet and crictl connect to (mode 0660). Flag: --socket."),
    (
        "shutdown_timeout_seconds",
        "On SIGTERM/SIGINT, how long in-flight requests may run before the daemon exits (1-600). Containers are never touched.",
    ),
    (
        "log.level",
        "trace, debug, info, warn or error, or a tracing filter such as \"info,bulkhead_cri=debug\". Flag: --log-level.",
    ),
    ("log.format", "\"text\" or \"json\", written to stderr. Flag: --log-format."),
    (
        "metrics.address",
        "host:port of the Prometheus endpoint (GET /metrics); empty turns it off. Flag: --metrics-addr.",
    ),
    (
        "runtime.cgroup_driver",
        "\"auto\" (systemd when it runs the host, else cgroupfs), \"systemd\" or \"cgroupfs\"; kubelet's cgroupDriver must match.",
    ),
    (
        "image.plain_http_registries",
        "Registry hosts (host:port) reached over plain HTTP instead of TLS, e.g. [\"127.0.0.1:5000\"]. Empty: TLS everywhere.",
    ),
    (
        "image.pull_progress_timeout_seconds",
        "Cancel a pull whose download receives no bytes for this many seconds (containerd's image_pull_progress_timeout); 0: never.",
    ),
    (
        "image.registries",
        "Per-registry settings, as [[image.registries]] tables: registry = \"docker.io\", mirrors = [\"https://mirror:5000\"] (tried in order, then the registry), ca_file = \"/etc/bulkhead/ca.pem\", skip_verify = false.",
    ),
    ("image.max_concurrent_downloads", "How many layers of one image download and unpack at once (1-64)."),
    (
        "image.auth_file",
        "Registry credentials in Docker's config.json format ({\"auths\": {\"host\": {\"auth\": base64(user:password)}}}), read at each pull and used when kubelet sends none (CRI-O's global_auth_file). Empty: none.",
    ),
    (
        "image.pinned_images",
        "Images (references) reported as pinned: kubelet's image garbage collection never removes them.",
    ),
    (
        "network.pod_cidr",
        "Native mode's pod CIDRs, comma-separated (one IPv4 and/or one IPv6); kubelet's UpdateRuntimeConfig replaces them. Empty: none.",
    ),
    ("network.bridge", "Native mode's Linux bridge, which holds each pod CIDR's gateway address (1-15 characters)."),
    ("network.mtu", "The MTU of the bridge and of every pod's eth0 (576-65535)."),
    (
        "network.cni_conf_dir",
        "When this directory holds a CNI configuration (.conf, .conflist, .json; the first in lexical order), pods are networked by its plugins instead of natively.",
    ),
    ("network.cni_bin_dirs", "Where CNI plugins are looked for, in order."),
    ("network.cni_timeout_seconds", "How long one CNI plugin call may run before it is killed (1-600)."),
    (
        "streaming.address",
        "host:port of the streaming server whose URLs Exec, Attach and PortForward return (kubelet proxies them); port 0 picks a free port.",
    ),
    (
        "streaming.tls_cert_file",
        "PEM certificate chain for the streaming server; with tls_key_file it serves HTTPS. Empty: HTTP.",
    ),
    ("streaming.tls_key_file", "PEM private key for tls_cert_file."),
    (
        "streaming.stream_creation_timeout_seconds",
        "How long a client may take to open a session's streams after the upgrade (1-600).",
    ),
    (
        "streaming.stream_idle_timeout_seconds",
        "How long an exec, attach or port-forward connection may carry nothing either way before it is closed (kubelet's and containerd's default: 14400, 4 h); 0: never (at most 2592000, 30 days).",
    ),
];

impl Config {
    /// Parses and validates a config file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            // toml's messages can span lines; errors here are one line.
            let message =
                e.inner().message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
            let mut key = e.path().to_string();
            // "unknown field `x`, expected ..." is reported at the enclosing table.
            if let Some(field) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
                if key == "." {
                    key = field.to_owned();
                } else if !key.ends_with(&format!(".{field}")) && key != field {
                    key = format!("{key}.{field}");
                }
            }
            let line = e.inner().span().map(|s| text[..s.start].matches('\n').count() + 1);
            if key == "." {
                // Not a key's value: the file is not valid TOML.
                return Error::ConfigSyntax { origin: origin.to_owned(), line: line.unwrap_or(1), message };
            }
            Error::Config {
                origin: origin.to_owned(),
                key,
                message: match line {
                    Some(line) => format!("{message} (line {line})"),
                    None => message,
                },
            }
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads `path`. A missing file is an error only when `explicit` (given
    /// with `--config`); otherwise the embedded defaults apply.
    pub fn load(path: &Path, explicit: bool) -> Result<(Config, bool)> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Config::parse(&text, path)?, true)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok((Config::default(), false)),
            Err(source) => Err(Error::ReadConfig { path: path.to_owned(), source }),
        }
    }

    /// Checks every value whose type alone does not make it valid.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let bad =
            |key: &str, message: String| Error::Config { origin: origin.to_owned(), key: key.to_owned(), message };
        for (key, path) in [("root", &self.root), ("state", &self.state), ("socket", &self.socket)] {
            if !path.is_absolute() {
                return Err(bad(key, format!("{} is not an absolute path", path.display())));
            }
        }
        if self.state == self.root {
            return Err(bad(
                "state",
                format!("{} is also the root; they must be different directories", self.state.display()),
            ));
        }
        if !(1..=600).contains(&self.shutdown_timeout_seconds) {
            return Err(bad(
                "shutdown_timeout_seconds",
                format!("{} is outside 1..=600", self.shutdown_timeout_seconds),
            ));
        }
        check_log_filter(&self.log.level).map_err(|message| bad("log.level", message))?;
        self.metrics_address().map_err(|message| bad("metrics.address", message))?;
        PodCidrs::parse(&self.network.pod_cidr).map_err(|e| bad("network.pod_cidr", e.to_string()))?;
        let bridge = &self.network.bridge;
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ', ':']) || bridge == "." || bridge == ".."
        {
            return Err(bad("network.bridge", format!("{bridge:?} is not a valid interface name (1-15 characters)")));
        }
        if !(576..=65535).contains(&self.network.mtu) {
            return Err(bad("network.mtu", format!("{} is outside 576..=65535", self.network.mtu)));
        }
        if !self.network.cni_conf_dir.is_absolute() {
            return Err(bad(
                "network.cni_conf_dir",
                format!("{} is not absolute", self.network.cni_conf_dir.display()),
            ));
        }
        if let Some(dir) = self.network.cni_bin_dirs.iter().find(|d| !d.is_absolute()) {
            return Err(bad("network.cni_bin_dirs", format!("{} is not absolute", dir.display())));
        }
        if !(1..=600).contains(&self.network.cni_timeout_seconds) {
            return Err(bad(
                "network.cni_timeout_seconds",
                format!("{} is outside 1..=600", self.network.cni_timeout_seconds),
            ));
        }
        self.streaming_address().map_err(|message| bad("streaming.address", message))?;
        let (cert, key) = (&self.streaming.tls_cert_file, &self.streaming.tls_key_file);
        if cert.is_empty() != key.is_empty() {
            let key = if cert.is_empty() { "streaming.tls_cert_file" } else { "streaming.tls_key_file" };
            return Err(bad(key, "tls_cert_file and tls_key_file must be given together".into()));
        }
        for (key, path) in [("streaming.tls_cert_file", cert), ("streaming.tls_key_file", key)] {
            if !path.is_empty() && !Path::new(path).is_absolute() {
                return Err(bad(key, format!("{path} is not an absolute path")));
            }
        }
        if !(1..=600).contains(&self.streaming.stream_creation_timeout_seconds) {
            return Err(bad(
                "streaming.stream_creation_timeout_seconds",
                format!("{} is outside 1..=600", self.streaming.stream_creation_timeout_seconds),
            ));
        }
        if self.streaming.stream_idle_timeout_seconds > MAX_STREAM_IDLE_TIMEOUT_SECONDS {
            return Err(bad(
                "streaming.stream_idle_timeout_seconds",
                format!(
                    "{} is more than {MAX_STREAM_IDLE_TIMEOUT_SECONDS} (30 days; 0 means no timeout)",
                    self.streaming.stream_idle_timeout_seconds
                ),
            ));
        }
        if !(1..=64).contains(&self.image.max_concurrent_downloads) {
            return Err(bad(
                "image.max_concurrent_downloads",
                format!("{} is outside 1..=64", self.image.max_concurrent_downloads),
            ));
        }
        if !self.image.auth_file.is_empty() && !Path::new(&self.image.auth_file).is_absolute() {
            return Err(bad("image.auth_file", format!("{} is not an absolute path", self.image.auth_file)));
        }
        for (i, image) in self.image.pinned_images.iter().enumerate() {
            image
                .parse::<bulkhead_image::Reference>()
                .map_err(|e| bad(&format!("image.pinned_images[{i}]"), e.to_string()))?;
        }
        for (i, host) in self.image.registries.iter().enumerate() {
            let key = |field: &str| format!("image.registries[{i}].{field}");
            if host.registry.is_empty() || host.registry.contains('/') {
                return Err(bad(&key("registry"), format!("{:?} is not a registry host", host.registry)));
            }
            if let Some(m) = host.mirrors.iter().find(|m| !(m.starts_with("http://") || m.starts_with("https://"))) {
                return Err(bad(&key("mirrors"), format!("{m:?} is not an http:// or https:// URL")));
            }
            if let Some(ca) = host.ca_file.as_ref().filter(|c| !c.is_absolute()) {
                return Err(bad(&key("ca_file"), format!("{} is not an absolute path", ca.display())));
            }
        }
        Ok(())
    }

    /// The Prometheus endpoint's address, if it is on.
    pub fn metrics_address(&self) -> std::result::Result<Option<SocketAddr>, String> {
        if self.metrics.address.is_empty() {
            return Ok(None);
        }
        self.metrics.address.parse().map(Some).map_err(|e| format!("{:?} is not host:port: {e}", self.metrics.address))
    }

    /// The streaming server's listen address.
    pub fn streaming_address(&self) -> std::result::Result<SocketAddr, String> {
        self.streaming.address.parse().map_err(|e| format!("{:?} is not host:port: {e}", self.streaming.address))
    }

    /// The configured pod CIDRs (validated at load).
    pub fn pod_cidrs(&self) -> PodCidrs {
        PodCidrs::parse(&self.network.pod_cidr).unwrap_or_default()
    }

    /// The cgroup driver asked for; `None` is auto-detection.
    pub fn cgroup_driver(&self) -> Option<Driver> {
        match self.runtime.cgroup_driver {
            CgroupDriverChoice::Auto => None,
            CgroupDriverChoice::Systemd => Some(Driver::Systemd),
            CgroupDriverChoice::Cgroupfs => Some(Driver::Cgroupfs),
        }
    }

    /// The config as a commented TOML file, one comment per key.
    pub fn render_commented(&self) -> String {
        let value = toml::Value::try_from(self).unwrap_or_else(|_| toml::Value::Table(Default::default()));
        let mut out = String::from(
            "# bulkhead configuration (/etc/bulkhead/config.toml).\n\
             # Every key is optional; each is shown with its default value.\n",
        );
        let mut section = "";
        for (key, doc) in KEY_DOCS {
            let (table, leaf) = key.rsplit_once('.').unwrap_or(("", key));
            if table != section {
                out.push_str(&format!("\n[{table}]\n"));
                section = table;
            } else {
                out.push('\n');
            }
            let found = key.split('.').try_fold(&value, |v, part| v.get(part));
            let rendered = found.map(|v| v.to_string()).unwrap_or_default();
            out.push_str(&format!("# {doc}\n{leaf} = {rendered}\n"));
        }
        out
    }
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Accepts a level, or comma-separated `target=level` directives with an
/// optional bare default level; a bare word that is not a level (a typo
/// such as "loud") is refused rather than read as a target name.
fn check_log_filter(filter: &str) -> std::result::Result<(), String> {
    let invalid = |why: String| format!("{filter:?} is not a log level or filter: {why}");
    for directive in filter.split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(invalid(format!("{level:?} is not one of {}", LEVELS.join(", "))));
        }
    }
    tracing_subscriber::EnvFilter::builder().parse(filter).map(drop).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    leaves(v, &key, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }

    #[test]
    fn every_key_is_documented_and_the_default_file_round_trips() {
        let default = Config::default();
        let mut keys = Vec::new();
        leaves(&toml::Value::try_from(&default).unwrap(), "", &mut keys);
        let mut documented: Vec<String> = KEY_DOCS.iter().map(|(k, _)| k.to_string()).collect();
        keys.sort();
        documented.sort();
        assert_eq!(keys, documented);
        let text = default.render_commented();
        assert_eq!(Config::parse(&text, Path::new("default")).unwrap(), default);
        assert_eq!(Config::parse("", Path::new("empty")).unwrap(), default);
    }

    fn error_of(text: &str) -> String {
        Config::parse(text, Path::new("/x.toml")).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = error_of("[log]\nlevel = \"info\"\ncolour = true\n");
        assert!(err.contains("key `log.colour`"), "{err}");
        assert!(err.contains("/x.toml"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        let err = error_of("sockets = \"/a\"\n");
        assert!(err.contains("key `sockets`"), "{err}");
        assert!(err.contains("(line 1)"), "{err}");
        let err = error_of("\n\n[log]\ncolour = 1\n");
        assert!(err.contains("key `log.colour`") && err.contains("(line 4)"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = error_of("root = \"/a\"\n[log\n");
        assert!(err.contains("/x.toml") && err.contains("line 2") && err.contains("not valid TOML"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, key) in [
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[log]\nlevel = \"loud\"\n", "log.level"),
            ("[log]\nlevel = \"info,bulkhead_cri=loud\"\n", "log.level"),
            ("root = \"relative\"\n", "root"),
            ("root = 7\n", "root"),
            ("shutdown_timeout_seconds = 0\n", "shutdown_timeout_seconds"),
            ("[metrics]\naddress = \"nowhere\"\n", "metrics.address"),
            ("[runtime]\ncgroup_driver = \"cgroupv3\"\n", "runtime.cgroup_driver"),
            ("[network]\npod_cidr = \"10.0.0.0/40\"\n", "network.pod_cidr"),
            ("[network]\nbridge = \"a-very-long-bridge-name\"\n", "network.bridge"),
            ("[network]\nmtu = 100\n", "network.mtu"),
            ("[network]\ncni_conf_dir = \"net.d\"\n", "network.cni_conf_dir"),
            ("[network]\ncni_timeout_seconds = 0\n", "network.cni_timeout_seconds"),
            ("root = \"/srv/b\"\nstate = \"/srv/b\"\n", "state"),
            ("[streaming]\naddress = \"localhost\"\n", "streaming.address"),
            ("[streaming]\ntls_cert_file = \"/c.pem\"\n", "streaming.tls_key_file"),
            ("[streaming]\nstream_creation_timeout_seconds = 0\n", "streaming.stream_creation_timeout_seconds"),
            ("[streaming]\nstream_idle_timeout_seconds = 2592001\n", "streaming.stream_idle_timeout_seconds"),
        ] {
            let err = error_of(text);
            assert!(err.contains(&format!("key `{key}`")), "{text:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn values_are_read() {
        let c = Config::parse(
            "root = \"/srv/b\"\n[log]\nformat = \"json\"\n[metrics]\naddress = \"127.0.0.1:1338\"\n[runtime]\ncgroup_driver = \"cgroupfs\"\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/srv/b"));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.metrics_address().unwrap(), Some("127.0.0.1:1338".parse().unwrap()));
        assert_eq!(c.cgroup_driver(), Some(Driver::Cgroupfs));
    }
}
