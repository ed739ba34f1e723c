//! Inline SVG charts: sized by the data, labelled with `<title>` (a
//! tooltip without JavaScript), every text escaped by maud.

use maud::{Markup, html};

use crate::fleet::{Hour, PluginFigures};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 20.0;

/// Reports per hour as bars; hours hidden by k-anonymity are drawn as a
/// grey tick.
pub(super) fn reports_per_hour(hours: &[Hour]) -> Markup {
    let max = hours.iter().filter_map(|h| h.reports).max().unwrap_or(0).max(1);
    let n = hours.len().max(1) as f64;
    let step = (WIDTH - LEFT) / n;
    let bar = (step * 0.8).max(1.0);
    let plot = HEIGHT - BOTTOM;
    let first = hours.first().map(|h| h.start.as_str()).unwrap_or("");
    let last = hours.last().map(|h| h.start.as_str()).unwrap_or("");
    html! {
        svg.chart #reports-per-hour width=(WIDTH) height=(HEIGHT)
            viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
            aria-label="reports per hour" {
            line x1=(LEFT) y1=(plot) x2=(WIDTH) y2=(plot) stroke="#888" {}
            text x="2" y="12" font-size="11" { (max) }
            text x="2" y=(plot) font-size="11" { "0" }
            text x=(LEFT) y=(HEIGHT - 4.0) font-size="11" { (first) }
            text x=(WIDTH) y=(HEIGHT - 4.0) font-size="11" text-anchor="end" { (last) }
            @for (i, h) in hours.iter().enumerate() {
                @let x = LEFT + i as f64 * step;
                @match h.reports {
                    Some(r) => {
                        @let height = plot * r as f64 / max as f64;
                        rect.bar x=(fmt(x)) y=(fmt(plot - height)) width=(fmt(bar))
                            height=(fmt(height)) fill="#3b6ea5" data-reports=(r) {
                            title { (h.start) ": " (r) " reports" }
                        }
                    }
                    None => {
                        rect.hidden x=(fmt(x)) y=(fmt(plot - 3.0)) width=(fmt(bar)) height="3"
                            fill="#bbb" {
                            title { (h.start) ": fewer than k instances" }
                        }
                    }
                }
            }
        }
    }
}

/// Busy microseconds per event of each plugin: a bar to p90, a mark at p50.
pub(super) fn cost(plugins: &[PluginFigures]) -> Markup {
    let rows: Vec<(&PluginFigures, f64, f64)> = plugins
        .iter()
        .filter_map(|p| p.busy_us_per_event.as_ref().map(|c| (p, c.p50, c.p90)))
        .collect();
    let max = rows.iter().map(|r| r.2).fold(0.0_f64, f64::max);
    let max = if max > 0.0 { max } else { 1.0 };
    let label = 180.0;
    let row = 22.0;
    let height = row * rows.len() as f64 + 24.0;
    let scale = |v: f64| (WIDTH - label - 70.0) * v / max;
    html! {
        svg.chart #cost-chart width=(WIDTH) height=(fmt(height))
            viewBox={ "0 0 " (WIDTH) " " (fmt(height)) } role="img"
            aria-label="busy microseconds per event, p50 and p90" {
            @for (i, (p, p50, p90)) in rows.iter().enumerate() {
                @let y = 6.0 + i as f64 * row;
                text x="0" y=(fmt(y + 14.0)) font-size="12" {
                    @if p.other { "(other)" } @else { (clip(&p.plugin, 26)) }
                }
                rect x=(label) y=(fmt(y)) width=(fmt(scale(*p90).max(1.0))) height="16"
                    fill="#e0a040" {
                    title { "p90 " (fmt(*p90)) " µs/event" }
                }
                rect x=(label) y=(fmt(y + 4.0)) width=(fmt(scale(*p50).max(1.0))) height="8"
                    fill="#a0522d" {
                    title { "p50 " (fmt(*p50)) " µs/event" }
                }
                text x=(fmt(label + scale(*p90) + 6.0)) y=(fmt(y + 13.0)) font-size="11" {
                    (fmt(*p50)) " / " (fmt(*p90))
                }
            }
            text x="0" y=(fmt(height - 4.0)) font-size="11" fill="#555" {
                "busy µs per event: p50 (dark) and p90 (light), one sample per instance"
            }
        }
    }
}

/// A number with at most two decimals, no trailing zeros.
pub(super) fn fmt(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// At most `n` characters of `s`, with an ellipsis when cut.
pub(super) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(n - 1).collect();
        c.push('…');
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_shown_with_at_most_two_decimals() {
        assert_eq!(fmt(2.0), "2");
        assert_eq!(fmt(2.5), "2.5");
        assert_eq!(fmt(1.0 / 3.0), "0.33");
        assert_eq!(clip("abcdef", 4), "abc…");
    }

    #[test]
    fn chart_text_is_escaped() {
        let hours = [Hour { start: "<script>".into(), reports: Some(1), instances: Some(1) }];
        let svg = reports_per_hour(&hours).into_string();
        assert!(svg.contains("&lt;script&gt;") && !svg.contains("<script>"), "{svg}");
    }
}
