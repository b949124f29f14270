//! [`FileSource`]: files and globs, read once or followed like `tail -F`.
//!
//! **Read once** (`follow: false`): the files are read in argument order
//! (glob matches in lexical order), each to its end; `.gz` files are
//! decompressed transparently and their offsets and line numbers refer to the
//! decompressed stream. A final line without a newline is emitted.
//!
//! **Follow** (`follow: true`): every file keeps being read as it grows.
//! Every poll interval (and whenever all files are quiet) the paths are
//! re-checked, which handles:
//!
//! * *rotation* (rename, then create): the old handle is drained to its end,
//!   including an unterminated last line, before anything from the new file
//!   at that path is emitted; then the new file is read from offset 0;
//! * *truncation* (copytruncate): when a file becomes shorter than what was
//!   read, reading restarts at offset 0;
//! * *globs*: new matching files are picked up and read from the start;
//! * *files that don't exist yet* are opened when they appear.
//!
//! While following, a line is only emitted once its newline has arrived.
//! Gzip files are read once even when following (they are finished archives).
//!
//! **Identity.** A file is `(device, inode)` plus a fingerprint of its first
//! up-to-256 bytes. The inode follows a file through renames; the fingerprint
//! catches an inode freed and reused while inferwatch was down. If a file
//! recorded in the checkpoint was rotated while inferwatch was down, it is
//! looked up by inode in its directory and its tail is drained first.
//!
//! When following a glob, make it match the live files only: `app.log*`
//! would also match `app.log.1.gz` once logrotate compresses a rotated file,
//! and read its lines a second time (the archive is a new file).
//!
//! Limits, as with `tail -F`: lines written to a rotated file after it was
//! drained are not read, and a truncation followed by a larger rewrite within
//! one poll interval is not noticed.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;

use super::{
    sleep_unless_stopped, PendingLines, Source, SourceChunk, SourcePoll, SourcePosition,
    DEFAULT_CHUNK_BYTES, DEFAULT_POLL_INTERVAL,
};
use crate::checkpoint::{Checkpoint, FileCheckpoint, Fingerprint, SinkMark, FINGERPRINT_BYTES};
use crate::chunk::ChunkBuffers;
use crate::{Chunk, IngestError};

/// How to read a set of files.
#[derive(Debug, Clone)]
pub struct FileSourceOptions {
    /// Files or glob patterns (`*`, `?`, `[...]`), read in this order.
    pub paths: Vec<String>,
    /// Keep reading as files grow, rotate and appear (`tail -F`).
    pub follow: bool,
    /// Where positions are committed; reading resumes from it on start.
    pub checkpoint: Option<PathBuf>,
    /// Pause between polls when following and nothing is new.
    pub poll_interval: Duration,
    /// Target chunk size in bytes; chunks end at the last newline before it
    /// (a single longer line makes a longer chunk).
    pub chunk_bytes: usize,
    /// When following, start files found at startup (and absent from the
    /// checkpoint) at their end instead of their beginning.
    pub start_at_end: bool,
    /// Raise to make [`Source::next_chunk`] return [`SourcePoll::End`].
    pub stop: Arc<AtomicBool>,
    /// Resume from these positions instead of the checkpoint file's (a
    /// sink that stores positions with its data, like the store's WAL).
    pub resume: Option<Vec<FileCheckpoint>>,
    /// Where chunk buffers come from; share it with the decoders that hand
    /// them back (see [`ChunkBuffers`]).
    pub buffers: ChunkBuffers,
}

impl FileSourceOptions {
    /// Read `paths` once, without a checkpoint, with default sizes.
    pub fn new(paths: Vec<String>) -> FileSourceOptions {
        FileSourceOptions {
            paths,
            follow: false,
            checkpoint: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            start_at_end: false,
            stop: Arc::new(AtomicBool::new(false)),
            resume: None,
            buffers: ChunkBuffers::default(),
        }
    }
}

/// Reads files and globs; see the [module documentation](self).
pub struct FileSource {
    options: FileSourceOptions,
    patterns: Vec<PathPattern>,
    /// Tracked files, in reading order.
    files: Vec<TrackedFile>,
    /// Next file to look at when following (round robin, so a busy file
    /// cannot starve the others).
    cursor: usize,
    last_discovery: Instant,
    resumed_sinks: Vec<SinkMark>,
}

enum PathPattern {
    Literal(PathBuf),
    Glob {
        text: String,
        pattern: glob::Pattern,
    },
}

