//! The mDNS messages of hyperswarm 2's LAN discovery, encoded and decoded.
//!
//! Only what @hyperswarm/discovery 2.0.1 sends and reads (over multicast-dns 7
//! and dns-packet 5) is kept: SRV questions, SRV answers, the first string of
//! TXT answers (the sender's id) and the `referrer` A record. Names are written
//! uncompressed, as dns-packet writes them; compressed names are read.
//!
//! Decoding is bounded: a packet is at most [`MAX_PACKET`] bytes, the section
//! counts in its header are checked against its length before anything is
//! allocated, and at most [`MAX_RECORDS`] records of each kind are kept.

use std::net::Ipv4Addr;

use simple_dns::rdata::{RData, A, SRV, TXT};
use simple_dns::{
    CharacterString, Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, QCLASS, QTYPE, TYPE,
};

/// The largest packet read (mDNS allows 9000 bytes over Ethernet jumbo frames).
pub const MAX_PACKET: usize = 9000;
/// The most SRV questions, SRV answers and TXT ids kept from one packet.
pub const MAX_RECORDS: usize = 64;
/// The domain hyperswarm 2 names its records in.
pub const DOMAIN: &str = "hyperswarm.local";
/// The TXT string that carries an instance's id starts with this.
pub const ID_PREFIX: &[u8] = b"id=";
/// The length of an id string: `id=` and 32 random bytes.
pub const ID_LEN: usize = 3 + 32;

/// The record name of a topic: the hex of its first 20 bytes + `.hyperswarm.local`.
pub fn record_name(topic: &[u8; 32]) -> String {
    format!("{}.{DOMAIN}", hex::encode(&topic[..20]))
}

/// Why a packet was not decoded.
#[derive(Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than [`MAX_PACKET`].
    #[error("packet of {0} bytes is over the {MAX_PACKET}-byte limit")]
    TooLong(usize),
    /// Shorter than its header says it can be (counts that cannot fit).
    #[error("packet of {len} bytes cannot hold the {records} records its header counts")]
    CountsTooLarge {
        /// The packet's length.
        len: usize,
        /// The records its header counts.
        records: usize,
    },
    /// Not a DNS message.
    #[error("malformed DNS message: {0}")]
    Malformed(#[source] simple_dns::SimpleDnsError),
}

/// One SRV answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvAnswer {
    /// The record name (lowercase).
    pub name: String,
    /// The port.
    pub port: u16,
    /// The target: `0.0.0.0` means "the sender's address".
    pub target: String,
}

/// A decoded message, reduced to what discovery reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A query: the names asked for SRV records (lowercase).
    Query {
        /// The SRV questions' names.
        srv_questions: Vec<String>,
        /// The TXT ids in its answer section (hyperswarm sends none; a
        /// query that carries the asker's own id is not answered).
        ids: Vec<(String, Vec<u8>)>,
    },
    /// A response.
    Response {
        /// The SRV answers.
        srv: Vec<SrvAnswer>,
        /// Per record name, the first string of the first TXT answer (the id).
        ids: Vec<(String, Vec<u8>)>,
    },
}

impl Message {
    /// The id that a record name carries in this message, if any (the first,
    /// as hyperswarm reads it).
    pub fn id_for(&self, name: &str) -> Option<&[u8]> {
        let ids = match self {
            Message::Query { ids, .. } | Message::Response { ids, .. } => ids,
        };
        ids.iter().find(|(n, _)| n == name).map(|(_, id)| id.as_slice())
    }
}

const HEADER: usize = 12;
/// A question is at least a root name (1 byte), type and class.
const MIN_QUESTION: usize = 5;
/// A record is at least a root name, type, class, ttl and rdata length.
const MIN_RECORD: usize = 11;

