//! Recognising files that stand in for weights without being weights: Git LFS pointers (what a
//! `git clone` of a Hugging Face repository without git-lfs leaves: a ~130-byte text file in
//! place of every large file) and HTML pages saved under a weights name (a login, error or
//! "blob" page downloaded instead of the file). Both get an error that names the file, says
//! what it is and how to get the real one, instead of a parse error about a nonsense header.

use std::io::Read;
use std::path::Path;

use crate::error::{Result, TitokError};

/// Bytes read from the start of a file to recognise it.
const SNIFF_BYTES: usize = 1024;

/// What a stand-in file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandIn {
    /// A Git LFS pointer (`version https://git-lfs.github.com/spec/v1`).
    LfsPointer {
        /// The `oid` line's value (`sha256:...`), when present.
        oid: Option<String>,
        /// Size in bytes of the real file, when given.
        size: Option<u64>,
    },
    /// An HTML page.
    Html,
}

/// Recognises a stand-in from the first bytes of a file.
pub fn recognise(head: &[u8]) -> Option<StandIn> {
    let text = String::from_utf8_lossy(head);
    let text = text.trim_start_matches('\u{feff}').trim_start();
    if text.starts_with("version https://git-lfs.github.com/spec/") {
        let field = |key: &str| {
            text.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string())).filter(|v| !v.is_empty())
        };
        let size = field("size ").and_then(|s| s.parse().ok());
        return Some(StandIn::LfsPointer { oid: field("oid "), size });
    }
    let lower = text.get(..text.len().min(256)).unwrap_or("").to_ascii_lowercase();
    if lower.starts_with("<!doctype html") || lower.starts_with("<html") || lower.starts_with("<head") {
        return Some(StandIn::Html);
    }
    if lower.starts_with("<?xml") && lower.contains("<html") {
        return Some(StandIn::Html);
    }
    None
}

/// Fails with [`TitokError::NotWeights`] when `path` is a Git LFS pointer or an HTML page; a
/// file that cannot be opened passes (the loader reports that itself).
///
/// # Errors
/// [`TitokError::NotWeights`] naming the file, what it is, and how to get the real file.
pub fn refuse_stand_in(path: &Path) -> Result<()> {
    let Ok(file) = std::fs::File::open(path) else { return Ok(()) };
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    if file.take(SNIFF_BYTES as u64).read_to_end(&mut head).is_err() {
        return Ok(());
    }
    let Some(stand_in) = recognise(&head) else { return Ok(()) };
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(head.len() as u64);
    let (what, fix) = match stand_in {
        StandIn::LfsPointer { oid, size } => {
            let real = size.map(|s| format!(" for the real file of {}", human_bytes(s))).unwrap_or_default();
            let oid = oid.map(|o| format!(", {o}")).unwrap_or_default();
            (
                format!("a Git LFS pointer (a {bytes}-byte text file{real}{oid})"),
                "the repository was cloned without git-lfs: run `git lfs install && git lfs pull` in the clone, \
                 or download this file itself (on Hugging Face: the download button of the file, a `/resolve/` URL)"
                    .to_string(),
            )
        }
        StandIn::Html => (
            format!("an HTML page ({bytes} bytes; a saved web page or error page)"),
            "download the file itself (on Hugging Face: the download button of the file, a `/resolve/` URL, \
             not the `/blob/` page)"
                .to_string(),
        ),
    };
    Err(TitokError::NotWeights { path: path.to_path_buf(), what, fix })
}

/// `2.4 GB`-style sizes (decimal units).
fn human_bytes(n: u64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{n} bytes") } else { format!("{v:.1} {}", units[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lfs_pointers_and_html_pages_are_recognised() {
        let pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 2397201356\n";
        assert_eq!(
            recognise(pointer),
            Some(StandIn::LfsPointer { oid: Some("sha256:4d7a2146".into()), size: Some(2_397_201_356) })
        );
        assert_eq!(recognise(b"\n  <!DOCTYPE html>\n<html lang=en>"), Some(StandIn::Html));
        assert_eq!(recognise(b"<HTML><body>404</body></HTML>"), Some(StandIn::Html));
        // A real safetensors file starts with its little-endian header length.
        assert_eq!(recognise(&[0x58, 0x01, 0, 0, 0, 0, 0, 0, b'{', b'"']), None);
        assert_eq!(recognise(b""), None);
        assert_eq!(human_bytes(2_397_201_356), "2.4 GB");
        assert_eq!(human_bytes(512), "512 bytes");
    }
}
