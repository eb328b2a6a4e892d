//! Schedules of MaskGIT sampling and training: how many tokens stay masked after each step
//! ([`MaskSchedule`]), the classifier-free guidance weight per step ([`GuidanceDecay`]), the
//! annealed Gumbel and softmax temperatures, and the training mask ratio.
//!
//! Source: `modeling/maskgit.py::ImageBert.{generate, masking_input_tokens}` (official TiTok),
//! `maskgit/libml/mask_schedule.py` (google-research/maskgit) for the cosine / linear /
//! square-root schedules; REFERENCE §7e, §8.

use std::f64::consts::FRAC_PI_2;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TitokError};

/// Fraction of the image tokens that stays masked after a sampling step, as a function of the
/// progress `r = (step + 1) / steps` in `(0, 1]`. Every schedule goes from 1 at `r = 0` to 0 at
/// `r = 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaskSchedule {
    /// `arccos(r) / (π/2)`: the official TiTok schedule (sampling and training).
    #[default]
    Arccos,
    /// `cos(π/2 · r)`: the original MaskGIT schedule.
    Cosine,
    /// `1 − r`.
    Linear,
    /// `1 − sqrt(r)`.
    SquareRoot,
}

impl MaskSchedule {
    /// The masked fraction at progress `r` (clamped to `[0, 1]`), in `[0, 1]`.
    pub fn mask_ratio(self, r: f64) -> f64 {
        let r = r.clamp(0.0, 1.0);
        match self {
            Self::Arccos => r.acos() / FRAC_PI_2,
            Self::Cosine => (FRAC_PI_2 * r).cos(),
            Self::Linear => 1.0 - r,
            Self::SquareRoot => 1.0 - r.sqrt(),
        }
        .clamp(0.0, 1.0)
    }

    /// Tokens to re-mask after `step` (0-based) of `num_steps` for a sequence of `seq_len`
    /// tokens, before the sampler's `[1, masked − 1]` clamp: `floor(seq_len · ratio((step+1)/T))`
    /// computed in f64 as the official code does (fixture `gen_mask_len_unclamped_*`).
    pub fn mask_len(self, seq_len: usize, step: usize, num_steps: usize) -> usize {
        let r = (step + 1) as f64 / num_steps as f64;
        (seq_len as f64 * self.mask_ratio(r)).floor() as usize
    }
}

/// Training mask ratio of the official `masking_input_tokens` for a uniform draw `t` in
/// `[0, 1)`: `clamp(arccos(t) / (π/2), 1e-6, 1)`, computed in f32 like the official code.
pub fn training_mask_ratio(t: f32) -> f32 {
    (t.acos() / (std::f64::consts::PI * 0.5) as f32).clamp(1e-6, 1.0)
}

/// Number of tokens the official training masking hides for draw `t`:
/// `max(1, round_half_even(seq_len · ratio))` in f32 (PyTorch `round` is half-to-even).
pub fn training_num_masked(seq_len: usize, t: f32) -> usize {
    ((seq_len as f32 * training_mask_ratio(t)).round_ties_even().max(1.0)) as usize
}

/// How the classifier-free guidance weight evolves over the sampling steps
/// (`guidance_decay` of the official config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuidanceDecay {
    /// Weight `g` every step; logits = `c + g·(c − u)`.
    #[default]
    Constant,
    /// Weight `g · s/T` at step `s` (MUSE); step 0 has weight 0, i.e. a single conditional
    /// pass; logits = `c + w·(c − u)`.
    Linear,
    /// MDT's power-cosine: `w = (g − 1)·(1 − cos(π·(s/T)^pow))/2 + 1`; logits =
    /// `u + w·(c − u)` (note: around the unconditional logits, unlike the other two).
    PowerCosine,
}

impl GuidanceDecay {
    /// The official name (`constant`, `linear`, `power-cosine`).
    pub fn official_name(self) -> &'static str {
        match self {
            Self::Constant => "constant",
            Self::Linear => "linear",
            Self::PowerCosine => "power-cosine",
        }
    }

    /// Parses an official name.
    ///
    /// # Errors
    /// [`TitokError::Config`] for an unknown name.
    pub fn from_official(name: &str) -> Result<Self> {
        match name {
            "constant" => Ok(Self::Constant),
            "linear" => Ok(Self::Linear),
            "power-cosine" => Ok(Self::PowerCosine),
            other => Err(TitokError::Config(format!(
                "unknown guidance_decay `{other}` (expected constant, linear or power-cosine)"
            ))),
        }
    }
}

