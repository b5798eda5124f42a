//! The derived toolchain image every step runs in: a base (bootstrapped offline, or the
//! production golang image) plus the build user, cache directories, the `date` shim and a
//! fixed environment (`images/toolchain/`). Built with the engine's classic builder; identified
//! by its recipe key.

use std::collections::HashMap;

use bollard::query_parameters::{BuildImageOptionsBuilder, ListImagesOptionsBuilder};
use futures::TryStreamExt as _;

use crate::hash::{Digest, KeyHasher};
use crate::sandbox::Engine;

use super::{
    GoLine, ImageError, ImageProgress, LABEL_BASE, LABEL_GO, LABEL_KIND, LABEL_RECIPE, find_base,
};

/// Schema version of the recipe key; bump when what [`toolchain_recipe`] hashes changes.
const RECIPE_VERSION: u32 = 1;

/// The build context, compiled in: (path in the context, mode, bytes).
pub(super) const CONTEXT: [(&str, u32, &[u8]); 2] = [
    (
        "Dockerfile",
        0o644,
        include_bytes!("../../images/toolchain/Dockerfile"),
    ),
    ("date", 0o755, include_bytes!("../../images/toolchain/date")),
];

/// A toolchain image on the engine.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ToolchainImage {
    /// The engine tag (`kiln/toolchain:go1.23-<recipe prefix>`).
    pub(crate) tag: String,
    /// The engine's image id (a local fact).
    pub id: String,
    /// Content identity: the recipe key.
    pub(crate) recipe: Digest,
    /// Identity of the base it was built on.
    pub(crate) base: Digest,
    /// The Go inside.
    pub(crate) go_version: String,
    /// The SHA-256 of the pinned Go archive it was built from (exact toolchains).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) go_archive: Option<Digest>,
}

/// The recipe key of the toolchain image for `go` on the base identified by `base`.
#[must_use]
pub fn toolchain_recipe(base: &Digest, go: GoLine) -> Digest {
    let mut key = KeyHasher::new("kiln/toolchain-image", RECIPE_VERSION);
    key.digest("base", base)
        .str("go_minor", go.minor())
        .u64("files", CONTEXT.len() as u64);
    for (path, mode, bytes) in CONTEXT {
        key.str("path", path)
            .u64("mode", u64::from(mode))
            .bytes("content", bytes);
    }
    key.finish()
}

/// The image a toolchain image is built on, resolved to its content identity.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BaseRef {
    tag: String,
    id: String,
    identity: Digest,
    go_version: String,
}

/// Resolves the base: the bootstrapped one for `go`, or the local image `base` (e.g. the
/// production `golang:X-alpine` recipe of `images/production/`).
///
/// A bootstrapped base is identified by its rootfs digest. Any other image is identified by
/// its layers' diff ids (content hashes of the uncompressed layers), never by its engine id.
async fn resolve_base(
    engine: &Engine,
    go: GoLine,
    base: Option<&str>,
) -> Result<BaseRef, ImageError> {
    let Some(reference) = base else {
        let found = find_base(engine, go)
            .await?
            .ok_or_else(|| ImageError::BaseMissing {
                tag: go.base_tag(),
                command: super::BaseKind::Debian(go).command(),
            })?;
        return Ok(BaseRef {
            tag: found.tag,
            id: found.id,
            identity: found.rootfs,
            go_version: found.go_version,
        });
    };
    let inspected = match engine.docker().inspect_image(reference).await {
        Ok(inspected) => inspected,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            return Err(ImageError::BaseMissing {
                tag: reference.to_owned(),
                command: super::BaseKind::Debian(go).command(),
            });
        }
        Err(source) => {
            return Err(ImageError::Engine {
                action: "inspecting the base image",
                source,
            });
        }
    };
    let layers = inspected.root_fs.and_then(|r| r.layers).unwrap_or_default();
    let config = inspected.config.unwrap_or_default();
    let labels = config.labels.unwrap_or_default();
    // A toolchain image is not a base: only rootfs or layer identities apply here.
    let mut base_labels = labels.clone();
    base_labels.remove(super::LABEL_RECIPE);
    let identity =
        super::identity_of(&base_labels, &layers).ok_or_else(|| ImageError::NoIdentity {
            image: reference.to_owned(),
        })?;
    // The official golang images say which Go they carry in GOLANG_VERSION.
    let env_go = config
        .env
        .unwrap_or_default()
        .iter()
        .find_map(|kv| kv.strip_prefix("GOLANG_VERSION=").map(str::to_owned));
    let go_version =
        labels
            .get(LABEL_GO)
            .cloned()
            .or(env_go)
            .ok_or_else(|| ImageError::WrongGo {
                image: reference.to_owned(),
                printed: "(no kiln.go label and no GOLANG_VERSION in its env)".into(),
                expected: go.minor().into(),
            })?;
    if go_version.parse::<GoLine>().ok() != Some(go) {
        return Err(ImageError::WrongGo {
            image: reference.to_owned(),
            printed: go_version,
            expected: go.minor().into(),
        });
    }
    Ok(BaseRef {
        tag: reference.to_owned(),
        id: inspected.id.unwrap_or_default(),
        identity,
        go_version,
    })
}

