//! NumPy `.npy` / `.npz` files without Python: FID statistics (`mu`, `sigma`) that other tools
//! can reuse, and the OpenAI ADM evaluator's sample batches (`arr_0`, uint8 NHWC).
//!
//! Format: `numpy/lib/format.py` (NEP 1). An `.npy` file is the magic `\x93NUMPY`, a version
//! (1.0: `u16` header length; 2.0/3.0: `u32`), a header that is the `repr` of a dict with sorted
//! keys — `{'descr': '<f8', 'fortran_order': False, 'shape': (2048, 2048), }` — padded with
//! spaces (numpy also reserves room to grow the first axis) and a final `\n` so that the data
//! starts at a multiple of 64 bytes, then the data in C order. An `.npz` is a zip archive of
//! `NAME.npy` entries: written here uncompressed like `np.savez` (ZIP64 for entries over 4 GiB);
//! read stored or deflated (`np.savez_compressed`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::error::{EvalError, Result};

/// The `.npy` magic string.
pub const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Alignment of the data start (numpy's `ARRAY_ALIGN`).
pub const NPY_ALIGN: usize = 64;
/// Spare header room numpy reserves for the growth axis (`GROWTH_AXIS_MAX_DIGITS`).
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// Entries larger than this are written with ZIP64 size fields.
const ZIP64_THRESHOLD: u64 = 0xFFFF_0000;

/// The elements of one array, in C order.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `<f8` (float64).
    F64(Vec<f64>),
    /// `<f4` (float32).
    F32(Vec<f32>),
    /// `<i8` (int64; `<i4` is widened on read).
    I64(Vec<i64>),
    /// `|u1` (uint8; `|b1` booleans are read as 0/1).
    U8(Vec<u8>),
}

impl NpyData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::F64(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::U8(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// numpy's type string (`descr`) for this data, little-endian.
    pub fn descr(&self) -> &'static str {
        match self {
            Self::F64(_) => "<f8",
            Self::F32(_) => "<f4",
            Self::I64(_) => "<i8",
            Self::U8(_) => "|u1",
        }
    }

    fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Self::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::U8(v) => v.clone(),
        }
    }
}

/// An n-dimensional array as stored in an `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Shape (`[]` for a 0-d scalar).
    pub shape: Vec<usize>,
    /// Elements in C (row-major) order; `shape.iter().product()` of them.
    pub data: NpyData,
}

impl NpyArray {
    /// An array, checking that the element count fits the shape.
    ///
    /// # Errors
    /// [`EvalError::Input`] when `data.len() != shape.iter().product()`.
    pub fn new(shape: Vec<usize>, data: NpyData) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(EvalError::Input(format!("array of shape {shape:?} needs {n} elements, got {}", data.len())));
        }
        Ok(Self { shape, data })
    }

    /// A 0-d int64 scalar.
    pub fn scalar_i64(value: i64) -> Self {
        Self { shape: vec![], data: NpyData::I64(vec![value]) }
    }

    /// The elements converted to f64 (exact for every stored type but large int64).
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            NpyData::F64(v) => v.clone(),
            NpyData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            NpyData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            NpyData::U8(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
}

/// The `.npy` prefix (magic, version, header length, header dict, padding, `\n`) exactly as
/// `numpy.save` writes it: version 1.0 when the header fits a `u16`, else 2.0; the total length
/// is a multiple of [`NPY_ALIGN`].
pub fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape_repr = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_repr}, }}");
    if let Some(first) = shape.first() {
        dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(first.to_string().len())));
    }
    // Version 1.0 stores the header length as u16, 2.0 as u32 (numpy picks the first that fits).
    // As numpy, a prefix that is already aligned still gets a full block of padding; the +1 is
    // the final newline.
    let layout = |len_bytes: usize| {
        let pad = NPY_ALIGN - (NPY_MAGIC.len() + 2 + len_bytes + dict.len() + 1) % NPY_ALIGN;
        (pad, dict.len() + pad + 1)
    };
    let (version, (pad, header_len)) = match layout(2) {
        (pad, len) if len <= u16::MAX as usize => (1u8, (pad, len)),
        _ => (2u8, layout(4)),
    };
    let mut out = Vec::with_capacity(NPY_MAGIC.len() + 6 + header_len);
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

