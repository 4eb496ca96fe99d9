//! How to replicate: [`ReplicateOptions`] and its key filters.

use super::*;

/// Decides per feed key (offer: which of ours to offer; accept: which offers to
/// take).
pub type KeyFilter = Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>;

/// How to replicate a feed set.
#[derive(Clone)]
#[non_exhaustive]
pub struct ReplicateOptions {
    /// Whether we dialled (the Noise initiator); the two peers must differ.
    pub initiator: bool,
    /// Keep replicating (and announcing new feeds) until closed.
    pub live: bool,
    /// The shared key; `None` uses [`DEFAULT_SHARED_KEY`] (see
    /// [`SyncReport::warnings`]).
    pub shared_key: Option<[u8; 32]>,
    /// Download feeds (default true).
    pub download: bool,
    /// Upload feeds (default true).
    pub upload: bool,
    /// Which local feeds to offer (default: all).
    pub offer: Option<KeyFilter>,
    /// Which offered feeds to accept (default: all).
    pub accept: Option<KeyFilter>,
    /// Which blocks to download of each accepted feed (default: all).
    pub selection: Selection,
    /// Fail if nothing is received for this long (default 20 s, as JS).
    pub timeout: Duration,
    /// Send a keep-alive after sending nothing for this long (default `None`:
    /// half of [`timeout`](Self::timeout), so a peer with the same timeout
    /// never times us out).
    pub keep_alive: Option<Duration>,
    /// Application data sent in the handshake (`userData`, visible to the peer).
    pub user_data: Option<Value>,
    /// Which wire generations the connection may speak (default
    /// [`Wire::Auto`]: as initiator, whichever the peer answers in).
    pub wire: Wire,
    /// The generation a responder with [`Wire::Auto`] answers in (default
    /// kappa-core 6; a server picks it per connection, see
    /// `kappa_core::GenerationMemory`).
    pub responder_generation: Generation,
    /// Who the peer is, for [`Multifeed::sessions`] (e.g. its address);
    /// never sent.
    pub peer: Option<String>,
}

impl std::fmt::Debug for ReplicateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicateOptions")
            .field("initiator", &self.initiator)
            .field("live", &self.live)
            .field("custom_shared_key", &self.shared_key.is_some())
            .field("download", &self.download)
            .field("upload", &self.upload)
            .field("wire", &self.wire)
            .finish_non_exhaustive()
    }
}

impl ReplicateOptions {
    /// Non-live, everything, the default shared key.
    pub fn new(initiator: bool) -> Self {
        ReplicateOptions {
            initiator,
            live: false,
            shared_key: None,
            download: true,
            upload: true,
            offer: None,
            accept: None,
            selection: Selection::All,
            timeout: Duration::from_secs(20),
            keep_alive: None,
            user_data: None,
            wire: Wire::Auto,
            responder_generation: Generation::KappaCore6,
            peer: None,
        }
    }

    /// Sets [`wire`](Self::wire).
    pub fn wire(mut self, wire: Wire) -> Self {
        self.wire = wire;
        self
    }

    /// Sets [`responder_generation`](Self::responder_generation).
    pub fn responder_generation(mut self, generation: Generation) -> Self {
        self.responder_generation = generation;
        self
    }

    /// Sets `live`.
    pub fn live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }

    /// Sets the shared key.
    pub fn shared_key(mut self, key: [u8; 32]) -> Self {
        self.shared_key = Some(key);
        self
    }

    /// Offers only the feeds `f` accepts.
    pub fn offer(mut self, f: impl Fn(&PublicKey) -> bool + Send + Sync + 'static) -> Self {
        self.offer = Some(Arc::new(f));
        self
    }

    /// Accepts only the offers `f` accepts.
    pub fn accept(mut self, f: impl Fn(&PublicKey) -> bool + Send + Sync + 'static) -> Self {
        self.accept = Some(Arc::new(f));
        self
    }

    /// Sets the silence timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`keep_alive`](Self::keep_alive).
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = Some(every);
        self
    }

    /// Sets [`peer`](Self::peer).
    pub fn peer(mut self, peer: impl Into<String>) -> Self {
        self.peer = Some(peer.into());
        self
    }
}
