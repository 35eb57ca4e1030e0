//! The status page as HTML: one server-rendered document with inline CSS and no external assets
//! (a status page must work when everything else is down), readable from a phone's width up.
//! Every value that a client, an upstream or the configuration controls is HTML-escaped.

use std::fmt::Write as _;
use std::time::SystemTime;

use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};

use super::{RepoState, StatusView};
use crate::metrics::recent::{DenialRecord, UpstreamErrorRecord};

const STYLE: &str = "\
:root{color-scheme:light dark;--line:#8884;--muted:#777}\
*{box-sizing:border-box}\
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;\
max-width:72rem;padding:1rem}\
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.6rem 0 .5rem}\
.muted{color:var(--muted)}\
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(12rem,1fr));gap:.6rem}\
.card{border:1px solid var(--line);border-radius:.5rem;padding:.6rem .8rem}\
.card b{display:block;font-size:1.3rem}\
.bar{height:.5rem;background:var(--line);border-radius:.25rem;overflow:hidden;margin-top:.3rem}\
.bar i{display:block;height:100%;background:#3a7}\
.scroll{overflow-x:auto}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}\
th{font-weight:600;white-space:nowrap}\
td.wrap{overflow-wrap:anywhere}\
.state{font-weight:600;white-space:nowrap}\
.online{color:#2a8a4a}.stale{color:#c07a00}.offline,.failing{color:#c0392b}\
pre{background:#8881;border:1px solid var(--line);border-radius:.4rem;padding:.6rem;\
overflow-x:auto;margin:.3rem 0}\
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:.8rem}\
footer{margin-top:2rem}\
@media (max-width:40rem){body{padding:.6rem;font-size:14px}th,td{padding:.3rem}}";

/// A time as people read it in a log: UTC to the second.
fn time(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

/// A byte count in binary units.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in its largest two units.
fn uptime(seconds: u64) -> String {
    let (d, h, m) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match (d, h, m) {
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

fn state(state: RepoState) -> String {
    match state {
        RepoState::Online => "<span class=\"state online\">online</span>".into(),
        RepoState::NotContacted => {
            "<span class=\"state online\">online</span> <span class=\"muted\">(upstream not \
             needed yet)</span>"
                .into()
        }
        RepoState::Offline => {
            "<span class=\"state offline\">offline</span> <span class=\"muted\">(serves its \
             store only)</span>"
                .into()
        }
        RepoState::ServingStale { since } => format!(
            "<span class=\"state stale\">serving stale</span> <span class=\"muted\">(upstream \
             failing, last at {})</span>",
            time(since)
        ),
        RepoState::Failing { since } => format!(
            "<span class=\"state failing\">offline</span> <span class=\"muted\">(upstream \
             failing, last at {})</span>",
            time(since)
        ),
        RepoState::Local => "<span class=\"muted\">—</span>".into(),
    }
}

fn denial_row(out: &mut String, denial: &DenialRecord) {
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} <span class=\"muted\">{}</span>\
         </td><td>{}</td></tr>",
        time(denial.at),
        text(&denial.repository),
        text(&denial.package),
        text(denial.version.as_deref().unwrap_or("all")),
        text(&denial.name),
        denial.kind.as_str(),
        denial.mode.as_str(),
    );
}

fn upstream_error_row(out: &mut String, error: &UpstreamErrorRecord) {
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td>{}</td><td class=\"wrap\">{}</td><td>{}</td></tr>",
        time(error.at),
        text(&error.repository),
        text(&error.url),
        text(&error.error),
    );
}

