//! Losses: the pixel objective of the pixel modes, the perceptual losses (LPIPS, ConvNeXt) and
//! the adversarial (hinge, LeCam) losses.

pub mod gan;
pub mod perceptual;
pub mod pixel;

pub use gan::{DiscriminatorLoss, GanLossConfig, LecamEma};
pub use perceptual::{PerceptualKind, PerceptualLoss};
pub use pixel::{Adversarial, DiscriminatorStep, GeneratorLoss, PixelLoss, PixelLossConfig, perceptual_input};
pub use titok_eval::lpips::{Lpips, LpipsNet, LpipsOutput};
pub use titok_eval::{LossError, lpips};
