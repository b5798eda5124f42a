//! Do the release's images exist? `rancher/k3s`, `rancher/k3s-upgrade` and
//! `rancher/system-agent-installer-k3s` at the image tag (`+` → `-`), by a HEAD of each
//! manifest through the registry HTTP API v2 (token auth as Docker Hub does it).

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// The release's images.
pub const IMAGES: [&str; 3] = [
    "rancher/k3s",
    "rancher/k3s-upgrade",
    "rancher/system-agent-installer-k3s",
];

/// Docker Hub.
pub const DOCKER_HUB: &str = "docker.io";

/// One image's state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageState {
    /// The tag exists (with this manifest digest).
    Present(String),
    /// The registry answered: no such tag.
    Missing,
    /// The registry could not be asked (the reason).
    Unreachable(String),
}

/// One row of the check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ImageCheck {
    /// `registry/repository:tag`.
    pub image: String,
    /// Its state.
    pub state: ImageState,
}

/// The image tag of a k3s version: `v1.28.2+k3s1` → `v1.28.2-k3s1`.
#[must_use]
pub fn image_tag(version: &str) -> String {
    version.replace('+', "-")
}

/// A client for `registry` (`host[:port]`, or `http://host:port` for plain HTTP; loopback
/// hosts are spoken to over HTTP).
fn client(registry: &str) -> (Client, String) {
    let (host, http) = match registry.strip_prefix("http://") {
        Some(host) => (host, true),
        None => (registry.strip_prefix("https://").unwrap_or(registry), false),
    };
    let host = host.trim_end_matches('/').to_owned();
    let loopback = host.starts_with("127.0.0.1") || host.starts_with("localhost");
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
pub async fn check(registry: &str, version: &str) -> Vec<ImageCheck> {
    let (client, host) = client(registry);
    let tag = image_tag(version);
    let mut rows = Vec::new();
    for repository in IMAGES {
        let reference = Reference::with_tag(host.clone(), repository.to_owned(), tag.clone());
        let state = match client
            .fetch_manifest_digest(&reference, &RegistryAuth::Anonymous)
            .await
        {
            Ok(digest) => ImageState::Present(digest),
            Err(error) => {
                let text = format!("{error:?} {error}").to_lowercase();
                if text.contains("requesterror") || text.contains("error sending request") {
                    ImageState::Unreachable(error.to_string())
                } else if text.contains("notfound")
                    || text.contains("manifest unknown")
                    || text.contains("manifest_unknown")
                    || text.contains("name unknown")
                    || text.contains("name_unknown")
                    || text.contains(" 404")
                {
                    ImageState::Missing
                } else {
                    ImageState::Unreachable(error.to_string())
                }
            }
        };
        rows.push(ImageCheck {
            image: format!("{host}/{repository}:{tag}"),
            state,
        });
    }
    rows
}
