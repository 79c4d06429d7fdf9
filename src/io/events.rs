//! The event stream: rule `log` events, NAT events, drops and flow ends, rate-limited
//! together ([`LogLimiter`]), written as log lines (tracing) and, when
//! `events.eve_file` is set, as EVE JSON lines appended to that file.
//! Suppressed records are summarised every `loglimit::SUMMARY_EVERY` in
//! both outputs. The file is opened after the privilege drop (its directory
//! must be writable by `interface.user`); buffered and flushed every timer
//! tick. Write errors stop the file output (logged once).

use crate::config::ops::Events;
use crate::packet;
use crate::pipeline::{Event, FlowEnd, Pipeline};
use crate::telemetry::eve::{self, DropInfo};
use crate::telemetry::loglimit::LogLimiter;
use crate::verdict::{DropReason, Verdict};
use crate::zone::ZoneId;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::time::{Instant, SystemTime};

#[derive(Debug)]
pub struct EventSink {
    cfg: Events,
    limiter: LogLimiter,
    file: Option<BufWriter<File>>,
    pub written: u64,
}

impl EventSink {
    pub fn new(cfg: &Events) -> EventSink {
        let mut s = EventSink {
            cfg: cfg.clone(),
            limiter: LogLimiter::new(cfg.rate_per_sec, cfg.burst),
            file: None,
            written: 0,
        };
        if let Some(p) = &cfg.eve_file {
            match OpenOptions::new().create(true).append(true).open(p) {
                Ok(f) => s.file = Some(BufWriter::with_capacity(64 * 1024, f)),
                Err(e) => {
                    tracing::error!(file = %p.display(), error = %e, "cannot open the EVE file; EVE output off")
                }
            }
        }
        s
    }

    /// Applies new rates and switches (a reload); the file stays.
    pub fn reconfigure(&mut self, cfg: &Events) {
        if cfg.rate_per_sec != self.cfg.rate_per_sec || cfg.burst != self.cfg.burst {
            self.limiter = LogLimiter::new(cfg.rate_per_sec, cfg.burst);
        }
        let file = self.cfg.eve_file.clone();
        self.cfg = cfg.clone();
        self.cfg.eve_file = file;
    }

    pub fn wants_flows(&self) -> bool {
        self.cfg.flows && self.file.is_some()
    }

    pub fn suppressed(&self) -> u64 {
        self.limiter.total_suppressed()
    }

    fn write(&mut self, v: &serde_json::Value) {
        let Some(f) = self.file.as_mut() else { return };
        let r = serde_json::to_writer(&mut *f, v)
            .map_err(std::io::Error::other)
            .and_then(|_| f.write_all(b"\n"));
        match r {
            Ok(()) => self.written += 1,
            Err(e) => {
                tracing::error!(error = %e, "EVE write failed; EVE output off");
                self.file = None;
            }
        }
    }

    pub fn rule_event(&mut self, p: &Pipeline, e: &Event, now: Instant) {
        if !self.limiter.allow("rule", now) {
            return;
        }
        tracing::info!(target: "portcullis::rule", "{}", p.event_line(e));
        if self.file.is_some() {
            let label = p.rule_label(e.chain, e.rule);
            let v = eve::rule_record(e, p.zones(), &label, SystemTime::now());
            self.write(&v);
        }
    }

    /// A NAT event (a binding of a `log = true` entry, or an exhausted pool):
    /// a log line, under the same rate limit as rule events (a flood of new
    /// flows into a full pool must not flood the log; the `nat_exhausted`
    /// counter stays exact).
    pub fn nat_event(&mut self, p: &Pipeline, e: &crate::nat::NatEvent, now: Instant) {
        if !self.limiter.allow("nat", now) {
            return;
        }
        tracing::info!(target: "portcullis::nat", "{}", p.nat_event_line(e));
    }

    pub fn flow_end(&mut self, p: &Pipeline, f: &FlowEnd, now: Instant) {
        if !self.cfg.flows || self.file.is_none() || !self.limiter.allow("flow", now) {
            return;
        }
        let label = format!(
            "{}/{}",
            f.flow.chain.name(),
            p.rule_label(f.flow.chain, f.flow.rule)
        );
        let v = eve::flow_record(f, p.zones(), &label, SystemTime::now());
        self.write(&v);
    }

    /// A dropped or rejected packet (only with `drops = true` and an EVE file).
    pub fn drop_event(
        &mut self,
        p: &Pipeline,
        v: &Verdict,
        ingress: ZoneId,
        pkt: &[u8],
        now: Instant,
    ) {
        let (reason, action) = match v {
            Verdict::Drop(r) => (r, "drop"),
            Verdict::Reject(r) => (r, "reject"),
            _ => return,
        };
        if !self.cfg.drops || self.file.is_none() || !self.limiter.allow("drop", now) {
            return;
        }
        let Ok(meta) = packet::parse(pkt) else {
            return;
        };
        let (sport, dport) = match meta.l4 {
            packet::L4::Tcp(t) => (t.sport, t.dport),
            packet::L4::Udp { sport, dport } => (sport, dport),
            _ => (0, 0),
        };
        let rule = match reason {
            DropReason::Rule { chain, rule } => Some(format!(
                "{}/{}",
                chain.name(),
                p.rule_label(*chain, Some(*rule))
            )),
            DropReason::Policy(chain) => {
                Some(format!("{}/{}", chain.name(), p.rule_label(*chain, None)))
            }
            _ => None,
        };
        let info = DropInfo {
            reason: reason.name(),
            action,
            ingress: p.zones().name(ingress),
            len: pkt.len(),
            proto: meta.proto,
            src: meta.src,
            dst: meta.dst,
            sport,
            dport,
            rule: rule.as_deref(),
        };
        let rec = eve::drop_record(&info, SystemTime::now());
        self.write(&rec);
    }

    /// A blocklist event (blocked, unblocked, expired, refused): a log line
    /// and an EVE `blocklist` record, under the shared rate limit.
    pub fn block_event(&mut self, p: &Pipeline, e: &crate::blocklist::BlockEvent, now: Instant) {
        use crate::blocklist::BlockEvent as B;
        if !self.limiter.allow("blocklist", now) {
            return;
        }
        let b = p.blocklist();
        let (event, target, origin) = match e {
            B::Blocked { target, origin, .. } => ("blocked", target, origin),
            B::Unblocked { target, origin } => ("unblocked", target, origin),
            B::Expired { target, origin, .. } => ("expired", target, origin),
            B::Refused { target, origin } => ("refused", target, origin),
        };
        let mut rec = serde_json::json!({
            "event": event,
            "target": b.target_name(target),
            "origin": origin.name(),
        });
        match e {
            B::Blocked { reason, ttl, .. } => {
                rec["reason"] = serde_json::json!(reason);
                rec["ttl_secs"] = serde_json::json!(ttl.map(|t| t.as_secs()));
            }
            B::Expired { hits, .. } => rec["hits"] = serde_json::json!(hits),
            _ => {}
        }
        tracing::warn!(target: "portcullis::blocklist", "{event} {}: {rec}", b.target_name(target));
        if self.file.is_some() {
            let v = serde_json::json!({
                "timestamp": eve::timestamp(SystemTime::now()),
                "event_type": "blocklist",
                "blocklist": rec,
            });
            self.write(&v);
        }
    }

    /// Flushes the file and emits the suppression summary when due.
    pub fn tick(&mut self, now: Instant) {
        if let Some(s) = self.limiter.summary(now) {
            tracing::warn!(target: "portcullis::events", "{s}");
            let v = eve::notice_record(&s, SystemTime::now());
            self.write(&v);
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush();
        }
    }
}
