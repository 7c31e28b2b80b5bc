//! The agent's status updates not yet acknowledged, kept on disk as an append-only log: one
//! JSON line per update queued, one per acknowledgement. Nothing is rewritten per update; the
//! log is compacted (rewritten with what is still pending) once it has grown long and nothing
//! or little is pending. A line cut short by a crash mid-append is the last one, and is ignored.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::wire::StatusUpdate;

/// Lines past which a compaction is due.
const COMPACT_AFTER: usize = 4096;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Update(StatusUpdate),
    Acked(Vec<u64>),
    /// First in a compacted log: the next sequence number, which outlives the updates.
    NextSeq(u64),
}

/// What is pending, in order, and the next sequence number.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) next_seq: u64,
    pub(super) updates: VecDeque<StatusUpdate>,
}

pub(super) struct Journal {
    path: PathBuf,
    file: Option<File>,
    lines: usize,
}

impl Journal {
    /// Opens the log in `dir` and replays it (taking over an `updates.json` of an older agent).
    pub(super) fn open(dir: &Path) -> (Journal, Pending) {
        let path = dir.join("updates.log");
        let mut pending = Pending::default();
        let mut lines = 0;
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                let Ok(entry) = serde_json::from_str::<Line>(&line) else { break };
                lines += 1;
                match entry {
                    Line::Update(u) => {
                        pending.next_seq = pending.next_seq.max(u.seq + 1);
                        pending.updates.push_back(u);
                    }
                    Line::Acked(seqs) => pending.updates.retain(|u| !seqs.contains(&u.seq)),
                    Line::NextSeq(n) => pending.next_seq = pending.next_seq.max(n),
                }
            }
        }
        let legacy = dir.join("updates.json");
        if let Some(old) = std::fs::read(&legacy).ok().and_then(|b| serde_json::from_slice::<Legacy>(&b).ok()) {
            pending.next_seq = pending.next_seq.max(old.next_seq);
            pending.updates.extend(old.updates);
        }
        let mut journal = Journal { path, file: None, lines };
        journal.compact(&pending);
        let _ = std::fs::remove_file(legacy);
        (journal, pending)
    }

    /// Records an update queued.
    pub(super) fn queued(&mut self, update: &StatusUpdate) {
        self.append(&Line::Update(update.clone()));
    }

    /// Records acknowledgements; compacts when the log is long.
    pub(super) fn acked(&mut self, seqs: &[u64], pending: &Pending) {
        if seqs.is_empty() {
            return;
        }
        self.append(&Line::Acked(seqs.to_vec()));
        if self.lines >= COMPACT_AFTER && pending.updates.len() < COMPACT_AFTER / 4 {
            self.compact(pending);
        }
    }

    fn append(&mut self, line: &Line) {
        let mut bytes = serde_json::to_vec(line).expect("lines serialize");
        bytes.push(b'\n');
        if self.file.is_none() {
            self.file = OpenOptions::new().create(true).append(true).open(&self.path).ok();
        }
        let written = self.file.as_mut().map(|f| f.write_all(&bytes));
        match written {
            Some(Ok(())) => self.lines += 1,
            _ => {
                tracing::error!(path = %self.path.display(), "could not append to the status update log");
                self.file = None;
            }
        }
    }

    /// Rewrites the log with just what is pending (atomically: a new file renamed over it).
    fn compact(&mut self, pending: &Pending) {
        let tmp = self.path.with_extension("log.tmp");
        let mut out = serde_json::to_vec(&Line::NextSeq(pending.next_seq)).expect("lines serialize");
        out.push(b'\n');
        for u in &pending.updates {
            out.extend(serde_json::to_vec(&Line::Update(u.clone())).expect("lines serialize"));
            out.push(b'\n');
        }
        match std::fs::write(&tmp, &out).and_then(|_| std::fs::rename(&tmp, &self.path)) {
            Ok(()) => {
                self.file = None;
                self.lines = pending.updates.len() + 1;
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "could not compact the status update log")
            }
        }
    }
}

/// The whole-file form older agents kept (`updates.json`).
#[derive(Deserialize)]
struct Legacy {
    next_seq: u64,
    updates: VecDeque<StatusUpdate>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskState;

    fn update(seq: u64) -> StatusUpdate {
        StatusUpdate {
            task_id: format!("t{seq}").into(),
            state: TaskState::Running,
            seq,
            exit_code: None,
            message: None,
            healthy: None,
            ready: None,
        }
    }

    #[test]
    fn replays_what_was_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut j, mut p) = Journal::open(dir.path());
            for seq in 0..5 {
                let u = update(seq);
                j.queued(&u);
                p.updates.push_back(u);
            }
            p.updates.retain(|u| ![0, 2].contains(&u.seq));
            j.acked(&[0, 2], &p);
        }
        // A crash mid-append leaves half a line at the end.
        let mut f = OpenOptions::new().append(true).open(dir.path().join("updates.log")).unwrap();
        f.write_all(b"{\"update\":{\"task_id\":\"t9").unwrap();
        drop(f);
        let (_, p) = Journal::open(dir.path());
        assert_eq!(p.updates.iter().map(|u| u.seq).collect::<Vec<_>>(), [1, 3, 4]);
        assert_eq!(p.next_seq, 5);
    }

    #[test]
    fn compacts_once_long_and_takes_over_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("updates.json"),
            serde_json::to_vec(&serde_json::json!({"next_seq": 7, "updates": [update(6)]})).unwrap(),
        )
        .unwrap();
        let (mut j, mut p) = Journal::open(dir.path());
        assert_eq!((p.next_seq, p.updates.len()), (7, 1), "the old file's updates are kept");
        assert!(!dir.path().join("updates.json").exists());
        for seq in 7..7 + COMPACT_AFTER as u64 {
            let u = update(seq);
            j.queued(&u);
            p.updates.push_back(u);
            p.updates.retain(|x| x.seq != seq);
            j.acked(&[seq], &p);
        }
        let lines = std::fs::read_to_string(dir.path().join("updates.log")).unwrap().lines().count();
        assert!(lines < COMPACT_AFTER, "compacted: {lines} lines");
        let (_, again) = Journal::open(dir.path());
        assert_eq!(again.updates.iter().map(|u| u.seq).collect::<Vec<_>>(), [6]);
    }
}
