//! The protobuf messages of hypercore-protocol 7 (`schema.proto` of
//! simple-hypercore-protocol 1.5.0) with a small hand-written proto2 codec.
//!
//! Every optional field is an [`Option`] (repeated fields a [`Vec`]), so that a
//! decoded message re-encodes to exactly the bytes it came from and so that the
//! encoder can reproduce the JS encoder byte for byte: fields are written in
//! field-number order, `None` is omitted, and `Some(0)` / `Some(false)` **are**
//! written. Accessors such as [`Have::length_or_default`] apply the proto2
//! decode defaults a JS receiver assumes.
//!
//! Decoding is total: unknown fields are skipped by wire type, a missing
//! required field, a known field with the wrong wire type, truncated input or an
//! unsupported wire type (groups) are [`DecodeError`]s, and no input can cause
//! an allocation larger than the input itself (inputs are capped at
//! [`MAX_MESSAGE_LEN`]). Strings are decoded like JS does (invalid UTF-8 is
//! replaced, never rejected). The schema has no packable repeated scalar
//! fields, so packed encoding does not occur.
//!
//! [`Extension`] (type 15) is not protobuf: its body is
//! `varint(extension id) || payload`.

use crate::varint::{self, VarintError};
use thiserror::Error;

/// The largest message body any decoder accepts (8 MiB, the JS frame limit).
pub const MAX_MESSAGE_LEN: usize = 8 * 1024 * 1024;

/// Why a message body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// A tag, varint field or length prefix is not a valid varint.
    #[error("invalid varint: {0}")]
    Varint(#[from] VarintError),
    /// The input is larger than [`MAX_MESSAGE_LEN`].
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A length-delimited or fixed-width field runs past the end of the input.
    #[error("field runs past the end of the message")]
    Truncated,
    /// A wire type protobuf does not define or that this codec does not support
    /// (groups).
    #[error("unsupported wire type {0}")]
    UnsupportedWireType(u8),
    /// A known field arrived with a wire type that does not match the schema.
    #[error("{message}.{field} has wire type {wire_type}, expected another")]
    WrongWireType {
        /// Message name.
        message: &'static str,
        /// Field name.
        field: &'static str,
        /// The wire type seen.
        wire_type: u8,
    },
    /// A required field is absent.
    #[error("{message} is missing required field {field}")]
    MissingField {
        /// Message name.
        message: &'static str,
        /// Field name.
        field: &'static str,
    },
    /// [`Message::decode`] was given a type that carries no message (11 to 14)
    /// or is out of range.
    #[error("unknown message type {0}")]
    UnknownType(u64),
}

// ---------------------------------------------------------------------------
// Low-level reader / writer

const WT_VARINT: u8 = 0;
const WT_FIXED64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_FIXED32: u8 = 5;

/// One field value as it appears on the wire.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl Value<'_> {
    fn wire_type(&self) -> u8 {
        match self {
            Value::Varint(_) => WT_VARINT,
            Value::Bytes(_) => WT_LEN,
            Value::Fixed => WT_FIXED64,
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], message: &'static str) -> Result<Self, DecodeError> {
        if buf.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLarge { len: buf.len(), max: MAX_MESSAGE_LEN });
        }
        Ok(Reader { buf, pos: 0, message })
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let (v, n) = varint::decode(rest)?;
        self.pos += n;
        Ok(v)
    }

    fn skip(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        let remaining = self.buf.len() - self.pos;
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated)?;
        if n > remaining {
            return Err(DecodeError::Truncated);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Next `(field number, value)`, or `None` at the end of the input.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = tag >> 3;
        let value = match (tag & 7) as u8 {
            WT_VARINT => Value::Varint(self.varint()?),
            WT_FIXED64 => {
                self.skip(8)?;
                Value::Fixed
            }
            WT_LEN => {
                let len = self.varint()?;
                Value::Bytes(self.skip(len)?)
            }
            WT_FIXED32 => {
                self.skip(4)?;
                Value::Fixed
            }
            other => return Err(DecodeError::UnsupportedWireType(other)),
        };
        Ok(Some((field, value)))
    }

    fn wrong(&self, field: &'static str, value: &Value<'_>) -> DecodeError {
        DecodeError::WrongWireType { message: self.message, field, wire_type: value.wire_type() }
    }

    fn u64(&self, field: &'static str, value: Value<'_>) -> Result<u64, DecodeError> {
        match value {
            Value::Varint(v) => Ok(v),
            other => Err(self.wrong(field, &other)),
        }
    }

    fn bool(&self, field: &'static str, value: Value<'_>) -> Result<bool, DecodeError> {
        self.u64(field, value).map(|v| v != 0)
    }

    fn bytes(&self, field: &'static str, value: Value<'a>) -> Result<&'a [u8], DecodeError> {
        match value {
            Value::Bytes(b) => Ok(b),
            other => Err(self.wrong(field, &other)),
        }
    }

    fn required<T>(&self, value: Option<T>, field: &'static str) -> Result<T, DecodeError> {
        value.ok_or(DecodeError::MissingField { message: self.message, field })
    }
}

