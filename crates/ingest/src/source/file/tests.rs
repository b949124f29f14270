//! Behaviour of [`FileSource`]: read once, follow, rotation, checkpoints.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::*;

fn options(paths: &[&Path]) -> FileSourceOptions {
    let mut options = FileSourceOptions::new(
        paths
            .iter()
            .map(|path| path.display().to_string())
            .collect(),
    );
    options.poll_interval = Duration::from_millis(5);
    options.chunk_bytes = 64;
    options
}

fn following(paths: &[&Path]) -> FileSourceOptions {
    let mut options = options(paths);
    options.follow = true;
    options
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> String {
    range.map(|index| format!("{prefix}-{index}\n")).collect()
}

/// What a run of chunks says, checked for consistency on the way.
#[derive(Default)]
struct Collected {
    /// `(source, line number, line text)`.
    lines: Vec<(String, u64, String)>,
    last_position: Option<SourcePosition>,
    chunks: usize,
}

impl Collected {
    fn push(&mut self, ready: SourceChunk) {
        let chunk = ready.chunk;
        let text = String::from_utf8(chunk.data.clone()).unwrap();
        for (line_number, line) in (chunk.first_line..).zip(text.split_inclusive('\n')) {
            self.lines.push((
                chunk.source.to_string(),
                line_number,
                line.trim_end_matches('\n').to_string(),
            ));
        }
        self.last_position = Some(ready.position);
        self.chunks += 1;
    }

    fn texts(&self) -> Vec<String> {
        self.lines.iter().map(|(_, _, text)| text.clone()).collect()
    }
}

fn expected(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

/// Reads once, to the end.
fn read_all(source: &mut FileSource) -> Collected {
    let mut collected = Collected::default();
    loop {
        match source.next_chunk().unwrap() {
            SourcePoll::Ready(ready) => collected.push(ready),
            SourcePoll::Idle => panic!("idle while reading once"),
            SourcePoll::End => return collected,
        }
    }
}

/// Follows until the source has nothing new (its first `Idle`).
fn read_available(source: &mut FileSource, collected: &mut Collected) {
    loop {
        match source.next_chunk().unwrap() {
            SourcePoll::Ready(ready) => collected.push(ready),
            SourcePoll::Idle => return,
            SourcePoll::End => panic!("end while following"),
        }
    }
}

#[test]
fn reads_files_and_globs_in_argument_order() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    fs::create_dir(root.join("more")).unwrap();
    fs::write(root.join("b.log"), numbered("b", 0..10)).unwrap();
    fs::write(root.join("a.log"), numbered("a", 0..5)).unwrap();
    fs::write(root.join("more/x2.log"), numbered("x2", 0..3)).unwrap();
    fs::write(root.join("more/x1.log"), numbered("x1", 0..100)).unwrap();
    fs::write(root.join("more/ignored.txt"), "nope\n").unwrap();

    let glob = root.join("more/*.log");
    let mut source =
        FileSource::open(options(&[&root.join("b.log"), &glob, &root.join("a.log")])).unwrap();
    let collected = read_all(&mut source);
    let all = numbered("b", 0..10)
        + &numbered("x1", 0..100)
        + &numbered("x2", 0..3)
        + &numbered("a", 0..5);
    assert_eq!(collected.texts(), expected(&all));
    // Small chunks: several per file, and line numbers restart per file.
    assert!(collected.chunks > 6);
    let x1: Vec<u64> = collected
        .lines
        .iter()
        .filter(|(source, _, _)| source.ends_with("x1.log"))
        .map(|(_, line, _)| *line)
        .collect();
    assert_eq!(x1, (1..=100).collect::<Vec<u64>>());
}

#[test]
fn chunks_are_cut_at_newlines_with_offsets() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("in.log");
    let content = numbered("line", 0..200);
    fs::write(&path, &content).unwrap();
    let mut source = FileSource::open(options(&[&path])).unwrap();
    let mut rebuilt = Vec::new();
    loop {
        match source.next_chunk().unwrap() {
            SourcePoll::Ready(ready) => {
                assert_eq!(ready.chunk.first_offset, rebuilt.len() as u64);
                assert_eq!(ready.chunk.data.last(), Some(&b'\n'));
                rebuilt.extend_from_slice(&ready.chunk.data);
            }
            SourcePoll::Idle => unreachable!(),
            SourcePoll::End => break,
        }
    }
    assert_eq!(rebuilt, content.as_bytes());
}

