//! `ImageService` over the image store: PullImage, ListImages,
//! ImageStatus, RemoveImage and ImageFsInfo, with kubelet's semantics
//! (an unknown image is an empty ImageStatus, removing one already gone
//! succeeds).

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use bulkhead_image::registry::Credentials;
use bulkhead_image::{ImageRecord, Reference};
use bulkhead_proto::cri::image_service_server::ImageService;
use bulkhead_proto::cri::*;
use tonic::Request;

use super::{Context, Cri, Ids, RpcResult};
use crate::{Error, Result};

fn image_name(spec: Option<&ImageSpec>) -> &str {
    spec.map_or("", |s| s.image.as_str())
}

fn required<'a>(spec: Option<&'a ImageSpec>, field: &'static str) -> Result<&'a str> {
    match image_name(spec) {
        "" => Err(Error::InvalidArgument { field, message: "an image is required".into() }),
        name => Ok(name),
    }
}

/// The CRI AuthConfig as registry credentials.
fn credentials(auth: Option<&AuthConfig>) -> Result<Credentials> {
    let Some(a) = auth else { return Ok(Credentials::Anonymous) };
    if !a.registry_token.is_empty() {
        return Ok(Credentials::RegistryToken(a.registry_token.clone()));
    }
    if !a.identity_token.is_empty() {
        return Ok(Credentials::IdentityToken(a.identity_token.clone()));
    }
    if !a.username.is_empty() {
        return Ok(Credentials::Basic { username: a.username.clone(), password: a.password.clone() });
    }
    if !a.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&a.auth)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
            .ok_or_else(|| Error::InvalidArgument {
                field: "auth.auth",
                message: "is not base64 of user:password".into(),
            })?;
        return Ok(Credentials::Basic { username: decoded.0, password: decoded.1 });
    }
    Ok(Credentials::Anonymous)
}

/// The credentials for `registry` in a Docker config.json (`auths`, keyed
/// by host, `https://host` or a URL with a path, as `docker login` writes
/// them; Docker Hub under any of its names), if the file names it.
fn credentials_from_file(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let text = std::fs::read_to_string(path).map_err(Error::io("read the registry credentials", path))?;
    let bad = |message: String| Error::InvalidArgument {
        field: "image.auth_file",
        message: format!("{}: {message}", path.display()),
    };
    let file: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(auths) = file.get("auths").and_then(|a| a.as_object()) else { return Ok(None) };
    let hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    let host_of = |key: &str| {
        let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
        key.split('/').next().unwrap_or(key).to_owned()
    };
    let wanted = |host: &str| host == registry || (hub.contains(&host) && hub.contains(&registry));
    let Some(entry) = auths.iter().find(|(key, _)| wanted(&host_of(key))).map(|(_, entry)| entry) else {
        return Ok(None);
    };
    let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let auth = AuthConfig {
        username: field("username"),
        password: field("password"),
        auth: field("auth"),
        identity_token: field("identitytoken"),
        registry_token: field("registrytoken"),
        ..AuthConfig::default()
    };
    credentials(Some(&auth)).map(Some).map_err(|e| bad(format!("the entry of {registry}: {e}")))
}

/// Whether the config pins `image` (by any of its names).
fn pinned(ctx: &Context, image: &ImageRecord) -> bool {
    image.pinned
        || ctx.config.image.pinned_images.iter().filter_map(|p| p.parse::<Reference>().ok()).any(|p| {
            let name = p.to_string();
            image.repo_tags.contains(&name) || image.repo_digests.contains(&name)
        })
}

