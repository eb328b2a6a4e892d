//! Losses: LPIPS perceptual loss and the adversarial (hinge, LeCam) losses.

pub mod gan;
pub mod perceptual;

pub use gan::{DiscriminatorLoss, GanLossConfig, LecamEma};
pub use titok_eval::{LossError, lpips};
pub use titok_eval::lpips::{Lpips, LpipsNet, LpipsOutput};
pub use perceptual::{PerceptualKind, PerceptualLoss};
