//! The per-feed replication logic of hypercore 8 (`lib/replicate.js`), one
//! instance per feed per session, once both sides have opened the feed's channel.
//!
//! It mirrors what JS peers do and rely on (spec §3.9): a writer announces
//! `Status{uploading, downloading: false}`; a downloader sends `Want`s in 1 MiB
//! block ranges, learns what the uploader has from `Have`s (RLE bitfields), and
//! pipelines `Request`s; the uploader answers with `Data` and a proof. Every block
//! is verified against a signed root before it is stored ([`SharedFeed::put`]); a
//! bad one ends the session. Non-live channels finish with `Status{downloading:
//! false}` and `Close` once neither side wants anything more.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::time::Instant;

use kappa_log::{
    Changes, Feed, LogError, Node, Proof, PutOutcome, RemoteTree, SharedFeed, Signature, SignatureForm,
};

use crate::message::{Data, DataNode, Have, Message, Options, Request, Status, Want};
use crate::session::{FeedOptions, FeedStats, ProtocolError, Selection};
use kappa_log::RangeSet;

/// Blocks per `Want` (hypercore's 1 MiB-block ranges). Ranges must be multiples of
/// [`WANT_ALIGN`].
pub(crate) const WANT_SPAN: u64 = 1 << 20;
/// JS ignores Wants whose start or length is not a multiple of this.
pub(crate) const WANT_ALIGN: u64 = 8192;
/// The largest block index we accept from a peer.
const MAX_INDEX: u64 = 1 << 56;

pub(crate) struct Replicator {
    feed: SharedFeed,
    opts: FeedOptions,
    live: bool,
    max_in_flight: usize,
    /// We still want blocks from this peer.
    downloading: bool,
    uploading: bool,
    remote_has: RangeSet,
    remote_length: u64,
    remote_uploading: bool,
    remote_downloading: bool,
    /// The remote sent a Want: from now on we announce new blocks.
    remote_wanted: bool,
    /// The remote answered one of our Wants (we know what it has).
    want_answered: bool,
    want_sent_end: u64,
    in_flight: BTreeMap<u64, Instant>,
    next_scan: u64,
    seen_version: u64,
    received_here: RangeSet,
    /// What the peer has of the tree (from its digests and our proofs).
    remote_tree: RemoteTree,
    /// Blocks asked for explicitly (on-demand gets), beyond the selection.
    extra: RangeSet,
    /// The peer asked (in its feed Options) for a Have with `ack` after each
    /// block we store from it.
    pub(crate) remote_ack: bool,
    /// Blocks stored with deferred bitfield writes.
    unflushed: bool,
    /// The run of blocks stored since listeners were last told (they are
    /// told once per burst, by [`flush`](Self::flush), or when a block
    /// outside the run arrives).
    unannounced: Option<Range<u64>>,
    /// The peer is kappa-rs and keeps every proof node it is sent, so proofs may
    /// leave out nodes sent before (see [`COMPACT_PROOFS`](crate::session::COMPACT_PROOFS)).
    pub(crate) compact_proofs: bool,
    /// The peer runs a live session (it never says it is done downloading).
    pub(crate) peer_live: bool,
    done_status_sent: bool,
    pub(crate) stats: FeedStats,
    pub(crate) synced: bool,
    /// The peer's requests not answered yet, oldest first: answered as the
    /// output drains ([`Replicator::answer_queued`]), so a peer asking for many
    /// large blocks never makes us buffer them all, and sending overlaps with
    /// reading the blocks.
    queued: VecDeque<Request>,
    /// How many queued requests there are per block index, and how many of the
    /// oldest of them were cancelled (skipped when popped): a Cancel costs
    /// O(1), whatever the queue holds.
    queued_per_index: HashMap<u64, (u32, u32)>,
    /// Queued requests that were cancelled and not popped yet.
    cancelled_total: usize,
    /// The peer speaks kappa-core 6 (hypercore 8), which cannot verify a
    /// signature in the 40-byte form: it is served the feed as of its newest
    /// state signed in the 32-byte form ([`short_len`](Self::short_len)) and
    /// no further (see [`Replicator::serves_short_only`]).
    short_only: bool,
    /// The newest length whose state is signed in the 32-byte form.
    short_len: u64,
    /// The feed length up to which signature slots were looked at for
    /// `short_len`.
    short_scanned: u64,
    /// What `short_len` was when the peer last heard of our blocks.
    short_announced: u64,
    /// Signature slots below `short_len − 1` found to be in the 32-byte form
    /// or not (a sparse replica's proofs may carry an older signature).
    slot_forms: HashMap<u64, bool>,
}

