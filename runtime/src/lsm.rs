//! Linux security modules: an AppArmor profile or SELinux label from the
//! spec is applied to the process at exec when the host runs that LSM; on
//! a host without it, the spec is refused with a clear error, as runc does
//! (a profile silently not applied would be a container less confined than
//! asked).

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::{Error, Result};

pub(crate) fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.trim() == "Y")
}

pub(crate) fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// Refuses a spec that asks for an LSM the host does not run.
pub(crate) fn check(spec: &Spec) -> Result<()> {
    let process = spec.process().clone().unwrap_or_default();
    if process.apparmor_profile().as_ref().is_some_and(|p| !p.is_empty()) && !apparmor_enabled() {
        return Err(Error::Spec {
            field: "process.apparmorProfile".into(),
            message: "AppArmor is not enabled on this host".into(),
        });
    }
    let mount_label = spec.linux().as_ref().and_then(|l| l.mount_label().clone());
    for (field, label) in [("process.selinuxLabel", process.selinux_label().clone()), ("linux.mountLabel", mount_label)]
    {
        if label.is_some_and(|l| !l.is_empty()) && !selinux_enabled() {
            return Err(Error::Spec { field: field.into(), message: "SELinux is not enabled on this host".into() });
        }
    }
    Ok(())
}

/// Sets the profile and label the next exec will take on.
pub(crate) fn apply(process: &oci_spec::runtime::Process) -> Result<()> {
    let write = |path: &str, value: String| {
        std::fs::write(path, value.as_bytes()).map_err(|source| Error::Read { path: path.into(), source })
    };
    if let Some(profile) = process.apparmor_profile().as_ref().filter(|p| !p.is_empty()) {
        let path = if Path::new("/proc/self/attr/apparmor/exec").exists() {
            "/proc/self/attr/apparmor/exec"
        } else {
            "/proc/self/attr/exec"
        };
        write(path, format!("exec {profile}"))?;
    }
    if let Some(label) = process.selinux_label().as_ref().filter(|l| !l.is_empty()) {
        write("/proc/self/attr/exec", label.clone())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_lsm_the_host_lacks_is_refused_by_field() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.0",
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "apparmorProfile": "docker-default"}
        }))
        .unwrap();
        if !apparmor_enabled() {
            let err = check(&spec).unwrap_err().to_string();
            assert!(err.contains("process.apparmorProfile") && err.contains("AppArmor"), "{err}");
        }
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.0",
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "selinuxLabel": "system_u:system_r:container_t:s0"}
        }))
        .unwrap();
        if !selinux_enabled() {
            assert!(check(&spec).unwrap_err().to_string().contains("process.selinuxLabel"));
        }
    }
}
