//! The shared artefact store: an object store (S3 or S3-compatible, or a folder that several
//! processes share) that mirrors the data folder's dataset and model directories, so that a
//! host which did not build an artefact can still use it.
//!
//! The local data folder stays the working copy: candle memory-maps weights and the parsers
//! read plain files, so a directory is first built and committed locally, then published
//! here, and fetched whole into the local folder the first time another host needs it.
//! A `.complete` marker, written after every file and deleted before any, makes a
//! half-uploaded or half-deleted directory invisible to readers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, ObjectStore, PutPayload, RetryConfig};
use tokio::io::AsyncWriteExt;

use super::{StoreError, StoreResult};

/// Written last when a directory is published, removed first when it is deleted.
const COMPLETE_MARKER: &str = ".complete";
/// Written at start-up and read by the readiness check: proves the store answers.
const SENTINEL: &str = ".warmstart";

/// Which kind of artefact directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dataset,
    Model,
}

impl Kind {
    /// The folder name, the same locally and in the store.
    pub fn folder(self) -> &'static str {
        match self {
            Kind::Dataset => "datasets",
            Kind::Model => "models",
        }
    }
}

/// Transient errors are retried briefly; a store that stays down fails the request (503)
/// within seconds instead of holding it for the client library's default three minutes.
fn retry_policy() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(10),
        ..RetryConfig::default()
    }
}

/// An object store and the prefix Warmstart's objects live under.
#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The URL as configured, for messages (it never holds credentials: those come from
    /// the environment).
    url: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

fn remote_err(url: &str) -> impl FnOnce(object_store::Error) -> StoreError + '_ {
    move |source| StoreError::Remote {
        url: url.to_string(),
        source,
    }
}

