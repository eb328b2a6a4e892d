//! The MaskBit-style blur-pool discriminator of the official stage-2 recipe.
