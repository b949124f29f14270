//! The store under disk faults (issue 16, "Trust under attack"): a full
//! disk (a small tmpfs mounted by the test) and corrupt segment files.
//!
//! Mounting needs root. Without it these tests say so and pass, except
//! under `CI=true`, where a missing capability is a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, AsArray, Int64Array, StringArray, TimestampNanosecondArray};
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;
use inferwatch_store::{
    read_parquet, FsyncPolicy, StoreError, StoreOptions, StoreReader, StoreWriter,
};

/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000_000_000;
const STREAM: &str = "gateway";
const ENOSPC: i32 = 28;

/// A tmpfs of a few megabytes, unmounted on drop.
struct SmallDisk {
    _parent: tempfile::TempDir,
    mount_point: PathBuf,
}

impl SmallDisk {
    /// `None` when mounting is not possible here (not root, no tmpfs) and
    /// not under CI; under `CI=true` that is a failure.
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let parent = tempfile::tempdir().unwrap();
        let mount_point = parent.path().join("disk");
        std::fs::create_dir(&mount_point).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&mount_point)
            .output();
        let failure = match output {
            Ok(output) if output.status.success() => None,
            Ok(output) => Some(String::from_utf8_lossy(&output.stderr).into_owned()),
            Err(error) => Some(error.to_string()),
        };
        match failure {
            None => Some(SmallDisk {
                _parent: parent,
                mount_point,
            }),
            Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("mounting a tmpfs needs root (CAP_SYS_ADMIN) under CI: {why}")
            }
            Some(why) => {
                eprintln!("skipped: cannot mount a tmpfs here ({why})");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Fills the disk with a ballast file until it is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.mount_point.join("ballast");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0xA5u8; 64 * 1024];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => {
                    assert_eq!(error.raw_os_error(), Some(ENOSPC), "{error}");
                    break;
                }
            }
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).status();
    }
}

/// Rows `first..first + count` of the gateway stream, with text that does
/// not compress (so the disk fills quickly).
fn batch(first: i64, count: i64) -> RecordBatch {
    let ids: Vec<i64> = (first..first + count).collect();
    let times: Vec<i64> = ids.iter().map(|id| START + id * 1_000_000).collect();
    let payloads: Vec<String> = ids
        .iter()
        .map(|id| {
            let mut state = (*id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            (0..8)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    format!("{state:016x}")
                })
                .collect()
        })
        .collect();
    RecordBatch::try_from_iter(vec![
        (
            "timestamp",
            Arc::new(TimestampNanosecondArray::from(times).with_timezone("UTC")) as ArrayRef,
        ),
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("payload", Arc::new(StringArray::from(payloads)) as ArrayRef),
    ])
    .unwrap()
}

fn options() -> StoreOptions {
    StoreOptions {
        fsync: FsyncPolicy::Always,
        flush_rows: 1 << 30,
        flush_interval: Duration::from_secs(3600),
        compaction_grace: Duration::ZERO,
        ..StoreOptions::default()
    }
}

/// Every id a reader sees (segments and WAL tail), with multiplicity.
fn stored_ids(root: &Path) -> BTreeMap<i64, usize> {
    let reader = StoreReader::open(root).unwrap();
    let snapshot = reader.snapshot(STREAM, None, None).unwrap();
    assert!(snapshot.skipped.is_empty(), "{:?}", snapshot.skipped);
    let mut batches = snapshot.tail.clone();
    for file in &snapshot.segments {
        batches.extend(read_parquet(&file.path).unwrap());
    }
    let mut ids = BTreeMap::new();
    for batch in batches {
        let column = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>();
        for id in column.iter().flatten() {
            *ids.entry(id).or_insert(0) += 1;
        }
    }
    ids
}

fn each_once(range: std::ops::Range<i64>) -> BTreeMap<i64, usize> {
    range.map(|id| (id, 1)).collect()
}

/// `.tmp` files anywhere under `root`.
fn partial_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut directories = vec![root.to_path_buf()];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                directories.push(path);
            } else if path.extension().is_some_and(|e| e == "tmp") {
                found.push(path);
            }
        }
    }
    found
}

