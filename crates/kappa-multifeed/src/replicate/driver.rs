//! Running an [`Exchange`] inside a protocol [`Session`] over a byte stream:
//! [`Multifeed::replicate`] and [`Multifeed::session`], and the registry of a
//! set's sessions.

use super::*;

/// Removes a session from its feed set's registry when dropped.
pub(super) struct Registration {
    mf: Multifeed,
    id: u64,
}

/// What the registry keeps of a session besides its handle.
#[derive(Debug, Clone)]
pub(crate) struct SessionMeta {
    pub(crate) peer: Option<String>,
    pub(crate) initiator: bool,
    pub(crate) live: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.mf.unregister_session(self.id);
    }
}

pub(super) fn lock(c: &Mutex<Exchange>) -> MutexGuard<'_, Exchange> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

impl Multifeed {
    /// Replicates the whole set with a peer over `stream` (see the module docs).
    ///
    /// Returns when a non-live session has synced everything both sides agreed
    /// on, when a live session is closed (by the peer, or by dropping the
    /// returned future), or with an error that says what went wrong: a peer with
    /// another shared key, an incompatible client, a timeout, or a misbehaving
    /// peer.
    pub async fn replicate<S>(&self, stream: S, opts: ReplicateOptions) -> Result<SyncReport, MultifeedError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (session, _handle) = self.session(stream, opts)?;
        session.await
    }

    /// Like [`replicate`](Self::replicate), also returning a handle to close a
    /// live session.
    #[allow(clippy::type_complexity)]
    pub fn session<S>(
        &self,
        stream: S,
        opts: ReplicateOptions,
    ) -> Result<
        (
            impl std::future::Future<Output = Result<SyncReport, MultifeedError>> + Send + 'static,
            SessionHandle,
        ),
        MultifeedError,
    >
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if self.is_closed() {
            return Err(MultifeedError::Closed);
        }
        let mut warnings = Vec::new();
        let shared = opts.shared_key.unwrap_or_else(|| {
            warnings.push(
                "using multifeed's public default shared key: anyone can replicate with this database; \
                 set a shared key"
                    .to_owned(),
            );
            DEFAULT_SHARED_KEY
        });
        let root = root_key(Some(shared));
        let popts = ProtocolOptions::new(opts.initiator)
            .wire(opts.wire)
            .responder_generation(opts.responder_generation)
            .live(opts.live)
            .timeouts(opts.timeout, opts.keep_alive.unwrap_or(opts.timeout / 2))
            .extensions(vec![
                HANDSHAKE.into(),
                MANIFEST.into(),
                REPLICATE_FEEDS.into(),
                REQUEST_FEEDS.into(),
            ]);
        let (opts_peer, opts_initiator, opts_live) = (opts.peer.clone(), opts.initiator, opts.live);
        let conn = Arc::new(Mutex::new(Exchange::new(self.clone(), opts)));
        let c2 = conn.clone();
        let (session, handle) = Session::new(stream, popts);
        let session = session.on_event(move |p, now, ev| lock(&c2).handle(p, now, ev));
        handle.open_channel(root);
        let announcer = handle.clone();
        let c3 = conn.clone();
        let mut added = self.subscribe();
        let registry = self.clone();
        let registered = handle.clone();
        let span = tracing::info_span!(
            "replicate",
            peer = opts_peer.as_deref(),
            initiator = opts_initiator,
            live = opts_live
        );
        let meta = SessionMeta { peer: opts_peer, initiator: opts_initiator, live: opts_live };
        let fut = async move {
            // Registered while running (for on-demand gets), also if dropped early.
            let _registration =
                Registration { mf: registry.clone(), id: registry.register_session(registered, meta) };
            // Feeds added during the session are offered to the peer, and
            // feeds deferred until their signature form is known (a
            // kappa-core 6 peer) once they change.
            let announce = async {
                let mut ended = false;
                loop {
                    // Listen first, then look: no change is missed, and no
                    // deferral made while the exchange handled a message (its
                    // manifest at the handshake) either.
                    let deferrals = lock(&c3).deferrals();
                    let deferred_more = deferrals.listen();
                    let mut changed: Vec<_> =
                        lock(&c3).deferred_feeds().iter().map(|f| f.changed()).collect();
                    changed.push(deferred_more);
                    for bytes in lock(&c3).announce_deferred() {
                        announcer.send_extension(MANIFEST, bytes);
                    }
                    let some_changed = async {
                        if changed.is_empty() {
                            futures::future::pending::<()>().await;
                        }
                        futures::future::select_all(changed).await;
                    };
                    let next_added = async {
                        if ended {
                            futures::future::pending::<()>().await;
                        }
                        added.next().await
                    };
                    futures::pin_mut!(some_changed, next_added);
                    match futures::future::select(next_added, some_changed).await {
                        futures::future::Either::Left((Some(FeedAdded { feed, .. }), _)) => {
                            let msg = lock(&c3).announce(*feed.public_key());
                            if let Some(bytes) = msg {
                                announcer.send_extension(MANIFEST, bytes);
                            }
                        }
                        futures::future::Either::Left((None, _)) => ended = true,
                        futures::future::Either::Right(_) => {}
                    }
                }
            };
            futures::pin_mut!(announce);
            let run = session.run();
            futures::pin_mut!(run);
            let report = match futures::future::select(run, announce).await {
                futures::future::Either::Left((r, _)) => r,
                futures::future::Either::Right(_) => unreachable!("the announcer never ends"),
            };
            match &report.end {
                EndReason::Failed(e) => Err(MultifeedError::Replication(e.clone())),
                _ => {
                    let r = lock(&conn).report(&report, warnings);
                    tracing::info!(
                        feeds = r.feeds.len(),
                        new_feeds = r.new_feeds.len(),
                        offered = r.offered.len(),
                        requested = r.requested.len(),
                        missing = r.missing.len(),
                        refused = r.refused.len(),
                        blocks_received = r.blocks_received(),
                        blocks_sent = r.blocks_sent(),
                        "feed exchange done"
                    );
                    Ok(r)
                }
            }
        }
        .instrument(span);
        Ok((fut, handle))
    }
}
