//! Benchmark (run by hand): the public quality table of issue 10. For each split written by
//! `scripts/fetch-bench-data.sh` (text: tweets, r8, spam at 8 and 64 per class; images:
//! stamps, animals, digits at 10 and 50 per class; seeds 0, 1, 2) it starts a fresh service
//! with the real backbones, uploads the training file, runs a DEFAULT job (the request is
//! only `{"dataset_id": ...}`), predicts the whole test set (batches of 64) and scores
//! accuracy and macro-F1. It prints one table: per seed, Warmstart beside the peers of
//! `benches/peer/quality-results.json` (the same seed), then per (set, N) the mean ± std
//! (sample std over the seeds) of each, and how far Warmstart is above the best peer.
//!
//! `cargo bench --bench quality` (needs scripts/fetch-backbones.sh and
//! scripts/fetch-bench-data.sh; hours for the whole table on 2 cores). Environment:
//! - `ROWS=tweets8,stamps10,r8` picks rows (a set name alone = both sizes); default all.
//! - `SEEDS=0` or `SEEDS=0,2` picks seeds; default 0,1,2.
//! - `REPORT_ONLY=1` runs nothing: prints the table from the rows already logged.
//! - `QUALITY_LOG` (default `bench-logs/quality-warmstart.jsonl`): each finished row is
//!   appended there as one JSON line, so a long run in parts keeps its results; the table
//!   takes the latest line of each (set, N, seed) when `REPORT_ONLY=1`.
//! - `HYPERPARAMETERS` (a JSON object): an ablation, not the default job; log it apart.
//! - `BENCH_DATA` (default `./bench-data`), `WARMSTART_MODELS_DIR` (default `./models`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::TestApp;
use serde_json::{Value, json};

/// (set, modality is text, sizes per class)
const SETS: [(&str, bool, [usize; 2]); 6] = [
    ("tweets", true, [8, 64]),
    ("r8", true, [8, 64]),
    ("spam", true, [8, 64]),
    ("stamps", false, [10, 50]),
    ("animals", false, [10, 50]),
    ("digits", false, [10, 50]),
];
const PEERS: [(&str, &str); 4] = [
    ("probe", "probe"),
    ("finetune", "fine-tune"),
    ("setfit", "SetFit"),
    ("no_pretraining", "no pre-training"),
];
/// Peers that count as "the best peer" (no pre-training is only a floor).
const STRONG_PEERS: [&str; 3] = ["probe", "finetune", "setfit"];
const BATCH: usize = 64;
const JOB_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(default))
}

fn is_text(set: &str) -> bool {
    SETS.iter().any(|(s, text, _)| *s == set && *text)
}

/// `tweets8,r8,stamps50` -> [(set, n)]: a set alone stands for both its sizes.
fn parse_rows(spec: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        // "r8" alone is the set (both sizes), "r864" is r8 at 64 per class.
        let found = SETS.iter().find_map(|(name, _, sizes)| {
            if item == *name {
                Some(
                    sizes
                        .iter()
                        .map(|&n| (name.to_string(), n))
                        .collect::<Vec<_>>(),
                )
            } else {
                let n: usize = item.strip_prefix(name)?.parse().ok()?;
                sizes.contains(&n).then(|| vec![(name.to_string(), n)])
            }
        });
        match found {
            Some(rows) => out.extend(rows),
            None => panic!(
                "unknown row {item:?}: use a set ({}) followed by a size (8/64 for text, 10/50 for images), e.g. tweets8,stamps50",
                SETS.map(|s| s.0).join(", ")
            ),
        }
    }
    out
}

fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-bench-data.sh)", path.display()));
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Accuracy and macro-F1 (over the labels seen in truth or prediction, as scikit-learn).
fn score(truth: &[String], pred: &[String]) -> (f64, f64) {
    assert_eq!(truth.len(), pred.len());
    let correct = truth.iter().zip(pred).filter(|(t, p)| t == p).count();
    let labels: BTreeSet<&String> = truth.iter().chain(pred).collect();
    let mut f1_sum = 0.0;
    for label in &labels {
        let tp = truth
            .iter()
            .zip(pred)
            .filter(|(t, p)| t == label && p == label)
            .count() as f64;
        let fp = pred.iter().filter(|p| p == label).count() as f64 - tp;
        let fn_ = truth.iter().filter(|t| t == label).count() as f64 - tp;
        if tp > 0.0 {
            f1_sum += 2.0 * tp / (2.0 * tp + fp + fn_);
        }
    }
    (
        correct as f64 / truth.len() as f64,
        f1_sum / labels.len() as f64,
    )
}

fn rfc3339_secs(a: &Value, b: &Value) -> Option<f64> {
    let a = chrono::DateTime::parse_from_rfc3339(a.as_str()?).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(b.as_str()?).ok()?;
    Some((b - a).num_milliseconds() as f64 / 1000.0)
}

