//! End-to-end tests of the `titok` binary: each test runs the compiled CLI with
//! `std::process::Command` on the committed photos (`assets/photos/`), the embedded default
//! models and the golden fixtures (`../shared/golden`, or `TITOK_GOLDEN_DIR`), always with
//! `--device cpu`.
//!
//! The evaluation tests need the LPIPS and FID InceptionV3 weights of `../shared/weights`
//! (found by the binary itself, see `titok reconstruct --help`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::module::Module;
use burn::tensor::Device;
use image::RgbImage;
use serde_json::Value;
use titok_data::Transform;
use titok_data::image_io::load_rgb;
use titok_eval::npz::{NpyData, decode_npy};
use titok_eval::read_npz;
use titok_model::TitokConfig;
use titok_model::checkpoint::{HfConfig, load_generator, load_titok};
use titok_model::golden::{FixtureKind, IoTensors};

// ---------------------------------------------------------------------------------------------
// Helpers

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn photo(name: &str) -> PathBuf {
    workspace().join("assets/photos").join(name)
}

/// A file of the shared weights folder: `$TITOK_SHARED_DIR/weights`, else `../shared/weights`
/// (where the binary looks too).
fn shared_weights(file: &str) -> PathBuf {
    titok_model::golden::shared_weights(file)
}

/// A fresh scratch folder for one test (its path, and the `tempfile` guard that removes it).
struct Scratch(PathBuf, #[allow(dead_code, reason = "removes the folder when dropped")] tempfile::TempDir);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(&format!("titok-cli-test-{name}-")).tempdir().unwrap();
        Self(dir.path().to_path_buf(), dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A sub-folder holding three of the committed photos.
    fn photo_folder(&self, folder: &str) {
        std::fs::create_dir_all(self.path(folder)).unwrap();
        for name in ["chelsea.png", "coffee.png", "rocket.png"] {
            std::fs::copy(photo(name), self.path(&format!("{folder}/{name}"))).unwrap();
        }
    }
}

/// Runs `titok --device cpu ARGS...` in `cwd`.
fn titok(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_titok"))
        .current_dir(cwd)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .env_remove("TITOK_LPIPS_WEIGHTS")
        .env_remove("TITOK_INCEPTION_WEIGHTS")
        .arg("--device")
        .arg("cpu")
        .args(args)
        .output()
        .expect("the titok binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "titok failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts failure and returns stderr.
#[track_caller]
fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "titok should have failed:\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The embedded default tokenizer's configuration (read from the asset it embeds).
fn default_config() -> TitokConfig {
    HfConfig::from_dir(&workspace().join("assets/models/titok-cifar10")).unwrap().titok().unwrap()
}

/// `(file, tokens)` of a JSON-lines token file.
fn read_jsonl(path: &Path) -> Vec<(String, Vec<i64>)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let tokens = v["tokens"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap()).collect();
            (v["file"].as_str().unwrap().to_string(), tokens)
        })
        .collect()
}

fn png(path: &Path) -> RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

/// The lines of `stderr` that report an error.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error: ")).collect()
}

/// PSNR in dB of two 8-bit images (data range 255), in f64.
fn psnr_u8(a: &RgbImage, b: &RgbImage) -> f64 {
    let mse = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>()
        / a.as_raw().len() as f64;
    10.0 * (255.0f64.powi(2) / mse).log10()
}

/// A PNG chunk: length, type, data, CRC.
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new(); // CRC-32 (IEEE) of type + data
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out
}

/// A decompression bomb: a valid PNG header declaring 100,000 x 100,000 RGB pixels.
fn bomb_png() -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IEND", &[]));
    png
}

fn jpeg_bytes(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
    bytes
}

// ---------------------------------------------------------------------------------------------
// Tokenize, detokenize, reconstruct

