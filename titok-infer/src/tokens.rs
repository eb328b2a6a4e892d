//! Token files: JSON lines (`{"file": "...", "tokens": [...]}` per image, extra fields such as
//! `class` allowed) and NumPy `.npy` (`[N, K]` int64, the names in `NAME.files.txt`, one per
//! line). Reading checks every row on its own, so one bad row does not stop the others.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use titok_eval::npz::{NPY_MAGIC, NpyArray, NpyData, decode_npy, encode_npy};

use crate::cli::TokenFormat;
use crate::outputs::{OutputGuard, write_bytes};

/// One image's tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRow {
    /// The image (input path, or a generated sample's name).
    pub file: String,
    /// Class id of a generated sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<usize>,
    /// Class name of a generated sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Token ids `[K]` in `0..codebook_size`.
    pub tokens: Vec<i64>,
}

impl TokenRow {
    /// A row for an input image.
    pub fn new(file: String, tokens: Vec<i64>) -> Self {
        Self { file, class: None, class_name: None, tokens }
    }
}

/// The format for an output path: `.npy` by extension, else JSON lines.
pub fn format_for(path: Option<&Path>, explicit: Option<TokenFormat>) -> TokenFormat {
    explicit.unwrap_or_else(|| match path.and_then(|p| p.extension()).and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("npy") => TokenFormat::Npy,
        _ => TokenFormat::Jsonl,
    })
}

/// The JSON-lines text of rows.
pub fn to_jsonl(rows: &[TokenRow]) -> String {
    rows.iter().map(|r| serde_json::to_string(r).expect("rows serialise") + "\n").collect()
}

/// The side file holding the names of an `.npy` token file: `tokens.npy` -> `tokens.files.txt`.
pub fn names_path(npy: &Path) -> PathBuf {
    npy.with_extension("files.txt")
}

/// Writes rows as `.npy` `[N, K]` int64 plus the names file, atomically.
///
/// # Errors
/// When the rows have different lengths, a path is an input, or a write fails.
pub fn write_npy(guard: &OutputGuard, path: &Path, rows: &[TokenRow]) -> Result<()> {
    let k = rows.first().map_or(0, |r| r.tokens.len());
    if rows.iter().any(|r| r.tokens.len() != k) {
        bail!("rows of different lengths cannot form an .npy array");
    }
    let data: Vec<i64> = rows.iter().flat_map(|r| r.tokens.iter().copied()).collect();
    let array = NpyArray::new(vec![rows.len(), k], NpyData::I64(data))?;
    let names_file = names_path(path);
    guard.check(&names_file)?;
    write_bytes(guard, path, &encode_npy(&array))?;
    let names: String = rows.iter().map(|r| r.file.replace('\n', " ") + "\n").collect();
    write_bytes(guard, &names_file, names.as_bytes())
}

/// Writes rows in `format` to `path`, or JSON lines to stdout when `path` is `None`.
///
/// # Errors
/// As [`write_npy`]; `.npy` needs a path.
pub fn write(guard: &OutputGuard, path: Option<&Path>, format: TokenFormat, rows: &[TokenRow]) -> Result<()> {
    match (format, path) {
        (TokenFormat::Jsonl, Some(p)) => write_bytes(guard, p, to_jsonl(rows).as_bytes()),
        (TokenFormat::Jsonl, None) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(to_jsonl(rows).as_bytes())?;
            Ok(out.flush()?)
        }
        (TokenFormat::Npy, Some(p)) => write_npy(guard, p, rows),
        (TokenFormat::Npy, None) => bail!("--format npy needs an output file (-o tokens.npy)"),
    }
}

/// A row read from a token file, or why that row is unusable (`file:line: reason`).
pub type ReadRow = std::result::Result<TokenRow, String>;

/// Reads a token file (`.npy` recognised by its magic bytes, else JSON lines). Blank lines are
/// skipped; a bad line gives an `Err` row and the others are still read.
///
/// # Errors
/// When the file cannot be read, or an `.npy` is not a 2-D integer array.
pub fn read(path: &Path) -> Result<Vec<ReadRow>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.is_empty() {
        bail!("{}: empty token file", path.display());
    }
    if bytes.starts_with(NPY_MAGIC) {
        return read_npy(path, &bytes);
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow::anyhow!("{}: neither an .npy array nor JSON lines (not text)", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str::<TokenRow>(line)
                .map_err(|e| format!("{}:{}: not a token row {{\"file\", \"tokens\"}}: {e}", path.display(), i + 1))
        })
        .collect())
}

fn read_npy(path: &Path, bytes: &[u8]) -> Result<Vec<ReadRow>> {
    let array = decode_npy(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let [n, k] = array.shape[..] else {
        bail!("{}: expected a 2-D array [images, tokens], got shape {:?}", path.display(), array.shape);
    };
    let ids: Vec<i64> = match &array.data {
        NpyData::I64(v) => v.clone(),
        NpyData::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
        other => bail!("{}: token ids must be integers, got {}", path.display(), other.descr()),
    };
    let names: Vec<String> =
        std::fs::read_to_string(names_path(path)).map(|t| t.lines().map(str::to_string).collect()).unwrap_or_default();
    Ok((0..n)
        .map(|i| {
            let file = names.get(i).cloned().unwrap_or_else(|| format!("{:06}", i));
            Ok(TokenRow::new(file, ids[i * k..(i + 1) * k].to_vec()))
        })
        .collect())
}

/// Checks a row against the tokenizer: `k` tokens, each in `0..codebook_size`.
///
/// # Errors
/// A one-line reason naming the row.
pub fn check_row(row: &TokenRow, k: usize, codebook_size: usize) -> std::result::Result<(), String> {
    if row.tokens.len() != k {
        return Err(format!("{}: {} tokens, the tokenizer expects {k}", row.file, row.tokens.len()));
    }
    if let Some(bad) = row.tokens.iter().find(|&&t| t < 0 || t as usize >= codebook_size) {
        return Err(format!("{}: token id {bad} is outside the codebook 0..{codebook_size}", row.file));
    }
    Ok(())
}
