//! The legacy (non-zip) PyTorch checkpoint reader: a fixture written the way torch's legacy
//! `_save` writes it (by `python3` with the standard library only), truncated and garbage
//! files, and the real EfficientNet-Lite0 checkpoint when it is present.

use candle_core::{DType, IndexOp, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;
use warmstart::backbones::efficientnet::torch_legacy::{
    convert_to_safetensors, ensure_converted, parse_legacy, read_legacy_pth,
};

/// Writes a legacy checkpoint exactly like torch's legacy `_save`: five pickles (magic,
/// protocol version, sys info, the state dict with `_rebuild_tensor_v2` reductions and
/// `('storage', torch.XStorage, key, 'cpu', numel, None)` persistent ids, the sorted storage
/// keys), then each storage as a little-endian int64 element count and its raw bytes.
const WRITE_FIXTURE: &str = r#"
import collections, pickle, struct, sys, types

torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch; sys.modules["torch._utils"] = utils; torch._utils = utils
def _rebuild_tensor_v2(*args): raise RuntimeError("never called")
_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
class StorageType:
    def __init__(self, name, fmt): self.name, self.fmt = name, fmt
def storage_class(name):
    cls = type(name, (), {}); cls.__module__ = "torch"; cls.__qualname__ = name
    setattr(torch, name, cls); return cls
FloatStorage = storage_class("FloatStorage")
DoubleStorage = storage_class("DoubleStorage")
LongStorage = storage_class("LongStorage")
FMT = {FloatStorage: "f", DoubleStorage: "d", LongStorage: "q"}

class Storage:
    def __init__(self, cls, key, values): self.cls, self.key, self.values = cls, key, values
class T:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
    def __reduce__(self):
        return (_rebuild_tensor_v2, (self.storage, self.offset, self.size, self.stride,
                                     False, collections.OrderedDict()))

s1 = Storage(FloatStorage, "140001", [i * 0.5 - 3.0 for i in range(12)])
s2 = Storage(DoubleStorage, "93", [1.25, -2.5, 3.75, 1e-3, 7.0])
s3 = Storage(LongStorage, "777", [7])
sd = collections.OrderedDict()
sd["a"] = T(s1, 0, (3, 4), (4, 1))          # contiguous
sd["a_t"] = T(s1, 0, (4, 3), (1, 4))        # transposed view of the same storage
sd["b"] = T(s1, 2, (2, 2), (4, 1))          # offset, non-contiguous block of it
sd["c"] = T(s2, 1, (2, 2), (1, 2))          # float64, offset and transposed
sd["n"] = T(s3, 0, (), ())                  # int64 scalar
for i in range(int(sys.argv[2])):           # many more entries: several SETITEMS batches
    sd["x%d" % i] = T(s1, i % 12, (1,), (1,))
sd._metadata = collections.OrderedDict([("", {"version": 1})])

storages = {}
class P(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            storages[obj.key] = obj
            return ("storage", obj.cls, obj.key, "cpu", len(obj.values), None)
        return None

with open(sys.argv[1], "wb") as f:
    pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
    P(f, protocol=2).dump(sd)
    keys = sorted(storages)
    pickle.dump(keys, f, protocol=2)
    for k in keys:
        s = storages[k]
        f.write(struct.pack("<q", len(s.values)))
        f.write(struct.pack("<%d%s" % (len(s.values), FMT[s.cls]), *s.values))
"#;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Writes the fixture into `dir`; `None` (with a notice) when python3 is missing outside CI.
fn write_fixture(dir: &Path) -> Option<PathBuf> {
    write_fixture_with(dir, 0)
}

/// The fixture plus `extra` one-element tensors `x0, x1, ...` after the five main ones.
fn write_fixture_with(dir: &Path, extra: usize) -> Option<PathBuf> {
    let path = dir.join(format!("fixture{extra}.pth"));
    let status = Command::new("python3")
        .arg("-c")
        .arg(WRITE_FIXTURE)
        .arg(&path)
        .arg(extra.to_string())
        .status();
    match status {
        Ok(status) => {
            assert!(status.success(), "python3 fixture writer failed: {status}");
            Some(path)
        }
        Err(e) if !ci() => {
            eprintln!("SKIP: python3 not available to write the legacy fixture ({e})");
            None
        }
        Err(e) => panic!("python3 is required in CI to write the legacy fixture: {e}"),
    }
}

fn s1() -> Vec<f32> {
    (0..12).map(|i| i as f32 * 0.5 - 3.0).collect()
}

fn get<'a>(tensors: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &tensors
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

#[test]
fn reads_python_written_legacy_fixture() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(path) = write_fixture(dir.path()) else {
        return Ok(());
    };
    let tensors = read_legacy_pth(&path)?;
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["a", "a_t", "b", "c", "n"],
        "state-dict order is kept"
    );

    let s1 = s1();
    let a = get(&tensors, "a");
    assert_eq!(a.dims(), [3, 4]);
    assert_eq!(a.flatten_all()?.to_vec1::<f32>()?, s1);

    let a_t = get(&tensors, "a_t");
    assert_eq!(a_t.dims(), [4, 3]);
    let expected: Vec<f32> = (0..4)
        .flat_map(|i| (0..3).map(move |j| (i, j)))
        .map(|(i, j)| s1[j * 4 + i])
        .collect();
    assert_eq!(a_t.flatten_all()?.to_vec1::<f32>()?, expected);
    assert!(a_t.is_contiguous());

    let b = get(&tensors, "b");
    assert_eq!(
        b.to_vec2::<f32>()?,
        vec![vec![s1[2], s1[3]], vec![s1[6], s1[7]]]
    );

    let c = get(&tensors, "c");
    assert_eq!(c.dtype(), DType::F64);
    // offset 1, size (2,2), stride (1,2) over [1.25, -2.5, 3.75, 1e-3, 7.0]
    assert_eq!(c.to_vec2::<f64>()?, vec![vec![-2.5, 1e-3], vec![3.75, 7.0]]);

    let n = get(&tensors, "n");
    assert_eq!(n.dtype(), DType::I64);
    assert_eq!(n.dims(), [0usize; 0]);
    assert_eq!(n.to_scalar::<i64>()?, 7);
    Ok(())
}