impl PathPattern {
    fn parse(text: &str) -> Result<PathPattern, IngestError> {
        if !text.contains(['*', '?', '[']) {
            return Ok(PathPattern::Literal(PathBuf::from(text)));
        }
        let pattern = glob::Pattern::new(text).map_err(|error| IngestError::InvalidPattern {
            pattern: text.to_string(),
            message: error.to_string(),
        })?;
        Ok(PathPattern::Glob {
            text: text.to_string(),
            pattern,
        })
    }

    fn matches(&self, path: &Path) -> bool {
        match self {
            PathPattern::Literal(literal) => literal == path,
            PathPattern::Glob { pattern, .. } => pattern.matches_path(path),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    /// Being read (and followed).
    Active,
    /// No longer at any watched path: drain to the end, then forget.
    Orphaned,
    /// Read to its end and closed (read-once mode, or a gzip file).
    Finished,
}

enum Reader {
    Plain(File),
    Gzip(Box<MultiGzDecoder<BufReader<File>>>),
}

impl Reader {
    fn open(file: File, gzip: bool) -> Reader {
        if gzip {
            Reader::Gzip(Box::new(MultiGzDecoder::new(BufReader::new(file))))
        } else {
            Reader::Plain(file)
        }
    }

    /// Appends up to `limit` bytes to `buffer`, fewer only at the end of
    /// the input (for now). A plain file reads straight into the spare
    /// capacity: `File` reads into uninitialised memory, where going
    /// through `Reader`'s own `read` would zero every byte first.
    fn read_up_to(&mut self, limit: u64, buffer: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Reader::Plain(file) => file.take(limit).read_to_end(buffer),
            Reader::Gzip(decoder) => decoder.by_ref().take(limit).read_to_end(buffer),
        }
    }

    fn file(&self) -> &File {
        match self {
            Reader::Plain(file) => file,
            Reader::Gzip(decoder) => decoder.get_ref().get_ref(),
        }
    }
}

impl Read for Reader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Reader::Plain(file) => file.read(buffer),
            Reader::Gzip(decoder) => decoder.read(buffer),
        }
    }
}

struct TrackedFile {
    /// The watched path the file was found at; an orphan keeps it.
    path: PathBuf,
    /// Where the file is read from now: labels its chunks.
    name: Arc<str>,
    device: u64,
    inode: u64,
    fingerprint: Fingerprint,
    gzip: bool,
    /// Offset just after the last emitted byte (decompressed for gzip).
    offset: u64,
    /// Number of the last emitted line.
    line: u64,
    complete: bool,
    reader: Option<Reader>,
    /// Bytes read but not yet emitted: a partial line, or lines beyond a chunk.
    pending: PendingLines,
    state: FileState,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> IngestError + '_ {
    move |source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_gzip(path: &Path) -> bool {
    path.extension().is_some_and(|extension| extension == "gz")
}

impl TrackedFile {
    /// Opens `path` at offset 0. `file` was opened from `path` by the caller,
    /// whose identity decides which checkpoint entry applies.
    fn open(path: PathBuf, file: File) -> Result<TrackedFile, IngestError> {
        let metadata = file.metadata().map_err(io_error(&path))?;
        let fingerprint = Fingerprint::of_file(&file).map_err(io_error(&path))?;
        let gzip = is_gzip(&path);
        Ok(TrackedFile {
            name: Arc::from(path.to_string_lossy().as_ref()),
            device: metadata.dev(),
            inode: metadata.ino(),
            fingerprint,
            gzip,
            offset: 0,
            line: 0,
            complete: false,
            reader: Some(Reader::open(file, gzip)),
            pending: PendingLines::default(),
            state: FileState::Active,
            path,
        })
    }

    fn same_identity(&self, device: u64, inode: u64) -> bool {
        self.device == device && self.inode == inode
    }

    fn relabel(&mut self, path: &Path) {
        if self.path != path {
            self.path = path.to_path_buf();
            self.name = Arc::from(path.to_string_lossy().as_ref());
        }
    }

