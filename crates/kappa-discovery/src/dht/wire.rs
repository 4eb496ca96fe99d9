//! The messages of dht-rpc 4 (`schema.proto` of dht-rpc 4.9.6) and of the
//! `peers` command of `@hyperswarm/dht` 4 (its `schema.proto`), with the
//! compact address forms of `ipv4-peers`.
//!
//! One UDP datagram carries one [`Message`]. Fields are written in the order
//! the JS encoder writes them (so our bytes equal theirs), `None` is left
//! out. Decoding follows proto2 as the JS decoder does: unknown fields are
//! skipped, `type` and `rid` are required, and invalid UTF-8 in strings is
//! replaced. Nothing decoded allocates more than the datagram's size.

use std::net::{Ipv4Addr, SocketAddrV4};

/// The largest datagram decoded (a UDP payload cannot be larger).
pub const MAX_DATAGRAM: usize = 65_535;

/// The protocol version dht-rpc 4 sends (`IO.VERSION`); a message with an id
/// but an older version is treated as coming from an ephemeral node.
pub const VERSION: u64 = 1;

/// Bytes of one node in `closerNodes`: a 32-byte id, IPv4 and port.
pub const NODE_LEN: usize = 38;

/// Why a datagram is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A varint runs past the end or past 64 bits.
    #[error("invalid varint")]
    Varint,
    /// A field runs past the end of the datagram.
    #[error("field runs past the end of the datagram")]
    Truncated,
    /// A wire type protobuf does not define (or groups).
    #[error("unsupported wire type {0}")]
    WireType(u8),
    /// A known field has the wrong wire type.
    #[error("field {0} has the wrong wire type")]
    FieldType(u32),
    /// `type` or `rid` is missing.
    #[error("message without {0}")]
    Missing(&'static str),
    /// `type` is not 1, 2 or 3.
    #[error("unknown message type {0}")]
    Type(u64),
    /// Larger than a UDP datagram.
    #[error("datagram of {0} bytes")]
    TooLarge(usize),
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request that changes nothing (`_ping`, `_find_node`, a command's query).
    Query = 1,
    /// A request that stores something; it must carry the roundtrip token the
    /// node gave this address.
    Update = 2,
    /// The answer to either, with the same `rid`.
    Response = 3,
}

/// One dht-rpc 4 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// 11: the sender's protocol version.
    pub version: Option<u64>,
    /// 1: what it is.
    pub kind: Kind,
    /// 2: request id, echoed by the response.
    pub rid: u64,
    /// 10: the receiver's address as the sender sees it (6 bytes).
    pub to: Option<Vec<u8>>,
    /// 3: the sender's node id (none from an ephemeral node).
    pub id: Option<Vec<u8>>,
    /// 4: the key the request is about.
    pub target: Option<Vec<u8>>,
    /// 5: nodes closer to the target, [`NODE_LEN`] bytes each.
    pub closer_nodes: Option<Vec<u8>>,
    /// 6: proof of the requester's address, to send back with an update.
    pub roundtrip_token: Option<Vec<u8>>,
    /// 7: the command.
    pub command: Option<String>,
    /// 8: why a request failed.
    pub error: Option<String>,
    /// 9: the command's input or output.
    pub value: Option<Vec<u8>>,
}

impl Message {
    /// A request of `kind` for `command` about `target`, from an ephemeral
    /// node (no id), to `to`.
    pub fn request(kind: Kind, rid: u64, to: SocketAddrV4, command: &str, target: &[u8]) -> Self {
        Message {
            version: Some(VERSION),
            kind,
            rid,
            to: Some(encode_peer(to).to_vec()),
            id: None,
            target: Some(target.to_vec()),
            closer_nodes: None,
            roundtrip_token: None,
            command: Some(command.to_owned()),
            error: None,
            value: None,
        }
    }

    /// The protobuf bytes, in the JS encoder's field order.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        if let Some(v) = self.version {
            put_varint_field(&mut out, 11, v);
        }
        put_varint_field(&mut out, 1, self.kind as u64);
        put_varint_field(&mut out, 2, self.rid);
        let fields: [(u32, Option<&[u8]>); 8] = [
            (10, self.to.as_deref()),
            (3, self.id.as_deref()),
            (4, self.target.as_deref()),
            (5, self.closer_nodes.as_deref()),
            (6, self.roundtrip_token.as_deref()),
            (7, self.command.as_deref().map(str::as_bytes)),
            (8, self.error.as_deref().map(str::as_bytes)),
            (9, self.value.as_deref()),
        ];
        for (field, bytes) in fields {
            if let Some(b) = bytes {
                put_bytes_field(&mut out, field, b);
            }
        }
        out
    }

    /// Decodes one datagram.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        if buf.len() > MAX_DATAGRAM {
            return Err(WireError::TooLarge(buf.len()));
        }
        let mut m = Message {
            version: None,
            kind: Kind::Query,
            rid: 0,
            to: None,
            id: None,
            target: None,
            closer_nodes: None,
            roundtrip_token: None,
            command: None,
            error: None,
            value: None,
        };
        let (mut kind, mut rid) = (None, None);
        let mut r = Fields { buf, pos: 0 };
        while let Some((field, value)) = r.next()? {
            let bytes = || match value {
                Field::Bytes(b) => Ok(b.to_vec()),
                Field::Varint(_) => Err(WireError::FieldType(field)),
            };
            let varint = || match value {
                Field::Varint(v) => Ok(v),
                Field::Bytes(_) => Err(WireError::FieldType(field)),
            };
            let text = || bytes().map(|b| String::from_utf8_lossy(&b).into_owned());
            match field {
                11 => m.version = Some(varint()?),
                1 => kind = Some(varint()?),
                2 => rid = Some(varint()?),
                10 => m.to = Some(bytes()?),
                3 => m.id = Some(bytes()?),
                4 => m.target = Some(bytes()?),
                5 => m.closer_nodes = Some(bytes()?),
                6 => m.roundtrip_token = Some(bytes()?),
                7 => m.command = Some(text()?),
                8 => m.error = Some(text()?),
                9 => m.value = Some(bytes()?),
                _ => {}
            }
        }
        m.kind = match kind.ok_or(WireError::Missing("type"))? {
            1 => Kind::Query,
            2 => Kind::Update,
            3 => Kind::Response,
            t => return Err(WireError::Type(t)),
        };
        m.rid = rid.ok_or(WireError::Missing("rid"))?;
        Ok(m)
    }
}

