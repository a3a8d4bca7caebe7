//! Persisted Raft state: the log and the vote in a redb database, durable on commit.
//!
//! redb commits with fsync by default, so `append` reports an entry flushed only after it is
//! on disk, and a saved vote survives a crash: the two writes Raft needs durable. Entries are
//! stored as JSON keyed by log index; `vote`, `committed`, `last_purged` and the current
//! snapshot live in a small metadata table. Checked with openraft's storage test suite.

// openraft's trait signatures fix `StorageError` as the error type, large as it is.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::types::{CommandResult, NodeId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const SNAPSHOT: &str = "snapshot";

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the Raft store {path}: {message}")]
pub struct OpenError {
    /// The database file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

fn storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl ToString,
) -> StorageError<NodeId> {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

/// Opens (or creates) the database holding the log, vote and snapshot.
pub fn open(path: &Path) -> Result<Arc<Database>, OpenError> {
    let err = |e: &dyn std::fmt::Display| OpenError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    }
    let db = Database::create(path).map_err(|e| err(&e))?;
    // Create both tables up front so that readers never meet a missing table.
    let tx = db.begin_write().map_err(|e| err(&e))?;
    tx.open_table(LOG).map_err(|e| err(&e))?;
    tx.open_table(META).map_err(|e| err(&e))?;
    tx.commit().map_err(|e| err(&e))?;
    Ok(Arc::new(db))
}

fn read_meta<T: DeserializeOwned>(
    db: &Database,
    key: &str,
    subject: ErrorSubject<NodeId>,
) -> Result<Option<T>, StorageError<NodeId>> {
    let fail = |e: &dyn std::fmt::Display| storage_error(subject.clone(), ErrorVerb::Read, e);
    let tx = db.begin_read().map_err(|e| fail(&e))?;
    let table = tx.open_table(META).map_err(|e| fail(&e))?;
    match table.get(key).map_err(|e| fail(&e))? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(|e| fail(&e)),
    }
}

