//! The data pipeline: real archives (CIFAR-10 `.tar.gz`, ImageNet samples `.tar`), folder
//! layouts and labels, colour conversions, skipping of unreadable files, reproducible
//! augmentations, multi-worker loading, errors, and the PNG writers.
//!
//! The shared data folder is `../shared` next to the project (override: `TITOK_SHARED_DIR`).

mod common;
use common::{scratch, shared};

use std::collections::HashMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::data::dataset::transform::SelectionDataset;
use burn::tensor::{Device, Tensor, TensorData};
use image::{ImageBuffer, Luma, LumaA, Rgb, RgbImage, Rgba};
use titok_train::data::image_io::{
    self, DecodeLimits, decode_rgb, decode_rgb_with, image_grid, images_to_tensor, jpeg_is_complete, save_png_grid,
    tensor_to_images,
};
use titok_train::data::{
    Crop, DataError, ImageBatch, ImageBatcher, ImageFolder, ImageList, ImageRecord, ImageSource, IndexOptions,
    LabelSource, TarImages, Transform, epoch_order, resize_shorter_side,
};

const CIFAR_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

fn cifar_path() -> PathBuf {
    shared().join("data/cifar10-jpg.tar.gz")
}

fn imagenet_path() -> PathBuf {
    shared().join("data/imagenet-samples-256.tar")
}

/// The CIFAR-10 test split, indexed once for all tests of this binary.
fn cifar_test() -> &'static TarImages {
    static SPLIT: OnceLock<TarImages> = OnceLock::new();
    SPLIT.get_or_init(|| TarImages::open(cifar_path(), Some("test")).expect("CIFAR-10 test split"))
}

fn device() -> Device {
    titok_model::golden::test_device()
}

fn solid(w: u32, h: u32, rgb: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(rgb))
}

/// A noisy image (long JPEG scan data, so that cutting it truncates the scan).
fn noise(w: u32, h: u32) -> RgbImage {
    let mut state = 12345u32;
    RgbImage::from_fn(w, h, |_, _| {
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        };
        Rgb([next(), next(), next()])
    })
}

