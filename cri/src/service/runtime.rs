//! `RuntimeService`: pods, containers, exec (sync and streaming), attach,
//! port-forward, stats, events, status and runtime config are served for
//! real; CheckpointContainer, ListMetricDescriptors and
//! ListPodSandboxMetrics answer UNIMPLEMENTED, naming themselves.

use std::collections::HashMap;
use std::pin::Pin;

use bulkhead_network::{PodCidrs, Readiness};
use bulkhead_proto::cri::runtime_service_server::RuntimeService;
use bulkhead_proto::cri::*;
use bulkhead_proto::{CRI_API_VERSION, KUBELET_API_VERSION};
use bulkhead_runtime::cgroups::Driver;
use bulkhead_runtime::host::HostReport;
use tokio_stream::StreamExt;
use tonic::Request;
use tonic::codegen::tokio_stream::Stream;

use super::{Context, Cri, Ids, RpcResult};
use crate::streaming::Pending;
use crate::{Error, Result, containers, events, pods};

pub const RUNTIME_NAME: &str = "bulkhead";
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

fn condition(kind: &str, ready: bool, reason: &str, message: &str) -> RuntimeCondition {
    RuntimeCondition { r#type: kind.into(), status: ready, reason: reason.into(), message: message.into() }
}

/// RuntimeReady: the host has what containers need and the root is writable.
fn runtime_condition(ctx: &Context, host: &HostReport) -> RuntimeCondition {
    if !host.is_fit() {
        return condition("RuntimeReady", false, "HostNotFit", &host.missing.join("; "));
    }
    let root = &ctx.config.root;
    if let Err(e) = nix::unistd::access(root, nix::unistd::AccessFlags::W_OK) {
        return condition("RuntimeReady", false, "RootNotWritable", &format!("root {}: {e}", root.display()));
    }
    condition("RuntimeReady", true, "", "")
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

/// The `verbose` info map; crictl shows each value as JSON.
fn verbose_info(ctx: &Context, host: &HostReport, net: &Readiness) -> HashMap<String, String> {
    let network = serde_json::json!({
        "mode": ctx.network.mode(),
        "podCidrs": ctx.network.pod_cidrs().to_string(),
        "podCidrsFromKubelet": ctx.network.pod_cidrs_from_kubelet().map(|c| c.to_string()),
        "readiness": net,
    });
    let objects = serde_json::json!({
        "pods": ctx.state.pods().len(),
        "containers": ctx.state.containers().len(),
    });
    HashMap::from([
        ("config".into(), to_json(&ctx.config)),
        ("configFile".into(), to_json(&ctx.config_file)),
        ("cgroupDriver".into(), to_json(&ctx.cgroup_driver)),
        ("host".into(), to_json(host)),
        ("network".into(), network.to_string()),
        ("objects".into(), objects.to_string()),
    ])
}

fn status(ctx: &Context, verbose: bool, net: Readiness) -> StatusResponse {
    let host = HostReport::probe();
    StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![
                runtime_condition(ctx, &host),
                condition("NetworkReady", net.ready, &net.reason, &net.message),
            ],
        }),
        info: if verbose { verbose_info(ctx, &host, &net) } else { HashMap::new() },
        // The one handler, the default; user namespaces for pods are not built yet.
        runtime_handlers: vec![RuntimeHandler {
            name: String::new(),
            features: Some(RuntimeHandlerFeatures {
                recursive_read_only_mounts: host.recursive_read_only,
                user_namespaces: false,
            }),
        }],
        features: Some(RuntimeFeatures { supplemental_groups_policy: true }),
    }
}

