//! The registry client (OCI distribution spec): manifests by tag or digest
//! with every supported media type accepted, blobs streamed into the
//! content store with their digest and size verified as they arrive, and
//! the authentication registries ask for — anonymous, Basic, and the Bearer
//! token flow (`WWW-Authenticate: Bearer realm,service,scope`) with Basic
//! credentials or an identity token. TLS is verified (rustls, the system's
//! roots); hosts listed as plain HTTP are reached without it.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use base64::Engine;
use futures_util::StreamExt;
use reqwest::{StatusCode, header};

use crate::content::ContentStore;
use crate::manifest::{self, Descriptor};
use crate::{Digest, Error, Reference, Result};

/// Credentials for one registry, as the CRI's AuthConfig carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An identity (refresh) token, exchanged at the token endpoint.
    IdentityToken(String),
    /// A registry (bearer) token, sent as is.
    RegistryToken(String),
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Hosts (`host:port`) spoken to over plain HTTP.
    pub plain_http: Vec<String>,
    /// Per-registry settings: mirrors, CA, verification.
    pub hosts: Vec<HostConfig>,
    /// Cancel a download that receives no bytes for this long (containerd's
    /// image pull progress timeout). `None`: wait forever.
    pub progress_timeout: Option<std::time::Duration>,
    /// How many layers of one image download and unpack at once (0: 3).
    pub max_concurrent_layers: usize,
}

/// One registry's settings, as containerd's hosts.toml gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// The registry these settings are for (`docker.io`, `host:port`).
    pub registry: String,
    /// Mirrors tried in order before the registry itself: `http(s)://host[:port]`.
    pub mirrors: Vec<String>,
    /// A PEM file of CA certificates trusted for this registry and its mirrors.
    pub ca_file: Option<std::path::PathBuf>,
    /// Skip TLS verification for this registry and its mirrors (insecure).
    pub skip_verify: bool,
}

/// Where a request can go: a mirror or the registry itself.
struct Endpoint<'a> {
    /// `scheme://host/v2/<repository>`
    base: String,
    client: &'a reqwest::Client,
    mirror: bool,
}

/// A registry client; cheap to share, caches bearer tokens per scope.
#[derive(Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    /// Clients with a registry's own CA or verification setting, by registry.
    host_clients: HashMap<String, reqwest::Client>,
    config: RegistryConfig,
    tokens: Mutex<HashMap<String, String>>,
    /// Blobs being downloaded: a second pull of the same blob waits for the
    /// first and then finds it in the store, so each blob is fetched once.
    in_flight: Mutex<HashMap<Digest, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

/// A Bearer challenge's parameters.
#[derive(Debug, Default, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

/// Parses `WWW-Authenticate: Bearer realm="...",service="...",scope="..."`.
fn parse_challenge(value: &str) -> Challenge {
    let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
    let mut c = Challenge { scheme: scheme.to_ascii_lowercase(), ..Challenge::default() };
    // key="value" pairs; values may hold commas (scopes do), so scan quotes.
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key.as_str() {
            "realm" => c.realm = value.to_owned(),
            "service" => c.service = Some(value.to_owned()),
            "scope" => c.scope = Some(value.to_owned()),
            _ => {}
        }
        rest = next.trim_start_matches(',').trim();
    }
    c
}

fn http_err(reference: &Reference, what: impl std::fmt::Display) -> Error {
    Error::Registry { registry: reference.registry().to_owned(), message: what.to_string() }
}

/// A transport error with its causes ("error sending request" alone says
/// nothing: the refused connection or the untrusted certificate is below).
fn send_err(reference: &Reference, e: reqwest::Error) -> Error {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    http_err(reference, message)
}

impl RegistryClient {
    /// How many layers of one image to download and unpack at once.
    pub fn max_concurrent_layers(&self) -> usize {
        match self.config.max_concurrent_layers {
            0 => 3,
            n => n,
        }
    }

