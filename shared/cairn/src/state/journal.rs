//! The journal as an execution reads it: one record per step id, found by position (the fast
//! path of every replay: the record at a call's position is that call's) or by id, and the
//! positions the code has passed. Every lookup costs the same at step 10,000 as at step 1, and
//! indexing a journal copies no ids.

use crate::id::FastHash;
use crate::record::StepRecord;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// Positions below this are kept in vectors (positions count step calls, so every run's are
/// dense from 0); the rest in trees.
const DENSE_LIMIT: u32 = 1 << 20;
const EMPTY: usize = usize::MAX;

/// The records of one execution, indexed.
#[derive(Debug)]
pub(crate) struct JournalIndex {
    records: Vec<StepRecord>,
    by_id: IdIndex,
    by_position: PositionMap,
    visited: PositionSet,
    /// How many distinct steps the journal held at the start (the replay's length).
    replayable: usize,
}

impl JournalIndex {
    /// Indexes `steps`; of records sharing an id, the last is kept (in the first one's slot).
    pub(crate) fn new(steps: &[StepRecord]) -> Self {
        Self::from_records(steps.iter().cloned(), steps.len())
    }

    /// Indexes `steps`, taking them (a driver's loaded journal is not copied again).
    pub(crate) fn from_vec(steps: Vec<StepRecord>) -> Self {
        let count = steps.len();
        Self::from_records(steps.into_iter(), count)
    }

    fn from_records(steps: impl Iterator<Item = StepRecord>, count: usize) -> Self {
        let mut journal = JournalIndex {
            records: Vec::with_capacity(count),
            by_id: IdIndex::with_capacity(count),
            by_position: PositionMap::default(),
            visited: PositionSet::default(),
            replayable: 0,
        };
        for record in steps {
            journal.put(record);
        }
        journal.replayable = journal.records.len();
        journal
    }

    /// Stores `record` (replacing the record of its id, if any); returns its slot.
    pub(crate) fn put(&mut self, record: StepRecord) -> usize {
        let position = record.position;
        let fingerprint = self.by_id.fingerprint(record.id.as_str());
        let slot = match self.by_id.get(&self.records, fingerprint, record.id.as_str()) {
            Some(slot) => {
                self.records[slot] = record;
                slot
            }
            None => {
                let slot = self.records.len();
                self.records.push(record);
                self.by_id.insert(fingerprint, slot);
                slot
            }
        };
        self.by_position.insert(position, slot);
        slot
    }

    /// The slot of the step `id`, which the code calls at `position`.
    pub(crate) fn find(&self, id: &str, position: u32) -> Option<usize> {
        if let Some(slot) = self.by_position.get(position).filter(|&slot| self.records[slot].id.as_str() == id) {
            return Some(slot);
        }
        self.by_id.get(&self.records, self.by_id.fingerprint(id), id)
    }

    /// The record in `slot` (from [`JournalIndex::find`]).
    pub(crate) fn get(&self, slot: usize) -> &StepRecord {
        &self.records[slot]
    }

    /// The record stored for the step last seen at `position`.
    pub(crate) fn at(&self, position: u32) -> Option<&StepRecord> {
        self.by_position.get(position).map(|slot| &self.records[slot])
    }

    /// Every record, in no particular order.
    pub(crate) fn records(&self) -> &[StepRecord] {
        &self.records
    }

    pub(crate) fn visit(&mut self, position: u32) {
        self.visited.insert(position);
    }

    pub(crate) fn visited(&self, position: u32) -> bool {
        self.visited.contains(position)
    }

    /// Whether memoized steps remain ahead of the code.
    pub(crate) fn replaying(&self) -> bool {
        self.visited.len < self.replayable
    }
}

/// Slots by step id, keyed by a 64-bit fingerprint of the id ([`FastHash`]) so that no id is
/// copied; the rare ids whose fingerprint another id already has are kept aside and searched
/// in turn.
#[derive(Debug)]
struct IdIndex {
    hash: FastHash,
    primary: HashMap<u64, usize, BuildHasherDefault<Fingerprinted>>,
    collided: Vec<usize>,
}

impl IdIndex {
    fn with_capacity(capacity: usize) -> Self {
        IdIndex {
            hash: FastHash::default(),
            primary: HashMap::with_capacity_and_hasher(capacity, BuildHasherDefault::default()),
            collided: Vec::new(),
        }
    }

    fn fingerprint(&self, id: &str) -> u64 {
        self.hash.hash_one(id)
    }

    fn get(&self, records: &[StepRecord], fingerprint: u64, id: &str) -> Option<usize> {
        if let Some(&slot) = self.primary.get(&fingerprint)
            && records[slot].id.as_str() == id
        {
            return Some(slot);
        }
        self.collided.iter().copied().find(|&slot| records[slot].id.as_str() == id)
    }

