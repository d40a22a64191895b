//! OCI lifecycle hooks: each hook runs with the container's state as JSON
//! on its stdin, its own args and env, and an optional timeout after which
//! it is killed. Where they run: prestart and createRuntime in the runtime
//! namespace once init's namespaces exist; createContainer in the
//! container's namespaces before pivot_root; startContainer in the
//! container just before the user's program; poststart after `start`;
//! poststop after `delete`. A failing create-time hook fails `create`;
//! failing poststart and poststop hooks are reported and the lifecycle goes
//! on, as the spec asks.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};

use crate::spec::Bundle;
use crate::{Error, Result};

/// The state document a hook reads on stdin.
pub(crate) struct HookState(String);

impl HookState {
    pub(crate) fn new(bundle: &Bundle, pid: i32, status: &str) -> HookState {
        let annotations = bundle.spec.annotations().clone().unwrap_or_default();
        let id = bundle.id.clone();
        HookState(
            serde_json::json!({
                "ociVersion": "1.2.0",
                "id": id,
                "status": status,
                "pid": pid,
                "bundle": bundle.dir,
                "annotations": annotations,
            })
            .to_string(),
        )
    }
}

/// Whether `create` must stop init half-way for runtime-side hooks.
#[allow(deprecated)]
pub(crate) fn runtime_side_create_hooks(hooks: &Hooks) -> bool {
    hooks.prestart().as_ref().is_some_and(|h| !h.is_empty())
        || hooks.create_runtime().as_ref().is_some_and(|h| !h.is_empty())
}

/// The prestart (deprecated) and createRuntime hooks, in that order.
#[allow(deprecated)]
pub(crate) fn run_create_runtime(hooks: &Hooks, state: &HookState) -> Result<()> {
    run_all(hooks.prestart(), "hooks.prestart", state)?;
    run_all(hooks.create_runtime(), "hooks.createRuntime", state)
}

/// Runs `hooks` in order; the first failure stops them.
pub(crate) fn run_all(hooks: &Option<Vec<Hook>>, field: &str, state: &HookState) -> Result<()> {
    for (i, hook) in hooks.iter().flatten().enumerate() {
        run(hook, &format!("{field}[{i}]"), state)?;
    }
    Ok(())
}

fn run(hook: &Hook, field: &str, state: &HookState) -> Result<()> {
    let fail = |message: String| Error::Hook { field: field.to_owned(), path: hook.path().clone(), message };
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(hook.path());
    if let Some((arg0, rest)) = args.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env_clear();
    for var in hook.env().iter().flatten() {
        if let Some((key, value)) = var.split_once('=') {
            cmd.env(key, value);
        }
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().map_err(|e| fail(format!("start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook may exit without reading its state: that is not an error.
        let _ = stdin.write_all(state.0.as_bytes());
    }
    let deadline = hook.timeout().filter(|t| *t > 0).map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(fail(format!("exited with {status}"))),
            Ok(None) => {}
            Err(e) => return Err(fail(format!("wait: {e}"))),
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("timed out after {}s and was killed", hook.timeout().unwrap_or_default())));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs hooks whose failure must not stop the lifecycle, reporting failures on stderr.
pub(crate) fn run_all_reporting(hooks: &Option<Vec<Hook>>, field: &str, state: &HookState) {
    if let Err(e) = run_all(hooks, field, state) {
        eprintln!("bulkhead-oci: warning: {e}");
    }
}
