//! The embedded session store: one SQLite file under the data dir.
//!
//! SQLite is the embedded default (no server to run); the store is the one
//! place that decides whether a certificate may open its tunnel, with a
//! single conditional `UPDATE`, so the rule holds even with several tunnel
//! handlers racing. Calls are blocking and short; async callers go through
//! [`Store::run`], which moves them off the async workers.

use std::path::Path;
use std::sync::{Arc, Mutex};

use mcpgate_shared::names::SessionId;
use rusqlite::{Connection, OptionalExtension, params};

use crate::session::{ClaimError, SessionRecord, SessionState};

pub const SESSIONS_DB: &str = "sessions.db";

#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(String);

impl StoreError {
    pub fn new(message: String) -> Self {
        StoreError(message)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    issuer TEXT NOT NULL,
    roles TEXT NOT NULL,
    server TEXT NOT NULL,
    client_addr TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    cert_serial TEXT NOT NULL UNIQUE,
    connect_by INTEGER NOT NULL,
    max_duration_secs INTEGER NOT NULL,
    state TEXT NOT NULL,
    connected_at INTEGER,
    tunnel_peer TEXT,
    ended_at INTEGER,
    end_reason TEXT
);
CREATE INDEX IF NOT EXISTS sessions_created ON sessions(created_at);
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    requester TEXT NOT NULL,
    server TEXT NOT NULL,
    session TEXT,
    method TEXT,
    name TEXT,
    arguments TEXT,
    digest TEXT NOT NULL,
    rule TEXT,
    reason TEXT,
    duration_secs INTEGER,
    required INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    decided_at INTEGER,
    grant_expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS approvals_state ON approvals(state, created_at);
CREATE TABLE IF NOT EXISTS approval_votes (
    approval TEXT NOT NULL REFERENCES approvals(id),
    approver TEXT NOT NULL,
    approve INTEGER NOT NULL,
    reason TEXT,
    at INTEGER NOT NULL,
    PRIMARY KEY (approval, approver)
);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    session TEXT,
    event TEXT NOT NULL
);
";

const COLUMNS: &str = "id, user, issuer, roles, server, client_addr, created_at, cert_serial, \
     connect_by, max_duration_secs, state, connected_at, tunnel_peer, ended_at, end_reason";

