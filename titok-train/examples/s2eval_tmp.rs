//! TEMPORARY (stage-2 experiments): LPIPS@64 / PSNR of stage-1 decode vs stage-2 export.
use std::path::Path;
use burn::data::dataloader::batcher::Batcher;
use burn::tensor::Device;
use titok_train::data::{ImageBatcher, Transform};
use titok_train::losses::Lpips;
use titok_train::stages::pixel_loss::perceptual_input;
use titok_train::stages::runner::{open_split, spread};
use titok_train::stages::stage2::load_stage2_model;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (vq, s1, s2) = (Path::new(&a[1]), Path::new(&a[2]), a.get(3));
    let device = Device::flex();
    let test = open_split(Path::new("/work/shared/data/cifar10-jpg.tar.gz"), "test").unwrap();
    let images = ImageBatcher::new(Transform::eval(32)).batch(spread(&test.records, 256), &device).images;
    let lpips = Lpips::load(Path::new("/work/shared/weights/lpips_alexnet.safetensors"), &device).unwrap();
    let m = |r: burn::tensor::Tensor<4>| {
        let r = r.clamp(0.0, 1.0);
        let d = lpips.distance(perceptual_input(r.clone(), 64), perceptual_input(images.clone(), 64)).unwrap().mean().into_scalar::<f64>();
        let p = titok_train::eval::psnr(r, images.clone()).unwrap().mean().into_scalar::<f64>();
        (d, p)
    };
    let teacher = titok_model::checkpoint::load_vqgan(vq, &device).unwrap();
    println!("teacher {:?}", m(teacher.decode_codes(teacher.encode(images.clone()))));
    let start = load_stage2_model(s1, Some(vq), &device).unwrap();
    let toks = start.encode(images.clone()).unwrap().tokens.unwrap();
    let v: Vec<i64> = toks.clone().try_into_vec_as::<i64>().unwrap();
    let k = toks.dims()[1];
    let mut distinct = std::collections::BTreeSet::new();
    for row in v.chunks(k) { distinct.insert(row.to_vec()); }
    let per_pos: Vec<usize> = (0..k).map(|j| v.chunks(k).map(|r| r[j]).collect::<std::collections::BTreeSet<_>>().len()).collect();
    println!("distinct token sequences {} of {}; distinct ids per position {:?}", distinct.len(), v.len() / k, per_pos);
    let logits = start.decode_with_intermediates(start.encode(images.clone()).unwrap().latents).decoder.out;
    let [b, n, h, w] = logits.dims();
    let codes = logits.clone().reshape([b, n, h * w]).argmax(1).reshape([b, h * w]);
    println!("stage1 argmax {:?}", m(teacher.decode_codes(codes)));
    let r0 = start.reconstruct(images.clone()).unwrap();
    let var0 = (r0.clone() - r0.clone().mean_dim(0)).square().mean().into_scalar::<f64>();
    let lv = (logits.clone() - logits.clone().mean_dim(0)).square().mean().into_scalar::<f64>();
    let enc = start.encode(images.clone()).unwrap().latents;
    let ev = (enc.clone() - enc.clone().mean_dim(0)).square().mean().into_scalar::<f64>();
    println!("stage2 step0 {:?} var {var0:.3e}; logits var {lv:.3e}; latents var {ev:.3e}", m(r0));
    if let Some(s2) = s2 {
        // The export's pixel decoder is the trained one: read with the teacher's architecture,
        // then load the export's weights strictly.
        let mut cfg = start.config.clone();
        cfg.finetune_decoder = true;
        let model = titok_model::checkpoint::load_safetensors(titok_model::Titok::new(&cfg, &device).unwrap(), &Path::new(s2).join("model.safetensors"), &titok_model::checkpoint::keymap::TITOK).unwrap();
        let r = model.reconstruct(images.clone()).unwrap();
        let spread = (r.clone() - r.clone().mean_dim(0)).square().mean().into_scalar::<f64>();
        let data_spread = (images.clone() - images.clone().mean_dim(0)).square().mean().into_scalar::<f64>();
        println!("stage2 trained {:?}; variance across images {spread:.3e} (data {data_spread:.5})", m(r));
    }
}