/// Most unanswered requests a peer may have queued with us; more is a protocol
/// violation (JS hypercore 8 keeps at most 16 in flight; we ask for up to 1024).
pub(crate) const MAX_QUEUED_REQUESTS: usize = 1 << 16;

/// A local storage failure, its cause kept.
fn storage(e: LogError) -> ProtocolError {
    ProtocolError::Storage(std::sync::Arc::new(e))
}

fn node_of(n: &DataNode) -> Result<Node, ProtocolError> {
    let hash: [u8; 32] = n
        .hash
        .as_slice()
        .try_into()
        .map_err(|_| ProtocolError::Malformed("tree node hash is not 32 bytes"))?;
    if n.index >= kappa_log::flat::MAX_NODE {
        return Err(ProtocolError::Malformed("tree node index out of range"));
    }
    Ok(Node { index: n.index, hash, size: n.size })
}

impl Replicator {
    pub(crate) fn new(feed: SharedFeed, opts: FeedOptions, live: bool, max_in_flight: usize) -> Self {
        // A writer downloads only what it lost (holes, or signed entries its files
        // can no longer prove): replicating from a peer is how it is repaired.
        let wants = feed.lock().wants_blocks();
        let seen_version = feed.version();
        Replicator {
            downloading: opts.download && wants,
            uploading: opts.upload,
            feed,
            opts,
            live,
            max_in_flight: max_in_flight.max(1),
            remote_has: RangeSet::new(),
            remote_length: 0,
            remote_uploading: true,
            remote_downloading: true,
            remote_wanted: false,
            want_answered: false,
            want_sent_end: 0,
            in_flight: BTreeMap::new(),
            next_scan: 0,
            seen_version,
            received_here: RangeSet::new(),
            remote_tree: RemoteTree::new(),
            extra: RangeSet::new(),
            remote_ack: false,
            unflushed: false,
            unannounced: None,
            compact_proofs: false,
            peer_live: false,
            done_status_sent: false,
            stats: FeedStats::default(),
            queued: VecDeque::new(),
            queued_per_index: HashMap::new(),
            cancelled_total: 0,
            synced: false,
            short_only: false,
            short_len: 0,
            short_scanned: 0,
            short_announced: 0,
            slot_forms: HashMap::new(),
        }
    }

    /// Serve this peer only what a hypercore 8 (kappa-core 6) peer can verify.
    ///
    /// The rule: such a peer is served the feed as of its newest state signed
    /// in the 32-byte form, with that state's signature (or an older 32-byte
    /// one), and never a block past it: the blocks after it are not
    /// announced, requests for them are not answered, and
    /// [`FeedStats::withheld_from`] says from where. A feed whose
    /// newer states are signed in the 40-byte form (appended by hypercore 9,
    /// or replicated from a kappa-core 7 peer during the session) thus stops
    /// growing for this peer, and resumes when a newer state is signed in the
    /// 32-byte form; a feed whose older states are in the 40-byte form and
    /// whose head is not is served whole, every proof carrying a 32-byte
    /// signature. Call before [`on_open`](Self::on_open).
    pub(crate) fn serves_short_only(&mut self) {
        self.short_only = true;
        self.refresh_short();
        self.short_announced = self.short_len;
    }

    /// The length this peer may be served up to.
    fn served_len(&self, f: &Feed) -> u64 {
        if self.short_only {
            self.short_len.min(f.len())
        } else {
            f.len()
        }
    }

    /// Looks at the signature slots written since the last look for a newer
    /// state signed in the 32-byte form.
    fn refresh_short(&mut self) {
        if !self.short_only {
            return;
        }
        let mut f = self.feed.lock();
        let len = f.len();
        if len > self.short_scanned {
            // A slot that cannot be read proves nothing to this peer: it is
            // served the older state (the error shows up for whoever reads the
            // feed next).
            if let Ok(Some(n)) = f.newest_length_signed_in(SignatureForm::TreeHash, self.short_scanned) {
                self.short_len = self.short_len.max(n);
            }
            self.short_scanned = len;
        }
        if len > self.short_len {
            self.stats.withheld_from = Some(self.short_len);
        }
    }

