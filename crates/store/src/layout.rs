//! Where things live in a data directory, and which files are current.
//!
//! ```text
//! DIR/wal/<seq>.wal                                       write-ahead log (writer `local`)
//! DIR/wal-<id>/<seq>.wal                                  ... of writer `<id>`
//! DIR/flushed.json, DIR/flushed-<id>.json                 each writer's flush mark
//! DIR/segments/<stream>/date=YYYY-MM-DD/hour=HH/<id>.<first>-<last>.parquet
//! DIR/rollups/<stream>/date=YYYY-MM-DD/hour=HH/<id>.<first>-<last>.parquet
//! DIR/streams/<stream>.schema.arrow                        generic streams' evolving schema
//! ```
//!
//! A segment is named by its writer and the range of that writer's WAL
//! sequences it holds. That name is the whole manifest: a file whose `last`
//! is above its writer's flush mark belongs to a flush that never finished
//! (ignored, then deleted by that writer on open), and a file whose range
//! lies inside another of the same writer's was merged into it by
//! compaction (ignored, then deleted). So every crash point reads right.
//!
//! **Several writers.** Nodes with their own WALs may share one directory
//! when each has its own id (`--node-id`): every decision about which files
//! are current is taken per writer, against that writer's mark, and a
//! writer only ever deletes its own files. A reader sees the union of all
//! writers' current files and WAL tails. Names without an id (`<first>-
//! <last>.parquet`, before ids existed) belong to the default writer
//! [`DEFAULT_WRITER`], whose WAL and mark keep their old names, so an
//! existing data directory reads as before. Retention is by hour partition
//! and applies to every writer's files alike.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// The writer id of a node that sets none, and of files named without one.
pub const DEFAULT_WRITER: &str = "local";

/// Checks a writer id: letters, digits, `_` and `-` (it sits in file names).
pub fn check_writer_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(StoreError::InvalidOption {
            option: "node id".into(),
            message: format!("'{id}': use 1 to 64 letters, digits, '_' and '-'"),
        });
    }
    Ok(())
}

/// Nanoseconds in one hour, the partition width.
pub const HOUR_NANOS: i64 = 3_600_000_000_000;

/// Which kind of file tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Raw events.
    Segment,
    /// Per-minute rollups.
    Rollup,
}

impl FileKind {
    fn directory_name(self) -> &'static str {
        match self {
            FileKind::Segment => "segments",
            FileKind::Rollup => "rollups",
        }
    }
}

/// One Parquet file of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Absolute path.
    pub path: PathBuf,
    /// The writer (node id) that wrote it.
    pub writer: String,
    /// Start of its hour partition (UTC ns).
    pub hour_start: i64,
    /// First WAL sequence it holds.
    pub first_sequence: u64,
    /// Last WAL sequence it holds.
    pub last_sequence: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// The durable flush mark.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushMark {
    /// Every WAL record with a sequence ≤ this is in segments.
    pub flushed_through: u64,
    /// The source position stored with the newest flushed record that had one.
    #[serde(default)]
    pub last_position: Option<String>,
}

/// Paths inside one data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    writer: String,
}

