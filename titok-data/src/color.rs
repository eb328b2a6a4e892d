//! ICC colour profiles: pixels tagged with a profile other than sRGB (Adobe RGB, Display P3,
//! ProPhoto RGB, a camera's profile, ...) are converted to sRGB, the colour space every model
//! here was trained in, with the `moxcms` colour-management engine (perceptual intent).
//!
//! The official pipeline (`PIL.Image.open(f).convert("RGB")`) ignores embedded profiles, so an
//! Adobe RGB photo reaches it with washed-out colours. Converting is what a user who looks at
//! the file sees; sRGB-tagged files (the common case) are left exactly as stored, so datasets
//! of sRGB images decode bit-identically to Pillow.

use image::RgbImage;
use moxcms::{ColorProfile, DataColorSpace, Layout, ProfileText, TransformOptions};

/// What was done with an image's embedded ICC profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IccHandling {
    /// No profile: the pixels are taken as sRGB.
    Untagged,
    /// A profile equivalent to sRGB (within one 8-bit level on every probe colour): pixels
    /// left as stored.
    Srgb,
    /// Pixels converted from the named profile to sRGB.
    Converted {
        /// The profile's description (e.g. `Adobe RGB (1998)`), or `embedded ICC profile`.
        profile: String,
    },
    /// The profile could not be applied; the pixels are taken as sRGB.
    NotApplied {
        /// Why (unreadable profile, a CMYK or grayscale profile, a failed transform).
        reason: String,
    },
}

impl IccHandling {
    /// A short note for reports, `None` when nothing needs saying (untagged or sRGB).
    pub fn note(&self) -> Option<String> {
        match self {
            Self::Untagged | Self::Srgb => None,
            Self::Converted { profile } => Some(format!("colours converted from {profile} to sRGB")),
            Self::NotApplied { reason } => Some(format!("ICC profile not applied ({reason}), read as sRGB")),
        }
    }
}

/// Largest deviation (8-bit levels) at which a profile still counts as sRGB.
const SRGB_LEVELS: i16 = 1;

/// Converts `image` (8-bit RGB, the decoder's output) from the colour space of `icc` to sRGB in
/// place, unless the profile is sRGB-equivalent or cannot be applied.
///
/// Only RGB profiles are applied: grayscale images are already replicated to RGB by the
/// decoder and CMYK JPEGs converted by it, so their profiles are reported as not applied.
pub fn convert_to_srgb(image: &mut RgbImage, icc: &[u8]) -> IccHandling {
    let profile = match ColorProfile::new_from_slice(icc) {
        Ok(p) => p,
        Err(e) => return IccHandling::NotApplied { reason: format!("unreadable profile: {e:?}") },
    };
    if profile.color_space != DataColorSpace::Rgb {
        return IccHandling::NotApplied { reason: format!("a {:?} profile on RGB pixels", profile.color_space) };
    }
    let srgb = ColorProfile::new_srgb();
    let transform = match profile.create_transform_8bit(Layout::Rgb, &srgb, Layout::Rgb, TransformOptions::default()) {
        Ok(t) => t,
        Err(e) => return IccHandling::NotApplied { reason: format!("no transform to sRGB: {e:?}") },
    };
    let probe = probe_colours();
    let mut mapped = vec![0u8; probe.len()];
    if let Err(e) = transform.transform(&probe, &mut mapped) {
        return IccHandling::NotApplied { reason: format!("transform failed: {e:?}") };
    }
    let identity = probe.iter().zip(&mapped).all(|(&a, &b)| (i16::from(a) - i16::from(b)).abs() <= SRGB_LEVELS);
    if identity {
        return IccHandling::Srgb;
    }
    let mut out = vec![0u8; image.as_raw().len()];
    if let Err(e) = transform.transform(image.as_raw(), &mut out) {
        return IccHandling::NotApplied { reason: format!("transform failed: {e:?}") };
    }
    image.copy_from_slice(&out);
    IccHandling::Converted { profile: description(&profile) }
}