    /// Messages to send when both sides have opened the channel.
    pub(crate) fn on_open(&mut self, out: &mut Vec<Message>) {
        if !(self.uploading && self.downloading) {
            out.push(Message::Status(Status::new(self.uploading, self.downloading)));
        }
        if !self.live && self.uploading && self.peer_live {
            // A non-live uploader facing a live peer (which never says it is
            // done) must learn when the peer holds everything: it asks for an
            // ack after each block the peer stores (JS and Rust peers both
            // answer with Haves marked `ack`), and, if it does not download
            // itself, what the peer has to begin with.
            out.push(Message::Options(Options { extensions: Vec::new(), ack: Some(true) }));
            if !self.downloading {
                out.push(Message::Want(Want { start: 0, length: Some(WANT_SPAN) }));
            }
        }
        if self.downloading {
            match &self.opts.selection {
                // Newest and From are resolved against the length the peer's
                // Haves reveal; learning it takes the first window's Want.
                Selection::All | Selection::Newest(_) | Selection::From(_) => self.send_next_want(out),
                Selection::Ranges(ranges) => {
                    // Want the aligned windows covering the selection.
                    let mut windows = RangeSet::new();
                    for r in ranges {
                        let start = r.start / WANT_ALIGN * WANT_ALIGN;
                        let end = r.end.div_ceil(WANT_ALIGN).saturating_mul(WANT_ALIGN);
                        windows.insert(start..end);
                    }
                    for w in windows.iter() {
                        out.push(Message::Want(Want { start: w.start, length: Some(w.end - w.start) }));
                    }
                    self.want_sent_end = windows.end();
                }
            }
        }
    }

    fn send_next_want(&mut self, out: &mut Vec<Message>) {
        out.push(Message::Want(Want { start: self.want_sent_end, length: Some(WANT_SPAN) }));
        self.want_sent_end += WANT_SPAN;
    }

    /// Asks for block `index` now (an on-demand get), whatever the selection;
    /// requests it at once if the peer is known to have it, else asks the peer
    /// about its window.
    pub(crate) fn want(&mut self, now: Instant, index: u64, out: &mut Vec<Message>) {
        if index >= MAX_INDEX || self.feed.has(index) {
            return;
        }
        self.extra.insert(index..index + 1);
        if !self.downloading || self.done_status_sent {
            // We had said we were done downloading: say we are not.
            out.push(Message::Status(Status::new(self.uploading, true)));
        }
        self.downloading = true;
        self.done_status_sent = false;
        self.synced = false;
        let window = index / WANT_SPAN * WANT_SPAN;
        if !self.remote_has.contains(index) {
            out.push(Message::Want(Want { start: window, length: Some(WANT_SPAN) }));
        }
        self.next_scan = self.next_scan.min(index);
        self.fill_requests(now, out);
    }

    fn selected(&self, i: u64) -> bool {
        if self.extra.contains(i) {
            return true;
        }
        match &self.opts.selection {
            Selection::All => true,
            Selection::Ranges(rs) => rs.iter().any(|r| r.contains(&i)),
            Selection::Newest(n) => i.saturating_add(*n) >= self.remote_length,
            Selection::From(s) => i >= *s,
        }
    }

    /// The first block the selection could want (where request scans start).
    fn selection_start(&self) -> u64 {
        let extra = self.extra.iter().next().map_or(u64::MAX, |r| r.start);
        extra.min(self.selection_start_of_selection())
    }

    fn selection_start_of_selection(&self) -> u64 {
        match &self.opts.selection {
            Selection::Newest(n) => self.remote_length.saturating_sub(*n),
            Selection::From(s) => *s,
            Selection::Ranges(rs) => rs.iter().map(|r| r.start).min().unwrap_or(0),
            Selection::All => 0,
        }
    }

    /// The remote announced blocks.
    pub(crate) fn on_have(
        &mut self,
        now: Instant,
        have: Have,
        out: &mut Vec<Message>,
    ) -> Result<(), ProtocolError> {
        let length = have.length_or_default();
        let end = have
            .start
            .checked_add(length)
            .filter(|&e| e <= MAX_INDEX)
            .ok_or(ProtocolError::OutOfRange("Have"))?;
        match &have.bitfield {
            Some(bits) => {
                let max = (length.div_ceil(8) as usize).min(1 << 24);
                let bytes =
                    crate::rle::decode(bits, max).map_err(|_| ProtocolError::Malformed("Have bitfield"))?;
                let mut run: Option<u64> = None;
                for (b, byte) in bytes.iter().enumerate() {
                    for k in 0..8u64 {
                        let i = have.start + 8 * b as u64 + k;
                        let set = byte & (0x80 >> k) != 0 && i < end;
                        match (set, run) {
                            (true, None) => run = Some(i),
                            (false, Some(s)) => {
                                self.remote_has.insert(s..i);
                                run = None;
                            }
                            _ => {}
                        }
                    }
                }
                if let Some(s) = run {
                    self.remote_has.insert(s..(have.start + 8 * bytes.len() as u64).min(end));
                }
                self.want_answered = true;
            }
            None if have.ack == Some(true) => {
                // The peer stored blocks we sent it.
                self.remote_has.insert(have.start..end);
                return Ok(());
            }
            None => self.remote_has.insert(have.start..end),
        }
        self.remote_length = self.remote_length.max(self.remote_has.end());
        self.next_scan = self.next_scan.min(have.start).max(self.selection_start());
        if self.downloading && !matches!(self.opts.selection, Selection::Ranges(_)) {
            // Ask about the windows the selection reaches (for Newest and From,
            // only those near the end of the feed).
            let from = (self.selection_start() / WANT_SPAN) * WANT_SPAN;
            if self.want_sent_end < from {
                self.want_sent_end = from;
            }
            while self.remote_length > self.want_sent_end {
                self.send_next_want(out);
            }
        }
        self.fill_requests(now, out);
        Ok(())
    }

