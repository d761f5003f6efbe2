//! The AMQP decoders: an event as an ingestor reads it, and an `applied`
//! report or a heartbeat as the sync worker reads it (decode, then every
//! field checked). Never a panic; what the worker accepts has ids an
//! ingestor could have sent.
#![no_main]

use keyward_core::events::{EventMessage, ReportMessage};
use keyward_sync_worker::reports::decode_report;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = serde_json::from_slice::<EventMessage>(data) {
        let _ = (
            event.routing_key(),
            event.key_id(),
            event.sequence(),
            event.kind(),
        );
    }
    if let Ok(report) = decode_report(data) {
        let id = match &report {
            ReportMessage::Heartbeat { ingestor_id, .. }
            | ReportMessage::Applied { ingestor_id, .. } => ingestor_id,
        };
        assert!((1..=128).contains(&id.len()));
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        );
    }
});