/// Finds the toolchain image for `go` on its base — the bootstrapped one, or the local image
/// `base` — building it when it is missing. Building twice is harmless: the second build finds
/// the first by its recipe.
pub async fn ensure_toolchain(
    engine: &Engine,
    go: GoLine,
    base: Option<&str>,
    progress: &mut (dyn FnMut(ImageProgress) + Send),
) -> Result<ToolchainImage, ImageError> {
    let base = resolve_base(engine, go, base).await?;
    let recipe = toolchain_recipe(&base.identity, go);
    if let Some(found) = find_toolchain(engine, &recipe).await? {
        return Ok(found);
    }
    let tag = format!("kiln/toolchain:go{}-{}", go.minor(), &recipe.hex()[..12]);
    progress(ImageProgress::Phase(format!(
        "building {tag} on {}",
        base.tag
    )));

    let build_args = HashMap::from([
        ("BASE", base.id.clone()),
        ("GO_MINOR", go.minor().to_owned()),
    ]);
    let labels = HashMap::from([
        (LABEL_KIND, "toolchain".to_owned()),
        (LABEL_RECIPE, recipe.to_string()),
        (LABEL_BASE, base.identity.to_string()),
        (LABEL_GO, base.go_version.clone()),
    ]);
    let context = build_context().map_err(|source| ImageError::Io {
        action: "pack the build context for",
        path: "images/toolchain".into(),
        source,
    })?;
    build(
        engine,
        &tag,
        &build_args,
        &labels,
        BuildContext::Bytes(context),
        progress,
    )
    .await?;
    find_toolchain(engine, &recipe)
        .await?
        .ok_or(ImageError::Build {
            action: "finding the freshly built",
            image: tag,
            message: "the engine reported success but has no image with its recipe label".into(),
        })
}

/// A build context: a tar in memory, or in a file (streamed).
pub(super) enum BuildContext {
    /// The tar's bytes.
    Bytes(Vec<u8>),
    /// A tar file.
    File(std::path::PathBuf),
}

/// Builds `tag` from a build context with the engine's classic builder, offline, reporting the
/// builder's output lines; then gives it `labels` ([`label`]). The labels are never the
/// build's own: Podman's builder puts a build's labels on every intermediate image it keeps,
/// and a failed build would leave one that kiln's lookup by label takes for the finished image.
pub(super) async fn build(
    engine: &Engine,
    tag: &str,
    build_args: &HashMap<&str, String>,
    labels: &HashMap<&str, String>,
    context: BuildContext,
    progress: &mut (dyn FnMut(ImageProgress) + Send),
) -> Result<(), ImageError> {
    let built =
        build_unlabelled(engine, tag, build_args, &HashMap::new(), context, progress).await?;
    if !labels.is_empty() {
        label(engine, &built, tag, labels).await?;
    }
    Ok(())
}

/// Makes `tag` the image `id` with `labels` added (a build `FROM` it: no new layer, and the
/// one way both Docker and Podman name and label an image alike).
pub(super) async fn label(
    engine: &Engine,
    id: &str,
    tag: &str,
    labels: &HashMap<&str, String>,
) -> Result<(), ImageError> {
    let dockerfile = format!("FROM {id}\n");
    let context =
        context_of(&[("Dockerfile", 0o644, dockerfile.as_bytes())]).map_err(|source| {
            ImageError::Io {
                action: "pack the build context for",
                path: tag.into(),
                source,
            }
        })?;
    build_unlabelled(
        engine,
        tag,
        &HashMap::new(),
        labels,
        BuildContext::Bytes(context),
        &mut |_| {},
    )
    .await
    .map(drop)
}