    /// Requests what the remote has and we lack, up to the in-flight limit.
    pub(crate) fn fill_requests(&mut self, now: Instant, out: &mut Vec<Message>) {
        if !self.downloading || !self.remote_uploading {
            return;
        }
        let feed = self.feed.clone();
        let f = feed.lock();
        self.next_scan = self.next_scan.max(self.selection_start());
        while self.in_flight.len() < self.max_in_flight {
            let Some(i) = self.remote_has.next_member(self.next_scan) else { break };
            if i >= self.remote_length {
                break;
            }
            self.next_scan = i + 1;
            if f.has(i) || self.in_flight.contains_key(&i) || !self.selected(i) {
                continue;
            }
            let nodes = f.digest(i);
            out.push(Message::Request(Request {
                index: i,
                bytes: Some(0),
                hash: Some(false),
                nodes: Some(nodes),
            }));
            self.in_flight.insert(i, now);
        }
    }

    /// A block arrived: verify, store, request more.
    pub(crate) fn on_data(
        &mut self,
        now: Instant,
        data: Data,
        out: &mut Vec<Message>,
    ) -> Result<(), ProtocolError> {
        if data.index >= MAX_INDEX {
            return Err(ProtocolError::OutOfRange("Data index"));
        }
        if self.in_flight.remove(&data.index).is_none() {
            // Unrequested (or answered after we stopped asking): JS drops these.
            return Ok(());
        }
        let nodes = data.nodes.iter().map(node_of).collect::<Result<Vec<_>, _>>()?;
        let signature = match &data.signature {
            Some(s) => Some(
                Signature::try_from_slice(s)
                    .map_err(|_| ProtocolError::Malformed("signature is not 64 bytes"))?,
            ),
            None => None,
        };
        let Some(value) = &data.value else {
            return Err(ProtocolError::Malformed("Data without a value for a block request"));
        };
        let proof = Proof { nodes, signature };
        match self.feed.put_deferred_unannounced(data.index, value, &proof) {
            Ok(outcome) => {
                if outcome == PutOutcome::Stored {
                    self.unannounced = match self.unannounced.take() {
                        Some(run) if run.end == data.index => Some(run.start..data.index + 1),
                        other => {
                            if let Some(run) = other {
                                self.feed.notify_added(run);
                            }
                            Some(data.index..data.index + 1)
                        }
                    };
                }
                self.stats.blocks_down += 1;
                self.stats.bytes_down += value.len() as u64;
                self.received_here.insert(data.index..data.index + 1);
                self.unflushed = true;
                if self.remote_ack {
                    out.push(Message::Have(Have {
                        start: data.index,
                        length: Some(1),
                        bitfield: None,
                        ack: Some(true),
                    }));
                }
            }
            Err(LogError::Proof { index, source }) => {
                return Err(ProtocolError::BadBlock { index, source });
            }
            Err(e) => return Err(storage(e)),
        }
        self.fill_requests(now, out);
        Ok(())
    }

    /// The remote asked for a block: queued, answered as the output drains.
    pub(crate) fn on_request(&mut self, req: Request) -> Result<(), ProtocolError> {
        if req.index >= MAX_INDEX {
            return Err(ProtocolError::OutOfRange("Request index"));
        }
        if !self.uploading || req.bytes.unwrap_or(0) != 0 {
            return Ok(());
        }
        // Cancelled requests wait in the queue until popped: they count against
        // a looser bound only.
        let live = self.queued.len() - self.cancelled_total;
        if live >= MAX_QUEUED_REQUESTS || self.queued.len() >= 2 * MAX_QUEUED_REQUESTS {
            return Err(ProtocolError::Malformed("too many unanswered requests"));
        }
        self.queued_per_index.entry(req.index).or_default().0 += 1;
        self.queued.push_back(req);
        Ok(())
    }

