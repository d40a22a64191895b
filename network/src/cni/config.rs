//! CNI network configurations: the conf dir scanned as libcni does (files
//! ending `.conf`, `.conflist` or `.json`, in lexical order, the first one
//! used, as containerd does), a single-plugin `.conf` wrapped into a list,
//! and the version the list is run at (the highest of a 1.1 `cniVersions`
//! array we speak, else `cniVersion`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{Error, Result};

/// The CNI spec versions bulkhead speaks, newest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.1.0", "1.0.0", "0.4.0", "0.3.1", "0.3.0", "0.2.0", "0.1.0"];

/// A CNI spec version, compared numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(u32, u32, u32);

impl Version {
    pub const V0_4_0: Version = Version(0, 4, 0);
    pub const V1_0_0: Version = Version(1, 0, 0);
    pub const V1_1_0: Version = Version(1, 1, 0);

    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
        let (major, minor) = (parts.next()??, parts.next()??);
        let patch = match parts.next() {
            Some(p) => p?,
            None => 0,
        };
        parts.next().is_none().then_some(Version(major, minor, patch))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One plugin of a list: its `type` (the binary's name) and its whole
/// configuration object, passed on with `name`, `cniVersion`,
/// `prevResult` and `runtimeConfig` filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Plugin {
    pub kind: String,
    pub config: Map<String, Value>,
}

impl Plugin {
    /// Whether the plugin declares runtime capability `name` (for example
    /// `portMappings`) in its `capabilities` object.
    pub fn has_capability(&self, name: &str) -> bool {
        self.config.get("capabilities").and_then(|c| c.get(name)).and_then(Value::as_bool).unwrap_or(false)
    }
}

/// A network configuration list, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    pub name: String,
    /// The version the list is run at.
    pub version: Version,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<Plugin>,
    /// The file it came from.
    pub source: PathBuf,
    /// The file's bytes, kept in the result cache so DEL runs what ADD ran.
    pub bytes: Vec<u8>,
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::CniConfig { path: path.to_owned(), reason: reason.into() }
}

/// The name rule of the CNI spec: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
fn valid_network_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The version to run a list at: the highest entry of `cniVersions` that
/// bulkhead speaks, else `cniVersion`, which must be one it speaks.
fn pick_version(path: &Path, top: &Map<String, Value>) -> Result<Version> {
    let ours: Vec<Version> = SUPPORTED_VERSIONS.iter().filter_map(|v| Version::parse(v)).collect();
    if let Some(list) = top.get("cniVersions") {
        let list = list.as_array().ok_or_else(|| invalid(path, "cniVersions is not an array"))?;
        let mut best: Option<Version> = None;
        for v in list {
            let text = v.as_str().ok_or_else(|| invalid(path, "cniVersions holds a non-string"))?;
            let version =
                Version::parse(text).ok_or_else(|| invalid(path, format!("cniVersions: {text:?} is not a version")))?;
            if ours.contains(&version) && best.is_none_or(|b| version > b) {
                best = Some(version);
            }
        }
        if let Some(best) = best {
            return Ok(best);
        }
    }
    let text = top
        .get("cniVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(path, "cniVersion is missing (and no usable cniVersions)"))?;
    let version = Version::parse(text).ok_or_else(|| invalid(path, format!("cniVersion {text:?} is not a version")))?;
    if !ours.contains(&version) {
        return Err(invalid(path, format!("cniVersion {text} is not one bulkhead speaks ({SUPPORTED_VERSIONS:?})")));
    }
    Ok(version)
}

fn plugin_from(path: &Path, index: usize, value: Value) -> Result<Plugin> {
    let Value::Object(config) = value else {
        return Err(invalid(path, format!("plugins[{index}] is not an object")));
    };
    let kind = config
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && !t.contains('/') && *t != "." && *t != "..")
        .ok_or_else(|| invalid(path, format!("plugins[{index}] has no valid \"type\"")))?
        .to_owned();
    Ok(Plugin { kind, config })
}