    /// Moves to a checkpointed position. A file now shorter than the
    /// checkpoint was truncated while we were away: it starts over.
    fn resume_at(&mut self, entry: &FileCheckpoint) -> Result<(), IngestError> {
        if entry.complete {
            self.offset = entry.offset;
            self.line = entry.line;
            self.complete = true;
            self.reader = None;
            self.state = FileState::Finished;
            return Ok(());
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(());
        };
        let resumed = match reader {
            Reader::Plain(file) => {
                let length = file
                    .metadata()
                    .map_err(io_error(Path::new(self.name.as_ref())))?
                    .len();
                if length < entry.offset {
                    false
                } else {
                    file.seek(SeekFrom::Start(entry.offset))
                        .map_err(io_error(Path::new(self.name.as_ref())))?;
                    true
                }
            }
            Reader::Gzip(decoder) => {
                // Gzip cannot seek: decompress and discard up to the offset.
                let skipped = io::copy(&mut decoder.by_ref().take(entry.offset), &mut io::sink())
                    .map_err(io_error(Path::new(self.name.as_ref())))?;
                skipped == entry.offset
            }
        };
        if !resumed && self.gzip {
            // Shorter than the checkpoint: a different stream, read it all.
            let mut file = reader
                .file()
                .try_clone()
                .map_err(io_error(Path::new(self.name.as_ref())))?;
            file.seek(SeekFrom::Start(0))
                .map_err(io_error(Path::new(self.name.as_ref())))?;
            *reader = Reader::open(file, true);
        }
        if resumed {
            self.offset = entry.offset;
            self.line = entry.line;
        }
        Ok(())
    }

    /// Reads until a chunk of whole lines is ready; `None` when the input is
    /// exhausted for now. With `emit_unterminated`, a final line without a
    /// newline counts as whole (end of a finished or rotated file). Returns
    /// the chunk's bytes and how many bytes of its over-long last line were
    /// skipped (see [`Chunk::skipped_bytes`]).
    fn fill(
        &mut self,
        chunk_bytes: usize,
        emit_unterminated: bool,
        buffers: &ChunkBuffers,
    ) -> Result<Option<(Vec<u8>, u64)>, IngestError> {
        // Small reads when a followed file is quiet would cost syscalls;
        // big reads into a fresh buffer are what a chunk needs anyway.
        const MIN_READ: usize = 64 * 1024;
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        while self.pending.full_chunk_end(chunk_bytes).is_none() {
            let start = self.pending.len();
            let wanted = chunk_bytes.saturating_sub(start).max(MIN_READ);
            // The buffer grows only as data actually arrives (no reserve: a
            // quiet followed file should not hold a chunk's worth).
            let read = reader
                .read_up_to(wanted as u64, self.pending.buffer())
                .map_err(io_error(Path::new(self.name.as_ref())))?;
            // Drops the rest of an over-long line as it is read.
            self.pending.appended(start);
            if read < wanted {
                break; // end of the file, for now
            }
        }
        let Some(cut) = self.pending.chunk_end(chunk_bytes, emit_unterminated) else {
            return Ok(None);
        };
        // A busy file: the next read fills a whole chunk, so give the tail a
        // recycled buffer of that size. A quiet followed file keeps only
        // its partial line.
        let pool =
            (self.pending.len() >= chunk_bytes).then_some((buffers, chunk_bytes + 2 * MIN_READ));
        Ok(Some(self.pending.take(cut, pool)))
    }

    /// Accounts for `taken` (bytes and skipped bytes) having been emitted;
    /// returns its chunk.
    fn take_chunk(&mut self, taken: (Vec<u8>, u64)) -> Chunk {
        Chunk::following(&self.name, &mut self.line, &mut self.offset, taken)
    }

    /// Skips the current content (start at end): whole lines are consumed,
    /// a trailing partial line stays pending so it is emitted once complete.
    fn skip_existing(
        &mut self,
        chunk_bytes: usize,
        buffers: &ChunkBuffers,
    ) -> Result<(), IngestError> {
        while let Some(data) = self.fill(chunk_bytes, false, buffers)? {
            buffers.give_back(self.take_chunk(data).data);
        }
        Ok(())
    }

    /// Restarts at offset 0 if the file is now shorter than what was read
    /// (copytruncate). Returns whether it did.
    fn restart_if_truncated(&mut self) -> Result<bool, IngestError> {
        let Some(Reader::Plain(file)) = self.reader.as_mut() else {
            return Ok(false);
        };
        let length = file
            .metadata()
            .map_err(io_error(Path::new(self.name.as_ref())))?
            .len();
        if length >= self.offset + self.pending.input_bytes() {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(0))
            .map_err(io_error(Path::new(self.name.as_ref())))?;
        self.fingerprint =
            Fingerprint::of_file(file).map_err(io_error(Path::new(self.name.as_ref())))?;
        self.offset = 0;
        self.line = 0;
        self.pending.clear();
        Ok(true)
    }

