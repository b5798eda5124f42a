//! The remote layer: step records and their output blobs as OCI artifacts in any registry.
//!
//! One step record is one OCI image manifest tagged with the step key's hex: `artifactType`
//! [`ARTIFACT_TYPE`], the empty config, the signed record as the first layer and one layer
//! per output blob. Nothing read from the registry is trusted: the record must be signed by a
//! trusted key for this very step, and every blob must hash to the digest the signed record
//! names before anything is written to the local store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::CacheError;
use super::sign::{PublicKey, SecretKey, SignedRecord};
use crate::hash::{Digest, StepKey};
use crate::store::{LocalStore, Record};

/// The manifest's `artifactType`.
pub(crate) const ARTIFACT_TYPE: &str = "application/vnd.kiln.step-record.v1";
const RECORD_MEDIA_TYPE: &str = "application/vnd.kiln.record.v1+json";
const BLOB_MEDIA_TYPE: &str = "application/vnd.kiln.blob.v1";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Largest signed record accepted (records are a few KiB).
const MAX_RECORD_BYTES: u64 = 4 << 20;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: String,
    artifact_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A trusted record, now in the local store with all its outputs.
    Hit(Box<Record>),
    /// The registry has no record for the key.
    Miss,
    /// The registry served something kiln refuses; nothing was stored.
    Rejected(String),
}

/// How many times a broken blob transfer is tried in all.
const DOWNLOAD_ATTEMPTS: u32 = 3;

/// Why a blob download attempt failed.
enum Transfer {
    /// The transfer broke (connection closed or reset): worth another attempt.
    Broken(String),
    /// The registry served something wrong: final.
    Refused(String),
}

/// A registry as a cache of step records.
pub struct RemoteCache {
    client: Client,
    registry: String,
    repository: String,
    auth: RegistryAuth,
    trusted: Vec<PublicKey>,
    signer: Option<SecretKey>,
    /// Set after the first failure to reach the registry: the rest of the run is local.
    down: AtomicBool,
}

impl std::fmt::Debug for RemoteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("RemoteCache")
            .field("registry", &self.registry)
            .field("repository", &self.repository)
            .field("trusted", &self.trusted)
            .field("writes", &self.signer.is_some())
            .finish_non_exhaustive()
    }
}

/// `oci://HOST[:PORT]/REPO` → (registry, repository).
fn parse_url(url: &str) -> Result<(String, String), CacheError> {
    // A password in the URL is never echoed back, not even in this error.
    let shown = match url.split_once("://") {
        Some((scheme, rest)) => match rest.split('/').next().and_then(|a| a.rsplit_once('@')) {
            Some((_, host)) => format!(
                "{scheme}://***@{host}{}",
                rest.find('/').map_or("", |at| &rest[at..])
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    let bad = |why: &str| CacheError::BadUrl {
        url: shown.clone(),
        why: why.to_owned(),
    };
    let rest = url
        .strip_prefix("oci://")
        .ok_or_else(|| bad("it must start with oci://"))?;
    let (registry, repository) = rest
        .split_once('/')
        .ok_or_else(|| bad("it must name a repository: oci://HOST[:PORT]/REPO"))?;
    if registry.contains('@') {
        return Err(bad(
            "credentials do not belong in the URL: set KILN_CACHE_USERNAME and \
             KILN_CACHE_PASSWORD, or `docker login` the registry",
        ));
    }
    let host_ok = !registry.is_empty()
        && registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    let repo_ok = !repository.is_empty()
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        });
    if !host_ok {
        return Err(bad("the host is not a host[:port]"));
    }
    if !repo_ok {
        return Err(bad(
            "repository names are lowercase letters, digits, . _ - and /",
        ));
    }
    Ok((registry.to_owned(), repository.to_owned()))
}

/// Credentials for `registry`: `KILN_CACHE_USERNAME`/`KILN_CACHE_PASSWORD`, else the Docker
/// config's `auths` entry, else anonymous. Never logged.
fn auth_for(registry: &str) -> RegistryAuth {
    if let (Ok(user), Ok(password)) = (
        std::env::var("KILN_CACHE_USERNAME"),
        std::env::var("KILN_CACHE_PASSWORD"),
    ) {
        return RegistryAuth::Basic(user, password);
    }
    let config = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
        .map(|d| d.join("config.json"));
    let basic = config
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|v| v["auths"][registry]["auth"].as_str().map(str::to_owned))
        .and_then(|b64| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|text| {
            text.split_once(':')
                .map(|(u, p)| (u.to_owned(), p.to_owned()))
        });
    match basic {
        Some((user, password)) => RegistryAuth::Basic(user, password),
        None => RegistryAuth::Anonymous,
    }
}