/// Decodes a packet. Never panics; allocates in proportion to the packet.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    if bytes.len() > MAX_PACKET {
        return Err(DecodeError::TooLong(bytes.len()));
    }
    if bytes.len() >= HEADER {
        let count = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]) as usize;
        let (q, rr) = (count(4), count(6) + count(8) + count(10));
        if HEADER + q * MIN_QUESTION + rr * MIN_RECORD > bytes.len() {
            return Err(DecodeError::CountsTooLarge { len: bytes.len(), records: q + rr });
        }
    }
    let packet = Packet::parse(bytes).map_err(DecodeError::Malformed)?;
    let ids = packet
        .answers
        .iter()
        .filter_map(|rr| match &rr.rdata {
            RData::TXT(txt) => Some((rr.name.to_string().to_ascii_lowercase(), first_string(txt)?)),
            _ => None,
        })
        .take(MAX_RECORDS)
        .collect();
    if !packet.has_flags(PacketFlag::RESPONSE) {
        let srv_questions = packet
            .questions
            .iter()
            .filter(|q| q.qtype == QTYPE::TYPE(TYPE::SRV))
            .map(|q| q.qname.to_string().to_ascii_lowercase())
            .take(MAX_RECORDS)
            .collect();
        return Ok(Message::Query { srv_questions, ids });
    }
    let srv = packet
        .answers
        .iter()
        .filter_map(|rr| match &rr.rdata {
            RData::SRV(srv) => Some(SrvAnswer {
                name: rr.name.to_string().to_ascii_lowercase(),
                port: srv.port,
                target: srv.target.to_string(),
            }),
            _ => None,
        })
        .take(MAX_RECORDS)
        .collect();
    Ok(Message::Response { srv, ids })
}

/// The first character-string of a TXT record, if it has one that is not empty
/// (dns-packet gives TXT data as a list of strings; hyperswarm reads `data[0]`).
fn first_string(txt: &TXT<'_>) -> Option<Vec<u8>> {
    let (key, value) = txt.iter_raw().next()?;
    let mut s = key.to_vec();
    if let Some(v) = value {
        s.push(b'=');
        s.extend_from_slice(v);
    }
    Some(s)
}