#[test]
fn long_line_makes_a_longer_chunk() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("in.log");
    let long = "x".repeat(100_000);
    fs::write(&path, format!("short\n{long}\nafter\n")).unwrap();
    let collected = read_all(&mut FileSource::open(options(&[&path])).unwrap());
    assert_eq!(
        collected.texts(),
        vec!["short".to_string(), long, "after".to_string()]
    );
}

#[test]
fn read_once_errors_on_missing_file_and_empty_glob() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("missing.log");
    let message = FileSource::open(options(&[&missing]))
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("missing.log"), "{message}");
    let glob = directory.path().join("*.nothing");
    let message = FileSource::open(options(&[&glob]))
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("no files match"), "{message}");
}

#[test]
fn gzip_files_are_decompressed_with_decompressed_offsets() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("old.log.gz");
    // Two gzip members, as `cat a.gz b.gz` produces.
    let mut bytes = Vec::new();
    for part in [numbered("first", 0..20), numbered("second", 0..20)] {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(part.as_bytes()).unwrap();
        bytes.extend(encoder.finish().unwrap());
    }
    fs::write(&path, bytes).unwrap();
    let plain = directory.path().join("new.log");
    fs::write(&plain, "plain-0\n").unwrap();

    let mut source = FileSource::open(options(&[&path, &plain])).unwrap();
    let mut offsets = Vec::new();
    let mut collected = Collected::default();
    loop {
        match source.next_chunk().unwrap() {
            SourcePoll::Ready(ready) => {
                offsets.push((ready.chunk.first_offset, ready.chunk.data.len() as u64));
                collected.push(ready);
            }
            SourcePoll::Idle => unreachable!(),
            SourcePoll::End => break,
        }
    }
    let all = numbered("first", 0..20) + &numbered("second", 0..20) + "plain-0\n";
    assert_eq!(collected.texts(), expected(&all));
    // Offsets of the gzip chunks are contiguous in the decompressed stream.
    let mut next = 0;
    for (offset, length) in &offsets[..offsets.len() - 1] {
        assert_eq!(*offset, next);
        next += length;
    }
    assert_eq!(
        next,
        (numbered("first", 0..20) + &numbered("second", 0..20)).len() as u64
    );
}

#[test]
fn gzip_resume_skips_decompressed_offset() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("old.log.gz");
    let content = numbered("z", 0..100);
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(content.as_bytes()).unwrap();
    fs::write(&path, encoder.finish().unwrap()).unwrap();
    let checkpoint = directory.path().join("ckpt.json");
    let mut opts = options(&[&path]);
    opts.checkpoint = Some(checkpoint.clone());

    let mut source = FileSource::open(opts.clone()).unwrap();
    let mut first = Collected::default();
    for _ in 0..3 {
        let SourcePoll::Ready(ready) = source.next_chunk().unwrap() else {
            panic!("expected a chunk")
        };
        source.commit(&ready.position).unwrap();
        first.push(ready);
    }
    drop(source);
    let rest = read_all(&mut FileSource::open(opts).unwrap());
    assert_eq!(rest.lines[0].1, first.lines.len() as u64 + 1);
    let mut all = first.texts();
    all.extend(rest.texts());
    assert_eq!(all, expected(&content));
}

#[test]
fn final_line_without_newline() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("in.log");
    fs::write(&path, "one\ntwo\nthree").unwrap();
    // Reading once: the last line counts.
    let collected = read_all(&mut FileSource::open(options(&[&path])).unwrap());
    assert_eq!(collected.texts(), expected("one\ntwo\nthree"));
    assert_eq!(collected.lines[2].1, 3);

    // Following: it waits for the newline.
    let mut source = FileSource::open(following(&[&path])).unwrap();
    let mut collected = Collected::default();
    read_available(&mut source, &mut collected);
    assert_eq!(collected.texts(), expected("one\ntwo"));
    append(&path, " and more\nfour\n");
    read_available(&mut source, &mut collected);
    assert_eq!(
        collected.texts(),
        expected("one\ntwo\nthree and more\nfour")
    );
}

#[test]
fn follow_handles_truncation() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("in.log");
    fs::write(&path, numbered("before", 0..10)).unwrap();
    let mut source = FileSource::open(following(&[&path])).unwrap();
    let mut collected = Collected::default();
    read_available(&mut source, &mut collected);
    assert_eq!(collected.texts(), expected(&numbered("before", 0..10)));

    // copytruncate: the file shrinks, then new lines are written.
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    append(&path, &numbered("after", 0..3));
    read_available(&mut source, &mut collected);
    let all = numbered("before", 0..10) + &numbered("after", 0..3);
    assert_eq!(collected.texts(), expected(&all));
    // Line numbers start over with the new content.
    assert_eq!(collected.lines[10].1, 1);
}