fn write_meta<T: Serialize>(
    db: &Database,
    key: &str,
    value: &T,
    subject: ErrorSubject<NodeId>,
) -> Result<(), StorageError<NodeId>> {
    let fail = |e: &dyn std::fmt::Display| storage_error(subject.clone(), ErrorVerb::Write, e);
    let bytes = serde_json::to_vec(value).map_err(|e| fail(&e))?;
    let tx = db.begin_write().map_err(|e| fail(&e))?;
    {
        let mut table = tx.open_table(META).map_err(|e| fail(&e))?;
        table.insert(key, bytes.as_slice()).map_err(|e| fail(&e))?;
    }
    tx.commit().map_err(|e| fail(&e))
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// A log store on an open database.
    pub fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let fail =
            |e: &dyn std::fmt::Display| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e);
        let tx = self.db.begin_read().map_err(|e| fail(&e))?;
        let table = tx.open_table(LOG).map_err(|e| fail(&e))?;
        let mut entries = Vec::new();
        for item in table.range(range).map_err(|e| fail(&e))? {
            let (_, bytes) = item.map_err(|e| fail(&e))?;
            entries.push(serde_json::from_slice(bytes.value()).map_err(|e| fail(&e))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let fail =
            |e: &dyn std::fmt::Display| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e);
        let last_purged: Option<LogId<NodeId>> =
            read_meta(&self.db, LAST_PURGED, ErrorSubject::Logs)?;
        let tx = self.db.begin_read().map_err(|e| fail(&e))?;
        let table = tx.open_table(LOG).map_err(|e| fail(&e))?;
        let last = match table.last().map_err(|e| fail(&e))? {
            None => None,
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> =
                    serde_json::from_slice(bytes.value()).map_err(|e| fail(&e))?;
                Some(entry.log_id)
            }
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            // With every entry purged, the last log id is the last purged one.
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        write_meta(&self.db, VOTE, vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        read_meta(&self.db, VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        write_meta(&self.db, COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(read_meta::<Option<LogId<NodeId>>>(&self.db, COMMITTED, ErrorSubject::Store)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let fail =
            |e: &dyn std::fmt::Display| storage_error(ErrorSubject::Logs, ErrorVerb::Write, e);
        let tx = self.db.begin_write().map_err(|e| fail(&e))?;
        {
            let mut table = tx.open_table(LOG).map_err(|e| fail(&e))?;
            for entry in entries {
                let bytes = serde_json::to_vec(&entry).map_err(|e| fail(&e))?;
                table
                    .insert(entry.log_id.index, bytes.as_slice())
                    .map_err(|e| fail(&e))?;
            }
        }
        // The commit fsyncs: only then are the entries durable.
        match tx.commit() {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(fail(&e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.remove(log_id.index..)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        write_meta(&self.db, LAST_PURGED, &log_id, ErrorSubject::Logs)?;
        self.remove(..=log_id.index)
    }
}

impl LogStore {
    fn remove(&self, range: impl RangeBounds<u64>) -> Result<(), StorageError<NodeId>> {
        let fail =
            |e: &dyn std::fmt::Display| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e);
        let tx = self.db.begin_write().map_err(|e| fail(&e))?;
        {
            let mut table = tx.open_table(LOG).map_err(|e| fail(&e))?;
            table.retain_in(range, |_, _| false).map_err(|e| fail(&e))?;
        }
        tx.commit().map_err(|e| fail(&e))
    }
}

/// What the state machine holds. Decisions (desired state) are added here as the log
/// learns to carry them; today it tracks what was applied and the membership.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MachineState {
    /// The last applied log id.
    pub last_applied: Option<LogId<NodeId>>,
    /// The membership in force.
    pub last_membership: StoredMembership<NodeId, BasicNode>,
    /// Commands applied since the cluster was formed.
    pub commands_applied: u64,
    /// The writable member of each group, as last named.
    #[serde(default)]
    pub primaries: std::collections::BTreeMap<String, crate::topology::TargetId>,
    /// Desired state (drains, weights, epoch, mode, cooldown) and the failover history.
    #[serde(default)]
    pub failover: crate::desired::Desired,
    /// The acknowledgement rule each primary or master was last seen running.
    #[serde(default)]
    pub rules: std::collections::BTreeMap<crate::topology::TargetId, crate::datastore::acks::Acks>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The replicated state machine. Its current snapshot is persisted with the log, so that a
/// restarted agent whose log was purged still knows the state it had.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    state: Arc<Mutex<MachineState>>,
    snapshots_built: Arc<Mutex<u64>>,
}

impl StateMachine {
    /// Loads the persisted snapshot, if any.
    pub fn new(db: Arc<Database>) -> Result<Self, StorageError<NodeId>> {
        let snapshot: Option<StoredSnapshot> =
            read_meta(&db, SNAPSHOT, ErrorSubject::Snapshot(None))?;
        let state = match snapshot {
            None => MachineState::default(),
            Some(s) => serde_json::from_slice(&s.data).map_err(|e| {
                storage_error(
                    ErrorSubject::Snapshot(Some(s.meta.signature())),
                    ErrorVerb::Read,
                    e,
                )
            })?,
        };
        Ok(StateMachine {
            db,
            state: Arc::new(Mutex::new(state)),
            snapshots_built: Arc::new(Mutex::new(0)),
        })
    }

    /// A copy of the current state.
    pub fn state(&self) -> MachineState {
        self.read(MachineState::clone)
    }

    /// Reads the current state without copying it (keep `f` short: applying waits for it).
    pub fn read<R>(&self, f: impl FnOnce(&MachineState) -> R) -> R {
        f(&self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Stores `data` as the current snapshot, so a restart finds it.
    fn persist_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: Vec<u8>,
    ) -> Result<(), StorageError<NodeId>> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        write_meta(
            &self.db,
            SNAPSHOT,
            &stored,
            ErrorSubject::Snapshot(Some(meta.signature())),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MachineState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let state = self.state();
        let data = serde_json::to_vec(&state)
            .map_err(|e| storage_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let n = {
            let mut built = self
                .snapshots_built
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *built += 1;
            *built
        };
        let snapshot_id = match state.last_applied {
            Some(id) => format!("{}-{}-{n}", id.leader_id, id.index),
            None => format!("none-{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.last_membership.clone(),
            snapshot_id,
        };
        self.persist_snapshot(&meta, data.clone())?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let s = self.lock();
        Ok((s.last_applied, s.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut s = self.lock();
        let mut results = Vec::new();
        // One result per entry, blank and membership entries included.
        for entry in entries {
            s.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(command) => {
                    s.commands_applied += 1;
                    match command {
                        super::types::Command::NamePrimary { group, target } => {
                            s.primaries.insert(group, target);
                        }
                        super::types::Command::PrimaryRule { target, acks } => match acks {
                            Some(acks) => {
                                s.rules.insert(target, acks);
                            }
                            None => {
                                s.rules.remove(&target);
                            }
                        },
                        super::types::Command::Failover(command) => {
                            for (group, target) in s.failover.apply(*command, entry.log_id.index) {
                                s.primaries.insert(group, target);
                            }
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    s.last_membership = StoredMembership::new(Some(entry.log_id), m)
                }
            }
            results.push(CommandResult {
                index: entry.log_id.index,
            });
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let mut state: MachineState = serde_json::from_slice(&data).map_err(|e| {
            storage_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e,
            )
        })?;
        state.last_applied = meta.last_log_id;
        state.last_membership = meta.last_membership.clone();
        self.persist_snapshot(meta, data)?;
        *self.lock() = state;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored: Option<StoredSnapshot> =
            read_meta(&self.db, SNAPSHOT, ErrorSubject::Snapshot(None))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct RedbBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RedbBuilder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = tempfile::tempdir()
                .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            // The suite checks the log store and the state machine apart: separate databases.
            let log = open(&dir.path().join("log.redb"))
                .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let sm = open(&dir.path().join("sm.redb"))
                .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
            Ok((dir, LogStore::new(log), StateMachine::new(sm)?))
        }
    }

    /// openraft's own storage test suite, against the redb store.
    #[test]
    fn passes_the_openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
        Suite::test_all(RedbBuilder)
    }

    #[tokio::test]
    async fn vote_log_and_snapshot_survive_reopening() -> Result<(), StorageError<NodeId>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let vote = Vote::new(7, 3);
        {
            let db = open(&path).unwrap();
            let mut log = LogStore::new(db.clone());
            log.save_vote(&vote).await?;
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(LOG).unwrap();
                let entry = Entry::<TypeConfig> {
                    log_id: openraft::testing::log_id(7, 3, 1),
                    payload: EntryPayload::Blank,
                };
                t.insert(1, serde_json::to_vec(&entry).unwrap().as_slice())
                    .unwrap();
            }
            tx.commit().unwrap();
            let mut sm = StateMachine::new(db)?;
            sm.build_snapshot().await?;
        }
        let db = open(&path).unwrap();
        let mut log = LogStore::new(db.clone());
        assert_eq!(log.read_vote().await?, Some(vote));
        let state = log.get_log_state().await?;
        assert_eq!(state.last_log_id.map(|l| l.index), Some(1));
        let mut sm = StateMachine::new(db)?;
        assert!(sm.get_current_snapshot().await?.is_some());
        Ok(())
    }
}
