//! Reader for LEGACY (pre-1.6, non-zip) PyTorch checkpoints, which candle cannot open.
//!
//! The EfficientNet-Lite weights we fetch (DESIGN §4) ship in this format, so this module
//! turns them into safetensors once, next to the original file. The layout written by
//! torch's legacy `_save` is five pickles followed by the raw storages:
//!
//! 1. the magic number `0x1950a86a20f9469cfc6c`,
//! 2. the protocol version (`1001`),
//! 3. system info (`{"little_endian": True, ...}`),
//! 4. the object itself (here a state dict) whose tensors are
//!    `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls, `storage`
//!    being a persistent id `('storage', torch.FloatStorage, key, location, numel, view)`,
//! 5. the storage keys, in the order the storages follow,
//!
//! then, for each key, a little-endian `u64` element count and the storage's raw bytes.
//! Pickles are parsed with candle's [`candle_core::pickle::Stack`]; everything else (the
//! magic number, the persistent ids, the storages, strided views) is handled here.

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Result, Tensor, bail};
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

/// The magic number torch writes first in a legacy checkpoint.
const MAGIC: u128 = 0x1950a86a20f9469cfc6c;
/// The only legacy protocol version torch ever wrote.
const PROTOCOL_VERSION: i64 = 1001;

/// File name of the converted weights inside a backbone directory.
pub const SAFETENSORS_NAME: &str = "model.safetensors";
/// File name of the fetched legacy checkpoint inside a backbone directory.
pub const PTH_NAME: &str = "weights.pth";

/// A tensor as described by the state-dict pickle, before its storage is read.
struct TensorRef {
    name: String,
    storage_key: String,
    /// Offset in elements from the start of the ROOT storage (view offsets folded in).
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// Reads a legacy `.pth` file into named CPU tensors, in the state dict's order.
pub fn read_legacy_pth(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path)
        .map_err(|e| candle_core::Error::msg(format!("reading {}: {e}", path.display())))?;
    parse_legacy(&bytes)
        .map_err(|e| candle_core::Error::msg(format!("legacy checkpoint {}: {e}", path.display())))
}

/// Parses the bytes of a legacy checkpoint (see the module docs for the layout). Truncated or
/// malformed input gives an error, never a panic.
pub fn parse_legacy(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let mut r = Cursor::new(bytes);
    read_magic(&mut r)?;
    match read_pickle(&mut r, "protocol version")? {
        Object::Int(v) if v as i64 == PROTOCOL_VERSION => {}
        Object::Long(PROTOCOL_VERSION) => {}
        other => bail!("unsupported legacy protocol version {other:?}"),
    }
    if let Object::Dict(info) = read_pickle(&mut r, "system info")? {
        for (k, v) in info {
            if k == Object::Unicode("little_endian".into()) && v == Object::Bool(false) {
                bail!("big-endian checkpoints are not supported");
            }
        }
    } else {
        bail!("system info is not a dict");
    }
    let state = read_pickle(&mut r, "state dict")?;
    let (refs, storage_types) = collect_tensors(state)?;
    let keys = match read_pickle(&mut r, "storage keys")? {
        Object::List(keys) => keys
            .into_iter()
            .map(|k| {
                k.unicode()
                    .map_err(|o| candle_core::Error::msg(format!("bad key {o:?}")))
            })
            .collect::<Result<Vec<String>>>()?,
        other => bail!("storage keys are not a list: {other:?}"),
    };

    // The raw storages, in key order: u64 element count, then the bytes.
    let mut storages: HashMap<String, (DType, usize, &[u8])> = HashMap::new();
    for key in keys {
        let Some(&dtype) = storage_types.get(&key) else {
            bail!("storage {key} is not used by any tensor, its element type is unknown")
        };
        let mut count = [0u8; 8];
        r.read_exact(&mut count)
            .map_err(|_| candle_core::Error::msg(format!("truncated before storage {key}")))?;
        let numel = u64::from_le_bytes(count) as usize;
        let start = r.position() as usize;
        let len = numel.checked_mul(dtype.size_in_bytes()).filter(|len| {
            start
                .checked_add(*len)
                .is_some_and(|end| end <= bytes.len())
        });
        let Some(len) = len else {
            bail!("truncated in storage {key} ({numel} elements of {dtype:?})")
        };
        storages.insert(key, (dtype, numel, &bytes[start..start + len]));
        r.set_position((start + len) as u64);
    }

    refs.into_iter()
        .map(|t| {
            let Some(&(dtype, numel, data)) = storages.get(&t.storage_key) else {
                bail!(
                    "tensor {} uses storage {} which is not in the file",
                    t.name,
                    t.storage_key
                )
            };
            let tensor = strided_copy(data, dtype, numel, &t)?;
            Ok((t.name, tensor))
        })
        .collect()
}

