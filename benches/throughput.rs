//! Throughput and memory of the backbones and of the predict endpoint, row by row, in the
//! same shape as `benches/peer/throughput.py` (PyTorch) so that `scripts/bench-vs-pytorch.sh`
//! can print one table of ratios (issue 12).
//!
//! `cargo bench --bench throughput` with `BENCH_INPUTS=<folder>` (written by the script:
//! `short.txt`, `long.txt`, one text per line, `images/*.png`), `ROWS=a,b` to run some rows,
//! `OUT=<file>` for the JSON lines (default stdout only). Weights from `$WARMSTART_MODELS_DIR`
//! or `./models`. Each row prints one JSON line: `{"row", "seconds", "unit", "peak_rss_mb"}`,
//! where `seconds` is the median per repetition (forward and step rows) or the total (rows
//! over a whole input set); peak RSS is the process's high-water mark during the row (reset
//! through `/proc/self/clear_refs` before it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine as _;
use candle_core::{DType, Device, Tensor};
use common::TestApp;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use warmstart::backbones::registry::{LoadedBackbone, Registry};
use warmstart::backbones::{Batch, WeightsMode};
use warmstart::train::optim::{GroupedAdamW, ParamGroup};

#[path = "../tests/common/mod.rs"]
mod common;

const HTTP_BATCH: usize = 32;

// The service binary's allocator (src/main.rs), so the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn models_dir() -> PathBuf {
    std::env::var_os("WARMSTART_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "models".into())
}