    pub fn new(config: RegistryConfig) -> Result<RegistryClient> {
        // One process-wide crypto provider; a second install is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = || {
            reqwest::Client::builder()
                .user_agent(concat!("bulkhead/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(std::time::Duration::from_secs(30))
        };
        let build_err = |registry: &str, e: reqwest::Error| Error::Registry {
            registry: registry.to_owned(),
            message: format!("HTTP client: {e}"),
        };
        let http = builder().build().map_err(|e| build_err("", e))?;
        let mut host_clients = HashMap::new();
        for host in &config.hosts {
            if host.ca_file.is_none() && !host.skip_verify {
                continue;
            }
            let mut b = builder();
            if let Some(ca) = &host.ca_file {
                let pem =
                    std::fs::read(ca).map_err(|source| Error::Io { op: "read CA file", path: ca.clone(), source })?;
                for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| build_err(&host.registry, e))? {
                    b = b.add_root_certificate(cert);
                }
            }
            if host.skip_verify {
                b = b.danger_accept_invalid_certs(true);
            }
            host_clients.insert(host.registry.clone(), b.build().map_err(|e| build_err(&host.registry, e))?);
        }
        Ok(RegistryClient {
            http,
            host_clients,
            config,
            tokens: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// Where to ask for `reference`: its registry's mirrors in order, then
    /// the registry itself.
    fn endpoints(&self, reference: &Reference) -> Vec<Endpoint<'_>> {
        let registry = reference.registry();
        let client = self.host_clients.get(registry).unwrap_or(&self.http);
        let mut out: Vec<Endpoint<'_>> = self
            .config
            .hosts
            .iter()
            .filter(|h| h.registry == registry)
            .flat_map(|h| h.mirrors.iter())
            .map(|m| Endpoint {
                base: format!("{}/v2/{}", m.trim_end_matches('/'), reference.repository()),
                client,
                mirror: true,
            })
            .collect();
        let host = match registry {
            crate::reference::DEFAULT_REGISTRY => "registry-1.docker.io",
            other => other,
        };
        let scheme = if self.config.plain_http.iter().any(|h| h == registry) { "http" } else { "https" };
        out.push(Endpoint { base: format!("{scheme}://{host}/v2/{}", reference.repository()), client, mirror: false });
        out
    }

    /// GETs `path` (after the repository) from the first endpoint that
    /// answers: a mirror that fails to connect, lacks the object or errs is
    /// passed over for the next, and the registry itself last.
    async fn get_any(
        &self,
        reference: &Reference,
        path: &str,
        accept: Option<&str>,
        creds: &Credentials,
    ) -> Result<(reqwest::Response, String, &reqwest::Client)> {
        let endpoints = self.endpoints(reference);
        let last = endpoints.len() - 1;
        for (i, endpoint) in endpoints.into_iter().enumerate() {
            let url = format!("{}/{path}", endpoint.base);
            match self.get_from(reference, endpoint.client, &url, accept, creds, 0).await {
                Ok(r)
                    if endpoint.mirror
                        && i < last
                        && (r.status() == StatusCode::NOT_FOUND || r.status().is_server_error()) =>
                {
                    tracing::debug!(url = %url, status = %r.status(), "mirror cannot serve; trying the next");
                }
                Err(e) if endpoint.mirror && i < last => {
                    tracing::debug!(url = %url, error = %e, "mirror unreachable; trying the next");
                }
                Ok(r) => return Ok((r, url, endpoint.client)),
                Err(e) => return Err(e),
            }
        }
        Err(http_err(reference, "no endpoint"))
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(scope).cloned()
    }

    /// GETs `url` from byte `offset` on (a Range request when not 0),
    /// answering an authentication challenge once.
    async fn get_from(
        &self,
        reference: &Reference,
        client: &reqwest::Client,
        url: &str,
        accept: Option<&str>,
        creds: &Credentials,
        offset: u64,
    ) -> Result<reqwest::Response> {
        let scope = format!("repository:{}:pull", reference.repository());
        let request = |auth: Option<String>| {
            let mut r = client.get(url);
            if let Some(accept) = accept {
                r = r.header(header::ACCEPT, accept);
            }
            if offset > 0 {
                r = r.header(header::RANGE, format!("bytes={offset}-"));
            }
            if let Some(auth) = auth {
                r = r.header(header::AUTHORIZATION, auth);
            }
            r
        };
        let first_auth = match creds {
            Credentials::RegistryToken(t) => Some(format!("Bearer {t}")),
            _ => self.cached_token(&scope).map(|t| format!("Bearer {t}")),
        };
        let response = request(first_auth).send().await.map_err(|e| send_err(reference, e))?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(parse_challenge)
            .ok_or_else(|| http_err(reference, "401 Unauthorized without a challenge"))?;
        let auth = match challenge.scheme.as_str() {
            "basic" => match creds {
                Credentials::Basic { username, password } => Some(basic(username, password)),
                _ => {
                    return Err(Error::Unauthorized {
                        registry: reference.registry().to_owned(),
                        message: "the registry wants a username and password".into(),
                    });
                }
            },
            "bearer" => {
                let token = self.fetch_token(reference, &challenge, &scope, creds).await?;
                self.tokens
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(scope.clone(), token.clone());
                Some(format!("Bearer {token}"))
            }
            other => return Err(http_err(reference, format!("unsupported authentication scheme {other:?}"))),
        };
        let response = request(auth).send().await.map_err(|e| send_err(reference, e))?;
        if response.status() == StatusCode::UNAUTHORIZED || response.status() == StatusCode::FORBIDDEN {
            let message = error_text(response).await;
            return Err(Error::Unauthorized { registry: reference.registry().to_owned(), message });
        }
        Ok(response)
    }

    /// The Bearer token flow: GET the realm with service and scope.
    async fn fetch_token(
        &self,
        reference: &Reference,
        c: &Challenge,
        scope: &str,
        creds: &Credentials,
    ) -> Result<String> {
        let mut query = vec![("scope", c.scope.clone().unwrap_or_else(|| scope.to_owned()))];
        if let Some(service) = &c.service {
            query.push(("service", service.clone()));
        }
        let mut request = self.http.get(&c.realm).query(&query);
        match creds {
            Credentials::Basic { username, password } => {
                request = request.header(header::AUTHORIZATION, basic(username, password))
            }
            Credentials::IdentityToken(t) => {
                // An identity token is a refresh token for the OAuth2 endpoint.
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", t.clone()),
                    ("client_id", "bulkhead".to_owned()),
                ];
                form.extend(query.iter().map(|(k, v)| (*k, v.clone())));
                request = self.http.post(&c.realm).form(&form);
            }
            Credentials::Anonymous | Credentials::RegistryToken(_) => {}
        }
        let response =
            request.send().await.map_err(|e| http_err(reference, format!("token endpoint {}: {e}", c.realm)))?;
        if !response.status().is_success() {
            let message = error_text(response).await;
            return Err(Error::Unauthorized { registry: reference.registry().to_owned(), message });
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let body = response.bytes().await.map_err(|e| http_err(reference, e))?;
        let reply: TokenReply =
            serde_json::from_slice(&body).map_err(|e| http_err(reference, format!("token reply: {e}")))?;
        reply.token.or(reply.access_token).ok_or_else(|| http_err(reference, "the token endpoint sent no token"))
    }

    /// Fetches the manifest `reference` names (by tag or digest); returns
    /// its digest, media type and bytes. A digest reference is verified.
    pub async fn manifest(
        &self,
        reference: &Reference,
        object: &str,
        creds: &Credentials,
    ) -> Result<(Digest, Option<String>, Vec<u8>)> {
        let (response, url, _) =
            self.get_any(reference, &format!("manifests/{object}"), Some(manifest::ACCEPT), creds).await?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Err(Error::ImageNotFound { reference: reference.to_string() }),
            s => return Err(http_err(reference, format!("GET {url}: {s}: {}", error_text(response).await))),
        }
        let media_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.bytes().await.map_err(|e| http_err(reference, e))?.to_vec();
        let digest = Digest::sha256_of(&body);
        if let Ok(asked) = object.parse::<Digest>()
            && asked != digest
        {
            return Err(Error::BlobMismatch {
                digest: asked,
                reason: format!("the registry sent a manifest hashing to {digest}"),
            });
        }
        Ok((digest, media_type, body))
    }

    /// Streams blob `desc` into `store` (verified on commit), unless it is there.
    pub async fn blob(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        store: &ContentStore,
        creds: &Credentials,
    ) -> Result<u64> {
        if store.size(&desc.digest) == Some(desc.size) {
            return Ok(0);
        }
        let slot = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            in_flight.entry(desc.digest.clone()).or_default().clone()
        };
        let fetched = {
            let _only_one = slot.lock().await;
            if store.size(&desc.digest) == Some(desc.size) {
                Ok(0)
            } else {
                self.download(reference, desc, store, creds).await
            }
        };
        let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if in_flight.get(&desc.digest).is_some_and(|s| std::sync::Arc::strong_count(s) <= 2) {
            in_flight.remove(&desc.digest);
        }
        fetched
    }

