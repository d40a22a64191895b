//! Loading and checking a bundle's `config.json` (runtime-spec 1.0–1.2).
//! Parsing is oci-spec's; what the types cannot say — supported versions,
//! absolute paths, a rootfs that exists, mounts that make sense — is checked
//! here, before anything is created, and every refusal names its field.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::{Error, Result};

/// The runtime-spec minor versions this runtime implements (major 1).
const SUPPORTED_MINORS: std::ops::RangeInclusive<u64> = 0..=2;

/// A bundle: its directory, its parsed config and its resolved rootfs.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The container id this bundle runs as (empty until one is given).
    pub id: String,
    pub dir: PathBuf,
    pub spec: Spec,
    /// `root.path`, made absolute against the bundle directory.
    pub rootfs: PathBuf,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Spec { field: field.into(), message: message.into() }
}

impl Bundle {
    /// Reads `<dir>/config.json` and checks it.
    pub fn load(dir: &Path) -> Result<Bundle> {
        Self::load_with_text(dir).map(|(bundle, _)| bundle)
    }

    /// [`Bundle::load`], also returning config.json's text as read.
    pub fn load_with_text(dir: &Path) -> Result<(Bundle, Vec<u8>)> {
        let dir = std::path::absolute(dir).map_err(|source| Error::Read { path: dir.to_owned(), source })?;
        let path = dir.join("config.json");
        let text = std::fs::read(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
        let spec = parse(&text)?;
        let rootfs = check(&spec, &dir)?;
        Ok((Bundle { id: String::new(), dir, spec, rootfs }, text))
    }
}

/// Parses config.json text; a type error names the field's path.
pub fn parse(text: &[u8]) -> Result<Spec> {
    // Tracking the path costs an allocation per field: only a config that
    // fails is parsed again to name where.
    if let Ok(spec) = serde_json::from_slice(text) {
        return Ok(spec);
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let message = e.inner().to_string();
        let mut field = e.path().to_string();
        // "missing field `x`" is reported at the enclosing object: name x itself.
        if let Some(missing) = message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
            field = if field == "." { missing.to_owned() } else { format!("{field}.{missing}") };
        } else if field == "." {
            field = "(document)".to_owned();
        }
        bad(field, message)
    })
}

fn require_absolute(field: String, path: &Path) -> Result<()> {
    if path.is_absolute() { Ok(()) } else { Err(bad(field, format!("{:?} is not an absolute path", path))) }
}

/// Checks what the types cannot; returns the absolute rootfs path.
pub fn check(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    check_version(spec.version())?;

    let root = spec.root().as_ref().ok_or_else(|| bad("root", "is required"))?;
    let rootfs = bundle.join(root.path());
    if !rootfs.is_dir() {
        return Err(bad("root.path", format!("{} is not a directory", rootfs.display())));
    }

    let process = spec.process().as_ref().ok_or_else(|| bad("process", "is required"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(bad("process.args", "must name the program to run"));
    }
    require_absolute("process.cwd".into(), process.cwd())?;

    for (i, mount) in spec.mounts().iter().flatten().enumerate() {
        require_absolute(format!("mounts[{i}].destination"), mount.destination())?;
        let options = mount.options().as_deref().unwrap_or_default();
        let is_bind = mount.typ().as_deref() == Some("bind") || options.iter().any(|o| o == "bind" || o == "rbind");
        if is_bind && mount.source().is_none() {
            return Err(bad(format!("mounts[{i}].source"), "a bind mount needs a source"));
        }
        if !is_bind && mount.typ().is_none() {
            return Err(bad(format!("mounts[{i}].type"), "is required unless the mount is a bind mount"));
        }
    }

    if let Some(linux) = spec.linux() {
        let mut seen = Vec::new();
        for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
            if seen.contains(&ns.typ()) {
                return Err(bad(format!("linux.namespaces[{i}].type"), format!("{} is listed twice", ns.typ())));
            }
            seen.push(ns.typ());
            if let Some(path) = ns.path() {
                require_absolute(format!("linux.namespaces[{i}].path"), path)?;
            }
        }
        if seen.contains(&LinuxNamespaceType::User) {
            let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
                && linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
            let joins =
                linux.namespaces().iter().flatten().any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_some());
            if !maps && !joins {
                return Err(bad("linux.uidMappings", "a new user namespace needs uidMappings and gidMappings"));
            }
        }
        for (field, paths) in
            [("linux.maskedPaths", linux.masked_paths()), ("linux.readonlyPaths", linux.readonly_paths())]
        {
            for (i, path) in paths.iter().flatten().enumerate() {
                require_absolute(format!("{field}[{i}]"), Path::new(path))?;
            }
        }
        for (i, device) in linux.devices().iter().flatten().enumerate() {
            require_absolute(format!("linux.devices[{i}].path"), device.path())?;
        }
        if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !seen.contains(&LinuxNamespaceType::Uts) {
            return Err(bad("hostname", "setting a hostname needs a uts namespace"));
        }
    }

    if let Some(hooks) = spec.hooks() {
        #[allow(deprecated)]
        let all = [
            ("hooks.prestart", hooks.prestart()),
            ("hooks.createRuntime", hooks.create_runtime()),
            ("hooks.createContainer", hooks.create_container()),
            ("hooks.startContainer", hooks.start_container()),
            ("hooks.poststart", hooks.poststart()),
            ("hooks.poststop", hooks.poststop()),
        ];
        for (field, list) in all {
            for (i, hook) in list.iter().flatten().enumerate() {
                require_absolute(format!("{field}[{i}].path"), hook.path())?;
            }
        }
    }
    Ok(rootfs)
}

