//! Signaling as a hostile client drives it: any sequence of text and binary frames, joins
//! and time, through the per-connection session rules; and every other parser of client
//! text the server has (candidates, SDP candidate filtering, names, identities, tokens).
//!
//! Invariants: nothing panics; before `join` is admitted only `join` and `ping` get
//! through; after `leave` nothing but `ping` does; a flood is cut off by the rate limit,
//! never sooner than its burst; every name or identity the rules accept is within its
//! length and has no control characters; a candidate policy never admits more addresses
//! than its limit, and filtering an SDP keeps every non-candidate line.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard_router::ice_policy::{CandidateLimits, CandidatePolicy};
use switchyard_signal::token::ApiKeys;
use switchyard_signal::{
    validate_display_name, validate_identity, validate_room_name, ClientMessage, Inbound,
    Session, SessionLimits,
};

#[derive(Arbitrary, Debug)]
enum Step {
    Text(String),
    Binary(u16),
    /// The room admitted the participant (the server calls `joined` after a join).
    Admitted,
    Wait(u16),
    Candidate(String),
    Sdp(String),
    Restart(String),
    Token(String),
}

const BURST: u32 = 20;

fuzz_target!(|steps: Vec<Step>| {
    let t0 = Instant::now();
    let mut now = t0;
    let limits = SessionLimits {
        max_message_bytes: 4096,
        messages_per_second: 10,
        message_burst: BURST,
        ..SessionLimits::default()
    };
    let mut session = Session::new(limits);
    let mut admitted = false;
    let mut left = false;
    // Frames counted by the rate limit before any time passed (then its burst is exact).
    let mut sent_before_waiting = 0u32;
    let mut waited = false;
    let mut policy = CandidatePolicy::new(CandidateLimits {
        max_addresses: 4,
        restart_interval: Duration::from_secs(5),
        allow_loopback: false,
        own_addresses: vec!["192.0.2.1:7882".parse().unwrap()],
    });
    let keys = ApiKeys::new([("k".to_owned(), "s".repeat(32))]);
    for step in steps {
        match step {
            Step::Text(text) => {
                if text.len() <= limits.max_message_bytes {
                    sent_before_waiting += 1;
                }
                let inbound = session.handle_text(&text, now);
                if inbound == Inbound::Flooding && !waited {
                    assert!(sent_before_waiting > BURST, "cut off within the burst");
                }
                if let Inbound::Message(message) = &inbound {
                    match message {
                        ClientMessage::Join { room, name, .. } => {
                            assert!(!admitted, "a second join got through");
                            assert!(validate_room_name(room, limits.max_room_name_bytes).is_ok());
                            assert!(
                                validate_display_name(name, limits.max_display_name_bytes).is_ok()
                            );
                        }
                        ClientMessage::Leave {} => {
                            assert!(admitted && !left);
                            left = true;
                        }
                        other => {
                            assert!(admitted, "{} before join", other.type_name());
                            assert!(!left, "{} after leave", other.type_name());
                        }
                    }
                }
            }
            Step::Binary(len) => {
                if usize::from(len) <= limits.max_message_bytes {
                    sent_before_waiting += 1;
                }
                let inbound = session.handle_binary(len as usize, now);
                assert!(!matches!(inbound, Inbound::Message(_)));
            }
            Step::Admitted => {
                if !admitted && !left {
                    session.joined();
                    admitted = true;
                }
            }
            Step::Wait(ms) => {
                now += Duration::from_millis(u64::from(ms));
                waited = true;
            }
            Step::Candidate(line) => {
                let _ = policy.admit(&line);
                assert!(policy.admitted() <= 4);
            }
            Step::Sdp(sdp) => {
                let (kept, _) = policy.filter_sdp(&sdp);
                assert!(policy.admitted() <= 4);
                let others = |s: &str| {
                    s.split_inclusive('\n')
                        .filter(|l| !l.trim_end().starts_with("a=candidate:"))
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                };
                assert_eq!(others(&kept), others(&sdp), "non-candidate lines kept as they were");
                assert!(kept.matches("a=candidate:").count() <= sdp.matches("a=candidate:").count());
            }
            Step::Restart(ufrag) => {
                let _ = policy.on_description(&ufrag, now);
            }
            Step::Token(token) => {
                if let Ok(claims) = keys.verify(&token, 1_900_000_000) {
                    // Only tokens signed with the secret verify; the fuzzer cannot make one.
                    panic!("forged token accepted: {claims:?}");
                }
                for (check, max) in [
                    (validate_display_name(&token, 64), 64),
                    (validate_identity(&token, 64), 64),
                ] {
                    if check.is_ok() {
                        assert!(token.len() <= max);
                        assert!(!token.chars().any(char::is_control));
                    }
                }
            }
        }
    }
});
