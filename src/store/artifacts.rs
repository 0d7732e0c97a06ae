//! The artefact folder: uploaded datasets and trained models, one directory each under the
//! data folder. New artefacts are built in `tmp/` and renamed into place whole, so a reader
//! (or a crash) never sees half of one.
//!
//! With a shared store configured (`--artifact-store`, see [`super::remote`]) the folder is
//! this host's working copy: a finished directory is published to the store, and a
//! directory another host built is fetched from it, whole, the first time it is needed.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::remote::{Kind, Remote};
use super::{StoreError, StoreResult};

/// Paths inside the data folder, and the shared store they are mirrored to, if any.
#[derive(Clone, Debug)]
pub struct Artifacts {
    root: PathBuf,
    remote: Option<Remote>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Artifacts {
    /// Creates the folder layout under `root` if needed.
    pub fn open(root: &Path) -> StoreResult<Artifacts> {
        let a = Artifacts {
            root: root.to_path_buf(),
            remote: None,
        };
        for dir in [a.tmp_dir(), a.root.join("datasets"), a.root.join("models")] {
            fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(a)
    }

    /// Mirrors finished artefacts to `remote`, after checking that it can be written.
    pub async fn with_remote(mut self, remote: Remote) -> StoreResult<Artifacts> {
        remote.check_writable().await?;
        self.remote = Some(remote);
        Ok(self)
    }

    /// Whether the shared store answers (always true without one).
    pub async fn ping(&self) -> StoreResult<()> {
        match &self.remote {
            Some(remote) => remote.ping().await,
            None => Ok(()),
        }
    }

    /// Publishes a committed local directory to the shared store (nothing without one).
    pub async fn publish(&self, kind: Kind, id: &str) -> StoreResult<()> {
        match &self.remote {
            Some(remote) => remote.publish(kind, id, &self.dir(kind, id)).await,
            None => Ok(()),
        }
    }

    /// The local directory of an artefact, fetched from the shared store first when this
    /// host does not have it. Without a store (or when the store has no copy) the path is
    /// returned as is, and reading it fails the way a missing directory does.
    pub async fn local(&self, kind: Kind, id: &str) -> StoreResult<PathBuf> {
        let dest = self.dir(kind, id);
        let Some(remote) = &self.remote else {
            return Ok(dest);
        };
        if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
            return Ok(dest);
        }
        let staging = self.staging_dir()?;
        let fetched = remote.fetch(kind, id, &staging).await;
        match fetched {
            Ok(true) => {
                if let Err(e) = self.commit_dir(&staging, &dest) {
                    // Another request fetched it meanwhile: theirs is as good as ours.
                    let _ = self.remove_dir(&staging);
                    if !dest.exists() {
                        return Err(e);
                    }
                }
                tracing::info!(kind = kind.folder(), id, "fetched from the artefact store");
            }
            other => {
                let _ = self.remove_dir(&staging);
                other?;
            }
        }
        Ok(dest)
    }

    /// Deletes an artefact from the shared store (readers there stop seeing it first), then
    /// here, whole. A missing one is not an error.
    pub async fn discard(&self, kind: Kind, id: &str) -> StoreResult<()> {
        if let Some(remote) = &self.remote {
            remote.remove(kind, id).await?;
        }
        self.discard_dir(&self.dir(kind, id))
    }

    fn dir(&self, kind: Kind, id: &str) -> PathBuf {
        self.root.join(kind.folder()).join(id)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn db_path(&self) -> PathBuf {
        self.root.join("warmstart.db")
    }

    /// Scratch space; emptied at start-up.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn dataset_dir(&self, id: &str) -> PathBuf {
        self.dir(Kind::Dataset, id)
    }

    pub fn model_dir(&self, id: &str) -> PathBuf {
        self.dir(Kind::Model, id)
    }

    /// A fresh, unique path in the scratch folder (nothing is created).
    pub fn tmp_path(&self, suffix: &str) -> PathBuf {
        self.tmp_dir().join(format!("{}{suffix}", Uuid::new_v4()))
    }

    /// A fresh scratch directory to build an artefact in before [`Artifacts::commit_dir`].
    pub fn staging_dir(&self) -> StoreResult<PathBuf> {
        let dir = self.tmp_path(".staging");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Moves a finished staging directory to its final place (atomic on one filesystem).
    pub fn commit_dir(&self, staging: &Path, dest: &Path) -> StoreResult<()> {
        sync_dir_contents(staging);
        fs::rename(staging, dest).map_err(io(dest))?;
        if let Some(parent) = dest.parent() {
            sync_dir(parent);
        }
        Ok(())
    }

    /// Removes an artefact directory; a missing one is not an error.
    pub fn remove_dir(&self, dir: &Path) -> StoreResult<()> {
        match fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(dir)(e)),
        }
    }

    /// Removes an artefact directory so that readers see it whole or not at all: it is
    /// first renamed into the scratch folder (atomic), then deleted there (a crash in
    /// between leaves it to the start-up sweep). A missing one is not an error.
    pub fn discard_dir(&self, dir: &Path) -> StoreResult<()> {
        let doomed = self.tmp_path(".deleted");
        match fs::rename(dir, &doomed) {
            Ok(()) => self.remove_dir(&doomed),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(dir)(e)),
        }
    }

    /// Start-up sweep: empties the scratch folder and removes dataset and model folders that
    /// no row references (left by a crash between writing an artefact and its row, or
    /// between deleting a row and its folder). Returns how many entries were removed.
    pub fn sweep(
        &self,
        known_datasets: &HashSet<String>,
        known_models: &HashSet<String>,
    ) -> StoreResult<usize> {
        let mut removed = 0;
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(io(&tmp))? {
            let path = entry.map_err(io(&tmp))?.path();
            let result = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            result.map_err(io(&path))?;
            removed += 1;
        }
        for (kind, known) in [("datasets", known_datasets), ("models", known_models)] {
            let dir = self.root.join(kind);
            for entry in fs::read_dir(&dir).map_err(io(&dir))? {
                let entry = entry.map_err(io(&dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    tracing::warn!(kind, id = %name, "removing orphaned artefact");
                    self.remove_dir(&entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Writes `bytes` to `path` through a temp file in the same folder, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("{}.part", Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn sync_dir_contents(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_file() {
                if let Ok(f) = fs::File::open(&p) {
                    let _ = f.sync_all();
                }
            } else if p.is_dir() {
                sync_dir_contents(&p);
            }
        }
    }
    sync_dir(dir);
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}
