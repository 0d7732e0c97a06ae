//! Dynamic batching of predict requests, as text-embeddings-inference does it: small
//! requests to the same model wait in one queue per model and run through the backbone
//! together, up to a maximum number of inputs, after a short wait for company. Sixteen
//! clients sending one text each then cost one forward of 16 rows instead of 16 forwards
//! of one row (the matrix products are many times more efficient on full batches).
//!
//! One drain task per model runs at a time; while it computes, new requests gather for the
//! next batch. A batch whose combined run fails (one bad image, say) is rerun request by
//! request, so each request gets its own answer and its own error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Semaphore, oneshot};

use super::cache::ModelCache;
use super::{Inputs, Prediction, ServeError};

/// How requests are grouped.
#[derive(Clone, Copy, Debug)]
pub struct BatchSettings {
    /// Most inputs in one combined run; a request at least this large runs alone.
    pub max_inputs: usize,
    /// How long the first request of a batch waits for others.
    pub max_wait: Duration,
}

/// What one queued request needs back.
struct Pending {
    inputs: Inputs,
    top_k: usize,
    reply: oneshot::Sender<Result<Vec<Prediction>, ServeError>>,
}

/// The queued requests of one model and where its files are.
struct ModelQueue {
    dir: PathBuf,
    pending: Vec<Pending>,
}

pub struct Batcher {
    cache: Arc<ModelCache>,
    /// Bounds the backbone forwards running at once (shared with everything that predicts).
    compute: Arc<Semaphore>,
    settings: BatchSettings,
    max_pixels: u64,
    /// A model has an entry exactly while its drain task runs.
    queues: Mutex<HashMap<String, ModelQueue>>,
    /// Forward runs so far, and the inputs they took (batching at work: inputs ÷ runs).
    runs: AtomicU64,
    inputs_run: AtomicU64,
}

impl Batcher {
    pub fn new(
        cache: Arc<ModelCache>,
        compute: Arc<Semaphore>,
        settings: BatchSettings,
        max_pixels: u64,
    ) -> Batcher {
        Batcher {
            cache,
            compute,
            settings,
            max_pixels,
            queues: Mutex::new(HashMap::new()),
            runs: AtomicU64::new(0),
            inputs_run: AtomicU64::new(0),
        }
    }

    /// Forward runs so far and the inputs they took together.
    pub fn runs(&self) -> (u64, u64) {
        (
            self.runs.load(Ordering::Relaxed),
            self.inputs_run.load(Ordering::Relaxed),
        )
    }

    /// Predictions of model `id` (files in `dir`) for `inputs`, in input order.
    pub async fn predict(
        self: &Arc<Self>,
        id: &str,
        dir: PathBuf,
        inputs: Inputs,
        top_k: usize,
    ) -> Result<Vec<Prediction>, ServeError> {
        if inputs.len() >= self.settings.max_inputs {
            return self.run(id.to_string(), dir, inputs, top_k).await;
        }
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            inputs,
            top_k,
            reply,
        };
        let start_drain = {
            let mut queues = self.queues.lock();
            match queues.get_mut(id) {
                Some(queue) => {
                    queue.pending.push(pending);
                    false
                }
                None => {
                    let pending = vec![pending];
                    queues.insert(id.to_string(), ModelQueue { dir, pending });
                    true
                }
            }
        };
        if start_drain {
            tokio::spawn(self.clone().drain(id.to_string()));
        }
        answer.await.map_err(|_| {
            ServeError::Inference("the batch this request was in was dropped".into())
        })?
    }

    /// Runs the model's queue until it is empty, one combined batch at a time.
    async fn drain(self: Arc<Self>, id: String) {
        tokio::time::sleep(self.settings.max_wait).await;
        loop {
            let Some((dir, batch)) = self.take_batch(&id) else {
                return;
            };
            self.answer(&id, dir, batch).await;
        }
    }

    /// The next requests of `id`'s queue, up to `max_inputs` inputs (at least one request);
    /// `None`, and the queue removed, when it is empty.
    fn take_batch(&self, id: &str) -> Option<(PathBuf, Vec<Pending>)> {
        let mut queues = self.queues.lock();
        let queue = queues.get_mut(id)?;
        if queue.pending.is_empty() {
            queues.remove(id);
            return None;
        }
        let mut total = 0;
        let take = queue
            .pending
            .iter()
            .take_while(|p| {
                total += p.inputs.len();
                total <= self.settings.max_inputs
            })
            .count()
            .max(1);
        Some((queue.dir.clone(), queue.pending.drain(..take).collect()))
    }

    /// One combined run for `batch`, split back per request; request by request if the
    /// combined run fails.
    async fn answer(&self, id: &str, dir: PathBuf, batch: Vec<Pending>) {
        if batch.len() == 1 {
            let p = batch.into_iter().next().expect("one request");
            let result = self.run(id.to_string(), dir, p.inputs, p.top_k).await;
            let _ = p.reply.send(result);
            return;
        }
        let top_k = batch.iter().map(|p| p.top_k).max().unwrap_or(1);
        let combined = concat(batch.iter().map(|p| &p.inputs));
        match self.run(id.to_string(), dir.clone(), combined, top_k).await {
            Ok(mut all) => {
                for p in batch {
                    let rest = all.split_off(p.inputs.len());
                    let mine = std::mem::replace(&mut all, rest);
                    let _ = p.reply.send(Ok(truncate(mine, p.top_k)));
                }
            }
            Err(_) => {
                for p in batch {
                    let result = self
                        .run(id.to_string(), dir.clone(), p.inputs, p.top_k)
                        .await;
                    let _ = p.reply.send(result);
                }
            }
        }
    }

    /// One forward pass on the blocking pool, under a compute permit.
    async fn run(
        &self,
        id: String,
        dir: PathBuf,
        inputs: Inputs,
        top_k: usize,
    ) -> Result<Vec<Prediction>, ServeError> {
        let _permit = self
            .compute
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ServeError::Inference("the service is shutting down".into()))?;
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.inputs_run
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        let cache = self.cache.clone();
        let max_pixels = self.max_pixels;
        tokio::task::spawn_blocking(move || cache.predict(&id, &dir, &inputs, top_k, max_pixels))
            .await
            .map_err(|e| ServeError::Inference(format!("prediction task failed: {e}")))?
    }
}

/// The inputs of several requests to one model, one after another (all of one kind: a
/// model takes either texts or images).
fn concat<'a>(parts: impl Iterator<Item = &'a Inputs>) -> Inputs {
    let mut texts = Vec::new();
    let mut images = Vec::new();
    for part in parts {
        match part {
            Inputs::Texts(t) => texts.extend(t.iter().cloned()),
            Inputs::Images(i) => images.extend(i.iter().cloned()),
        }
    }
    if images.is_empty() {
        Inputs::Texts(texts)
    } else {
        Inputs::Images(images)
    }
}

/// Predictions ranked for the batch's largest `top_k`, cut to one request's own.
fn truncate(mut predictions: Vec<Prediction>, top_k: usize) -> Vec<Prediction> {
    for p in &mut predictions {
        if let Prediction::Class(p) = p {
            p.top_k.truncate(top_k.max(1));
        }
    }
    predictions
}