/// One build; the id of the image it made.
async fn build_unlabelled(
    engine: &Engine,
    tag: &str,
    build_args: &HashMap<&str, String>,
    labels: &HashMap<&str, String>,
    context: BuildContext,
    progress: &mut (dyn FnMut(ImageProgress) + Send),
) -> Result<String, ImageError> {
    let body = match context {
        BuildContext::Bytes(bytes) => bollard::body_full(bytes.into()),
        BuildContext::File(path) => {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|source| ImageError::Io {
                    action: "open the build context",
                    path,
                    source,
                })?;
            bollard::body_try_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20))
        }
    };
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .buildargs(build_args)
        .labels(labels)
        .rm(true)
        .forcerm(true)
        .networkmode("none")
        .build();
    let mut events = engine.docker().build_image(options, None, Some(body));
    let mut made = None;
    while let Some(event) = events
        .try_next()
        .await
        .map_err(|source| ImageError::Build {
            action: "building",
            image: tag.to_owned(),
            message: source.to_string(),
        })?
    {
        if let Some(message) = event.error_detail.and_then(|d| d.message) {
            return Err(ImageError::Build {
                action: "building",
                image: tag.to_owned(),
                message,
            });
        }
        if let Some(text) = event.stream {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                progress(ImageProgress::Line(line.to_owned()));
            }
        }
        if let Some(id) = event.aux.and_then(|a| a.id) {
            made = Some(id);
        }
    }
    match made {
        Some(id) => Ok(id),
        // An engine that does not say: the image the tag names now.
        None => engine
            .docker()
            .inspect_image(tag)
            .await
            .map_err(|source| ImageError::Engine {
                action: "inspecting the built image",
                source,
            })?
            .id
            .ok_or_else(|| ImageError::Build {
                action: "building",
                image: tag.to_owned(),
                message: "the engine made no image".into(),
            }),
    }
}

/// The toolchain image with recipe key `recipe`, if the engine has one.
pub(crate) async fn find_toolchain(
    engine: &Engine,
    recipe: &Digest,
) -> Result<Option<ToolchainImage>, ImageError> {
    Ok(list_with_label(engine, &format!("{LABEL_RECIPE}={recipe}"))
        .await?
        .into_iter()
        .next())
}

/// Every toolchain image on the engine.
pub async fn list_toolchains(engine: &Engine) -> Result<Vec<ToolchainImage>, ImageError> {
    list_with_label(engine, &format!("{LABEL_KIND}=toolchain")).await
}

async fn list_with_label(engine: &Engine, label: &str) -> Result<Vec<ToolchainImage>, ImageError> {
    let filters = HashMap::from([("label", vec![label])]);
    let options = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let images = engine
        .docker()
        .list_images(Some(options))
        .await
        .map_err(|source| ImageError::Engine {
            action: "listing toolchain images",
            source,
        })?;
    let mut found: Vec<ToolchainImage> = images
        .into_iter()
        .filter_map(|image| {
            let recipe = image.labels.get(LABEL_RECIPE)?.parse().ok()?;
            let base = image.labels.get(LABEL_BASE)?.parse().ok()?;
            Some(ToolchainImage {
                tag: image
                    .repo_tags
                    .first()
                    .cloned()
                    .unwrap_or_else(|| image.id.clone()),
                id: image.id,
                recipe,
                base,
                go_version: image.labels.get(LABEL_GO).cloned().unwrap_or_default(),
                go_archive: image
                    .labels
                    .get(super::LABEL_GO_ARCHIVE)
                    .and_then(|d| d.parse().ok()),
            })
        })
        .collect();
    found.sort_by(|a, b| a.tag.cmp(&b.tag));
    Ok(found)
}

/// A deterministic tar of [`CONTEXT`]: fixed order, owner, mode and mtime.
fn build_context() -> std::io::Result<Vec<u8>> {
    context_of(&CONTEXT)
}

/// A deterministic tar of `files` (path, mode, content): fixed order, owner, mode and mtime.
pub(super) fn context_of(files: &[(&str, u32, &[u8])]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for &(path, mode, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        builder.append_data(&mut header, path, bytes)?;
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_depends_on_base_and_go_line() {
        let a = Digest::of(b"base-a");
        let b = Digest::of(b"base-b");
        assert_ne!(
            toolchain_recipe(&a, GoLine::Go123),
            toolchain_recipe(&b, GoLine::Go123)
        );
        assert_ne!(
            toolchain_recipe(&a, GoLine::Go122),
            toolchain_recipe(&a, GoLine::Go123)
        );
        assert_eq!(
            toolchain_recipe(&a, GoLine::Go123),
            toolchain_recipe(&a, GoLine::Go123)
        );
    }

    #[test]
    fn build_context_is_deterministic() {
        assert_eq!(build_context().unwrap(), build_context().unwrap());
    }
}