/// Whether `host` (`name[:port]`, `[v6]:port`) is this machine: `localhost`, `127.0.0.0/8` or
/// `::1` — by its whole name, so `localhost.evil.example` or `127.0.0.1.evil.example` is not.
pub(crate) fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(inside, _)| inside)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl RemoteCache {
    /// A cache at `url` (`oci://HOST[:PORT]/REPO`): records are used only when signed by one
    /// of `trusted`; records are published only when `signer` is given. Loopback registries
    /// are spoken to over plain HTTP, every other over HTTPS.
    pub fn new(
        url: &str,
        trusted: Vec<PublicKey>,
        signer: Option<SecretKey>,
    ) -> Result<Self, CacheError> {
        let (registry, repository) = parse_url(url)?;
        let protocol = if is_loopback(&registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            use_monolithic_push: true,
            connect_timeout: Some(std::time::Duration::from_secs(5)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..ClientConfig::default()
        };
        Ok(Self {
            client: Client::new(config),
            auth: auth_for(&registry),
            registry,
            repository,
            trusted,
            signer,
            down: AtomicBool::new(false),
        })
    }

    /// Whether records are published (a signing key was given).
    #[must_use]
    pub(crate) fn writes(&self) -> bool {
        self.signer.is_some()
    }

    /// True once the registry failed to answer: later calls do nothing.
    #[must_use]
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn reference(&self, key: &StepKey) -> Reference {
        Reference::with_tag(self.registry.clone(), self.repository.clone(), key.hex())
    }

    fn unreachable(&self, error: &impl std::fmt::Display) -> CacheError {
        self.down.store(true, Ordering::Relaxed);
        CacheError::Unreachable {
            registry: self.registry.clone(),
            reason: error.to_string(),
        }
    }

    /// Looks `key` up. A trusted, intact record is written into `local` with all its outputs
    /// (verified, atomically: blobs first, the record last) and returned.
    pub async fn fetch(&self, key: &StepKey, local: &LocalStore) -> Result<Lookup, CacheError> {
        if self.is_down() {
            return Ok(Lookup::Miss);
        }
        let reference = self.reference(key);
        self.client
            .store_auth_if_needed(&self.registry, &self.auth)
            .await;
        let manifest = match self
            .client
            .pull_manifest_raw(&reference, &self.auth, &[MANIFEST_MEDIA_TYPE])
            .await
        {
            Ok((bytes, _)) => bytes,
            Err(error) if is_not_found(&error) => return Ok(Lookup::Miss),
            Err(error) => return Err(self.unreachable(&error)),
        };
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&manifest) else {
            return Ok(Lookup::Rejected(format!(
                "the registry's manifest for step {key} is not a kiln record"
            )));
        };
        if manifest.artifact_type != ARTIFACT_TYPE {
            return Ok(Lookup::Rejected(format!(
                "the registry's manifest for step {key} is a {}, not a kiln record",
                manifest.artifact_type
            )));
        }
        let Some(record_layer) = manifest
            .layers
            .iter()
            .find(|l| l.media_type == RECORD_MEDIA_TYPE)
        else {
            return Ok(Lookup::Rejected(format!(
                "the registry's manifest for step {key} holds no record"
            )));
        };
        let scratch = local.scratch_dir("kiln-cache-")?;
        let record_path = scratch.path().join("record");
        if let Err(why) = self
            .download(
                &reference,
                &record_layer.digest,
                MAX_RECORD_BYTES.min(record_layer.size),
                &record_path,
            )
            .await?
        {
            return Ok(Lookup::Rejected(format!("the record of step {key}: {why}")));
        }
        let bytes = std::fs::read(&record_path).map_err(|source| CacheError::Io {
            action: "read",
            path: record_path.clone(),
            source,
        })?;
        let Ok(signed) = serde_json::from_slice::<SignedRecord>(&bytes) else {
            return Ok(Lookup::Rejected(format!(
                "the record of step {key} is not a signed kiln record"
            )));
        };
        let record = match signed.check(key, &self.trusted) {
            Ok(record) => record,
            Err(why) => return Ok(Lookup::Rejected(why)),
        };
        // Every output the signed record names, from the layer the manifest says holds it,
        // must hash to the record's digest; all are checked before any is stored.
        let mut downloaded = Vec::new();
        for (name, output) in &record.outputs {
            if local.contains_sync(&output.digest) {
                continue;
            }
            let Some(layer) = manifest
                .layers
                .iter()
                .find(|l| l.annotations.get("dev.kiln.output") == Some(name))
            else {
                return Ok(Lookup::Rejected(format!(
                    "the manifest for step {key} has no layer for output {name}"
                )));
            };
            let path = scratch.path().join(format!("blob-{}", downloaded.len()));
            let (digest, size) = match self
                .download(&reference, &layer.digest, output.size, &path)
                .await?
            {
                Ok(hashed) => hashed,
                Err(why) => {
                    return Ok(Lookup::Rejected(format!(
                        "output {name} of step {key}: {why}"
                    )));
                }
            };
            if digest != output.digest || size != output.size {
                return Ok(Lookup::Rejected(format!(
                    "output {name} of step {key}: the registry served {size} bytes hashing to \
                     {digest}; the signed record names {} ({} bytes)",
                    output.digest, output.size
                )));
            }
            downloaded.push(path);
        }
        for path in &downloaded {
            local.put_file_sync(path)?;
        }
        local.put_record_sync(&record)?;
        Ok(Lookup::Hit(Box::new(record)))
    }

    /// Downloads the blob `digest` into `dest`, refusing more than `limit` bytes. A transfer
    /// that breaks (a connection closed mid-body, say) is tried again, at most
    /// [`DOWNLOAD_ATTEMPTS`] times in all with a growing pause; what the registry served
    /// wrongly is not. `Ok(Err)`: the registry served something unusable (the reason).
    async fn download(
        &self,
        reference: &Reference,
        digest: &str,
        limit: u64,
        dest: &Path,
    ) -> Result<Result<(Digest, u64), String>, CacheError> {
        let mut pause = std::time::Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.download_once(reference, digest, limit, dest).await? {
                Err(Transfer::Broken(why)) if attempt < DOWNLOAD_ATTEMPTS => {
                    tracing::warn!(%digest, attempt, %why, "cache download broke; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                    attempt += 1;
                }
                Err(Transfer::Broken(why)) => {
                    return Ok(Err(format!("{why} ({attempt} attempts)")));
                }
                Err(Transfer::Refused(why)) => return Ok(Err(why)),
                Ok(hashed) => return Ok(Ok(hashed)),
            }
        }
    }

    /// One attempt of [`RemoteCache::download`].
    async fn download_once(
        &self,
        reference: &Reference,
        digest: &str,
        limit: u64,
        dest: &Path,
    ) -> Result<Result<(Digest, u64), Transfer>, CacheError> {
        use futures::StreamExt as _;
        use sha2::Digest as _;
        use tokio::io::AsyncWriteExt as _;
        let mut hasher = sha2::Sha256::new();
        let mut stream = match self.client.pull_blob_stream(reference, digest).await {
            Ok(stream) => stream,
            Err(error) => {
                use oci_client::errors::OciDistributionError as E;
                let why = format!("cannot download {digest}: {error}");
                // The registry answered (no such blob, not allowed, bad request): asking again
                // changes nothing. Anything else is the transfer's fault.
                let answered = matches!(
                    error,
                    E::RegistryError { .. }
                        | E::ServerError { .. }
                        | E::UnauthorizedError { .. }
                        | E::AuthenticationFailure(_)
                ) || is_not_found(&error);
                return Ok(Err(if answered {
                    Transfer::Refused(why)
                } else {
                    Transfer::Broken(why)
                }));
            }
        };
        let io = |source| CacheError::Io {
            action: "write",
            path: dest.to_owned(),
            source,
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut written = 0u64;
        while let Some(chunk) = stream.stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    return Ok(Err(Transfer::Broken(format!(
                        "download of {digest} failed: {error}"
                    ))));
                }
            };
            written += chunk.len() as u64;
            if written > limit {
                return Ok(Err(Transfer::Refused(format!(
                    "the registry sent more than the {limit} bytes expected for {digest}"
                ))));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(Ok((Digest::from_bytes(hasher.finalize().into()), written)))
    }

    /// Publishes `record` and its outputs from `local` (which must hold them), signed. Blobs the
    /// registry already has are not uploaded again.
    pub async fn publish(&self, record: &Record, local: &LocalStore) -> Result<(), CacheError> {
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        self.publish_signed(SignedRecord::new(record.clone(), Some(signer)), local)
            .await
    }

    /// Publishes a record exactly as given (signed or not): for `publish` and for tests of
    /// what readers refuse.
    ///
    /// # Panics
    /// Never: records and manifests always serialize.
    pub async fn publish_signed(
        &self,
        signed: SignedRecord,
        local: &LocalStore,
    ) -> Result<(), CacheError> {
        if self.is_down() {
            return Ok(());
        }
        let key = signed.record.key;
        let reference = self.reference(&key);
        self.client
            .store_auth_if_needed(&self.registry, &self.auth)
            .await;
        let record_bytes = serde_json::to_vec(&signed).expect("a record always serializes");
        let mut layers = vec![Descriptor {
            media_type: RECORD_MEDIA_TYPE.into(),
            digest: Digest::of(&record_bytes).to_string(),
            size: record_bytes.len() as u64,
            annotations: BTreeMap::new(),
        }];
        self.upload(&reference, record_bytes, &layers[0].digest)
            .await?;
        let empty = b"{}".to_vec();
        let empty_digest = Digest::of(&empty).to_string();
        self.upload(&reference, empty, &empty_digest).await?;
        for (name, output) in &signed.record.outputs {
            let digest = output.digest.to_string();
            layers.push(Descriptor {
                media_type: BLOB_MEDIA_TYPE.into(),
                digest: digest.clone(),
                size: output.size,
                annotations: BTreeMap::from([("dev.kiln.output".to_owned(), name.clone())]),
            });
            let exists = self
                .client
                .blob_exists(&reference, &digest)
                .await
                .map_err(|e| self.unreachable(&e))?;
            if exists {
                continue;
            }
            let path = local.blob_path(&output.digest);
            if !path.is_file() {
                return Err(CacheError::NotLocal {
                    digest: output.digest,
                });
            }
            // Streamed from the store in chunks, hashed on the way: memory stays flat whatever
            // the output's size, and a local copy that no longer matches its name fails the
            // upload before the registry commits it.
            self.client
                .push_blob_stream(
                    &reference,
                    blob_stream(path, output.digest),
                    &digest,
                    Some(output.size),
                )
                .await
                .map_err(|e| self.unreachable(&e))?;
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE.into(),
            artifact_type: ARTIFACT_TYPE.into(),
            config: Descriptor {
                media_type: EMPTY_MEDIA_TYPE.into(),
                digest: empty_digest,
                size: 2,
                annotations: BTreeMap::new(),
            },
            layers,
        };
        let body = serde_json::to_vec(&manifest).expect("a manifest always serializes");
        self.client
            .push_manifest_raw(
                &reference,
                body,
                http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
            )
            .await
            .map_err(|e| self.unreachable(&e))?;
        Ok(())
    }

    async fn upload(
        &self,
        reference: &Reference,
        bytes: Vec<u8>,
        digest: &str,
    ) -> Result<(), CacheError> {
        let exists = self
            .client
            .blob_exists(reference, digest)
            .await
            .map_err(|e| self.unreachable(&e))?;
        if !exists {
            self.client
                .push_blob(reference, bytes, digest)
                .await
                .map_err(|e| self.unreachable(&e))?;
        }
        Ok(())
    }
}

