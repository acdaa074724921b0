//! The per-key usage chart: one stacked bar per day (valid, denied, rate limited), drawn as
//! server-side SVG. Each bar carries a `<title>`, which browsers show as its tooltip without
//! any script; days with an anomaly are outlined.

use maud::{Markup, html};

/// One day of a key's usage, as the chart draws it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Day {
    /// The day's start, unix ms.
    pub start: i64,
    /// Requests that were valid.
    pub valid: u64,
    /// Requests refused, other than for a rate limit.
    pub denied: u64,
    /// Requests refused for a rate limit.
    pub limited: u64,
    /// Anomalies noticed that day (their reasons).
    pub anomalies: Vec<String>,
}

const WIDTH: u64 = 720;
const HEIGHT: u64 = 180;
const TOP: u64 = 10;
const BOTTOM: u64 = 22;
const LEFT: u64 = 36;

/// The chart of `days` (oldest first), with its accessible summary.
pub fn render(days: &[Day]) -> Markup {
    let most = days
        .iter()
        .map(|d| d.valid + d.denied + d.limited)
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_h = HEIGHT - TOP - BOTTOM;
    let n = u64::try_from(days.len()).unwrap_or(1).max(1);
    let slot = (WIDTH - LEFT) / n;
    let bar_w = slot.saturating_sub(4).max(2);
    let total_valid: u64 = days.iter().map(|d| d.valid).sum();
    let total_denied: u64 = days.iter().map(|d| d.denied + d.limited).sum();
    let scale = |v: u64| v.saturating_mul(plot_h) / most;
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
                aria-label=(format!("Requests per day over the last {} days: {total_valid} valid, {total_denied} denied", days.len())) {
                @for step in [0u64, 1, 2] {
                    @let y = TOP + plot_h - plot_h * step / 2;
                    line.grid x1=(LEFT) x2=(WIDTH) y1=(y) y2=(y) {}
                    text.axis x=(LEFT - 6) y=(y + 3) text-anchor="end" { (most * step / 2) }
                }
                @for (i, day) in days.iter().enumerate() {
                    @let x = LEFT + u64::try_from(i).unwrap_or(0) * slot + 2;
                    @let base = TOP + plot_h;
                    @let hv = scale(day.valid);
                    @let hd = scale(day.denied);
                    @let hl = scale(day.limited);
                    g {
                        title { (tooltip(day)) }
                        rect.bar-valid x=(x) y=(base - hv) width=(bar_w) height=(hv) {}
                        rect.bar-denied x=(x) y=(base - hv - hd) width=(bar_w) height=(hd) {}
                        rect.bar-limited x=(x) y=(base - hv - hd - hl) width=(bar_w) height=(hl) {}
                        // An invisible full-height target, so a tooltip shows on empty days too.
                        rect x=(x) y=(TOP) width=(bar_w) height=(plot_h) fill="transparent" {}
                        @if !day.anomalies.is_empty() {
                            rect.anomaly x=(x - 1) y=(TOP) width=(bar_w + 2) height=(plot_h) rx="2" {}
                        }
                    }
                    @if i % 7 == 0 {
                        text.axis x=(x) y=(HEIGHT - 6) { (day_label(day.start)) }
                    }
                }
            }
            figcaption.legend {
                span { i.v {} "Valid" }
                span { i.d {} "Denied" }
                span { i.l {} "Rate limited" }
                span { i.a {} "Anomaly" }
            }
        }
    }
}

fn tooltip(day: &Day) -> String {
    let mut text = format!(
        "{}: {} valid, {} denied, {} rate limited",
        day_label(day.start),
        day.valid,
        day.denied,
        day.limited
    );
    if !day.anomalies.is_empty() {
        text.push_str("; anomaly: ");
        text.push_str(&day.anomalies.join(", "));
    }
    text
}

fn day_label(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| String::new(), |t| t.strftime("%b %d").to_string())
}