    /// Indexes a new record (its id not indexed yet) at `slot`.
    fn insert(&mut self, fingerprint: u64, slot: usize) {
        match self.primary.entry(fingerprint) {
            Entry::Vacant(vacant) => {
                vacant.insert(slot);
            }
            Entry::Occupied(_) => self.collided.push(slot),
        }
    }
}

/// Keys that are already well-mixed fingerprints are used as they are.
#[derive(Debug, Default)]
struct Fingerprinted(u64);

impl Hasher for Fingerprinted {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Slots by position.
#[derive(Debug, Default)]
struct PositionMap {
    dense: Vec<usize>,
    sparse: BTreeMap<u32, usize>,
}

impl PositionMap {
    fn insert(&mut self, position: u32, slot: usize) {
        if position < DENSE_LIMIT {
            let index = position as usize;
            if index >= self.dense.len() {
                self.dense.resize((index + 1).max(self.dense.len() * 2), EMPTY);
            }
            self.dense[index] = slot;
        } else {
            self.sparse.insert(position, slot);
        }
    }

    fn get(&self, position: u32) -> Option<usize> {
        if position < DENSE_LIMIT {
            self.dense.get(position as usize).copied().filter(|&slot| slot != EMPTY)
        } else {
            self.sparse.get(&position).copied()
        }
    }
}

/// A set of positions.
#[derive(Debug, Default)]
struct PositionSet {
    dense: Vec<bool>,
    sparse: BTreeSet<u32>,
    len: usize,
}

impl PositionSet {
    fn insert(&mut self, position: u32) {
        let added = if position < DENSE_LIMIT {
            let index = position as usize;
            if index >= self.dense.len() {
                self.dense.resize((index + 1).max(self.dense.len() * 2), false);
            }
            !std::mem::replace(&mut self.dense[index], true)
        } else {
            self.sparse.insert(position)
        };
        self.len += usize::from(added);
    }

    fn contains(&self, position: u32) -> bool {
        if position < DENSE_LIMIT {
            self.dense.get(position as usize).copied().unwrap_or(false)
        } else {
            self.sparse.contains(&position)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::StepId;
    use crate::record::{StepKind, StepState};

    fn record(name: &str, position: u32, output: u32) -> StepRecord {
        StepRecord {
            id: StepId::hash(name),
            name: name.into(),
            kind: StepKind::Run,
            position,
            state: StepState::Completed { output: output.into() },
            attempts: 1,
            started_at: 0,
            ended_at: Some(0),
            detail: None,
        }
    }

    #[test]
    fn finds_records_by_position_and_by_id() {
        let journal = JournalIndex::new(&[record("a", 0, 1), record("b", 1, 2), record("far", 5_000_000, 3)]);
        let position =
            |id: &str, at: u32| journal.find(StepId::hash(id).as_str(), at).map(|slot| journal.get(slot).position);
        assert_eq!(position("b", 1), Some(1));
        // The id at another position than the call's: found by id.
        assert_eq!(position("a", 7), Some(0));
        assert_eq!(position("far", 5_000_000), Some(5_000_000));
        assert!(journal.find(StepId::hash("c").as_str(), 2).is_none());
        assert_eq!(journal.at(1).map(|r| r.name.as_str()), Some("b"));
        assert!(journal.at(2).is_none());
    }

    #[test]
    fn a_repeated_id_keeps_the_last_record_in_the_first_slot() {
        let journal = JournalIndex::new(&[record("a", 0, 1), record("b", 1, 2), record("a", 2, 3)]);
        assert_eq!(journal.records().len(), 2);
        assert!(journal.replaying());
        let at_zero = journal.at(0).unwrap();
        assert_eq!((at_zero.position, &at_zero.state), (2, &StepState::Completed { output: 3.into() }));
    }

    #[test]
    fn fingerprint_collisions_are_searched() {
        let mut index = IdIndex::with_capacity(0);
        let records = vec![record("a", 0, 1), record("b", 1, 2)];
        let get = |index: &IdIndex, name: &str| {
            let id = StepId::hash(name);
            index.get(&records, index.fingerprint(id.as_str()), id.as_str())
        };
        index.insert(index.fingerprint(records[0].id.as_str()), 0);
        // "b" under "a"'s fingerprint: set aside, and still found.
        index.insert(index.fingerprint(records[0].id.as_str()), 1);
        assert_eq!(index.collided, vec![1]);
        assert_eq!(get(&index, "b"), Some(1));
        assert_eq!(get(&index, "a"), Some(0));
        assert_eq!(get(&index, "c"), None);
    }

    #[test]
    fn visited_positions_are_counted_once() {
        let mut journal = JournalIndex::new(&[record("a", 0, 1), record("b", 1, 2)]);
        journal.visit(0);
        journal.visit(0);
        assert!(journal.replaying());
        journal.visit(1);
        assert!(!journal.replaying());
        journal.visit(u32::MAX);
        assert!(journal.visited(u32::MAX) && journal.visited(1) && !journal.visited(2));
    }
}
