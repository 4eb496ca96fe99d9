//! Progress bars for long work: indexing a view, a sync. Drawn on stderr, only
//! on a terminal and without `--json`, and only once the work has taken a
//! moment (quick commands print no bar at all).

use std::future::Future;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use kappa_core::{Kappa, ViewHandle};

use crate::error::Result;

/// How often bars are refreshed.
const TICK: Duration = Duration::from_millis(100);
/// How long work runs before a bar appears.
const DELAY: Duration = Duration::from_millis(300);

fn bar(len: u64, template: &str, message: String) -> ProgressBar {
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let b = ProgressBar::new(len).with_style(style).with_message(message);
    b.enable_steady_tick(TICK);
    b
}

/// Runs `work` to completion, calling `update` every tick once `DELAY` has
/// passed (if `show`), with a bar it creates on first use.
async fn with_bar<T>(
    work: impl Future<Output = T>,
    show: bool,
    template: &str,
    message: String,
    mut update: impl FnMut(&ProgressBar),
) -> T {
    futures::pin_mut!(work);
    // Without a bar to draw, or for work already done, no timer (and so no
    // timer thread).
    if !show {
        return work.await;
    }
    if let std::task::Poll::Ready(out) = futures::poll!(work.as_mut()) {
        return out;
    }
    let start = Instant::now();
    let mut shown: Option<ProgressBar> = None;
    loop {
        match async_std::future::timeout(TICK, work.as_mut()).await {
            Ok(out) => {
                if let Some(b) = shown {
                    b.finish_and_clear();
                }
                return out;
            }
            Err(_) if show && start.elapsed() >= DELAY => {
                let b = shown.get_or_insert_with(|| bar(0, template, message.clone()));
                update(b);
            }
            Err(_) => {}
        }
    }
}

/// Waits until `view` has indexed everything stored locally, with a bar of its
/// indexed / total entries.
pub(crate) async fn index<V>(view: &ViewHandle<V>, show: bool) -> Result<()> {
    let name = view.name().to_owned();
    let work = view.ready();
    with_bar(
        work,
        show,
        "{msg} [{bar:40}] {pos}/{len} entries (eta {eta})",
        format!("indexing view {name}"),
        |b| {
            let st = view.state();
            b.set_length(st.total);
            b.set_position(st.indexed.min(st.total));
        },
    )
    .await?;
    Ok(())
}

/// Blocks downloaded and blocks known, over every feed.
fn downloaded(kappa: &Kappa) -> (u64, u64) {
    let mut have = 0;
    let mut total = 0;
    for feed in kappa.feeds() {
        let f = feed.lock();
        let len = f.len();
        total += len;
        have += f.downloaded(0..len);
    }
    (have, total)
}

/// Runs a sync, with a bar of the blocks stored locally over every block known
/// (which grows as the peer's feeds are learned).
pub(crate) async fn sync<T>(kappa: &Kappa, work: impl Future<Output = T>, show: bool, peer: &str) -> T {
    with_bar(
        work,
        show,
        "{msg} [{bar:40}] {pos}/{len} blocks ({elapsed})",
        format!("syncing with {peer}"),
        |b| {
            let (have, total) = downloaded(kappa);
            b.set_length(total);
            b.set_position(have);
        },
    )
    .await
}
