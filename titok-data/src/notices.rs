//! What the decoder noticed about the files of a dataset: orientations applied, colours
//! converted, animations cut to their first frame (each reported once per file), and the
//! formats and sizes seen, which decide whether an FID is comparable with the official
//! protocol (lossless PNG at the model's resolution).

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, PoisonError};

use super::image_io::DecodedImage;

/// Notices about decoded files, shared between clones of a batcher and with its caller.
/// Every file counts once, however many epochs meet it.
#[derive(Debug, Default)]
pub struct NoticeLog {
    inner: Mutex<Inner>,
}

/// Per-file state is kept small (a 64-bit hash per file seen, counts and one example per
/// kind), so that a pass over ImageNet's 1.28 M files costs megabytes, not the file names.
#[derive(Debug, Default)]
struct Inner {
    seen: HashSet<u64>,
    notes: BTreeMap<String, Vec<String>>,
    lossy: (usize, Option<String>),
    sizes: BTreeMap<(u32, u32), (usize, String)>,
}

/// A summary of the files of a [`NoticeLog`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// Distinct files decoded.
    pub files: usize,
    /// Files in a lossy format (JPEG), with one example.
    pub lossy: (usize, Option<String>),
    /// Displayed sizes `(width, height)` with their count and one example file, by size.
    pub sizes: Vec<((u32, u32), usize, String)>,
    /// Files with notes (orientation, colour conversion, animation), with the notes.
    pub noted: Vec<(String, Vec<String>)>,
}

impl FileSummary {
    /// Warnings for an FID over these files against the official protocol (lossless images at
    /// `size` x `size`): lossy files, and files of another size (resized before scoring).
    /// `what` names the files (`samples`, `reference images`).
    pub fn fid_warnings(&self, what: &str, size: u32) -> Vec<String> {
        let mut out = Vec::new();
        if let (n, Some(example)) = &self.lossy
            && *n > 0
        {
            out.push(format!(
                "{n} of {} {what} are JPEG (lossy, e.g. {example}): compression shifts FID, the official \
                 protocol scores lossless PNG",
                self.files
            ));
        }
        let off: Vec<_> = self.sizes.iter().filter(|(dims, _, _)| *dims != (size, size)).collect();
        let count: usize = off.iter().map(|(_, n, _)| n).sum();
        if let Some(((w, h), _, example)) = off.first() {
            out.push(format!(
                "{count} of {} {what} are not {size}x{size}, the model's size (e.g. {example}: {w}x{h}); they are \
                 resized and centre-cropped, which shifts FID",
                self.files
            ));
        }
        out
    }
}

impl NoticeLog {
    /// Records a decoded file; warns about its notes the first time it is seen.
    pub fn record(&self, location: &str, decoded: &DecodedImage) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut hasher = DefaultHasher::new();
        location.hash(&mut hasher);
        if !inner.seen.insert(hasher.finish()) {
            return;
        }
        let notes = decoded.notes();
        if !notes.is_empty() {
            tracing::warn!(file = %location, notes = %notes.join("; "), "image adjusted while decoding");
            inner.notes.insert(location.to_string(), notes);
        }
        if decoded.is_lossy() {
            inner.lossy.0 += 1;
            inner.lossy.1.get_or_insert_with(|| location.to_string());
        }
        let entry = inner.sizes.entry(decoded.image.dimensions()).or_insert_with(|| (0, location.to_string()));
        entry.0 += 1;
    }

    /// What was seen so far.
    pub fn summary(&self) -> FileSummary {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        FileSummary {
            files: inner.seen.len(),
            lossy: inner.lossy.clone(),
            sizes: inner.sizes.iter().map(|(&d, (n, ex))| (d, *n, ex.clone())).collect(),
            noted: inner.notes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fid_warnings_name_lossy_and_off_size_files() {
        let summary = FileSummary {
            files: 3,
            lossy: (1, Some("b.jpg".into())),
            sizes: vec![((32, 32), 2, "a.png".into()), ((64, 48), 1, "b.jpg".into())],
            noted: Vec::new(),
        };
        let w = summary.fid_warnings("samples", 32);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("1 of 3 samples are JPEG") && w[0].contains("b.jpg"), "{}", w[0]);
        assert!(w[1].starts_with("1 of 3 samples are not 32x32") && w[1].contains("64x48"), "{}", w[1]);
        let clean =
            FileSummary { files: 2, lossy: (0, None), sizes: vec![((32, 32), 2, "a.png".into())], noted: vec![] };
        assert!(clean.fid_warnings("samples", 32).is_empty());
    }
}