#[test]
fn follow_handles_rotation_and_drains_the_old_tail_first() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("in.log");
    fs::write(&path, numbered("old", 0..5)).unwrap();
    let mut source = FileSource::open(following(&[&path])).unwrap();
    let mut collected = Collected::default();
    read_available(&mut source, &mut collected);

    // More lines, and an unterminated one, land in the old file just before
    // it is renamed away and a new file is created at the path.
    append(
        &path,
        &(numbered("old", 5..40) + "old-tail-without-newline"),
    );
    fs::rename(&path, directory.path().join("in.log.1")).unwrap();
    fs::write(&path, numbered("new", 0..40)).unwrap();
    read_available(&mut source, &mut collected);

    let all = numbered("old", 0..40) + "old-tail-without-newline\n" + &numbered("new", 0..40);
    assert_eq!(collected.texts(), expected(&all));
    let new_first = collected
        .lines
        .iter()
        .find(|(_, _, text)| text == "new-0")
        .unwrap();
    assert_eq!(new_first.1, 1);
    // The old file has been forgotten; only the new one is tracked.
    let position = collected.last_position.unwrap();
    assert_eq!(position.files().len(), 1);
    assert_eq!(
        position.files()[0].offset,
        numbered("new", 0..40).len() as u64
    );
}

#[test]
fn follow_picks_up_files_that_appear_later() {
    let directory = tempfile::tempdir().unwrap();
    let literal = directory.path().join("later.log");
    let glob = directory.path().join("g-*.log");
    let mut source = FileSource::open(following(&[&literal, &glob])).unwrap();
    let mut collected = Collected::default();
    read_available(&mut source, &mut collected);
    assert!(collected.lines.is_empty());

    fs::write(&literal, numbered("later", 0..3)).unwrap();
    fs::write(directory.path().join("g-1.log"), numbered("g1", 0..2)).unwrap();
    read_available(&mut source, &mut collected);
    fs::write(directory.path().join("g-2.log"), numbered("g2", 0..2)).unwrap();
    read_available(&mut source, &mut collected);

    let mut texts = collected.texts();
    texts.sort();
    let mut all =
        expected(&(numbered("later", 0..3) + &numbered("g1", 0..2) + &numbered("g2", 0..2)));
    all.sort();
    assert_eq!(texts, all);
}

#[test]
fn follow_start_at_end_skips_existing_lines() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("in.log");
    fs::write(&path, numbered("old", 0..50) + "partial").unwrap();
    let mut opts = following(&[&path]);
    opts.start_at_end = true;
    let mut source = FileSource::open(opts).unwrap();
    let mut collected = Collected::default();
    read_available(&mut source, &mut collected);
    assert!(collected.lines.is_empty());
    append(&path, "-done\nfresh\n");
    read_available(&mut source, &mut collected);
    assert_eq!(collected.texts(), expected("partial-done\nfresh"));
    // Line numbers count the skipped lines.
    assert_eq!(collected.lines[0].1, 51);
}

#[test]
fn stop_flag_ends_a_follow() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("in.log");
    fs::write(&path, "a\n").unwrap();
    let mut source = FileSource::open(following(&[&path])).unwrap();
    source.stop_flag().store(true, Ordering::Relaxed);
    assert!(matches!(source.next_chunk().unwrap(), SourcePoll::End));
}

/// Reads some chunks, committing the position of only some of them, then
/// "crashes" (drops the source) and restarts: the lines after the last
/// commit come again, the ones before do not.
#[test]
fn checkpoint_resume_has_no_loss_and_no_duplicates() {
    let directory = tempfile::tempdir().unwrap();
    let first = directory.path().join("a.log");
    let second = directory.path().join("b.log");
    fs::write(&first, numbered("a", 0..100)).unwrap();
    fs::write(&second, numbered("b", 0..100)).unwrap();
    let checkpoint = directory.path().join("state/ckpt.json");
    fs::create_dir(directory.path().join("state")).unwrap();
    let mut opts = options(&[&first, &second]);
    opts.checkpoint = Some(checkpoint.clone());

    let mut handled: Vec<String> = Vec::new();
    let mut run = 0;
    loop {
        run += 1;
        assert!(run < 1000, "not converging");
        let mut source = FileSource::open(opts.clone()).unwrap();
        let mut finished = true;
        // Each run handles a few chunks, commits, then reads one more
        // chunk it never commits (lost in the crash).
        for step in 0..4 {
            match source.next_chunk().unwrap() {
                SourcePoll::Ready(ready) => {
                    let mut collected = Collected::default();
                    let position = ready.position.clone();
                    collected.push(ready);
                    if step < 3 {
                        handled.extend(collected.texts());
                        source.commit(&position).unwrap();
                    } else {
                        // Read but never committed: lost in the "crash",
                        // so it must come again in the next run.
                        finished = false;
                    }
                }
                SourcePoll::Idle => unreachable!(),
                SourcePoll::End => break,
            }
        }
        if run == 3 {
            // The first file grows between runs.
            append(&first, &numbered("a", 100..120));
        }
        if finished {
            break;
        }
    }
    // Lines appended to a.log after it was finished are read by a later run,
    // after b.log's (which was still being read), or in a.log order if a.log
    // was not finished yet; either way exactly once.
    let mut sorted = handled.clone();
    sorted.sort();
    let mut all = expected(&(numbered("a", 0..120) + &numbered("b", 0..100)));
    all.sort();
    assert_eq!(sorted, all);
}

