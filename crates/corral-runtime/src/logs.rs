//! Container logs: the shim writes stdout and stderr to size-capped, rotated files in the CRI
//! log format (`<RFC 3339 time> <stdout|stderr> <F|P> <content>`, F for a line that ended, P for a
//! partial one); readers print them back, and follow them: by polling for the first moments,
//! then with inotify.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

pub const LOG_FILE: &str = "container.log";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Appends to `logs/container.log`, rotating it to `.1`, `.2`, ... when it passes `max_bytes`,
/// keeping at most `max_files` files in all.
pub struct LogWriter {
    dir: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: File,
    size: u64,
}

impl LogWriter {
    pub fn open(dir: &Path, max_bytes: u64, max_files: u32) -> io::Result<LogWriter> {
        fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(4096),
            max_files: max_files.max(1),
            file,
            size,
        })
    }

    /// Records a chunk of output: one entry per line, the trailing unterminated part as partial.
    /// A file is rotated before an entry would take it past `max_bytes`.
    pub fn write(&mut self, stream: Stream, chunk: &[u8], now: &str) -> io::Result<()> {
        let mut buf = Vec::with_capacity(chunk.len() + 64);
        let mut rest = chunk;
        while !rest.is_empty() {
            let (line, tag, next) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], 'F', &rest[i + 1..]),
                None => (rest, 'P', &rest[rest.len()..]),
            };
            let start = buf.len();
            write!(buf, "{now} {} {tag} ", stream.as_str())?;
            buf.extend_from_slice(line);
            buf.push(b'\n');
            let entry_len = (buf.len() - start) as u64;
            if self.size + start as u64 + entry_len > self.max_bytes && self.size + start as u64 > 0 {
                self.file.write_all(&buf[..start])?;
                self.rotate()?;
                buf.drain(..start);
            }
            rest = next;
        }
        self.file.write_all(&buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let name = |n: u32| {
            if n == 0 {
                self.dir.join(LOG_FILE)
            } else {
                self.dir.join(format!("{LOG_FILE}.{n}"))
            }
        };
        if self.max_files == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = fs::remove_file(name(self.max_files - 1));
        for n in (0..self.max_files - 1).rev() {
            let _ = fs::rename(name(n), name(n + 1));
        }
        self.file = OpenOptions::new().create(true).append(true).open(name(0))?;
        self.size = 0;
        Ok(())
    }
}

/// One decoded log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub stream: Stream,
    /// The content, with its newline when the line ended.
    pub content: Vec<u8>,
}

/// Decodes one CRI log line (without its trailing newline). Malformed lines are skipped.
pub fn decode(line: &[u8]) -> Option<Entry> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let _time = parts.next()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tag = parts.next()?;
    let mut content = parts.next().unwrap_or_default().to_vec();
    if tag == b"F" {
        content.push(b'\n');
    }
    Some(Entry { stream, content })
}

/// Rotated log files, oldest first, then the current one.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(LOG_FILE)?.strip_prefix('.')?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    rotated.into_iter().map(|(_, p)| p).collect()
}

/// Reads complete lines from `reader` into `sink`, keeping an unfinished line in `pending`.
fn pump(
    reader: &mut impl Read,
    pending: &mut Vec<u8>,
    sink: &mut dyn FnMut(&Entry) -> io::Result<()>,
) -> io::Result<()> {
    let mut r = BufReader::new(reader);
    loop {
        let n = r.read_until(b'\n', pending)?;
        if n == 0 {
            return Ok(());
        }
        if pending.last() == Some(&b'\n') {
            pending.pop();
            if let Some(e) = decode(pending) {
                sink(&e)?;
            }
            pending.clear();
        }
    }
}

/// How long a follower polls before it sets up inotify. Closing an inotify instance waits out
/// an SRCU grace period (about 7 ms here): a short-lived container's `corral run` would spend
/// longer tearing down its watch than the container ran.
const POLL_FIRST: Duration = Duration::from_millis(250);
/// The polling interval meanwhile.
const POLL_EVERY: Duration = Duration::from_millis(2);