    /// The remote no longer wants block `index` (Cancel): the requests for it
    /// queued so far are dropped.
    pub(crate) fn on_cancel(&mut self, index: u64) {
        if let Some((queued, cancelled)) = self.queued_per_index.get_mut(&index) {
            self.cancelled_total += (*queued - *cancelled) as usize;
            *cancelled = *queued;
        }
    }

    /// Drops every queued request (the channel is closed).
    pub(crate) fn clear_queued(&mut self) {
        self.queued.clear();
        self.queued_per_index.clear();
        self.cancelled_total = 0;
    }

    /// Whether requests wait for an answer.
    pub(crate) fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// The next queued request that was not cancelled.
    fn pop_queued(&mut self) -> Option<Request> {
        while let Some(req) = self.queued.pop_front() {
            let Some((queued, cancelled)) = self.queued_per_index.get_mut(&req.index) else {
                return Some(req);
            };
            *queued -= 1;
            let skip = *cancelled > 0;
            if skip {
                *cancelled -= 1;
                self.cancelled_total -= 1;
            }
            if *queued == 0 {
                self.queued_per_index.remove(&req.index);
            }
            if !skip {
                return Some(req);
            }
        }
        None
    }

    /// Answers queued requests, oldest first, until about `budget` bytes are
    /// out (block values, plus a flat cost per answer for its proof); returns
    /// that count.
    pub(crate) fn answer_queued(
        &mut self,
        budget: usize,
        out: &mut Vec<Message>,
    ) -> Result<usize, ProtocolError> {
        /// What an answer costs besides its value (proof nodes, signature).
        const PER_ANSWER: usize = 256;
        let mut sent = 0;
        while sent < budget {
            let Some(req) = self.pop_queued() else { break };
            sent += self.answer(req, out)? + PER_ANSWER;
        }
        Ok(sent)
    }

    /// Answers one request (nothing if we lack the block); returns the value's size.
    fn answer(&mut self, req: Request, out: &mut Vec<Message>) -> Result<usize, ProtocolError> {
        if !self.uploading {
            return Ok(0);
        }
        let hash = req.hash.unwrap_or(false);
        let feed = self.feed.clone();
        let mut f = feed.lock();
        if !f.has(req.index) {
            return Ok(0);
        }
        let proof = if self.short_only {
            match self.short_proof(&mut f, &req, hash)? {
                Some(p) => p,
                None => return Ok(0),
            }
        } else {
            // A JS receiver stores proof nodes asynchronously, so it may not have the
            // nodes of our previous answer yet: for it, every proof stands alone.
            let mut fresh = RemoteTree::new();
            let remote = if self.compact_proofs { &mut self.remote_tree } else { &mut fresh };
            f.proof_for(req.index, req.nodes.unwrap_or(0), hash, remote).map_err(storage)?
        };
        let value = if hash { None } else { f.get(req.index).map_err(storage)? };
        drop(f);
        let size = value.as_ref().map_or(0, Vec::len);
        if value.is_some() {
            self.stats.blocks_up += 1;
            self.stats.bytes_up += size as u64;
        }
        out.push(Message::Data(Data {
            index: req.index,
            value,
            nodes: proof
                .nodes
                .iter()
                .map(|n| DataNode { index: n.index, hash: n.hash.to_vec(), size: n.size })
                .collect(),
            signature: proof.signature.map(|s| s.0.to_vec()),
        }));
        Ok(size)
    }

    /// A proof for a kappa-core 6 peer (see [`serves_short_only`](Self::serves_short_only)):
    /// one whose signature, if any, is in the 32-byte form; `None` if the
    /// block cannot be served to it.
    fn short_proof(
        &mut self,
        f: &mut Feed,
        req: &Request,
        hash: bool,
    ) -> Result<Option<Proof>, ProtocolError> {
        let short_len = self.short_len;
        if req.index >= short_len {
            self.stats.withheld_from = Some(short_len);
            return Ok(None);
        }
        let digest = req.nodes.unwrap_or(0);
        // As for any peer: compact proofs for a kappa-rs peer, each proof on its
        // own for a JS one. A proof not sent is taken back from the remote tree.
        let mut fresh = RemoteTree::new();
        let remote = if self.compact_proofs { &mut self.remote_tree } else { &mut fresh };
        remote.begin();
        let (proof, slot) = f.proof_and_slot(req.index, digest, hash, remote).map_err(storage)?;
        let usable = match slot {
            None => true,
            Some(s) if s + 1 == short_len => true,
            Some(s) if s + 1 < short_len => match self.slot_forms.get(&s) {
                Some(&short) => short,
                None => {
                    let short = f.signature_form_at(s + 1).map_err(storage)? == Some(SignatureForm::TreeHash);
                    if self.slot_forms.len() >= 4096 {
                        self.slot_forms.clear();
                    }
                    self.slot_forms.insert(s, short);
                    short
                }
            },
            Some(_) => false,
        };
        if usable {
            remote.commit();
            return Ok(Some(proof));
        }
        // The proof would carry a 40-byte signature: prove the block against
        // the newest state signed in the 32-byte form instead.
        remote.rollback();
        remote.begin();
        let proof = f.proof_at(req.index, digest, hash, remote, short_len).map_err(storage)?;
        remote.commit();
        if proof.is_none() {
            // A sparse replica may lack a node of the way to that state.
            self.stats.withheld_from = Some(self.stats.withheld_from.map_or(req.index, |w| w.min(req.index)));
        }
        Ok(proof)
    }

