//! Running one CNI plugin as the spec's protocol asks: the binary found in
//! the plugin directories, parameters in `CNI_*` environment variables,
//! the network configuration on stdin, a result or an error object on
//! stdout; killed when it outlives the per-call timeout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::{Error, Result};

/// What one call is about: the command and the `CNI_*` parameters.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// ADD, DEL, CHECK, STATUS, GC or VERSION.
    pub command: &'static str,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    /// `CNI_ARGS`: `K=V` pairs joined with `;`.
    pub args: &'a str,
}

/// The plugin binary `kind` in the first of `dirs` that has it.
pub fn find_plugin(dirs: &[PathBuf], kind: &str) -> Result<PathBuf> {
    dirs.iter().map(|d| d.join(kind)).find(|p| p.is_file()).ok_or_else(|| Error::CniPluginMissing {
        plugin: kind.to_owned(),
        dirs: dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":"),
    })
}

/// The message of a failed call: the plugin's error object when it wrote
/// one (`code`, `msg`, `details`), else what it printed.
fn failure_message(stdout: &[u8], stderr: &[u8], status: std::process::ExitStatus) -> (Option<u64>, String) {
    if let Ok(Value::Object(error)) = serde_json::from_slice::<Value>(stdout) {
        let code = error.get("code").and_then(Value::as_u64);
        let msg = error.get("msg").and_then(Value::as_str).unwrap_or("").trim();
        let details = error.get("details").and_then(Value::as_str).unwrap_or("").trim();
        let text = match (msg.is_empty(), details.is_empty()) {
            (false, false) => format!("{msg}: {details}"),
            (false, true) => msg.to_owned(),
            (true, false) => details.to_owned(),
            (true, true) => format!("{status} with error code {code:?} and no message"),
        };
        return (code, text);
    }
    let printed = [stderr, stdout]
        .iter()
        .map(|b| String::from_utf8_lossy(b).trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let printed: String = printed.chars().take(2000).collect();
    (None, if printed.is_empty() { status.to_string() } else { format!("{status}: {printed}") })
}

/// Runs `kind` for `call` with `config` on stdin. Returns the JSON it
/// printed (`None` when it printed nothing, as DEL, CHECK, STATUS and GC
/// may). A non-zero exit, a timeout or output that is not JSON is an error
/// naming the plugin and the command.
pub async fn invoke(
    dirs: &[PathBuf],
    kind: &str,
    call: &Call<'_>,
    config: &[u8],
    timeout: Duration,
) -> Result<Option<Value>> {
    let binary = find_plugin(dirs, kind)?;
    let cni_path = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":");
    let mut command = tokio::process::Command::new(&binary);
    command
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match call.netns {
        Some(netns) => command.env("CNI_NETNS", netns),
        None => command.env_remove("CNI_NETNS"),
    };
    let failed =
        |message: String| Error::CniPlugin { plugin: kind.to_owned(), command: call.command, code: None, message };
    let mut child = command.spawn().map_err(|e| failed(format!("cannot start {}: {e}", binary.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin may exit without reading its stdin; that is its answer.
        let _ = stdin.write_all(config).await;
    }
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => output.map_err(|e| failed(format!("waiting for it: {e}")))?,
        // Dropping the future kills the plugin (kill_on_drop).
        Err(_) => {
            return Err(Error::CniTimeout { plugin: kind.to_owned(), command: call.command, timeout });
        }
    };
    if !output.status.success() {
        let (code, message) = failure_message(&output.stdout, &output.stderr, output.status);
        return Err(Error::CniPlugin { plugin: kind.to_owned(), command: call.command, code, message });
    }
    if output.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&output.stdout).map(Some).map_err(|e| {
        let shown: String = String::from_utf8_lossy(&output.stdout).chars().take(200).collect();
        failed(format!("printed what is not a JSON result ({e}): {shown:?}"))
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    const CALL: Call<'static> = Call { command: "ADD", container_id: "c1", netns: None, ifname: "eth0", args: "" };

    #[tokio::test]
    async fn results_errors_garbage_and_hangs() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().join("nothing-here"), dir.path().to_owned()];
        script(dir.path(), "ok", r#"cat >/dev/null; echo "{\"cmd\":\"$CNI_COMMAND\",\"if\":\"$CNI_IFNAME\"}""#);
        script(
            dir.path(),
            "err",
            r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"no bridge","details":"cni0"}'; exit 1"#,
        );
        script(dir.path(), "garbage", "echo 'hello there'");
        script(dir.path(), "dies", "echo oops >&2; exit 3");
        script(dir.path(), "quiet", "exit 0");
        script(dir.path(), "hangs", "exec sleep 30");
        let t = Duration::from_secs(5);
        let out = invoke(&dirs, "ok", &CALL, b"{}", t).await.unwrap().unwrap();
        assert_eq!(out, serde_json::json!({"cmd": "ADD", "if": "eth0"}));
        assert_eq!(invoke(&dirs, "quiet", &CALL, b"{}", t).await.unwrap(), None);
        let e = invoke(&dirs, "err", &CALL, b"{}", t).await.unwrap_err();
        assert!(matches!(e, Error::CniPlugin { code: Some(7), .. }), "{e}");
        assert!(e.to_string().contains("err") && e.to_string().contains("no bridge: cni0"), "{e}");
        let e = invoke(&dirs, "garbage", &CALL, b"{}", t).await.unwrap_err().to_string();
        assert!(e.contains("not a JSON result") && e.contains("hello there"), "{e}");
        let e = invoke(&dirs, "dies", &CALL, b"{}", t).await.unwrap_err().to_string();
        assert!(e.contains("oops") && e.contains("exit status: 3"), "{e}");
        let e = invoke(&dirs, "missing", &CALL, b"{}", t).await.unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("nothing-here"), "{e}");
        let started = std::time::Instant::now();
        let e = invoke(&dirs, "hangs", &CALL, b"{}", Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(e, Error::CniTimeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
