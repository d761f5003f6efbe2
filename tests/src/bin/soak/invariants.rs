//! What must hold, checked in the database and at the ingestors; each
//! check returns the broken cases with their ids (empty: it holds).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::load::{Load, Model, STREAM};
use crate::observer::Seen;

pub struct Checks {
    pub pool: PgPool,
    pub ingestor_ids: Vec<String>,
}

/// One line per broken case, `what: ids`; at most 20 ids shown.
fn broken(what: &str, ids: Vec<String>) -> Option<String> {
    if ids.is_empty() {
        return None;
    }
    let shown: Vec<&str> = ids.iter().take(20).map(String::as_str).collect();
    let more = ids.len().saturating_sub(shown.len());
    Some(format!(
        "{what} ({}): {}{}",
        ids.len(),
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ))
}

impl Checks {
    async fn ids(&self, sql: &'static str) -> Vec<String> {
        match sqlx::query_scalar::<_, String>(sql)
            .fetch_all(&self.pool)
            .await
        {
            Ok(ids) => ids,
            Err(e) => vec![format!("(the check could not read the database: {e})")],
        }
    }

    /// What holds at every moment, whatever is failing: the tombstone and
    /// its event are one write, every answered revoke is in the database,
    /// no key lost its roles, no event was given up.
    pub async fn always(&self, model: &Model) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(broken(
            "revoked keys without exactly one key.revoked event",
            self.ids(
                "SELECT k.key_id || ' (' || count(o.id) || ' events)' FROM api_keys k \
                 LEFT JOIN outbox o ON o.key_id = k.key_id AND o.kind = 'key.revoked' \
                 WHERE k.status = 'revoked' GROUP BY k.key_id HAVING count(o.id) <> 1",
            )
            .await,
        ));
        out.extend(broken(
            "key.revoked events whose key is not revoked (an event without its tombstone)",
            self.ids(
                "SELECT o.event_id || ' (key ' || COALESCE(o.key_id, '-') || ')' FROM outbox o \
                 LEFT JOIN api_keys k ON k.key_id = o.key_id \
                 WHERE o.kind = 'key.revoked' AND (k.key_id IS NULL OR k.status <> 'revoked')",
            )
            .await,
        ));
        out.extend(broken(
            "revoked keys whose revocation_event_id names no key.revoked event of theirs",
            self.ids(
                "SELECT k.key_id FROM api_keys k WHERE k.status = 'revoked' AND NOT EXISTS \
                 (SELECT 1 FROM outbox o WHERE o.event_id = k.revocation_event_id \
                  AND o.key_id = k.key_id AND o.kind = 'key.revoked')",
            )
            .await,
        ));
        out.extend(broken(
            "keys without a role (a create or update half-written)",
            self.ids(
                "SELECT k.key_id FROM api_keys k WHERE NOT EXISTS \
                 (SELECT 1 FROM api_key_roles r WHERE r.key_id = k.key_id) \
                 AND NOT EXISTS (SELECT 1 FROM group_keys g WHERE g.key_id = k.key_id)",
            )
            .await,
        ));
        out.extend(broken(
            "events given up (dead)",
            self.ids(
                "SELECT event_id || ' (' || kind || ', ' || COALESCE(last_error, '') || ')' \
                 FROM outbox WHERE dead_at IS NOT NULL",
            )
            .await,
        ));
        let answered: Vec<String> = model.revoked.lock().expect("model lock").clone();
        let revoked: Vec<String> = sqlx::query_scalar(
            "SELECT key_id FROM api_keys WHERE status = 'revoked' AND key_id = ANY($1)",
        )
        .bind(&answered)
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        let revoked: std::collections::HashSet<String> = revoked.into_iter().collect();
        out.extend(broken(
            "revokes answered 202 whose key is not revoked in the database (lost)",
            answered
                .into_iter()
                .filter(|id| !revoked.contains(id))
                .collect(),
        ));
        out
    }

    /// Events not yet published, and (event, ingestor) pairs not yet
    /// reported applied: zero and zero once the system has caught up.
    pub async fn backlog(&self) -> (i64, i64) {
        let unpublished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&self.pool)
                .await
                .unwrap_or(-1);
        let unapplied = self.unapplied().await.len() as i64;
        (unpublished, unapplied)
    }

    /// (event, ingestor) pairs with no `applied` report: an ingestor owes
    /// the events published since the worker first heard of it (the ones
    /// before went out before its queue existed).
    async fn unapplied(&self) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT o.event_id || ' (' || o.kind || ') at ' || i.id FROM outbox o \
             JOIN ingestors i ON i.id = ANY($1) AND i.first_seen_at <= o.published_at \
             WHERE NOT EXISTS (SELECT 1 FROM event_acks a \
                               WHERE a.event_id = o.event_id AND a.ingestor_id = i.id)",
        )
        .bind(&self.ingestor_ids)
        .fetch_all(&self.pool)
        .await
        .unwrap_or_else(|e| vec![format!("(could not read: {e})")])
    }

    /// Published events the observer has not seen yet.
    pub async fn unseen(&self, seen: &Seen) -> usize {
        let published: Vec<String> =
            sqlx::query_scalar("SELECT event_id FROM outbox WHERE published_at IS NOT NULL")
                .fetch_all(&self.pool)
                .await
                .unwrap_or_default();
        published.iter().filter(|e| seen.times(e) == 0).count()
    }

    /// Once the system has caught up: every event published, seen on the
    /// broker, and reported applied by every ingestor known at its publish
    /// (each stays live throughout: no fault silences one for the
    /// liveness window).
    pub async fn delivered(&self, seen: &Seen) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(broken(
            "events never published",
            self.ids(
                "SELECT event_id || ' (' || kind || ')' FROM outbox WHERE published_at IS NULL",
            )
            .await,
        ));
        let events: Vec<(String, String)> = sqlx::query_as(
            "SELECT event_id, kind || ', created ' || created_at || ', published ' \
                    || COALESCE(published_at::text, '-') FROM outbox",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        out.extend(broken(
            "events published that never reached the broker's queues",
            events
                .into_iter()
                .filter(|(e, _)| seen.times(e) == 0)
                .map(|(e, what)| format!("{e} ({what})"))
                .collect(),
        ));
        let missing = self.unapplied().await;
        out.extend(broken("events not applied by an ingestor", missing));
        out
    }

    /// What each ingestor must answer for each key the load knows, from
    /// the database: revoked or expired 401, a role granting the stream
    /// 202, else 403. Keys within 3 s of their expiry are left out.
    async fn expected(&self, model: &Model) -> HashMap<String, u16> {
        let ids: Vec<String> = model
            .keys
            .lock()
            .expect("model lock")
            .iter()
            .map(|k| k.id.clone())
            .collect();
        let rows: Vec<(String, u16)> = sqlx::query_as::<_, (String, i32)>(
            "SELECT k.key_id, CASE \
               WHEN k.status = 'revoked' OR k.expires_at <= now() THEN 401 \
               WHEN EXISTS (SELECT 1 FROM api_key_roles r JOIN role_privileges p \
                              ON p.tenant_id = r.tenant_id AND p.role_name = r.role_name \
                            WHERE r.key_id = k.key_id AND p.privilege = 'ingestor' \
                              AND (p.stream IS NULL OR p.stream = $2)) THEN 202 \
               ELSE 403 END \
             FROM api_keys k WHERE k.key_id = ANY($1) \
               AND (k.expires_at IS NULL OR abs(extract(epoch FROM k.expires_at - now())) > 3)",
        )
        .bind(&ids)
        .bind(STREAM)
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(id, s)| (id, s as u16))
        .collect();
        rows.into_iter().collect()
    }

    /// Every ingestor answers every known key as the database says,
    /// within `within` (retried: a cached answer ends when its event is
    /// applied, which `backlog` has already seen happen).
    pub async fn converged(&self, load: &Load, within: Duration) -> (usize, Vec<String>) {
        let expected = self.expected(&load.model).await;
        let secrets: HashMap<String, String> = load
            .model
            .keys
            .lock()
            .expect("model lock")
            .iter()
            .map(|k| (k.id.clone(), k.secret.clone()))
            .collect();
        let mut wrong: Vec<(String, usize, u16, u16)> = Vec::new();
        let mut todo: Vec<(String, usize)> = expected
            .keys()
            .flat_map(|id| (0..load.ingestors.len()).map(move |i| (id.clone(), i)))
            .collect();
        let checked = todo.len();
        let deadline = Instant::now() + within;
        loop {
            wrong.clear();
            for (id, i) in &todo {
                let got = load
                    .http
                    .post(format!("{}/ingest/{STREAM}", load.ingestors[*i]))
                    .bearer_auth(&secrets[id])
                    .body("{}")
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if got != expected[id] {
                    wrong.push((id.clone(), *i, expected[id], got));
                }
            }
            if wrong.is_empty() || Instant::now() > deadline {
                break;
            }
            todo = wrong.iter().map(|(id, i, _, _)| (id.clone(), *i)).collect();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let cases = wrong
            .into_iter()
            .map(|(id, i, want, got)| format!("{id} at ingestor-{i}: want {want}, got {got}"))
            .collect();
        (
            checked,
            broken("keys answered otherwise than the database says", cases)
                .into_iter()
                .collect(),
        )
    }
}
