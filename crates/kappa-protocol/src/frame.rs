//! Framing of simple-message-channels 1.2.1 (spec 3.4).
//!
//! ```text
//! frame  = varint(len(header) + len(body)) || header || body
//! header = varint(channel << 4 | type)
//! ```
//!
//! A zero-length frame (the single byte `00`) is a keep-alive. Lengths above
//! [`MAX_FRAME_LEN`] (8 MiB) and length varints longer than
//! [`MAX_LENGTH_VARINT`] bytes make JS destroy the stream; [`FrameDecoder`]
//! reports both as typed errors. The decoder is incremental: push bytes in any
//! chunking and pop complete frames.
//!
//! The decoder never allocates for a frame's declared length: it holds only the
//! bytes it was given, so a peer that announces an 8 MiB frame and sends one
//! byte costs one byte. A session lowers the limit (see
//! [`with_max_frame_len`](FrameDecoder::with_max_frame_len)) until the peer
//! has proven it knows a key (`PeerLimits` in the session module).

use crate::message::{DecodeError, Message};
use crate::varint::{self, VarintError};
use thiserror::Error;

/// The largest frame (header plus body) accepted or produced: 8 MiB.
pub const MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

/// The longest length prefix JS accepts (8 bytes).
pub const MAX_LENGTH_VARINT: usize = 8;

/// A decoder whose buffer is empty gives back a buffer larger than this.
const SHRINK_ABOVE: usize = 256 << 10;

/// The keep-alive frame.
pub const KEEP_ALIVE: [u8; 1] = [0];

/// The largest channel number that fits a frame header.
pub const MAX_CHANNEL: u64 = u64::MAX >> 4;

/// Framing errors.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length prefix is longer than [`MAX_LENGTH_VARINT`] bytes.
    #[error("frame length varint is longer than {MAX_LENGTH_VARINT} bytes")]
    LengthVarintTooLong,
    /// The frame is larger than the decoder's (or the encoder's) limit.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Declared frame length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The header varint inside a non-empty frame is invalid or truncated.
    #[error("invalid frame header: {0}")]
    InvalidHeader(VarintError),
    /// The message type does not fit in four bits.
    #[error("message type {0} is larger than 15")]
    InvalidType(u8),
    /// The channel number does not fit in a header.
    #[error("channel {0} is too large")]
    InvalidChannel(u64),
}

/// One non-empty frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The sender's channel id (0 = stream level).
    pub channel: u64,
    /// Message type, 0 to 15.
    pub type_id: u8,
    /// The message body.
    pub body: Vec<u8>,
}

impl Frame {
    /// Decodes the body according to `type_id` (see [`Message::decode`]).
    pub fn message(&self) -> Result<Message, DecodeError> {
        Message::decode(u64::from(self.type_id), &self.body)
    }

    /// Encodes the frame with its length prefix.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        encode_frame(self.channel, self.type_id, &self.body)
    }
}

/// What [`FrameDecoder::next_frame`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A keep-alive (`00`); JS ignores it on receipt.
    KeepAlive,
    /// A frame.
    Frame(Frame),
}

/// Encodes `varint(len) || varint(channel << 4 | type) || body`.
pub fn encode_frame(channel: u64, type_id: u8, body: &[u8]) -> Result<Vec<u8>, FrameError> {
    if type_id > 15 {
        return Err(FrameError::InvalidType(type_id));
    }
    if channel > MAX_CHANNEL {
        return Err(FrameError::InvalidChannel(channel));
    }
    let header = channel << 4 | u64::from(type_id);
    let len = varint::encoded_len(header) + body.len();
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len: len as u64, max: MAX_FRAME_LEN });
    }
    let mut out = Vec::with_capacity(len + varint::encoded_len(len as u64));
    varint::encode(len as u64, &mut out);
    varint::encode(header, &mut out);
    out.extend_from_slice(body);
    Ok(out)
}

/// Encodes `message` as a frame on `channel`.
pub fn encode_message(channel: u64, message: &Message) -> Result<Vec<u8>, FrameError> {
    encode_frame(channel, message.type_id(), &message.encode())
}