#[test]
fn keeps_state_dict_order_across_pickle_batches() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(path) = write_fixture_with(dir.path(), 2345) else {
        return Ok(());
    };
    let tensors = read_legacy_pth(&path)?;
    let mut expected: Vec<String> = ["a", "a_t", "b", "c", "n"].map(String::from).to_vec();
    expected.extend((0..2345).map(|i| format!("x{i}")));
    let names: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, expected);
    let s1 = s1();
    for (i, (_, t)) in tensors[5..].iter().enumerate() {
        assert_eq!(t.to_vec1::<f32>()?, vec![s1[i % 12]]);
    }
    Ok(())
}

#[test]
fn converts_to_safetensors_atomically_and_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(path) = write_fixture(dir.path()) else {
        return Ok(());
    };
    let out = dir.path().join("out.safetensors");
    convert_to_safetensors(&path, &out)?;
    let loaded = candle_core::safetensors::load(&out, &candle_core::Device::Cpu)?;
    assert_eq!(loaded.len(), 5);
    assert_eq!(
        loaded["b"].to_vec2::<f32>()?,
        vec![vec![-2.0, -1.5], vec![0.0, 0.5]]
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary file left behind");

    // ensure_converted: converts weights.pth once, then reuses model.safetensors.
    let model_dir = dir.path().join("model");
    std::fs::create_dir(&model_dir)?;
    assert!(
        ensure_converted(&model_dir).is_err(),
        "empty dir must be an error"
    );
    std::fs::copy(&path, model_dir.join("weights.pth"))?;
    let st = ensure_converted(&model_dir)?;
    assert_eq!(st, model_dir.join("model.safetensors"));
    let first = std::fs::metadata(&st)?.modified()?;
    std::fs::write(model_dir.join("weights.pth"), b"garbage now")?;
    assert_eq!(
        ensure_converted(&model_dir)?,
        st,
        "already converted: weights.pth not read again"
    );
    assert_eq!(std::fs::metadata(&st)?.modified()?, first);
    Ok(())
}

#[test]
fn truncated_and_garbage_files_are_errors_not_panics() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(path) = write_fixture(dir.path()) else {
        return Ok(());
    };
    let bytes = std::fs::read(&path)?;
    assert!(parse_legacy(&bytes).is_ok());
    for len in 0..bytes.len() {
        assert!(
            parse_legacy(&bytes[..len]).is_err(),
            "prefix of {len} bytes parsed as valid"
        );
    }
    // Flipped bytes anywhere: any outcome but a panic (the catch inside must hold).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..bytes.len() {
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut corrupt = bytes.clone();
            corrupt[i] = (state >> 24) as u8;
            let _ = parse_legacy(&corrupt);
        }
    }
    // Pure garbage and other formats.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(parse_legacy(&garbage).is_err());
    assert!(parse_legacy(b"PK\x03\x04 a zip checkpoint").is_err());
    assert!(parse_legacy(b"").is_err());
    // A storage count pointing far past the end of the file.
    let mut huge = bytes.clone();
    let last = find_last_storage_header(&bytes);
    huge[last..last + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(parse_legacy(&huge).is_err());
    Ok(())
}

/// Offset of the last storage's element count: storages are "140001" (12 f32), "777"
/// (1 i64), "93" (5 f64) in sorted key order, so the last header is 8 + 40 bytes from the end.
fn find_last_storage_header(bytes: &[u8]) -> usize {
    let at = bytes.len() - 40 - 8;
    assert_eq!(u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()), 5);
    at
}

fn models_dir() -> PathBuf {
    std::env::var_os("WARMSTART_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
}

#[test]
fn reads_real_efficientnet_lite0_checkpoint() -> anyhow::Result<()> {
    let pth = models_dir().join("efficientnet-lite0").join("weights.pth");
    if !pth.is_file() {
        assert!(!ci(), "CI=true but {} is missing", pth.display());
        eprintln!(
            "SKIP: {} missing (run scripts/fetch-backbones.sh)",
            pth.display()
        );
        return Ok(());
    }
    let tensors = read_legacy_pth(&pth)?;
    assert_eq!(tensors.len(), 296);
    assert_eq!(get(&tensors, "_conv_stem.weight").dims(), [32, 3, 3, 3]);
    assert_eq!(get(&tensors, "_fc.weight").dims(), [1000, 1280]);
    // Values read independently with Python's pickle + struct, following the stored strides
    // (these weights were converted from TF and are stored channels-last / transposed).
    let checks: [(&str, Vec<usize>, f32); 4] = [
        ("_conv_stem.weight", vec![1, 2, 0, 1], -0.089_202_27),
        ("_fc.weight", vec![3, 5], 0.011_424_251),
        (
            "_blocks.0._depthwise_conv.weight",
            vec![5, 0, 2, 1],
            0.044_706_106,
        ),
        ("_bn1.running_var", vec![7], 10.647_316),
    ];
    for (name, idx, want) in checks {
        let mut t = get(&tensors, name).clone();
        for &i in &idx {
            t = t.i(i)?;
        }
        let got = t.to_scalar::<f32>()?;
        assert!((got - want).abs() < 1e-6, "{name}{idx:?}: {got} != {want}");
    }
    Ok(())
}
