//! The pcap capture file: size-bounded and rotating. The active file is
//! `file`; when the next record would make it larger than `max_bytes` it is
//! renamed `file.1` (`file.1` to `file.2`, ..., the oldest beyond `files - 1`
//! is deleted) and a new `file` starts with its own header, so every file is
//! a complete capture tcpdump and Wireshark open (link type 101, raw IP).
//! Writes are buffered and flushed by the shell every timer tick; the
//! directory must be writable by `interface.user` (files are created after
//! the privilege drop). Write errors stop the capture (logged once).

use crate::config::ops::{Capture, CaptureWhat};
use crate::telemetry::pcap::{file_header, push_record, record_len, HEADER_LEN};
use crate::verdict::{DropReason, Verdict};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug)]
pub struct RotatingPcap {
    cfg: Capture,
    path: PathBuf,
    out: Option<BufWriter<File>>,
    size: u64,
    pub packets: u64,
    pub rotations: u64,
    failed: bool,
    rec: Vec<u8>,
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

impl RotatingPcap {
    /// `None` when capture is off.
    pub fn new(cfg: &Capture) -> Option<RotatingPcap> {
        let path = cfg.file.clone()?;
        Some(RotatingPcap {
            cfg: cfg.clone(),
            path,
            out: None,
            size: 0,
            packets: 0,
            rotations: 0,
            failed: false,
            rec: Vec::with_capacity(2048),
        })
    }

    /// Whether a packet with this verdict is captured.
    pub fn wants(&self, v: &Verdict) -> bool {
        match self.cfg.what {
            CaptureWhat::All => true,
            CaptureWhat::Drops => matches!(v, Verdict::Drop(_) | Verdict::Reject(_)),
            CaptureWhat::Rules => match v {
                Verdict::Drop(DropReason::Rule { chain, rule })
                | Verdict::Reject(DropReason::Rule { chain, rule }) => {
                    self.cfg.rules.contains(&(*chain, *rule))
                }
                _ => false,
            },
        }
    }

    fn open(&mut self) -> std::io::Result<()> {
        let f = File::create(&self.path)?;
        let mut w = BufWriter::with_capacity(64 * 1024, f);
        w.write_all(&file_header())?;
        self.out = Some(w);
        self.size = HEADER_LEN as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(mut w) = self.out.take() {
            w.flush()?;
        }
        let n = self.cfg.files.max(1);
        if n == 1 {
            return self.open();
        }
        let _ = std::fs::remove_file(rotated(&self.path, n - 1));
        for i in (1..n - 1).rev() {
            let _ = std::fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1));
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.rotations += 1;
        self.open()
    }

    /// Writes one packet (`ts` since the Unix epoch).
    pub fn write(&mut self, ts: Duration, pkt: &[u8]) {
        if self.failed {
            return;
        }
        let r = (|| {
            if self.out.is_none() {
                self.open()?;
            }
            let need = record_len(pkt.len());
            if self.size + need > self.cfg.max_bytes && self.size > HEADER_LEN as u64 {
                self.rotate()?;
            }
            self.rec.clear();
            push_record(&mut self.rec, ts, pkt);
            if let Some(w) = self.out.as_mut() {
                w.write_all(&self.rec)?;
            }
            self.size += need;
            self.packets += 1;
            Ok::<(), std::io::Error>(())
        })();
        if let Err(e) = r {
            self.failed = true;
            tracing::error!(file = %self.path.display(), error = %e, "pcap capture stopped");
        }
    }

    pub fn flush(&mut self) {
        if let Some(w) = self.out.as_mut() {
            let _ = w.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::pcap::parse_pcap;

    #[test]
    fn rotates_within_the_bound_and_every_file_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drops.pcap");
        let cfg = Capture {
            file: Some(path.clone()),
            what: CaptureWhat::Drops,
            rules: vec![],
            max_bytes: 4096,
            files: 3,
        };
        let mut c = RotatingPcap::new(&cfg).unwrap();
        assert!(c.wants(&Verdict::Drop(DropReason::Invalid)));
        assert!(!c.wants(&Verdict::Forward(crate::zone::ZoneId::TUN)));
        let pkt = vec![0x45u8; 500];
        for i in 0..40u64 {
            c.write(Duration::from_secs(1_700_000_000 + i), &pkt);
        }
        c.flush();
        assert_eq!(c.packets, 40);
        assert!(c.rotations >= 4);
        let mut total = 0;
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                bytes.len() as u64 <= 4096,
                "{} is {} bytes",
                p.display(),
                bytes.len()
            );
            let cap = parse_pcap(&bytes).unwrap();
            assert_eq!(cap.link_type, 101);
            assert!(!cap.truncated);
            total += cap.packets.len() + cap.skipped;
        }
        assert!(!rotated(&path, 3).exists(), "only `files` files are kept");
        assert!((14..=40).contains(&total), "{total}");
    }
}
