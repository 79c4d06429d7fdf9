//! Loads the whole Emerging Threats Open set from ../shared/data/rules/et-open
//! and checks the report: most rules load, every skip has a reason, and the
//! load fits the time budget (2 s, checked only in optimized builds).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use portcullis::ids::rule::{load_text, LoadReport, Vars};
use std::path::Path;
use std::time::Instant;

#[test]
fn et_open_loads_with_a_report() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/rules/et-open");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: {} not present", dir.display());
        return;
    };
    let mut files: Vec<_> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rules"))
        .collect();
    files.sort();
    let texts: Vec<String> = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let t0 = Instant::now();
    let mut sigs = Vec::new();
    let mut rep = LoadReport::default();
    for t in &texts {
        rep.files += 1;
        load_text(t, &Vars::suricata_defaults(), &mut sigs, &mut rep);
    }
    let engine = portcullis::ids::Ids::new(sigs, portcullis::ids::IdsConfig::default(), (1, 2));
    let took = t0.elapsed();
    eprintln!("{}", rep.render());
    eprintln!("load + compile took {took:?}");
    eprintln!("shape {:?}", engine.shape());
    // RULE_COUNTS.txt: 14,566 active rules.
    assert_eq!(rep.loaded + rep.skipped_total(), 14_566);
    assert!(rep.loaded > 6_000, "only {} loaded", rep.loaded);
    assert!(engine.rule_count() == rep.loaded);
    if !cfg!(debug_assertions) {
        assert!(took.as_secs_f64() < 2.0, "load took {took:?}");
    }
}

#[test]
#[ignore = "diagnostic"]
fn short_fast_patterns() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/rules/et-open");
    let mut sigs = Vec::new();
    let mut rep = LoadReport::default();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "rules") {
            load_text(
                &std::fs::read_to_string(&p).unwrap(),
                &Vars::suricata_defaults(),
                &mut sigs,
                &mut rep,
            );
        }
    }
    let mut hist = std::collections::BTreeMap::new();
    let mut short = std::collections::BTreeMap::new();
    for s in &sigs {
        if let Some((b, p)) = &s.fast {
            *hist.entry(p.len().min(40)).or_insert(0) += 1;
            if p.len() <= 3 {
                *short
                    .entry((format!("{b:?}"), String::from_utf8_lossy(p).to_string()))
                    .or_insert(0) += 1;
            }
        }
    }
    eprintln!("{hist:?}");
    eprintln!("{short:?}");
}