/// A query for the SRV record of `name`, as hyperswarm sends it: id 0, no flags,
/// one question of class IN.
pub fn encode_query(name: &str) -> Vec<u8> {
    let mut p = Packet::new_query(0);
    p.questions.push(Question::new(
        Name::new_unchecked(name),
        TYPE::SRV.into(),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    // Building a packet of valid names into a Vec cannot fail; an empty packet
    // (never sent) stands for the impossible error.
    p.build_bytes_vec().unwrap_or_default()
}

/// One topic's answer: its record name, the port and the instance's id string.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The record name.
    pub name: &'a str,
    /// The port peers connect to.
    pub port: u16,
    /// `id=` + 32 bytes.
    pub id: &'a [u8; ID_LEN],
}

/// A response as hyperswarm sends it: id 0, flags QR|AA, per topic an SRV
/// answer `{target 0.0.0.0, port}` and a TXT answer with the id, then, when
/// answering a query, an A record `referrer.hyperswarm.local` = the asker's
/// address. TTL 0 and class IN, as dns-packet writes by default.
pub fn encode_response(answers: &[Answer<'_>], referrer: Option<Ipv4Addr>) -> Vec<u8> {
    let mut p = Packet::new_reply(0);
    p.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    for a in answers {
        let srv = SRV { priority: 0, weight: 0, port: a.port, target: Name::new_unchecked("0.0.0.0") };
        p.answers.push(ResourceRecord::new(Name::new_unchecked(a.name), CLASS::IN, 0, RData::SRV(srv)));
        // 35 bytes is under the 255-byte limit of a character-string.
        let Ok(s) = CharacterString::new(a.id) else { continue };
        let txt = TXT::new().with_char_string(s);
        p.answers.push(ResourceRecord::new(Name::new_unchecked(a.name), CLASS::IN, 0, RData::TXT(txt)));
    }
    if let (Some(ip), false) = (referrer, answers.is_empty()) {
        let name = Name::new_unchecked("referrer.hyperswarm.local");
        p.answers.push(ResourceRecord::new(name, CLASS::IN, 0, RData::A(A::from(ip))));
    }
    p.build_bytes_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_name_is_hex_of_the_first_20_bytes() {
        let mut t = [0u8; 32];
        t[0] = 0xab;
        t[19] = 0x01;
        t[20] = 0xff;
        assert_eq!(record_name(&t), "ab00000000000000000000000000000000000001.hyperswarm.local");
    }

    /// The bytes dns-packet 5.6 gives for
    /// `{type:'query', questions:[{type:'SRV', name:'ab.hyperswarm.local'}]}`.
    const JS_QUERY: &[u8] = &[
        0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 2, b'a', b'b', 10, b'h', b'y', b'p', b'e', b'r', b's', b'w',
        b'a', b'r', b'm', 5, b'l', b'o', b'c', b'a', b'l', 0, 0, 33, 0, 1,
    ];

    #[test]
    fn query_bytes_match_dns_packet() {
        assert_eq!(encode_query("ab.hyperswarm.local"), JS_QUERY);
        let m = decode(JS_QUERY).unwrap();
        assert_eq!(m, Message::Query { srv_questions: vec!["ab.hyperswarm.local".into()], ids: vec![] });
    }

    /// dns-packet 5.6.1's bytes for the response multicast-dns 7 sends with
    /// an SRV {0.0.0.0, 4000}, a TXT `id=` + 32 × 7 and the referrer 10.1.2.3.
    const JS_RESPONSE: &str = "0000840000000003000000000261620a6879706572737761726d056c6f63616c000021000100000000000f000000000fa00130013001300130000261620a6879706572737761726d056c6f63616c00001000010000000000242369643d07070707070707070707070707070707070707070707070707070707070707070872656665727265720a6879706572737761726d056c6f63616c00000100010000000000040a010203";

    #[test]
    fn response_bytes_match_dns_packet() {
        let mut id = [7u8; ID_LEN];
        id[..3].copy_from_slice(ID_PREFIX);
        let ours = encode_response(
            &[Answer { name: "ab.hyperswarm.local", port: 4000, id: &id }],
            Some(Ipv4Addr::new(10, 1, 2, 3)),
        );
        assert_eq!(hex::encode(ours), JS_RESPONSE);
    }

    #[test]
    fn response_round_trips() {
        let mut id = [7u8; ID_LEN];
        id[..3].copy_from_slice(ID_PREFIX);
        id[10] = b'=';
        let bytes = encode_response(
            &[Answer { name: "ab.hyperswarm.local", port: 4000, id: &id }],
            Some(Ipv4Addr::new(10, 1, 2, 3)),
        );
        // Header: id 0, flags QR|AA, no question, three answers.
        assert_eq!(&bytes[..12], &[0, 0, 0x84, 0, 0, 0, 0, 3, 0, 0, 0, 0]);
        let m = decode(&bytes).unwrap();
        let Message::Response { srv, ids } = &m else { panic!("{m:?}") };
        assert_eq!(
            srv,
            &[SrvAnswer { name: "ab.hyperswarm.local".into(), port: 4000, target: "0.0.0.0".into() }]
        );
        assert_eq!(ids.len(), 1);
        assert_eq!(m.id_for("ab.hyperswarm.local"), Some(&id[..]));
        // No answer, no referrer.
        assert_eq!(&encode_response(&[], Some(Ipv4Addr::LOCALHOST))[4..12], &[0; 8]);
    }

    #[test]
    fn hostile_counts_are_refused_before_allocating() {
        let mut p = vec![0u8; 12];
        p[4..6].copy_from_slice(&u16::MAX.to_be_bytes());
        p[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(decode(&p), Err(DecodeError::CountsTooLarge { .. })));
        assert!(matches!(decode(&[0; MAX_PACKET + 1]), Err(DecodeError::TooLong(_))));
        assert!(decode(&[]).is_err());
        assert!(decode(&JS_QUERY[..20]).is_err());
    }
}