    /// Downloads a blob; a transfer cut short is resumed from where it
    /// stopped with a Range request (up to `RESUMES` times), or restarted
    /// when the server ignores the range.
    async fn download(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        store: &ContentStore,
        creds: &Credentials,
    ) -> Result<u64> {
        const RESUMES: u32 = 3;
        let (first, url, client) = self.get_any(reference, &format!("blobs/{}", desc.digest), None, creds).await?;
        let mut first = Some(first);
        let mut writer = store.writer(&desc.digest, Some(desc.size))?;
        let mut resumes = 0;
        loop {
            // Resumes go back to the endpoint that served the start.
            let response = match first.take() {
                Some(r) => r,
                None => self.get_from(reference, client, &url, None, creds, writer.written()).await?,
            };
            let status = response.status();
            if !status.is_success() {
                return Err(http_err(reference, format!("GET {url}: {status}: {}", error_text(response).await)));
            }
            if writer.written() > 0 && status != StatusCode::PARTIAL_CONTENT {
                // The whole blob again: start over.
                writer = store.writer(&desc.digest, Some(desc.size))?;
            }
            let mut stream = response.bytes_stream();
            let mut cut = None;
            let started = std::time::Instant::now();
            loop {
                let next = match self.config.progress_timeout {
                    Some(limit) => tokio::time::timeout(limit, stream.next()).await.map_err(|_| {
                        http_err(
                            reference,
                            format!(
                                "blob {}: no data for {}s; pull cancelled (image.pull_progress_timeout_seconds)",
                                desc.digest,
                                limit.as_secs()
                            ),
                        )
                    })?,
                    None => stream.next().await,
                };
                let Some(chunk) = next else { break };
                match chunk {
                    Ok(chunk) => writer
                        .write_all(&chunk)
                        .map_err(|e| Error::BlobMismatch { digest: desc.digest.clone(), reason: e.to_string() })?,
                    Err(e) => {
                        cut = Some(e);
                        break;
                    }
                }
            }
            match cut {
                None if writer.written() == desc.size => {
                    let secs = started.elapsed().as_secs_f64().max(1e-6);
                    tracing::debug!(
                        digest = %desc.digest,
                        bytes = desc.size,
                        ms = (secs * 1000.0) as u64,
                        mb_per_s = desc.size as f64 / secs / 1e6,
                        "blob downloaded"
                    );
                    break;
                }
                Some(e) if resumes >= RESUMES => {
                    return Err(http_err(reference, format!("blob {}: {e} (after {resumes} resumes)", desc.digest)));
                }
                None if resumes >= RESUMES => {
                    return Err(http_err(reference, format!("blob {}: the transfer ended early", desc.digest)));
                }
                _ => {
                    resumes += 1;
                    tracing::debug!(digest = %desc.digest, offset = writer.written(), "resuming an interrupted blob download");
                }
            }
        }
        let written = writer.written();
        writer.commit()?;
        Ok(written)
    }
}

fn basic(username: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")))
}

/// The registry's own error message (distribution's `{"errors":[...]}`), or the body.
async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Errors>(&body) {
        Ok(e) if !e.errors.is_empty() => {
            e.errors.iter().map(|i| format!("{}: {}", i.code, i.message)).collect::<Vec<_>>().join("; ")
        }
        _ if body.trim().is_empty() => status.to_string(),
        _ => body.trim().chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed_with_commas_in_scopes() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(c.scope.as_deref(), Some("repository:library/busybox:pull,push"));
        assert_eq!(parse_challenge(r#"Basic realm="registry""#).scheme, "basic");
    }
}