fn put_tag(out: &mut Vec<u8>, field: u64, wire_type: u8) {
    varint::encode(field << 3 | u64::from(wire_type), out);
}

fn put_u64(out: &mut Vec<u8>, field: u64, value: u64) {
    put_tag(out, field, WT_VARINT);
    varint::encode(value, out);
}

fn put_bool(out: &mut Vec<u8>, field: u64, value: bool) {
    put_u64(out, field, u64::from(value));
}

fn put_bytes(out: &mut Vec<u8>, field: u64, value: &[u8]) {
    put_tag(out, field, WT_LEN);
    varint::encode(value.len() as u64, out);
    out.extend_from_slice(value);
}

fn opt_u64(out: &mut Vec<u8>, field: u64, value: Option<u64>) {
    if let Some(v) = value {
        put_u64(out, field, v);
    }
}

fn opt_bool(out: &mut Vec<u8>, field: u64, value: Option<bool>) {
    if let Some(v) = value {
        put_bool(out, field, v);
    }
}

fn opt_bytes(out: &mut Vec<u8>, field: u64, value: Option<&[u8]>) {
    if let Some(v) = value {
        put_bytes(out, field, v);
    }
}

// ---------------------------------------------------------------------------
// Messages

/// The Noise handshake payload: `{ 1 nonce: bytes (required) }`.
///
/// hypercore-protocol 7 puts a fresh 24-byte nonce here, which becomes the
/// XSalsa20 nonce of the sender's transport stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NoisePayload {
    /// The sender's transport nonce (24 bytes in practice).
    pub nonce: Vec<u8>,
}

impl NoisePayload {
    /// Encodes the message (protobuf).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.nonce.len() + 2);
        put_bytes(&mut out, 1, &self.nonce);
        out
    }

    /// Decodes the message (protobuf, proto2 semantics).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, "NoisePayload")?;
        let mut nonce = None;
        while let Some((field, value)) = r.next_field()? {
            if field == 1 {
                nonce = Some(r.bytes("nonce", value)?.to_vec());
            }
        }
        Ok(NoisePayload { nonce: r.required(nonce, "nonce")? })
    }
}

/// Type 0: open a channel for a feed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Open {
    /// 1: the feed's discovery key (required).
    pub discovery_key: Vec<u8>,
    /// 2: the capability proving knowledge of the feed key.
    pub capability: Option<Vec<u8>>,
}

impl Open {
    /// Encodes the message (protobuf).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, 1, &self.discovery_key);
        opt_bytes(&mut out, 2, self.capability.as_deref());
        out
    }

    /// Decodes the message (protobuf, proto2 semantics).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, "Open")?;
        let (mut discovery_key, mut capability) = (None, None);
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => discovery_key = Some(r.bytes("discoveryKey", value)?.to_vec()),
                2 => capability = Some(r.bytes("capability", value)?.to_vec()),
                _ => {}
            }
        }
        Ok(Open { discovery_key: r.required(discovery_key, "discoveryKey")?, capability })
    }
}

/// Type 1: extension names (sorted) and the ack flag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// 1 (repeated): extension names, sorted lexicographically by the sender.
    pub extensions: Vec<String>,
    /// 2: whether the sender wants acks (default false).
    pub ack: Option<bool>,
}