fn encode(image: &RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// A baseline JPEG with four components stored the Adobe way (inverted CMYK, APP14
/// transform 0): `blocks` 8x8 blocks side by side, each of one stored `[C', M', Y', K']`
/// colour. Only DC coefficients are coded (quantiser 1), so the decoder reproduces the stored
/// values exactly. The `image` encoder cannot write CMYK, hence this small writer.
fn cmyk_jpeg(blocks: &[[u8; 4]]) -> Vec<u8> {
    fn segment(out: &mut Vec<u8>, marker: u8, payload: &[u8]) {
        out.extend([0xFF, marker]);
        out.extend(((payload.len() + 2) as u16).to_be_bytes());
        out.extend(payload);
    }
    let mut out = vec![0xFF, 0xD8];
    segment(&mut out, 0xEE, &[b'A', b'd', b'o', b'b', b'e', 0, 100, 0, 0, 0, 0, 0]);
    segment(&mut out, 0xDB, &[[0u8].as_slice(), &[1u8; 64]].concat());
    let width = (8 * blocks.len()) as u16;
    let mut sof = vec![8, 0, 8];
    sof.extend(width.to_be_bytes());
    sof.push(4);
    for c in 1..=4 {
        sof.extend([c, 0x11, 0]);
    }
    segment(&mut out, 0xC0, &sof);
    // DC table: categories 0..=11, all with 4-bit codes (code == category).
    let mut dc = vec![0x00, 0, 0, 0, 12];
    dc.extend([0u8; 12]);
    dc.extend(0u8..12);
    segment(&mut out, 0xC4, &dc);
    // AC table: only end-of-block, code "0".
    let mut ac = vec![0x10, 1];
    ac.extend([0u8; 15]);
    ac.push(0x00);
    segment(&mut out, 0xC4, &ac);
    segment(&mut out, 0xDA, &[4, 1, 0x00, 2, 0x00, 3, 0x00, 4, 0x00, 0, 63, 0]);

    let mut bits: Vec<bool> = Vec::new();
    let put = |value: u32, n: u32, bits: &mut Vec<bool>| bits.extend((0..n).rev().map(|i| (value >> i) & 1 == 1));
    let mut previous = [0i32; 4];
    for block in blocks {
        for c in 0..4 {
            let dc = 8 * (i32::from(block[c]) - 128);
            let diff = dc - previous[c];
            previous[c] = dc;
            let category = 32 - diff.unsigned_abs().leading_zeros();
            put(category, 4, &mut bits);
            let value = if diff >= 0 { diff as u32 } else { (diff + (1 << category) - 1) as u32 };
            put(value, category, &mut bits);
            put(0, 1, &mut bits); // end of block
        }
    }
    while !bits.len().is_multiple_of(8) {
        bits.push(true);
    }
    for byte in bits.chunks(8) {
        let byte = byte.iter().fold(0u8, |acc, &b| (acc << 1) | u8::from(b));
        out.push(byte);
        if byte == 0xFF {
            out.push(0x00);
        }
    }
    out.extend([0xFF, 0xD9]);
    out
}

/// zune-jpeg's Adobe CMYK conversion of one stored channel value and K'.
fn cmyk_channel(v: u8, k: u8) -> u8 {
    let t = i32::from(v) * i32::from(k) + 128;
    ((t + (t >> 8)) >> 8) as u8
}

fn pixel_of(batch: &ImageBatch, name: &str, x: usize, y: usize) -> [u8; 3] {
    let i = batch.names.iter().position(|n| n == name).unwrap_or_else(|| panic!("{name} not in batch"));
    let [_, _, s, _] = batch.images.dims();
    let image = batch.images.clone().narrow(0, i, 1);
    let values = image.try_into_vec_as::<f32>().unwrap();
    let at = |c: usize| (values[c * s * s + y * s + x] * 255.0).round() as u8;
    [at(0), at(1), at(2)]
}

fn assert_near(actual: [u8; 3], expected: [u8; 3], tolerance: u8, what: &str) {
    for c in 0..3 {
        assert!(
            actual[c].abs_diff(expected[c]) <= tolerance,
            "{what}: got {actual:?}, expected {expected:?} ±{tolerance}"
        );
    }
}

#[test]
fn cifar10_archive_splits_classes_labels_and_sizes() {
    let started = std::time::Instant::now();
    let train = TarImages::open(cifar_path(), Some("train")).unwrap();
    println!("CIFAR-10 train split indexed in {:.2} s", started.elapsed().as_secs_f64());
    let test = cifar_test();
    assert_eq!(train.len(), 50_000);
    assert_eq!(test.len(), 10_000);
    assert_eq!(train.class_names(), CIFAR_CLASSES);
    assert_eq!(test.class_names(), CIFAR_CLASSES);
    assert!(train.skipped().is_empty() && test.skipped().is_empty());

    // Labels follow the sorted class folders; every class has 5,000 / 1,000 images.
    let bird = train.list().find("train/bird/0338.jpg").expect("a known member");
    assert_eq!(bird.label, Some(2));
    for (split, per_class) in [(&train, 5_000), (test, 1_000)] {
        let mut counts = [0usize; 10];
        for r in split.list().records() {
            let label = r.label.unwrap();
            assert_eq!(r.name.split('/').nth(1), Some(CIFAR_CLASSES[label]));
            counts[label] += 1;
        }
        assert_eq!(counts, [per_class; 10]);
    }
    // Records are sorted by path and carry their index.
    let records = test.list().records();
    assert!(records.windows(2).all(|w| w[0].name < w[1].name));
    assert!(records.iter().enumerate().all(|(i, r)| r.index == i));

    // Decoded: 32x32 RGB; a batch at the native size is [B, 3, 32, 32] in [0, 1].
    let image = decode_rgb(&bird.source.read().unwrap(), &bird.name).unwrap();
    assert_eq!(image.dimensions(), (32, 32));
    let batcher = ImageBatcher::new(Transform::eval(32));
    let items: Vec<ImageRecord> = (0..8).map(|i| test.get(i * 1000).unwrap()).collect();
    let batch = batcher.batch(items.clone(), &device());
    assert_eq!(batch.images.dims(), [8, 3, 32, 32]);
    let labels = batch.labels.clone().unwrap().try_into_vec_as::<i64>().unwrap();
    assert_eq!(labels, [0, 1, 2, 3, 4, 5, 6, 7]);
    let values = batch.images.clone().try_into_vec_as::<f32>().unwrap();
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
    let mean = values.iter().sum::<f32>() / values.len() as f32;
    assert!((0.2..0.8).contains(&mean), "mean {mean}");
    // The eval transform at the native size is the identity on the decoded pixels.
    let first = decode_rgb(&items[0].source.read().unwrap(), "first").unwrap();
    let [r, g, b] = pixel_of(&batch, &items[0].name, 5, 7);
    assert_eq!([r, g, b], first.get_pixel(5, 7).0);
    assert_eq!(batcher.skipped(), 0);
}

#[test]
fn imagenet_samples_tar_is_read_in_place() {
    let started = std::time::Instant::now();
    let flat = TarImages::open(imagenet_path(), Some("imagenet-samples-256jpg")).unwrap();
    println!("ImageNet samples indexed in {:.3} s", started.elapsed().as_secs_f64());
    assert_eq!(flat.len(), 1000);
    assert!(flat.class_names().is_empty());
    assert!(flat.list().records().iter().all(|r| r.label.is_none()));
    let first = flat.get(0).unwrap();
    assert!(matches!(first.source, ImageSource::TarMember { .. }), "{:?}", first.source);
    let image = decode_rgb(&first.source.read().unwrap(), &first.name).unwrap();
    assert_eq!(image.dimensions(), (256, 256));

    // Class index from the file name: every ImageNet class exactly once.
    let options = IndexOptions { labels: LabelSource::FileNameIndex, ..IndexOptions::default() };
    let indexed = TarImages::open_with(imagenet_path(), Some("imagenet-samples-256jpg"), &options).unwrap();
    let mut labels: Vec<usize> = indexed.list().records().iter().map(|r| r.label.unwrap()).collect();
    let elephant = indexed.list().find("imagenet-samples-256jpg/386_n02504458_African_elephant.jpg").unwrap();
    assert_eq!(elephant.label, Some(386));
    labels.sort_unstable();
    assert_eq!(labels, (0..1000).collect::<Vec<_>>());

    // Without a split the wrapper folder is the one class.
    let whole = TarImages::open(imagenet_path(), None).unwrap();
    assert_eq!(whole.class_names(), ["imagenet-samples-256jpg"]);
    assert_eq!(whole.len(), 1000);

    // A training batch at 128 px.
    let batcher = ImageBatcher::new(Transform::train(128, 1));
    let batch = batcher.batch((0..4).map(|i| flat.get(i).unwrap()).collect(), &device());
    assert_eq!(batch.images.dims(), [4, 3, 128, 128]);
    assert!(batch.labels.is_none());
}

#[test]
fn missing_split_names_the_available_ones() {
    let error = TarImages::open(cifar_path(), Some("val")).unwrap_err();
    match &error {
        DataError::SplitNotFound { split, available, .. } => {
            assert_eq!(split, "val");
            assert_eq!(available, &["test", "train"]);
        }
        other => panic!("expected SplitNotFound, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("'val'") && message.contains("test, train"), "{message}");
}

#[test]
fn crops_and_flips_depend_only_on_seed_epoch_and_index() {
    let transform = Transform::train(16, 7);
    // A 48x32 image resizes to 24x16: horizontal offsets 0..=8, no vertical freedom.
    let image = RgbImage::from_fn(48, 32, |x, y| Rgb([(x * 5) as u8, (y * 7) as u8, ((x + y) * 3) as u8]));
    let resized = resize_shorter_side(&image, 16);
    assert_eq!(resized.dimensions(), (24, 16));

    let mut lefts = [0usize; 9];
    let mut flips = 0;
    for index in 0..2000 {
        let p = transform.crop_flip(24, 16, 3, index);
        assert_eq!(p, transform.crop_flip(24, 16, 3, index), "same triple, same draw");
        assert_eq!(p.top, 0);
        lefts[p.left as usize] += 1;
        flips += usize::from(p.flip);
    }
    // Uniform over 9 offsets (222 expected each) and a fair coin.
    assert!(lefts.iter().all(|&n| (150..300).contains(&n)), "{lefts:?}");
    assert!((900..1100).contains(&flips), "{flips}");

    // Another epoch, index or seed gives other draws.
    let draws = |t: Transform, epoch: u64| (0..64).map(|i| t.crop_flip(24, 16, epoch, i)).collect::<Vec<_>>();
    assert_ne!(draws(transform, 3), draws(transform, 4));
    assert_ne!(draws(transform, 3), draws(Transform::train(16, 8), 3));

    // The output is the drawn window of the resized image, mirrored when drawn so.
    for index in 0..16 {
        let out = transform.apply(&image, 3, index).unwrap();
        assert_eq!(out, transform.apply(&image, 3, index).unwrap());
        let p = transform.crop_flip(24, 16, 3, index);
        let mut window = image::imageops::crop_imm(&resized, p.left, p.top, 16, 16).to_image();
        if p.flip {
            image::imageops::flip_horizontal_in_place(&mut window);
        }
        assert_eq!(out, window, "index {index}");
    }

    // Eval: centre window (torchvision's round-half-even offset), never flipped.
    let eval = Transform::eval(16);
    assert_eq!(eval.crop, Crop::Center);
    for (width, left) in [(24, 4), (25, 4), (27, 6), (16, 0)] {
        for index in 0..8 {
            let p = eval.crop_flip(width, 16, index as u64, index);
            assert_eq!((p.left, p.top, p.flip), (left, 0, false), "width {width}");
        }
    }
    // The generator recipe: centre crop, random flip.
    let gen_draws: Vec<_> = (0..64).map(|i| Transform::center_flip(16, 7).crop_flip(24, 16, 0, i)).collect();
    assert!(
        gen_draws.iter().all(|p| p.left == 4) && gen_draws.iter().any(|p| p.flip) && gen_draws.iter().any(|p| !p.flip)
    );

    // Epoch orders: permutations fixed by (seed, epoch).
    let order = epoch_order(1000, 5, 2);
    assert_eq!(order, epoch_order(1000, 5, 2));
    assert_ne!(order, epoch_order(1000, 5, 3));
    assert_ne!(order, (0..1000).collect::<Vec<_>>());
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
}

#[test]
fn resize_follows_torchvision_sizes_and_is_antialiased() {
    let t = Transform::eval(32);
    assert_eq!(t.resized_dims(100, 50), (64, 32));
    assert_eq!(t.resized_dims(50, 100), (32, 64));
    assert_eq!(t.resized_dims(33, 100), (32, 96)); // floor(32 * 100 / 33) = 96
    assert_eq!(t.resized_dims(16, 16), (32, 32)); // up-sampling too

    // A 1-pixel checkerboard shrunk 4x: an antialiased filter averages it to flat grey; a
    // filter without support scaling would sample it and keep strong contrast.
    let checker = RgbImage::from_fn(64, 64, |x, y| if (x + y) % 2 == 0 { Rgb([255; 3]) } else { Rgb([0; 3]) });
    let small = resize_shorter_side(&checker, 16);
    assert_eq!(small.dimensions(), (16, 16));
    let (lo, hi) = small.pixels().fold((255u8, 0u8), |(lo, hi), p| (lo.min(p.0[0]), hi.max(p.0[0])));
    assert!(lo >= 118 && hi <= 137, "checkerboard -> [{lo}, {hi}]");
    // A smooth ramp stays monotonic and keeps its range.
    let ramp = RgbImage::from_fn(256, 64, |x, _| Rgb([x as u8; 3]));
    let small = resize_shorter_side(&ramp, 16);
    let row: Vec<u8> = (0..small.width()).map(|x| small.get_pixel(x, 8).0[0]).collect();
    assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
    assert!(row[0] < 12 && row[row.len() - 1] > 243, "{row:?}");
    // Extreme aspect ratios are refused instead of allocating gigabytes.
    let strip = RgbImage::new(1, 100);
    assert!(matches!(Transform::eval(16).apply(&strip, 0, 0), Err(DataError::TooLarge { .. })));
}

/// Writes the mixed test folder; returns the expected RGB of every good image.
fn write_mixed_folder(dir: &Path) -> HashMap<&'static str, ([u8; 3], u8)> {
    let (w, h) = (12, 8);
    solid(w, h, [200, 40, 90]).save(dir.join("rgb.png")).unwrap();
    solid(w, h, [200, 40, 90]).save(dir.join("rgb.jpg")).unwrap();
    ImageBuffer::from_pixel(w, h, Luma([77u8])).save(dir.join("gray.png")).unwrap();
    ImageBuffer::from_pixel(w, h, Luma([77u8])).save(dir.join("gray.jpg")).unwrap();
    ImageBuffer::from_pixel(w, h, LumaA([77u8, 128])).save(dir.join("gray_alpha.png")).unwrap();
    ImageBuffer::from_pixel(w, h, Rgba([10u8, 20, 30, 0])).save(dir.join("rgba.png")).unwrap();
    ImageBuffer::from_pixel(w, h, Rgb([65535u16, 32896, 0])).save(dir.join("rgb16.png")).unwrap();
    ImageBuffer::from_pixel(w, h, Luma([257u16 * 100])).save(dir.join("gray16.png")).unwrap();
    // CMYK 8x8 blocks, stored inverted: left half [C',M',Y',K'] = [255,127,0,255], right half K' = 127.
    std::fs::write(dir.join("cmyk.jpg"), cmyk_jpeg(&[[255, 127, 0, 255], [255, 127, 0, 127]])).unwrap();

    let jpeg = encode(&noise(64, 64), image::ImageFormat::Jpeg);
    std::fs::write(dir.join("truncated.jpg"), &jpeg[..jpeg.len() * 6 / 10]).unwrap();
    std::fs::write(dir.join("corrupt.png"), [&[0x89u8, b'P', b'N', b'G', 13, 10, 26, 10][..], &[7u8; 40]].concat())
        .unwrap();
    std::fs::write(dir.join("garbage.png"), b"this is not a picture at all").unwrap();
    std::fs::write(dir.join("empty.jpg"), b"").unwrap();
    std::fs::write(dir.join("notes.txt"), b"labels and such").unwrap();
    std::fs::write(dir.join(".hidden.png"), encode(&solid(w, h, [1, 2, 3]), image::ImageFormat::Png)).unwrap();

    let k = |v| cmyk_channel(v, 255);
    let k2 = |v| cmyk_channel(v, 127);
    HashMap::from([
        ("rgb.png", ([200, 40, 90], 0)),
        ("rgb.jpg", ([200, 40, 90], 4)),
        ("gray.png", ([77; 3], 0)),
        ("gray.jpg", ([77; 3], 1)),
        ("gray_alpha.png", ([77; 3], 0)),
        ("rgba.png", ([10, 20, 30], 0)), // alpha dropped, not composited
        ("rgb16.png", ([255, 128, 0], 0)),
        ("gray16.png", ([100; 3], 0)),
        ("cmyk.jpg", ([k(255), k(127), k(0)], 1)), // 16x8: the centre crop starts at x = 4, in the left block
        ("cmyk.jpg@right", ([k2(255), k2(127), k2(0)], 1)),
    ])
}

#[test]
fn mixed_folder_converts_formats_and_skips_bad_files() {
    let dir_guard = scratch("mixed");
    let dir = dir_guard.path().to_path_buf();
    let expected = write_mixed_folder(&dir);

    // Indexing reads the signatures: empty, non-image and disguised text files are left out.
    let folder = ImageFolder::open(&dir).unwrap();
    let mut skipped: Vec<(&str, &str)> =
        folder.skipped().iter().map(|s| (s.name.as_str(), s.reason.as_str())).collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            (".hidden.png", "hidden file"),
            ("empty.jpg", "empty file"),
            ("garbage.png", "content is not an image (unknown signature)"),
            ("notes.txt", "not an image file name (extension)"),
        ]
    );
    assert!(folder.class_names().is_empty(), "a flat folder is unlabelled");
    assert_eq!(folder.len(), 11);

    // Batching: the truncated JPEG and the corrupt PNG are skipped and counted, once.
    let batcher = ImageBatcher::new(Transform::eval(8));
    let items: Vec<ImageRecord> = (0..folder.len()).map(|i| folder.get(i).unwrap()).collect();
    let batch = batcher.batch(items.clone(), &device());
    assert_eq!(batch.len(), 9);
    assert_eq!(batch.images.dims(), [9, 3, 8, 8]);
    assert!(batch.labels.is_none());
    assert_eq!(batcher.skipped(), 2);
    let log = batcher.skip_log().entries();
    assert!(log[0].0.ends_with("corrupt.png") && log[0].1.contains("cannot decode"), "{log:?}");
    assert!(log[1].0.ends_with("truncated.jpg") && log[1].1.contains("truncated JPEG"), "{log:?}");
    let again = batcher.batch(items, &device());
    assert_eq!((again.len(), batcher.skipped()), (9, 2), "each file is reported and counted once");

    for (name, (rgb, tolerance)) in &expected {
        let (file, x) = match name.strip_suffix("@right") {
            Some(file) => (file, 7), // x = 4 + 7 = 11 in the original: the right block
            None => (*name, 0),
        };
        assert_near(pixel_of(&batch, file, x, 4), *rgb, *tolerance, name);
    }

    // Without signature checks the disguised file reaches the batcher and is skipped there.
    let options = IndexOptions { check_signatures: false, ..IndexOptions::default() };
    let unchecked = ImageFolder::open_with(&dir, &options).unwrap();
    assert_eq!(unchecked.len(), 12);
    let batcher = ImageBatcher::new(Transform::eval(8));
    let batch = batcher.batch((0..12).map(|i| unchecked.get(i).unwrap()).collect(), &device());
    assert_eq!((batch.len(), batcher.skipped()), (9, 3));
    let log = batcher.skip_log().entries();
    assert!(log[1].0.ends_with("garbage.png") && log[1].1.contains("unknown image format"), "{log:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_batch_of_only_bad_files_is_empty_not_a_panic() {
    let record = |name: &str, bytes: Vec<u8>, label| ImageRecord {
        source: ImageSource::from_bytes(bytes),
        label,
        name: name.into(),
        index: 0,
    };
    let list = ImageList::from_records(
        vec![
            record("empty.jpg", vec![], Some(0)),
            record("text.png", b"hello".to_vec(), Some(1)),
            record("cut.jpg", encode(&noise(32, 32), image::ImageFormat::Jpeg)[..300].to_vec(), Some(1)),
        ],
        vec!["a".into(), "b".into()],
    );
    let batcher = ImageBatcher::new(Transform::train(16, 0));
    let batch = batcher.batch(list.records().to_vec(), &device());
    assert!(batch.is_empty());
    assert_eq!(batch.images.dims(), [0, 3, 16, 16]);
    assert_eq!(batch.labels.as_ref().map(|l| l.dims()), Some([0]));
    assert_eq!(batcher.skipped(), 3);
    let empty = batcher.batch(Vec::new(), &device());
    assert!(empty.is_empty() && empty.labels.is_none());
}

#[test]
fn decoding_errors_are_clear_and_limits_hold() {
    let jpeg = encode(&noise(64, 64), image::ImageFormat::Jpeg);
    assert!(jpeg_is_complete(&jpeg));
    assert!(jpeg_is_complete(&[jpeg.as_slice(), b"trailing bytes"].concat()));
    for cut in [jpeg.len() - 2, jpeg.len() / 2, 700] {
        assert!(!jpeg_is_complete(&jpeg[..cut]), "cut at {cut}");
    }
    let error = decode_rgb(&jpeg[..jpeg.len() / 2], "photos/cut.jpg").unwrap_err();
    assert!(matches!(error, DataError::TruncatedJpeg { .. }));
    assert_eq!(error.to_string(), "photos/cut.jpg: truncated JPEG (the data ends before the end-of-image marker)");
    assert_eq!(decode_rgb(b"", "e.png").unwrap_err().to_string(), "e.png: empty file");
    assert!(matches!(decode_rgb(b"GIF? no", "x.gif"), Err(DataError::UnknownFormat { .. })));
    let truncated_png = encode(&noise(64, 64), image::ImageFormat::Png);
    let error = decode_rgb(&truncated_png[..truncated_png.len() / 2], "t.png").unwrap_err();
    assert!(matches!(error, DataError::Decode { .. }), "{error:?}");

    // Limits: dimensions and allocation (a decompression bomb declares a huge size).
    let png = encode(&noise(64, 48), image::ImageFormat::Png);
    let narrow = DecodeLimits { max_width: 32, ..DecodeLimits::default() };
    let error = decode_rgb_with(&png, "big.png", narrow).unwrap_err();
    assert!(matches!(error, DataError::TooLarge { .. }), "{error:?}");
    assert!(error.to_string().starts_with("big.png: image exceeds the decoding limits"), "{error}");
    let tiny_alloc = DecodeLimits { max_alloc: 1024, ..DecodeLimits::default() };
    assert!(matches!(decode_rgb_with(&jpeg, "a.jpg", tiny_alloc), Err(DataError::TooLarge { .. })));
    assert_eq!(decode_rgb(&png, "ok.png").unwrap().dimensions(), (64, 48));
}

#[test]
fn folder_errors_name_the_folder_and_counts() {
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-folder");
    assert!(matches!(ImageFolder::open(&missing), Err(DataError::NotFound { .. })));

    let empty_guard = scratch("empty");

    let empty = empty_guard.path().to_path_buf();
    let error = ImageFolder::open(&empty).unwrap_err();
    assert!(matches!(error, DataError::EmptyFolder { .. }));
    assert!(error.to_string().contains(&*empty.to_string_lossy()), "{error}");

    let texts_guard = scratch("texts");

    let texts = texts_guard.path().to_path_buf();
    std::fs::write(texts.join("a.txt"), b"a").unwrap();
    std::fs::write(texts.join("b.csv"), b"b").unwrap();
    std::fs::write(texts.join("c.jpg"), b"not a jpeg").unwrap();
    let error = ImageFolder::open(&texts).unwrap_err();
    match &error {
        DataError::NoImages { files, skipped, .. } => assert_eq!((*files, *skipped), (3, 3)),
        other => panic!("expected NoImages, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&*texts.to_string_lossy()) && message.contains("3 files seen, all 3 skipped"),
        "{message}"
    );
    std::fs::remove_dir_all(&empty).ok();
    std::fs::remove_dir_all(&texts).ok();
}

/// Packs a folder as `.tar` or `.tar.gz` under `prefix/`.
fn pack(dir: &Path, out: &Path, prefix: &str, gzip: bool) {
    let file = std::fs::File::create(out).unwrap();
    let write = |writer: &mut dyn std::io::Write| {
        let mut builder = tar::Builder::new(writer);
        builder.append_dir_all(prefix, dir).unwrap();
        builder.finish().unwrap();
    };
    if gzip {
        let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        write(&mut encoder);
        encoder.finish().unwrap();
    } else {
        let mut file = file;
        write(&mut file);
    }
}

#[test]
fn class_folders_labels_and_archives_agree() {
    let dir_guard = scratch("classes");
    let dir = dir_guard.path().to_path_buf();
    for (class, colour) in [("dog", [200, 0, 0]), ("cat", [0, 200, 0]), ("bird", [0, 0, 200])] {
        std::fs::create_dir_all(dir.join(class).join("nested")).unwrap();
        solid(10, 10, colour).save(dir.join(class).join("a.png")).unwrap();
        solid(10, 10, colour).save(dir.join(class).join("nested/b.jpg")).unwrap();
    }
    solid(10, 10, [9, 9, 9]).save(dir.join("loose.png")).unwrap();
    std::fs::create_dir_all(dir.join("empty_class")).unwrap();

    let folder = ImageFolder::open(&dir).unwrap();
    assert_eq!(folder.class_names(), ["bird", "cat", "dog"]);
    let names: Vec<(&str, Option<usize>)> = folder.list().records().iter().map(|r| (&*r.name, r.label)).collect();
    assert_eq!(
        names,
        [
            ("bird/a.png", Some(0)),
            ("bird/nested/b.jpg", Some(0)),
            ("cat/a.png", Some(1)),
            ("cat/nested/b.jpg", Some(1)),
            ("dog/a.png", Some(2)),
            ("dog/nested/b.jpg", Some(2)),
        ]
    );
    assert_eq!(folder.skipped()[0].name, "loose.png");
    assert_eq!(folder.skipped()[0].reason, "not inside a class folder");

    // A fixed class list (e.g. the training split's) maps labels and leaves out other classes.
    let options = IndexOptions { labels: LabelSource::Classes(vec!["dog".into(), "cat".into()]), ..Default::default() };
    let fixed = ImageFolder::open_with(&dir, &options).unwrap();
    let labels: Vec<_> = fixed.list().records().iter().map(|r| (r.name.to_string(), r.label)).collect();
    assert_eq!(labels[0], ("cat/a.png".to_string(), Some(1)));
    assert_eq!(labels[2], ("dog/a.png".to_string(), Some(0)));
    assert_eq!(fixed.len(), 4);
    let unlabelled =
        ImageFolder::open_with(&dir, &IndexOptions { labels: LabelSource::Unlabelled, ..Default::default() });
    assert_eq!(unlabelled.unwrap().len(), 7);

    // The same folder as .tar and .tar.gz, selected by split: same records and labels.
    let archives_guard = scratch("archives");
    let archives = archives_guard.path().to_path_buf();
    for (file, gzip) in [("set.tar", false), ("set.tar.gz", true)] {
        let path = archives.join(file);
        pack(&dir, &path, "train", gzip);
        let tar = TarImages::open(&path, Some("train")).unwrap();
        assert_eq!(tar.class_names(), folder.class_names(), "{file}");
        let tar_names: Vec<(String, Option<usize>)> =
            tar.list().records().iter().map(|r| (r.name.to_string(), r.label)).collect();
        let expected: Vec<(String, Option<usize>)> = names.iter().map(|(n, l)| (format!("train/{n}"), *l)).collect();
        assert_eq!(tar_names, expected, "{file}");
        assert_eq!(tar.skipped()[0].name, "train/loose.png");
        let batch = ImageBatcher::new(Transform::eval(10)).batch(tar.list().records().to_vec(), &device());
        assert_eq!(batch.labels.clone().unwrap().try_into_vec_as::<i64>().unwrap(), [0, 0, 1, 1, 2, 2]);
        assert_near(pixel_of(&batch, "train/dog/a.png", 3, 3), [200, 0, 0], 0, file);
        assert!(matches!(TarImages::open(&path, Some("test")), Err(DataError::SplitNotFound { .. })));
    }
    // Broken archives: a cut gzip stream, a file that is no tar at all, a folder.
    let gz = std::fs::read(archives.join("set.tar.gz")).unwrap();
    std::fs::write(archives.join("cut.tar.gz"), &gz[..gz.len() / 2]).unwrap();
    let error = TarImages::open(archives.join("cut.tar.gz"), Some("train")).unwrap_err();
    assert!(matches!(error, DataError::Archive { .. }), "{error:?}");
    std::fs::write(archives.join("photo.tar"), encode(&noise(64, 64), image::ImageFormat::Png)).unwrap();
    let error = TarImages::open(archives.join("photo.tar"), None).unwrap_err();
    assert!(matches!(error, DataError::Archive { .. }), "{error:?}");
    assert!(matches!(TarImages::open(&dir, None), Err(DataError::Input(_))));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&archives).ok();
}

/// Every item of a loader, by name: (label, pixels).
fn collect(loader: &dyn burn::data::dataloader::DataLoader<ImageBatch>) -> HashMap<String, (i64, Vec<f32>)> {
    let mut items = HashMap::new();
    for batch in loader.iter() {
        let batch = batch.unwrap();
        let labels = batch.labels.unwrap().try_into_vec_as::<i64>().unwrap();
        let pixels = batch.images.try_into_vec_as::<f32>().unwrap();
        let per_image = pixels.len() / batch.names.len();
        for (i, name) in batch.names.into_iter().enumerate() {
            let previous = items.insert(name, (labels[i], pixels[i * per_image..(i + 1) * per_image].to_vec()));
            assert!(previous.is_none(), "an item came twice");
        }
    }
    items
}

#[test]
fn multi_worker_loading_gives_the_same_items_as_one_worker() {
    // 120 test images in a shuffled epoch order, resized 32 -> 24 px and randomly flipped.
    let order: Vec<usize> = epoch_order(cifar_test().len(), 11, 0).into_iter().take(120).collect();
    let subset = || SelectionDataset::from_indices_checked(cifar_test().clone(), order.clone());
    let load = |workers: usize, batcher: &ImageBatcher| {
        let loader = DataLoaderBuilder::new(batcher.clone())
            .batch_size(16)
            .num_workers(workers)
            .set_device(device())
            .build(subset());
        collect(loader.as_ref())
    };
    let fixed = ImageBatcher::new(Transform::train(24, 3));
    fixed.set_epoch(1);
    let reference = load(0, &fixed);
    assert_eq!(reference.len(), 120);
    assert_eq!(load(1, &fixed), reference, "1 worker");
    assert_eq!(load(3, &fixed), reference, "3 workers");

    // Counted epochs (no hook in the loop): pass k of a multi-worker loader equals epoch k.
    let counted = ImageBatcher::new(Transform::train(24, 3));
    let loader =
        DataLoaderBuilder::new(counted.clone()).batch_size(16).num_workers(3).set_device(device()).build(subset());
    let pass0 = collect(loader.as_ref());
    let pass1 = collect(loader.as_ref());
    fixed.set_epoch(0);
    assert_eq!(pass0, load(2, &fixed), "first pass = epoch 0");
    assert_eq!(pass1, reference, "second pass = epoch 1");
    assert_ne!(pass0, pass1, "flips change between epochs");
    // Resuming at epoch 1 replays it.
    counted.count_epochs_from(1);
    assert_eq!(collect(loader.as_ref()), reference);

    // Explicit per-item epochs (the training stream's path) agree with the batcher's epoch.
    let items: Vec<(ImageRecord, u64)> = order[..16].iter().map(|&i| (cifar_test().get(i).unwrap(), 1)).collect();
    let explicit = counted.batch_with_epochs(&items, &device());
    for (i, name) in explicit.names.iter().enumerate() {
        let pixels = explicit.images.clone().narrow(0, i, 1).try_into_vec_as::<f32>().unwrap();
        assert_eq!(pixels, reference[name].1, "{name}");
    }
}

#[test]
fn png_grids_and_tensor_conversions() {
    let device = device();
    // Rounding and clamping to 8 bits.
    let values = TensorData::new(vec![-0.5f32, 0.5, 1.5, f32::NAN, 0.2, 1.0], [1, 3, 1, 2]);
    let images = tensor_to_images(Tensor::<4>::from_data(values, &device)).unwrap();
    assert_eq!(images[0].as_raw(), &[0, 255, 51, 128, 0, 255]);
    assert!(tensor_to_images(Tensor::<4>::zeros([1, 4, 2, 2], &device)).is_err());

    // [5, 3, 4, 6] -> a 2-column grid, 2 px black padding: 18 x 20 px.
    let tiles: Vec<RgbImage> = (0..5u8).map(|k| solid(6, 4, [40 * k + 10, 255 - 40 * k, 7 * k])).collect();
    let stacked = images_to_tensor(&tiles, &device).unwrap();
    assert_eq!(stacked.dims(), [5, 3, 4, 6]);
    assert_eq!(tensor_to_images(stacked.clone()).unwrap(), tiles, "round trip");
    let dir_guard = scratch("grid");
    let dir = dir_guard.path().to_path_buf();
    let path = dir.join("nested/recon.png");
    save_png_grid(&path, stacked, 2).unwrap();
    let grid = image::open(&path).unwrap().into_rgb8();
    assert_eq!(grid.dimensions(), (18, 20));
    for (k, tile) in tiles.iter().enumerate() {
        let (x, y) = (2 + (k as u32 % 2) * 8, 2 + (k as u32 / 2) * 6);
        assert_eq!(grid.get_pixel(x, y), tile.get_pixel(0, 0), "tile {k}");
        assert_eq!(grid.get_pixel(x + 5, y + 3), tile.get_pixel(5, 3), "tile {k}");
    }
    assert_eq!(grid.get_pixel(0, 0).0, [0, 0, 0]);
    assert_eq!(grid.get_pixel(17, 19).0, [0, 0, 0], "the missing sixth tile stays black");
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");

    assert!(matches!(image_grid(&tiles, 0, 2), Err(DataError::Input(_))));
    assert!(matches!(images_to_tensor(&[solid(2, 2, [0; 3]), solid(3, 2, [0; 3])], &device), Err(DataError::Input(_))));
    image_io::save_png(&dir.join("one.png"), &tiles[1]).unwrap();
    assert_eq!(image_io::load_rgb(&dir.join("one.png")).unwrap(), tiles[1]);
    std::fs::remove_dir_all(&dir).ok();
}

/// FNV-1a 64 of a byte string (the `fnv` crate, as the token-cache fingerprint).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = fnv::FnvHasher::default();
    hash.write(bytes);
    hash.finish()
}