/// The complete `.npy` bytes of an array (what `numpy.save` writes).
pub fn encode_npy(array: &NpyArray) -> Vec<u8> {
    let mut out = npy_header(array.data.descr(), &array.shape);
    out.extend_from_slice(&array.data.to_le_bytes());
    out
}

/// Parses `.npy` bytes (versions 1.0-3.0; `<f8`, `<f4`, `<i8`, `<i4`, `|u1`, `|b1`; C order).
///
/// # Errors
/// A message naming the problem: bad magic, truncated data, an unsupported type or byte
/// order, or `fortran_order: True`.
pub fn decode_npy(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != NPY_MAGIC {
        return Err("not a .npy array (bad magic)".into());
    }
    let (header_start, header_len) = match bytes[6] {
        1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        2 | 3 if bytes.len() >= 12 => (12, u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize),
        v => return Err(format!("unsupported .npy version {v}.{}", bytes[7])),
    };
    let data_start = header_start + header_len;
    let header = bytes
        .get(header_start..data_start)
        .ok_or_else(|| format!("truncated .npy header ({header_len} bytes announced)"))?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text".to_string())?;
    let descr = dict_value(header, "descr")
        .and_then(|v| v.strip_prefix('\'').or_else(|| v.strip_prefix('"')))
        .and_then(|v| v.split(['\'', '"']).next())
        .ok_or_else(|| format!("no 'descr' in the .npy header {header:?}"))?;
    let fortran = dict_value(header, "fortran_order").ok_or_else(|| format!("no 'fortran_order' in {header:?}"))?;
    if fortran.starts_with("True") {
        return Err("fortran_order True is not supported (save a C-contiguous array)".into());
    }
    let shape_text = dict_value(header, "shape")
        .and_then(|v| v.strip_prefix('('))
        .and_then(|v| v.split(')').next())
        .ok_or_else(|| format!("no 'shape' tuple in {header:?}"))?;
    let shape = shape_text
        .split(',')
        .map(|s| s.trim().trim_end_matches('L'))
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape entry {s:?} in {header:?}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let n: usize = shape.iter().product();
    let raw = &bytes[data_start..];
    let take = |size: usize| -> std::result::Result<&[u8], String> {
        raw.get(..n * size)
            .ok_or_else(|| format!("truncated .npy data: {} bytes for {n} elements of {descr}", raw.len()))
    };
    let data = match descr {
        "<f8" => NpyData::F64(take(8)?.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8"))).collect()),
        "<f4" => NpyData::F32(take(4)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect()),
        "<i8" => NpyData::I64(take(8)?.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8"))).collect()),
        "<i4" => NpyData::I64(
            take(4)?.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4")) as i64).collect(),
        ),
        "|u1" | "<u1" | "|b1" => NpyData::U8(take(1)?.to_vec()),
        other => return Err(format!("unsupported .npy dtype {other:?} (expected <f8, <f4, <i8, <i4, |u1)")),
    };
    Ok(NpyArray { shape, data })
}

/// The text after `'key':` in a header dict, left-trimmed.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    ["'", "\""].iter().find_map(|q| {
        let needle = format!("{q}{key}{q}");
        let at = header.find(&needle)? + needle.len();
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    })
}

fn npz_err(path: &Path, reason: impl ToString) -> EvalError {
    EvalError::Npz { path: path.to_path_buf(), reason: reason.to_string() }
}

fn stored(size: u64) -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Stored).large_file(size >= ZIP64_THRESHOLD)
}

/// Writes arrays as an uncompressed `.npz` (entry `NAME.npy` per array, like `np.savez`),
/// atomically (a temporary file renamed into place).
///
/// # Errors
/// [`EvalError::Npz`] when the file cannot be written or a name is empty/duplicated.
pub fn write_npz(path: &Path, arrays: &[(&str, &NpyArray)]) -> Result<()> {
    let mut names: Vec<&str> = arrays.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    if names.iter().any(|n| n.is_empty()) || names.windows(2).any(|w| w[0] == w[1]) {
        return Err(npz_err(path, format!("array names must be distinct and non-empty: {names:?}")));
    }
    titok_model::checkpoint::write_atomically(path, |tmp| {
        let file = File::create(tmp).map_err(|e| e.to_string())?;
        let mut zip = ZipWriter::new(BufWriter::new(file));
        for (name, array) in arrays {
            let bytes = encode_npy(array);
            zip.start_file(format!("{name}.npy"), stored(bytes.len() as u64)).map_err(|e| e.to_string())?;
            zip.write_all(&bytes).map_err(|e| e.to_string())?;
        }
        let mut inner = zip.finish().map_err(|e| e.to_string())?;
        inner.flush().map_err(|e| e.to_string())
    })
    .map_err(|e| match e {
        titok_model::TitokError::Write { reason, .. } => npz_err(path, reason),
        other => npz_err(path, other),
    })
}