/// The first pickle is `PROTO 2, LONG1 10 <magic>, STOP`; candle's `LONG1` cannot hold 80 bits,
/// so it is checked by hand.
fn read_magic(r: &mut Cursor<&[u8]>) -> Result<()> {
    let mut byte = [0u8; 1];
    let mut next = |r: &mut Cursor<&[u8]>| -> Result<u8> {
        r.read_exact(&mut byte)
            .map_err(|_| candle_core::Error::msg("truncated magic number"))?;
        Ok(byte[0])
    };
    let mut op = next(r)?;
    if op == 0x80 {
        next(r)?; // protocol number
        op = next(r)?;
    }
    if op != 0x8a {
        bail!(
            "not a legacy PyTorch checkpoint (no magic number; zip checkpoints are read by candle directly)"
        )
    }
    let n = next(r)? as usize;
    if n > 16 {
        bail!("not a legacy PyTorch checkpoint (magic number too long)")
    }
    let mut value: u128 = 0;
    for i in 0..n {
        value |= (next(r)? as u128) << (8 * i);
    }
    if value != MAGIC || next(r)? != b'.' {
        bail!("not a legacy PyTorch checkpoint (wrong magic number)")
    }
    Ok(())
}

/// Runs candle's pickle machine on the next pickle. The machine is not hardened against
/// arbitrary bytes (some opcodes can overflow in debug builds), so panics become errors.
fn read_pickle(r: &mut Cursor<&[u8]>, what: &str) -> Result<Object> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut stack = Stack::empty();
        stack.read_loop(r)?;
        stack.finalize()
    }));
    match outcome {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(e)) => bail!("malformed {what} pickle: {e}"),
        Err(_) => bail!("malformed {what} pickle (parser panicked)"),
    }
}

/// Walks the state dict: every `_rebuild_tensor_v2` entry becomes a [`TensorRef`]; other
/// entries (torch's `_metadata`) are skipped. Also returns each storage key's element type.
fn collect_tensors(state: Object) -> Result<(Vec<TensorRef>, HashMap<String, DType>)> {
    let entries = match state {
        Object::Dict(entries) => entries,
        other => bail!(
            "the checkpoint does not hold a state dict but {}",
            short(&other)
        ),
    };
    let mut refs = Vec::new();
    let mut types: HashMap<String, DType> = HashMap::new();
    for (key, value) in in_pickled_order(entries) {
        let Object::Unicode(name) = key else { continue };
        let Some((storage, args)) = tensor_call(value) else {
            continue;
        };
        let t = parse_rebuild(name, storage, args, &mut types)?;
        refs.push(t);
    }
    if refs.is_empty() {
        bail!("the state dict holds no tensors")
    }
    Ok((refs, types))
}

/// Candle's `SETITEMS` pushes each batch of items in reverse. CPython pickles a dict in
/// batches of 1000 items (`pickle._BATCHSIZE`, one `SETITEMS` each; a lone item uses
/// `SETITEM`), followed by any `BUILD` state (`_metadata`, not a tensor), so reversing each
/// run of 1000 entries restores the order of the original state dict.
fn in_pickled_order(mut entries: Vec<(Object, Object)>) -> Vec<(Object, Object)> {
    for chunk in entries.chunks_mut(1000) {
        chunk.reverse();
    }
    entries
}

/// Unwraps `_rebuild_parameter(_rebuild_tensor_v2(...), ...)` and `_rebuild_tensor_v2(...)`
/// into (persistent id, remaining args); `None` for anything else.
fn tensor_call(value: Object) -> Option<(Object, Vec<Object>)> {
    let (callable, args) = value.reduce().ok()?;
    let (module, class) = callable.class().ok()?;
    match (module.as_str(), class.as_str()) {
        ("torch._utils", "_rebuild_parameter") => {
            let mut args = args.tuple().ok()?;
            if args.is_empty() {
                return None;
            }
            tensor_call(args.remove(0))
        }
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            let mut args = args.tuple().ok()?;
            if args.is_empty() {
                return None;
            }
            let storage = args.remove(0);
            Some((storage, args))
        }
        _ => None,
    }
}

