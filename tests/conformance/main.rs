//! The store conformance suite, once per backend. Later backends (DynamoDB) join with one line.

use cairn::store::{MemoryStore, SqliteStore};

cairn::store_conformance!(memory, || async { MemoryStore::new() });
cairn::store_conformance!(sqlite_memory, || async { SqliteStore::in_memory().expect("in-memory SQLite") });
cairn::store_conformance!(sqlite_file, || async {
    // The directory is removed when the guard drops; the open database keeps working (unlinked
    // files stay readable on Linux), so nothing is left behind.
    let dir = tempfile::tempdir().expect("a temp dir");
    SqliteStore::open(dir.path().join("cairn.db")).expect("a SQLite file")
});

/// A file store keeps runs across reopening (the `cargo lambda watch` restart case).
#[test]
fn sqlite_file_survives_reopen() {
    use cairn::{EventPayload, RunId, RunMeta, RunStore};
    cairn::testing::block_on(async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("cairn.db");
        let id = RunId::new("run-reopen");
        let meta = RunMeta::new(id.clone(), "f", EventPayload::new("a/b", serde_json::json!({})), 1);
        SqliteStore::open(&path).expect("open").create_run(meta.clone()).await.expect("create");
        let reopened = SqliteStore::open(&path).expect("reopen");
        assert_eq!(reopened.load(&id).await.expect("load").expect("present").meta, meta);
    });
}