/// Bytes per chunk of a streamed upload (the client's chunk size, so each read is one PATCH).
const UPLOAD_CHUNK: usize = 4 << 20;

/// The store blob at `path` as a stream of chunks, hashed as it is read; the stream ends with an
/// error, before the last chunk is handed over, when the bytes are not `expected`.
fn blob_stream(
    path: std::path::PathBuf,
    expected: Digest,
) -> impl futures::Stream<Item = oci_client::errors::Result<bytes::Bytes>> + Send + 'static {
    use oci_client::errors::OciDistributionError;
    use tokio::io::AsyncReadExt as _;
    struct State {
        file: Option<tokio::fs::File>,
        hasher: Option<crate::hash::Sha256Writer<std::io::Sink>>,
    }
    let failed = |what: String| OciDistributionError::GenericError(Some(what));
    let start = State {
        file: None,
        hasher: Some(crate::hash::Sha256Writer::new(std::io::sink())),
    };
    futures::stream::try_unfold(start, move |mut state| {
        let path = path.clone();
        async move {
            let Some(mut hasher) = state.hasher.take() else {
                return Ok(None);
            };
            let file = match &mut state.file {
                Some(file) => file,
                None => state.file.insert(
                    tokio::fs::File::open(&path)
                        .await
                        .map_err(|e| failed(format!("cannot open {}: {e}", path.display())))?,
                ),
            };
            let mut chunk = bytes::BytesMut::with_capacity(UPLOAD_CHUNK);
            let mut end = false;
            while chunk.len() < UPLOAD_CHUNK {
                let n = file
                    .read_buf(&mut chunk)
                    .await
                    .map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?;
                if n == 0 {
                    end = true;
                    break;
                }
            }
            std::io::Write::write_all(&mut hasher, &chunk).expect("a sink takes every byte");
            if end {
                let (got, _, _) = hasher.finish();
                if got != expected {
                    return Err(failed(format!(
                        "the store's copy of {expected} now hashes to {got}; run `kiln store verify --repair`"
                    )));
                }
                if chunk.is_empty() {
                    return Ok(None);
                }
            } else {
                state.hasher = Some(hasher);
            }
            Ok(Some((chunk.freeze(), state)))
        }
    })
}