impl Options {
    /// Encodes the message (protobuf).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for name in &self.extensions {
            put_bytes(&mut out, 1, name.as_bytes());
        }
        opt_bool(&mut out, 2, self.ack);
        out
    }

    /// Decodes the message (protobuf, proto2 semantics).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, "Options")?;
        let mut msg = Options::default();
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => msg.extensions.push(String::from_utf8_lossy(r.bytes("extensions", value)?).into_owned()),
                2 => msg.ack = Some(r.bool("ack", value)?),
                _ => {}
            }
        }
        Ok(msg)
    }
}

/// Type 2: whether the sender is uploading / downloading.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// 1: uploading (JS decode default false; always send it).
    pub uploading: Option<bool>,
    /// 2: downloading (JS decode default false; always send it).
    pub downloading: Option<bool>,
}

impl Status {
    /// A status with both fields set, as JS peers expect.
    pub fn new(uploading: bool, downloading: bool) -> Self {
        Status { uploading: Some(uploading), downloading: Some(downloading) }
    }

    /// Encodes the message (protobuf).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        opt_bool(&mut out, 1, self.uploading);
        opt_bool(&mut out, 2, self.downloading);
        out
    }

    /// Decodes the message (protobuf, proto2 semantics).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, "Status")?;
        let mut msg = Status::default();
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => msg.uploading = Some(r.bool("uploading", value)?),
                2 => msg.downloading = Some(r.bool("downloading", value)?),
                _ => {}
            }
        }
        Ok(msg)
    }
}

/// Type 3: the sender has blocks `start..start+length` (or those set in
/// `bitfield`, an RLE bitfield, see [`crate::rle`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Have {
    /// 1: first block (required).
    pub start: u64,
    /// 2: number of blocks (decode default 1).
    pub length: Option<u64>,
    /// 3: RLE-encoded bitfield starting at `start`.
    pub bitfield: Option<Vec<u8>>,
    /// 4: ack flag (default false).
    pub ack: Option<bool>,
}

impl Have {
    /// `length`, or the proto2 default 1.
    pub fn length_or_default(&self) -> u64 {
        self.length.unwrap_or(1)
    }

    /// Encodes the message (protobuf).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_u64(&mut out, 1, self.start);
        opt_u64(&mut out, 2, self.length);
        opt_bytes(&mut out, 3, self.bitfield.as_deref());
        opt_bool(&mut out, 4, self.ack);
        out
    }

    /// Decodes the message (protobuf, proto2 semantics).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, "Have")?;
        let mut start = None;
        let mut msg = Have::default();
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => start = Some(r.u64("start", value)?),
                2 => msg.length = Some(r.u64("length", value)?),
                3 => msg.bitfield = Some(r.bytes("bitfield", value)?.to_vec()),
                4 => msg.ack = Some(r.bool("ack", value)?),
                _ => {}
            }
        }
        msg.start = r.required(start, "start")?;
        Ok(msg)
    }
}

macro_rules! range_message {
    ($(#[$doc:meta])* $name:ident, $label:literal, $default:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            /// 1: first block (required).
            pub start: u64,
            #[doc = concat!("2: number of blocks (decode default ", stringify!($default), ").")]
            pub length: Option<u64>,
        }

        impl $name {
            #[doc = concat!("`length`, or the proto2 default ", stringify!($default), ".")]
            pub fn length_or_default(&self) -> u64 {
                self.length.unwrap_or($default)
            }

            /// Encodes the message (protobuf).
            pub fn encode(&self) -> Vec<u8> {
                let mut out = Vec::new();
                put_u64(&mut out, 1, self.start);
                opt_u64(&mut out, 2, self.length);
                out
            }

            /// Decodes the message (protobuf, proto2 semantics).
            pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
                let mut r = Reader::new(buf, $label)?;
                let mut start = None;
                let mut length = None;
                while let Some((field, value)) = r.next_field()? {
                    match field {
                        1 => start = Some(r.u64("start", value)?),
                        2 => length = Some(r.u64("length", value)?),
                        _ => {}
                    }
                }
                Ok($name { start: r.required(start, "start")?, length })
            }
        }
    };
}

range_message!(
    /// Type 4: the sender no longer has these blocks.
    Unhave,
    "Unhave",
    1
);
range_message!(
    /// Type 5: the sender wants to hear about these blocks (`length` 0 = to the end).
    Want,
    "Want",
    0
);
range_message!(
    /// Type 6: the sender no longer wants these blocks (JS ignores it).
    Unwant,
    "Unwant",
    0
);

