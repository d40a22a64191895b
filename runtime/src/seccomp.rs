//! `linux.seccomp` compiled to a BPF filter by libseccomp (the library
//! runc, crun and youki use: it knows every architecture's syscall
//! numbers). The filter is compiled before init reports ready, so a bad
//! profile fails `create`, and loaded as the last step before exec.

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator};

use crate::{Error, Result};

const EPERM: u32 = 1;

fn bad(field: impl Into<String>, message: impl std::fmt::Display) -> Error {
    Error::Spec { field: field.into(), message: message.to_string() }
}

fn action(action: LinuxSeccompAction, errno_ret: Option<u32>, field: &str) -> Result<ScmpAction> {
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno_ret.unwrap_or(EPERM) as i32),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno_ret.unwrap_or(0) as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Unsupported { field: field.into(), what: "SCMP_ACT_NOTIFY (seccomp listeners)".into() });
        }
    })
}

fn compare(op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> (ScmpCompareOp, u64) {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, value),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, value),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, value),
        // The spec's value is the mask and valueTwo the datum.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two.unwrap_or(0)),
    }
}

/// Compiles a seccomp profile. Syscall names this libseccomp does not know
/// on any of the profile's architectures are skipped, as runc does.
pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    let default = action(profile.default_action(), profile.default_errno_ret(), "linux.seccomp.defaultAction")?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| bad("linux.seccomp", e))?;
    // bulkhead sets no_new_privs itself, from process.noNewPrivileges.
    ctx.set_ctl_nnp(false).map_err(|e| bad("linux.seccomp", e))?;
    for (i, arch) in profile.architectures().iter().flatten().enumerate() {
        let name = serde_json::to_value(arch).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let arch: ScmpArch =
            name.parse().map_err(|_| bad(format!("linux.seccomp.architectures[{i}]"), format!("{name} is unknown")))?;
        ctx.add_arch(arch).map_err(|e| bad(format!("linux.seccomp.architectures[{i}]"), e))?;
    }
    for flag in profile.flags().iter().flatten() {
        let set = match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        };
        set.map_err(|e| bad("linux.seccomp.flags", e))?;
    }
    for (i, rule) in profile.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let act = action(rule.action(), rule.errno_ret(), &format!("{field}.action"))?;
        if act == default {
            continue;
        }
        let conditions: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| {
                let (op, datum) = compare(a.op(), a.value(), a.value_two());
                ScmpArgCompare::new(a.index() as u32, op, datum)
            })
            .collect();
        let mut indexes: Vec<usize> = rule.args().iter().flatten().map(|a| a.index()).collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else { continue };
            let added = if conditions.is_empty() {
                ctx.add_rule(act, syscall)
            } else if repeated {
                // libseccomp cannot AND two conditions on one argument: one rule each (as runc).
                conditions.iter().try_fold(&mut ctx, |ctx, c| ctx.add_rule_conditional(act, syscall, &[*c]))
            } else {
                ctx.add_rule_conditional(act, syscall, &conditions)
            };
            added.map_err(|e| bad(format!("{field}.names"), format!("{name}: {e}")))?;
        }
    }
    Ok(ctx)
}

/// Installs the filter on the calling thread's process.
pub(crate) fn load(ctx: &ScmpFilterContext) -> Result<()> {
    ctx.load().map_err(|e| bad("linux.seccomp", format!("load the filter: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(value: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_profile_with_arguments_and_unknown_names_compiles() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [
                {"names": ["read", "write", "no_such_syscall_anywhere"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95}
            ]
        }));
        let ctx = compile(&p).unwrap();
        let out = tempfile::tempfile().unwrap();
        ctx.export_bpf(&out).unwrap();
        assert!(out.metadata().unwrap().len() > 0, "a BPF program was produced");
    }

    #[test]
    fn notify_is_refused_naming_the_field() {
        let p = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}));
        let err = compile(&p).unwrap_err().to_string();
        assert!(err.contains("linux.seccomp.syscalls[0].action"), "{err}");
    }
}