/// Probe colours (RGB triples): the grey ramp, the three primary ramps and a 9x9x9 lattice.
fn probe_colours() -> Vec<u8> {
    let mut v = Vec::with_capacity(3 * (4 * 256 + 729));
    for l in 0..=255u8 {
        v.extend([l, l, l, l, 0, 0, 0, l, 0, 0, 0, l]);
    }
    let steps: Vec<u8> = (0..9).map(|i| (i * 255 / 8) as u8).collect();
    for &r in &steps {
        for &g in &steps {
            for &b in &steps {
                v.extend([r, g, b]);
            }
        }
    }
    v
}

/// The profile's description tag, else a generic name.
fn description(profile: &ColorProfile) -> String {
    let text = match &profile.description {
        Some(ProfileText::PlainString(s)) => Some(s.clone()),
        Some(ProfileText::Localizable(list)) => list.first().map(|l| l.value.clone()),
        Some(ProfileText::Description(d)) => Some(d.ascii_string.clone()),
        None => None,
    };
    text.map(|t| t.trim_matches(char::from(0)).trim().to_string())
        .filter(|t| !t.is_empty())
        .map(|t| format!("the ICC profile `{t}`"))
        .unwrap_or_else(|| "the embedded ICC profile".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(rgb: [u8; 3]) -> RgbImage {
        RgbImage::from_pixel(4, 2, image::Rgb(rgb))
    }

    #[test]
    fn srgb_profiles_leave_pixels_alone_and_wide_gamuts_are_converted() {
        let srgb = ColorProfile::new_srgb().encode().unwrap();
        let mut im = patch([200, 30, 40]);
        assert_eq!(convert_to_srgb(&mut im, &srgb), IccHandling::Srgb);
        assert_eq!(im, patch([200, 30, 40]));

        // Adobe RGB's green primary lies outside sRGB: a saturated Adobe green clips to sRGB
        // green, and a mid grey stays grey (both have the D65 white point).
        let adobe = ColorProfile::new_adobe_rgb().encode().unwrap();
        let mut green = patch([0, 255, 0]);
        assert!(matches!(convert_to_srgb(&mut green, &adobe), IccHandling::Converted { .. }));
        let p = green.get_pixel(0, 0).0;
        assert!(p[1] == 255 && p[0] < 40 && p[2] < 60, "Adobe RGB green -> sRGB {p:?}");
        // A less saturated Adobe red gets *more* saturated in sRGB numbers.
        let mut red = patch([180, 60, 60]);
        convert_to_srgb(&mut red, &adobe);
        let q = red.get_pixel(0, 0).0;
        assert!(q[0] > 180 && q[1] < 60, "Adobe RGB (180, 60, 60) -> sRGB {q:?}");
        let mut grey = patch([128, 128, 128]);
        convert_to_srgb(&mut grey, &adobe);
        let g = grey.get_pixel(0, 0).0;
        assert!(g.iter().all(|&c| (c as i16 - g[0] as i16).abs() <= 1), "grey stays neutral: {g:?}");
    }

    #[test]
    fn unusable_profiles_are_reported_not_applied() {
        let mut im = patch([10, 20, 30]);
        let h = convert_to_srgb(&mut im, b"not an icc profile at all, just text");
        assert!(matches!(h, IccHandling::NotApplied { .. }), "{h:?}");
        assert!(h.note().unwrap().contains("read as sRGB"));
        let gray = ColorProfile::new_gray_with_gamma(2.2).encode().unwrap();
        let h = convert_to_srgb(&mut im, &gray);
        assert!(matches!(h, IccHandling::NotApplied { .. }), "{h:?}");
        assert_eq!(im, patch([10, 20, 30]));
        assert_eq!(IccHandling::Untagged.note(), None);
    }
}