impl Layout {
    /// A layout rooted at `root`, for the default writer.
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
            writer: DEFAULT_WRITER.to_string(),
        }
    }

    /// A layout rooted at `root` for writer `id` (checked).
    pub fn for_writer(root: &Path, id: &str) -> Result<Layout, StoreError> {
        check_writer_id(id)?;
        Ok(Layout {
            root: root.to_path_buf(),
            writer: id.to_string(),
        })
    }

    /// This layout's writer id.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// The ids of the writers that have a WAL or a flush mark here, sorted.
    pub fn writers(&self) -> Result<Vec<String>, StoreError> {
        let mut writers = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(writers),
            Err(error) => return Err(StoreError::io(&self.root, error)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let id = match name.as_str() {
                "wal" | "flushed.json" => Some(DEFAULT_WRITER),
                _ => name
                    .strip_prefix("wal-")
                    .or_else(|| name.strip_prefix("flushed-")?.strip_suffix(".json")),
            };
            if let Some(id) = id.filter(|id| check_writer_id(id).is_ok()) {
                if !writers.iter().any(|known| known == id) {
                    writers.push(id.to_string());
                }
            }
        }
        writers.sort();
        Ok(writers)
    }

    /// The same directory seen as writer `id`'s (for its WAL and mark).
    fn as_writer(&self, id: &str) -> Layout {
        Layout {
            root: self.root.clone(),
            writer: id.to_string(),
        }
    }

    /// Every writer's flush mark, by writer id.
    pub fn read_flush_marks(
        &self,
    ) -> Result<std::collections::BTreeMap<String, FlushMark>, StoreError> {
        let mut marks = std::collections::BTreeMap::new();
        for id in self.writers()? {
            let mark = self.as_writer(&id).read_flush_mark()?;
            marks.insert(id, mark);
        }
        Ok(marks)
    }

    /// Writer `id`'s WAL directory.
    pub fn wal_directory_of(&self, id: &str) -> PathBuf {
        self.as_writer(id).wal_directory()
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The WAL directory.
    pub fn wal_directory(&self) -> PathBuf {
        if self.writer == DEFAULT_WRITER {
            return self.root.join("wal");
        }
        self.root.join(format!("wal-{}", self.writer))
    }

    fn flush_mark_path(&self) -> PathBuf {
        if self.writer == DEFAULT_WRITER {
            return self.root.join("flushed.json");
        }
        self.root.join(format!("flushed-{}.json", self.writer))
    }

    /// The writer's lock: held (`flock`) while it runs, with its process id
    /// inside for the message a second writer gets.
    pub fn lock_path(&self) -> PathBuf {
        if self.writer == DEFAULT_WRITER {
            return self.root.join("writer.lock");
        }
        self.root.join(format!("writer-{}.lock", self.writer))
    }

    /// Where a generic stream's schema is kept.
    pub fn schema_path(&self, stream: &str) -> PathBuf {
        self.root
            .join("streams")
            .join(format!("{stream}.schema.arrow"))
    }

    /// Reads this writer's flush mark (zero when absent).
    pub fn read_flush_mark(&self) -> Result<FlushMark, StoreError> {
        let path = self.flush_mark_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(FlushMark::default()),
            Err(error) => Err(StoreError::io(&path, error)),
        }
    }

    /// Writes the flush mark atomically (tmp, fsync, rename, fsync dir).
    pub fn write_flush_mark(&self, mark: &FlushMark) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(mark).map_err(|e| StoreError::Internal(e.to_string()))?;
        write_atomically(&self.flush_mark_path(), &bytes)
    }

    /// The partition directory of `stream` for the hour starting at `hour_start`.
    pub fn partition_directory(&self, kind: FileKind, stream: &str, hour_start: i64) -> PathBuf {
        let time = DateTime::<Utc>::from_timestamp_nanos(hour_start);
        self.root
            .join(kind.directory_name())
            .join(stream)
            .join(format!(
                "date={:04}-{:02}-{:02}",
                time.year(),
                time.month(),
                time.day()
            ))
            .join(format!("hour={:02}", time.hour()))
    }

    /// This writer's file for its WAL range `first..=last` in a partition.
    pub fn data_file_path(
        &self,
        kind: FileKind,
        stream: &str,
        hour_start: i64,
        first: u64,
        last: u64,
    ) -> PathBuf {
        self.partition_directory(kind, stream, hour_start)
            .join(format!("{}.{first:020}-{last:020}.parquet", self.writer))
    }

    /// Streams that have segments or WAL data on disk, sorted.
    pub fn stream_names(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        for directory in [self.root.join("segments"), self.root.join("streams")] {
            let Ok(entries) = std::fs::read_dir(&directory) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let name = name
                    .strip_suffix(".schema.arrow")
                    .map(str::to_string)
                    .unwrap_or(name);
                if !name.starts_with('.') && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every file of `stream` of `kind` whose partition overlaps
    /// `[from, to)` (UTC ns), current or not, sorted by (hour, first).
    pub fn list_files(
        &self,
        kind: FileKind,
        stream: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<DataFile>, StoreError> {
        let stream_directory = self.root.join(kind.directory_name()).join(stream);
        let mut files = Vec::new();
        let Ok(dates) = std::fs::read_dir(&stream_directory) else {
            return Ok(files);
        };
        for date in dates.flatten() {
            let date_name = date.file_name().to_string_lossy().to_string();
            let Some(day) = date_name
                .strip_prefix("date=")
                .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            else {
                continue;
            };
            let Ok(hours) = std::fs::read_dir(date.path()) else {
                continue;
            };
            for hour in hours.flatten() {
                let hour_name = hour.file_name().to_string_lossy().to_string();
                let Some(hour_of_day) = hour_name
                    .strip_prefix("hour=")
                    .and_then(|h| h.parse::<u32>().ok())
                else {
                    continue;
                };
                let Some(start) = day
                    .and_hms_opt(hour_of_day, 0, 0)
                    .and_then(|t| t.and_utc().timestamp_nanos_opt())
                else {
                    continue;
                };
                if from.is_some_and(|from| start + HOUR_NANOS <= from)
                    || to.is_some_and(|to| start >= to)
                {
                    continue;
                }
                let Ok(entries) = std::fs::read_dir(hour.path()) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    let Some((writer, first, last)) = parse_data_file_name(&name) else {
                        continue;
                    };
                    let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    files.push(DataFile {
                        path: entry.path(),
                        writer,
                        hour_start: start,
                        first_sequence: first,
                        last_sequence: last,
                        bytes,
                    });
                }
            }
        }
        files.sort_by(|a, b| {
            (a.hour_start, &a.writer, a.first_sequence, a.last_sequence).cmp(&(
                b.hour_start,
                &b.writer,
                b.first_sequence,
                b.last_sequence,
            ))
        });
        Ok(files)
    }
}

/// `<writer>.<first>-<last>.parquet`, or the older `<first>-<last>.parquet`
/// of the default writer.
pub(crate) fn parse_data_file_name(name: &str) -> Option<(String, u64, u64)> {
    let stem = name.strip_suffix(".parquet")?;
    let (writer, range) = match stem.split_once('.') {
        Some((writer, range)) => (writer, range),
        None => (DEFAULT_WRITER, stem),
    };
    check_writer_id(writer).ok()?;
    let (first, last) = range.split_once('-')?;
    Some((writer.to_string(), first.parse().ok()?, last.parse().ok()?))
}

impl Layout {
    /// Half-written files (`*.tmp`) a crash left in `stream`'s partitions.
    pub fn partial_files(&self, kind: FileKind, stream: &str) -> Result<Vec<PathBuf>, StoreError> {
        let mut partial = Vec::new();
        let stream_directory = self.root.join(kind.directory_name()).join(stream);
        let Ok(dates) = std::fs::read_dir(&stream_directory) else {
            return Ok(partial);
        };
        for date in dates.flatten() {
            let Ok(hours) = std::fs::read_dir(date.path()) else {
                continue;
            };
            for hour in hours.flatten() {
                let Ok(entries) = std::fs::read_dir(hour.path()) else {
                    continue;
                };
                partial.extend(
                    entries
                        .flatten()
                        .map(|entry| entry.path())
                        .filter(|path| path.extension().is_some_and(|e| e == "tmp")),
                );
            }
        }
        Ok(partial)
    }
}

/// Splits `files` into the current ones and the obsolete ones: beyond
/// their writer's flush mark (`flushed_through(writer)`), or inside the
/// range of another file of the same writer and hour.
pub fn current_files(
    files: Vec<DataFile>,
    flushed_through: impl Fn(&str) -> u64,
) -> (Vec<DataFile>, Vec<DataFile>) {
    let mut current: Vec<DataFile> = Vec::with_capacity(files.len());
    let mut obsolete = Vec::new();
    let (flushed, unflushed): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|f| f.last_sequence <= flushed_through(&f.writer));
    obsolete.extend(unflushed);
    // Within one hour and writer, a wider range covering a narrower one wins.
    let mut by_hour: Vec<DataFile> = flushed;
    by_hour.sort_by(|a, b| {
        (
            a.hour_start,
            &a.writer,
            a.first_sequence,
            std::cmp::Reverse(a.last_sequence),
        )
            .cmp(&(
                b.hour_start,
                &b.writer,
                b.first_sequence,
                std::cmp::Reverse(b.last_sequence),
            ))
    });
    for file in by_hour {
        let covered = current.last().is_some_and(|previous| {
            previous.hour_start == file.hour_start
                && previous.writer == file.writer
                && previous.first_sequence <= file.first_sequence
                && file.last_sequence <= previous.last_sequence
        });
        if covered {
            obsolete.push(file);
        } else {
            current.push(file);
        }
    }
    (current, obsolete)
}

