//! A bounded reader of GGUF headers (metadata and tensor table) into candle's own
//! [`gguf_file::Content`].
//!
//! Why not `gguf_file::Content::read`: it sizes allocations by the counts and lengths it reads
//! (`Vec::with_capacity(len)` for arrays, `vec![0; len]` for strings and dimensions) and never
//! compares them with the file, so a mutated file aborts the process (seen: "memory allocation
//! of 1152921504606846976 bytes failed") or panics on capacity overflow. Here every length is
//! checked against the bytes left in the file before anything is allocated, every tensor's
//! extent against the file size, and the result is the same `Content` candle's tools take.

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};
use candle_core::quantized::GgmlDType;
use std::collections::HashMap;
use std::io::{BufReader, Read};

const MAGIC: u32 = 0x4655_4747; // "GGUF" little-endian
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal but no model uses more than one level; deeper is hostile.
const MAX_ARRAY_DEPTH: usize = 2;

/// Maps GGUF's type tags to candle's types (candle's own mapping is crate-private).
pub fn ggml_dtype(tag: u32) -> Option<GgmlDType> {
    Some(match tag {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// Reads from a file of known length, refusing any length that runs past its end.
struct Bounded<R> {
    inner: R,
    pos: u64,
    len: u64,
    v1: bool,
}

impl<R: Read> Bounded<R> {
    fn left(&self) -> u64 {
        self.len - self.pos
    }

    fn bytes(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        if n > self.left() {
            bail!(
                "{} needs {n} bytes at offset {} but the file has only {} left (truncated or corrupt)",
                what(),
                self.pos,
                self.left()
            );
        }
        let mut buf = vec![0u8; n as usize];
        self.inner.read_exact(&mut buf)?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let v = self.bytes(N as u64, what)?;
        Ok(v.try_into().expect("length checked"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count or length field: u32 in GGUF v1, u64 after.
    fn count(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        if self.v1 {
            Ok(self.u32(what)? as u64)
        } else {
            self.u64(what)
        }
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.count(what)?;
        let mut v = self.bytes(len, what)?;
        // Writers in the wild leave trailing NULs; candle strips them too.
        while v.last() == Some(&0) {
            v.pop();
        }
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    fn value(&mut self, tag: u32, depth: usize, what: &dyn Fn() -> String) -> Result<Value> {
        Ok(match tag {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => bail!("{}: bool byte is {b}, not 0 or 1", what()),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    bail!("{}: arrays nested deeper than {MAX_ARRAY_DEPTH}", what());
                }
                let elem = self.u32(what)?;
                let len = self.count(what)?;
                let min = min_value_size(elem, self.v1)
                    .with_context(|| format!("{}: unknown array element type {elem}", what()))?;
                if len.saturating_mul(min) > self.left() {
                    bail!(
                        "{}: array of {len} elements cannot fit in the {} bytes left in the file",
                        what(),
                        self.left()
                    );
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(elem, depth + 1, what)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            other => bail!("{}: unknown value type {other}", what()),
        })
    }
}

/// The fewest bytes one value of type `tag` takes in the file (for bounding array lengths).
fn min_value_size(tag: u32, v1: bool) -> Option<u64> {
    let count = if v1 { 4 } else { 8 };
    Some(match tag {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => count,
        9 => 4 + count,
        _ => return None,
    })
}

/// Bytes of a tensor of `dtype` with `elems` elements, or why it cannot be stored.
pub fn tensor_bytes(dtype: GgmlDType, row: usize, elems: usize) -> Result<usize> {
    let block = dtype.block_size();
    if row % block != 0 {
        bail!("rows of {row} values do not split into {dtype:?} blocks of {block}");
    }
    Ok(elems / block * dtype.type_size())
}

/// Parses the header of a GGUF file of `file_len` bytes read from `reader` (positioned at 0).
pub fn read(reader: impl Read, file_len: u64) -> Result<Content> {
    let mut r = Bounded {
        inner: BufReader::new(reader),
        pos: 0,
        len: file_len,
        v1: false,
    };
    let magic = r.u32(&|| "the magic number".into())?;
    if magic != MAGIC {
        bail!("not a GGUF file (magic {magic:#010x}, expected \"GGUF\")");
    }
    let version = r.u32(&|| "the version".into())?;
    let magic = match version {
        1 => VersionedMagic::GgufV1,
        2 => VersionedMagic::GgufV2,
        3 => VersionedMagic::GgufV3,
        v => bail!("unsupported GGUF version {v} (supported: 1, 2, 3)"),
    };
    r.v1 = version == 1;
    let tensor_count = r.count(&|| "the tensor count".into())?;
    let kv_count = r.count(&|| "the metadata count".into())?;
    // Each entry takes at least a key length and a type tag (metadata), or a name length,
    // a dimension count, a type and an offset (tensors).
    let entry_min = if r.v1 { 8 } else { 12 };
    if kv_count.saturating_mul(entry_min) > r.left() {
        bail!("header claims {kv_count} metadata entries, more than the file's size allows");
    }
    let mut metadata = HashMap::new();
    for i in 0..kv_count {
        let key = r.string(&|| format!("metadata entry {i}'s key"))?;
        let tag = r.u32(&|| format!("metadata `{key}`'s type"))?;
        let value = r.value(tag, 0, &|| format!("metadata `{key}`"))?;
        if metadata.insert(key.clone(), value).is_some() {
            bail!("metadata key `{key}` appears twice");
        }
    }
    if tensor_count.saturating_mul(entry_min + 16) > r.left() {
        bail!("header claims {tensor_count} tensors, more than the file's size allows");
    }
    let mut tensor_infos = HashMap::new();
    let mut extents = Vec::new();
    for i in 0..tensor_count {
        let name = r.string(&|| format!("tensor {i}'s name"))?;
        let what = || format!("tensor `{name}`");
        let n_dims = r.u32(&what)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            bail!("tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)");
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = r.count(&what)?;
            dims.push(
                usize::try_from(d)
                    .ok()
                    .filter(|&d| d > 0 && d < 1 << 40)
                    .with_context(|| {
                        format!("tensor `{name}` has dimension {d} (must be 1 to 2^40)")
                    })?,
            );
        }
        let elems = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&e| e < 1 << 48)
            .with_context(|| format!("tensor `{name}`'s shape {dims:?} is too large"))?;
        let tag = r.u32(&what)?;
        let dtype = ggml_dtype(tag)
            .with_context(|| format!("tensor `{name}` has unknown ggml type {tag}"))?;
        let offset = r.u64(&what)?;
        let bytes =
            tensor_bytes(dtype, dims[0], elems).with_context(|| format!("tensor `{name}`"))?;
        extents.push((offset, bytes as u64, name.clone()));
        // GGUF lists dimensions fastest first; candle's shapes are slowest first.
        dims.reverse();
        let info = TensorInfo {
            ggml_dtype: dtype,
            shape: dims.into(),
            offset,
        };
        if tensor_infos.insert(name.clone(), info).is_some() {
            bail!("tensor `{name}` appears twice");
        }
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if a.is_power_of_two() => *a as u64,
        Some(v) => bail!("metadata `general.alignment` is {v:?}, not a power of two (u32)"),
    };
    let data_start = r.pos.div_ceil(alignment) * alignment;
    check_extents(&mut extents, data_start, file_len, alignment)?;
    Ok(Content {
        magic,
        metadata,
        tensor_infos,
        tensor_data_offset: data_start,
    })
}

/// Every tensor lies inside the file, aligned, and no two overlap.
fn check_extents(
    extents: &mut [(u64, u64, String)],
    data_start: u64,
    file_len: u64,
    alignment: u64,
) -> Result<()> {
    extents.sort();
    let mut end_of_previous = 0u64;
    let mut previous = "";
    for (offset, bytes, name) in extents.iter() {
        if offset % alignment != 0 {
            bail!("tensor `{name}` starts at offset {offset}, not a multiple of the alignment {alignment}");
        }
        let end = data_start
            .checked_add(*offset)
            .and_then(|s| s.checked_add(*bytes))
            .filter(|&e| e <= file_len)
            .with_context(|| {
                format!(
                    "tensor `{name}` ({bytes} bytes at data offset {offset}) runs past the end of the file ({file_len} bytes): truncated or corrupt"
                )
            })?;
        if *offset < end_of_previous {
            bail!("tensors `{previous}` and `{name}` overlap");
        }
        end_of_previous = end - data_start;
        previous = name;
    }
    Ok(())
}