/// Whether a registry error says "no such manifest" (a miss), as opposed to a registry that
/// could not answer: by the error's variant and the registry's OCI error codes, never by its
/// text.
#[must_use]
pub(crate) fn is_not_found(error: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as Code};
    match error {
        E::ImageManifestNotFoundError(_) => true,
        E::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                Code::ManifestUnknown | Code::NameUnknown | Code::NotFound | Code::BlobUnknown
            )
        }),
        E::ServerError { code, .. } => *code == 404,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_streamed_blob_is_checked_against_its_name() {
        use futures::TryStreamExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let bytes: Vec<u8> = (0..(UPLOAD_CHUNK * 2 + 17))
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let chunks: Vec<bytes::Bytes> = blob_stream(path.clone(), Digest::of(&bytes))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            chunks.iter().map(bytes::Bytes::len).collect::<Vec<_>>(),
            [UPLOAD_CHUNK, UPLOAD_CHUNK, 17]
        );
        assert_eq!(chunks.concat(), bytes);
        // One flipped byte: the stream fails before its last chunk is handed over.
        let mut damaged = bytes.clone();
        damaged[5] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        let mut stream = Box::pin(blob_stream(path.clone(), Digest::of(&bytes)));
        let mut handed = 0;
        let error = loop {
            match stream.try_next().await {
                Ok(Some(chunk)) => handed += chunk.len(),
                Ok(None) => panic!("a damaged blob streamed to the end"),
                Err(error) => break error,
            }
        };
        assert!(handed < damaged.len(), "{handed}");
        assert!(error.to_string().contains("kiln store verify"), "{error}");
        // Empty blobs stream nothing and end cleanly.
        std::fs::write(&path, b"").unwrap();
        let none: Vec<bytes::Bytes> = blob_stream(path, Digest::of(b""))
            .try_collect()
            .await
            .unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn urls_name_a_registry_and_a_repository() {
        assert_eq!(
            parse_url("oci://127.0.0.1:5000/kiln/cache").unwrap(),
            ("127.0.0.1:5000".into(), "kiln/cache".into())
        );
        for bad in [
            "http://x/y",
            "oci://host",
            "oci://host/",
            "oci://bob:s3cret@host/kiln/cache",
            "oci://host/Upper",
            "oci://ho st/x",
            "oci://host/a//b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.4.5",
            "[::1]:5000",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "localhost.evil.example",
            "localhost.evil.example:5000",
            "127.0.0.1.evil.example",
            "127.0.0.1.nip.io:443",
            "ghcr.io",
            "10.0.0.1:5000",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