/// Incremental frame decoder.
///
/// Bytes may be pushed in any chunking; [`next_frame`](Self::next_frame)
/// returns frames as soon as they are complete. After an error the decoder
/// stays failed and keeps returning that error.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
    max_frame_len: usize,
    failed: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder with the JS limit of [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(MAX_FRAME_LEN)
    }

    /// A decoder with a custom frame size limit.
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        FrameDecoder { buf: Vec::new(), pos: 0, max_frame_len, failed: None }
    }

    /// Changes the frame size limit (a session raises it once the peer is
    /// verified). Applies to the frame being received too.
    pub fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.max_frame_len = max_frame_len;
    }

    /// The frame size limit.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The declared length of the frame being received, once its length prefix
    /// has arrived but not yet all of its bytes.
    pub fn pending_frame_len(&self) -> Option<usize> {
        let rest = &self.buf[self.pos..];
        match varint::decode(rest) {
            Ok((len, n)) if n <= MAX_LENGTH_VARINT && len <= self.max_frame_len as u64 => {
                let len = len as usize;
                (len > 0 && rest.len() - n < len).then_some(len)
            }
            _ => None,
        }
    }

    /// Bytes of memory the decoder holds (its buffer's capacity), for tests and
    /// accounting.
    pub fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends received bytes (only these are stored: nothing is reserved for
    /// the declared length of a frame).
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            // Everything was consumed: give a large buffer back.
            if self.buf.capacity() > SHRINK_ABOVE {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.pos = 0;
        } else if self.pos > 4096 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Number of buffered bytes not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Returns the next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Decoded>, FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.parse() {
            Err(err) => {
                self.failed = Some(err.clone());
                Err(err)
            }
            ok => ok,
        }
    }

    fn parse(&mut self) -> Result<Option<Decoded>, FrameError> {
        let rest = &self.buf[self.pos..];
        let (len, n) = match varint::decode(rest) {
            Ok((len, n)) if n <= MAX_LENGTH_VARINT => (len, n),
            Ok(_) | Err(VarintError::Overflow) => return Err(FrameError::LengthVarintTooLong),
            Err(VarintError::Truncated) if rest.len() >= MAX_LENGTH_VARINT => {
                return Err(FrameError::LengthVarintTooLong)
            }
            Err(VarintError::Truncated) => return Ok(None),
        };
        if len > self.max_frame_len as u64 {
            return Err(FrameError::TooLarge { len, max: self.max_frame_len });
        }
        let len = len as usize;
        if len == 0 {
            self.pos += n;
            return Ok(Some(Decoded::KeepAlive));
        }
        if rest.len() - n < len {
            return Ok(None);
        }
        let frame = &rest[n..n + len];
        let (header, hn) = varint::decode(frame).map_err(FrameError::InvalidHeader)?;
        let decoded =
            Frame { channel: header >> 4, type_id: (header & 15) as u8, body: frame[hn..].to_vec() };
        self.pos += n + len;
        Ok(Some(Decoded::Frame(decoded)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors() {
        let mut d = FrameDecoder::new();
        d.push(&[0x80; 8]);
        assert_eq!(d.next_frame(), Err(FrameError::LengthVarintTooLong));
        assert_eq!(d.next_frame(), Err(FrameError::LengthVarintTooLong));

        let mut d = FrameDecoder::with_max_frame_len(4);
        d.push(&[0x05]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge { len: 5, max: 4 }));

        let mut d = FrameDecoder::new();
        d.push(&[0x01, 0x80]);
        assert_eq!(d.next_frame(), Err(FrameError::InvalidHeader(VarintError::Truncated)));

        assert_eq!(encode_frame(1, 16, &[]), Err(FrameError::InvalidType(16)));
        assert_eq!(encode_frame(u64::MAX, 1, &[]), Err(FrameError::InvalidChannel(u64::MAX)));
    }

    #[test]
    fn partial_and_keep_alive() {
        let mut d = FrameDecoder::new();
        d.push(&[0x00, 0x05, 0x12]);
        assert_eq!(d.next_frame(), Ok(Some(Decoded::KeepAlive)));
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[0x08, 0x01, 0x10]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[0x00]);
        assert_eq!(
            d.next_frame(),
            Ok(Some(Decoded::Frame(Frame { channel: 1, type_id: 2, body: vec![8, 1, 0x10, 0] })))
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn a_claimed_length_is_not_allocated() {
        let mut d = FrameDecoder::new();
        let mut claim = Vec::new();
        varint::encode((MAX_FRAME_LEN - 1) as u64, &mut claim);
        claim.push(0x10);
        d.push(&claim);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.pending_frame_len(), Some(MAX_FRAME_LEN - 1));
        assert!(d.allocated() < 1024, "{} bytes allocated", d.allocated());
        for _ in 0..100 {
            d.push(&[0]);
        }
        assert!(d.allocated() < 1024, "{} bytes allocated", d.allocated());
    }

    #[test]
    fn a_lowered_limit_applies_and_a_raised_one_lets_the_frame_through() {
        let mut d = FrameDecoder::with_max_frame_len(16);
        d.push(&[0x20, 0x11]);
        assert_eq!(d.pending_frame_len(), None);
        d.set_max_frame_len(64);
        assert_eq!(d.pending_frame_len(), Some(32));
        d.push(&[7; 31]);
        assert!(matches!(d.next_frame(), Ok(Some(Decoded::Frame(f))) if f.body.len() == 31));
        let mut d = FrameDecoder::with_max_frame_len(16);
        d.push(&[0x20]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge { len: 32, max: 16 }));
    }

    #[test]
    fn a_large_buffer_is_given_back_once_consumed() {
        let mut d = FrameDecoder::new();
        let frame = encode_frame(1, 2, &vec![0; 1 << 20]).unwrap_or_default();
        d.push(&frame);
        assert!(matches!(d.next_frame(), Ok(Some(Decoded::Frame(_)))));
        d.push(&[0]);
        assert!(d.allocated() < 1024);
    }
}
