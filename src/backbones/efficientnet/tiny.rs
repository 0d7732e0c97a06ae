//! A tiny random-weight EfficientNet-Lite of the same architecture and the same code path
//! (a `config.json` with small widths/depths and resolution 32, plus `model.safetensors`),
//! which the service's fast integration tests install as `efficientnet-lite0`.

use super::torch_legacy::SAFETENSORS_NAME;
use super::{EfficientNetConfig, LiteVariant};
use candle_core::{Device, Result, Tensor};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashMap;
use std::path::Path;

/// The tiny network: width x0.25 (8-80 stage channels), depth x0.5 (10 blocks, three stages
/// with a residual block), stem 8, head 64 (the feature width), 32x32 input.
pub fn tiny_config() -> EfficientNetConfig {
    EfficientNetConfig {
        width_mult: 0.25,
        depth_mult: 0.5,
        resolution: 32,
        stem_channels: 8,
        head_channels: 64,
        ..LiteVariant::Lite0.config()
    }
}

/// Uniform values with the given standard deviation.
fn uniform(rng: &mut StdRng, shape: &[usize], std: f64) -> Result<Tensor> {
    let a = (3.0f64).sqrt() * std;
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-a..a) as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

fn conv_bn(
    t: &mut HashMap<String, Tensor>,
    rng: &mut StdRng,
    conv: &str,
    bn: &str,
    shape: [usize; 4],
) -> Result<()> {
    // He initialisation over the fan-in, so activations keep their scale through the stack.
    let fan_in = shape[1] * shape[2] * shape[3];
    t.insert(
        format!("{conv}.weight"),
        uniform(rng, &shape, (2.0 / fan_in as f64).sqrt())?,
    );
    let c = shape[0];
    let around = |rng: &mut StdRng, centre: f32, spread: f32| -> Result<Tensor> {
        let v: Vec<f32> = (0..c)
            .map(|_| centre + rng.random_range(-spread..spread))
            .collect();
        Tensor::from_vec(v, c, &Device::Cpu)
    };
    t.insert(format!("{bn}.weight"), around(rng, 1.0, 0.2)?);
    t.insert(format!("{bn}.bias"), around(rng, 0.1, 0.1)?);
    t.insert(format!("{bn}.running_mean"), around(rng, 0.0, 0.1)?);
    t.insert(format!("{bn}.running_var"), around(rng, 1.0, 0.5)?);
    Ok(())
}

/// Writes `dir/config.json` and `dir/model.safetensors` (each via a temp file + rename) for
/// the [`tiny_config`] network with weights drawn from `seed`.
pub fn write_tiny_efficientnet(dir: &Path, seed: u64) -> Result<()> {
    let config = tiny_config();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = HashMap::new();
    conv_bn(
        &mut t,
        &mut rng,
        "_conv_stem",
        "_bn0",
        [config.stem_channels, 3, 3, 3],
    )?;
    let mut c_in = config.stem_channels;
    let mut idx = 0;
    for st in config.stages() {
        for _ in 0..st.repeats {
            let p = format!("_blocks.{idx}");
            let mid = c_in * st.expand;
            if st.expand != 1 {
                conv_bn(
                    &mut t,
                    &mut rng,
                    &format!("{p}._expand_conv"),
                    &format!("{p}._bn0"),
                    [mid, c_in, 1, 1],
                )?;
            }
            let (dw, k) = (format!("{p}._depthwise_conv"), st.kernel);
            conv_bn(&mut t, &mut rng, &dw, &format!("{p}._bn1"), [mid, 1, k, k])?;
            conv_bn(
                &mut t,
                &mut rng,
                &format!("{p}._project_conv"),
                &format!("{p}._bn2"),
                [st.out_channels, mid, 1, 1],
            )?;
            c_in = st.out_channels;
            idx += 1;
        }
    }
    conv_bn(
        &mut t,
        &mut rng,
        "_conv_head",
        "_bn1",
        [config.head_channels, c_in, 1, 1],
    )?;

    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{SAFETENSORS_NAME}.{}.tmp", std::process::id()));
    candle_core::safetensors::save(&t, &tmp)?;
    std::fs::rename(&tmp, dir.join(SAFETENSORS_NAME))?;
    let json = serde_json::to_string_pretty(&config).map_err(candle_core::Error::wrap)?;
    let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, dir.join("config.json"))?;
    Ok(())
}
