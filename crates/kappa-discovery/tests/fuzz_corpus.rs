//! Replays the committed cargo-fuzz corpus of the mDNS packet target.

#[test]
fn mdns_packet_corpus() {
    kappa_testkit::replay_fuzz_corpus("mdns_packet", kappa_discovery::fuzzing::packet);
}
