//! The progress bar of long loops over images (tokenizing a dataset, evaluation runs).

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar over `total` images with elapsed time, rate and ETA, labelled `message`
/// (drawn on stderr; hidden when stderr is not a terminal).
pub fn progress_bar(total: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} images ({per_sec}, eta {eta})")
    {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar
}