/// Random access to the arrays of an `.npz` file (stored or deflated entries).
pub struct NpzReader {
    path: PathBuf,
    archive: ZipArchive<BufReader<File>>,
}

impl std::fmt::Debug for NpzReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpzReader").field("path", &self.path).field("names", &self.names()).finish()
    }
}

impl NpzReader {
    /// Opens an `.npz` file (reads only its directory).
    ///
    /// # Errors
    /// [`EvalError::Npz`] when the file is missing or not a zip archive.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| npz_err(path, e))?;
        let archive = ZipArchive::new(BufReader::new(file)).map_err(|e| npz_err(path, format!("not an .npz: {e}")))?;
        Ok(Self { path: path.to_path_buf(), archive })
    }

    /// Names of the arrays (entry names without `.npy`), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .archive
            .file_names()
            .filter_map(|n| n.ok())
            .filter_map(|n| n.strip_suffix(".npy").map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// Whether an array is stored.
    pub fn contains(&self, name: &str) -> bool {
        self.names().iter().any(|n| n == name)
    }

    /// Reads one array.
    ///
    /// # Errors
    /// [`EvalError::Npz`] when it is absent or not a readable `.npy`.
    pub fn read(&mut self, name: &str) -> Result<NpyArray> {
        let path = self.path.clone();
        if !self.contains(name) {
            return Err(npz_err(&path, format!("no array `{name}` (arrays: {:?})", self.names())));
        }
        let mut entry =
            self.archive.by_name(&format!("{name}.npy")).map_err(|e| npz_err(&path, format!("`{name}`: {e}")))?;
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(|e| npz_err(&path, format!("`{name}`: {e}")))?;
        decode_npy(&bytes).map_err(|e| npz_err(&path, format!("`{name}`: {e}")))
    }
}

/// Reads every array of an `.npz` file.
///
/// # Errors
/// As [`NpzReader::open`] and [`NpzReader::read`].
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, NpyArray>> {
    let mut reader = NpzReader::open(path)?;
    reader.names().into_iter().map(|n| Ok((n.clone(), reader.read(&n)?))).collect()
}

/// Converts images in `[0, 1]` to uint8 NHWC bytes the way the official sampler does
/// (`demo_util.sample_fn`: clamp to `[0, 1]`, `× 255`, cast to uint8, i.e. truncation).
///
/// # Shapes
/// - `images`: `[batch, 3, H, W]` -> `batch · H · W · 3` bytes, NHWC
///
/// # Errors
/// [`EvalError::Input`] for a shape other than `[batch, 3, H, W]`.
pub fn images_to_u8_nhwc(images: Tensor<4>) -> Result<Vec<u8>> {
    let [_, c, _, _] = images.dims();
    if c != 3 {
        return Err(EvalError::Input(format!("expected [batch, 3, H, W] RGB images, got {:?}", images.dims())));
    }
    let nhwc = (images.clamp(0.0, 1.0) * 255.0).floor().permute([0, 2, 3, 1]); // [batch, H, W, 3]
    let values =
        nhwc.try_into_vec_as::<f32>().map_err(|e| EvalError::Input(format!("cannot read images back: {e:?}")))?;
    Ok(values.into_iter().map(|v| v as u8).collect())
}

/// Streams generated samples into an ADM-evaluator batch file (`arr_0`, uint8
/// `[n, height, width, 3]`), as `guided-diffusion/evaluations/evaluator.py` reads it. The
/// image count is fixed up front (it is in the `.npy` header); the file appears under its name
/// only when [`AdmNpzWriter::finish`] succeeds.
pub struct AdmNpzWriter {
    path: PathBuf,
    tmp: PathBuf,
    zip: Option<ZipWriter<BufWriter<File>>>,
    shape: [usize; 3],
    expected: usize,
    written: usize,
}