    /// A short fingerprint (the file was tiny when first seen) is widened as
    /// the file grows, so that it identifies the file better on resume.
    fn widen_fingerprint(&mut self) -> Result<(), IngestError> {
        if self.fingerprint.len >= FINGERPRINT_BYTES as u64 {
            return Ok(());
        }
        if let Some(reader) = &self.reader {
            self.fingerprint = Fingerprint::of_file(reader.file())
                .map_err(io_error(Path::new(self.name.as_ref())))?;
        }
        Ok(())
    }

    fn checkpoint(&self) -> FileCheckpoint {
        FileCheckpoint {
            path: self.path.clone(),
            device: self.device,
            inode: self.inode,
            fingerprint: self.fingerprint.hex.clone(),
            fingerprint_len: self.fingerprint.len,
            offset: self.offset,
            line: self.line,
            gzip: self.gzip,
            complete: self.complete,
        }
    }
}

/// Looks for the file `(device, inode)` in `directory` (a file rotated while
/// we were down has usually been renamed next to its old path).
fn find_by_identity(directory: &Path, device: u64, inode: u64) -> Option<PathBuf> {
    let directory = if directory.as_os_str().is_empty() {
        Path::new(".")
    } else {
        directory
    };
    fs::read_dir(directory)
        .ok()?
        .filter_map(Result::ok)
        .find(|entry| {
            entry.metadata().is_ok_and(|metadata| {
                metadata.is_file() && metadata.dev() == device && metadata.ino() == inode
            })
        })
        .map(|entry| {
            if directory == Path::new(".") {
                PathBuf::from(entry.file_name())
            } else {
                entry.path()
            }
        })
}

fn fingerprint_matches(file: &File, entry: &FileCheckpoint) -> io::Result<bool> {
    Fingerprint {
        hex: entry.fingerprint.clone(),
        len: entry.fingerprint_len,
    }
    .matches(file)
}

impl FileSource {
    /// Opens the files (and the checkpoint, if any) and positions them.
    ///
    /// Reading once, a missing file or a glob matching nothing is an error;
    /// following, they are waited for.
    pub fn open(options: FileSourceOptions) -> Result<FileSource, IngestError> {
        if options.paths.is_empty() {
            return Err(IngestError::InvalidPattern {
                pattern: String::new(),
                message: "no input files given".to_string(),
            });
        }
        let patterns = options
            .paths
            .iter()
            .map(|text| PathPattern::parse(text))
            .collect::<Result<Vec<_>, _>>()?;
        let resumed = match &options.checkpoint {
            Some(path) => Checkpoint::load(path)?,
            None => None,
        };
        let (mut resume_files, resumed_sinks) = match resumed {
            Some(checkpoint) => (checkpoint.files, checkpoint.sinks),
            None => (Vec::new(), Vec::new()),
        };
        if let Some(files) = &options.resume {
            resume_files = files.clone();
        }
        let mut source = FileSource {
            options,
            patterns,
            files: Vec::new(),
            cursor: 0,
            last_discovery: Instant::now(),
            resumed_sinks,
        };
        source.discover(Some(resume_files))?;
        Ok(source)
    }

    /// The position after everything emitted so far.
    pub fn position(&self) -> SourcePosition {
        SourcePosition {
            files: self.files.iter().map(TrackedFile::checkpoint).collect(),
        }
    }

    /// The stop flag; raise it to end a follow.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.options.stop.clone()
    }