fn inputs_dir() -> PathBuf {
    std::env::var_os("BENCH_INPUTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| "target/bench-inputs".into())
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/bench-vs-pytorch.sh)", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

fn read_images(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/bench-vs-pytorch.sh)", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Resets the process's peak RSS (Linux: `echo 5 > /proc/self/clear_refs`).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak RSS since the last reset, in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `f` `reps` times after one warm-up call; the median in seconds.
fn timed(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

struct Rows {
    wanted: Option<Vec<String>>,
    out: Option<std::fs::File>,
}

impl Rows {
    fn wants(&self, row: &str) -> bool {
        self.wanted
            .as_ref()
            .is_none_or(|w| w.iter().any(|x| row.starts_with(x.as_str())))
    }

    /// Whether any row of a group (rows named `group…`) is wanted.
    fn wants_group(&self, group: &str) -> bool {
        self.wanted.as_ref().is_none_or(|w| {
            w.iter()
                .any(|x| x.starts_with(group) || group.starts_with(x.as_str()))
        })
    }

    fn record(&mut self, row: &str, seconds: f64, unit: &str) {
        let line = json!({
            "side": "warmstart", "row": row, "seconds": seconds, "unit": unit,
            "peak_rss_mb": (peak_rss_mb() * 10.0).round() / 10.0,
            "threads": candle_core::utils::get_num_threads(),
        });
        println!("{line}");
        if let Some(f) = self.out.as_mut() {
            writeln!(f, "{line}").unwrap();
        }
    }
}

fn text_batch(b: usize, l: usize, vocab: usize) -> anyhow::Result<Batch> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut ids: Vec<u32> = (0..b * l)
        .map(|_| rng.random_range(1000..vocab as u32))
        .collect();
    for row in 0..b {
        ids[row * l] = 101;
        ids[row * l + l - 1] = 102;
    }
    Ok(Batch::Text {
        input_ids: Tensor::from_vec(ids, (b, l), &Device::Cpu)?,
        attention_mask: Tensor::ones((b, l), DType::U32, &Device::Cpu)?,
    })
}

fn image_batch(b: usize, res: usize) -> anyhow::Result<Batch> {
    let pixels = Tensor::rand(-1f32, 1f32, (b, 3, res, res), &Device::Cpu)?;
    Ok(Batch::Image { pixels })
}

/// One fine-tuning step as the trainer takes it: forward in train mode, a linear probe's
/// squared loss, backward, AdamW over every backbone variable.
fn step(net: &LoadedBackbone, batch: &Batch, opt: &mut GroupedAdamW) -> anyhow::Result<()> {
    let feats = net.net.forward(batch, true)?;
    let loss = feats.sum_keepdim(1)?.sqr()?.mean_all()?;
    let grads = loss.backward()?;
    opt.step(&grads)?;
    Ok(())
}

fn optimizer(net: &LoadedBackbone) -> anyhow::Result<GroupedAdamW> {
    let vars = net.net.named_vars().into_iter().map(|(_, v)| v).collect();
    Ok(GroupedAdamW::new(vec![ParamGroup {
        vars,
        lr: 1e-5,
        weight_decay: 0.01,
    }])?)
}

fn forward_rows(rows: &mut Rows, reg: &Registry) -> anyhow::Result<()> {
    let forward = |net: &LoadedBackbone, batch: &Batch| -> anyhow::Result<()> {
        net.net.forward(batch, false)?;
        Ok(())
    };
    if rows.wants_group("minilm_fwd") {
        let bert = reg.frozen("minilm-l6")?;
        for (b, l, reps) in [(1, 16, 30), (32, 64, 5), (16, 128, 5)] {
            let row = format!("minilm_fwd_{b}x{l}");
            if rows.wants(&row) {
                let batch = text_batch(b, l, 30000)?;
                reset_peak();
                let s = timed(reps, || forward(&bert, &batch))?;
                rows.record(&row, s, "s/batch");
            }
        }
    }
    for (id, b, reps) in [
        ("efficientnet-lite0", 1, 10),
        ("efficientnet-lite0", 32, 3),
        ("efficientnet-lite2", 32, 2),
    ] {
        let row = format!("{}_fwd_b{b}", id.trim_start_matches("efficientnet-"));
        if rows.wants(&row) {
            let net = reg.frozen(id)?;
            let res = net.prep.resolution().unwrap();
            let batch = image_batch(b, res)?;
            reset_peak();
            let s = timed(reps, || forward(&net, &batch))?;
            rows.record(&row, s, "s/batch");
        }
    }
    Ok(())
}

fn step_rows(rows: &mut Rows, reg: &Registry) -> anyhow::Result<()> {
    let cases: [(&str, &str, Batch, usize); 3] = [
        (
            "minilm_step_16x128",
            "minilm-l6",
            text_batch(16, 128, 30000)?,
            3,
        ),
        (
            "lite0_step_b8",
            "efficientnet-lite0",
            image_batch(8, 224)?,
            3,
        ),
        (
            "lite2_step_b16",
            "efficientnet-lite2",
            image_batch(16, 260)?,
            2,
        ),
    ];
    for (row, id, batch, reps) in cases {
        if rows.wants(row) {
            reset_peak();
            let net = reg.load(id, None, WeightsMode::Trainable)?;
            let mut opt = optimizer(&net)?;
            let s = timed(reps, || step(&net, &batch, &mut opt))?;
            rows.record(row, s, "s/step");
        }
    }
    Ok(())
}

/// Real texts through the backbone in input order, batches of `batch`: tokenise, forward,
/// pool (what feature extraction and predict do, padding included).
fn real_text_row(rows: &mut Rows, reg: &Registry, name: &str, file: &str, batch: usize) {
    if !rows.wants(name) {
        return;
    }
    let texts = read_lines(&inputs_dir().join(file));
    let bert = reg.frozen("minilm-l6").unwrap();
    reset_peak();
    let t = Instant::now();
    for chunk in texts.chunks(batch) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let b = bert.prep.text_batch(&refs, 256, &Device::Cpu).unwrap();
        bert.net.forward(&b, false).unwrap();
    }
    rows.record(name, t.elapsed().as_secs_f64(), "s/total");
}

