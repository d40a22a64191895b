//! Per-RPC Prometheus metrics — request counts, error counts by gRPC code,
//! latency histograms — and the optional HTTP endpoint that serves them
//! (`GET /metrics`, off unless `metrics.address` is set).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    rpc: String,
    code: String,
}

fn latency_histogram() -> Histogram {
    // 250µs .. ~8s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The daemon's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RpcLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    latency: Family<RpcLabels, Histogram, fn() -> Histogram>,
    pulls: Family<ResultLabels, Counter>,
    pull_bytes: Counter,
    pull_seconds: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("bulkhead");
        let requests = Family::<RpcLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let latency = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("grpc_requests", "CRI gRPC requests handled, by RPC", requests.clone());
        registry.register("grpc_errors", "CRI gRPC requests that failed, by RPC and gRPC code", errors.clone());
        registry.register("grpc_request_duration_seconds", "CRI gRPC request latency, by RPC", latency.clone());
        let pulls = Family::<ResultLabels, Counter>::default();
        let pull_bytes = Counter::default();
        // 10ms .. ~40min
        let pull_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 18));
        registry.register("image_pulls", "Image pulls, by result (ok or error)", pulls.clone());
        registry.register("image_pull_bytes", "Bytes downloaded by image pulls", pull_bytes.clone());
        registry.register("image_pull_duration_seconds", "Image pull duration", pull_seconds.clone());
        Metrics { registry: Arc::new(registry), requests, errors, latency, pulls, pull_bytes, pull_seconds }
    }
}

impl Metrics {
    /// Records one finished request; `error_code` is the gRPC code when it failed.
    pub fn observe(&self, rpc: &str, elapsed: Duration, error_code: Option<tonic::Code>) {
        let labels = RpcLabels { rpc: rpc.to_owned() };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
        if let Some(code) = error_code {
            self.errors.get_or_create(&ErrorLabels { rpc: rpc.to_owned(), code: format!("{code:?}") }).inc();
        }
    }

    /// Records one finished image pull; `bytes` is `Some` when it succeeded.
    pub fn observe_pull(&self, elapsed: Duration, bytes: Option<u64>) {
        let result = if bytes.is_some() { "ok" } else { "error" };
        self.pulls.get_or_create(&ResultLabels { result: result.into() }).inc();
        self.pull_bytes.inc_by(bytes.unwrap_or(0));
        self.pull_seconds.observe(elapsed.as_secs_f64());
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn respond(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET || req.uri().path() != "/metrics" {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found; try GET /metrics\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
        let mut r = Response::new(Full::new(Bytes::from(self.encode())));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        r
    }

    /// Serves `GET /metrics` on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let response = metrics.respond(&req);
                    async move { Ok::<_, Infallible>(response) }
                });
                if let Err(e) =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
                {
                    tracing::debug!(error = %e, "metrics endpoint: connection ended");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_and_latency_per_rpc() {
        let m = Metrics::default();
        m.observe("Version", Duration::from_millis(1), None);
        m.observe("RunPodSandbox", Duration::from_millis(2), Some(tonic::Code::Unimplemented));
        let text = m.encode();
        assert!(text.contains("bulkhead_grpc_requests_total{rpc=\"Version\"} 1"), "{text}");
        assert!(text.contains("bulkhead_grpc_errors_total{rpc=\"RunPodSandbox\",code=\"Unimplemented\"} 1"), "{text}");
        assert!(text.contains("bulkhead_grpc_request_duration_seconds_count{rpc=\"Version\"} 1"), "{text}");
    }
}