/// The CRI view of an image record.
fn to_cri(ctx: &Context, image: &ImageRecord) -> Image {
    let user = image.config.config.user.clone().unwrap_or_default();
    let user = user.split(':').next().unwrap_or_default().to_owned();
    let (uid, username) = match user.parse::<i64>() {
        Ok(uid) => (Some(Int64Value { value: uid }), String::new()),
        Err(_) => (None, user),
    };
    Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid,
        username,
        spec: Some(ImageSpec { image: image.id.clone(), ..ImageSpec::default() }),
        pinned: pinned(ctx, image),
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(&self, req: Request<ListImagesRequest>) -> RpcResult<ListImagesResponse> {
        let filter = req.into_inner().filter.and_then(|f| f.image).map(|s| s.image).filter(|s| !s.is_empty());
        self.observe(
            "ListImages",
            Ids::none(),
            self.blocking(move |ctx| {
                let images = match filter {
                    Some(name) => ctx.images.find(&name)?.into_iter().collect(),
                    None => ctx.images.list()?,
                };
                Ok(ListImagesResponse { images: images.iter().map(|i| to_cri(ctx, i)).collect() })
            }),
        )
        .await
    }

    async fn image_status(&self, req: Request<ImageStatusRequest>) -> RpcResult<ImageStatusResponse> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref()).to_owned();
        let verbose = req.verbose;
        self.observe(
            "ImageStatus",
            Ids::image(&name.clone()),
            self.blocking(move |ctx| {
                let name = required(req.image.as_ref(), "image.image")?;
                // An image kubelet asks about that is not here: an empty answer, not an error.
                let Some(found) = ctx.images.find(name)? else { return Ok(ImageStatusResponse::default()) };
                let info = if verbose {
                    let detail =
                        serde_json::json!({"config": found.config, "chainIDs": found.chain_ids, "blobs": found.blobs});
                    HashMap::from([("info".to_owned(), detail.to_string())])
                } else {
                    HashMap::new()
                };
                Ok(ImageStatusResponse { image: Some(to_cri(ctx, &found)), info })
            }),
        )
        .await
    }

    async fn pull_image(&self, req: Request<PullImageRequest>) -> RpcResult<PullImageResponse> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref()).to_owned();
        let ctx = self.context().clone();
        self.observe("PullImage", Ids::image(&name.clone()), async move {
            let name = required(req.image.as_ref(), "image.image")?;
            let reference: Reference = name.parse()?;
            let mut creds = credentials(req.auth.as_ref())?;
            let auth_file = &ctx.config.image.auth_file;
            if matches!(creds, Credentials::Anonymous) && !auth_file.is_empty() {
                creds = credentials_from_file(Path::new(auth_file), reference.registry())?.unwrap_or_default();
            }
            let started = std::time::Instant::now();
            let pulled = ctx.images.pull(&reference, &creds).await;
            ctx.metrics.observe_pull(started.elapsed(), pulled.as_ref().ok().map(|(_, bytes)| *bytes));
            let (image, bytes) = pulled?;
            tracing::info!(image = %reference, id = %image.id, bytes, elapsed_ms = started.elapsed().as_millis() as u64, "pulled");
            Ok(PullImageResponse { image_ref: image.id })
        })
        .await
    }

    async fn remove_image(&self, req: Request<RemoveImageRequest>) -> RpcResult<RemoveImageResponse> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref()).to_owned();
        let ctx = self.context().clone();
        self.observe("RemoveImage", Ids::image(&name.clone()), async move {
            let name = required(req.image.as_ref(), "image.image")?;
            // Removing an image that is already gone succeeds, as the CRI asks.
            ctx.images.remove(name).await?;
            Ok(RemoveImageResponse {})
        })
        .await
    }

    async fn image_fs_info(&self, _req: Request<ImageFsInfoRequest>) -> RpcResult<ImageFsInfoResponse> {
        self.observe(
            "ImageFsInfo",
            Ids::none(),
            self.blocking(|ctx| {
                let (bytes, inodes) = ctx.images.usage();
                let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
                let usage = FilesystemUsage {
                    timestamp,
                    fs_id: Some(FilesystemIdentifier { mountpoint: ctx.images.root().display().to_string() }),
                    used_bytes: Some(UInt64Value { value: bytes }),
                    inodes_used: Some(UInt64Value { value: inodes }),
                };
                Ok(ImageFsInfoResponse { image_filesystems: vec![usage], container_filesystems: Vec::new() })
            }),
        )
        .await
    }
}