/// Trains a head-only model on `file` through the API (in-process) and returns its id.
async fn train_model(app: &TestApp, name: &str, bytes: &[u8]) -> String {
    let ds = app.upload_dataset(name, bytes).await;
    let (status, job) = app
        .post_json(
            "/v1/jobs",
            json!({"dataset_id": ds["id"], "hyperparameters": {"finetune_epochs": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job = app
        .wait_job(job["id"].as_str().unwrap(), Duration::from_secs(600))
        .await;
    assert_eq!(job["status"], "succeeded", "bench job: {job}");
    job["model_id"].as_str().unwrap().to_string()
}

/// A small labelled CSV / zip made from the bench inputs, for the head-only models.
fn training_files() -> (Vec<u8>, Vec<u8>) {
    let texts = read_lines(&inputs_dir().join("short.txt"));
    let mut csv = String::from("text,label\n");
    for (i, t) in texts.iter().take(40).enumerate() {
        csv.push_str(&format!(
            "\"{}\",{}\n",
            t.replace('"', "\"\""),
            ["a", "b"][i % 2]
        ));
    }
    let images = read_images(&inputs_dir().join("images"));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    for (i, png) in images.iter().take(40).enumerate() {
        zip.start_file(format!("{}/{i}.png", ["a", "b"][i % 2]), opts)
            .unwrap();
        zip.write_all(png).unwrap();
    }
    (csv.into_bytes(), zip.finish().unwrap().into_inner())
}

/// End to end over HTTP: a real listener, 1,000 inputs in requests of 32, one after another.
async fn http_rows(rows: &mut Rows) -> anyhow::Result<()> {
    if !rows.wants_group("http_predict") {
        return Ok(());
    }
    let app = TestApp::start_in(tempfile::tempdir()?, |c| {
        c.models_dir = models_dir();
        c.predict_rate = 0.0; // no per-key rate limit: the bench sends hundreds per second
    })
    .await;
    let state = &app.app.as_ref().expect("running").state;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(warmstart::http::conn::serve(
        listener,
        app.router.clone(),
        state.config.conn_timeouts(),
        state.shutdown.clone(),
    ));
    let (csv, zip) = training_files();
    let client = reqwest::Client::new();
    if rows.wants_group("http_predict_texts") {
        let model = train_model(&app, "bench.csv", &csv).await;
        let texts = read_lines(&inputs_dir().join("short.txt"));
        let inputs: Vec<Value> = texts.iter().map(|t| json!(t)).collect();
        let s = post_all(&client, addr, &model, &inputs).await?;
        rows.record("http_predict_texts_1000", s, "s/total");
        // Dynamic batching: one text per request, one client after another vs 16 at once.
        for clients in [1, 16] {
            let s = post_singles(&client, addr, &model, &inputs[..320], clients).await?;
            rows.record(
                &format!("http_single_texts_320_clients{clients}"),
                s,
                "s/total",
            );
        }
    }
    if rows.wants_group("http_predict_images") {
        let model = train_model(&app, "bench.zip", &zip).await;
        let b64 = base64::engine::general_purpose::STANDARD;
        let inputs: Vec<Value> = read_images(&inputs_dir().join("images"))
            .iter()
            .map(|png| json!({ "image_base64": b64.encode(png) }))
            .collect();
        let s = post_all(&client, addr, &model, &inputs).await?;
        rows.record("http_predict_images_1000", s, "s/total");
    }
    app.stop().await;
    let _ = server.await;
    Ok(())
}

async fn post_all(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    model: &str,
    inputs: &[Value],
) -> anyhow::Result<f64> {
    let url = format!("http://{addr}/v1/models/{model}/predict");
    // Warm-up: the first request loads the model.
    client
        .post(&url)
        .json(&json!({ "inputs": &inputs[..1] }))
        .send()
        .await?;
    reset_peak();
    let t = Instant::now();
    for chunk in inputs.chunks(HTTP_BATCH) {
        let resp = client
            .post(&url)
            .json(&json!({ "inputs": chunk }))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "predict: {}", resp.status());
        resp.bytes().await?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Every input in its own request, from `clients` concurrent clients.
async fn post_singles(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    model: &str,
    inputs: &[Value],
    clients: usize,
) -> anyhow::Result<f64> {
    let url = format!("http://{addr}/v1/models/{model}/predict");
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    let workers = (0..clients).map(|_| async {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(input) = inputs.get(i) else {
                return anyhow::Ok(());
            };
            let resp = client
                .post(&url)
                .json(&json!({ "inputs": [input] }))
                .send()
                .await?;
            anyhow::ensure!(resp.status().is_success(), "predict: {}", resp.status());
            resp.bytes().await?;
        }
    });
    for r in futures::future::join_all(workers).await {
        r?;
    }
    Ok(t.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut rows = Rows {
        wanted: std::env::var("ROWS")
            .ok()
            .filter(|s| !s.is_empty())
            .map(|s| s.split(',').map(str::to_string).collect()),
        out: std::env::var_os("OUT").map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap()
        }),
    };
    let reg = Registry::new(&models_dir(), Device::Cpu);
    forward_rows(&mut rows, &reg)?;
    real_text_row(&mut rows, &reg, "minilm_real_long_500", "long.txt", 16);
    real_text_row(&mut rows, &reg, "minilm_real_short_1000", "short.txt", 32);
    step_rows(&mut rows, &reg)?;
    http_rows(&mut rows).await?;
    Ok(())
}