/// The whole page.
pub fn render(view: &StatusView) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let up = view
        .now
        .duration_since(view.started)
        .map_or(0, |d| d.as_secs());
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>wheelgate status</title><style>{STYLE}</style></head><body>\n\
         <header><h1>wheelgate</h1><p class=\"muted\">version {} · up {} · page made at {}</p>\
         </header>\n",
        env!("CARGO_PKG_VERSION"),
        uptime(up),
        time(view.now),
    );

    // At a glance.
    let store = &view.store;
    let percent = if store.max_size > 0 {
        (store.artifact_bytes as f64 / store.max_size as f64 * 100.0).min(100.0)
    } else {
        0.0
    };
    let hit_rate = if view.cache_requests > 0 {
        format!(
            "{:.1}%",
            view.cache_hits as f64 / view.cache_requests as f64 * 100.0
        )
    } else {
        "—".to_owned()
    };
    let _ = writeln!(
        out,
        "<section class=\"cards\">\
         <div class=\"card\" id=\"store\">Store<b>{} of {}</b>\
         <div class=\"bar\"><i style=\"width:{percent:.1}%\"></i></div>\
         <span class=\"muted\">{} files, {} pages</span></div>\
         <div class=\"card\" id=\"hit-rate\">Cache hit rate since start<b>{hit_rate}</b>\
         <span class=\"muted\">{} of {} pages and files served from the cache</span></div>\
         <div class=\"card\" id=\"policy\">Download rules<b>{} {} in force</b>\
         <span class=\"muted\">{} files left out of pages since start</span></div>\
         </section>",
        bytes(store.artifact_bytes),
        bytes(store.max_size),
        store.artifacts,
        store.pages,
        view.cache_hits,
        view.cache_requests,
        view.rules,
        if view.rules == 1 { "rule" } else { "rules" },
        view.hidden_files,
    );

    // Repositories.
    out.push_str(
        "<h2>Repositories</h2>\n<div class=\"scroll\"><table id=\"repositories\"><thead><tr>\
         <th>Name</th><th>Kind</th><th>Upstream or contents</th><th>State</th></tr></thead>\
         <tbody>\n",
    );
    for repo in &view.repositories {
        let default = if repo.is_default {
            " <span class=\"muted\">(default, at /simple/)</span>"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<tr><td><a href=\"{}/simple/\">{}</a>{default}</td><td>{}</td>\
             <td class=\"wrap\">{}</td><td>{}</td></tr>",
            attr(&repo.name),
            text(&repo.name),
            repo.kind,
            text(&repo.detail),
            state(repo.state),
        );
    }
    out.push_str("</tbody></table></div>\n");

    // Client configuration.
    let index = &view.index_url;
    let trusted = view
        .trusted_host
        .as_deref()
        .map(|host| format!("\ntrusted-host = {}", text(host)))
        .unwrap_or_default();
    let _ = write!(
        out,
        "<h2>Use this server</h2>\n<div class=\"cols\">\
         <div><p>pip: <code>pip.conf</code> (or <code>PIP_INDEX_URL</code>)</p>\
         <pre id=\"pip-conf\">[global]\nindex-url = {}{trusted}</pre></div>\
         <div><p>uv: <code>uv.toml</code> (or <code>[tool.uv]</code> in \
         <code>pyproject.toml</code>)</p>\
         <pre id=\"uv-toml\">[[index]]\nurl = \"{}\"\ndefault = true</pre></div></div>\n",
        text(index),
        text(index),
    );

    // Denials.
    let _ = write!(
        out,
        "<h2>Recent denials</h2>\n<p class=\"muted\">The last {} downloads refused (or, in audit \
         mode, that would have been), newest first.</p>\n",
        crate::metrics::recent::RECENT_DENIALS
    );
    if view.denials.is_empty() {
        out.push_str("<p id=\"denials\">None since start.</p>\n");
    } else {
        out.push_str(
            "<div class=\"scroll\"><table id=\"denials\"><thead><tr><th>Time</th>\
             <th>Repository</th><th>Package</th><th>Version</th><th>Rule or group</th>\
             <th>Mode</th></tr></thead><tbody>\n",
        );
        for denial in &view.denials {
            denial_row(&mut out, denial);
        }
        out.push_str("</tbody></table></div>\n");
    }

    // Upstream errors.
    out.push_str("<h2>Recent upstream errors</h2>\n");
    if view.upstream_errors.is_empty() {
        out.push_str("<p id=\"upstream-errors\">None since start.</p>\n");
    } else {
        out.push_str(
            "<div class=\"scroll\"><table id=\"upstream-errors\"><thead><tr><th>Time</th>\
             <th>Repository</th><th>URL</th><th>Error</th></tr></thead><tbody>\n",
        );
        for error in &view.upstream_errors {
            upstream_error_row(&mut out, error);
        }
        out.push_str("</tbody></table></div>\n");
    }

    out.push_str(
        "<footer class=\"muted\"><a href=\"-/metrics\">metrics</a> · \
         <a href=\"-/health\">health</a> · <a href=\"-/ready\">ready</a>",
    );
    let _ = write!(
        out,
        " · slow password verifications: {} (successful ones are remembered for a few \
         minutes)</footer>\n</body></html>\n",
        view.password_checks
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::metrics::DenialKind;
    use crate::status::RepoRow;
    use crate::store::StoreStats;
    use std::time::Duration;

    fn view() -> StatusView {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        StatusView {
            now,
            started: now - Duration::from_secs(3 * 3600 + 120),
            index_url: "http://gate.example.invalid:8080/simple/".into(),
            trusted_host: Some("gate.example.invalid".into()),
            repositories: vec![
                RepoRow {
                    name: "pypi".into(),
                    kind: "remote",
                    detail: "upstream https://index.example.invalid/simple/".into(),
                    state: RepoState::ServingStale { since: now },
                    is_default: true,
                },
                RepoRow {
                    name: "internal".into(),
                    kind: "hosted",
                    detail: "3 projects".into(),
                    state: RepoState::Local,
                    is_default: false,
                },
            ],
            store: StoreStats {
                artifacts: 4,
                artifact_bytes: 3 << 20,
                pages: 7,
                max_size: 12 << 20,
            },
            cache_hits: 3,
            cache_requests: 4,
            rules: 2,
            hidden_files: 5,
            password_checks: 1,
            denials: vec![DenialRecord {
                at: now,
                repository: "pypi".into(),
                package: "<script>alert(1)</script>".into(),
                version: Some("1.0&2".into()),
                kind: DenialKind::Rule,
                name: "no-\"old\"".into(),
                mode: Mode::Audit,
            }],
            upstream_errors: vec![UpstreamErrorRecord {
                at: now,
                repository: "pypi".into(),
                url: "https://index.example.invalid/simple/x/".into(),
                error: "connection refused <eof>".into(),
            }],
        }
    }

    #[test]
    fn the_page_shows_repositories_store_hit_rate_and_client_lines() {
        let html = render(&view());
        assert!(html.contains("<a href=\"pypi/simple/\">pypi</a>"), "{html}");
        assert!(html.contains("upstream https://index.example.invalid/simple/"));
        assert!(html.contains("serving stale"));
        assert!(html.contains("3.0 MiB of 12.0 MiB"));
        assert!(html.contains("width:25.0%"));
        assert!(html.contains("75.0%"), "hit rate");
        assert!(html.contains("up 3 h 2 min"));
        assert!(html.contains(
            "[global]\nindex-url = http://gate.example.invalid:8080/simple/\ntrusted-host = gate.example.invalid"
        ));
        assert!(html.contains("url = \"http://gate.example.invalid:8080/simple/\""));
        assert!(html.contains("2027-01-15 08:00:00 UTC"));
        assert!(html.contains("connection refused &lt;eof&gt;"));
    }

    #[test]
    fn what_others_control_is_escaped() {
        let html = render(&view());
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("1.0&amp;2"));
        assert!(
            html.contains("no-\"old\""),
            "quotes need no escaping in text"
        );
        let mut hostile = view();
        hostile.index_url = "http://\"><img src=x onerror=alert(1)>/simple/".into();
        let html = render(&hostile);
        assert!(!html.contains("<img"), "{html}");
    }

    #[test]
    fn the_page_is_self_contained() {
        let html = render(&view());
        for external in ["<link", "<script", "src=\"http", "@import", "url("] {
            assert!(!html.contains(external), "{external}");
        }
        assert!(html.contains("name=\"viewport\""));
    }

    #[test]
    fn empty_lists_say_so() {
        let mut quiet = view();
        quiet.denials.clear();
        quiet.upstream_errors.clear();
        quiet.cache_requests = 0;
        let html = render(&quiet);
        assert!(html.contains("<p id=\"denials\">None since start.</p>"));
        assert!(html.contains("<p id=\"upstream-errors\">None since start.</p>"));
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(uptime(59), "0 min");
        assert_eq!(uptime(90_061), "1 d 1 h");
    }
}
