//! Resolving the images steps name to engine references and content identities.

use crate::engine::{ImageResolver, StepImage};
use crate::hash::{Digest, KeyHasher};
use crate::sandbox::Engine;

use super::{ExactGo, ExactRequest, GoSources, PinPolicy, toolchain_for};
use super::{
    GoLine, ImageError, LABEL_RECIPE, LABEL_ROOTFS, ensure_toolchain, find_base, find_toolchain,
    toolchain_recipe,
};

/// The content identity of an image from what the engine says about it: a kiln toolchain
/// image by its recipe key, a bootstrapped base by its rootfs digest, anything else by its
/// layers' diff ids (content hashes of the uncompressed layers). Never the engine's id.
#[must_use]
pub(crate) fn identity_of<S: std::hash::BuildHasher>(
    labels: &std::collections::HashMap<String, String, S>,
    layers: &[String],
) -> Option<Digest> {
    if let Some(recipe) = labels.get(LABEL_RECIPE).and_then(|r| r.parse().ok()) {
        return Some(recipe);
    }
    if let Some(rootfs) = labels
        .get(LABEL_ROOTFS)
        .and_then(|d| d.parse::<Digest>().ok())
        && layers == [rootfs.to_string()]
    {
        return Some(rootfs);
    }
    if layers.is_empty() {
        return None;
    }
    let mut key = KeyHasher::new("kiln/image-layers", 1);
    key.strs("diff_ids", layers);
    Some(key.finish())
}

/// Resolves `toolchain:<go>` (the toolchain image on the bootstrapped base) and
/// `image:<reference>` (any local image) against an engine.
#[derive(Clone, Debug)]
pub(crate) struct EngineImageResolver {
    engine: Engine,
    build_missing: bool,
}

impl EngineImageResolver {
    /// With `build_missing`, a missing toolchain image is built (for runs); without, only its
    /// identity is computed (for plans, which must not build anything).
    #[must_use]
    pub(crate) fn new(engine: Engine, build_missing: bool) -> Self {
        Self {
            engine,
            build_missing,
        }
    }
}

impl ImageResolver for EngineImageResolver {
    async fn resolve(
        &self,
        image: &str,
    ) -> Result<StepImage, Box<dyn miette::Diagnostic + Send + Sync>> {
        Ok(self.resolve_image(image).await?)
    }
}

impl EngineImageResolver {
    /// `toolchain:1.24.11`: the exact toolchain, found through its pins; built from an archive
    /// of `KILN_GO_ARCHIVES` that matches its pin when missing and `build_missing`.
    async fn resolve_exact(&self, version: &ExactGo) -> Result<StepImage, ImageError> {
        let request = ExactRequest {
            version: version.clone(),
            sources: GoSources::from_env(Vec::new()),
            policy: PinPolicy::Refuse,
            lock_dir: None,
            archive: None,
        };
        let choice = toolchain_for(&self.engine, &request, self.build_missing, &mut |_| {}).await?;
        Ok(StepImage {
            reference: choice.reference,
            identity: choice.recipe,
        })
    }

    async fn resolve_image(&self, image: &str) -> Result<StepImage, ImageError> {
        if let Some(go) = image.strip_prefix("toolchain:") {
            // A bare line (`1.23`) names a Debian base's toolchain; anything more exact, a
            // pinned distribution's.
            if go.trim_start_matches("go").matches('.').count() >= 2
                || go.parse::<GoLine>().is_err()
            {
                return self.resolve_exact(&ExactGo::parse(go)?).await;
            }
            let go: GoLine = go.parse()?;
            let base =
                find_base(&self.engine, go)
                    .await?
                    .ok_or_else(|| ImageError::BaseMissing {
                        tag: go.base_tag(),
                        command: super::BaseKind::Debian(go).command(),
                    })?;
            let recipe = toolchain_recipe(&base.rootfs, go);
            let reference = match find_toolchain(&self.engine, &recipe).await? {
                Some(found) => found.id,
                None if self.build_missing => {
                    ensure_toolchain(&self.engine, go, None, &mut |_| {})
                        .await?
                        .id
                }
                None => format!("kiln/toolchain:go{}-{}", go.minor(), &recipe.hex()[..12]),
            };
            return Ok(StepImage {
                reference,
                identity: recipe,
            });
        }
        let Some(reference) = image.strip_prefix("image:") else {
            return Err(ImageError::BadSpec {
                image: image.to_owned(),
            });
        };
        let inspected = self
            .engine
            .docker()
            .inspect_image(reference)
            .await
            .map_err(|source| ImageError::NotOnEngine {
                image: reference.to_owned(),
                source,
            })?;
        let layers = inspected.root_fs.and_then(|r| r.layers).unwrap_or_default();
        let labels = inspected.config.and_then(|c| c.labels).unwrap_or_default();
        let identity = identity_of(&labels, &layers).ok_or_else(|| ImageError::NoIdentity {
            image: reference.to_owned(),
        })?;
        Ok(StepImage {
            reference: inspected.id.unwrap_or_else(|| reference.to_owned()),
            identity,
        })
    }
}