/// `tokenize` then `detokenize` gives exactly the pixels of `reconstruct`; `reconstruct` prints
/// the token count, the bytes of tokens vs pixels and the PSNR of what it wrote.
#[test]
fn tokenize_then_detokenize_equals_reconstruct() {
    let t = Scratch::new("roundtrip");
    let c = default_config();
    let (k, n, size) = (c.num_latent_tokens, c.codebook_size, c.image_size);
    let inputs = [photo("chelsea.png"), photo("coffee.png")];
    let mut args = vec!["tokenize"];
    args.extend(inputs.iter().map(|p| s(p)));
    args.extend(["-o", "tokens.json"]);
    let out = titok(&t.0, &args);
    ok(&out);
    assert!(text(&out.stderr).contains("device: cpu"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("451x300 -> resized to"), "the transform is stated: {}", text(&out.stderr));
    let rows = read_jsonl(&t.path("tokens.json"));
    assert_eq!(rows.len(), 2);
    for ((file, tokens), input) in rows.iter().zip(&inputs) {
        assert_eq!(file, s(input));
        assert_eq!(tokens.len(), k);
        assert!(tokens.iter().all(|&id| (0..n as i64).contains(&id)), "{tokens:?}");
    }

    ok(&titok(&t.0, &["detokenize", "tokens.json", "-o", "detok"]));
    let mut args = vec!["reconstruct"];
    args.extend(inputs.iter().map(|p| s(p)));
    args.extend(["-o", "recon"]);
    let stdout = ok(&titok(&t.0, &args));

    let bits = (n as f64).log2().ceil() as usize;
    let expect = format!(
        "{k} tokens per image, {bits} bits each = {} bytes of tokens vs {} bytes of pixels",
        (k * bits) as f64 / 8.0,
        3 * size * size
    );
    assert!(stdout.contains(&expect), "missing `{expect}` in:\n{stdout}");
    for stem in ["chelsea", "coffee"] {
        let detok = png(&t.path(&format!("detok/{stem}.png")));
        let recon = png(&t.path(&format!("recon/{stem}.recon.png")));
        assert_eq!(detok.dimensions(), (size as u32, size as u32));
        assert!(detok == recon, "{stem}: detokenize and reconstruct differ");
        // The side-by-side image: input | reconstruction, 1 px frame, enlarged to 128 px cells.
        let compare = png(&t.path(&format!("recon/{stem}.compare.png")));
        let zoom = (128 / size).max(1) as u32;
        assert_eq!(compare.dimensions(), ((2 * size as u32 + 3) * zoom, (size as u32 + 2) * zoom));
    }
    // The printed PSNR is that of the written reconstruction against the centre-cropped input.
    let crop = Transform::eval(size as u32).apply(&load_rgb(&inputs[0]).unwrap(), 0, 0).unwrap();
    let want = psnr_u8(&crop, &png(&t.path("recon/chelsea.recon.png")));
    let line = stdout.lines().skip_while(|l| !l.contains("chelsea.png")).nth(1).unwrap();
    let printed: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((printed - want).abs() < 0.006, "printed PSNR {printed}, recomputed {want}: {line}");
    assert!(line.contains("SSIM ") && line.contains("LPIPS "), "{line}");
    if shared_weights("lpips_alexnet.safetensors").is_file() {
        let lpips: f64 = line.rsplit(' ').next().unwrap().parse().expect("an LPIPS value");
        assert!(lpips > 0.0 && lpips < 2.0, "{line}");
    } else {
        assert!(line.ends_with("LPIPS n/a (no LPIPS weights)"), "{line}");
    }
}

/// Token files round-trip: JSON lines and `.npy` (+ names) hold the same ids, stdout matches
/// the file, and both detokenize to the same images.
#[test]
fn token_files_round_trip_as_json_lines_and_npy() {
    let t = Scratch::new("tokenfiles");
    std::fs::create_dir_all(t.path("in/sub")).unwrap();
    for (name, dst) in
        [("rocket.png", "in/rocket.png"), ("flower.png", "in/sub/flower.png"), ("china.png", "in/china.png")]
    {
        std::fs::copy(photo(name), t.path(dst)).unwrap();
    }
    std::fs::write(t.path("in/readme.txt"), "not an image: skipped inside folders").unwrap();
    ok(&titok(&t.0, &["tokenize", "in", "-o", "a.json"]));
    ok(&titok(&t.0, &["tokenize", "in", "-o", "b.npy"]));
    let stdout = ok(&titok(&t.0, &["tokenize", "in"]));
    assert_eq!(stdout, std::fs::read_to_string(t.path("a.json")).unwrap());

    let rows = read_jsonl(&t.path("a.json"));
    let names: Vec<&str> = rows.iter().map(|(f, _)| f.as_str()).collect();
    // Folders are searched recursively, in sorted order.
    assert_eq!(names, ["in/china.png", "in/rocket.png", "in/sub/flower.png"]);
    let array = decode_npy(&std::fs::read(t.path("b.npy")).unwrap()).unwrap();
    let k = default_config().num_latent_tokens;
    assert_eq!(array.shape, [3, k]);
    let NpyData::I64(ids) = array.data else { panic!("expected int64 ids, got {:?}", array.data.descr()) };
    let flat: Vec<i64> = rows.iter().flat_map(|(_, t)| t.iter().copied()).collect();
    assert_eq!(ids, flat);
    let listed = std::fs::read_to_string(t.path("b.files.txt")).unwrap();
    assert_eq!(listed.lines().collect::<Vec<_>>(), names);

    ok(&titok(&t.0, &["detokenize", "a.json", "-o", "from_json"]));
    ok(&titok(&t.0, &["detokenize", "b.npy", "-o", "from_npy"]));
    for stem in ["china", "rocket", "flower"] {
        let a = std::fs::read(t.path(&format!("from_json/{stem}.png"))).unwrap();
        let b = std::fs::read(t.path(&format!("from_npy/{stem}.png"))).unwrap();
        assert_eq!(a, b, "{stem}");
    }
    let err = fails(&titok(&t.0, &["tokenize", "in", "--format", "npy"]));
    assert!(err.contains("needs an output file"), "{err}");
    std::fs::create_dir_all(t.path("a_folder")).unwrap();
    let err = fails(&titok(&t.0, &["tokenize", "in", "-o", "a_folder"]));
    assert!(err.contains("a folder; tokenize writes one file"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Generation

fn read_rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The same seed gives the same grid and ids; another seed other ids; the ids file holds one
/// row per sample with its class and decodes with `detokenize`; inpainting keeps the unmasked
/// tokens.
#[test]
fn generate_with_a_fixed_seed_is_reproducible() {
    let t = Scratch::new("generate");
    let c = default_config();
    let args = |seed: &str, out: &str| {
        vec!["generate", "--class", "cat", "--class", "1", "--num", "3", "--seed", seed, "-o", out]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| titok(&t.0, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = ok(&run(args("7", "a.png")));
    assert!(stdout.contains("generated 6 images of classes 3 (cat), 1 (automobile)"), "{stdout}");
    ok(&run(args("7", "b.png")));
    ok(&run(args("8", "c.png")));
    assert_eq!(std::fs::read(t.path("a.png")).unwrap(), std::fs::read(t.path("b.png")).unwrap());
    let (a, b, other) = (read_rows(&t.path("a.json")), read_rows(&t.path("b.json")), read_rows(&t.path("c.json")));
    assert_eq!(a, b);
    assert_ne!(
        a.iter().map(|r| &r["tokens"]).collect::<Vec<_>>(),
        other.iter().map(|r| &r["tokens"]).collect::<Vec<_>>()
    );
    let classes: Vec<i64> = a.iter().map(|r| r["class"].as_i64().unwrap()).collect();
    assert_eq!(classes, [3, 3, 3, 1, 1, 1]);
    assert_eq!(a[0]["class_name"], "cat");
    for r in &a {
        let ids = r["tokens"].as_array().unwrap();
        assert_eq!(ids.len(), c.num_latent_tokens);
        assert!(ids.iter().all(|v| (0..c.codebook_size as i64).contains(&v.as_i64().unwrap())));
    }
    // The grid: 3 columns x 2 rows of 128 px cells with 2 px padding.
    let zoom = (128 / c.image_size).max(1) as u32;
    let cell = c.image_size as u32 * zoom;
    assert_eq!(png(&t.path("a.png")).dimensions(), (3 * (cell + 2) + 2, 2 * (cell + 2) + 2));
    let out = ok(&titok(&t.0, &["detokenize", "a.json", "-o", "samples"]));
    assert_eq!(out.lines().count(), 6, "{out}");

    // Inpainting: positions 0-15 are regenerated, the rest kept from the photo's tokens.
    let chelsea = photo("chelsea.png");
    ok(&titok(
        &t.0,
        &["generate", "--class", "cat", "--inpaint", s(&chelsea), "--mask", "0-15", "--num", "2", "-o", "inpaint.png"],
    ));
    let rows = read_rows(&t.path("inpaint.json"));
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["file"], "chelsea-original");
    let original = rows[0]["tokens"].as_array().unwrap();
    for r in &rows[1..] {
        assert_eq!(r["tokens"].as_array().unwrap()[16..], original[16..]);
    }
    let err = fails(&titok(&t.0, &["generate", "--class", "unicorn", "-o", "x.png"]));
    assert!(err.contains("unknown class `unicorn`"), "{err}");
    let err =
        fails(&titok(&t.0, &["generate", "--class", "cat", "--inpaint", s(&chelsea), "--mask", "0-99", "-o", "x.png"]));
    assert!(err.contains("reaches position 99"), "{err}");
    let err = fails(&titok(&t.0, &["generate", "--class", "cat", "-o", "grid.jpg"]));
    assert!(err.contains("must name a .png file"), "{err}");
    assert!(!t.path("grid.jpg").exists());
}

// ---------------------------------------------------------------------------------------------
// Bad input

/// Every kind of bad input gives a one-line error naming the file, the other files are still
/// processed (exit 0), and the exit status is non-zero only when nothing succeeded.
#[test]
fn bad_inputs_are_reported_and_the_batch_continues() {
    let t = Scratch::new("bad");
    let good = load_rgb(&photo("chelsea.png")).unwrap();
    let jpeg = jpeg_bytes(&good);
    let png_bytes = std::fs::read(photo("coffee.png")).unwrap();
    std::fs::copy(photo("chelsea.png"), t.path("good.png")).unwrap();
    let bad: [(&str, Vec<u8>, &str); 6] = [
        ("corrupt.png", [b"\x89PNG\r\n\x1a\n".as_slice(), &[0x5a; 64]].concat(), "cannot decode"),
        ("empty.jpg", Vec::new(), "empty file"),
        ("truncated.jpg", jpeg[..jpeg.len() / 2].to_vec(), "truncated JPEG"),
        ("truncated.png", png_bytes[..png_bytes.len() / 2].to_vec(), "cannot decode"),
        ("notes.txt", b"a text file, not an image\n".to_vec(), "unknown image format"),
        ("bomb.png", bomb_png(), "exceeds the decoding limits"),
    ];
    for (name, bytes, _) in &bad {
        std::fs::write(t.path(name), bytes).unwrap();
    }
    let mut args = vec!["tokenize"];
    args.extend(bad.iter().map(|(n, _, _)| *n));
    args.extend(["missing.png", "good.png", "-o", "tokens.json"]);
    let out = titok(&t.0, &args);
    ok(&out);
    let stderr = text(&out.stderr);
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), bad.len() + 1, "{stderr}");
    for (name, _, reason) in &bad {
        assert!(
            errors.iter().any(|l| l.contains(name) && l.contains(reason)),
            "no `{name}: ... {reason}` in:\n{stderr}"
        );
    }
    assert!(errors.iter().any(|l| l.contains("missing.png") && l.contains("no such file")), "{stderr}");
    let rows = read_jsonl(&t.path("tokens.json"));
    assert_eq!(rows.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["good.png"]);

    // Nothing usable: non-zero exit, no output written.
    let err = fails(&titok(&t.0, &["tokenize", "bomb.png", "empty.jpg", "notes.txt", "-o", "none.json"]));
    assert_eq!(error_lines(&err).len(), 3, "{err}");
    assert!(!t.path("none.json").exists());

    // reconstruct continues past bad files the same way.
    let out = titok(&t.0, &["reconstruct", "truncated.jpg", "bomb.png", "good.png", "-o", "recon"]);
    ok(&out);
    assert_eq!(error_lines(&text(&out.stderr)).len(), 2);
    assert!(t.path("recon/good.recon.png").is_file());

    // Token ids that do not fit the tokenizer.
    let c = default_config();
    let (k, n) = (c.num_latent_tokens, c.codebook_size as i64);
    let row = |file: &str, ids: Vec<i64>| serde_json::json!({ "file": file, "tokens": ids }).to_string();
    let mut too_big = vec![0; k];
    too_big[3] = n;
    let mut negative = vec![1; k];
    negative[0] = -1;
    let lines = [
        row("short", vec![0; k - 1]),
        row("too_big", too_big),
        row("negative", negative),
        "{ not json".to_string(),
        row("fine", vec![5; k]),
    ];
    std::fs::write(t.path("ids.json"), lines.join("\n") + "\n").unwrap();
    let out = titok(&t.0, &["detokenize", "ids.json", "-o", "ids"]);
    ok(&out);
    let stderr = text(&out.stderr);
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 4, "{stderr}");
    assert!(errors[0].contains("short") && errors[0].contains(&format!("{} tokens, the tokenizer expects {k}", k - 1)));
    assert!(errors[1].contains(&format!("token id {n} is outside the codebook 0..{n}")), "{}", errors[1]);
    assert!(errors[2].contains("token id -1 is outside"), "{}", errors[2]);
    assert!(errors[3].contains("ids.json:4"), "{}", errors[3]);
    assert!(t.path("ids/fine.png").is_file());
    std::fs::write(t.path("bad_ids.json"), lines[..2].join("\n")).unwrap();
    fails(&titok(&t.0, &["detokenize", "bad_ids.json", "-o", "ids2"]));

    // An output that is one of the inputs is refused; the input stays as it was.
    let before = std::fs::read(t.path("good.png")).unwrap();
    let err = fails(&titok(&t.0, &["tokenize", "good.png", "-o", "good.png"]));
    assert!(err.contains("refusing to overwrite the input file good.png"), "{err}");
    assert_eq!(std::fs::read(t.path("good.png")).unwrap(), before);
    // In a batch: `x.png`'s reconstruction would replace the input `x.recon.png`: that one item
    // fails, the rest goes on.
    std::fs::create_dir_all(t.path("same")).unwrap();
    std::fs::copy(photo("rocket.png"), t.path("same/x.png")).unwrap();
    std::fs::copy(photo("coffee.png"), t.path("same/x.recon.png")).unwrap();
    let protected = std::fs::read(t.path("same/x.recon.png")).unwrap();
    let out = titok(&t.0, &["reconstruct", "same", "-o", "same"]);
    ok(&out);
    let stderr = text(&out.stderr);
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert!(stderr.contains("refusing to overwrite the input file"), "{stderr}");
    assert_eq!(std::fs::read(t.path("same/x.recon.png")).unwrap(), protected);
    assert!(t.path("same/x.recon.recon.png").is_file());
}

// ---------------------------------------------------------------------------------------------
// Golden fixture, info, export

/// The fixture's input images, saved as PNG, tokenized through the CLI with the fixture model
/// give exactly the fixture's token ids.
#[test]
fn golden_fixture_token_ids_through_the_cli() {
    let t = Scratch::new("golden");
    let dir = FixtureKind::TitokLegacyStage2.first();
    let mut io = IoTensors::load(&dir);
    let input = io.get("input").clone(); // [2, 3, 64, 64] in [0, 1], u8 / 255
    let [b, _, h, w] = input.shape[..] else { panic!("{:?}", input.shape) };
    let mut files = Vec::new();
    for i in 0..b {
        let mut image = RgbImage::new(w as u32, h as u32);
        for (x, y, p) in image.enumerate_pixels_mut() {
            for c in 0..3 {
                let v = input.values[((i * 3 + c) * h + y as usize) * w + x as usize] * 255.0;
                assert!((v - v.round()).abs() < 1e-3, "the fixture input is 8-bit");
                p.0[c] = v.round() as u8;
            }
        }
        let path = t.path(&format!("input{i}.png"));
        image.save(&path).unwrap();
        files.push(path);
    }
    let mut args = vec!["--model", s(&dir), "tokenize"];
    args.extend(files.iter().map(|p| s(p)));
    args.extend(["-o", "ids.json"]);
    let out = titok(&t.0, &args);
    ok(&out);
    assert!(text(&out.stderr).contains(&format!("{w}x{h} (model size)")), "{}", text(&out.stderr));
    let want = io.get("token_ids").values.iter().map(|&v| v as i64).collect::<Vec<_>>();
    let got: Vec<i64> = read_jsonl(&t.path("ids.json")).into_iter().flat_map(|(_, ids)| ids).collect();
    assert_eq!(got, want);
}

/// The line `  <name><spaces><integer>` of the `parameters` section of `info` output.
fn count_line(stdout: &str, name: &str) -> usize {
    stdout
        .lines()
        .skip_while(|l| *l != "parameters")
        .find_map(|l| l.trim_start().strip_prefix(name).map(|rest| rest.trim().parse::<usize>()))
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{stdout}"))
        .unwrap()
}

/// `info` prints the configuration, codebook, tokens, resolution and parameter counts that
/// match the loaded models.
#[test]
fn info_prints_config_and_parameter_counts() {
    let t = Scratch::new("info");
    let device = Device::flex();
    let dir = FixtureKind::TitokLegacyStage2.first();
    let stdout = ok(&titok(&t.0, &["info", s(&dir)]));
    let model = load_titok(&dir, &device).unwrap();
    let c = &model.config;
    let bits = (c.codebook_size.max(2) as f64).log2().ceil();
    let l2 = if c.use_l2_norm { ", l2-normalised" } else { "" };
    for want in [
        format!("{s}x{s} px, patch {}", c.patch_size, s = c.image_size),
        format!("{} per image (1D), {} channels each", c.num_latent_tokens, c.token_size),
        format!("{} codes ({bits} bits per token){l2}", c.codebook_size),
        "F32 storage".to_string(),
    ] {
        assert!(stdout.contains(&want), "missing `{want}` in:\n{stdout}");
    }
    assert_eq!(count_line(&stdout, "total"), model.num_params());
    assert_eq!(count_line(&stdout, "encoder"), model.encoder.num_params());
    assert_eq!(count_line(&stdout, "pixel decoder"), model.pixel_decoder.as_ref().unwrap().num_params());
    // The printed config is the official JSON form and reads back as the same configuration.
    let json_start = stdout.find("\n{").unwrap();
    let json: Value = serde_json::from_str(&stdout[json_start..]).unwrap();
    let back = HfConfig::from_value("printed".into(), json, None).unwrap().titok().unwrap();
    assert_eq!(back, model.config);

    let dir = FixtureKind::ImageBert.first();
    let stdout = ok(&titok(&t.0, &["info", s(&dir)]));
    let generator = load_generator(&dir, &device).unwrap();
    let classes = titok_model::generator::TokenPredictor::layout(&generator).num_classes;
    // ImageNet's names for 1,000 classes, numbers otherwise.
    let want = if classes == 1000 {
        "classes        1000 (tench, goldfish".to_string()
    } else {
        format!("classes        {classes} (")
    };
    assert!(stdout.contains(&want), "{stdout}");
    assert_eq!(count_line(&stdout, "total"), generator.num_params());

    let stdout = ok(&titok(&t.0, &["info"]));
    assert!(
        stdout.contains("tokenizer: embedded titok-cifar10") && stdout.contains("generator: embedded maskgit-cifar10"),
        "{stdout}"
    );
    // A generator given as the tokenizer is named as such.
    let err = fails(&titok(&t.0, &["--model", s(&dir), "tokenize", s(&photo("chelsea.png")), "-o", "t.json"]));
    assert!(err.contains("pass it with --generator"), "{err}");
    // The global --model also works after the subcommand.
    let stdout = ok(&titok(&t.0, &["info", "--model", s(&FixtureKind::TitokLegacyStage2.first())]));
    assert!(stdout.contains("tokenizer: ") && !stdout.contains("tokenizer: embedded"), "{stdout}");
}

/// Folder -> `.bpk` -> folder keeps the weights exactly (same token ids); f16 halves the size;
/// an output equal to the source is refused.
#[test]
fn export_round_trips_between_folders_and_bpk() {
    let t = Scratch::new("export");
    let dir = FixtureKind::TitokVq.first();
    ok(&titok(&t.0, &["export", s(&dir), "-o", "m.bpk"]));
    assert!(t.path("m.config.json").is_file());
    ok(&titok(&t.0, &["export", "m.bpk", "-o", "back"]));
    ok(&titok(&t.0, &["export", s(&dir), "-o", "half", "--dtype", "f16"]));
    ok(&titok(&t.0, &["export", s(&dir), "-o", "half.bpk", "--dtype", "f16"]));
    ok(&titok(&t.0, &["export", "half.bpk", "-o", "half_back"]));
    let size = |p: &str| std::fs::metadata(t.path(p)).unwrap().len() as f64;
    let original = std::fs::metadata(dir.join("model.safetensors")).unwrap().len() as f64;
    assert!((size("half/model.safetensors") / original - 0.5).abs() < 0.02);
    assert!((size("half.bpk") / size("m.bpk") - 0.5).abs() < 0.02);

    let photos = [photo("astronaut.png"), photo("grace_hopper.png")];
    let ids = |model: &Path, out: &str| {
        let mut args = vec!["--model", s(model), "tokenize"];
        args.extend(photos.iter().map(|p| s(p)));
        args.extend(["-o", out]);
        ok(&titok(&t.0, &args));
        read_jsonl(&t.path(out))
    };
    let reference = ids(&dir, "a.json");
    assert_eq!(ids(&t.path("back"), "b.json"), reference);
    let stdout = ok(&titok(&t.0, &["info", "half_back"]));
    assert!(stdout.contains("F32 storage"), "{stdout}");
    let stdout = ok(&titok(&t.0, &["info", "half"]));
    assert!(stdout.contains("F16 storage"), "{stdout}");

    let err = fails(&titok(&t.0, &["export", "back", "-o", "back"]));
    assert!(err.contains("refusing to overwrite the source"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// `eval recon` on a small folder: the JSON report holds the image count, the mean PSNR equals
/// the mean of what `reconstruct` prints per image, and the codebook statistics are consistent.
#[test]
fn eval_recon_reports_dataset_metrics() {
    let t = Scratch::new("evalrecon");
    t.photo_folder("data");
    std::fs::write(t.path("data/broken.jpg"), b"\xff\xd8\xff").unwrap();
    let out = titok(&t.0, &["eval", "recon", "--data", "data", "--no-fid", "--json", "report.json"]);
    let stdout = ok(&out);
    assert!(stdout.contains("PSNR (dB)") && stdout.contains("codebook usage"), "{stdout}");
    assert!(text(&out.stderr).contains("broken.jpg"), "the unreadable file is named: {}", text(&out.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(t.path("report.json")).unwrap()).unwrap();
    assert_eq!(report["images"], 3);
    assert!(report["fid"].is_null());
    assert_eq!(report["skipped"].as_array().unwrap().len(), 1);

    let recon = ok(&titok(&t.0, &["reconstruct", "data", "-o", "recon"]));
    let mean_line = recon.lines().find(|l| l.starts_with("mean over 3 images")).unwrap();
    let printed: f64 = mean_line.split("PSNR ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let psnr = report["psnr_db"].as_f64().unwrap();
    assert!((psnr - printed).abs() < 0.006, "eval {psnr} vs reconstruct {printed}");
    assert!(report["ssim"].as_f64().unwrap().abs() <= 1.0);
    if shared_weights("lpips_alexnet.safetensors").is_file() {
        assert!(report["lpips"].as_f64().unwrap() > 0.0);
    }

    let c = default_config();
    let cb = &report["codebook"];
    let used = cb["used"].as_u64().unwrap() as usize;
    assert!(used >= 1 && used <= 3 * c.num_latent_tokens);
    assert_eq!(cb["size"], c.codebook_size);
    assert!((cb["usage"].as_f64().unwrap() - used as f64 / c.codebook_size as f64).abs() < 1e-12);
    let entropy = cb["entropy_bits"].as_f64().unwrap();
    assert!(entropy >= 0.0 && entropy <= (used as f64).log2() + 1e-9);
}

/// Every committed tokenizer that carries its measured CIFAR-10 test-split report
/// (`eval-cifar10-test.json`, from `titok eval recon --split test --json`: the embedded default
/// and the finished steps of the default-models recipe under `assets/training/`) still scores
/// it: 200 test images spread over the split give the recorded PSNR and LPIPS within their
/// sampling error. This catches weights replaced without a new measurement, and the reverse.
#[test]
fn committed_tokenizers_score_their_recorded_cifar10_test_metrics() {
    let data = titok_model::golden::shared_dir().join("data/cifar10-jpg.tar.gz");
    let mut folders: Vec<PathBuf> = ["assets/models", "assets/training"]
        .iter()
        .filter_map(|d| std::fs::read_dir(workspace().join(d)).ok())
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("eval-cifar10-test.json").is_file())
        .collect();
    folders.sort();
    assert!(folders.iter().any(|p| p.ends_with("titok-cifar10")), "the embedded tokenizer has its report: {folders:?}");
    let t = Scratch::new("recorded");
    for dir in &folders {
        let recorded: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("eval-cifar10-test.json")).unwrap()).unwrap();
        let model = ["--model", s(dir), "eval", "recon", "--data", s(&data), "--split", "test"];
        ok(&titok(&t.0, &[&model[..], &["--limit", "200", "--no-fid", "--json", "now.json"]].concat()));
        let now: Value = serde_json::from_str(&std::fs::read_to_string(t.path("now.json")).unwrap()).unwrap();
        assert_eq!(now["images"], 200);
        let (psnr, psnr_then) = (now["psnr_db"].as_f64().unwrap(), recorded["psnr_db"].as_f64().unwrap());
        assert!((psnr - psnr_then).abs() < 0.6, "{}: PSNR {psnr:.2} dB, recorded {psnr_then:.2}", dir.display());
        if shared_weights("lpips_alexnet.safetensors").is_file() {
            let (lpips, lpips_then) = (now["lpips"].as_f64().unwrap(), recorded["lpips"].as_f64().unwrap());
            assert!((lpips - lpips_then).abs() < 0.03, "{}: LPIPS {lpips:.3}, recorded {lpips_then:.3}", dir.display());
        }
    }
}

/// The FID tests need `../shared/weights/fid_inception_v3_pool3.safetensors` (CI has it).
fn require_inception_weights() {
    assert!(
        shared_weights("fid_inception_v3_pool3.safetensors").is_file(),
        "the FID InceptionV3 weights are needed at ../shared/weights"
    );
}

/// `eval recon --save-real-stats` then `--real-stats`: the second run skips the real side's
/// Inception passes and reports the same rFID; statistics of another image count are refused.
#[test]
fn eval_recon_reuses_the_real_statistics() {
    require_inception_weights();
    let t = Scratch::new("evalstats");
    t.photo_folder("data");
    let json = |name: &str| -> Value { serde_json::from_str(&std::fs::read_to_string(t.path(name)).unwrap()).unwrap() };
    ok(&titok(&t.0, &["eval", "recon", "--data", "data", "--save-real-stats", "real.npz", "--json", "a.json"]));
    let stats = read_npz(&t.path("real.npz")).unwrap();
    assert_eq!(stats["mu"].shape, [2048]);
    assert_eq!(stats["n"].to_f64(), [3.0]);
    ok(&titok(&t.0, &["eval", "recon", "--data", "data", "--real-stats", "real.npz", "--json", "b.json"]));
    let (a, b) = (json("a.json"), json("b.json"));
    let (fa, fb) = (a["fid"]["value"].as_f64().unwrap(), b["fid"]["value"].as_f64().unwrap());
    assert!(fa.is_finite() && fa > 0.0, "{fa}");
    assert!((fa - fb).abs() < 1e-6 * fa.max(1.0), "rFID computed {fa} vs with saved statistics {fb}");
    assert_eq!(b["fid"]["reference_images"], 3);
    assert_eq!(a["psnr_db"], b["psnr_db"]);

    let err = fails(&titok(&t.0, &["eval", "recon", "--data", "data", "--limit", "2", "--real-stats", "real.npz"]));
    assert!(err.contains("of 3 images but 2 were read"), "{err}");
    let err = fails(&titok(&t.0, &["eval", "recon", "--data", "data", "--no-fid", "--real-stats", "real.npz"]));
    assert!(err.contains("cannot be used with"), "{err}");
}

/// `eval gen`: generated samples are scored against a reference folder (statistics saved as
/// `.npz`) and written as an ADM batch; scoring the reference images themselves against the
/// saved statistics gives a gFID of 0.
#[test]
fn eval_gen_scores_samples_and_writes_an_adm_batch() {
    require_inception_weights();
    let t = Scratch::new("evalgen");
    t.photo_folder("ref");
    let c = default_config();
    let args = ["eval", "gen", "--reference", "ref", "--num-per-class", "1", "--seed", "3"];
    let extra = ["--adm-npz", "samples.npz", "--save-reference-stats", "ref.npz", "--json", "gen.json"];
    let stdout = ok(&titok(&t.0, &[&args[..], &extra[..]].concat()));
    assert!(stdout.contains("gFID") && stdout.contains("warning: gFID on"), "{stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(t.path("gen.json")).unwrap()).unwrap();
    let classes = report["images"].as_u64().unwrap() as usize;
    assert_eq!(classes, 10, "one sample per CIFAR-10 class");
    assert_eq!(report["fid"]["kind"], "gFID");
    assert_eq!(report["fid"]["reference_images"], 3);
    let gfid = report["fid"]["value"].as_f64().unwrap();
    assert!(gfid.is_finite() && gfid > 1.0, "{gfid}");

    let adm: BTreeMap<String, _> = read_npz(&t.path("samples.npz")).unwrap();
    let arr = &adm["arr_0"];
    assert_eq!(arr.shape, [classes, c.image_size, c.image_size, 3]);
    assert!(matches!(arr.data, NpyData::U8(_)));
    let stats = read_npz(&t.path("ref.npz")).unwrap();
    assert_eq!(stats["mu"].shape, [2048]);
    assert_eq!(stats["n"].to_f64(), [3.0]);

    let out = ok(&titok(&t.0, &["eval", "gen", "--reference", "ref.npz", "--samples", "ref", "--json", "same.json"]));
    assert!(out.contains("gFID"), "{out}");
    let same: Value = serde_json::from_str(&std::fs::read_to_string(t.path("same.json")).unwrap()).unwrap();
    let v = same["fid"]["value"].as_f64().unwrap();
    assert!(v.abs() < 1e-3, "gFID of a set against its own statistics: {v}");
}

/// Grayscale, RGBA, 16-bit, BMP and TIFF inputs are converted to RGB and tokenized like the
/// 8-bit RGB original; an extreme aspect ratio is refused with its reason.
#[test]
fn other_pixel_formats_are_converted() {
    let t = Scratch::new("formats");
    let rgb = load_rgb(&photo("coffee.png")).unwrap();
    let gray = image::DynamicImage::ImageRgb8(rgb.clone()).to_luma8();
    gray.save(t.path("gray.png")).unwrap();
    image::DynamicImage::ImageLuma8(gray).to_rgb8().save(t.path("gray_as_rgb.png")).unwrap();
    image::DynamicImage::ImageRgb8(rgb.clone()).to_rgba8().save(t.path("rgba.png")).unwrap();
    image::DynamicImage::ImageRgb8(rgb.clone()).to_rgb16().save(t.path("rgb16.png")).unwrap();
    rgb.save(t.path("plain.bmp")).unwrap();
    rgb.save(t.path("plain.tiff")).unwrap();
    RgbImage::new(640, 16).save(t.path("strip.png")).unwrap();
    let names = ["gray.png", "gray_as_rgb.png", "rgba.png", "rgb16.png", "plain.bmp", "plain.tiff", "strip.png"];
    let mut args = vec!["tokenize"];
    args.extend(names);
    args.extend(["-o", "ids.json"]);
    let out = titok(&t.0, &args);
    ok(&out);
    let stderr = text(&out.stderr);
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("strip.png") && errors[0].contains("aspect ratio"), "{}", errors[0]);
    let rows: BTreeMap<String, Vec<i64>> = read_jsonl(&t.path("ids.json")).into_iter().collect();
    assert_eq!(rows.len(), 6);
    let plain: Value = serde_json::from_str(ok(&titok(&t.0, &["tokenize", s(&photo("coffee.png"))])).trim()).unwrap();
    let original: Vec<i64> = plain["tokens"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    // Lossless conversions of the same pixels give the same tokens.
    for name in ["rgba.png", "rgb16.png", "plain.bmp", "plain.tiff"] {
        assert_eq!(rows[name], original, "{name}");
    }
    assert_eq!(rows["gray.png"], rows["gray_as_rgb.png"], "grayscale is replicated to RGB");
}

/// A big-endian TIFF/EXIF block with one tag, Orientation (0x0112) = `value`.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut v = b"MM\0\x2a".to_vec();
    v.extend(8u32.to_be_bytes());
    v.extend(1u16.to_be_bytes());
    v.extend(0x0112u16.to_be_bytes());
    v.extend(3u16.to_be_bytes());
    v.extend(1u32.to_be_bytes());
    v.extend(value.to_be_bytes());
    v.extend([0, 0]);
    v.extend(0u32.to_be_bytes());
    v
}

/// A phone photo held upright (stored sideways, EXIF orientation 6) is tokenized as the upright
/// file is, and the report line says what was done; an Adobe RGB-tagged copy is converted
/// with a notice.
#[test]
fn exif_orientation_and_icc_profiles_are_applied_and_reported() {
    use image::ImageEncoder;
    let t = Scratch::new("exif");
    let upright = load_rgb(&photo("chelsea.png")).unwrap();
    upright.save(t.path("upright.png")).unwrap();
    let sideways = image::imageops::rotate270(&upright);
    let write_png = |name: &str, img: &RgbImage, exif: Option<Vec<u8>>, icc: Option<Vec<u8>>| {
        let mut out = Vec::new();
        let mut enc = image::codecs::png::PngEncoder::new(&mut out);
        if let Some(e) = exif {
            enc.set_exif_metadata(e).unwrap();
        }
        if let Some(p) = icc {
            enc.set_icc_profile(p).unwrap();
        }
        enc.write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8).unwrap();
        std::fs::write(t.path(name), out).unwrap();
    };
    write_png("phone.png", &sideways, Some(exif_orientation(6)), None);
    write_png("sideways.png", &sideways, None, None);
    write_png("adobe.png", &upright, None, Some(moxcms::ColorProfile::new_adobe_rgb().encode().unwrap()));
    let out = titok(&t.0, &["tokenize", "upright.png", "phone.png", "sideways.png", "adobe.png", "-o", "ids.json"]);
    ok(&out);
    let stderr = text(&out.stderr);
    let (w, h) = upright.dimensions();
    let line = stderr.lines().find(|l| l.contains("phone.png")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(&format!("{w}x{h} ->")), "the shown size comes first: {line}");
    assert!(
        line.contains(&format!("EXIF orientation 6 applied (rotated 90 degrees clockwise; stored {h}x{w}")),
        "{line}"
    );
    let line = stderr.lines().find(|l| l.contains("adobe.png")).unwrap();
    assert!(line.contains("converted from") && line.contains("to sRGB"), "{line}");
    let rows: BTreeMap<String, Vec<i64>> = read_jsonl(&t.path("ids.json")).into_iter().collect();
    assert_eq!(rows["phone.png"], rows["upright.png"], "the EXIF-rotated file must give the upright file's tokens");
    assert_ne!(rows["sideways.png"], rows["upright.png"], "the test needs an orientation-sensitive model");
}

/// A Git LFS pointer or an HTML page in place of `model.safetensors` is named as such, with the
/// fix, by every command that loads a model.
#[test]
fn lfs_pointers_and_html_pages_are_recognised() {
    let t = Scratch::new("lfs");
    let fixture = FixtureKind::TitokVq.first();
    std::fs::create_dir_all(t.path("clone")).unwrap();
    for file in ["config.json", "fixture_meta.json"] {
        if fixture.join(file).is_file() {
            std::fs::copy(fixture.join(file), t.path(&format!("clone/{file}"))).unwrap();
        }
    }
    let pointer = "version https://git-lfs.github.com/spec/v1\n\
                   oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 2397201356\n";
    std::fs::write(t.path("clone/model.safetensors"), pointer).unwrap();
    for args in [&["info", "--model", "clone"][..], &["--model", "clone", "tokenize", s(&photo("coffee.png"))][..]] {
        let err = fails(&titok(&t.0, args));
        assert!(err.contains("model.safetensors") && err.contains("Git LFS pointer"), "{err}");
        assert!(err.contains("git lfs pull") && err.contains("2.4 GB"), "{err}");
        assert!(!err.contains("header of"), "no raw header-size message: {err}");
    }
    std::fs::write(t.path("clone/model.safetensors"), "<!DOCTYPE html>\n<html><title>Sign in</title></html>\n")
        .unwrap();
    let err = fails(&titok(&t.0, &["info", "--model", "clone"]));
    assert!(err.contains("an HTML page") && err.contains("/resolve/"), "{err}");
}

/// FID statistics are validated when loaded: a covariance that is not positive semi-definite
/// is an error naming the file; JPEG or off-size samples are scored with a warning.
#[test]
fn fid_statistics_are_validated_and_lossy_samples_warned_about() {
    use titok_eval::FidStats;
    require_inception_weights();
    let t = Scratch::new("fidcheck");
    let d = 2048;
    let mut sigma = nalgebra::DMatrix::<f64>::identity(d, d);
    sigma[(5, 5)] = -0.5; // one clearly negative eigenvalue
    let bad = FidStats { mu: nalgebra::DVector::zeros(d), sigma, n: Some(10_000) };
    bad.save_npz(&t.path("bad.npz")).unwrap();
    t.photo_folder("samples");
    let err = fails(&titok(&t.0, &["eval", "gen", "--reference", "bad.npz", "--samples", "samples"]));
    assert!(err.contains("bad.npz") && err.contains("not positive semi-definite"), "{err}");

    // Samples saved as JPEG, of another size than the model's: scored, with both warnings.
    std::fs::create_dir_all(t.path("jpeg")).unwrap();
    for name in ["chelsea", "coffee", "rocket"] {
        let img = load_rgb(&photo(&format!("{name}.png"))).unwrap();
        std::fs::write(t.path(&format!("jpeg/{name}.jpg")), jpeg_bytes(&img)).unwrap();
    }
    let out = titok(&t.0, &["eval", "gen", "--reference", "samples", "--samples", "jpeg", "--json", "r.json"]);
    ok(&out);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("warning: 3 of 3 samples are JPEG"), "{stderr}");
    let size = default_config().image_size;
    assert!(stderr.contains(&format!("3 of 3 samples are not {size}x{size}")), "{stderr}");
    assert!(stderr.contains(&format!("3 of 3 reference images are not {size}x{size}")), "{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(t.path("r.json")).unwrap()).unwrap();
    assert_eq!(report["warnings"].as_array().unwrap().len(), 3, "{report}");
}