fn assert_enospc(error: &StoreError, inside: &Path) -> PathBuf {
    let message = error.to_string();
    match error {
        StoreError::Io { path, source } => {
            assert_eq!(source.raw_os_error(), Some(ENOSPC), "{message}");
            assert!(path.starts_with(inside), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("No space left on device"), "{message}");
            path.clone()
        }
        other => panic!("expected an I/O error naming the file, got {other:?}"),
    }
}

#[test]
fn issue_16_appends_into_a_full_disk_fail_clearly_and_resume_without_loss() {
    let Some(disk) = SmallDisk::mount(4) else {
        return;
    };
    let root = disk.path().join("data");
    let mut writer = StoreWriter::open(&root, options()).unwrap();
    // Append until the disk is full; everything acknowledged is counted.
    let mut acknowledged = 0i64;
    let error = loop {
        match writer.append(STREAM, &batch(acknowledged, 500), Some("p")) {
            Ok(_) => acknowledged += 500,
            Err(error) => break error,
        }
        assert!(acknowledged < 1_000_000, "a 4 MB disk never filled");
    };
    assert!(acknowledged > 0);
    let wal_file = assert_enospc(&error, &root.join("wal"));
    assert_eq!(wal_file.extension().unwrap(), "wal");
    // Everything acknowledged is served, the failed batch is not.
    assert_eq!(stored_ids(&root), each_once(0..acknowledged));
    // Still full: the same batch fails again, and leaves nothing behind.
    let again = writer.append(STREAM, &batch(acknowledged, 500), Some("p"));
    assert_enospc(&again.unwrap_err(), &root.join("wal"));
    assert_eq!(stored_ids(&root), each_once(0..acknowledged));

    // Room again (a remount to a larger size): the same writer goes on.
    let remounted = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(disk.path())
        .status()
        .unwrap();
    assert!(remounted.success());
    let total = acknowledged + 1_000;
    writer
        .append(STREAM, &batch(acknowledged, 1_000), Some("p"))
        .unwrap();
    assert_eq!(stored_ids(&root), each_once(0..total));
    writer.close().unwrap();
    assert_eq!(stored_ids(&root), each_once(0..total));
    // And a restart recovers the same, once each.
    let writer = StoreWriter::open(&root, options()).unwrap();
    writer.close().unwrap();
    assert_eq!(stored_ids(&root), each_once(0..total));
}

#[test]
fn issue_16_a_flush_into_a_full_disk_is_retried_once_there_is_room() {
    let Some(disk) = SmallDisk::mount(16) else {
        return;
    };
    let root = disk.path().join("data");
    let mut writer = StoreWriter::open(&root, options()).unwrap();
    for first in (0..6_000).step_by(1_000) {
        writer
            .append(STREAM, &batch(first, 1_000), Some("p"))
            .unwrap();
    }
    let ballast = disk.fill();
    let error = writer.flush().unwrap_err();
    let partial = assert_enospc(&error, &root.join("segments"));
    assert!(
        partial.to_string_lossy().ends_with(".parquet.tmp"),
        "{error}"
    );
    // The partial file is gone and nothing of the flush is served twice.
    assert_eq!(partial_files(&root), Vec::<PathBuf>::new());
    assert_eq!(stored_ids(&root), each_once(0..6_000));
    let snapshot = StoreReader::open(&root)
        .unwrap()
        .snapshot(STREAM, None, None)
        .unwrap();
    assert!(snapshot.segments.is_empty(), "{:?}", snapshot.segments);

    std::fs::remove_file(ballast).unwrap();
    // More arrives, then the retried flush writes both.
    writer
        .append(STREAM, &batch(6_000, 1_000), Some("p"))
        .unwrap();
    writer.flush().unwrap();
    let snapshot = StoreReader::open(&root)
        .unwrap()
        .snapshot(STREAM, None, None)
        .unwrap();
    assert!(snapshot.tail.is_empty());
    assert_eq!(snapshot.segments.len(), 1);
    assert_eq!(stored_ids(&root), each_once(0..7_000));
    writer.close().unwrap();
    let writer = StoreWriter::open(&root, options()).unwrap();
    writer.close().unwrap();
    assert_eq!(stored_ids(&root), each_once(0..7_000));
}