impl Remote {
    /// `s3://bucket/prefix` (credentials, region and endpoint from the usual `AWS_*`
    /// variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP` for a plain-HTTP S3-compatible server) or
    /// `file:///shared/folder`.
    pub fn parse(url: &str) -> Result<Remote, String> {
        let parsed = url::Url::parse(url).map_err(|e| {
            format!("--artifact-store {url:?} is not a URL ({e}); use s3://bucket/prefix or file:///path")
        })?;
        let bad = |e: object_store::Error| format!("--artifact-store {url:?}: {e}");
        let (store, prefix): (Arc<dyn ObjectStore>, ObjectPath) = match parsed.scheme() {
            "s3" => {
                let store = AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_retry(retry_policy())
                    // A config key, not `with_client_options`: that would drop the client
                    // options read from the environment (`AWS_ALLOW_HTTP`, proxies).
                    .with_config(
                        AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                        "5s",
                    )
                    .build()
                    .map_err(bad)?;
                let prefix = ObjectPath::from_url_path(parsed.path()).map_err(|e| bad(e.into()))?;
                (Arc::new(store), prefix)
            }
            "file" => {
                let dir = parsed.to_file_path().map_err(|()| {
                    format!("--artifact-store {url:?} is not an absolute file:/// path")
                })?;
                std::fs::create_dir_all(&dir).map_err(|e| {
                    format!("cannot create the artefact store {}: {e}", dir.display())
                })?;
                (
                    Arc::new(LocalFileSystem::new_with_prefix(&dir).map_err(bad)?),
                    ObjectPath::default(),
                )
            }
            other => {
                return Err(format!(
                    "--artifact-store {url:?}: unsupported scheme {other:?}; use s3://bucket/prefix or file:///path"
                ));
            }
        };
        Ok(Remote {
            store,
            prefix,
            url: url.to_string(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn dir(&self, kind: Kind, id: &str) -> ObjectPath {
        self.prefix.child(kind.folder()).child(id)
    }

    /// Proves the store is reachable and writable (start-up) by writing the sentinel.
    pub async fn check_writable(&self) -> StoreResult<()> {
        let path = self.prefix.child(SENTINEL);
        self.store
            .put(
                &path,
                PutPayload::from_static(b"warmstart artefact store\n"),
            )
            .await
            .map_err(remote_err(&self.url))?;
        Ok(())
    }

    /// Proves the store answers (readiness) by reading the sentinel's metadata.
    pub async fn ping(&self) -> StoreResult<()> {
        self.store
            .head(&self.prefix.child(SENTINEL))
            .await
            .map_err(remote_err(&self.url))?;
        Ok(())
    }

    /// Uploads every file of the local directory `local`, then the marker.
    pub async fn publish(&self, kind: Kind, id: &str, local: &Path) -> StoreResult<()> {
        let base = self.dir(kind, id);
        let root = local.to_path_buf();
        let files = tokio::task::spawn_blocking(move || list_files(&root))
            .await
            .expect("listing files does not panic")?;
        for relative in files {
            let mut object = base.clone();
            for part in relative.iter() {
                object = object.child(part.to_string_lossy().as_ref());
            }
            self.upload(&local.join(&relative), object).await?;
        }
        self.store
            .put(&base.child(COMPLETE_MARKER), PutPayload::from_static(b""))
            .await
            .map_err(remote_err(&self.url))?;
        Ok(())
    }

    async fn upload(&self, file: &Path, object: ObjectPath) -> StoreResult<()> {
        let io = |source| StoreError::Io {
            path: file.to_path_buf(),
            source,
        };
        let mut reader = tokio::fs::File::open(file).await.map_err(io)?;
        // Streams in parts (multipart upload for large files), never the whole file in memory.
        let mut writer = BufWriter::new(self.store.clone(), object);
        let copied = tokio::io::copy(&mut reader, &mut writer).await;
        match copied {
            Ok(_) => writer.shutdown().await.map_err(io),
            Err(e) => {
                let _ = writer.abort().await;
                Err(io(e))
            }
        }
    }

    /// Downloads a published directory into the (empty) local folder `into`. `Ok(false)`
    /// when the store has no complete copy of it.
    pub async fn fetch(&self, kind: Kind, id: &str, into: &Path) -> StoreResult<bool> {
        let base = self.dir(kind, id);
        match self.store.head(&base.child(COMPLETE_MARKER)).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(remote_err(&self.url)(e)),
        }
        for meta in self.list(&base).await? {
            let Some(parts) = meta.location.prefix_match(&base) else {
                continue;
            };
            let relative: PathBuf = parts.map(|p| p.as_ref().to_string()).collect();
            if relative.as_os_str() == COMPLETE_MARKER {
                continue;
            }
            self.download(&meta.location, &into.join(relative)).await?;
        }
        Ok(true)
    }

    async fn download(&self, object: &ObjectPath, dest: &Path) -> StoreResult<()> {
        let io = |source| StoreError::Io {
            path: dest.to_path_buf(),
            source,
        };
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        let mut stream = self
            .store
            .get(object)
            .await
            .map_err(remote_err(&self.url))?
            .into_stream();
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        while let Some(chunk) = stream.try_next().await.map_err(remote_err(&self.url))? {
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)
    }

    /// Deletes a published directory: the marker first (readers stop seeing it), then the
    /// files. A missing one is not an error.
    pub async fn remove(&self, kind: Kind, id: &str) -> StoreResult<()> {
        let base = self.dir(kind, id);
        self.delete_if_present(&base.child(COMPLETE_MARKER)).await?;
        for meta in self.list(&base).await? {
            self.delete_if_present(&meta.location).await?;
        }
        Ok(())
    }

    /// Every object under `base`.
    async fn list(&self, base: &ObjectPath) -> StoreResult<Vec<object_store::ObjectMeta>> {
        self.store
            .list(Some(base))
            .try_collect()
            .await
            .map_err(remote_err(&self.url))
    }

    async fn delete_if_present(&self, object: &ObjectPath) -> StoreResult<()> {
        match self.store.delete(object).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote_err(&self.url)(e)),
        }
    }
}

/// Every file under `root`, as paths relative to it.
fn list_files(root: &Path) -> StoreResult<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let dir = root.join(&relative);
        let entries = std::fs::read_dir(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
            let path = relative.join(entry.file_name());
            if entry.path().is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}