#[test]
fn resize_is_bit_exact_with_pillow() {
    // Expected: FNV-1a of `np.asarray(Image.fromarray(input).resize((w, h), Image.BICUBIC))`
    // computed with Pillow 13.0.0 on the same inputs.
    let pattern = |w: u32, h: u32| {
        RgbImage::from_fn(w, h, |x, y| {
            let v = |c: u32| ((x * x * 3 + y * 7 + c * 50 + x * y) % 251) as u8;
            Rgb([v(0), v(1), v(2)])
        })
    };
    let cases = [
        ((37, 23), (25, 16), 0x7ff8_7912_c351_acfe_u64), // shrink both axes
        ((20, 13), (49, 32), 0xc3b1_27b9_b5b8_de4e),     // enlarge
        ((300, 200), (192, 128), 0xd278_0c1c_5bf2_da7c),
        ((64, 64), (64, 17), 0x1596_bd85_6217_b866), // vertical pass only
        ((64, 64), (19, 64), 0x16d8_e9a6_016f_ff87), // horizontal pass only
    ];
    for ((w, h), (ow, oh), expected) in cases {
        let out = titok_train::data::resize_bicubic(&pattern(w, h), ow, oh);
        assert_eq!(fnv1a(out.as_raw()), expected, "{w}x{h} -> {ow}x{oh}");
    }
    // Photos through the eval transform = torchvision Resize(S) + CenterCrop(S) on PIL
    // (china: 383 px wide, crop offset round(63.5) = 64, half to even).
    let photos = shared().join("photos");
    for (file, size, resized, cropped) in [
        ("skimage_chelsea.png", 128, 0xce2b_0182_16f0_18a2_u64, 0xb246_ea27_c3e8_94f1_u64),
        ("sklearn_china.png", 256, 0x09b0_decf_0b20_1a08, 0x31b6_fee1_537a_2889),
    ] {
        let photo = image_io::load_rgb(&photos.join(file)).unwrap();
        assert_eq!(fnv1a(resize_shorter_side(&photo, size).as_raw()), resized, "{file} resized");
        assert_eq!(fnv1a(Transform::eval(size).apply(&photo, 0, 0).unwrap().as_raw()), cropped, "{file} cropped");
    }
}