/// Prints a container's logs to `sink`. With `follow`, keeps printing new output until `done`
/// says the container has ended (checked on every wake-up), then drains what is left. For the
/// first [`POLL_FIRST`] it wakes every [`POLL_EVERY`]; after that, on inotify events in
/// `logs_dir` and `watch_also`.
pub fn read(
    logs_dir: &Path,
    follow: bool,
    mut done: impl FnMut() -> bool,
    watch_also: &Path,
    sink: &mut dyn FnMut(&Entry) -> io::Result<()>,
) -> io::Result<()> {
    let mut pending = Vec::new();
    for path in files(logs_dir) {
        if let Ok(mut f) = File::open(&path) {
            pump(&mut f, &mut pending, sink)?;
        }
        pending.clear();
    }
    let current = logs_dir.join(LOG_FILE);
    let mut file = File::open(&current).ok();
    if let Some(f) = file.as_mut() {
        pump(f, &mut pending, sink)?;
    }
    if !follow {
        return Ok(());
    }
    let polling_until = Instant::now() + POLL_FIRST;
    let mut inotify: Option<Inotify> = None;
    loop {
        let finished = done();
        // Rotation: the file we hold was renamed away; finish it, then switch to the new one.
        let fresh_ino = fs::metadata(&current).ok().map(|m| m.ino());
        let held_ino = file.as_ref().and_then(|f| f.metadata().ok()).map(|m| m.ino());
        if fresh_ino != held_ino {
            if let Some(f) = file.as_mut() {
                pump(f, &mut pending, sink)?;
            }
            pending.clear();
            file = File::open(&current).ok();
        }
        if let Some(f) = file.as_mut() {
            pump(f, &mut pending, sink)?;
        }
        if finished {
            return Ok(());
        }
        match &inotify {
            Some(ino) => wait_for_event(ino, Duration::from_millis(500))?,
            None if Instant::now() < polling_until => {
                let _ = nix::poll::poll(&mut [], nix::poll::PollTimeout::from(POLL_EVERY.as_millis() as u16));
            }
            // Watch, then go round once more before waiting: anything written before the watch
            // existed is read by the next pass.
            None => inotify = Some(watch(logs_dir, watch_also)?),
        }
    }
}

fn watch(logs_dir: &Path, watch_also: &Path) -> io::Result<Inotify> {
    let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
    fs::create_dir_all(logs_dir)?;
    let flags = AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO;
    ino.add_watch(logs_dir, flags)?;
    ino.add_watch(watch_also, flags | AddWatchFlags::IN_CLOSE_WRITE)?;
    Ok(ino)
}

fn wait_for_event(inotify: &Inotify, timeout: Duration) -> io::Result<()> {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(inotify.as_fd(), nix::poll::PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    match inotify.read_events() {
        Ok(_) | Err(nix::errno::Errno::EAGAIN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(dir: &Path) -> Vec<Entry> {
        let mut out = Vec::new();
        read(dir, false, || true, dir, &mut |e| {
            out.push(e.clone());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn lines_round_trip_with_partials() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(tmp.path(), 1 << 20, 3).unwrap();
        w.write(Stream::Stdout, b"one\ntwo\npart", "T").unwrap();
        w.write(Stream::Stderr, b"err\n", "T").unwrap();
        let text = fs::read_to_string(tmp.path().join(LOG_FILE)).unwrap();
        assert_eq!(text, "T stdout F one\nT stdout F two\nT stdout P part\nT stderr F err\n");
        let entries = collect(tmp.path());
        let out: Vec<u8> =
            entries.iter().filter(|e| e.stream == Stream::Stdout).flat_map(|e| e.content.clone()).collect();
        assert_eq!(out, b"one\ntwo\npart");
        assert_eq!(entries.last().unwrap(), &Entry { stream: Stream::Stderr, content: b"err\n".to_vec() });
    }

    #[test]
    fn rotation_caps_the_number_and_size_of_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(tmp.path(), 4096, 3).unwrap();
        let line = vec![b'x'; 1000];
        for _ in 0..40 {
            let mut l = line.clone();
            l.push(b'\n');
            w.write(Stream::Stdout, &l, "T").unwrap();
        }
        let mut names: Vec<String> =
            fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["container.log", "container.log.1", "container.log.2"]);
        let total: u64 = names.iter().map(|n| fs::metadata(tmp.path().join(n)).unwrap().len()).sum();
        assert!(total <= 3 * 4096, "logs hold {total} bytes");
        assert!(collect(tmp.path()).iter().all(|e| e.content.len() == 1001));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert_eq!(decode(b"garbage"), None);
        assert_eq!(decode(b"T stdin F x"), None);
        assert_eq!(decode(b"T stdout F "), Some(Entry { stream: Stream::Stdout, content: b"\n".to_vec() }));
    }
}
