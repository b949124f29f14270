//! Where things live in a data directory, and which files are current.
//!
//! ```text
//! DIR/wal/<seq>.wal                                       write-ahead log
//! DIR/flushed.json                                        highest WAL sequence in segments
//! DIR/segments/<stream>/date=YYYY-MM-DD/hour=HH/<first>-<last>.parquet
//! DIR/rollups/<stream>/date=YYYY-MM-DD/hour=HH/<first>-<last>.parquet
//! DIR/streams/<stream>.schema.arrow                        generic streams' evolving schema
//! ```
//!
//! A segment is named by the WAL sequence range it holds. That name is the
//! whole manifest: a file whose `first` is above `flushed.json` belongs to a
//! flush that never finished (ignored, then deleted on open), and a file whose
//! range lies inside another's was merged into it by compaction (ignored,
//! then deleted). So every crash point leaves a directory that reads right.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::StoreError;

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
}

impl Layout {
    /// A layout rooted at `root`.
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The WAL directory.
    pub fn wal_directory(&self) -> PathBuf {
        self.root.join("wal")
    }

    fn flush_mark_path(&self) -> PathBuf {
        self.root.join("flushed.json")
    }

    /// Where a generic stream's schema is kept.
    pub fn schema_path(&self, stream: &str) -> PathBuf {
        self.root
            .join("streams")
            .join(format!("{stream}.schema.arrow"))
    }

    /// Reads the flush mark (zero when absent).
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

    /// The file for WAL range `first..=last` in a partition.
    pub fn data_file_path(
        &self,
        kind: FileKind,
        stream: &str,
        hour_start: i64,
        first: u64,
        last: u64,
    ) -> PathBuf {
        self.partition_directory(kind, stream, hour_start)
            .join(format!("{first:020}-{last:020}.parquet"))
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
                    let Some((first, last)) = name
                        .strip_suffix(".parquet")
                        .and_then(|stem| stem.split_once('-'))
                        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    else {
                        continue;
                    };
                    let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    files.push(DataFile {
                        path: entry.path(),
                        hour_start: start,
                        first_sequence: first,
                        last_sequence: last,
                        bytes,
                    });
                }
            }
        }
        files.sort_by_key(|f| (f.hour_start, f.first_sequence, f.last_sequence));
        Ok(files)
    }
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

/// Splits `files` (sorted by hour) into the current ones and the obsolete
/// ones: beyond the flush mark, or inside another file's range.
pub fn current_files(files: Vec<DataFile>, flushed_through: u64) -> (Vec<DataFile>, Vec<DataFile>) {
    let mut current: Vec<DataFile> = Vec::with_capacity(files.len());
    let mut obsolete = Vec::new();
    let (flushed, unflushed): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|f| f.last_sequence <= flushed_through);
    obsolete.extend(unflushed);
    // Within one hour, a wider range covering a narrower one wins.
    let mut by_hour: Vec<DataFile> = flushed;
    by_hour.sort_by_key(|f| {
        (
            f.hour_start,
            f.first_sequence,
            std::cmp::Reverse(f.last_sequence),
        )
    });
    for file in by_hour {
        let covered = current.last().is_some_and(|previous| {
            previous.hour_start == file.hour_start
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
        DataFile {
            path: PathBuf::from(format!("{hour}-{first}-{last}")),
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
        let (current, obsolete) = current_files(files, 6);
        let names: Vec<_> = current
            .iter()
            .map(|f| (f.hour_start, f.first_sequence, f.last_sequence))
            .collect();
        assert_eq!(names, vec![(0, 1, 4), (0, 5, 6), (HOUR_NANOS, 3, 4)]);
        assert_eq!(obsolete.len(), 3);
    }
}