/// The input of the `peers` command (`PeersInput`): announce `port` (the
/// node takes the address from the datagram), or stop announcing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeersInput {
    /// 1: the port peers should connect to.
    pub port: Option<u32>,
    /// 2: our address on the local network (6 bytes), for peers behind the
    /// same router.
    pub local_address: Option<Vec<u8>>,
    /// 3: remove the announcement.
    pub unannounce: Option<bool>,
}

impl PeersInput {
    /// The protobuf bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(p) = self.port {
            put_varint_field(&mut out, 1, p.into());
        }
        if let Some(a) = &self.local_address {
            put_bytes_field(&mut out, 2, a);
        }
        if let Some(u) = self.unannounce {
            put_varint_field(&mut out, 3, u.into());
        }
        out
    }
}

/// The output of the `peers` command (`PeersOutput`): who announced the
/// topic to the answering node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeersOutput {
    /// 1: addresses, 6 bytes each.
    pub peers: Option<Vec<u8>>,
    /// 2: addresses on the requester's local network, 4 bytes each (the
    /// last two bytes of the IPv4 address and the port).
    pub local_peers: Option<Vec<u8>>,
}

impl PeersOutput {
    /// Decodes a `peers` answer's value.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut out = PeersOutput::default();
        let mut r = Fields { buf, pos: 0 };
        while let Some((field, value)) = r.next()? {
            let Field::Bytes(b) = value else {
                if field == 1 || field == 2 {
                    return Err(WireError::FieldType(field));
                }
                continue;
            };
            match field {
                1 => out.peers = Some(b.to_vec()),
                2 => out.local_peers = Some(b.to_vec()),
                _ => {}
            }
        }
        Ok(out)
    }

    /// The announced addresses: none if the list is malformed (its length
    /// not a multiple of 6, or an address with port 0 or host 0.0.0.0), as
    /// `@hyperswarm/dht` drops such a list whole.
    pub fn addresses(&self) -> Vec<SocketAddrV4> {
        let Some(b) = &self.peers else { return Vec::new() };
        if b.len() % 6 != 0 {
            return Vec::new();
        }
        let all: Vec<SocketAddrV4> = b.chunks_exact(6).map(decode_peer).collect();
        if all.iter().any(|a| a.port() == 0 || a.ip().is_unspecified()) {
            return Vec::new();
        }
        all
    }
}

/// A node of the DHT: its id and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's 32-byte id.
    pub id: [u8; 32],
    /// Where it listens.
    pub addr: SocketAddrV4,
}

/// The nodes of a `closerNodes` field: none if one has port 0 (the JS
/// decoder throws and the list is dropped); a partial entry at the end is
/// ignored.
pub fn decode_nodes(buf: &[u8]) -> Vec<NodeInfo> {
    let nodes: Vec<NodeInfo> = buf
        .chunks_exact(NODE_LEN)
        .map(|c| {
            let mut id = [0u8; 32];
            id.copy_from_slice(&c[..32]);
            NodeInfo { id, addr: decode_peer(&c[32..]) }
        })
        .collect();
    if nodes.iter().any(|n| n.addr.port() == 0) {
        return Vec::new();
    }
    nodes
}

/// `closerNodes` bytes for `nodes`.
pub fn encode_nodes(nodes: &[NodeInfo]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nodes.len() * NODE_LEN);
    for n in nodes {
        out.extend_from_slice(&n.id);
        out.extend_from_slice(&encode_peer(n.addr));
    }
    out
}

/// An address in 6 bytes: IPv4, then the port big-endian.
pub fn encode_peer(addr: SocketAddrV4) -> [u8; 6] {
    let [a, b, c, d] = addr.ip().octets();
    let [p, q] = addr.port().to_be_bytes();
    [a, b, c, d, p, q]
}

/// The address in the first 6 bytes of `b` (which must hold 6).
pub fn decode_peer(b: &[u8]) -> SocketAddrV4 {
    let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    SocketAddrV4::new(ip, u16::from_be_bytes([b[4], b[5]]))
}

// ---------------------------------------------------------------------------
// proto2 on the wire (only what these messages use)

#[derive(Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or(WireError::Varint)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::Varint)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        let n = usize::try_from(n).map_err(|_| WireError::Truncated)?;
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(WireError::Truncated)?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    /// The next field with a value we read, skipping fixed-width ones.
    fn next(&mut self) -> Result<Option<(u32, Field<'a>)>, WireError> {
        while self.pos < self.buf.len() {
            let key = self.varint()?;
            let field = u32::try_from(key >> 3).unwrap_or(u32::MAX);
            match (key & 7) as u8 {
                0 => return Ok(Some((field, Field::Varint(self.varint()?)))),
                2 => {
                    let n = self.varint()?;
                    return Ok(Some((field, Field::Bytes(self.take(n)?))));
                }
                1 => drop(self.take(8)?),
                5 => drop(self.take(4)?),
                t => return Err(WireError::WireType(t)),
            }
        }
        Ok(None)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, u64::from(field) << 3);
    put_varint(out, v);
}

fn put_bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}
