//! PEP 691 content negotiation: which page format a client gets.
//!
//! pip and uv ask for JSON with HTML fallbacks through q-values; older tools send `text/html` or
//! nothing at all. SPEC §2 says we never answer 406: a header that names none of our formats, or one
//! we cannot read, gets the PEP 503 HTML page every client understands.

use std::fmt;

/// A page format we can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `application/vnd.pypi.simple.v1+json` (PEP 691).
    Json,
    /// `application/vnd.pypi.simple.v1+html` (PEP 691's name for the PEP 503 page).
    HtmlV1,
    /// `text/html` (PEP 503).
    Html,
}

const JSON_V1: &str = "application/vnd.pypi.simple.v1+json";
const JSON_LATEST: &str = "application/vnd.pypi.simple.latest+json";
const HTML_V1: &str = "application/vnd.pypi.simple.v1+html";
const HTML_LATEST: &str = "application/vnd.pypi.simple.latest+html";
const TEXT_HTML: &str = "text/html";

/// When wildcards make several formats equally acceptable we pick the most conservative one first,
/// as the public index does: a client that merely says `*/*` is most likely a browser or an old tool.
const SERVER_PREFERENCE: [Format; 3] = [Format::Html, Format::HtmlV1, Format::Json];

impl Format {
    /// The media type to send in `Content-Type` (the body is always UTF-8).
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => JSON_V1,
            Format::HtmlV1 => HTML_V1,
            Format::Html => TEXT_HTML,
        }
    }

    /// Whether the body is the HTML rendering (both HTML media types share one body).
    pub fn is_html(self) -> bool {
        !matches!(self, Format::Json)
    }

    fn server_rank(self) -> usize {
        SERVER_PREFERENCE
            .iter()
            .position(|f| *f == self)
            .unwrap_or(SERVER_PREFERENCE.len())
    }

    /// The format an exact media type names, including the PEP 691 `latest` aliases.
    fn from_media_type(media_type: &str) -> Option<Format> {
        let media_type = media_type.trim();
        [
            (JSON_V1, Format::Json),
            (JSON_LATEST, Format::Json),
            (HTML_V1, Format::HtmlV1),
            (HTML_LATEST, Format::HtmlV1),
            (TEXT_HTML, Format::Html),
        ]
        .into_iter()
        .find(|(name, _)| media_type.eq_ignore_ascii_case(name))
        .map(|(_, format)| format)
    }

    /// The top-level type, for matching ranges such as `application/*`.
    fn top_level_type(self) -> &'static str {
        match self {
            Format::Json | Format::HtmlV1 => "application",
            Format::Html => "text",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.content_type())
    }
}

/// How precisely a media range names a format; RFC 9110 gives the most specific range's q-value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Specificity {
    Any,
    Type,
    Exact,
}

/// The best match for one format found so far in the header.
#[derive(Debug, Clone, Copy)]
struct Match {
    specificity: Specificity,
    /// q-value in thousandths, so comparisons are exact.
    q: u16,
    /// Position of the media range in the header, for "the order the client listed them".
    position: usize,
}

/// Chooses the page format for an `Accept` header, remembering recent answers.
///
/// Every client sends the same `Accept` value on each request (pip, uv and browsers each have
/// their fixed string), and reading it costs more than the rest of a warm page lookup. Each thread
/// keeps the last [`MEMO_SLOTS`] values it saw with their answer; values longer than
/// [`MEMO_MAX_LEN`] are read every time.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Html;
    };
    if accept.len() > MEMO_MAX_LEN {
        return choose(Some(accept));
    }
    MEMO.with(|memo| {
        let mut memo = memo.borrow_mut();
        let Memo { entries, next } = &mut *memo;
        if let Some((_, format)) = entries.iter().find(|(seen, _)| **seen == *accept) {
            return *format;
        }
        let format = choose(Some(accept));
        if entries.len() < MEMO_SLOTS {
            entries.push((accept.into(), format));
        } else {
            entries[*next] = (accept.into(), format);
            *next = (*next + 1) % MEMO_SLOTS;
        }
        format
    })
}

/// How many `Accept` values each thread remembers.
const MEMO_SLOTS: usize = 4;

/// The longest `Accept` value remembered; real clients send under 200 bytes.
const MEMO_MAX_LEN: usize = 512;

