//! Losses: LPIPS perceptual loss and the adversarial (hinge, LeCam) losses.
