//! Durable resume positions for sources.
//!
//! A [`Checkpoint`] records, for every file a [`FileSource`](crate::FileSource)
//! tracks, how far its lines have been *handled*: the byte offset just after
//! the last handled line and that line's number. It can also record the
//! lengths of output files ([`SinkMark`]), so that a caller writing to a file
//! gets exactly-once output across crashes (see [`crate::Source::commit_with_sinks`]).
//!
//! The file is JSON, written atomically: the new content goes to a temporary
//! file in the same directory, which is fsynced, renamed over the checkpoint,
//! and then the directory is fsynced so that the rename itself survives a
//! power loss. A reader therefore sees either the old checkpoint or the new
//! one, never a mix.
//!
//! ```json
//! {
//!   "version": 1,
//!   "files": [
//!     { "path": "/var/log/model/app.log", "device": 2049, "inode": 131074,
//!       "fingerprint": "9f86d081884c7d659a2feaa0c55ad015", "fingerprint_len": 256,
//!       "offset": 1048320, "line": 5120 }
//!   ],
//!   "sinks": [ { "path": "/tmp/events.jsonl", "length": 2310044 } ]
//! }
//! ```
//!
//! Files are identified by `(device, inode)`, which survives renames
//! (rotation), plus a fingerprint of their first bytes, which detects an inode
//! that was freed and reused by an unrelated file while inferwatch was down.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::IngestError;

/// Version of the checkpoint format written by this build.
pub const CHECKPOINT_VERSION: u32 = 1;

/// How many leading bytes of a file its fingerprint covers, at most.
pub const FINGERPRINT_BYTES: usize = 256;

/// Everything needed to resume reading, and to repair outputs, after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version, [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// One entry per tracked file, in reading order.
    pub files: Vec<FileCheckpoint>,
    /// Lengths of the caller's output files at the moment of the commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<SinkMark>,
}

/// The resume position of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCheckpoint {
    /// Where the file was last seen. After a rotation this may no longer
    /// match the file at that path; identity decides.
    pub path: PathBuf,
    /// `st_dev` of the file.
    pub device: u64,
    /// `st_ino` of the file.
    pub inode: u64,
    /// Hex SHA-256 prefix of the file's first `fingerprint_len` raw bytes.
    pub fingerprint: String,
    /// How many leading bytes the fingerprint covers (at most [`FINGERPRINT_BYTES`]).
    pub fingerprint_len: u64,
    /// Byte offset just after the last handled line. For gzip files this is
    /// an offset in the *decompressed* stream, which is re-skipped on resume.
    pub offset: u64,
    /// Number of the last handled line (0 when none).
    pub line: u64,
    /// Whether the file is gzip-compressed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub gzip: bool,
    /// Whether the file was read to its end and will not be read again
    /// (gzip files, which are never appended to).
    #[serde(default, skip_serializing_if = "is_false")]
    pub complete: bool,
}

/// The length of an output file at the moment of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkMark {
    /// The output file (absolute).
    pub path: PathBuf,
    /// Its length in bytes after everything up to the commit was flushed.
    pub length: u64,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The identity of a file: `(device, inode)` plus a fingerprint of its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) hex: String,
    pub(crate) len: u64,
}

impl Fingerprint {
    /// Fingerprints the first up-to-[`FINGERPRINT_BYTES`] raw bytes of `file`,
    /// without moving its read position (positional reads).
    pub(crate) fn of_file(file: &File) -> io::Result<Fingerprint> {
        Self::of_file_prefix(file, FINGERPRINT_BYTES as u64)
    }

    /// Fingerprints the first `len` bytes of `file` (fewer if it is shorter).
    pub(crate) fn of_file_prefix(file: &File, len: u64) -> io::Result<Fingerprint> {
        use std::os::unix::fs::FileExt;
        let wanted = len.min(FINGERPRINT_BYTES as u64) as usize;
        let mut head = vec![0u8; wanted];
        let mut filled = 0;
        while filled < wanted {
            let read = file.read_at(&mut head[filled..], filled as u64)?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        head.truncate(filled);
        Ok(Self::of_bytes(&head))
    }

    pub(crate) fn of_bytes(head: &[u8]) -> Fingerprint {
        let digest = Sha256::digest(head);
        // 128 bits are plenty to tell two file heads apart.
        Fingerprint {
            hex: hex::encode(&digest[..16]),
            len: head.len() as u64,
        }
    }

    /// Whether `file` still starts with the bytes this fingerprint was taken from.
    pub(crate) fn matches(&self, file: &File) -> io::Result<bool> {
        let current = Self::of_file_prefix(file, self.len)?;
        Ok(current.len == self.len && current.hex == self.hex)
    }
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn empty() -> Checkpoint {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            files: Vec::new(),
            sinks: Vec::new(),
        }
    }