    /// The watched paths that exist now, in pattern order, without duplicates.
    fn expand(&self, initial: bool) -> Result<Vec<(PathBuf, fs::Metadata)>, IngestError> {
        let strict = initial && !self.options.follow;
        let mut found: Vec<(PathBuf, fs::Metadata)> = Vec::new();
        let mut push = |path: PathBuf, metadata: fs::Metadata| {
            let duplicate = found
                .iter()
                .any(|(_, seen)| seen.dev() == metadata.dev() && seen.ino() == metadata.ino());
            if !duplicate {
                found.push((path, metadata));
            }
        };
        for pattern in &self.patterns {
            match pattern {
                PathPattern::Literal(path) => match fs::metadata(path) {
                    Ok(metadata) if metadata.is_file() => push(path.clone(), metadata),
                    Ok(_) if strict => {
                        return Err(IngestError::Io {
                            path: path.clone(),
                            source: io::Error::other("not a regular file"),
                        })
                    }
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound && !strict => {}
                    Err(source) => {
                        return Err(IngestError::Io {
                            path: path.clone(),
                            source,
                        })
                    }
                },
                PathPattern::Glob { text, .. } => {
                    let paths = glob::glob(text).map_err(|error| IngestError::InvalidPattern {
                        pattern: text.clone(),
                        message: error.to_string(),
                    })?;
                    let mut matched = false;
                    // Unreadable directory entries are skipped, as a shell would.
                    for path in paths.filter_map(Result::ok) {
                        if let Ok(metadata) = fs::metadata(&path) {
                            if metadata.is_file() {
                                matched = true;
                                push(path, metadata);
                            }
                        }
                    }
                    if strict && !matched {
                        return Err(IngestError::InvalidPattern {
                            pattern: text.clone(),
                            message: "no files match".to_string(),
                        });
                    }
                }
            }
        }
        Ok(found)
    }

    /// Reconciles the tracked files with what is at the watched paths now.
    /// `resume` is the checkpoint's entries, given only on the first call.
    fn discover(&mut self, resume: Option<Vec<FileCheckpoint>>) -> Result<(), IngestError> {
        let initial = resume.is_some();
        let mut resume = resume.unwrap_or_default();
        self.last_discovery = Instant::now();
        let found = self.expand(initial)?;

        // Files already tracked: follow renames, orphan the vanished.
        if self.options.follow {
            for file in &mut self.files {
                let at = found
                    .iter()
                    .find(|(_, metadata)| file.same_identity(metadata.dev(), metadata.ino()));
                match (at, file.state) {
                    (Some((path, _)), _) => {
                        file.relabel(path);
                        if file.state == FileState::Orphaned {
                            file.state = FileState::Active;
                        }
                    }
                    (None, FileState::Active) => file.state = FileState::Orphaned,
                    (None, _) => {}
                }
            }
            // A finished file that is gone needs no entry any more.
            self.files.retain(|file| {
                file.state != FileState::Finished
                    || found
                        .iter()
                        .any(|(_, metadata)| file.same_identity(metadata.dev(), metadata.ino()))
            });
        }

        // Files not tracked yet.
        for (path, metadata) in found {
            if self
                .files
                .iter()
                .any(|tracked| tracked.same_identity(metadata.dev(), metadata.ino()))
            {
                continue;
            }
            let file = match File::open(&path) {
                Ok(file) => file,
                // Gone between listing and opening: the next poll will tell.
                Err(error) if error.kind() == io::ErrorKind::NotFound && self.options.follow => {
                    continue
                }
                Err(source) => return Err(IngestError::Io { path, source }),
            };
            // The identity of what was opened decides (the path may have
            // been replaced since it was listed).
            let metadata = file.metadata().map_err(io_error(&path))?;
            let (device, inode) = (metadata.dev(), metadata.ino());
            if self
                .files
                .iter()
                .any(|tracked| tracked.same_identity(device, inode))
            {
                continue;
            }
            let mut tracked = TrackedFile::open(path, file)?;
            let entry = resume
                .iter()
                .position(|entry| entry.device == device && entry.inode == inode)
                .map(|index| resume.swap_remove(index));
            let resumed = match entry {
                Some(entry) => {
                    let file = tracked.reader.as_ref().map(Reader::file);
                    let same_file = match file {
                        Some(file) => {
                            fingerprint_matches(file, &entry).map_err(io_error(&tracked.path))?
                        }
                        None => false,
                    };
                    // A different head means the inode was reused: a new file.
                    if same_file {
                        tracked.resume_at(&entry)?;
                    }
                    same_file
                }
                None => false,
            };
            if !resumed && initial && self.options.follow && self.options.start_at_end {
                tracked.skip_existing(self.options.chunk_bytes, &self.options.buffers)?;
            }
            self.files.push(tracked);
        }

        // Checkpointed files no longer at a watched path but whose old path is
        // watched were rotated while we were down: drain their tail first.
        let mut orphans = Vec::new();
        for entry in resume {
            if entry.complete
                || !self
                    .patterns
                    .iter()
                    .any(|pattern| pattern.matches(&entry.path))
            {
                continue;
            }
            let directory = entry.path.parent().unwrap_or(Path::new(""));
            let Some(path) = find_by_identity(directory, entry.device, entry.inode) else {
                continue;
            };
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if !fingerprint_matches(&file, &entry).map_err(io_error(&path))? {
                continue;
            }
            let mut tracked = TrackedFile::open(path, file)?;
            if !tracked.same_identity(entry.device, entry.inode) {
                continue; // replaced between the directory scan and the open
            }
            tracked.resume_at(&entry)?;
            // Keep the watched path in the checkpoint (chunks are still named
            // after where the file is now): if we go down again mid-drain,
            // that path is what tells the next start to look for it.
            tracked.path = entry.path;
            tracked.state = FileState::Orphaned;
            orphans.push(tracked);
        }
        if !orphans.is_empty() {
            orphans.append(&mut self.files);
            self.files = orphans;
        }
        Ok(())
    }

