//! Learning-rate schedule of the official recipes: linear warm-up, then cosine decay to `end_lr`.
//!
//! Source: `utils/lr_schedulers.py` (`get_scheduler("cosine", ...)`) of the official code;
//! REFERENCE §7.

use burn::lr_scheduler::{LrScheduler, LrSchedulerRecord};

/// Warm-up + cosine schedule. Step `t` (1-based, counted by [`LrScheduler::step`]) gives
/// `base·t/warmup` during warm-up, then `end + (base - end)·½(1 + cos(π·p))` with
/// `p = (t - warmup) / (total - warmup)` clamped to `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub base_lr: f64,
    /// Final learning rate.
    pub end_lr: f64,
    /// Warm-up steps.
    pub warmup_steps: usize,
    /// Total steps of the run.
    pub total_steps: usize,
    /// Steps taken so far.
    pub step: usize,
}

impl WarmupCosine {
    /// A schedule at step 0.
    pub fn new(base_lr: f64, end_lr: f64, warmup_steps: usize, total_steps: usize) -> Self {
        Self { base_lr, end_lr, warmup_steps, total_steps, step: 0 }
    }

    /// The learning rate at (1-based) step `t`.
    pub fn lr_at(&self, t: usize) -> f64 {
        if self.warmup_steps > 0 && t <= self.warmup_steps {
            return self.base_lr * t as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let p = ((t - self.warmup_steps.min(t)) as f64 / span).clamp(0.0, 1.0);
        self.end_lr + (self.base_lr - self.end_lr) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
    }
}

impl LrScheduler for WarmupCosine {
    fn step(&mut self) -> f64 {
        self.step += 1;
        self.lr_at(self.step)
    }

    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar("step", self.step as u64)
    }

    fn load_record(&mut self, record: LrSchedulerRecord) {
        if let Some(step) = record.scalar::<u64>("step") {
            self.step = step as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_end_lr() {
        let mut s = WarmupCosine::new(1e-4, 1e-5, 10, 110);
        let lrs: Vec<f64> = (0..110).map(|_| s.step()).collect();
        assert!((lrs[0] - 1e-5).abs() < 1e-12, "step 1 of 10 warm-up = base/10");
        assert!((lrs[9] - 1e-4).abs() < 1e-12, "peak at the end of warm-up");
        assert!((lrs[59] - 0.5 * (1e-4 + 1e-5)).abs() < 1e-12, "half-way: mean of base and end");
        assert!((lrs[109] - 1e-5).abs() < 1e-12, "ends at end_lr");
        assert!(lrs.windows(2).skip(10).all(|w| w[1] <= w[0] + 1e-18), "monotone decay after warm-up");
        let mut r = WarmupCosine::new(1e-4, 1e-5, 10, 110);
        r.load_record(s.to_record());
        assert_eq!(r.step, 110);
    }
}