impl std::fmt::Debug for AdmNpzWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmNpzWriter")
            .field("path", &self.path)
            .field("shape", &self.shape)
            .field("expected", &self.expected)
            .field("written", &self.written)
            .finish()
    }
}

impl AdmNpzWriter {
    /// Starts a batch file of `n` images of `height × width` pixels.
    ///
    /// # Errors
    /// [`EvalError::Input`] for a zero size, [`EvalError::Npz`] when the file cannot be created.
    pub fn create(path: &Path, n: usize, height: usize, width: usize) -> Result<Self> {
        if n == 0 || height == 0 || width == 0 {
            return Err(EvalError::Input(format!("ADM batch of {n} images of {height}x{width}: sizes must be > 0")));
        }
        let name = path.file_name().ok_or_else(|| npz_err(path, "not a file path"))?;
        let tmp = path.with_file_name(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| npz_err(path, e))?;
        }
        let file = File::create(&tmp).map_err(|e| npz_err(path, e))?;
        let mut zip = ZipWriter::new(BufWriter::new(file));
        let shape = [n, height, width, 3];
        let header = npy_header("|u1", &shape);
        let size = header.len() as u64 + (n * height * width * 3) as u64;
        let started = zip
            .start_file("arr_0.npy", stored(size))
            .map_err(|e| e.to_string())
            .and_then(|()| zip.write_all(&header).map_err(|e| e.to_string()));
        let writer =
            Self { path: path.to_path_buf(), tmp, zip: Some(zip), shape: [height, width, 3], expected: n, written: 0 };
        started.map_err(|e| npz_err(path, e))?;
        Ok(writer)
    }

    /// Appends images in `[0, 1]` (converted by [`images_to_u8_nhwc`]).
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, height, width]`
    ///
    /// # Errors
    /// [`EvalError::Input`] for another image size or more images than announced,
    /// [`EvalError::Npz`] on a write failure.
    pub fn push(&mut self, images: Tensor<4>) -> Result<()> {
        let [b, _, h, w] = images.dims();
        if [h, w] != [self.shape[0], self.shape[1]] {
            return Err(EvalError::Input(format!(
                "ADM batch holds {}x{} images, got {:?}",
                self.shape[0],
                self.shape[1],
                images.dims()
            )));
        }
        let bytes = images_to_u8_nhwc(images)?;
        self.push_u8_nhwc(&bytes, b)
    }

    /// Appends `count` images given as uint8 NHWC bytes.
    ///
    /// # Errors
    /// As [`AdmNpzWriter::push`].
    pub fn push_u8_nhwc(&mut self, bytes: &[u8], count: usize) -> Result<()> {
        let per_image: usize = self.shape.iter().product();
        if bytes.len() != count * per_image {
            return Err(EvalError::Input(format!(
                "{count} images of {:?} need {} bytes, got {}",
                self.shape,
                count * per_image,
                bytes.len()
            )));
        }
        if self.written + count > self.expected {
            return Err(EvalError::Input(format!(
                "ADM batch announced {} images; {} written, {count} more pushed",
                self.expected, self.written
            )));
        }
        let zip = self.zip.as_mut().ok_or_else(|| npz_err(&self.path, "writer already finished"))?;
        zip.write_all(bytes).map_err(|e| npz_err(&self.path, e))?;
        self.written += count;
        Ok(())
    }

    /// Images written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Completes the archive and moves it into place.
    ///
    /// # Errors
    /// [`EvalError::Input`] when fewer images than announced were pushed (the partial file is
    /// removed), [`EvalError::Npz`] on a write failure.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.written != self.expected {
            return Err(EvalError::Input(format!(
                "ADM batch announced {} images but {} were written",
                self.expected, self.written
            )));
        }
        let zip = self.zip.take().ok_or_else(|| npz_err(&self.path, "writer already finished"))?;
        let mut inner = zip.finish().map_err(|e| npz_err(&self.path, e))?;
        inner.flush().map_err(|e| npz_err(&self.path, e))?;
        drop(inner);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| npz_err(&self.path, e))?;
        Ok(self.path.clone())
    }
}

impl Drop for AdmNpzWriter {
    fn drop(&mut self) {
        // Unfinished (error or early return): remove the temporary file.
        if let Some(zip) = self.zip.take() {
            drop(zip);
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
