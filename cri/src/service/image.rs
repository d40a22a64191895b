//! `ImageService`: every RPC answers UNIMPLEMENTED, naming itself, until
//! the image store issue lands.

use bulkhead_proto::cri::image_service_server::ImageService;
use bulkhead_proto::cri::*;
use tonic::Request;

use super::{Cri, Ids, RpcResult};

fn image_name(spec: Option<&ImageSpec>) -> &str {
    spec.map_or("", |s| s.image.as_str())
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(&self, _req: Request<ListImagesRequest>) -> RpcResult<ListImagesResponse> {
        self.unimplemented("ListImages", Ids::none()).await
    }

    async fn image_status(&self, req: Request<ImageStatusRequest>) -> RpcResult<ImageStatusResponse> {
        self.unimplemented("ImageStatus", Ids::image(image_name(req.get_ref().image.as_ref()))).await
    }

    async fn pull_image(&self, req: Request<PullImageRequest>) -> RpcResult<PullImageResponse> {
        self.unimplemented("PullImage", Ids::image(image_name(req.get_ref().image.as_ref()))).await
    }

    async fn remove_image(&self, req: Request<RemoveImageRequest>) -> RpcResult<RemoveImageResponse> {
        self.unimplemented("RemoveImage", Ids::image(image_name(req.get_ref().image.as_ref()))).await
    }

    async fn image_fs_info(&self, _req: Request<ImageFsInfoRequest>) -> RpcResult<ImageFsInfoResponse> {
        self.unimplemented("ImageFsInfo", Ids::none()).await
    }
}
