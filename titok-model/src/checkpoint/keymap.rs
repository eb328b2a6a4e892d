//! Key-mapping tables between official PyTorch state-dict names and Burn module paths, one per
//! checkpoint family.
//!
//! The Burn modules mirror the official module tree, so most names are equal. Beyond the table,
//! burn-store's PyTorch adapters transpose `nn.Linear` weights (`[out, in]` <-> `[in, out]`) and
//! rename norm parameters (`weight`/`bias` <-> `gamma`/`beta`). Fused attention keeps the
//! official `in_proj_weight` `[3W, W]` (rows q | k | v) as is, and 1x1 convs used as linears
//! (`encoder.conv_out`, `decoder.ffn.*`) stay `Conv2d` modules with `[out, in, 1, 1]` weights,
//! so neither needs a rule.

/// One renaming rule: the dotted path segments `official` in a PyTorch key correspond to
/// `burn` in the Burn module path. Rules match whole segments anywhere in a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRule {
    /// Segments as they appear in the official state dict.
    pub official: &'static str,
    /// Segments as they appear in the Burn module path.
    pub burn: &'static str,
}

/// A declared key-mapping table of one checkpoint family.
#[derive(Debug, Clone, Copy)]
pub struct KeyMap {
    /// Family name for error messages.
    pub family: &'static str,
    /// The rules, applied in order.
    pub rules: &'static [KeyRule],
    /// Official keys that may be present and carry nothing the model needs (buffers).
    pub ignored: &'static [&'static str],
}

impl KeyMap {
    /// `(regex, replacement)` pairs turning official keys into Burn paths (for loading).
    pub fn import_patterns(&self) -> Vec<(String, String)> {
        self.rules.iter().map(|r| pattern(r.official, r.burn)).collect()
    }

    /// `(regex, replacement)` pairs turning Burn paths into official keys (for export).
    pub fn export_patterns(&self) -> Vec<(String, String)> {
        self.rules.iter().map(|r| pattern(r.burn, r.official)).collect()
    }

    /// The official key of a Burn path.
    pub fn to_official(&self, burn_path: &str) -> String {
        self.rules.iter().fold(burn_path.to_string(), |k, r| replace_segments(&k, r.burn, r.official))
    }

    /// Whether an official key is a known ignorable buffer.
    pub fn is_ignored(&self, key: &str) -> bool {
        self.ignored.iter().any(|s| key.ends_with(s))
    }
}

/// TiTok tokenizers (`modeling/titok.py::TiTok` state dict).
pub const TITOK: KeyMap = KeyMap {
    family: "TiTok tokenizer",
    rules: &[
        // The decoder head is `nn.Sequential(conv, tanh, conv)` (legacy) or `(conv,)`:
        // index 0 is the first 1x1 conv ...
        KeyRule { official: "decoder.ffn.0", burn: "decoder.ffn_in" },
        // ... and index 2 the second one (index 1 is the parameter-free tanh).
        KeyRule { official: "decoder.ffn.2", burn: "decoder.ffn_out" },
    ],
    ignored: &[],
};

/// The standalone MaskGIT-VQGAN (`PretrainedTokenizer`: `encoder.*`, `decoder.*`,
/// `quantize.embedding.weight`): the module tree is mirrored exactly.
pub const MASKGIT_VQGAN: KeyMap = KeyMap { family: "MaskGIT-VQGAN", rules: &[], ignored: &[] };

/// MaskGIT `ImageBert` generators (`modeling/maskgit.py::ImageBert`: an HF `BertModel` under
/// `model.*` with the `lm_head` attached to it). Embedding tables keep their `[vocab, D]`
/// layout; Linear weights are transposed by the adapters.
pub const IMAGEBERT: KeyMap = KeyMap {
    family: "ImageBert generator",
    rules: &[
        // HF names the self-attention sub-module `self`, a Rust keyword: `attention.self.query`
        // is `attention.self_attn.query` in Burn.
        KeyRule { official: "attention.self", burn: "attention.self_attn" },
        // HF capitalises its LayerNorm modules (`embeddings.LayerNorm`, `output.LayerNorm`).
        KeyRule { official: "LayerNorm", burn: "layer_norm" },
    ],
    // Non-persistent buffers that older `transformers` versions wrote into state dicts.
    ignored: &["embeddings.position_ids", "embeddings.token_type_ids"],
};

/// MaskGIT `UViTBert` generators (`modeling/maskgit.py::UViTBert`): the module tree, including
/// the raw `pos_embed` parameter and the bias-free `attn.qkv`, is mirrored exactly.
pub const UVITBERT: KeyMap = KeyMap { family: "UViTBert generator", rules: &[], ignored: &[] };

fn pattern(from: &str, to: &str) -> (String, String) {
    (format!(r"(^|\.){}(\.|$)", escape(from)), format!("${{1}}{to}${{2}}"))
}

fn escape(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_ascii_alphanumeric() || c == '_' { vec![c] } else { vec!['\\', c] }).collect()
}

fn replace_segments(key: &str, from: &str, to: &str) -> String {
    let padded = format!(".{key}.");
    let needle = format!(".{from}.");
    match padded.find(&needle) {
        Some(i) => {
            let out = format!("{}.{to}.{}", &padded[..i], &padded[i + needle.len()..]);
            out.trim_matches('.').to_string()
        }
        None => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_whole_segments_only() {
        assert_eq!(TITOK.to_official("decoder.ffn_in.weight"), "decoder.ffn.0.weight");
        assert_eq!(TITOK.to_official("decoder.ffn_out.bias"), "decoder.ffn.2.bias");
        assert_eq!(TITOK.to_official("xdecoder.ffn_in.weight"), "xdecoder.ffn_in.weight");
        let (re, rep) = &TITOK.import_patterns()[0];
        assert_eq!((re.as_str(), rep.as_str()), (r"(^|\.)decoder\.ffn\.0(\.|$)", "${1}decoder.ffn_in${2}"));
    }
}