    /// The remote wants to know what we have in a range.
    pub(crate) fn on_want(&mut self, want: Want, out: &mut Vec<Message>) -> Result<(), ProtocolError> {
        let length = want.length_or_default();
        if want.start.checked_add(length).is_none_or(|e| e > MAX_INDEX) {
            return Err(ProtocolError::OutOfRange("Want"));
        }
        if !self.uploading || !want.start.is_multiple_of(WANT_ALIGN) || !length.is_multiple_of(WANT_ALIGN) {
            return Ok(());
        }
        self.refresh_short();
        let feed = self.feed.clone();
        let f = feed.lock();
        let first = !self.remote_wanted;
        self.remote_wanted = true;
        let len = self.served_len(&f);
        if first && len > 0 && f.has(len - 1) {
            out.push(Message::Have(Have { start: len - 1, length: None, bitfield: None, ack: None }));
        }
        // The data bitfield bytes for blocks start .. start+length; bytes past what
        // the feed holds are zero, and the encoder drops trailing zeros anyway.
        let bytes = served_bits(&f, want.start, want.start + length, len);
        out.push(Message::Have(Have {
            start: want.start,
            length: Some(length),
            bitfield: Some(crate::rle::encode(&bytes)),
            ack: None,
        }));
        self.seen_version = feed.version();
        self.short_announced = self.short_len;
        Ok(())
    }

    pub(crate) fn on_status(&mut self, status: Status) {
        self.remote_uploading = status.uploading.unwrap_or(false);
        self.remote_downloading = status.downloading.unwrap_or(false);
        if !self.remote_uploading {
            self.in_flight.clear();
        }
    }

    pub(crate) fn on_unhave(&mut self, start: u64, length: u64) {
        self.remote_has.remove(start..start.saturating_add(length));
    }

    /// Whether the feed changed since [`on_local_change`](Self::on_local_change)
    /// (or the channel's opening) last looked: one lock of its change log.
    pub(crate) fn has_local_change(&self) -> bool {
        self.feed.version() != self.seen_version
    }

    /// Announces blocks that appeared locally since the last look.
    pub(crate) fn on_local_change(&mut self, out: &mut Vec<Message>) {
        let (changes, version) = self.feed.changes_since(self.seen_version);
        self.seen_version = version;
        self.refresh_short();
        if !self.remote_wanted || !self.uploading {
            return;
        }
        let announced = if self.short_only { self.short_announced } else { u64::MAX };
        self.short_announced = self.short_len;
        match changes {
            Changes::Ranges(ranges) => {
                for r in ranges {
                    // What a kappa-core 6 peer may not have yet is announced below.
                    let r = r.start..r.end.min(announced);
                    if r.is_empty() || self.received_here.contains_range(&r) {
                        continue; // it came from this peer
                    }
                    let length = if r.end - r.start == 1 { None } else { Some(r.end - r.start) };
                    out.push(Message::Have(Have { start: r.start, length, bitfield: None, ack: None }));
                }
                if self.short_only && self.short_len > announced {
                    // A newer state signed in the 32-byte form: the blocks up to
                    // it we hold are news to this peer.
                    let f = self.feed.lock();
                    let mut i = announced;
                    while i < self.short_len {
                        if !f.has(i) {
                            i += 1;
                            continue;
                        }
                        let start = i;
                        while i < self.short_len && f.has(i) {
                            i += 1;
                        }
                        let length = if i - start == 1 { None } else { Some(i - start) };
                        out.push(Message::Have(Have { start, length, bitfield: None, ack: None }));
                    }
                }
            }
            Changes::Rescan => {
                let f = self.feed.lock();
                let served = self.served_len(&f);
                let bytes = served_bits(&f, 0, f.bitfield().data_bits(), served);
                let length = (bytes.len() as u64 * 8).div_ceil(WANT_ALIGN).max(1) * WANT_ALIGN;
                out.push(Message::Have(Have {
                    start: 0,
                    length: Some(length),
                    bitfield: Some(crate::rle::encode(&bytes)),
                    ack: None,
                }));
            }
        }
    }

