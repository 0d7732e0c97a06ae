//! A bounded cache of loaded models: a model is read from disk once and kept until it is
//! the least recently used one beyond the capacity, or deleted.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Inputs, LoadedModel, Prediction, ServeError};
use crate::backbones::bundle::BundleFile;
use crate::backbones::registry::Registry;
use crate::train::artifact::{ModelConfig, backbone_source, read_config};

pub struct ModelCache {
    registry: Arc<Registry>,
    capacity: usize,
    /// Most recently used last.
    entries: Mutex<Vec<(String, Arc<LoadedModel>)>>,
    /// Serialises loads so two requests don't read the same model twice.
    loading: Mutex<()>,
}

impl ModelCache {
    pub fn new(registry: Arc<Registry>, capacity: usize) -> ModelCache {
        ModelCache {
            registry,
            capacity: capacity.max(1),
            entries: Mutex::new(Vec::new()),
            loading: Mutex::new(()),
        }
    }

    fn lookup(&self, id: &str) -> Option<Arc<LoadedModel>> {
        let mut entries = self.entries.lock();
        let pos = entries.iter().position(|(k, _)| k == id)?;
        let entry = entries.remove(pos);
        let model = entry.1.clone();
        entries.push(entry);
        Some(model)
    }

    /// The loaded model `id`, reading it from `dir` on a miss. Blocking.
    fn get(&self, id: &str, dir: &Path) -> Result<Arc<LoadedModel>, ServeError> {
        if let Some(m) = self.lookup(id) {
            return Ok(m);
        }
        let _guard = self.loading.lock();
        if let Some(m) = self.lookup(id) {
            return Ok(m);
        }
        let model = Arc::new(LoadedModel::load(dir, &self.registry)?);
        let mut entries = self.entries.lock();
        entries.push((id.to_string(), model.clone()));
        while entries.len() > self.capacity {
            entries.remove(0);
        }
        Ok(model)
    }

    /// Predictions of model `id` (read from `dir` on a miss) for the inputs. Blocking.
    pub fn predict(
        &self,
        id: &str,
        dir: &Path,
        inputs: &Inputs,
        top_k: usize,
        max_pixels: u64,
    ) -> Result<Vec<Prediction>, ServeError> {
        self.get(id, dir)?.predict(inputs, top_k, max_pixels)
    }

    /// Loads the model folder `dir` once, without caching it, to prove that its files make
    /// a model that can predict; returns its configuration. Blocking.
    pub fn verify(&self, dir: &Path) -> Result<ModelConfig, ServeError> {
        Ok(LoadedModel::load(dir, &self.registry)?.config)
    }

    /// The configuration of the model folder `dir` and the files that make its backbone a
    /// folder of its own (for a self-contained archive), from wherever the model loads its
    /// backbone. Blocking (an image backbone may be converted from `weights.pth` first).
    pub fn bundle(&self, dir: &Path) -> Result<(ModelConfig, Vec<BundleFile>), ServeError> {
        let config = read_config(dir).map_err(|e| ServeError::Corrupt(e.to_string()))?;
        let files = self
            .registry
            .bundle(&config.backbone, &backbone_source(dir, &config))?;
        Ok((config, files))
    }

    pub fn evict(&self, id: &str) {
        self.entries.lock().retain(|(k, _)| k != id);
    }

    /// Ids currently loaded, least recently used first.
    pub fn loaded(&self) -> Vec<String> {
        self.entries.lock().iter().map(|(k, _)| k.clone()).collect()
    }
}
