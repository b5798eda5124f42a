//! Do the release's images exist? `rancher/k3s`, `rancher/k3s-upgrade` and
//! `rancher/system-agent-installer-k3s` at the image tag (`+` → `-`), by a HEAD of each
//! manifest through the registry HTTP API v2 (token auth as Docker Hub does it).

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::names::K3sVersion;

/// The release's images.
pub(crate) const IMAGES: [&str; 3] = [
    "rancher/k3s",
    "rancher/k3s-upgrade",
    "rancher/system-agent-installer-k3s",
];

/// Docker Hub.
pub(crate) const DOCKER_HUB: &str = "docker.io";

/// One image's state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ImageState {
    /// The tag exists (with this manifest digest).
    Present(String),
    /// The registry answered: no such tag.
    Missing,
    /// The registry could not be asked (the reason).
    Unreachable(String),
}

/// One row of the check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ImageCheck {
    /// `registry/repository:tag`.
    pub(crate) image: String,
    /// Its state.
    pub(crate) state: ImageState,
}

/// A client for `registry` (`host[:port]`, or `http://host:port` for plain HTTP; loopback
/// hosts are spoken to over HTTP).
fn client(registry: &str) -> (Client, String) {
    let (host, http) = match registry.strip_prefix("http://") {
        Some(host) => (host, true),
        None => (registry.strip_prefix("https://").unwrap_or(registry), false),
    };
    let host = host.trim_end_matches('/').to_owned();
    let loopback = crate::cache::is_loopback(&host);
    let config = ClientConfig {
        protocol: if http || loopback {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(std::time::Duration::from_secs(5)),
        read_timeout: Some(std::time::Duration::from_secs(30)),
        ..ClientConfig::default()
    };
    (Client::new(config), host)
}

/// Checks every image of `version` in `registry`.
pub(crate) async fn check(registry: &str, version: K3sVersion) -> Vec<ImageCheck> {
    let (client, host) = client(registry);
    let tag = version.image_tag();
    let mut rows = Vec::new();
    for repository in IMAGES {
        let reference = Reference::with_tag(host.clone(), repository.to_owned(), tag.clone());
        let state = match client
            .fetch_manifest_digest(&reference, &RegistryAuth::Anonymous)
            .await
        {
            Ok(digest) => ImageState::Present(digest),
            Err(error) if crate::cache::is_not_found(&error) => ImageState::Missing,
            Err(error) => ImageState::Unreachable(error.to_string()),
        };
        rows.push(ImageCheck {
            image: format!("{host}/{repository}:{tag}"),
            state,
        });
    }
    rows
}
