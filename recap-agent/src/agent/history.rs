//! Every window the agent ran, in SQLite (`<state dir>/history.db`): who asked, for what, when,
//! how it ended, its summary and its artifacts. Survives restarts: windows that were open when
//! an agent died are marked `lost` by the next one. Old windows are pruned by age and count,
//! their artifacts with them.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};

use prost::Message;

use super::api::WindowRecord;
use crate::capsule::artifacts::SafeDir;

pub struct History {
    db: Mutex<Connection>,
}

/// What `list` filters on.
#[derive(Debug, Default)]
pub struct Filter {
    /// Only this requester's windows (None: everyone's).
    pub requester: Option<u32>,
    pub target: String,
    pub status: String,
    pub since_unix_s: i64,
    pub limit: u32,
}

pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

const COLUMNS: &str =
    "id, requester_uid, target, args, started_at, ended_at, status, summary, artifacts, error, origin, spec";

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<WindowRecord> {
    let args: String = row.get(3)?;
    let artifacts: String = row.get(8)?;
    let status: String = row.get(6)?;
    // The typed request, as stored (redacted) since the API was typed; older rows have none.
    let spec: Vec<u8> = row.get(11)?;
    Ok(WindowRecord {
        window_id: row.get(0)?,
        requester_uid: row.get(1)?,
        target: row.get(2)?,
        spec: (!spec.is_empty())
            .then(|| super::api::WindowSpec::decode(spec.as_slice()).ok())
            .flatten(),
        command_line: serde_json::from_str(&args).unwrap_or_default(),
        started_unix_s: row.get(4)?,
        ended_unix_s: row.get(5)?,
        status: super::wire::status_to_wire(&status) as i32,
        summary_json: row.get(7)?,
        artifacts: serde_json::from_str(&artifacts).unwrap_or_default(),
        error: row.get(9)?,
        origin: row.get(10)?,
    })
}

/// The history's files: the database and SQLite's journal beside it.
const STATE_FILES: [&str; 3] = ["history.db", "history.db-wal", "history.db-shm"];

/// The state directory (`mode`) and the history's files 0600, root's: the history holds who
/// looked at what. Made so if missing, repaired if not (an older agent left them 0755/0644),
/// all through descriptors opened without following links (`SafeDir`).
fn private_state(dir: &Path, mode: u32) -> anyhow::Result<SafeDir> {
    let state = SafeDir::open_trusted(dir, mode)
        .with_context(|| format!("the state directory {}", dir.display()))?;
    state.make_private(mode)?;
    // Made before SQLite opens it, which would make it with its own 0644.
    state
        .create_file(STATE_FILES[0], 0o600)
        .with_context(|| format!("creating {}", dir.join(STATE_FILES[0]).display()))?;
    seal_state_files(&state)?;
    Ok(state)
}

/// Each of the history's files that exists: 0600, root's.
fn seal_state_files(state: &SafeDir) -> anyhow::Result<()> {
    for name in STATE_FILES {
        state
            .seal(name, Some((0, 0)))
            .with_context(|| format!("making {} private", state.path().join(name).display()))?;
    }
    Ok(())
}

/// Secrets that an older agent stored with the windows' arguments are redacted in place.
fn redact_stored(db: &Connection) -> anyhow::Result<()> {
    let rows: Vec<(String, String)> = {
        let mut stmt =
            db.prepare("SELECT id, args FROM windows WHERE instr(args, '--otlp-header') > 0")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        rows
    };
    let mut changed = false;
    for (id, args) in rows {
        let parsed: Vec<String> = serde_json::from_str(&args).unwrap_or_default();
        let redacted = serde_json::to_string(&super::audit::redact_args(&parsed))?;
        if redacted != args {
            if !changed {
                // The old text must not linger in freed pages or the journal either.
                db.execute_batch("PRAGMA secure_delete = ON")?;
                changed = true;
            }
            db.execute(
                "UPDATE windows SET args = ?2 WHERE id = ?1",
                params![id, redacted],
            )?;
        }
    }
    if changed {
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        db.execute_batch("VACUUM")?;
    }
    Ok(())
}