/// Three flushed segments of the same hour: ids 0..100, 100..200, 200..300.
fn three_segments(root: &Path, options: StoreOptions) -> Vec<PathBuf> {
    let mut writer = StoreWriter::open(root, options).unwrap();
    for first in [0, 100, 200] {
        writer
            .append(STREAM, &batch(first, 100), Some("p"))
            .unwrap();
        writer.flush().unwrap();
    }
    writer.close().unwrap();
    let snapshot = StoreReader::open(root)
        .unwrap()
        .snapshot(STREAM, None, None)
        .unwrap();
    snapshot
        .segments
        .iter()
        .map(|file| file.path.clone())
        .collect()
}

#[test]
fn issue_16_corrupt_segments_are_named_and_skipped_while_the_others_answer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let segments = three_segments(root, options());
    assert_eq!(segments.len(), 3);
    // One cut short, one overwritten with garbage of the same length.
    let truncated = &segments[0];
    let length = std::fs::metadata(truncated).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(truncated)
        .unwrap()
        .set_len(length / 2)
        .unwrap();
    let garbage = &segments[2];
    let length = std::fs::metadata(garbage).unwrap().len() as usize;
    std::fs::write(garbage, vec![b'#'; length]).unwrap();

    let reader = StoreReader::open(root).unwrap();
    let snapshot = reader.snapshot(STREAM, None, None).unwrap();
    let served: Vec<&PathBuf> = snapshot.segments.iter().map(|file| &file.path).collect();
    assert_eq!(served, [&segments[1]]);
    let skipped: Vec<&PathBuf> = snapshot.skipped.iter().map(|(path, _)| path).collect();
    assert_eq!(skipped, [truncated, garbage]);
    for (path, why) in &snapshot.skipped {
        assert!(why.contains(&path.display().to_string()), "{why}");
        assert!(why.contains("corrupt store file"), "{why}");
    }
    assert_eq!(reader.corrupt_files().len(), 2);
    let ids: Vec<i64> = read_parquet(&segments[1])
        .unwrap()
        .iter()
        .flat_map(|batch| {
            let column = batch
                .column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>();
            column.iter().flatten().collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ids, (100..200).collect::<Vec<_>>());
    // Reading one directly names it too.
    let error = read_parquet(truncated).unwrap_err();
    assert!(
        matches!(&error, StoreError::Corrupt { path, .. } if path == truncated),
        "{error}"
    );
}

#[test]
fn issue_16_compaction_quarantines_a_corrupt_segment_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let compacting = StoreOptions {
        compact_min_files: 4,
        ..options()
    };
    let segments = three_segments(root, compacting.clone());
    std::fs::write(&segments[1], b"not parquet at all").unwrap();
    // A fourth small file makes the partition due for compaction.
    let mut writer = StoreWriter::open(root, compacting).unwrap();
    writer.append(STREAM, &batch(300, 100), Some("p")).unwrap();
    writer.flush().unwrap();
    let relative = segments[1].strip_prefix(root).unwrap();
    let quarantined = root.join("quarantine").join(relative);
    assert!(quarantined.exists(), "{} missing", quarantined.display());
    assert!(!segments[1].exists());
    assert_eq!(
        std::fs::read(&quarantined).unwrap(),
        b"not parquet at all",
        "kept as it was, to inspect"
    );
    // The next flush compacts the rest; the quarantined events are gone
    // from answers, everything else is there once.
    writer.append(STREAM, &batch(400, 100), Some("p")).unwrap();
    writer.flush().unwrap();
    writer.close().unwrap();
    let mut expected = each_once(0..100);
    expected.extend(each_once(200..500));
    assert_eq!(stored_ids(root), expected);
}
