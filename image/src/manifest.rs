//! Image manifests as registries serve them — OCI index and manifest,
//! Docker manifest list and schema 2 — and the image config. Schema 1 is
//! refused. An index is resolved to the manifest for the host's platform
//! (os, architecture, variant), as containerd's default platform matcher
//! does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Digest, Error, Result};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The Accept header for manifest requests: every kind bulkhead reads.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this build runs on, in OCI/Go names.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform { os: "linux".into(), architecture: architecture.into(), variant: variant.map(str::to_owned) }
    }

    /// Whether an image for `candidate` runs here; arm64 "v8" and no variant are the same.
    pub fn matches(&self, candidate: &Platform) -> bool {
        let normalize = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None | Some("v8")) => None,
            (_, v) => v.map(str::to_owned),
        };
        candidate.os == self.os
            && candidate.architecture == self.architecture
            && (candidate.variant.is_none() || normalize(candidate) == normalize(self))
    }
}

/// A list of manifests, one per platform.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    pub manifests: Vec<Descriptor>,
}

/// One image: its config and layers.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// What a manifest request returned.
#[derive(Debug, Clone)]
pub enum Fetched {
    Index(Index),
    Manifest(Manifest),
}

/// Parses a manifest body by its media type (the header's, else the body's).
pub fn parse(media_type: Option<&str>, body: &[u8]) -> Result<Fetched> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let bad = |reason: String| Error::InvalidManifest { reason };
    let probe: Probe = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let kind = media_type
        .map(|m| m.split(';').next().unwrap_or(m).trim().to_owned())
        .filter(|m| !m.is_empty() && m != "application/json" && m != "text/plain")
        .or(probe.media_type)
        .unwrap_or_else(|| if probe.manifests.is_some() { OCI_INDEX.into() } else { OCI_MANIFEST.into() });
    match kind.as_str() {
        OCI_INDEX | DOCKER_LIST => Ok(Fetched::Index(serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?)),
        OCI_MANIFEST | DOCKER_MANIFEST => {
            Ok(Fetched::Manifest(serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?))
        }
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Err(Error::UnsupportedMediaType {
            media_type: format!(
                "{kind} (Docker schema 1 is deprecated and not supported; push the image again with a current client)"
            ),
        }),
        _ if probe.schema_version == Some(1) => {
            Err(Error::UnsupportedMediaType { media_type: "Docker schema 1".into() })
        }
        other => Err(Error::UnsupportedMediaType { media_type: other.to_owned() }),
    }
}

impl Index {
    /// The manifest for `platform`.
    pub fn select(&self, platform: &Platform) -> Result<&Descriptor> {
        self.manifests.iter().find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p))).ok_or_else(|| {
            Error::NoMatchingPlatform {
                wanted: format!("{}/{}", platform.os, platform.architecture),
                available: self
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(|p| format!("{}/{}", p.os, p.architecture)))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })
    }
}

/// The parts of the image config that container creation and the CRI use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub typ: String,
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    pub fn parse(body: &[u8]) -> Result<ImageConfig> {
        serde_json::from_slice(body).map_err(|e| Error::InvalidManifest { reason: format!("image config: {e}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn an_index_resolves_to_the_host_platform() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": digest(1), "size": 10, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                {"mediaType": OCI_MANIFEST, "digest": digest(2), "size": 10, "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": digest(3), "size": 10, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": OCI_MANIFEST, "digest": digest(4), "size": 10, "platform": {"os": "windows", "architecture": "amd64"}}
            ]
        });
        let Fetched::Index(index) = parse(None, body.to_string().as_bytes()).unwrap() else { panic!("an index") };
        let amd64 = Platform { os: "linux".into(), architecture: "amd64".into(), variant: None };
        assert_eq!(index.select(&amd64).unwrap().digest.to_string(), digest(2));
        let arm64 = Platform { os: "linux".into(), architecture: "arm64".into(), variant: None };
        assert_eq!(index.select(&arm64).unwrap().digest.to_string(), digest(3));
        let s390 = Platform { os: "linux".into(), architecture: "s390x".into(), variant: None };
        let err = index.select(&s390).unwrap_err().to_string();
        assert!(err.contains("linux/s390x") && err.contains("linux/amd64"), "{err}");
    }

    #[test]
    fn manifests_of_each_kind_and_schema1_refused() {
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": digest(5), "size": 3},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": digest(6), "size": 9}]});
        let Fetched::Manifest(m) = parse(Some(DOCKER_MANIFEST), m.to_string().as_bytes()).unwrap() else { panic!() };
        assert_eq!(m.layers.len(), 1);
        let s1 = serde_json::json!({"schemaVersion": 1, "name": "x", "fsLayers": []});
        let err = parse(Some(DOCKER_SCHEMA1_SIGNED), s1.to_string().as_bytes()).unwrap_err().to_string();
        assert!(err.contains("schema 1"), "{err}");
        assert!(parse(None, s1.to_string().as_bytes()).is_err());
        assert!(parse(Some("application/vnd.example+json"), b"{}").unwrap_err().to_string().contains("vnd.example"));
    }

    #[test]
    fn image_config_fields() {
        let c = ImageConfig::parse(
            serde_json::json!({"architecture": "amd64", "os": "linux",
                "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "Env": ["A=1"], "WorkingDir": "/w", "User": "1000",
                           "StopSignal": "SIGINT", "Labels": {"a": "b"}, "ExposedPorts": {"80/tcp": {}}},
                "rootfs": {"type": "layers", "diff_ids": [digest(7)]}})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.config.entrypoint, Some(vec!["/bin/sh".to_string()]));
        assert_eq!(c.config.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(c.rootfs.diff_ids.len(), 1);
    }
}
