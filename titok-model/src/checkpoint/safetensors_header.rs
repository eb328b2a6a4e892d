//! Reading a safetensors header (names, dtypes, shapes) without reading any tensor data, with
//! clear errors for files that are truncated or not safetensors at all.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::error::{Result, TitokError};

/// One tensor's entry in a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Stored dtype as written in the header (`F32`, `F16`, `I64`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// Reads and checks the header of a safetensors file.
///
/// # Errors
/// [`TitokError::NotWeights`] for a Git LFS pointer or an HTML page saved under the name;
/// [`TitokError::CheckpointRead`] when the file is missing, shorter than its header says, has
/// an unparsable header, or tensor data ranges that do not fit the declared shapes/file size.
pub fn read_safetensors_header(path: &Path) -> Result<BTreeMap<String, TensorInfo>> {
    super::refuse_stand_in(path)?;
    let err = |reason: String| TitokError::CheckpointRead { path: path.to_path_buf(), reason };
    let mut file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let file_len = file.metadata().map_err(|e| err(e.to_string()))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(|_| err(format!("not a safetensors file: only {file_len} bytes")))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > 100_000_000 || 8 + header_len > file_len {
        return Err(err(format!(
            "not a safetensors file or truncated: header of {header_len} bytes in a file of {file_len} bytes"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| err(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| err(format!("corrupt safetensors header: {e}")))?;
    let map = json.as_object().ok_or_else(|| err("corrupt safetensors header: not an object".into()))?;
    let data_len = file_len - 8 - header_len;
    let mut out = BTreeMap::new();
    for (name, entry) in map {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| err(format!("corrupt safetensors header entry `{name}`: {what}"));
        let dtype = entry.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("no dtype"))?.to_string();
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().map(|x| x as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape is not a list of integers"))?;
        let offsets: Vec<u64> = entry
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|x| x.as_u64()).collect::<Option<Vec<_>>>())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| bad("no data_offsets"))?;
        let elem = match dtype.as_str() {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
            _ => return Err(bad(&format!("unsupported dtype {dtype}"))),
        };
        let expected = shape.iter().product::<usize>() as u64 * elem;
        if offsets[1] < offsets[0] || offsets[1] - offsets[0] != expected {
            return Err(bad(&format!(
                "{} data bytes for shape {shape:?} {dtype}",
                offsets[1].saturating_sub(offsets[0])
            )));
        }
        if offsets[1] > data_len {
            return Err(err(format!(
                "truncated: tensor `{name}` ends at byte {} but the file holds {data_len} data bytes",
                offsets[1]
            )));
        }
        out.insert(name.clone(), TensorInfo { dtype, shape });
    }
    Ok(out)
}
