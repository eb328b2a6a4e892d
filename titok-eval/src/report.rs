//! The metrics report of an evaluation run: a terminal table and a JSON document, with the
//! number of images always printed next to FID and a warning when it is too small to mean
//! anything (FID is biased upwards at small N; published numbers use 50,000 images).

use serde::{Deserialize, Serialize};
use titok_model::CodebookStats;

/// Below this many images FID gets a warning (the feature dimension: fewer images give a
/// rank-deficient covariance).
pub const FID_MIN_IMAGES: usize = 2048;

/// Which FID was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FidKind {
    /// Reconstructions against the (centre-cropped) inputs they came from.
    #[serde(rename = "rFID")]
    Reconstruction,
    /// Generated samples against a reference set or statistics file.
    #[serde(rename = "gFID")]
    Generation,
}

impl FidKind {
    /// `rFID` or `gFID`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Reconstruction => "rFID",
            Self::Generation => "gFID",
        }
    }
}

/// A FID value with the image counts behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidScore {
    /// rFID or gFID.
    pub kind: FidKind,
    /// The Fréchet distance (≥ 0).
    pub value: f64,
    /// Images of the evaluated set.
    pub images: usize,
    /// Images behind the reference statistics, when known.
    pub reference_images: Option<usize>,
}

/// Codebook statistics of the tokens of the evaluated images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodebookReport {
    /// Codebook size.
    pub size: usize,
    /// Distinct codes used.
    pub used: usize,
    /// `used / size`, in `[0, 1]`.
    pub usage: f64,
    /// Entropy of the code histogram in bits, at most `log2(size)`.
    pub entropy_bits: f64,
    /// `2^entropy_bits`.
    pub perplexity: f64,
}

impl CodebookReport {
    /// From the quantizer's statistics.
    pub fn new(stats: &CodebookStats, size: usize) -> Self {
        Self {
            size,
            used: stats.used,
            usage: stats.usage,
            entropy_bits: stats.entropy_bits,
            perplexity: stats.perplexity,
        }
    }
}

/// Running mean of per-image values (PSNR, SSIM, LPIPS) over batches, in f64.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunningMean {
    sum: f64,
    count: usize,
}

impl RunningMean {
    /// Adds values.
    pub fn extend(&mut self, values: impl IntoIterator<Item = f64>) {
        for v in values {
            self.sum += v;
            self.count += 1;
        }
    }

    /// Number of values.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The mean, `None` before any value.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// Everything an evaluation run measured. Absent metrics are `None` and left out of the table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// What was evaluated (model name or path).
    pub name: Option<String>,
    /// rFID or gFID.
    pub fid: Option<FidScore>,
    /// Images behind PSNR / SSIM / LPIPS.
    pub images: usize,
    /// Mean per-image PSNR in dB (data range 1).
    pub psnr_db: Option<f64>,
    /// Mean per-image SSIM.
    pub ssim: Option<f64>,
    /// Mean LPIPS (VGG, lower is better).
    pub lpips: Option<f64>,
    /// Codebook usage and entropy (VQ tokenizers).
    pub codebook: Option<CodebookReport>,
}

impl MetricsReport {
    /// Caveats a reader must see next to the numbers.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(fid) = &self.fid {
            let few = |n: usize, what: &str| {
                format!(
                    "{} on {n} {what} images (< {FID_MIN_IMAGES}): strongly biased upwards and not comparable to \
                     published numbers, which use 50,000",
                    fid.kind.label()
                )
            };
            if fid.images < FID_MIN_IMAGES {
                out.push(few(fid.images, "evaluated"));
            }
            if let Some(r) = fid.reference_images.filter(|&r| r < FID_MIN_IMAGES) {
                out.push(few(r, "reference"));
            }
        }
        if self.psnr_db.is_some_and(f64::is_infinite) {
            out.push("PSNR is infinite: some reconstructions equal their inputs exactly".into());
        }
        out
    }

    /// The report as a plain-text table followed by the warnings.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 3]> = vec![["metric".into(), "value".into(), "images".into()]];
        if let Some(f) = &self.fid {
            let reference = match f.reference_images {
                Some(r) => format!("{} vs {} reference", f.images, r),
                None => format!("{} vs reference statistics", f.images),
            };
            rows.push([f.kind.label().into(), format!("{:.4}", f.value), reference]);
        }
        let images = self.images.to_string();
        if let Some(v) = self.psnr_db {
            rows.push(["PSNR (dB)".into(), format!("{v:.3}"), images.clone()]);
        }
        if let Some(v) = self.ssim {
            rows.push(["SSIM".into(), format!("{v:.4}"), images.clone()]);
        }
        if let Some(v) = self.lpips {
            rows.push(["LPIPS".into(), format!("{v:.4}"), images.clone()]);
        }
        if let Some(c) = &self.codebook {
            rows.push([
                "codebook usage".into(),
                format!("{:.2} %", 100.0 * c.usage),
                format!("{} / {} codes", c.used, c.size),
            ]);
            let max_bits = (c.size.max(1) as f64).log2();
            rows.push([
                "codebook entropy".into(),
                format!("{:.3} bits", c.entropy_bits),
                format!("max {max_bits:.3} bits"),
            ]);
        }
        let widths: Vec<usize> = (0..3).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        if let Some(name) = &self.name {
            out.push_str(&format!("{name}\n"));
        }
        for (k, r) in rows.iter().enumerate() {
            out.push_str(&format!("{:<w0$}  {:>w1$}  {}\n", r[0], r[1], r[2], w0 = widths[0], w1 = widths[1]));
            if k == 0 {
                out.push_str(&format!("{}\n", "-".repeat(widths[0] + widths[1] + widths[2] + 4)));
            }
        }
        for w in self.warnings() {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }

    /// The report as JSON: the fields above plus `warnings` (non-finite values become `null`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("the report serialises");
        v["warnings"] = serde_json::json!(self.warnings());
        v
    }
}

impl std::fmt::Display for MetricsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.table())
    }
}
