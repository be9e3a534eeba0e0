//! Images: checked locally, pulled when missing (coalesced per reference,
//! bounded by the pull timeout), refused with a `VOLUME` unless allowed.

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::CreateImageOptionsBuilder;
use fnrs_driver::DriverError;
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};

use crate::reference::ImageRef;
use crate::{DockerDriver, is_connection_error};

/// One pull in progress, awaited by every start that needs the image.
pub(crate) type PullFuture = Shared<BoxFuture<'static, Result<(), DriverError>>>;

/// How long an image found present and acceptable is trusted by
/// [`Driver::start`](fnrs_driver::Driver::start) without inspecting it again (one engine request less per
/// cold start). A create that then finds it gone checks (pulls) it again; a
/// tag moved to an image with a `VOLUME` is noticed after this long.
pub const IMAGE_CHECK_TTL: Duration = Duration::from_secs(60);

impl DockerDriver {
    /// Make sure `image` is present locally (pulling it when missing) and
    /// acceptable (no `VOLUME` unless allowed).
    pub async fn ensure_image(&self, image: &str) -> Result<(), DriverError> {
        let parsed = ImageRef::parse(image)
            .map_err(|e| DriverError::BadImage(format!("invalid image '{image}': {e}")))?;
        let docker = self.client()?;
        let inspect = match docker.inspect_image(image).await {
            Ok(i) => i,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                self.pull(&docker, image, &parsed).await?;
                docker
                    .inspect_image(image)
                    .await
                    .map_err(|e| self.engine_error("inspecting pulled image", e))?
            }
            Err(e) => return Err(self.engine_error("inspecting image", e)),
        };
        let has_volume = inspect
            .config
            .as_ref()
            .and_then(|c| c.volumes.as_ref())
            .is_some_and(|v| !v.is_empty());
        if has_volume && !self.config.enable_volume {
            return Err(DriverError::BadImage("image has Volume definition".into()));
        }
        self.checked
            .lock()
            .insert(image.to_string(), std::time::Instant::now());
        Ok(())
    }

    /// Whether `image` passed [`DockerDriver::ensure_image`] within
    /// [`IMAGE_CHECK_TTL`].
    pub(crate) fn recently_checked(&self, image: &str) -> bool {
        let mut checked = self.checked.lock();
        match checked.get(image) {
            Some(t) if t.elapsed() < IMAGE_CHECK_TTL => true,
            Some(_) => {
                checked.remove(image);
                false
            }
            None => false,
        }
    }

    /// Pull, coalesced with any pull of the same image in progress, bounded by
    /// the pull timeout.
    async fn pull(
        &self,
        docker: &Docker,
        image: &str,
        parsed: &ImageRef,
    ) -> Result<(), DriverError> {
        let fut = {
            let mut pulls = self.pulls.lock();
            pulls
                .entry(image.to_string())
                .or_insert_with(|| {
                    let docker = docker.clone();
                    let creds = self.auth.for_image(parsed);
                    let (from, tag) = parsed.pull_params();
                    let img = image.to_string();
                    let host = self.host.clone();
                    let pulls = Arc::clone(&self.pulls);
                    async move {
                        let r = pull_image(&docker, &img, &from, &tag, creds, &host).await;
                        pulls.lock().remove(&img);
                        r
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        match tokio::time::timeout(self.config.pull_timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(image, "image pull timed out");
                // Let a later call start afresh.
                self.pulls.lock().remove(image);
                Err(DriverError::PullTimeout)
            }
        }
    }
}

async fn pull_image(
    docker: &Docker,
    image: &str,
    from: &str,
    tag: &str,
    creds: Option<bollard::auth::DockerCredentials>,
    host: &str,
) -> Result<(), DriverError> {
    tracing::info!(image, "pulling image");
    let opts = CreateImageOptionsBuilder::default()
        .from_image(from)
        .tag(tag)
        .build();
    let mut stream = docker.create_image(Some(opts), None, creds);
    let fail = |status: u16, msg: &str| DriverError::Pull {
        status,
        message: format!("Failed to pull image '{image}': {msg}"),
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => {}
            Err(BollardError::DockerResponseServerError {
                status_code,
                message,
            }) => {
                tracing::info!(image, status = status_code, error = %message, "image pull failed");
                let status = if (400..500).contains(&status_code) {
                    status_code
                } else {
                    502
                };
                return Err(fail(status, &message));
            }
            Err(BollardError::DockerStreamError { error }) => {
                tracing::info!(image, error = %error, "image pull failed");
                return Err(fail(502, &error));
            }
            Err(e) if is_connection_error(&e) => {
                return Err(DriverError::Unavailable(format!(
                    "Docker engine unavailable at {host}: {e}"
                )));
            }
            Err(e) => return Err(fail(502, &e.to_string())),
        }
    }
    tracing::info!(image, "image pulled");
    Ok(())
}
