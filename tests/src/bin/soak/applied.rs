//! What the ingestors say they applied: each logs `event applied` with
//! the event's id (JSON lines, one log file per incarnation), so an event
//! applied twice by one node — redelivered after a cut between its report
//! and its ack, or after a restart — is counted exactly, across restarts.

use std::collections::HashMap;
use std::path::Path;

/// Events applied more than once, summed over the ingestors: (events,
/// extra applications).
pub fn reapplied(logs: &Path, ingestors: usize) -> (usize, usize) {
    let (mut events, mut extra) = (0, 0);
    for i in 0..ingestors {
        let mut times: HashMap<String, usize> = HashMap::new();
        let prefix = format!("ingestor-{i}.");
        let Ok(dir) = std::fs::read_dir(logs) else {
            continue;
        };
        for entry in dir.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if v["message"] == "event applied"
                    && let Some(id) = v["event_id"].as_str()
                {
                    *times.entry(id.to_owned()).or_default() += 1;
                }
            }
        }
        for n in times.values().filter(|n| **n > 1) {
            events += 1;
            extra += n - 1;
        }
    }
    (events, extra)
}
