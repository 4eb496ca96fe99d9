//! Replays the committed cargo-fuzz corpora of the mDNS packet and DHT
//! datagram targets.

#[test]
fn mdns_packet_corpus() {
    kappa_testkit::replay_fuzz_corpus("mdns_packet", kappa_discovery::fuzzing::packet);
}

#[test]
fn dht_datagram_corpus() {
    kappa_testkit::replay_fuzz_corpus("dht_datagram", kappa_discovery::fuzzing::dht_datagram);
}