/// Parses a `.conflist` (a list) or, with `single`, a `.conf`/`.json` of
/// one plugin, which becomes a list of one.
pub fn parse(path: &Path, bytes: Vec<u8>, single: bool) -> Result<NetworkList> {
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| invalid(path, format!("not valid JSON: {e}")))?;
    let Value::Object(top) = value else {
        return Err(invalid(path, "not a JSON object"));
    };
    let name = top.get("name").and_then(Value::as_str).ok_or_else(|| invalid(path, "\"name\" is missing"))?.to_owned();
    if !valid_network_name(&name) {
        return Err(invalid(path, format!("network name {name:?} is not valid (letters, digits, '_', '.', '-')")));
    }
    let version = pick_version(path, &top)?;
    let flag = |key: &str| top.get(key).and_then(Value::as_bool).unwrap_or(false);
    let (disable_check, disable_gc) = (flag("disableCheck"), flag("disableGC"));
    let plugins = if single {
        vec![plugin_from(path, 0, Value::Object(top.clone()))?]
    } else {
        let list = match top.get("plugins") {
            Some(Value::Array(list)) => list.clone(),
            _ => return Err(invalid(path, "\"plugins\" is missing or not an array")),
        };
        list.into_iter().enumerate().map(|(i, p)| plugin_from(path, i, p)).collect::<Result<Vec<_>>>()?
    };
    if plugins.is_empty() {
        return Err(invalid(path, "\"plugins\" is empty"));
    }
    Ok(NetworkList { name, version, disable_check, disable_gc, plugins, source: path.to_owned(), bytes })
}

/// The configuration files of `dir` in the order libcni reads them.
fn conf_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Io { op: "read CNI conf dir", path: dir.to_owned(), source }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io { op: "read CNI conf dir", path: dir.to_owned(), source })?;
        let path = entry.path();
        let wanted =
            path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "conf" | "conflist" | "json"));
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The network list of `dir`: the first configuration file in lexical
/// order, `None` when there is none. A broken first file is an error
/// naming it (containerd does not skip it either).
pub fn load(dir: &Path) -> Result<Option<NetworkList>> {
    let Some(path) = conf_files(dir)?.into_iter().next() else {
        return Ok(None);
    };
    let bytes =
        std::fs::read(&path).map_err(|source| Error::Io { op: "read CNI config", path: path.clone(), source })?;
    let single = path.extension().and_then(|e| e.to_str()) != Some("conflist");
    parse(&path, bytes, single).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> Result<NetworkList> {
        parse(Path::new("/x/10-test.conflist"), text.as_bytes().to_vec(), false)
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(Version::parse("0.10.0").unwrap() > Version::parse("0.4.0").unwrap());
        assert_eq!(Version::parse("1.0").unwrap(), Version::V1_0_0);
        assert_eq!(Version::parse("1.x.0"), None);
        assert_eq!(Version::parse("1.0.0.0"), None);
    }

    #[test]
    fn a_conflist_parses_and_picks_the_highest_version_we_speak() {
        let l = list(
            r#"{"cniVersion":"0.4.0","cniVersions":["1.0.0","1.1.0","9.0.0"],"name":"pods","disableCheck":true,
                "plugins":[{"type":"bridge","bridge":"cni0"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        assert_eq!((l.name.as_str(), l.version, l.disable_check, l.disable_gc), ("pods", Version::V1_1_0, true, false));
        assert_eq!(l.plugins.iter().map(|p| p.kind.as_str()).collect::<Vec<_>>(), ["bridge", "portmap"]);
        assert!(l.plugins[1].has_capability("portMappings") && !l.plugins[0].has_capability("portMappings"));
    }

    #[test]
    fn bad_lists_are_refused_naming_the_file_and_the_fault() {
        for (text, fault) in [
            ("{", "not valid JSON"),
            (r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#, "\"name\" is missing"),
            (r#"{"cniVersion":"1.0.0","name":"a/b","plugins":[{"type":"bridge"}]}"#, "network name"),
            (r#"{"cniVersion":"7.0.0","name":"n","plugins":[{"type":"bridge"}]}"#, "cniVersion 7.0.0"),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#, "is empty"),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../x"}]}"#, "plugins[0]"),
            (r#"{"cniVersion":"1.0.0","name":"n"}"#, "\"plugins\" is missing"),
        ] {
            let err = list(text).unwrap_err().to_string();
            assert!(err.contains("10-test.conflist") && err.contains(fault), "{text}: {err}");
        }
    }

    #[test]
    fn the_first_file_in_lexical_order_is_used_and_a_conf_becomes_a_list() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        assert_eq!(load(&dir.path().join("missing")).unwrap(), None);
        std::fs::write(dir.path().join("README"), "not a config").unwrap();
        std::fs::write(
            dir.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("10-a.conf"), r#"{"cniVersion":"0.3.1","name":"a","type":"ptp"}"#).unwrap();
        let l = load(dir.path()).unwrap().unwrap();
        assert_eq!((l.name.as_str(), l.plugins.len(), l.plugins[0].kind.as_str()), ("a", 1, "ptp"));
        assert!(l.source.ends_with("10-a.conf"));
    }
}