/// The guidance of one sampling step: `logits = base + weight · (cond − uncond)`, where
/// `base` is the conditional logits, or the unconditional ones for
/// [`GuidanceDecay::PowerCosine`]. A weight of exactly 0 means a single conditional pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepGuidance {
    /// The weight `w` (0 ⇒ no unconditional pass).
    pub weight: f64,
    /// Whether the guided logits are built around the unconditional logits.
    pub around_uncond: bool,
}

impl StepGuidance {
    /// Whether this step runs the unconditional pass.
    pub fn needs_uncond(&self) -> bool {
        self.weight != 0.0
    }
}

/// Settings of the MaskGIT sampler (`ImageBert.generate` arguments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerConfig {
    /// Number of parallel decoding steps `T` (`num_sample_steps`), at least 1.
    pub num_steps: usize,
    /// Gumbel temperature τ (`randomize_temperature`), annealed to `τ·(1 − r)`; 0 is greedy.
    pub randomize_temperature: f64,
    /// Guidance scale `g` (`guidance_scale`); 0 disables guidance for constant / linear.
    pub guidance_scale: f64,
    /// Guidance schedule (`guidance_decay`).
    pub guidance_decay: GuidanceDecay,
    /// Exponent of the power-cosine schedule (`guidance_scale_pow`, 3.0).
    pub guidance_scale_pow: f64,
    /// Divide the logits by `0.5 + 0.8·(1 − r)` (1.2 → 0.5); the official ImageNet sampling
    /// script always turns it on.
    pub softmax_temperature_annealing: bool,
    /// Mask schedule (the official code uses arccos).
    pub mask_schedule: MaskSchedule,
}

impl Default for SamplerConfig {
    /// The defaults of the official `generate` signature: 8 steps, τ 4.5, guidance 3.0
    /// constant, power 3.0, no softmax annealing, arccos.
    fn default() -> Self {
        Self {
            num_steps: 8,
            randomize_temperature: 4.5,
            guidance_scale: 3.0,
            guidance_decay: GuidanceDecay::Constant,
            guidance_scale_pow: 3.0,
            softmax_temperature_annealing: false,
            mask_schedule: MaskSchedule::Arccos,
        }
    }
}

impl SamplerConfig {
    fn eval(num_steps: usize, tau: f64, scale: f64, decay: GuidanceDecay) -> Self {
        Self {
            num_steps,
            randomize_temperature: tau,
            guidance_scale: scale,
            guidance_decay: decay,
            softmax_temperature_annealing: true,
            ..Self::default()
        }
    }

    /// The TiTok-L-32 eval setting (`configs/infer/TiTok/titok_l32.yaml` + softmax annealing):
    /// 8 steps, τ 9.5, guidance 4.5 linear.
    pub fn l32() -> Self {
        Self::eval(8, 9.5, 4.5, GuidanceDecay::Linear)
    }

    /// The TiTok-B-64 eval setting: 8 steps, τ 11.0, guidance 3.0 linear.
    pub fn b64() -> Self {
        Self::eval(8, 11.0, 3.0, GuidanceDecay::Linear)
    }

    /// The TiTok-S-128 eval setting: 64 steps, τ 2.8, guidance 6.9 power-cosine (pow 3).
    pub fn s128() -> Self {
        Self::eval(64, 2.8, 6.9, GuidanceDecay::PowerCosine)
    }

    /// Progress `r = (step + 1) / T` after `step`.
    pub fn progress(&self, step: usize) -> f64 {
        (step + 1) as f64 / self.num_steps as f64
    }

    /// Gumbel temperature of `step`: `τ · (1 − r)` (0 on the last step).
    pub fn gumbel_temperature(&self, step: usize) -> f64 {
        self.randomize_temperature * (1.0 - self.progress(step))
    }

    /// The divisor of the logits at `step` when softmax annealing is on
    /// (`0.5 + 0.8·(1 − r)`), else `None`.
    pub fn softmax_temperature(&self, step: usize) -> Option<f64> {
        self.softmax_temperature_annealing.then(|| 0.5 + 0.8 * (1.0 - self.progress(step)))
    }

