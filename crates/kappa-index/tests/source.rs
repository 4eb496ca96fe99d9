//! An indexer over a feed set that is not a multifeed: any [`FeedSource`].

use std::sync::{Arc, Mutex, Weak};

use event_listener::Event;
use futures::executor::block_on;
use kappa_index::{FeedSource, IndexError, Indexer};
use kappa_log::{Feed, PublicKey, SharedFeed};
use kappa_view::sum::SumView;
use kappa_view::MemoryStore;

/// A plain list of feeds, with the watchers `watch` registered.
#[derive(Default)]
struct List {
    feeds: Mutex<Vec<SharedFeed>>,
    watchers: Mutex<Vec<Weak<Event>>>,
}

impl List {
    fn add(&self, feed: SharedFeed) {
        self.feeds.lock().unwrap().push(feed);
        for w in self.watchers.lock().unwrap().iter().filter_map(Weak::upgrade) {
            w.notify(usize::MAX);
        }
    }
}

impl FeedSource for List {
    fn visible_feeds(&self) -> Vec<SharedFeed> {
        self.feeds.lock().unwrap().clone()
    }
    fn feed(&self, key: &PublicKey) -> Option<SharedFeed> {
        self.feeds.lock().unwrap().iter().find(|f| f.public_key() == key).cloned()
    }
    fn watch(&self, wake: &Arc<Event>) {
        self.watchers.lock().unwrap().push(Arc::downgrade(wake));
    }
}

fn feed_of(values: &[&str]) -> SharedFeed {
    let mut f = Feed::in_memory().unwrap();
    for v in values {
        f.append(v.as_bytes()).unwrap();
    }
    SharedFeed::new(f)
}

#[test]
fn indexes_a_custom_feed_source_and_the_feeds_it_gains() -> Result<(), IndexError> {
    let list = Arc::new(List::default());
    list.add(feed_of(&["1\n", "2\n"]));
    let sum = Arc::new(SumView::new(Arc::new(MemoryStore::new())));
    let ix = Indexer::start("sum", sum.clone(), &list)?;
    block_on(ix.ready())?;
    assert_eq!(sum.get().unwrap(), 3.0);

    // A feed joins: the source's notification wakes the indexer.
    list.add(feed_of(&["4\n"]));
    block_on(ix.ready())?;
    assert_eq!(sum.get().unwrap(), 7.0);
    // An append to a feed already indexed: the feed's own notification.
    list.visible_feeds()[0].append("10\n").unwrap();
    block_on(ix.ready())?;
    assert_eq!(sum.get().unwrap(), 17.0);
    assert_eq!(ix.state().total, 4);
    Ok(())
}