#[derive(Default)]
struct Memo {
    entries: Vec<(Box<str>, Format)>,
    /// The slot to replace next once all are taken.
    next: usize,
}

thread_local! {
    static MEMO: std::cell::RefCell<Memo> = std::cell::RefCell::new(Memo::default());
}

/// Reads an `Accept` header and chooses the page format.
///
/// Each format gets the q-value of the most specific media range that names it; q=0 excludes it.
/// The highest q wins; equal q-values go to the range the client listed first, and formats matched
/// by the same wildcard go by [`SERVER_PREFERENCE`]. Ranges that cannot be read are ignored; when
/// nothing acceptable remains the answer is [`Format::Html`].
fn choose(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Html;
    };
    let mut best: [Option<Match>; 3] = [None; 3];
    for (position, range) in accept.split(',').enumerate() {
        let Some((media_type, q)) = parse_range(range) else {
            continue;
        };
        for (slot, format) in best.iter_mut().zip(SERVER_PREFERENCE) {
            let Some(specificity) = matches(media_type, format) else {
                continue;
            };
            let candidate = Match {
                specificity,
                q,
                position,
            };
            *slot = match *slot {
                None => Some(candidate),
                Some(current) if specificity > current.specificity => Some(candidate),
                // Two exact ranges for one format (`v1+json` and `latest+json`): the client
                // accepts it at the better of the two.
                Some(current) if specificity == current.specificity && q > current.q => {
                    Some(candidate)
                }
                keep => keep,
            };
        }
    }
    best.iter()
        .zip(SERVER_PREFERENCE)
        .filter_map(|(slot, format)| slot.map(|m| (m, format)))
        .filter(|(m, _)| m.q > 0)
        .min_by_key(|(m, format)| (u16::MAX - m.q, m.position, format.server_rank()))
        .map_or(Format::Html, |(_, format)| format)
}

/// Splits one media range into its type and q-value (in thousandths). Parameters other than `q`
/// (such as `charset`) do not affect which format is chosen.
fn parse_range(range: &str) -> Option<(&str, u16)> {
    let mut params = range.split(';');
    let media_type = params.next()?.trim();
    let (kind, subtype) = media_type.split_once('/')?;
    if kind.is_empty() || subtype.is_empty() || subtype.contains('/') {
        return None;
    }
    let mut q = 1000;
    for param in params {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        if key.trim().eq_ignore_ascii_case("q") {
            q = parse_qvalue(value.trim())?;
        }
    }
    Some((media_type, q))
}