#[test]
fn checkpoint_resume_across_rotation_while_down() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("in.log");
    let checkpoint = directory.path().join("ckpt.json");
    fs::write(&path, numbered("old", 0..30)).unwrap();
    let mut opts = following(&[&path]);
    opts.chunk_bytes = 32;
    opts.checkpoint = Some(checkpoint.clone());

    let mut source = FileSource::open(opts.clone()).unwrap();
    let mut committed = Vec::new();
    let SourcePoll::Ready(ready) = source.next_chunk().unwrap() else {
        panic!("expected a chunk")
    };
    source.commit(&ready.position).unwrap();
    let mut collected = Collected::default();
    collected.push(ready);
    committed.extend(collected.texts());
    drop(source);

    // While down: more lines, then rotation.
    append(&path, &numbered("old", 30..35));
    fs::rename(&path, directory.path().join("in.log.1")).unwrap();
    fs::write(&path, numbered("new", 0..10)).unwrap();

    // Go down again after one chunk of the rotated file's tail: the next
    // start must still find it.
    let mut source = FileSource::open(opts.clone()).unwrap();
    let SourcePoll::Ready(ready) = source.next_chunk().unwrap() else {
        panic!("expected a chunk")
    };
    assert!(
        ready.chunk.source.ends_with("in.log.1"),
        "{}",
        ready.chunk.source
    );
    source.commit(&ready.position).unwrap();
    let mut collected = Collected::default();
    collected.push(ready);
    committed.extend(collected.texts());
    drop(source);

    let mut source = FileSource::open(opts).unwrap();
    let mut rest = Collected::default();
    read_available(&mut source, &mut rest);
    committed.extend(rest.texts());
    assert_eq!(
        committed,
        expected(&(numbered("old", 0..35) + &numbered("new", 0..10)))
    );
}

#[test]
fn reused_inode_with_different_head_is_read_from_start() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("in.log");
    let checkpoint = directory.path().join("ckpt.json");
    fs::write(&path, numbered("x", 0..10)).unwrap();
    let mut opts = options(&[&path]);
    opts.checkpoint = Some(checkpoint.clone());
    let mut source = FileSource::open(opts.clone()).unwrap();
    let collected = read_all(&mut source);
    source
        .commit(collected.last_position.as_ref().unwrap())
        .unwrap();

    // Same inode (rewritten in place), different first bytes: as if the
    // inode had been reused by another file.
    fs::write(&path, numbered("y", 0..12)).unwrap();
    let again = read_all(&mut FileSource::open(opts).unwrap());
    assert_eq!(again.texts(), expected(&numbered("y", 0..12)));
}

#[test]
fn corrupt_checkpoint_is_an_error_naming_the_file() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("in.log");
    fs::write(&path, "a\n").unwrap();
    let checkpoint = directory.path().join("broken-ckpt.json");
    fs::write(&checkpoint, "not json at all").unwrap();
    let mut opts = options(&[&path]);
    opts.checkpoint = Some(checkpoint);
    let error = FileSource::open(opts).err().unwrap();
    let message = error.to_string();
    assert!(message.contains("broken-ckpt.json"), "{message}");
    assert!(message.starts_with("checkpoint "), "{message}");
}

