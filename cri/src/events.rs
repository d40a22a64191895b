//! Container events for kubelet's evented PLEG (`GetContainerEvents`):
//! created, started, stopped and deleted, for containers and for pod
//! sandboxes (as containerd sends them), each with the pod's status and
//! its containers' statuses at that moment. Creation, start and removal
//! are announced by the handlers; exits happen in the monitors, so a
//! watcher compares each container's monitor record with what it last saw.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_proto::cri::{ContainerEventResponse, ContainerEventType};
use tokio::sync::broadcast;

use crate::containers;
use crate::service::Context;
use crate::state::ContainerState;

/// How many events a slow subscriber may fall behind before it loses some.
const BACKLOG: usize = 1024;
/// How often the watcher looks for containers that exited.
const EXIT_POLL: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<ContainerEventResponse>,
    /// Containers announced as running and not yet as stopped.
    running: std::sync::Mutex<HashSet<String>>,
}

impl Default for Events {
    fn default() -> Events {
        Events { tx: broadcast::channel(BACKLOG).0, running: std::sync::Mutex::new(HashSet::new()) }
    }
}

impl Events {
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEventResponse> {
        self.tx.subscribe()
    }

    fn send(&self, event: ContainerEventResponse) {
        // No subscriber is fine: kubelet may use the generic PLEG.
        let _ = self.tx.send(event);
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A set of ids: a panicked holder cannot leave it half-changed.
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Announces that container `id` started.
pub fn started(ctx: &Context, id: &str, pod_id: &str) {
    ctx.events.running().insert(id.to_owned());
    emit(ctx, id, pod_id, ContainerEventType::ContainerStartedEvent);
}

/// Announces that container `id` stopped, unless that was announced already.
pub fn stopped(ctx: &Context, id: &str, pod_id: &str) {
    if ctx.events.running().remove(id) {
        emit(ctx, id, pod_id, ContainerEventType::ContainerStoppedEvent);
    }
}

/// Announces `kind` for container `id` (or, with `pod`, for the pod sandbox `id`).
pub fn emit(ctx: &Context, id: &str, pod_id: &str, kind: ContainerEventType) {
    let (pod_sandbox_status, containers_statuses) = match crate::pods::status(ctx, pod_id, false) {
        Ok(r) => (r.status, r.containers_statuses),
        Err(_) => (None, Vec::new()),
    };
    ctx.events.send(ContainerEventResponse {
        container_id: id.to_owned(),
        container_event_type: kind as i32,
        created_at: crate::pods::now_ns(),
        pod_sandbox_status,
        containers_statuses,
    });
}

/// Watches for containers that exit, for as long as the daemon runs.
pub async fn watch_exits(ctx: Arc<Context>) {
    let mut interval = tokio::time::interval(EXIT_POLL);
    loop {
        interval.tick().await;
        let ctx2 = ctx.clone();
        let seen = tokio::task::spawn_blocking(move || {
            ctx2.state.containers().into_iter().map(|c| (containers::current_state(&ctx2, &c), c)).collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (state, container) in seen {
            if state == ContainerState::Running {
                // Running since before a restart: watched, not announced.
                ctx.events.running().insert(container.id);
            } else {
                stopped(&ctx, &container.id, &container.pod_id);
            }
        }
    }
}
