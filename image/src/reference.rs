//! Image references, parsed and normalized exactly as kubelet and
//! containerd do (the distribution/reference grammar): `busybox` is
//! `docker.io/library/busybox:latest`, a first component with a `.` or `:`
//! or equal to `localhost` is a registry host, and a reference with a digest
//! is named by its digest alone.

use std::fmt;
use std::str::FromStr;

use crate::{Digest, Error};

pub const DEFAULT_REGISTRY: &str = "docker.io";
const LEGACY_REGISTRY: &str = "index.docker.io";
const OFFICIAL_NAMESPACE: &str = "library";
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// A normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

fn is_path_component(c: &str) -> bool {
    // [a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__" or a run of "-", then at least one alnum.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_registry(host: &str) -> bool {
    // A hostname (labels of [a-zA-Z0-9-]), an optional :port, or an IPv6 literal in [].
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !host.ends_with(']') => (n, Some(p)),
        _ => (host, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    if name.starts_with('[') && name.ends_with(']') {
        return name[1..name.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_tag(tag: &str) -> bool {
    // [\w][\w.-]{0,127}
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(input: &str) -> Result<Reference, Error> {
        let invalid = |reason: &str| Error::InvalidReference { reference: input.to_owned(), reason: reason.to_owned() };
        if input.is_empty() {
            return Err(invalid("empty"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Digest>().map_err(|e| invalid(&e.to_string()))?)),
            None => (input, None),
        };
        // A tag follows the last ':' after the last '/' (a registry port comes before a '/').
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !is_tag(tag)
        {
            return Err(invalid(&format!("invalid tag {tag:?}")));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                if !is_registry(first) {
                    return Err(invalid(&format!("invalid registry host {first:?}")));
                }
                (first.to_owned(), path.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        let registry = if registry == LEGACY_REGISTRY { DEFAULT_REGISTRY.to_owned() } else { registry };
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        if !repository.split('/').all(is_path_component) {
            return Err(invalid(&format!("invalid repository name {repository:?}")));
        }
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{repository}")
        } else {
            repository
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(invalid("name longer than 255 characters"));
        }
        // With a digest the tag is dropped, as containerd's ParseDockerRef does.
        let tag = match (&digest, tag) {
            (Some(_), _) => None,
            (None, Some(t)) => Some(t.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Reference { registry, repository, tag, digest })
    }
}

impl Reference {
    /// The registry host, `docker.io` for Docker Hub.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, `library/busybox` for an official image.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag or digest to ask the registry for.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The same repository at `digest`: a repo digest.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference { digest: Some(digest), tag: None, ..self.clone() }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        s.parse::<Reference>().unwrap_or_else(|e| panic!("{s}: {e}")).to_string()
    }

    #[test]
    fn normalized_like_containerd() {
        let d = format!("sha256:{}", "ab".repeat(32));
        for (input, expected) in [
            ("busybox", "docker.io/library/busybox:latest".to_owned()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".to_owned()),
            ("library/busybox", "docker.io/library/busybox:latest".to_owned()),
            ("docker.io/busybox", "docker.io/library/busybox:latest".to_owned()),
            ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1".to_owned()),
            ("user/app", "docker.io/user/app:latest".to_owned()),
            ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9".to_owned()),
            ("localhost/app", "localhost/app:latest".to_owned()),
            ("localhost:5000/a/b/c:v1", "localhost:5000/a/b/c:v1".to_owned()),
            ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox:latest".to_owned()),
            ("[::1]:5000/busybox:x", "[::1]:5000/busybox:x".to_owned()),
            (&format!("busybox@{d}"), format!("docker.io/library/busybox@{d}")),
            (&format!("busybox:1.36@{d}"), format!("docker.io/library/busybox@{d}")),
            ("a_b__c-d---e/x.y", "docker.io/a_b__c-d---e/x.y:latest".to_owned()),
        ] {
            assert_eq!(norm(input), expected, "{input}");
        }
        let r: Reference = "localhost:5000/a/b:v1".parse().unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag(), r.object()),
            ("localhost:5000", "a/b", Some("v1"), "v1".to_owned())
        );
    }

    #[test]
    fn invalid_references_are_refused_by_name() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:123",
            "a//b",
            "a/-b",
            "a/b-",
            "a..b/c",
            "docker.io/UPPER",
            "exa mple/x",
            "host:port/x",
            "a_b.c/x",
            &"x".repeat(300),
        ] {
            let err = bad.parse::<Reference>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