fn parse_rebuild(
    name: String,
    storage: Object,
    args: Vec<Object>,
    types: &mut HashMap<String, DType>,
) -> Result<TensorRef> {
    let bad = |what: &str| candle_core::Error::msg(format!("tensor {name}: bad {what}"));
    let pid = storage
        .persistent_load()
        .map_err(|_| bad("storage (not a persistent id)"))?;
    let mut pid = pid.tuple().map_err(|_| bad("persistent id"))?.into_iter();
    if pid.next() != Some(Object::Unicode("storage".into())) {
        return Err(bad("persistent id tag"));
    }
    let (_module, class) = pid
        .next()
        .and_then(|o| o.class().ok())
        .ok_or_else(|| bad("storage type"))?;
    let dtype = storage_dtype(&class)?;
    let root_key = pid
        .next()
        .and_then(|o| o.unicode().ok())
        .ok_or_else(|| bad("storage key"))?;
    let _location = pid.next();
    let _numel = pid.next();
    // Very old files may store views of a storage: (view_key, offset, size).
    let view_offset = match pid.next() {
        None | Some(Object::None) => 0,
        Some(Object::Tuple(view)) if view.len() == 3 => {
            usize_of(&view[1]).ok_or_else(|| bad("view offset"))?
        }
        Some(_) => return Err(bad("view metadata")),
    };
    match types.get(&root_key) {
        Some(&d) if d != dtype => return Err(bad("storage type (shared with another dtype)")),
        _ => {
            types.insert(root_key.clone(), dtype);
        }
    }
    let mut args = args.into_iter();
    let offset = args
        .next()
        .as_ref()
        .and_then(usize_of)
        .ok_or_else(|| bad("offset"))?;
    let size = args
        .next()
        .and_then(usize_tuple)
        .ok_or_else(|| bad("size"))?;
    let stride = args
        .next()
        .and_then(usize_tuple)
        .ok_or_else(|| bad("stride"))?;
    if size.len() != stride.len() {
        return Err(bad("stride (rank differs from size)"));
    }
    Ok(TensorRef {
        name,
        storage_key: root_key,
        offset: offset + view_offset,
        size,
        stride,
    })
}

fn storage_dtype(class: &str) -> Result<DType> {
    Ok(match class {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "ByteStorage" | "BoolStorage" => DType::U8,
        other => bail!("unsupported storage type {other}"),
    })
}

fn usize_of(o: &Object) -> Option<usize> {
    match o {
        Object::Int(v) if *v >= 0 => Some(*v as usize),
        Object::Long(v) if *v >= 0 => Some(*v as usize),
        _ => None,
    }
}

fn usize_tuple(o: Object) -> Option<Vec<usize>> {
    match o {
        Object::Tuple(items) => items.iter().map(usize_of).collect(),
        _ => None,
    }
}

/// A short description of a pickled object for error messages (never the whole tree).
fn short(o: &Object) -> String {
    let s = format!("{o:?}");
    if s.len() > 120 {
        format!("{}...", &s[..120])
    } else {
        s
    }
}

/// Copies the elements a (offset, size, stride) view selects out of a storage into a
/// contiguous tensor, checking every index stays inside the storage.
fn strided_copy(data: &[u8], dtype: DType, numel: usize, t: &TensorRef) -> Result<Tensor> {
    let elem = dtype.size_in_bytes();
    let count: usize = t.size.iter().product();
    if count > 0 {
        let mut last = t.offset;
        for (&n, &s) in t.size.iter().zip(&t.stride) {
            last = (n - 1)
                .checked_mul(s)
                .and_then(|x| last.checked_add(x))
                .ok_or_else(|| {
                    candle_core::Error::msg(format!("tensor {}: view overflows", t.name))
                })?;
        }
        if last >= numel {
            bail!(
                "tensor {}: view (offset {}, size {:?}, stride {:?}) exceeds its storage of {numel} elements",
                t.name,
                t.offset,
                t.size,
                t.stride
            )
        }
    }
    let mut out = Vec::with_capacity(count * elem);
    if count > 0 {
        let rank = t.size.len();
        let mut index = vec![0usize; rank];
        let mut pos = t.offset;
        for _ in 0..count {
            out.extend_from_slice(&data[pos * elem..(pos + 1) * elem]);
            // Odometer increment, innermost dimension first.
            for d in (0..rank).rev() {
                index[d] += 1;
                pos += t.stride[d];
                if index[d] < t.size[d] {
                    break;
                }
                pos -= t.stride[d] * t.size[d];
                index[d] = 0;
            }
        }
    }
    Tensor::from_raw_buffer(&out, dtype, &t.size, &Device::Cpu)
}

/// Converts a legacy checkpoint into a safetensors file, written to a temporary file in the
/// same directory and renamed into place so a reader never sees half a file.
pub fn convert_to_safetensors(pth: &Path, out: &Path) -> Result<()> {
    let tensors: HashMap<String, Tensor> = read_legacy_pth(pth)?.into_iter().collect();
    let file_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = out.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = candle_core::safetensors::save(&tensors, &tmp).and_then(|()| {
        std::fs::rename(&tmp, out).map_err(|e| {
            candle_core::Error::msg(format!(
                "renaming {} to {}: {e}",
                tmp.display(),
                out.display()
            ))
        })
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Makes sure `dir/model.safetensors` exists, converting `dir/weights.pth` once if needed,
/// and returns its path.
pub fn ensure_converted(dir: &Path) -> Result<PathBuf> {
    let out = dir.join(SAFETENSORS_NAME);
    if out.is_file() {
        return Ok(out);
    }
    let pth = dir.join(PTH_NAME);
    if !pth.is_file() {
        bail!(
            "{} has neither {SAFETENSORS_NAME} nor {PTH_NAME}; run scripts/fetch-backbones.sh",
            dir.display()
        )
    }
    convert_to_safetensors(&pth, &out)?;
    Ok(out)
}