/// Type 7: request a block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// 1: block index (required).
    pub index: u64,
    /// 2: byte offset to seek to (default 0).
    pub bytes: Option<u64>,
    /// 3: only the hash is wanted (default false).
    pub hash: Option<bool>,
    /// 4: proof digest, see spec 3.11 (default 0 = full proof).
    pub nodes: Option<u64>,
}

impl Request {
    /// A request for block `index` with all four fields set (bytes 0, hash
    /// false, nodes 0), as JS sends it.
    pub fn new(index: u64) -> Self {
        Request { index, bytes: Some(0), hash: Some(false), nodes: Some(0) }
    }

    /// Encodes the message (protobuf).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_u64(&mut out, 1, self.index);
        opt_u64(&mut out, 2, self.bytes);
        opt_bool(&mut out, 3, self.hash);
        opt_u64(&mut out, 4, self.nodes);
        out
    }

    /// Decodes the message (protobuf, proto2 semantics).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, "Request")?;
        let mut index = None;
        let mut msg = Request::default();
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => index = Some(r.u64("index", value)?),
                2 => msg.bytes = Some(r.u64("bytes", value)?),
                3 => msg.hash = Some(r.bool("hash", value)?),
                4 => msg.nodes = Some(r.u64("nodes", value)?),
                _ => {}
            }
        }
        msg.index = r.required(index, "index")?;
        Ok(msg)
    }
}

/// Type 8: cancel a request (JS ignores it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cancel {
    /// 1: block index (required).
    pub index: u64,
    /// 2: byte offset.
    pub bytes: Option<u64>,
    /// 3: hash-only flag.
    pub hash: Option<bool>,
}

impl Cancel {
    /// Encodes the message (protobuf).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_u64(&mut out, 1, self.index);
        opt_u64(&mut out, 2, self.bytes);
        opt_bool(&mut out, 3, self.hash);
        out
    }

    /// Decodes the message (protobuf, proto2 semantics).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, "Cancel")?;
        let mut index = None;
        let mut msg = Cancel::default();
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => index = Some(r.u64("index", value)?),
                2 => msg.bytes = Some(r.u64("bytes", value)?),
                3 => msg.hash = Some(r.bool("hash", value)?),
                _ => {}
            }
        }
        msg.index = r.required(index, "index")?;
        Ok(msg)
    }
}

/// A tree node inside [`Data::nodes`]: `{1 index, 2 hash, 3 size}`, all required.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataNode {
    /// 1: flat-tree index.
    pub index: u64,
    /// 2: node hash (32 bytes in practice).
    pub hash: Vec<u8>,
    /// 3: byte size of the subtree.
    pub size: u64,
}

impl DataNode {
    /// Encodes the node (protobuf).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.hash.len() + 24);
        put_u64(&mut out, 1, self.index);
        put_bytes(&mut out, 2, &self.hash);
        put_u64(&mut out, 3, self.size);
        out
    }

    /// Decodes a node (protobuf, proto2 semantics).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, "Node")?;
        let (mut index, mut hash, mut size) = (None, None, None);
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => index = Some(r.u64("index", value)?),
                2 => hash = Some(r.bytes("hash", value)?.to_vec()),
                3 => size = Some(r.u64("size", value)?),
                _ => {}
            }
        }
        Ok(DataNode {
            index: r.required(index, "index")?,
            hash: r.required(hash, "hash")?,
            size: r.required(size, "size")?,
        })
    }
}

/// Type 9: a block (or only its proof) with its Merkle proof and signature.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Data {
    /// 1: block index (required).
    pub index: u64,
    /// 2: the block (absent for hash-only replies).
    pub value: Option<Vec<u8>>,
    /// 3 (repeated): proof nodes.
    pub nodes: Vec<DataNode>,
    /// 4: the tree signature (64 bytes in practice).
    pub signature: Option<Vec<u8>>,
}

impl Data {
    /// Encodes the message (protobuf).
    pub fn encode(&self) -> Vec<u8> {
        // Sized up front: a Data is encoded for every block sent.
        let value_len = self.value.as_ref().map_or(0, Vec::len);
        let sig_len = self.signature.as_ref().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(16 + value_len + self.nodes.len() * 56 + sig_len);
        put_u64(&mut out, 1, self.index);
        opt_bytes(&mut out, 2, self.value.as_deref());
        let mut node_buf = Vec::with_capacity(56);
        for node in &self.nodes {
            node_buf.clear();
            put_u64(&mut node_buf, 1, node.index);
            put_bytes(&mut node_buf, 2, &node.hash);
            put_u64(&mut node_buf, 3, node.size);
            put_bytes(&mut out, 3, &node_buf);
        }
        opt_bytes(&mut out, 4, self.signature.as_deref());
        out
    }