    fn ready(&mut self, index: usize, taken: (Vec<u8>, u64)) -> Result<SourcePoll, IngestError> {
        let file = &mut self.files[index];
        let chunk = file.take_chunk(taken);
        file.widen_fingerprint()?;
        Ok(SourcePoll::Ready(SourceChunk {
            chunk,
            position: self.position(),
        }))
    }

    /// One pass over the files; `None` when none has a chunk ready.
    fn poll_files(&mut self) -> Result<Option<SourcePoll>, IngestError> {
        let chunk_bytes = self.options.chunk_bytes.max(1);
        // Orphans first: a rotated file's tail precedes the new file's lines.
        let mut index = 0;
        while index < self.files.len() {
            if self.files[index].state == FileState::Orphaned {
                if let Some(data) =
                    self.files[index].fill(chunk_bytes, true, &self.options.buffers)?
                {
                    return self.ready(index, data).map(Some);
                }
                self.files.remove(index);
                continue;
            }
            index += 1;
        }
        let count = self.files.len();
        for step in 0..count {
            // Reading once goes file by file; following takes turns.
            let index = if self.options.follow {
                (self.cursor + step) % count
            } else {
                step
            };
            if self.files[index].state != FileState::Active {
                continue;
            }
            let read_to_end = !self.options.follow || self.files[index].gzip;
            if let Some(data) =
                self.files[index].fill(chunk_bytes, read_to_end, &self.options.buffers)?
            {
                self.cursor = index + 1;
                return self.ready(index, data).map(Some);
            }
            let file = &mut self.files[index];
            if read_to_end {
                file.state = FileState::Finished;
                file.complete = file.gzip;
                file.reader = None; // release the descriptor
                file.pending = PendingLines::default();
            } else if file.restart_if_truncated()? {
                if let Some(data) = file.fill(chunk_bytes, false, &self.options.buffers)? {
                    self.cursor = index + 1;
                    return self.ready(index, data).map(Some);
                }
            }
        }
        Ok(None)
    }
}

impl Source for FileSource {
    fn next_chunk(&mut self) -> Result<SourcePoll, IngestError> {
        let mut discovered = false;
        loop {
            if self.options.stop.load(Ordering::Relaxed) {
                return Ok(SourcePoll::End);
            }
            // Rotation must be noticed even while other files keep us busy.
            if self.options.follow && self.last_discovery.elapsed() >= self.options.poll_interval {
                self.discover(None)?;
                discovered = true;
            }
            if let Some(poll) = self.poll_files()? {
                return Ok(poll);
            }
            if !self.options.follow {
                return Ok(SourcePoll::End);
            }
            if !discovered {
                self.discover(None)?;
                discovered = true;
                continue;
            }
            sleep_unless_stopped(self.options.poll_interval, &self.options.stop);
            return Ok(if self.options.stop.load(Ordering::Relaxed) {
                SourcePoll::End
            } else {
                SourcePoll::Idle
            });
        }
    }

    fn commit_with_sinks(
        &mut self,
        position: &SourcePosition,
        sinks: &[SinkMark],
    ) -> Result<(), IngestError> {
        let Some(path) = &self.options.checkpoint else {
            return Ok(());
        };
        let checkpoint = Checkpoint {
            version: crate::checkpoint::CHECKPOINT_VERSION,
            files: position.files.clone(),
            sinks: sinks.to_vec(),
        };
        checkpoint.store(path)
    }

    fn resumed_sinks(&self) -> &[SinkMark] {
        &self.resumed_sinks
    }
}

#[cfg(test)]
mod tests;