    /// Whether there is nothing left to download from this peer (non-live).
    fn download_complete(&mut self) -> bool {
        if !self.downloading {
            return true;
        }
        if !self.remote_uploading {
            return true;
        }
        if !self.want_answered || !self.in_flight.is_empty() {
            return false;
        }
        let f = self.feed.lock();
        let mut i = self.selection_start();
        while let Some(m) = self.remote_has.next_member(i) {
            if m >= self.remote_length {
                break;
            }
            if self.selected(m) && !f.has(m) {
                return false;
            }
            i = m + 1;
        }
        true
    }

    /// Non-live bookkeeping: announce completion; returns whether the channel
    /// should close now.
    pub(crate) fn check_end(&mut self, out: &mut Vec<Message>) -> bool {
        if self.live {
            return false;
        }
        if self.downloading && self.download_complete() {
            self.downloading = false;
            self.synced = true;
            if !self.done_status_sent {
                self.done_status_sent = true;
                out.push(Message::Status(Status::new(self.uploading, false)));
            }
        }
        // The peer is done with this feed when it says so, or, for a live peer
        // (it never says so), when it has acked storing everything we have.
        let peer_done =
            !self.remote_downloading || !self.uploading || (self.peer_live && self.peer_has_all_of_ours());
        if peer_done && !self.remote_downloading {
            // Nothing we would still send is wanted.
            self.clear_queued();
        }
        if !self.downloading && peer_done && self.queued.is_empty() {
            if !self.opts.download || !self.feed.lock().wants_blocks() {
                // A peer that never downloaded says it is done uploading too.
                out.push(Message::Status(Status::new(false, false)));
            }
            self.synced = true;
            return true;
        }
        false
    }

    /// Whether the peer's Haves cover every block of our (complete) feed.
    fn peer_has_all_of_ours(&self) -> bool {
        if !self.want_answered {
            return false;
        }
        let f = self.feed.lock();
        if !f.is_complete() {
            return false;
        }
        // What the peer announced, and acked as stored.
        self.remote_has.contains_range(&(0..self.served_len(&f)))
    }

    /// Writes the bitfield pages of blocks stored since the last flush.
    /// Also tells the feed's listeners of the blocks stored since they were
    /// last told (even if the write fails: what was stored can be read).
    pub(crate) fn flush(&mut self) -> Result<(), ProtocolError> {
        let written = if self.unflushed {
            self.unflushed = false;
            self.feed.flush_deferred().map_err(storage)
        } else {
            Ok(())
        };
        if let Some(run) = self.unannounced.take() {
            self.feed.notify_added(run);
        }
        written
    }

    /// The length the peer announced (for status).
    pub(crate) fn remote_length(&self) -> u64 {
        self.remote_length
    }