fn git_commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = run(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = run(&["status", "--porcelain", "--untracked-files=no", "src"])
        .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{commit}+dirty")
    } else {
        commit
    }
}

/// Predicts every test example in batches; returns the predicted labels in order.
async fn predict(
    app: &TestApp,
    model: &str,
    set_dir: &Path,
    test: &[BTreeMap<String, String>],
) -> Vec<String> {
    let uri = format!("/v1/models/{model}/predict");
    let mut out = Vec::with_capacity(test.len());
    for chunk in test.chunks(BATCH) {
        let (status, body) = if is_text_rows(test) {
            let texts: Vec<&str> = chunk.iter().map(|r| r["text"].as_str()).collect();
            app.post_json(&uri, json!({ "inputs": texts })).await
        } else {
            let images: Vec<Vec<u8>> = chunk
                .iter()
                .map(|r| std::fs::read(set_dir.join(&r["file"])).unwrap())
                .collect();
            let files: Vec<(&str, Option<&str>, &[u8])> = images
                .iter()
                .map(|b| ("file", Some("image.png"), b.as_slice()))
                .collect();
            let (ct, body) = common::multipart(&files, &[]);
            app.send(
                Request::post(&uri)
                    .header(header::CONTENT_TYPE, ct)
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
        };
        assert_eq!(status, StatusCode::OK, "predict: {body}");
        let preds = body["predictions"].as_array().expect("predictions");
        assert_eq!(preds.len(), chunk.len());
        out.extend(
            preds
                .iter()
                .map(|p| p["label"].as_str().unwrap().to_string()),
        );
    }
    out
}

/// The job's epoch events (stage, fold, epoch, train and validation metrics): why a
/// fine-tuned candidate was kept or dropped, read from the log afterwards.
fn epoch_events(events: &[Value]) -> Value {
    let epochs: Vec<Value> = events
        .iter()
        .filter(|e| e["kind"] == "epoch")
        .map(|e| json!({ "stage": e["stage"], "epoch": e["epoch"], "metrics": e["metrics"] }))
        .collect();
    json!(epochs)
}

/// Every event's time, kind, stage and message: where the job's seconds went.
fn timeline(events: &[Value]) -> Value {
    let events: Vec<Value> = events
        .iter()
        .map(|e| json!({ "at": e["at"], "kind": e["kind"], "stage": e["stage"], "message": e["message"] }))
        .collect();
    json!(events)
}

/// `HYPERPARAMETERS='{"head_views":0}'`: an ablation, not the default job (log it apart
/// with `QUALITY_LOG`).
fn ablation_hyperparameters() -> Option<Value> {
    let text = std::env::var("HYPERPARAMETERS").ok()?;
    Some(serde_json::from_str(&text).expect("HYPERPARAMETERS is a JSON object"))
}

fn is_text_rows(rows: &[BTreeMap<String, String>]) -> bool {
    rows.first().is_some_and(|r| r.contains_key("text"))
}

/// One row: fresh service, upload, default job, predict the test set. Returns the log record.
async fn run_row(models: &Path, data: &Path, set: &str, n: usize, seed: usize) -> Value {
    let set_dir = data.join(set);
    let ext = if is_text(set) { "csv" } else { "zip" };
    let file = format!("train-{n}pc-s{seed}.{ext}");
    let bytes = std::fs::read(set_dir.join(&file)).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/fetch-bench-data.sh)",
            set_dir.join(&file).display()
        )
    });
    let test = read_csv(&set_dir.join("test.csv"));
    let truth: Vec<String> = test.iter().map(|r| r["label"].clone()).collect();

    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_in(dir, |c| c.models_dir = models.to_path_buf()).await;
    let t0 = Instant::now();
    let ds = app.upload_dataset(&file, &bytes).await;
    let mut request = json!({ "dataset_id": ds["id"] });
    if let Some(h) = ablation_hyperparameters() {
        request["hyperparameters"] = h;
    }
    let (status, job) = app.post_json("/v1/jobs", request).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let job = app.wait_job(job["id"].as_str().unwrap(), JOB_TIMEOUT).await;
    let wall = t0.elapsed().as_secs_f64();
    let job_secs = rfc3339_secs(&job["started_at"], &job["finished_at"]).unwrap_or(wall);
    let mut rec = json!({
        "set": set, "n": n, "seed": seed,
        "train_examples": ds["num_examples"],
        "test_examples": test.len(),
        "job_id": job["id"], "status": job["status"], "backbone": job["backbone"],
        "job_seconds": (job_secs * 10.0).round() / 10.0,
        "commit": git_commit(),
        "hyperparameters": ablation_hyperparameters(),
        "finished": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if job["status"] != "succeeded" {
        eprintln!(
            "{set}{n} seed {seed}: job {}: {}",
            job["status"], job["error"]
        );
        rec["error"] = job["error"].clone();
    } else {
        let model = job["model_id"].as_str().unwrap();
        let t1 = Instant::now();
        let pred = predict(&app, model, &set_dir, &test).await;
        let (acc, f1) = score(&truth, &pred);
        let m = &job["metrics"];
        rec["accuracy"] = json!((acc * 1e4).round() / 1e4);
        rec["macro_f1"] = json!((f1 * 1e4).round() / 1e4);
        rec["predict_seconds"] = json!((t1.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        let selected = m["selected"].as_str().unwrap_or("–");
        rec["selected"] = match m["lexical_blend"]["transfer_weight"].as_f64() {
            Some(w) if w < 1.0 => json!(format!("{selected} + {:.1} lexical", 1.0 - w)),
            _ => json!(selected),
        };
        rec["selection_reason"] = m["selection_reason"].clone();
        rec["lexical_blend"] = m["lexical_blend"].clone();
        rec["config"] = job["config"].clone();
        let events = app.events(job["id"].as_str().unwrap()).await;
        rec["epochs"] = epoch_events(&events);
        rec["timeline"] = timeline(&events);
    }
    app.stop().await;
    rec
}

fn mean_std(v: &[f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let std = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
    } else {
        0.0
    };
    Some((mean, std))
}

fn fmt_ms(v: &[f64]) -> String {
    match mean_std(v) {
        None => "–".into(),
        Some((m, _)) if v.len() == 1 => format!("{m:.3} (1 seed)"),
        Some((m, s)) => format!("{m:.3} ± {s:.3}"),
    }
}

/// Peer accuracies per (set, n, method), by seed.
type PeerTable = BTreeMap<(String, usize, String), BTreeMap<usize, f64>>;

fn read_peers(path: &Path) -> PeerTable {
    let mut out = PeerTable::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        eprintln!(
            "no peer results at {} (benches/peer/quality.py writes them)",
            path.display()
        );
        return out;
    };
    let v: Value = serde_json::from_str(&text).expect("peer results are JSON");
    for r in v["rows"].as_array().into_iter().flatten() {
        let (Some(set), Some(n), Some(seed), Some(method), Some(acc)) = (
            r["set"].as_str(),
            r["n"].as_u64(),
            r["seed"].as_u64(),
            r["method"].as_str(),
            r["accuracy"].as_f64(),
        ) else {
            continue;
        };
        out.entry((set.into(), n as usize, method.into()))
            .or_default()
            .insert(seed as usize, acc);
    }
    out
}

fn read_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn print_table(rows: &[Value], peers: &PeerTable) {
    // Latest record per (set, n, seed), in benchmark order.
    let order = |set: &str| SETS.iter().position(|s| s.0 == set).unwrap_or(99);
    let mut latest: BTreeMap<(usize, usize, usize), &Value> = BTreeMap::new();
    for r in rows {
        let key = (
            order(r["set"].as_str().unwrap_or("")),
            r["n"].as_u64().unwrap_or(0) as usize,
            r["seed"].as_u64().unwrap_or(0) as usize,
        );
        latest.insert(key, r);
    }
    let peer_cols: Vec<&str> = PEERS.iter().map(|p| p.1).collect();
    println!(
        "\n| set | N/class | seed | accuracy | macro-F1 | job s | kept | {} | Δ vs best peer (pts) |",
        peer_cols.join(" | ")
    );
    println!("|{}", "---|".repeat(8 + PEERS.len()));
    let groups: BTreeSet<(usize, usize)> = latest.keys().map(|k| (k.0, k.1)).collect();
    for (si, n) in groups {
        let set = SETS[si].0;
        let peer = |m: &str| peers.get(&(set.to_string(), n, m.to_string()));
        let mut accs = Vec::new();
        let mut f1s = Vec::new();
        let mut secs = Vec::new();
        let mut seeds = Vec::new();
        for ((_, _, seed), r) in latest.range((si, n, 0)..=(si, n, usize::MAX)) {
            let peer_cells: Vec<String> = PEERS
                .iter()
                .map(|(m, _)| {
                    peer(m)
                        .and_then(|s| s.get(seed))
                        .map_or("–".into(), |a| format!("{a:.3}"))
                })
                .collect();
            let Some(acc) = r["accuracy"].as_f64() else {
                println!(
                    "| {set} | {n} | {seed} | {} | – | {} | – | {} | – |",
                    r["status"].as_str().unwrap_or("?"),
                    r["job_seconds"],
                    peer_cells.join(" | ")
                );
                continue;
            };
            let f1 = r["macro_f1"].as_f64().unwrap_or(f64::NAN);
            let js = r["job_seconds"].as_f64().unwrap_or(f64::NAN);
            let best = STRONG_PEERS
                .iter()
                .filter_map(|m| peer(m).and_then(|s| s.get(seed)).copied())
                .fold(f64::NAN, f64::max);
            println!(
                "| {set} | {n} | {seed} | {acc:.3} | {f1:.3} | {js:.0} | {} | {} | {} |",
                r["selected"].as_str().unwrap_or("–"),
                peer_cells.join(" | "),
                if best.is_nan() {
                    "–".into()
                } else {
                    format!("{:+.1}", (acc - best) * 100.0)
                }
            );
            accs.push(acc);
            f1s.push(f1);
            secs.push(js);
            seeds.push(*seed);
        }
        if accs.is_empty() {
            continue;
        }
        // Peers over ALL their seeds (the peers ran once, on seeds 0-2).
        let peer_means: Vec<(String, Option<f64>)> = PEERS
            .iter()
            .map(|(m, _)| {
                let v: Vec<f64> = peer(m)
                    .map(|s| s.values().copied().collect())
                    .unwrap_or_default();
                (fmt_ms(&v), mean_std(&v).map(|x| x.0))
            })
            .collect();
        let best = PEERS
            .iter()
            .zip(&peer_means)
            .filter(|((m, _), _)| STRONG_PEERS.contains(m))
            .filter_map(|(_, (_, mean))| *mean)
            .fold(f64::NAN, f64::max);
        let ws = mean_std(&accs).unwrap().0;
        println!(
            "| **{set}** | **{n}** | **mean** ({} seed{}) | **{}** | {} | {:.0} | | {} | {} |",
            seeds.len(),
            if seeds.len() == 1 { "" } else { "s" },
            fmt_ms(&accs),
            fmt_ms(&f1s),
            mean_std(&secs).unwrap().0,
            peer_means
                .iter()
                .map(|p| p.0.clone())
                .collect::<Vec<_>>()
                .join(" | "),
            if best.is_nan() {
                "–".into()
            } else {
                format!("**{:+.1}**", (ws - best) * 100.0)
            }
        );
    }
    println!(
        "\naccuracy on the held-out test set; mean ± sample std over seeds; peers from benches/peer/quality-results.json (their mean row uses every seed they ran); Δ = Warmstart − best of probe / fine-tune / SetFit"
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let models = env_path("WARMSTART_MODELS_DIR", "models");
    let data = env_path("BENCH_DATA", "bench-data");
    let log_path = env_path("QUALITY_LOG", "bench-logs/quality-warmstart.jsonl");
    let peers = read_peers(&root().join("benches/peer/quality-results.json"));
    let rows = match std::env::var("ROWS") {
        Ok(spec) if !spec.trim().is_empty() => parse_rows(&spec),
        _ => SETS
            .iter()
            .flat_map(|(s, _, sizes)| sizes.iter().map(|&n| (s.to_string(), n)))
            .collect(),
    };
    let seeds: Vec<usize> = std::env::var("SEEDS")
        .unwrap_or_else(|_| "0,1,2".into())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().expect("SEEDS=0,1,2"))
        .collect();
    let wanted: BTreeSet<(String, usize, usize)> = rows
        .iter()
        .flat_map(|(s, n)| seeds.iter().map(move |&seed| (s.clone(), *n, seed)))
        .collect();
    let in_filter = |r: &Value| {
        wanted.contains(&(
            r["set"].as_str().unwrap_or("").to_string(),
            r["n"].as_u64().unwrap_or(0) as usize,
            r["seed"].as_u64().unwrap_or(0) as usize,
        ))
    };

    if std::env::var("REPORT_ONLY").is_ok_and(|v| v == "1") {
        let logged: Vec<Value> = read_log(&log_path).into_iter().filter(in_filter).collect();
        print_table(&logged, &peers);
        return;
    }
    assert!(
        models.join("minilm-l6").join("model.safetensors").is_file()
            && models
                .join("efficientnet-lite0")
                .join("weights.pth")
                .is_file(),
        "the real backbones are missing from {}; run scripts/fetch-backbones.sh",
        models.display()
    );
    assert!(
        data.join("MANIFEST.json").is_file(),
        "no benchmark data in {}; run scripts/fetch-bench-data.sh",
        data.display()
    );
    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut done = Vec::new();
    for (set, n) in &rows {
        for &seed in &seeds {
            eprintln!("quality: {set} {n}/class seed {seed} ...");
            let rec = run_row(&models, &data, set, *n, seed).await;
            eprintln!(
                "quality: {set} {n}/class seed {seed}: accuracy {} macro-F1 {} job {} s, kept {}",
                rec["accuracy"], rec["macro_f1"], rec["job_seconds"], rec["selected"]
            );
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap();
            writeln!(f, "{rec}").unwrap();
            done.push(rec);
        }
    }
    print_table(&done, &peers);
}
