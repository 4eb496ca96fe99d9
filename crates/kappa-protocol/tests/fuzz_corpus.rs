//! Replays the committed cargo-fuzz corpora of the protocol targets.

use kappa_protocol::fuzzing;
use kappa_testkit::replay_fuzz_corpus;

#[test]
fn frame_decoder_corpus() {
    replay_fuzz_corpus("frame_decoder", fuzzing::frame_decoder);
}

#[test]
fn message_decoders_corpus() {
    replay_fuzz_corpus("message_decoders", fuzzing::message_decoders);
}

#[test]
fn handshake_responder_corpus() {
    replay_fuzz_corpus("handshake_responder", fuzzing::handshake_responder);
}

#[test]
fn handshake_initiator_corpus() {
    replay_fuzz_corpus("handshake_initiator", fuzzing::handshake_initiator);
}

#[test]
fn session_corpus() {
    replay_fuzz_corpus("session", fuzzing::session);
}