    /// Our requests the peer has not answered yet (for status).
    pub(crate) fn requests_in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// The data bitfield bytes for blocks `start .. end` (`start` a multiple of
/// 8), with the bits of blocks from `served` on cleared; bytes past what the
/// feed holds are left out (the encoder drops trailing zeros anyway).
fn served_bits(f: &Feed, start: u64, end: u64, served: u64) -> Vec<u8> {
    let first_byte = start / 8;
    let last_byte = end.min(served).div_ceil(8).min(f.bitfield().data_bits() / 8);
    (first_byte..last_byte.max(first_byte))
        .map(|b| {
            let byte = f.bitfield_byte(b);
            let past = (8 * b + 8).saturating_sub(served);
            if past >= 8 {
                0
            } else {
                // Bit 7 is block 8b: keep the first 8 − past blocks.
                byte & !((1u16 << past) - 1) as u8
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kappa_log::storage::MemoryProvider;
    use kappa_log::{Feed, KeyPair};

    fn replicator(blocks: u64) -> Replicator {
        let mut f =
            Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[3; 32])).open().unwrap();
        f.append_batch((0..blocks).map(|i| vec![i as u8; 1000])).unwrap();
        Replicator::new(SharedFeed::new(f), FeedOptions::default(), false, 16)
    }

    fn answered(out: &[Message]) -> Vec<u64> {
        out.iter().filter_map(|m| if let Message::Data(d) = m { Some(d.index) } else { None }).collect()
    }

    fn downloader(opts: FeedOptions) -> Replicator {
        let key = KeyPair::from_seed(&[3; 32]).public_key();
        let f = Feed::builder(MemoryProvider::new()).public_key(key).open().unwrap();
        Replicator::new(SharedFeed::new(f), opts, false, 16)
    }

    fn wants(out: &[Message]) -> Vec<(u64, u64)> {
        out.iter()
            .filter_map(
                |m| if let Message::Want(w) = m { Some((w.start, w.length_or_default())) } else { None },
            )
            .collect()
    }

    /// hypercore 9 (as hypercore 8) answers only Wants aligned to 8192 blocks;
    /// for a list of blocks it sends a Want for each block's window.
    #[test]
    fn a_list_of_blocks_gets_one_aligned_want_per_window_of_a_block() {
        let blocks = [10, 50, 20_000, 3_000_000, 3_000_001];
        let mut r = downloader(FeedOptions::sparse(blocks.iter().map(|&b| b..b + 1)));
        let mut out = Vec::new();
        r.on_open(&mut out);
        let w = wants(&out);
        assert_eq!(w, vec![(0, 8192), (16_384, 8192), (2_998_272, 8192)]);
        for &(start, length) in &w {
            assert!(start.is_multiple_of(WANT_ALIGN) && length.is_multiple_of(WANT_ALIGN));
        }
        for b in blocks {
            assert_eq!(w.iter().filter(|(s, l)| (*s..s + l).contains(&b)).count(), 1, "block {b}");
        }
    }

    #[test]
    fn want_windows_start_at_the_selections_aligned_start() {
        // A range: its first window is the one holding its first block.
        let mut r = downloader(FeedOptions::sparse_range(20_000..30_000));
        let mut out = Vec::new();
        r.on_open(&mut out);
        assert_eq!(wants(&out), vec![(16_384, 16_384)]);

        // From a sequence: the first 1 MiB-block window (hypercore 9 always
        // asks about it), then, once the peer's length is known, the windows
        // from the one holding the start to the end.
        let mut r =
            downloader(FeedOptions { selection: Selection::From(3_000_000), ..FeedOptions::default() });
        let mut out = Vec::new();
        r.on_open(&mut out);
        assert_eq!(wants(&out), vec![(0, WANT_SPAN)]);
        out.clear();
        let have = Have { start: 4_000_000, length: None, bitfield: None, ack: None };
        r.on_have(Instant::now(), have, &mut out).unwrap();
        assert_eq!(wants(&out), vec![(2 * WANT_SPAN, WANT_SPAN), (3 * WANT_SPAN, WANT_SPAN)]);
    }

    #[test]
    fn requests_are_answered_within_the_budget_in_order_and_cancel_drops_one() {
        let mut r = replicator(10);
        for i in [4, 1, 7, 2, 9] {
            r.on_request(Request::new(i)).unwrap();
        }
        r.on_cancel(7);
        r.on_request(Request::new(7)).unwrap(); // asked again after the cancel
        let mut out = Vec::new();
        // Each block is 1000 bytes (plus 256 for its proof): a 1500-byte
        // budget answers two.
        assert_eq!(r.answer_queued(1500, &mut out).unwrap(), 2 * 1256);
        assert_eq!(answered(&out), vec![4, 1]);
        assert!(r.has_queued());
        out.clear();
        r.answer_queued(usize::MAX, &mut out).unwrap();
        assert_eq!(answered(&out), vec![2, 9, 7], "the cancelled request is skipped, the new one answered");
        assert!(!r.has_queued());
    }

    #[test]
    fn a_peer_queueing_too_many_requests_is_a_protocol_violation() {
        let mut r = replicator(2);
        for _ in 0..MAX_QUEUED_REQUESTS {
            r.on_request(Request::new(0)).unwrap();
        }
        assert!(matches!(r.on_request(Request::new(1)), Err(ProtocolError::Malformed(_))));
        // Cancelled requests do not count against the limit (only against one
        // twice as loose).
        r.on_cancel(0);
        for _ in 0..MAX_QUEUED_REQUESTS {
            r.on_request(Request::new(1)).unwrap();
        }
        assert!(matches!(r.on_request(Request::new(1)), Err(ProtocolError::Malformed(_))));
        let mut out = Vec::new();
        r.answer_queued(usize::MAX, &mut out).unwrap();
        assert_eq!(answered(&out).len(), MAX_QUEUED_REQUESTS, "only the uncancelled are answered");
        assert_eq!(r.cancelled_total, 0);
    }
}