fn check_version(version: &str) -> Result<()> {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<Option<u64>> = core.split('.').map(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [Some(1), Some(minor), Some(_)] if SUPPORTED_MINORS.contains(minor) => Ok(()),
        [Some(_), Some(_), Some(_)] => {
            Err(bad("ociVersion", format!("{version:?} is not supported: bulkhead implements runtime-spec 1.0 to 1.2")))
        }
        _ => Err(bad("ociVersion", format!("{version:?} is not a semantic version"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid config, as JSON, for tests to break one field at a time.
    fn config() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": {"args": ["/bin/sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "hostname": "c1",
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}]}
        })
    }

    fn check_json(value: serde_json::Value) -> Result<PathBuf> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("config.json"), value.to_string()).unwrap();
        Bundle::load(dir.path()).map(|b| b.rootfs)
    }

    fn refused(value: serde_json::Value, field: &str) {
        let err = check_json(value).unwrap_err().to_string();
        assert!(err.contains(field), "expected {field}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn a_valid_config_loads() {
        assert!(check_json(config()).unwrap().ends_with("rootfs"));
        let mut v = config();
        v["ociVersion"] = "1.0.2-dev".into();
        check_json(v).unwrap();
    }

    #[test]
    fn bad_configs_are_refused_naming_the_field() {
        let mut v = config();
        v["ociVersion"] = "2.0.0".into();
        refused(v, "ociVersion");
        let mut v = config();
        v["ociVersion"] = "banana".into();
        refused(v, "ociVersion");
        let mut v = config();
        v["linux"]["namespaces"][1]["type"] = "moon".into();
        refused(v, "linux.namespaces[1].type");
        let mut v = config();
        v["process"]["cwd"] = "tmp".into();
        refused(v, "process.cwd");
        let mut v = config();
        v["root"]["path"] = "missing".into();
        refused(v, "root.path");
        let mut v = config();
        v["mounts"][0] = serde_json::json!({"type": "bind"});
        refused(v, "mounts[0].destination");
        let mut v = config();
        v["mounts"][0] = serde_json::json!({"destination": "/data", "type": "bind", "options": ["rbind"]});
        refused(v, "mounts[0].source");
        let mut v = config();
        v["mounts"][0]["destination"] = "proc".into();
        refused(v, "mounts[0].destination");
        let mut v = config();
        v["process"]["capabilities"] = serde_json::json!({"bounding": ["CAP_CHOWN", "CAP_FLY"]});
        refused(v, "process.capabilities.bounding");
        let mut v = config();
        v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_SHRUG"});
        refused(v, "linux.seccomp.defaultAction");
        let mut v = config();
        v["process"]["args"] = serde_json::json!([]);
        refused(v, "process.args");
        let mut v = config();
        v["linux"]["namespaces"][2]["type"] = "pid".into();
        refused(v, "linux.namespaces[2].type");
        let mut v = config();
        v["linux"]["namespaces"][0]["path"] = "proc/1/ns/pid".into();
        refused(v, "linux.namespaces[0].path");
        let mut v = config();
        v["linux"]["maskedPaths"] = serde_json::json!(["/proc/kcore", "sys/x"]);
        refused(v, "linux.maskedPaths[1]");
        let mut v = config();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "user"}, {"type": "uts"}]);
        refused(v, "linux.uidMappings");
        let mut v = config();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}]);
        refused(v, "hostname");
    }
}