#[test]
fn commit_records_sinks_and_resume_reports_them() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("in.log");
    fs::write(&path, "a\nb\n").unwrap();
    let checkpoint = directory.path().join("ckpt.json");
    let mut opts = options(&[&path]);
    opts.checkpoint = Some(checkpoint.clone());
    let mut source = FileSource::open(opts.clone()).unwrap();
    assert!(source.resumed_sinks().is_empty());
    let collected = read_all(&mut source);
    let sink = SinkMark {
        path: directory.path().join("out.jsonl"),
        length: 1234,
    };
    source
        .commit_with_sinks(
            collected.last_position.as_ref().unwrap(),
            std::slice::from_ref(&sink),
        )
        .unwrap();
    let source = FileSource::open(opts).unwrap();
    assert_eq!(source.resumed_sinks(), &[sink]);
}

/// `(first line, first offset, data, skipped bytes)` of every chunk until
/// the source has nothing (read once: its end; following: its first idle).
fn chunks_until_quiet(source: &mut FileSource) -> Vec<(u64, u64, Vec<u8>, u64)> {
    let mut chunks = Vec::new();
    loop {
        match source.next_chunk().unwrap() {
            SourcePoll::Ready(ready) => chunks.push((
                ready.chunk.first_line,
                ready.chunk.first_offset,
                ready.chunk.data,
                ready.chunk.skipped_bytes,
            )),
            SourcePoll::Idle | SourcePoll::End => return chunks,
        }
    }
}

#[test]
fn issue_16_an_over_long_line_is_skipped_while_read_with_exact_positions_after_it() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("app.log");
    let long = 3 * crate::MAX_LINE_BYTES + 5;
    let mut text = b"first\n".to_vec();
    text.extend(std::iter::repeat_n(b'x', long));
    text.extend_from_slice(b"\nthird\nfourth\n");
    fs::write(&path, &text).unwrap();
    let checkpoint = directory.path().join("ckpt.json");
    let mut opts = options(&[&path]);
    opts.chunk_bytes = 256 * 1024;
    opts.checkpoint = Some(checkpoint.clone());
    let mut source = FileSource::open(opts.clone()).unwrap();
    // The chunk ending with the long line: committed, then a "crash".
    let ready = loop {
        match source.next_chunk().unwrap() {
            SourcePoll::Ready(ready) if ready.chunk.skipped_bytes > 0 => break ready,
            SourcePoll::Ready(_) => {}
            other => panic!("no cut chunk: {other:?}"),
        }
    };
    assert!(
        ready.chunk.data.ends_with(b"\n"),
        "the long line ends its chunk"
    );
    assert!(ready.chunk.data.len() <= 6 + crate::DEAD_LETTER_RAW_LIMIT + 1);
    let cut_line = &ready.chunk.data[ready.chunk.data.len() - 1 - crate::DEAD_LETTER_RAW_LIMIT..];
    assert!(cut_line.starts_with(b"xxxx"));
    assert_eq!(
        ready.chunk.skipped_bytes,
        (long - crate::DEAD_LETTER_RAW_LIMIT) as u64
    );
    source.commit(&ready.position).unwrap();
    drop(source);
    // Resumed: the next line has the right number and offset.
    let mut source = FileSource::open(opts).unwrap();
    let rest = chunks_until_quiet(&mut source);
    assert_eq!(rest.len(), 1);
    assert_eq!((rest[0].0, rest[0].1), (3, 6 + long as u64 + 1));
    assert_eq!(rest[0].2, b"third\nfourth\n");
    assert_eq!(source.position().files()[0].offset, text.len() as u64);
    assert_eq!(source.position().files()[0].line, 4);
}

#[test]
fn issue_16_a_followed_line_without_end_does_not_grow_and_is_emitted_once_ended() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("live.log");
    fs::write(&path, "a\n").unwrap();
    let mut source = FileSource::open(following(&[&path])).unwrap();
    assert_eq!(chunks_until_quiet(&mut source).len(), 1);
    // A writer that never ends its line: read and dropped as it grows.
    let block = "y".repeat(512 * 1024);
    for _ in 0..8 {
        append(&path, &block);
        assert!(chunks_until_quiet(&mut source).is_empty());
        let held = source.files[0].pending.len();
        assert!(held <= crate::MAX_LINE_BYTES + 2, "holds {held} bytes");
    }
    append(&path, "\nb\n");
    let chunks = chunks_until_quiet(&mut source);
    let total: usize = chunks.iter().map(|chunk| chunk.2.len()).sum();
    let skipped: u64 = chunks.iter().map(|chunk| chunk.3).sum();
    assert_eq!(total as u64 + skipped, 8 * 512 * 1024 + 3);
    assert_eq!(chunks[0].0, 2);
    assert!(chunks.last().unwrap().2.ends_with(b"b\n"));
}
