//! Replication entry points: one stream, sessions, serving.

use futures::io::{AsyncRead, AsyncWrite};
use futures::stream::StreamExt;
use kappa_multifeed::{MultifeedError, ReplicateOptions, SyncReport};
use kappa_protocol::SessionHandle;

use crate::{ConnectionGate, GenerationMemory, Kappa, KappaError, ServeOptions};

impl Kappa {
    fn options(&self, mut opts: ReplicateOptions) -> ReplicateOptions {
        if opts.shared_key.is_none() {
            opts.shared_key = self.inner.shared_key;
        }
        opts
    }

    /// Replicates with a peer over any byte stream (non-live: returns when both
    /// sides have everything; live: until closed). Uses the database's shared key
    /// unless `opts` sets one.
    pub async fn replicate<S>(&self, stream: S, opts: ReplicateOptions) -> Result<SyncReport, KappaError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.check_open()?;
        tracing::debug!(
            initiator = opts.initiator,
            live = opts.live,
            peer = opts.peer.as_deref(),
            "replicate: start"
        );
        let r = self.inner.mf.replicate(stream, self.options(opts)).await;
        trace_replicate_end(&r);
        Ok(r?)
    }

    /// Like [`replicate`](Self::replicate), also returning a handle to close a
    /// live session.
    #[allow(clippy::type_complexity)]
    pub fn replicate_session<S>(
        &self,
        stream: S,
        opts: ReplicateOptions,
    ) -> Result<
        (impl std::future::Future<Output = Result<SyncReport, KappaError>> + Send + 'static, SessionHandle),
        KappaError,
    >
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.check_open()?;
        tracing::debug!(
            initiator = opts.initiator,
            live = opts.live,
            peer = opts.peer.as_deref(),
            "replicate: start"
        );
        let (fut, handle) = self.inner.mf.session(stream, self.options(opts))?;
        Ok((
            async move {
                let r = fut.await;
                trace_replicate_end(&r);
                Ok(r?)
            },
            handle,
        ))
    }

    /// Serves: replicates live with every connection `incoming` yields (such as
    /// `TcpListener::incoming()` of async-std or smol), until `incoming` ends,
    /// then until the sessions still open end. Each session's end, and each
    /// failed accept, is handed to `on_end`. The sessions run inside this one
    /// future (nothing is spawned), so it works on any executor.
    ///
    /// A peer syncs with a served database by connecting and calling
    /// [`replicate`](Self::replicate) (non-live: it returns once both sides have
    /// everything, even though the server is live).
    ///
    /// ```
    /// use async_std::net::{TcpListener, TcpStream};
    /// use futures::StreamExt;
    /// use kappa_core::{Kappa, ReplicateOptions};
    /// # async_std::task::block_on(async {
    /// let server = Kappa::builder().shared_key([7; 32]).open()?;
    /// server.writer("local")?.append(&"hello")?;
    /// let listener = TcpListener::bind("127.0.0.1:0").await?;
    /// let addr = listener.local_addr()?;
    ///
    /// let client = Kappa::builder().shared_key([7; 32]).open()?;
    /// let mut ended = 0;
    /// let serving = server.serve(listener.incoming().take(1), |r| {
    ///     r.unwrap();
    ///     ended += 1;
    /// });
    /// let syncing = async {
    ///     let stream = TcpStream::connect(addr).await.unwrap();
    ///     client.replicate(stream, ReplicateOptions::new(true)).await
    /// };
    /// let (served, synced) = futures::join!(serving, syncing);
    /// served?;
    /// assert_eq!(synced?.blocks_received(), 1);
    /// assert_eq!(ended, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// At most [`ServeOptions::default`]'s 128 sessions run at once; a
    /// connection beyond that is closed at once and reported to `on_end` as
    /// [`KappaError::Refused`]. [`serve_with`](Self::serve_with) sets the caps
    /// and also caps sessions per peer address.
    pub async fn serve<I, S>(
        &self,
        incoming: I,
        on_end: impl FnMut(Result<SyncReport, KappaError>),
    ) -> Result<(), KappaError>
    where
        I: futures::Stream<Item = std::io::Result<S>>,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let incoming = incoming.map(|r| r.map(|s| (s, None)));
        self.serve_with(incoming, ServeOptions::default(), on_end).await
    }

    /// Like [`serve`](Self::serve), with caps on the sessions held at once:
    /// `incoming` yields each connection with its peer's IP address, if known
    /// (for the per-address cap). A connection over a cap is dropped (closed)
    /// before its handshake and reported to `on_end` as
    /// [`KappaError::Refused`]. What one session may cost before the peer
    /// proves the shared key is bounded by the protocol (see
    /// [`protocol::PeerLimits`](crate::protocol::PeerLimits)); docs/semantics.md gives the numbers.
    pub async fn serve_with<I, S>(
        &self,
        incoming: I,
        opts: ServeOptions,
        mut on_end: impl FnMut(Result<SyncReport, KappaError>),
    ) -> Result<(), KappaError>
    where
        I: futures::Stream<Item = std::io::Result<(S, Option<std::net::IpAddr>)>>,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let memory = GenerationMemory::for_options(&opts);
        let gate = ConnectionGate::new(opts.clone());
        let mut sessions = futures::stream::FuturesUnordered::new();
        let mut incoming = std::pin::pin!(incoming.fuse());
        loop {
            futures::select! {
                conn = incoming.next() => match conn {
                    Some(Ok((stream, peer))) => match gate.admit(peer) {
                        Ok(permit) => {
                            tracing::debug!(peer = ?peer, open = gate.open(), "serve: connection accepted");
                            let mut ropts = ReplicateOptions::new(false)
                                .live(true)
                                .wire(opts.wire)
                                .timeout(opts.timeout)
                                .responder_generation(memory.answer_for(peer));
                            ropts.peer = peer.map(|ip| ip.to_string());
                            let (fut, _handle) = self.replicate_session(stream, ropts)?;
                            let memory = memory.clone();
                            sessions.push(async move {
                                let r = fut.await;
                                drop(permit);
                                memory.record(peer, &r);
                                r
                            });
                        }
                        Err(refusal) => {
                            tracing::info!(
                                peer = ?refusal.peer,
                                per_address = refusal.per_address,
                                limit = refusal.limit,
                                "serve: connection refused (at the cap)"
                            );
                            drop(stream);
                            on_end(Err(KappaError::Refused(refusal)));
                        }
                    },
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "serve: accept failed");
                        on_end(Err(KappaError::Accept(e)))
                    }
                    None => break,
                },
                r = sessions.select_next_some() => on_end(r),
            }
        }
        while let Some(r) = sessions.next().await {
            on_end(r);
        }
        Ok(())
    }
}

/// Records how a replication ended (the session's and the feed exchange's
/// own events say more, inside their spans).
fn trace_replicate_end(r: &Result<SyncReport, MultifeedError>) {
    match r {
        Ok(report) => tracing::debug!(
            blocks_received = report.blocks_received(),
            blocks_sent = report.blocks_sent(),
            complete = report.is_complete(),
            "replicate: end"
        ),
        Err(e) => tracing::debug!(error = %e, cause = ?e, "replicate: failed"),
    }
}