    /// Loads the checkpoint at `path`; `Ok(None)` if there is none yet.
    ///
    /// A file that exists but cannot be parsed is an error naming the file:
    /// silently starting over would duplicate or lose data.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>, IngestError> {
        let mut text = String::new();
        match File::open(path) {
            Ok(mut file) => file
                .read_to_string(&mut text)
                .map_err(|source| IngestError::Io {
                    path: path.to_path_buf(),
                    source,
                })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(IngestError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let checkpoint: Checkpoint =
            serde_json::from_str(&text).map_err(|error| IngestError::Checkpoint {
                path: path.to_path_buf(),
                message: format!(
                    "not a valid checkpoint ({error}); remove it to start reading from the beginning"
                ),
            })?;
        if checkpoint.version != CHECKPOINT_VERSION {
            return Err(IngestError::Checkpoint {
                path: path.to_path_buf(),
                message: format!(
                    "unsupported checkpoint version {} (this build reads version {CHECKPOINT_VERSION})",
                    checkpoint.version
                ),
            });
        }
        Ok(Some(checkpoint))
    }

    /// Writes the checkpoint to `path` atomically and durably.
    pub fn store(&self, path: &Path) -> Result<(), IngestError> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IngestError::Io { path, source }
        };
        let json = serde_json::to_vec_pretty(self)
            .map_err(|error| IngestError::Internal(format!("checkpoint serialization: {error}")))?;
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path.file_name().ok_or_else(|| IngestError::Checkpoint {
            path: path.to_path_buf(),
            message: "checkpoint path has no file name".to_string(),
        })?;
        // A fixed temporary name (one writer per checkpoint) so that a crash
        // mid-write leaves at most one stale temporary, overwritten next time.
        let mut temporary_name = std::ffi::OsString::from(".");
        temporary_name.push(file_name);
        temporary_name.push(".tmp");
        let temporary = directory.join(temporary_name);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)
            .map_err(io_error(&temporary))?;
        file.write_all(&json).map_err(io_error(&temporary))?;
        file.write_all(b"\n").map_err(io_error(&temporary))?;
        file.sync_all().map_err(io_error(&temporary))?;
        drop(file);
        fs::rename(&temporary, path).map_err(io_error(path))?;
        // The rename is only durable once the directory entry is.
        File::open(&directory)
            .and_then(|directory| directory.sync_all())
            .map_err(io_error(&directory))?;
        Ok(())
    }

    /// The recorded length of the sink at `path`, if any.
    pub fn sink_length(&self, path: &Path) -> Option<u64> {
        self.sinks
            .iter()
            .find(|sink| sink.path == path)
            .map(|sink| sink.length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_replace() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("ckpt.json");
        assert_eq!(Checkpoint::load(&path).unwrap(), None);
        let mut checkpoint = Checkpoint::empty();
        checkpoint.files.push(FileCheckpoint {
            path: "/x/app.log".into(),
            device: 1,
            inode: 2,
            fingerprint: "ab".into(),
            fingerprint_len: 3,
            offset: 4,
            line: 5,
            gzip: false,
            complete: false,
        });
        checkpoint.sinks.push(SinkMark {
            path: "/x/out".into(),
            length: 9,
        });
        checkpoint.store(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap().as_ref(), Some(&checkpoint));
        checkpoint.files[0].offset = 40;
        checkpoint.store(&path).unwrap();
        let loaded = Checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(loaded.files[0].offset, 40);
        assert_eq!(loaded.sink_length(Path::new("/x/out")), Some(9));
        // Only the checkpoint and its (reused) temporary name may exist.
        let names: Vec<_> = fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ckpt.json")]);
    }

    #[test]
    fn corrupt_checkpoint_names_the_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("ckpt.json");
        fs::write(&path, b"{\"version\": 1, \"files\": [ {\"path\": ").unwrap();
        let error = Checkpoint::load(&path).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, IngestError::Checkpoint { .. }), "{message}");
        assert!(message.contains("ckpt.json"), "{message}");
        assert!(message.contains("not a valid checkpoint"), "{message}");

        fs::write(&path, b"{\"version\": 7, \"files\": []}").unwrap();
        let message = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(
            message.contains("unsupported checkpoint version 7"),
            "{message}"
        );
    }

    #[test]
    fn fingerprint_matches_prefix() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("f");
        fs::write(&path, b"hello").unwrap();
        let print = Fingerprint::of_file(&File::open(&path).unwrap()).unwrap();
        assert_eq!(print.len, 5);
        fs::write(&path, b"hello world").unwrap();
        assert!(print.matches(&File::open(&path).unwrap()).unwrap());
        fs::write(&path, b"jello world").unwrap();
        assert!(!print.matches(&File::open(&path).unwrap()).unwrap());
        fs::write(&path, b"hel").unwrap();
        assert!(!print.matches(&File::open(&path).unwrap()).unwrap());
    }
}
