//! Losses: LPIPS perceptual loss and the adversarial (hinge, LeCam) losses.

pub mod gan;
pub mod perceptual;

pub use gan::{DiscriminatorLoss, GanLossConfig, LecamEma};
pub use perceptual::{PerceptualKind, PerceptualLoss};
pub use titok_eval::lpips::{Lpips, LpipsNet, LpipsOutput};
pub use titok_eval::{LossError, lpips};