fn text_err(e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(e.to_string().into())
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    let parse = |i: usize| -> rusqlite::Result<String> { row.get::<_, String>(i) };
    let roles: Vec<String> = serde_json::from_str(&parse(3)?).map_err(text_err)?;
    Ok(SessionRecord {
        id: parse(0)?.parse().map_err(text_err)?,
        user: parse(1)?.parse().map_err(text_err)?,
        issuer: parse(2)?,
        roles: roles
            .into_iter()
            .map(|r| r.parse().map_err(text_err))
            .collect::<rusqlite::Result<_>>()?,
        server: parse(4)?.parse().map_err(text_err)?,
        client_addr: parse(5)?,
        created_at: row.get(6)?,
        cert_serial: parse(7)?,
        connect_by: row.get(8)?,
        max_duration_secs: row.get(9)?,
        state: parse(10)?.parse().map_err(text_err)?,
        connected_at: row.get(11)?,
        tunnel_peer: row.get(12)?,
        ended_at: row.get(13)?,
        end_reason: row.get(14)?,
    })
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(dir.join(SESSIONS_DB))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (each call
        // is one statement or transaction), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a blocking store call off the async workers.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError(format!("store task failed: {e}")))
    }

    pub fn insert(&self, r: &SessionRecord) -> Result<(), StoreError> {
        let roles: Vec<&str> = r.roles.iter().map(|x| x.as_str()).collect();
        self.conn().execute(
            &format!("INSERT INTO sessions ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)"),
            params![
                r.id.as_str(),
                r.user.as_str(),
                r.issuer,
                serde_json::to_string(&roles).map_err(|e| StoreError(e.to_string()))?,
                r.server.as_str(),
                r.client_addr,
                r.created_at,
                r.cert_serial,
                r.connect_by,
                r.max_duration_secs,
                r.state.as_str(),
                r.connected_at,
                r.tunnel_peer,
                r.ended_at,
                r.end_reason,
            ],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"),
                [id.as_str()],
                row_to_record,
            )
            .optional()?)
    }

    /// Newest first.
    pub fn list(&self, limit: usize) -> Result<Vec<SessionRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM sessions ORDER BY created_at DESC, rowid DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], row_to_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks the session connected if, and only if, it is still `issued`,
    /// the serial is its certificate's, and `now` is before its deadline.
    pub fn claim(
        &self,
        id: &SessionId,
        serial: &str,
        peer: &str,
        now: u64,
    ) -> Result<SessionRecord, ClaimError> {
        let store_err = |e: rusqlite::Error| ClaimError::Store(e.to_string());
        let conn = self.conn();
        let changed = conn
            .execute(
                "UPDATE sessions SET state = 'connected', connected_at = ?1, tunnel_peer = ?2
                 WHERE id = ?3 AND state = 'issued' AND cert_serial = ?4 AND connect_by >= ?1",
                params![now, peer, id.as_str(), serial],
            )
            .map_err(store_err)?;
        let record = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"),
                [id.as_str()],
                row_to_record,
            )
            .optional()
            .map_err(store_err)?
            .ok_or(ClaimError::Unknown)?;
        if changed == 1 {
            return Ok(record);
        }
        if record.cert_serial != serial {
            return Err(ClaimError::WrongCertificate);
        }
        match record.state {
            SessionState::Connected => Err(ClaimError::AlreadyUsed),
            SessionState::Issued => {
                // Too late: record it so the session list tells the truth.
                conn.execute(
                    "UPDATE sessions SET state = 'expired', ended_at = ?1,
                     end_reason = 'not connected before its deadline'
                     WHERE id = ?2 AND state = 'issued'",
                    params![now, id.as_str()],
                )
                .map_err(store_err)?;
                Err(ClaimError::TooLate)
            }
            state => Err(ClaimError::Ended(state)),
        }
    }

    /// Ends a connected session. A session that has already ended keeps
    /// its first reason.
    pub fn end(&self, id: &SessionId, reason: &str, now: u64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sessions SET state = 'ended', ended_at = ?1, end_reason = ?2
             WHERE id = ?3 AND state IN ('issued', 'connected')",
            params![now, reason, id.as_str()],
        )?;
        Ok(())
    }

    /// At start-up: sessions that were connected when the broker stopped
    /// cannot be resumed (their tunnel is gone), so they are marked aborted;
    /// issued sessions past their deadline are marked expired. Returns how
    /// many were aborted.
    pub fn recover(&self, now: u64) -> Result<usize, StoreError> {
        let conn = self.conn();
        let aborted = conn.execute(
            "UPDATE sessions SET state = 'aborted', ended_at = ?1,
             end_reason = 'the broker stopped while the session was open'
             WHERE state = 'connected'",
            [now],
        )?;
        conn.execute(
            "UPDATE sessions SET state = 'expired', ended_at = ?1,
             end_reason = 'not connected before its deadline'
             WHERE state = 'issued' AND connect_by < ?1",
            [now],
        )?;
        Ok(aborted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, serial: &str, connect_by: u64) -> SessionRecord {
        SessionRecord {
            id: id.parse().unwrap(),
            user: "alice".parse().unwrap(),
            issuer: "local".into(),
            roles: vec!["admin".parse().unwrap()],
            server: "demo".parse().unwrap(),
            client_addr: "127.0.0.1:5555".into(),
            created_at: 100,
            cert_serial: serial.into(),
            connect_by,
            max_duration_secs: 3600,
            state: SessionState::Issued,
            connected_at: None,
            tunnel_peer: None,
            ended_at: None,
            end_reason: None,
        }
    }

    #[test]
    fn one_certificate_one_tunnel() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.insert(&record("s1", "aa", 200)).unwrap();
        let id: SessionId = "s1".parse().unwrap();
        assert_eq!(
            s.claim(&id, "bb", "p", 150),
            Err(ClaimError::WrongCertificate)
        );
        let r = s.claim(&id, "aa", "p", 150).unwrap();
        assert_eq!(r.state, SessionState::Connected);
        assert_eq!(s.claim(&id, "aa", "p", 151), Err(ClaimError::AlreadyUsed));
        s.end(&id, "client closed", 160).unwrap();
        assert_eq!(
            s.claim(&id, "aa", "p", 161),
            Err(ClaimError::Ended(SessionState::Ended))
        );
        assert_eq!(
            s.claim(&"nope".parse().unwrap(), "aa", "p", 1),
            Err(ClaimError::Unknown)
        );
    }

    #[test]
    fn late_claims_expire_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.insert(&record("s2", "cc", 200)).unwrap();
        let id: SessionId = "s2".parse().unwrap();
        assert_eq!(s.claim(&id, "cc", "p", 201), Err(ClaimError::TooLate));
        assert_eq!(s.get(&id).unwrap().unwrap().state, SessionState::Expired);
    }

    #[test]
    fn sessions_survive_reopen_and_restart_aborts_open_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.insert(&record("s3", "dd", 200)).unwrap();
            s.insert(&record("s4", "ee", 200)).unwrap();
            s.claim(&"s3".parse().unwrap(), "dd", "p", 150).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.recover(300).unwrap(), 1);
        let all = s.list(10).unwrap();
        assert_eq!(all.len(), 2);
        let s3 = s.get(&"s3".parse().unwrap()).unwrap().unwrap();
        assert_eq!(s3.state, SessionState::Aborted);
        let s4 = s.get(&"s4".parse().unwrap()).unwrap().unwrap();
        assert_eq!(s4.state, SessionState::Expired);
        assert_eq!(s4.roles, vec!["admin".parse().unwrap()]);
    }
}