fn update_runtime_config(ctx: &Context, req: UpdateRuntimeConfigRequest) -> Result<UpdateRuntimeConfigResponse> {
    let text = req.runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr).unwrap_or_default();
    let cidrs = PodCidrs::parse(&text).map_err(|e| Error::InvalidArgument {
        field: "runtime_config.network_config.pod_cidr",
        message: e.to_string(),
    })?;
    if !cidrs.is_empty() {
        ctx.network.set_pod_cidrs(cidrs.clone())?;
        tracing::info!(pod_cidr = %cidrs, "pod CIDRs updated");
    }
    Ok(UpdateRuntimeConfigResponse {})
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, tonic::Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(&self, _req: Request<VersionRequest>) -> RpcResult<VersionResponse> {
        self.observe("Version", Ids::none(), async {
            Ok(VersionResponse {
                version: KUBELET_API_VERSION.into(),
                runtime_name: RUNTIME_NAME.into(),
                runtime_version: RUNTIME_VERSION.into(),
                runtime_api_version: CRI_API_VERSION.into(),
            })
        })
        .await
    }

    async fn status(&self, req: Request<StatusRequest>) -> RpcResult<StatusResponse> {
        let verbose = req.get_ref().verbose;
        self.observe("Status", Ids::none(), async {
            let net = self.context().network.readiness().await;
            self.blocking(move |ctx| Ok(status(ctx, verbose, net))).await
        })
        .await
    }

    async fn runtime_config(&self, _req: Request<RuntimeConfigRequest>) -> RpcResult<RuntimeConfigResponse> {
        let driver = match self.context().cgroup_driver {
            Driver::Systemd => CgroupDriver::Systemd,
            Driver::Cgroupfs => CgroupDriver::Cgroupfs,
        };
        self.observe("RuntimeConfig", Ids::none(), async {
            Ok(RuntimeConfigResponse { linux: Some(LinuxRuntimeConfiguration { cgroup_driver: driver as i32 }) })
        })
        .await
    }

    async fn update_runtime_config(
        &self,
        req: Request<UpdateRuntimeConfigRequest>,
    ) -> RpcResult<UpdateRuntimeConfigResponse> {
        let req = req.into_inner();
        self.observe("UpdateRuntimeConfig", Ids::none(), self.blocking(move |ctx| update_runtime_config(ctx, req)))
            .await
    }

    async fn run_pod_sandbox(&self, req: Request<RunPodSandboxRequest>) -> RpcResult<RunPodSandboxResponse> {
        // The sandbox has no id until it is created; its name goes in the span.
        let req = req.into_inner();
        let name = req.config.as_ref().and_then(|c| c.metadata.as_ref()).map(|m| m.name.clone()).unwrap_or_default();
        let ctx = self.context().clone();
        self.observe("RunPodSandbox", Ids::none(), async move {
            let id = pods::run(&ctx, req).await?;
            tracing::info!(pod_id = %id, pod_name = %name, "pod sandbox running");
            events::emit(&ctx, &id, &id, ContainerEventType::ContainerCreatedEvent);
            events::emit(&ctx, &id, &id, ContainerEventType::ContainerStartedEvent);
            Ok(RunPodSandboxResponse { pod_sandbox_id: id })
        })
        .await
    }

    async fn stop_pod_sandbox(&self, req: Request<StopPodSandboxRequest>) -> RpcResult<StopPodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let ctx = self.context().clone();
        self.observe("StopPodSandbox", Ids::pod(&id), async {
            let stopped = pods::stop(&ctx, &id).await?;
            for c in ctx.state.containers().into_iter().filter(|c| c.pod_id == id) {
                events::stopped(&ctx, &c.id, &id);
            }
            if stopped {
                events::emit(&ctx, &id, &id, ContainerEventType::ContainerStoppedEvent);
            }
            Ok(StopPodSandboxResponse {})
        })
        .await
    }

    async fn remove_pod_sandbox(&self, req: Request<RemovePodSandboxRequest>) -> RpcResult<RemovePodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let ctx = self.context().clone();
        self.observe("RemovePodSandbox", Ids::pod(&id), async {
            if ctx.state.pod(&id).is_some() {
                let children: Vec<String> =
                    ctx.state.containers().into_iter().filter(|c| c.pod_id == id).map(|c| c.id).collect();
                let was_ready = ctx.state.pod(&id).is_some_and(|p| p.state == crate::state::PodState::Ready);
                pods::remove(&ctx, &id).await?;
                for child in &children {
                    events::stopped(&ctx, child, &id);
                    events::emit(&ctx, child, &id, ContainerEventType::ContainerDeletedEvent);
                }
                if was_ready {
                    events::emit(&ctx, &id, &id, ContainerEventType::ContainerStoppedEvent);
                }
                events::emit(&ctx, &id, &id, ContainerEventType::ContainerDeletedEvent);
            }
            Ok(RemovePodSandboxResponse {})
        })
        .await
    }

    async fn pod_sandbox_status(&self, req: Request<PodSandboxStatusRequest>) -> RpcResult<PodSandboxStatusResponse> {
        let req = req.into_inner();
        let ctx = self.context().clone();
        self.observe("PodSandboxStatus", Ids::pod(&req.pod_sandbox_id), async {
            pods::status(&ctx, &req.pod_sandbox_id, req.verbose)
        })
        .await
    }

    async fn list_pod_sandbox(&self, req: Request<ListPodSandboxRequest>) -> RpcResult<ListPodSandboxResponse> {
        let filter = req.into_inner().filter;
        let ctx = self.context().clone();
        self.observe("ListPodSandbox", Ids::none(), async {
            Ok(ListPodSandboxResponse { items: pods::list(&ctx, filter) })
        })
        .await
    }

    async fn create_container(&self, req: Request<CreateContainerRequest>) -> RpcResult<CreateContainerResponse> {
        let req = req.into_inner();
        let pod_id = req.pod_sandbox_id.clone();
        let ctx = self.context().clone();
        self.observe("CreateContainer", Ids::pod(&pod_id), async {
            let id = containers::create(&ctx, req).await?;
            tracing::info!(container_id = %id, "container created");
            events::emit(&ctx, &id, &pod_id, ContainerEventType::ContainerCreatedEvent);
            Ok(CreateContainerResponse { container_id: id })
        })
        .await
    }

    async fn start_container(&self, req: Request<StartContainerRequest>) -> RpcResult<StartContainerResponse> {
        let id = req.into_inner().container_id;
        let ctx = self.context().clone();
        self.observe("StartContainer", Ids::container(&id), async {
            containers::start(&ctx, &id).await?;
            if let Some(c) = ctx.state.container(&id) {
                events::started(&ctx, &id, &c.pod_id);
            }
            Ok(StartContainerResponse {})
        })
        .await
    }

    async fn stop_container(&self, req: Request<StopContainerRequest>) -> RpcResult<StopContainerResponse> {
        let req = req.into_inner();
        let ctx = self.context().clone();
        self.observe("StopContainer", Ids::container(&req.container_id), async {
            containers::stop(&ctx, &req.container_id, req.timeout).await?;
            if let Some(c) = ctx.state.container(&req.container_id) {
                events::stopped(&ctx, &c.id, &c.pod_id);
            }
            Ok(StopContainerResponse {})
        })
        .await
    }

    async fn remove_container(&self, req: Request<RemoveContainerRequest>) -> RpcResult<RemoveContainerResponse> {
        let id = req.into_inner().container_id;
        let ctx = self.context().clone();
        self.observe("RemoveContainer", Ids::container(&id), async {
            let pod_id = ctx.state.container(&id).map(|c| c.pod_id);
            containers::remove(&ctx, &id).await?;
            if let Some(pod_id) = pod_id {
                events::stopped(&ctx, &id, &pod_id);
                events::emit(&ctx, &id, &pod_id, ContainerEventType::ContainerDeletedEvent);
            }
            Ok(RemoveContainerResponse {})
        })
        .await
    }

    async fn list_containers(&self, req: Request<ListContainersRequest>) -> RpcResult<ListContainersResponse> {
        let filter = req.into_inner().filter;
        let ctx = self.context().clone();
        self.observe("ListContainers", Ids::none(), async {
            Ok(ListContainersResponse { containers: containers::list(&ctx, filter) })
        })
        .await
    }

    async fn container_status(&self, req: Request<ContainerStatusRequest>) -> RpcResult<ContainerStatusResponse> {
        let req = req.into_inner();
        let ctx = self.context().clone();
        self.observe("ContainerStatus", Ids::container(&req.container_id), async {
            containers::status(&ctx, &req.container_id, req.verbose)
        })
        .await
    }

    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> RpcResult<UpdateContainerResourcesResponse> {
        let req = req.into_inner();
        let ctx = self.context().clone();
        self.observe("UpdateContainerResources", Ids::container(&req.container_id), async {
            containers::update_resources(&ctx, &req.container_id, req.linux).await?;
            Ok(UpdateContainerResourcesResponse {})
        })
        .await
    }

    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> RpcResult<ReopenContainerLogResponse> {
        let id = req.into_inner().container_id;
        let ctx = self.context().clone();
        self.observe("ReopenContainerLog", Ids::container(&id), async {
            containers::reopen_log(&ctx, &id).await.map(|()| ReopenContainerLogResponse {})
        })
        .await
    }

    async fn exec_sync(&self, req: Request<ExecSyncRequest>) -> RpcResult<ExecSyncResponse> {
        let req = req.into_inner();
        let ctx = self.context().clone();
        self.observe("ExecSync", Ids::container(&req.container_id), async {
            containers::exec_sync(&ctx, &req.container_id, req.cmd, req.timeout).await
        })
        .await
    }

    async fn exec(&self, req: Request<ExecRequest>) -> RpcResult<ExecResponse> {
        let req = req.into_inner();
        let ctx = self.context().clone();
        self.observe("Exec", Ids::container(&req.container_id.clone()), async move {
            containers::check_exec(&ctx, &req)?;
            Ok(ExecResponse { url: ctx.streaming.url(Pending::Exec(req))? })
        })
        .await
    }

    async fn attach(&self, req: Request<AttachRequest>) -> RpcResult<AttachResponse> {
        let req = req.into_inner();
        let ctx = self.context().clone();
        self.observe("Attach", Ids::container(&req.container_id.clone()), async move {
            containers::check_attach(&ctx, &req)?;
            Ok(AttachResponse { url: ctx.streaming.url(Pending::Attach(req))? })
        })
        .await
    }

    async fn port_forward(&self, req: Request<PortForwardRequest>) -> RpcResult<PortForwardResponse> {
        let req = req.into_inner();
        let ctx = self.context().clone();
        self.observe("PortForward", Ids::pod(&req.pod_sandbox_id.clone()), async move {
            pods::check_port_forward(&ctx, &req)?;
            Ok(PortForwardResponse { url: ctx.streaming.url(Pending::PortForward(req))? })
        })
        .await
    }

    async fn container_stats(&self, req: Request<ContainerStatsRequest>) -> RpcResult<ContainerStatsResponse> {
        let id = req.into_inner().container_id;
        self.observe("ContainerStats", Ids::container(&id), {
            let id = id.clone();
            self.blocking(move |ctx| Ok(ContainerStatsResponse { stats: Some(containers::stats(ctx, &id)?) }))
        })
        .await
    }

    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> RpcResult<ListContainerStatsResponse> {
        let filter = req.into_inner().filter;
        self.observe(
            "ListContainerStats",
            Ids::none(),
            self.blocking(move |ctx| Ok(ListContainerStatsResponse { stats: containers::list_stats(ctx, filter) })),
        )
        .await
    }

    async fn pod_sandbox_stats(&self, req: Request<PodSandboxStatsRequest>) -> RpcResult<PodSandboxStatsResponse> {
        let id = req.into_inner().pod_sandbox_id;
        self.observe("PodSandboxStats", Ids::pod(&id), {
            let id = id.clone();
            self.blocking(move |ctx| Ok(PodSandboxStatsResponse { stats: Some(pods::stats(ctx, &id)?) }))
        })
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> RpcResult<ListPodSandboxStatsResponse> {
        let filter = req.into_inner().filter;
        self.observe(
            "ListPodSandboxStats",
            Ids::none(),
            self.blocking(move |ctx| Ok(ListPodSandboxStatsResponse { stats: pods::list_stats(ctx, filter) })),
        )
        .await
    }

    async fn checkpoint_container(
        &self,
        req: Request<CheckpointContainerRequest>,
    ) -> RpcResult<CheckpointContainerResponse> {
        self.unimplemented("CheckpointContainer", Ids::container(&req.get_ref().container_id)).await
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(&self, _req: Request<GetEventsRequest>) -> RpcResult<EventStream> {
        let events = self.context().events.subscribe();
        self.observe("GetContainerEvents", Ids::none(), async move {
            // A subscriber that falls too far behind skips what it missed (kubelet relists).
            let stream = tokio_stream::wrappers::BroadcastStream::new(events)
                .filter_map(|event| event.ok())
                .map(Ok::<_, tonic::Status>);
            Ok(Box::pin(stream) as EventStream)
        })
        .await
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<ListMetricDescriptorsRequest>,
    ) -> RpcResult<ListMetricDescriptorsResponse> {
        self.unimplemented("ListMetricDescriptors", Ids::none()).await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<ListPodSandboxMetricsRequest>,
    ) -> RpcResult<ListPodSandboxMetricsResponse> {
        self.unimplemented("ListPodSandboxMetrics", Ids::none()).await
    }
}