    /// Decodes the message (protobuf, proto2 semantics).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, "Data")?;
        let mut index = None;
        let mut msg = Data::default();
        while let Some((field, value)) = r.next_field()? {
            match field {
                1 => index = Some(r.u64("index", value)?),
                2 => msg.value = Some(r.bytes("value", value)?.to_vec()),
                3 => msg.nodes.push(DataNode::decode(r.bytes("nodes", value)?)?),
                4 => msg.signature = Some(r.bytes("signature", value)?.to_vec()),
                _ => {}
            }
        }
        msg.index = r.required(index, "index")?;
        Ok(msg)
    }
}

/// Type 10: close a channel (or refuse one by discovery key).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Close {
    /// 1: discovery key, when refusing a channel never opened locally.
    pub discovery_key: Option<Vec<u8>>,
}

impl Close {
    /// Encodes the message (protobuf).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        opt_bytes(&mut out, 1, self.discovery_key.as_deref());
        out
    }

    /// Decodes the message (protobuf, proto2 semantics).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, "Close")?;
        let mut msg = Close::default();
        while let Some((field, value)) = r.next_field()? {
            if field == 1 {
                msg.discovery_key = Some(r.bytes("discoveryKey", value)?.to_vec());
            }
        }
        Ok(msg)
    }
}

/// Type 15: an extension message, `varint(id) || payload` (not protobuf).
///
/// `id` is the index of the extension name in the sender's sorted
/// [`Options::extensions`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extension {
    /// The sender's extension id.
    pub id: u64,
    /// The raw payload.
    pub payload: Vec<u8>,
}

impl Extension {
    /// Encodes the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + varint::encoded_len(self.id));
        varint::encode(self.id, &mut out);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes the body.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        if buf.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLarge { len: buf.len(), max: MAX_MESSAGE_LEN });
        }
        let (id, n) = varint::decode(buf)?;
        Ok(Extension { id, payload: buf[n..].to_vec() })
    }
}

/// Any message that travels in a frame, tagged by its type number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Type 0.
    Open(Open),
    /// Type 1.
    Options(Options),
    /// Type 2.
    Status(Status),
    /// Type 3.
    Have(Have),
    /// Type 4.
    Unhave(Unhave),
    /// Type 5.
    Want(Want),
    /// Type 6.
    Unwant(Unwant),
    /// Type 7.
    Request(Request),
    /// Type 8.
    Cancel(Cancel),
    /// Type 9.
    Data(Data),
    /// Type 10.
    Close(Close),
    /// Type 15.
    Extension(Extension),
}

/// Type number of [`Open`].
pub const TYPE_OPEN: u8 = 0;
/// Type number of [`Options`].
pub const TYPE_OPTIONS: u8 = 1;
/// Type number of [`Status`].
pub const TYPE_STATUS: u8 = 2;
/// Type number of [`Have`].
pub const TYPE_HAVE: u8 = 3;
/// Type number of [`Unhave`].
pub const TYPE_UNHAVE: u8 = 4;
/// Type number of [`Want`].
pub const TYPE_WANT: u8 = 5;
/// Type number of [`Unwant`].
pub const TYPE_UNWANT: u8 = 6;
/// Type number of [`Request`].
pub const TYPE_REQUEST: u8 = 7;
/// Type number of [`Cancel`].
pub const TYPE_CANCEL: u8 = 8;
/// Type number of [`Data`].
pub const TYPE_DATA: u8 = 9;
/// Type number of [`Close`].
pub const TYPE_CLOSE: u8 = 10;
/// Type number of [`Extension`].
pub const TYPE_EXTENSION: u8 = 15;

