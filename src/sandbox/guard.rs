//! Removes a step's container on every path out of the step.

use bollard::query_parameters::RemoveContainerOptionsBuilder;

use super::Engine;

/// Owns one container; removes it when the step is done with it.
///
/// The normal path calls [`ContainerGuard::remove`] after inspecting the exit state. Any other
/// path — an error, the event stream dropped (cancellation, Ctrl-C) or a panic unwinding —
/// runs `Drop`, which removes the container synchronously on a thread of its own with a fresh
/// client and runtime: the caller's runtime may be shutting down, and a removal task spawned
/// on it could be dropped before it ran.
pub(super) struct ContainerGuard {
    engine: Engine,
    id: Option<String>,
    /// The container is being created: dropped now (Ctrl-C while the engine works on the
    /// request), it may appear only after the drop, so removal waits for it a little.
    creating: bool,
}

impl ContainerGuard {
    /// Guards the container `id`.
    pub(super) fn new(engine: Engine, id: String) -> Self {
        Self {
            engine,
            id: Some(id),
            creating: false,
        }
    }

    /// Guards the container named `name` while the request that creates it is in flight;
    /// [`ContainerGuard::created`] ends that (the caller then knows whether it exists).
    pub(super) fn creating(engine: Engine, name: String) -> Self {
        Self {
            engine,
            id: Some(name),
            creating: true,
        }
    }

    /// The create request finished: its answer says whether there is a container to guard.
    pub(super) fn created(mut self) {
        self.id = None;
    }

    /// Removes the container now (forcefully, with its anonymous volumes) and disarms the
    /// guard. A container that is already gone counts as removed.
    pub(super) async fn remove(mut self) -> Result<(), bollard::errors::Error> {
        let Some(id) = self.id.take() else {
            return Ok(());
        };
        remove_container(self.engine.docker(), &id).await
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let creating = self.creating;
        let client = match self.engine.fresh_client() {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(container = %id, %error, "cannot reconnect to remove the container");
                return;
            }
        };
        let cleanup = std::thread::Builder::new()
            .name("kiln-container-cleanup".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let removed = if creating {
                            runtime.block_on(remove_when_created(&client, &id))
                        } else {
                            runtime.block_on(remove_container(&client, &id))
                        };
                        if let Err(error) = removed {
                            tracing::warn!(container = %id, %error, "cannot remove the container");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot start a cleanup runtime"),
                }
            });
        match cleanup {
            // Waiting here is the point: the container must be gone before the caller moves on
            // (or the process exits).
            Ok(handle) => {
                let _ = handle.join();
            }
            Err(error) => tracing::warn!(%error, "cannot start the cleanup thread"),
        }
    }
}

/// Removes the container `name` whose create request was abandoned: the engine may still be
/// creating it, so "no such container" is retried for up to 3 s before it counts as never
/// created.
async fn remove_when_created(
    docker: &bollard::Docker,
    name: &str,
) -> Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    for _ in 0..15 {
        match docker.remove_container(name, Some(options.clone())).await {
            Ok(()) => return Ok(()),
            // 404: not created (yet); 409: still being created or removed. Ask again.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            Err(error) => return Err(error),
        }
    }
    tracing::debug!(container = %name, "no container appeared for an abandoned create");
    Ok(())
}

/// Removes a container by id, forcefully; "no such container" is success.
pub(super) async fn remove_container(
    docker: &bollard::Docker,
    id: &str,
) -> Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        // 404: already gone; 409: removal already in progress (another reaper got there first).
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(()),
        Err(error) => Err(error),
    }
}
