//! Dumps frozen features of the quality benchmark's splits (train files in every head
//! view, the test set plain) as raw little-endian f32 files, so head ideas can be tried in
//! numpy in seconds before one is built into the recipe. Run by hand:
//! `BENCH_DATA=/work/bench-data OUT=/work/feat SETS=stamps,animals BACKBONES=efficientnet-lite0 cargo bench --bench features_dump`

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Device;
use warmstart::backbones::WeightsMode;
use warmstart::backbones::registry::{LoadedBackbone, Registry};
use warmstart::store::jobs::Stage;
use warmstart::train::features::{HEAD_VIEWS, View, extract_view};
use warmstart::train::{EpochMetrics, Example, ExampleInput, Observer, Recipe};

struct Quiet;
impl Observer for Quiet {
    fn recipe(&mut self, _: &Recipe) {}
    fn stage(&mut self, _: Stage, _: &str) {}
    fn progress(&mut self, _: u32, _: u32, _: f64) {}
    fn epoch(&mut self, _: Stage, _: u32, _: u32, _: &EpochMetrics) {}
    fn log(&mut self, _: &str) {}
    fn cancelled(&self) -> bool {
        false
    }
}

fn read_csv(path: &Path, image_root: Option<&Path>) -> (Vec<ExampleInput>, Vec<String>) {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for rec in rdr.records() {
        let rec = rec.unwrap();
        let x = match image_root {
            Some(root) => ExampleInput::ImageFile(root.join(&rec[0])),
            None => ExampleInput::Text(rec[0].to_string()),
        };
        xs.push(x);
        ys.push(rec[1].to_string());
    }
    (xs, ys)
}

fn unzip(zip: &Path, dir: &Path) -> (Vec<ExampleInput>, Vec<String>) {
    let f = std::fs::File::open(zip).unwrap();
    let mut a = zip::ZipArchive::new(f).unwrap();
    a.extract(dir).unwrap();
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for i in 0..a.len() {
        let name = a.by_index(i).unwrap().name().unwrap().to_string();
        if name.ends_with('/') {
            continue;
        }
        let label = name.split('/').next().unwrap().to_string();
        xs.push(ExampleInput::ImageFile(dir.join(&name)));
        ys.push(label);
    }
    (xs, ys)
}

fn dump(reg: &Registry, bb: &str, xs: &[ExampleInput], ys: &[String], views: &[View], out: &Path) {
    let backbone = match std::env::var("PREP") {
        Ok(prep) => {
            let net = reg.load(bb, None, WeightsMode::Frozen).unwrap();
            let other = reg.load(&prep, None, WeightsMode::Frozen).unwrap();
            std::sync::Arc::new(LoadedBackbone {
                prep: other.prep,
                ..net
            })
        }
        Err(_) => reg.frozen(bb).unwrap(),
    };
    let examples: Vec<Example> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| Example {
            input: x.clone(),
            label: 0,
            index: i,
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    std::fs::write(out.with_extension("labels"), ys.join("\n")).unwrap();
    for v in views {
        let t = std::time::Instant::now();
        let f = extract_view(&backbone, &refs, 256, *v, 0, &Device::Cpu, &mut Quiet).unwrap();
        let (n, d) = f.dims2().unwrap();
        let flat: Vec<f32> = f.flatten_all().unwrap().to_vec1().unwrap();
        let path = PathBuf::from(format!("{}.{:?}.{n}x{d}.f32", out.display(), v));
        let mut file = std::fs::File::create(&path).unwrap();
        for x in flat {
            file.write_all(&x.to_le_bytes()).unwrap();
        }
        eprintln!("{} {:.1}s", path.display(), t.elapsed().as_secs_f64());
    }
}

fn main() {
    let data = PathBuf::from(std::env::var("BENCH_DATA").unwrap());
    let out = PathBuf::from(std::env::var("OUT").unwrap());
    let sets = std::env::var("SETS").unwrap();
    let bbs = std::env::var("BACKBONES").unwrap();
    let train_views: Vec<View> = match std::env::var("VIEWS").as_deref() {
        Ok("plain") => vec![View::Plain],
        _ => std::iter::once(View::Plain).chain(HEAD_VIEWS).collect(),
    };
    let files = std::env::var("FILES").ok();
    let reg = Registry::new(Path::new("models"), Device::Cpu);
    for set in sets.split(',') {
        let dir = data.join(set);
        let image = dir.join("test").is_dir();
        for bb in bbs.split(',') {
            let tag = format!(
                "{set}-{bb}{}",
                std::env::var("PREP")
                    .map(|p| format!("@{p}"))
                    .unwrap_or_default()
            );
            let (xs, ys) = read_csv(&dir.join("test.csv"), image.then_some(dir.as_path()));
            let test_out = out.join(format!("{tag}-test"));
            if !test_out.with_extension("labels").exists() {
                dump(&reg, bb, &xs, &ys, &[View::Plain], &test_out);
            }
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("train-"))
                .filter(|n| {
                    files
                        .as_ref()
                        .is_none_or(|f| f.split(',').any(|p| n.contains(p)))
                })
                .collect();
            names.sort();
            for name in names {
                let stem = name.trim_end_matches(".zip").trim_end_matches(".csv");
                let (xs, ys) = if image {
                    unzip(&dir.join(&name), &out.join("unz").join(set).join(stem))
                } else {
                    read_csv(&dir.join(&name), None)
                };
                let views = if image {
                    &train_views[..]
                } else {
                    &[View::Plain][..]
                };
                dump(
                    &reg,
                    bb,
                    &xs,
                    &ys,
                    views,
                    &out.join(format!("{tag}-{stem}")),
                );
            }
        }
    }
}