impl Message {
    /// The frame type number (0 to 10, or 15).
    pub fn type_id(&self) -> u8 {
        match self {
            Message::Open(_) => TYPE_OPEN,
            Message::Options(_) => TYPE_OPTIONS,
            Message::Status(_) => TYPE_STATUS,
            Message::Have(_) => TYPE_HAVE,
            Message::Unhave(_) => TYPE_UNHAVE,
            Message::Want(_) => TYPE_WANT,
            Message::Unwant(_) => TYPE_UNWANT,
            Message::Request(_) => TYPE_REQUEST,
            Message::Cancel(_) => TYPE_CANCEL,
            Message::Data(_) => TYPE_DATA,
            Message::Close(_) => TYPE_CLOSE,
            Message::Extension(_) => TYPE_EXTENSION,
        }
    }

    /// Encodes the body (without frame header).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Open(m) => m.encode(),
            Message::Options(m) => m.encode(),
            Message::Status(m) => m.encode(),
            Message::Have(m) => m.encode(),
            Message::Unhave(m) => m.encode(),
            Message::Want(m) => m.encode(),
            Message::Unwant(m) => m.encode(),
            Message::Request(m) => m.encode(),
            Message::Cancel(m) => m.encode(),
            Message::Data(m) => m.encode(),
            Message::Close(m) => m.encode(),
            Message::Extension(m) => m.encode(),
        }
    }

    /// Decodes a body of frame type `type_id`.
    ///
    /// Types 11 to 14 (ignored by JS) and anything above 15 give
    /// [`DecodeError::UnknownType`]; callers should ignore those frames.
    pub fn decode(type_id: u64, body: &[u8]) -> Result<Self, DecodeError> {
        Ok(match type_id {
            0 => Message::Open(Open::decode(body)?),
            1 => Message::Options(Options::decode(body)?),
            2 => Message::Status(Status::decode(body)?),
            3 => Message::Have(Have::decode(body)?),
            4 => Message::Unhave(Unhave::decode(body)?),
            5 => Message::Want(Want::decode(body)?),
            6 => Message::Unwant(Unwant::decode(body)?),
            7 => Message::Request(Request::decode(body)?),
            8 => Message::Cancel(Cancel::decode(body)?),
            9 => Message::Data(Data::decode(body)?),
            10 => Message::Close(Close::decode(body)?),
            15 => Message::Extension(Extension::decode(body)?),
            other => return Err(DecodeError::UnknownType(other)),
        })
    }
}

macro_rules! from_impls {
    ($($name:ident),*) => {
        $(impl From<$name> for Message {
            fn from(m: $name) -> Self {
                Message::$name(m)
            }
        })*
    };
}

from_impls!(Open, Options, Status, Have, Unhave, Want, Unwant, Request, Cancel, Data, Close, Extension);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_skipped() {
        // field 5 varint, field 6 fixed64, field 7 bytes, field 8 fixed32, then start.
        let mut buf = vec![0x28, 0x01, 0x31, 0, 0, 0, 0, 0, 0, 0, 0, 0x3a, 0x01, 0xaa, 0x45, 1, 2, 3, 4];
        buf.extend_from_slice(&[0x08, 0x07]);
        assert_eq!(Want::decode(&buf), Ok(Want { start: 7, length: None }));
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(Want::decode(&[]), Err(DecodeError::MissingField { message: "Want", field: "start" }));
        assert_eq!(
            Want::decode(&[0x0a, 0x00]).unwrap_err().to_string(),
            "Want.start has wire type 2, expected another"
        );
        assert_eq!(Open::decode(&[0x0a, 0x05, 1]), Err(DecodeError::Truncated));
        assert_eq!(Close::decode(&[0x0b]), Err(DecodeError::UnsupportedWireType(3)));
        assert_eq!(Close::decode(&[0x80]), Err(DecodeError::Varint(VarintError::Truncated)));
        assert_eq!(Message::decode(12, &[]), Err(DecodeError::UnknownType(12)));
        assert!(matches!(Data::decode(&[0x08, 0x01, 0x1a, 0x00]), Err(DecodeError::MissingField { .. })));
    }

    #[test]
    fn defaults() {
        assert_eq!(Have::decode(&[0x08, 0x09]).map(|h| h.length_or_default()), Ok(1));
        assert_eq!(Want::decode(&[0x08, 0x09]).map(|h| h.length_or_default()), Ok(0));
        assert_eq!(Request::new(3).encode(), [0x08, 0x03, 0x10, 0x00, 0x18, 0x00, 0x20, 0x00]);
    }
}