    /// The guidance of `step`, exactly as the official `generate` computes it (the power-cosine
    /// weight in f32 like the official torch code).
    pub fn guidance(&self, step: usize) -> StepGuidance {
        let g = self.guidance_scale;
        let t = self.num_steps as f64;
        match self.guidance_decay {
            GuidanceDecay::Constant => StepGuidance { weight: g, around_uncond: false },
            GuidanceDecay::Linear => StepGuidance { weight: step as f64 / t * g, around_uncond: false },
            GuidanceDecay::PowerCosine => {
                let x = ((step as f64 / t) as f32).powf(self.guidance_scale_pow as f32);
                let scale_step = (1.0 - (x * std::f32::consts::PI).cos()) * 0.5;
                let w = (g as f32 - 1.0) * scale_step + 1.0;
                StepGuidance { weight: w as f64, around_uncond: true }
            }
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`TitokError::Config`] for zero steps or non-finite / negative temperatures.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(TitokError::Config(format!("sampler: {m}")));
        if self.num_steps == 0 {
            return err("num_steps must be at least 1".into());
        }
        if !self.randomize_temperature.is_finite() || self.randomize_temperature < 0.0 {
            return err(format!("randomize_temperature {} must be finite and >= 0", self.randomize_temperature));
        }
        if !self.guidance_scale.is_finite() || !self.guidance_scale_pow.is_finite() {
            return err("guidance_scale and guidance_scale_pow must be finite".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_go_from_one_to_zero_and_decrease() {
        for s in [MaskSchedule::Arccos, MaskSchedule::Cosine, MaskSchedule::Linear, MaskSchedule::SquareRoot] {
            assert!((s.mask_ratio(0.0) - 1.0).abs() < 1e-12, "{s:?}");
            assert!(s.mask_ratio(1.0).abs() < 1e-12, "{s:?}");
            let v: Vec<f64> = (0..=10).map(|i| s.mask_ratio(i as f64 / 10.0)).collect();
            assert!(v.windows(2).all(|w| w[1] < w[0]), "{s:?}: {v:?}");
        }
        assert!((MaskSchedule::Cosine.mask_ratio(0.5) - 0.5f64.sqrt()).abs() < 1e-12);
        assert!((MaskSchedule::Arccos.mask_ratio(0.5) - 2.0 / 3.0).abs() < 1e-12);
        assert!((MaskSchedule::SquareRoot.mask_ratio(0.25) - 0.5).abs() < 1e-12);
        // 32 tokens, 8 steps: the official arccos lengths.
        let lens: Vec<usize> = (0..8).map(|s| MaskSchedule::Arccos.mask_len(32, s, 8)).collect();
        assert_eq!(lens, vec![29, 26, 24, 21, 18, 14, 10, 0]);
    }

    #[test]
    fn guidance_follows_the_official_schedules() {
        let mut c = SamplerConfig { guidance_scale: 3.0, num_steps: 8, ..SamplerConfig::default() };
        assert_eq!(c.guidance(0).weight, 3.0);
        c.guidance_decay = GuidanceDecay::Linear;
        assert!(!c.guidance(0).needs_uncond());
        assert!((c.guidance(4).weight - 1.5).abs() < 1e-12);
        c.guidance_decay = GuidanceDecay::PowerCosine;
        let g0 = c.guidance(0);
        assert!(g0.around_uncond && g0.needs_uncond() && (g0.weight - 1.0).abs() < 1e-7);
        // (3 - 1)·(1 − cos(π·(4/8)^3))/2 + 1
        let expect = 2.0 * (1.0 - (std::f64::consts::PI * 0.125).cos()) / 2.0 + 1.0;
        assert!((c.guidance(4).weight - expect).abs() < 1e-6);
        assert_eq!(GuidanceDecay::from_official("power-cosine").unwrap(), GuidanceDecay::PowerCosine);
        assert!(GuidanceDecay::from_official("cosine").is_err());
    }

    #[test]
    fn temperatures_anneal() {
        let c = SamplerConfig::l32();
        assert!((c.gumbel_temperature(0) - 9.5 * 7.0 / 8.0).abs() < 1e-12);
        assert_eq!(c.gumbel_temperature(7), 0.0);
        assert!((c.softmax_temperature(7).unwrap() - 0.5).abs() < 1e-12);
        assert!((c.softmax_temperature(0).unwrap() - (0.5 + 0.8 * 0.875)).abs() < 1e-12);
        assert_eq!(SamplerConfig::default().softmax_temperature(0), None);
    }

    #[test]
    fn training_masking_counts() {
        assert_eq!(training_num_masked(32, 0.0), 32);
        assert_eq!(training_num_masked(32, 0.999_999), 1);
        assert!((training_mask_ratio(1.0) - 1e-6).abs() < 1e-9);
        // 8 · arccos(0.5)/(π/2) = 5.33 -> 5
        assert_eq!(training_num_masked(8, 0.5), 5);
    }
}
