//! The results: one row per scenario, printed as a table and written as JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// Cores the benchmark, sluice, the broker and the databases all share.
    pub cores: usize,
    /// `--records`: records of the main topic.
    pub records: u64,
    pub quick: bool,
    pub only: Option<String>,
    /// Wall time of the whole run, in seconds.
    pub total_secs: f64,
    pub scenarios: Vec<Row>,
}

/// One scenario's results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    pub name: String,
    /// Records (events, rows) the scenario moved.
    pub records: u64,
    /// The measured span, defined per scenario in `note`; for sluice scenarios from
    /// the first record sluice received to the last one its target confirmed.
    pub secs: f64,
    /// `records / secs`.
    pub per_s: f64,
    /// The scenario whose rate this one is compared with.
    pub baseline: Option<String>,
    /// `per_s` divided by the baseline's `per_s`.
    pub ratio: Option<f64>,
    /// VmHWM of the sluice process at the end (the most resident memory it ever
    /// had), in MiB; none for scenarios without sluice.
    pub peak_rss_mib: Option<f64>,
    /// CPU time (user + system, all threads) sluice used over its whole life,
    /// start-up and group join included, per record, in microseconds.
    pub sluice_cpu_us_per_record: Option<f64>,
    /// From the start (sluice answering `/healthz`, or the consumer's `subscribe`)
    /// to the first record, in seconds: group join and first fetch.
    pub first_record_secs: Option<f64>,
    /// Largest number of records produced (acknowledged by the broker) but not yet
    /// received by sluice, over samples every 50 ms.
    pub max_lag: Option<u64>,
    /// From the last record acknowledged by the broker (or, with a pre-produced
    /// topic, from the first record received) until sluice had received all.
    pub drain_secs: Option<f64>,
    /// Events/s into sluice's queue while the target was blocked.
    pub queue_load_per_s: Option<f64>,
    /// VmRSS when the whole backlog was queued, in MiB.
    pub rss_full_queue_mib: Option<f64>,
    /// The scenario did not finish (see `note`).
    pub failed: bool,
    pub note: String,
}

impl Row {
    pub fn new(name: &str, records: u64, secs: f64) -> Self {
        Self {
            name: name.to_owned(),
            records,
            secs,
            per_s: if secs > 0.0 {
                records as f64 / secs
            } else {
                0.0
            },
            ..Self::default()
        }
    }

    pub fn failed(name: &str, error: &anyhow::Error) -> Self {
        Self {
            name: name.to_owned(),
            failed: true,
            note: format!("FAILED: {error:#}"),
            ..Self::default()
        }
    }

    /// Adds the peak RSS and the CPU per record of the sluice process.
    pub fn sluice_usage(&mut self, sluice: &crate::child::Sluice) -> anyhow::Result<()> {
        self.peak_rss_mib = Some(mib(sluice.peak_rss_kib()?));
        if self.records > 0 {
            self.sluice_cpu_us_per_record = Some(sluice.cpu_secs()? * 1e6 / self.records as f64);
        }
        Ok(())
    }

    pub fn note(mut self, text: impl AsRef<str>) -> Self {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(text.as_ref());
        self
    }
}

/// Fills `ratio` of every row that names a baseline present (and not failed) in `rows`.
pub fn add_ratios(rows: &mut [Row]) {
    let rates: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| !r.failed && r.per_s > 0.0)
        .map(|r| (r.name.clone(), r.per_s))
        .collect();
    for row in rows.iter_mut().filter(|r| !r.failed) {
        if let Some(base) = &row.baseline {
            row.ratio = rates
                .iter()
                .find(|(n, _)| n == base)
                .map(|(_, rate)| row.per_s / rate);
        }
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The report as the table the benchmark prints.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice pipelines  cores={}  records={}{}  total {:.0} s",
        report.cores,
        report.records,
        if report.quick { " (quick)" } else { "" },
        report.total_secs
    );
    let _ = writeln!(
        out,
        "{:<24} {:>9} {:>8} {:>10} {:>30} {:>9} {:>11}  notes",
        "scenario",
        "records",
        "seconds",
        "records/s",
        "ratio to baseline",
        "peak RSS",
        "CPU us/rec"
    );
    for r in &report.scenarios {
        if r.failed {
            let _ = writeln!(out, "{:<24} {}", r.name, r.note);
            continue;
        }
        let ratio = match (&r.baseline, r.ratio) {
            (Some(b), Some(x)) => format!("{x:.2} x {b}"),
            (Some(b), None) => format!("- ({b} missing)"),
            (None, _) => "baseline".to_owned(),
        };
        let rss = r
            .peak_rss_mib
            .map_or_else(|| "-".to_owned(), |m| format!("{m:.0} MiB"));
        let cpu = r
            .sluice_cpu_us_per_record
            .map_or_else(|| "-".to_owned(), |us| format!("{us:.1}"));
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>8.2} {:>10.0} {:>30} {:>9} {:>11}  {}",
            r.name, r.records, r.secs, r.per_s, ratio, rss, cpu, r.note
        );
    }
    out
}

/// Writes the report as pretty JSON to `path`, creating its directory.
pub fn write_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(report).context("cannot serialize the report")?;
    std::fs::write(path, json + "\n").with_context(|| format!("cannot write {}", path.display()))
}
