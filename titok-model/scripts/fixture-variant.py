#!/usr/bin/env python3
"""Derive a variant of a golden fixture set, to check that the parity suites run on any set
the official scripts write (other folder names, counts and sizes, fewer optional tensors).

    python3 -m venv venv && venv/bin/pip install numpy scipy safetensors
    venv/bin/python titok-model/scripts/fixture-variant.py ../shared/golden /tmp/golden-variant
    TITOK_GOLDEN_DIR=/tmp/golden-variant cargo test --release --workspace

Every change is one the official scripts could have made themselves, and every stored value
stays a true output of the official code:
- folders renamed (same kind prefix, other suffix; no `_stage1`/`_stage2` in the names) and
  the single-stage VQ fixture stored twice;
- batch-wise tensors of the tokenizer fixtures cut to the first image (batch means dropped);
- optional intermediates removed (encoder/decoder internals, pool/stage outputs, means, the
  Inception network input, the generator model inputs);
- LPIPS kept at the smallest size only, the discriminator without its larger size;
- FID feature sets cut to 150 and 120 rows, `fid_a_b` recomputed as the official script does
  (float64 statistics, scipy.linalg.sqrtm, real part); 2 of the 4 Inception images kept.
The fixtures themselves are never copied into the repository.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import scipy.linalg
from safetensors.numpy import load_file, save_file

RENAMES = {
    "titok_legacy_": "titok_legacy_variant_{i}",
    "titok_vq_": "titok_vq_variant_{i}",
    "titok_vae_": "titok_vae_variant_{i}",
    "maskgit_vqgan_": "maskgit_vqgan_variant_{i}",
    "imagebert_": "imagebert_variant_{i}",
    "uvitbert_": "uvitbert_variant_{i}",
    "discriminator_": "discriminator_variant_{i}",
    "mlm_loss": "mlm_loss_variant_{i}",
    "lpips": "lpips_variant_{i}",
    "fid": "fid_variant_{i}",
}
TOKENIZER_INTERMEDIATES = (
    "enc_ln_post", "z_pre_quant", "dec_ln_post", "dec_ln_post_mode", "soft_codes",
    "dec_pixel_shuffled", "enc_mid_out", "dec_mid_out", "encoder_out", "quantized",
    "posterior_std", "decoded_clamped", "decoded_mode_clamped",
)


def fid(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sa @ sb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean))


def tokenizer(io, legacy_stage2):
    batch = io["input"].shape[0]
    out = {}
    for name, t in io.items():
        if name in TOKENIZER_INTERMEDIATES or name.startswith(("enc_down", "dec_up")):
            continue
        if legacy_stage2 and name == "decoder_logits":
            continue  # an intermediate of stage 2 (the output is `decoded`)
        if t.ndim == 0:
            continue  # batch means change with the batch
        out[name] = t[:1].copy() if t.shape[0] == batch else t
    return out


def main(src, dst):
    src, dst = Path(src), Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    count = {}
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        prefix = next((p for p in RENAMES if folder.name.startswith(p)), None)
        if prefix is None:
            continue
        copies = 2 if prefix == "titok_vq_" else 1
        for _ in range(copies):
            count[prefix] = count.get(prefix, 0) + 1
            out = dst / RENAMES[prefix].format(i=count[prefix])
            shutil.copytree(folder, out)
            io = load_file(str(out / "io.safetensors"))
            if prefix in ("titok_legacy_", "titok_vq_", "titok_vae_", "maskgit_vqgan_"):
                stage2 = False
                if prefix == "titok_legacy_":
                    cfg = json.loads((out / "config.json").read_text())
                    stage2 = cfg["model"]["vq_model"].get("finetune_decoder", True)
                io = tokenizer(io, stage2)
            elif prefix in ("imagebert_", "uvitbert_"):
                io = {k: v for k, v in io.items() if not k.startswith("full_input_ids_")}
            elif prefix == "discriminator_":
                io = {k: v for k, v in io.items() if "_160" not in k and not k.endswith(("_stage2_out", "_pool_out"))}
            elif prefix == "lpips":
                io = {k: v for k, v in io.items() if "_256" not in k}
            elif prefix == "fid":
                a = io["set_a_features"][:150].astype(np.float64)
                b = io["set_b_features"][:120].astype(np.float64)
                io["set_a_features"] = io["set_a_features"][:150].copy()
                io["set_b_features"] = io["set_b_features"][:120].copy()
                io["fid_a_b"] = np.array(fid(a, b), dtype=np.float64)
                io["images_u8"] = io["images_u8"][:2].copy()
                io["features_img2"] = io.pop("features_img4")[:2].copy()
                for k in ("mu_a", "mu_b", "inception_input_299_img0"):
                    io.pop(k)
            save_file({k: v if v.ndim == 0 else np.ascontiguousarray(v) for k, v in io.items()}, str(out / "io.safetensors"))
            print(f"{folder.name} -> {out.name}: {len(io)} tensors")


if __name__ == "__main__":
    main(*sys.argv[1:3])