/// RFC 9110 qvalue: `0(.ddd)?` or `1(.000)?`, returned in thousandths.
fn parse_qvalue(value: &str) -> Option<u16> {
    let (int, frac) = match value.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (value, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        let scale = [100u16, 10, 1].get(i).copied()?;
        thousandths += u16::from(b - b'0') * scale;
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn matches(media_type: &str, format: Format) -> Option<Specificity> {
    if Format::from_media_type(media_type) == Some(format) {
        return Some(Specificity::Exact);
    }
    let (kind, subtype) = media_type.split_once('/')?;
    if subtype.trim() != "*" {
        return None;
    }
    let kind = kind.trim();
    if kind == "*" {
        return Some(Specificity::Any);
    }
    kind.eq_ignore_ascii_case(format.top_level_type())
        .then_some(Specificity::Type)
}

/// The `?format=<media type>` override the public index supports, for clients that cannot set
/// headers (and for people debugging with a browser). Unknown values give `None`, so the `Accept`
/// header decides.
pub fn format_from_query(query: Option<&str>) -> Option<Format> {
    let query = query?;
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "format")
        .find_map(|(_, value)| Format::from_media_type(&value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_answers_match_fresh_ones() {
        let values = [
            "text/html",
            "application/vnd.pypi.simple.v1+json",
            "application/vnd.pypi.simple.v1+html",
            "*/*",
            "application/vnd.pypi.simple.v1+json;q=0, text/html",
            "application/vnd.pypi.simple.latest+json",
        ];
        // Twice round more values than there are slots: hits, misses and replacements.
        for _ in 0..3 {
            for value in values {
                assert_eq!(negotiate(Some(value)), choose(Some(value)), "{value}");
            }
        }
        let long = format!("text/html, {}", "x/y, ".repeat(200));
        assert_eq!(negotiate(Some(&long)), Format::Html);
    }

    #[test]
    fn pip_and_uv_get_json() {
        let pip = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; \
                   q=0.1, text/html; q=0.01";
        assert_eq!(negotiate(Some(pip)), Format::Json);
        let uv = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, \
                  text/html;q=0.01";
        assert_eq!(negotiate(Some(uv)), Format::Json);
    }

    #[test]
    fn single_types() {
        assert_eq!(negotiate(Some("text/html")), Format::Html);
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.v1+html")),
            Format::HtmlV1
        );
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.latest+json")),
            Format::Json
        );
        assert_eq!(
            negotiate(Some("Application/VND.pypi.simple.LATEST+html")),
            Format::HtmlV1
        );
        assert_eq!(negotiate(Some("text/html; charset=utf-8")), Format::Html);
    }

    #[test]
    fn fallbacks_to_html() {
        assert_eq!(negotiate(None), Format::Html);
        assert_eq!(negotiate(Some("")), Format::Html);
        assert_eq!(negotiate(Some("image/png")), Format::Html);
        assert_eq!(negotiate(Some("garbage")), Format::Html);
        assert_eq!(negotiate(Some(";;;,,,=q")), Format::Html);
        assert_eq!(negotiate(Some("*/*")), Format::Html);
        assert_eq!(negotiate(Some("text/*")), Format::Html);
        assert_eq!(negotiate(Some("application/json")), Format::Html);
    }

    #[test]
    fn q_zero_excludes() {
        assert_eq!(
            negotiate(Some(
                "application/vnd.pypi.simple.v1+json;q=0, text/html;q=0.5"
            )),
            Format::Html
        );
        assert_eq!(
            negotiate(Some(
                "*/*, text/html;q=0, application/vnd.pypi.simple.v1+html;q=0"
            )),
            Format::Json
        );
        // Everything excluded: still HTML rather than 406.
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.v1+json;q=0")),
            Format::Html
        );
    }

    #[test]
    fn higher_q_wins_over_order() {
        assert_eq!(
            negotiate(Some(
                "text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.9"
            )),
            Format::Json
        );
    }

    #[test]
    fn ties_follow_client_order() {
        assert_eq!(
            negotiate(Some("text/html, application/vnd.pypi.simple.v1+json")),
            Format::Html
        );
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.v1+json, text/html")),
            Format::Json
        );
    }

    #[test]
    fn wildcards() {
        assert_eq!(negotiate(Some("application/*")), Format::HtmlV1);
        assert_eq!(
            negotiate(Some(
                "application/*;q=0.5, application/vnd.pypi.simple.v1+html;q=0.1"
            )),
            Format::Json
        );
        assert_eq!(
            negotiate(Some("*/*;q=0.1, application/vnd.pypi.simple.v1+json")),
            Format::Json
        );
    }

    #[test]
    fn malformed_ranges_are_ignored() {
        assert_eq!(
            negotiate(Some(
                "application/vnd.pypi.simple.v1+json;q=2, text/html;q=0.3"
            )),
            Format::Html
        );
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.v1+json;q=abc")),
            Format::Html
        );
        assert_eq!(
            negotiate(Some("bogus, application/vnd.pypi.simple.v1+json;q=0.5")),
            Format::Json
        );
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.01"), Some(10));
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("0.1234"), None);
        assert_eq!(parse_qvalue("-0"), None);
        assert_eq!(parse_qvalue(""), None);
    }

    #[test]
    fn query_override() {
        assert_eq!(
            format_from_query(Some("format=application%2Fvnd.pypi.simple.v1%2Bjson")),
            Some(Format::Json)
        );
        assert_eq!(
            format_from_query(Some("x=1&format=text/html")),
            Some(Format::Html)
        );
        assert_eq!(format_from_query(Some("format=image/png")), None);
        assert_eq!(format_from_query(Some("")), None);
        assert_eq!(format_from_query(None), None);
    }

    #[test]
    fn content_types() {
        assert_eq!(Format::Json.content_type(), JSON_V1);
        assert_eq!(Format::HtmlV1.content_type(), HTML_V1);
        assert_eq!(Format::Html.content_type(), TEXT_HTML);
    }
}