/// Hour partition start of a timestamp.
pub fn hour_start(timestamp: i64) -> i64 {
    timestamp.div_euclid(HOUR_NANOS) * HOUR_NANOS
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let directory = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(directory).map_err(|e| StoreError::io(directory, e))?;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary).map_err(|e| StoreError::io(&temporary, e))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| StoreError::io(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| StoreError::io(path, e))?;
    crate::wal::sync_directory(directory)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(hour: i64, first: u64, last: u64) -> DataFile {
        written_by(DEFAULT_WRITER, hour, first, last)
    }

    fn written_by(writer: &str, hour: i64, first: u64, last: u64) -> DataFile {
        DataFile {
            path: PathBuf::from(format!("{writer}-{hour}-{first}-{last}")),
            writer: writer.to_string(),
            hour_start: hour,
            first_sequence: first,
            last_sequence: last,
            bytes: 1,
        }
    }

    #[test]
    fn unflushed_and_covered_files_are_obsolete() {
        let files = vec![
            file(0, 1, 4),
            file(0, 1, 2),
            file(0, 3, 4),
            file(0, 5, 6),
            file(HOUR_NANOS, 3, 4),
            file(0, 7, 8),
        ];
        let (current, obsolete) = current_files(files, |_| 6);
        let names: Vec<_> = current
            .iter()
            .map(|f| (f.hour_start, f.first_sequence, f.last_sequence))
            .collect();
        assert_eq!(names, vec![(0, 1, 4), (0, 5, 6), (HOUR_NANOS, 3, 4)]);
        assert_eq!(obsolete.len(), 3);
    }

    #[test]
    fn each_writer_is_judged_by_its_own_mark_and_ranges() {
        // b's 1-9 neither covers a's files nor is covered by them, and b's
        // 3-4 is beyond b's own mark though under a's.
        let files = vec![
            written_by("a", 0, 1, 4),
            written_by("a", 0, 1, 2),
            written_by("b", 0, 1, 9),
            written_by("b", 0, 10, 12),
        ];
        let marks = |writer: &str| if writer == "a" { 20 } else { 9 };
        let (current, obsolete) = current_files(files, marks);
        let names: Vec<_> = current
            .iter()
            .map(|f| (f.writer.as_str(), f.first_sequence, f.last_sequence))
            .collect();
        assert_eq!(names, vec![("a", 1, 4), ("b", 1, 9)]);
        let gone: Vec<_> = obsolete
            .iter()
            .map(|f| (f.writer.as_str(), f.first_sequence))
            .collect();
        assert_eq!(gone, vec![("b", 10), ("a", 1)]);
    }

    #[test]
    fn old_names_belong_to_the_default_writer_and_bad_ids_are_refused() {
        assert_eq!(
            parse_data_file_name("00000000000000000001-00000000000000000004.parquet"),
            Some((DEFAULT_WRITER.to_string(), 1, 4))
        );
        assert_eq!(
            parse_data_file_name("node-b.00000000000000000001-00000000000000000004.parquet"),
            Some(("node-b".to_string(), 1, 4))
        );
        assert_eq!(parse_data_file_name("x y.1-2.parquet"), None);
        assert!(check_writer_id("a.b").is_err());
        assert!(check_writer_id("").is_err());
        assert!(Layout::for_writer(Path::new("/d"), "node-1").is_ok());
    }
}