impl History {
    /// Opens (or makes) the history in `dir`, 0700.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Self::open_with_mode(dir, 0o700)
    }

    /// With the state directory's mode: 0711 when callers must pass through it to their
    /// artifacts (the default layout, `/var/lib/recap/artifacts`); they still cannot list it,
    /// and its files are 0600.
    pub fn open_with_mode(dir: &Path, mode: u32) -> anyhow::Result<Self> {
        let state = private_state(dir, mode)?;
        // The path the walk checked (a trusted link on the way resolved).
        let path = state.path().join(STATE_FILES[0]);
        let db = Connection::open(&path)
            .with_context(|| format!("opening the window history {}", path.display()))?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS windows (
                 id TEXT PRIMARY KEY,
                 requester_uid INTEGER NOT NULL,
                 target TEXT NOT NULL,
                 args TEXT NOT NULL,
                 started_at INTEGER NOT NULL,
                 ended_at INTEGER NOT NULL DEFAULT 0,
                 status TEXT NOT NULL,
                 summary TEXT NOT NULL DEFAULT '',
                 artifacts TEXT NOT NULL DEFAULT '[]',
                 error TEXT NOT NULL DEFAULT ''
             );
             CREATE INDEX IF NOT EXISTS windows_started ON windows (started_at);",
        )
        .with_context(|| format!("preparing the window history {}", path.display()))?;
        // Histories made before windows had an origin, or a typed request, get the column.
        for (column, definition) in [
            ("origin", "TEXT NOT NULL DEFAULT ''"),
            ("spec", "BLOB NOT NULL DEFAULT x''"),
        ] {
            if db
                .prepare(&format!("SELECT {column} FROM windows LIMIT 0"))
                .is_err()
            {
                db.execute_batch(&format!(
                    "ALTER TABLE windows ADD COLUMN {column} {definition}"
                ))
                .with_context(|| format!("upgrading the window history {}", path.display()))?;
            }
        }
        redact_stored(&db).with_context(|| format!("redacting {}", path.display()))?;
        // SQLite made the -wal and -shm files with the database's mode; check it held.
        seal_state_files(&state)?;
        Ok(History { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (each call is one statement).
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Windows that were open when an earlier agent stopped without closing them.
    pub fn mark_lost(&self) -> anyhow::Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT id FROM windows WHERE status = 'open'")?;
        let ids: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        db.execute(
            "UPDATE windows SET status = 'lost', ended_at = ?1,
                 error = 'the agent stopped while the window was open' WHERE status = 'open'",
            params![now_s()],
        )?;
        Ok(ids)
    }

    pub fn insert_open(&self, r: &WindowRecord) -> anyhow::Result<()> {
        self.db().execute(
            "INSERT INTO windows (id, requester_uid, target, args, started_at, status, artifacts, origin, spec)
             VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6, ?7, ?8)",
            params![
                r.window_id,
                r.requester_uid,
                r.target,
                serde_json::to_string(&r.command_line)?,
                r.started_unix_s,
                serde_json::to_string(&r.artifacts)?,
                r.origin,
                r.spec.as_ref().map(Message::encode_to_vec).unwrap_or_default(),
            ],
        )?;
        Ok(())
    }

    pub fn finish(
        &self,
        id: &str,
        status: &str,
        summary_json: &str,
        artifacts: &[String],
        error: &str,
    ) -> anyhow::Result<()> {
        self.db().execute(
            "UPDATE windows SET status = ?2, ended_at = ?3, summary = ?4, artifacts = ?5, error = ?6
             WHERE id = ?1",
            params![
                id,
                status,
                now_s(),
                summary_json,
                serde_json::to_string(artifacts)?,
                error
            ],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> anyhow::Result<Option<WindowRecord>> {
        let db = self.db();
        let sql = format!("SELECT {COLUMNS} FROM windows WHERE id = ?1");
        Ok(db.query_row(&sql, params![id], record).optional()?)
    }

    pub fn list(&self, f: &Filter) -> anyhow::Result<Vec<WindowRecord>> {
        let db = self.db();
        let sql = format!(
            "SELECT {COLUMNS} FROM windows
             WHERE (?1 = '' OR instr(target, ?1) > 0) AND (?2 = '' OR status = ?2) AND started_at >= ?3
                 AND (?5 IS NULL OR requester_uid = ?5)
             ORDER BY started_at DESC, rowid DESC LIMIT ?4"
        );
        let limit = if f.limit == 0 {
            100
        } else {
            // A record holds its request twice and its summary: a list stays a few MB at most.
            f.limit.min(1_000)
        };
        let mut stmt = db.prepare(&sql)?;
        let rows = stmt
            .query_map(
                params![f.target, f.status, f.since_unix_s, limit, f.requester],
                record,
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Forgets ended windows older than `max_age` or beyond the newest `max_count`, and removes
    /// their artifacts. Returns how many were pruned.
    pub fn prune(&self, max_age: Duration, max_count: u32) -> anyhow::Result<usize> {
        let cutoff = now_s() - max_age.as_secs() as i64;
        let stale: Vec<(String, String)> = {
            let db = self.db();
            let mut stmt = db.prepare(
                "SELECT id, artifacts FROM windows WHERE status != 'open' AND (
                     started_at < ?1 OR id NOT IN (
                         SELECT id FROM windows ORDER BY started_at DESC, rowid DESC LIMIT ?2))",
            )?;
            let rows = stmt
                .query_map(params![cutoff, max_count], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            rows
        };
        for (id, artifacts) in &stale {
            let paths: Vec<String> = serde_json::from_str(artifacts).unwrap_or_default();
            // Each window's artifacts live in a directory of their own, named by its id.
            let dirs: std::collections::BTreeSet<PathBuf> = paths
                .iter()
                .filter_map(|p| Path::new(p).parent().map(Path::to_path_buf))
                .filter(|d| d.file_name().is_some_and(|n| n == id.as_str()))
                .collect();
            for dir in dirs {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        log::warn!("pruning artifacts {}: {e}", dir.display());
                    }
                }
            }
            self.db()
                .execute("DELETE FROM windows WHERE id = ?1", params![id])?;
        }
        Ok(stale.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_record(id: &str, started: i64) -> WindowRecord {
        WindowRecord {
            window_id: id.into(),
            requester_uid: 1000,
            target: format!("cgroup /sys/fs/cgroup/{id}"),
            command_line: vec!["--cgroup".into(), format!("/sys/fs/cgroup/{id}")],
            started_unix_s: started,
            ..Default::default()
        }
    }

    #[test]
    fn windows_are_kept_listed_lost_and_pruned() {
        let dir = std::env::temp_dir().join(format!("recap-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let h = History::open(&dir).unwrap();
        let now = now_s();
        h.insert_open(&open_record("a", now - 10)).unwrap();
        h.insert_open(&open_record("b", now - 5)).unwrap();
        h.insert_open(&open_record("old", now - 100_000)).unwrap();
        let artifact_dir = dir.join("art").join("a");
        std::fs::create_dir_all(&artifact_dir).unwrap();
        let pcap = artifact_dir.join("tcpdump.pcap").display().to_string();
        h.finish("a", "completed", "{}", std::slice::from_ref(&pcap), "")
            .unwrap();
        h.finish("old", "completed", "{}", &[], "").unwrap();

        let all = h.list(&Filter::default()).unwrap();
        let ids: Vec<&str> = all.iter().map(|r| r.window_id.as_str()).collect();
        assert_eq!(ids, ["b", "a", "old"], "newest first");
        let open = h
            .list(&Filter {
                status: "open".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(open.len(), 1);
        let by_target = h
            .list(&Filter {
                target: "/a".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(by_target[0].window_id, "a");
        assert_eq!(by_target[0].artifacts, [pcap]);

        // A restarted agent finds b still open: it was lost.
        drop(h);
        let h = History::open(&dir).unwrap();
        assert_eq!(h.mark_lost().unwrap(), ["b"]);
        assert_eq!(
            h.get("b").unwrap().unwrap().status,
            super::super::api::WindowStatus::Lost as i32
        );

        // Retention: by age, then by count; artifacts go with their window.
        assert_eq!(h.prune(Duration::from_secs(3600), 100).unwrap(), 1);
        assert!(h.get("old").unwrap().is_none());
        assert_eq!(h.prune(Duration::from_secs(3600), 1).unwrap(), 1);
        assert!(h.get("a").unwrap().is_none(), "a is beyond the newest 1");
        assert!(!artifact_dir.exists(), "its artifacts were pruned with it");
        assert!(h.get("b").unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_stored_by_an_older_agent_are_redacted_and_files_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("recap-history-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let h = History::open(&dir).unwrap();
        let mut r = open_record("old", now_s());
        r.command_line = vec!["--otlp-header".into(), "authorization=Bearer t0ken".into()];
        h.insert_open(&r).unwrap();
        drop(h);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            dir.join("history.db"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let h = History::open(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(5).any(|w| w == b"t0ken"),
                "the old text is gone"
            );
        }
        assert_eq!(
            h.get("old").unwrap().unwrap().command_line,
            ["--otlp-header", "authorization=<redacted>"]
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for entry in std::fs::read_dir(&dir).unwrap() {
            assert_eq!(mode(&entry.unwrap().path()), 0o600);
        }
        drop(h);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
