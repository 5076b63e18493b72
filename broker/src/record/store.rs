//! Where records are kept. The broker writes through [`RecordStore`], so
//! other backends (PostgreSQL, object storage) can follow; [`FileStore`]
//! is the embedded default: one file per session plus the index, under a
//! directory apart from any MCP host (the broker's data dir by default).
//!
//! ```text
//! records/index.jsonl              the cross-session index
//! records/sessions/<session>.jsonl one record per session
//! ```
//!
//! Stores only append, read, truncate a torn tail (recovery) and delete
//! whole records (retention); hashing and signing are the writer's.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mcpgate_shared::names::SessionId;

pub const INDEX_FILE: &str = "index.jsonl";
pub const SESSIONS_DIR: &str = "sessions";
const EXT: &str = "jsonl";

/// A place to keep records.
pub trait RecordStore: Send + Sync + 'static {
    /// Appends whole lines to a session's record, creating it if needed.
    fn append(&self, session: &SessionId, lines: &[u8]) -> io::Result<()>;
    /// Appends whole lines to the index.
    fn append_index(&self, lines: &[u8]) -> io::Result<()>;
    /// Makes everything appended to these sessions (and the index) durable.
    fn sync(&self, sessions: &[SessionId], index: bool) -> io::Result<()>;
    /// Forgets open handles for a session whose record is complete.
    fn close(&self, session: &SessionId);
    /// A session's record as stored; `None` if there is none.
    fn read(&self, session: &SessionId) -> io::Result<Option<Vec<u8>>>;
    /// The index as stored (empty when there is none yet).
    fn read_index(&self) -> io::Result<Vec<u8>>;
    /// Every session that has a record, in no particular order.
    fn sessions(&self) -> io::Result<Vec<SessionId>>;
    /// Cuts a session's record to `len` bytes (a torn last line after a
    /// crash, never acknowledged).
    fn truncate(&self, session: &SessionId, len: u64) -> io::Result<()>;
    /// Cuts the index to `len` bytes (a torn last line after a crash).
    fn truncate_index(&self, len: u64) -> io::Result<()>;
    /// Deletes a session's record (retention).
    fn delete(&self, session: &SessionId) -> io::Result<()>;
    /// Where it is, for messages.
    fn describe(&self) -> String;
}

/// Records as files under one directory (0700; files 0600).
pub struct FileStore {
    dir: PathBuf,
    open: Mutex<HashMap<SessionId, File>>,
    index: Mutex<Option<File>>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").field("dir", &self.dir).finish()
    }
}

impl FileStore {
    /// Opens (creating) a store for writing.
    pub fn create(dir: &Path) -> io::Result<FileStore> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join(SESSIONS_DIR))?;
        Ok(Self::at(dir))
    }

    /// A store over an existing directory (for reading and verifying: no
    /// directory is created).
    pub fn at(dir: &Path) -> FileStore {
        FileStore {
            dir: dir.to_owned(),
            open: Mutex::default(),
            index: Mutex::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn session_path(&self, session: &SessionId) -> PathBuf {
        self.dir
            .join(SESSIONS_DIR)
            .join(format!("{}.{EXT}", session.as_str()))
    }

    fn open_append(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
    }
}

fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match File::open(path) {
        Ok(mut f) => {
            let mut out = Vec::new();
            f.read_to_end(&mut out)?;
            Ok(Some(out))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl RecordStore for FileStore {
    fn append(&self, session: &SessionId, lines: &[u8]) -> io::Result<()> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let file = match open.entry(session.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let path = self.session_path(session);
                let new = !path.exists();
                let file = Self::open_append(&path)?;
                if new {
                    // The new name must survive a crash too.
                    sync_dir(&self.dir.join(SESSIONS_DIR))?;
                }
                e.insert(file)
            }
        };
        file.write_all(lines)
    }

    fn append_index(&self, lines: &[u8]) -> io::Result<()> {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if index.is_none() {
            let path = self.dir.join(INDEX_FILE);
            let new = !path.exists();
            *index = Some(Self::open_append(&path)?);
            if new {
                sync_dir(&self.dir)?;
            }
        }
        index.as_mut().expect("opened just above").write_all(lines)
    }

    fn sync(&self, sessions: &[SessionId], index: bool) -> io::Result<()> {
        {
            let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            for s in sessions {
                if let Some(f) = open.get(s) {
                    f.sync_data()?;
                }
            }
        }
        if index && let Some(f) = &*self.index.lock().unwrap_or_else(|p| p.into_inner()) {
            f.sync_data()?;
        }
        Ok(())
    }

    fn close(&self, session: &SessionId) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session);
    }

    fn read(&self, session: &SessionId) -> io::Result<Option<Vec<u8>>> {
        read_optional(&self.session_path(session))
    }

    fn read_index(&self) -> io::Result<Vec<u8>> {
        Ok(read_optional(&self.dir.join(INDEX_FILE))?.unwrap_or_default())
    }

    fn sessions(&self) -> io::Result<Vec<SessionId>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(self.dir.join(SESSIONS_DIR)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".jsonl")
                && let Ok(id) = stem.parse()
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn truncate(&self, session: &SessionId, len: u64) -> io::Result<()> {
        self.close(session);
        let f = OpenOptions::new()
            .write(true)
            .open(self.session_path(session))?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn truncate_index(&self, len: u64) -> io::Result<()> {
        self.index.lock().unwrap_or_else(|p| p.into_inner()).take();
        let f = OpenOptions::new()
            .write(true)
            .open(self.dir.join(INDEX_FILE))?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn delete(&self, session: &SessionId) -> io::Result<()> {
        self.close(session);
        match fs::remove_file(self.session_path(session)) {
            Ok(()) => sync_dir(&self.dir.join(SESSIONS_DIR)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}
