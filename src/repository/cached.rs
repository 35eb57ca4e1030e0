//! A page as held in memory: parsed once, rendered once per variant, compressed once.
//!
//! A hot project page is asked for many times per second by a busy CI fleet. Parsing the
//! upstream's bytes, rendering our HTML or JSON and gzipping it are each done once per upstream
//! revision and kept here, so a warm page request is a hash lookup and a copy of `Bytes`.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY,
};
use sha2::{Digest as _, Sha256};

use crate::config::RepoName;
use crate::simple::negotiate::Format;

/// How a response was obtained, as the `X-Wheelgate-Cache` header says it (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from memory, parsed and rendered, without asking the upstream.
    Hit,
    /// Fetched from the upstream for this request, or (a page) not in memory and read and parsed
    /// again from the store.
    Miss,
    /// Stale, and the upstream could not be reached or failed: the stored copy was served.
    Stale,
    /// Stale, and the upstream confirmed with a 304 that it is still current.
    Revalidated,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
            CacheStatus::Revalidated => "revalidated",
        }
    }

    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// The header saying how a cache was involved: `hit`, `miss`, `stale` or `revalidated` (SPEC §2).
pub const X_WHEELGATE_CACHE: HeaderName = HeaderName::from_static("x-wheelgate-cache");

/// The header naming the members a group's page was served without, because they failed.
pub const X_WHEELGATE_UNAVAILABLE: HeaderName = HeaderName::from_static("x-wheelgate-unavailable");

/// The header naming the audited rules (or controls) that would have refused what was served
/// had they been enforced; the access log shows it as `audit=`.
pub const X_WHEELGATE_AUDIT: HeaderName = HeaderName::from_static("x-wheelgate-audit");

/// What a page's representation varies by.
pub const VARY_PAGE: &str = "Accept, Accept-Encoding";

/// One rendering of a page: the bytes a client receives, with (on first demand) their gzip form.
/// Each variant carries its response headers, built once here: a warm page response is a clone of
/// a small header map and of `Bytes`, not a handful of header insertions.
pub struct Rendered {
    identity: Variant,
    /// Set when the download rules refuse the page as a whole.
    pub denied: Option<Refusal>,
    /// Set when audited rules would have left files out of the page, or refused it: the rules,
    /// as a refusal would name them. The page is served whole, with [`X_WHEELGATE_AUDIT`].
    pub audited: Option<Refusal>,
    gzip: OnceLock<Variant>,
    content_type: HeaderValue,
}

/// One encoding of a rendering.
pub struct Variant {
    pub body: Bytes,
    pub etag: HeaderValue,
    /// `Content-Type`, `Content-Length`, `Content-Encoding` (for gzip), `ETag`, `Vary`, and
    /// `X-Wheelgate-Cache: hit` (a response that was not a hit sets its own status over it).
    pub headers: HeaderMap,
}

impl Variant {
    fn new(body: Bytes, etag: HeaderValue, content_type: &HeaderValue, gzip: bool) -> Variant {
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(CONTENT_TYPE, content_type.clone());
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        headers.insert(ETAG, etag.clone());
        headers.insert(VARY, HeaderValue::from_static(VARY_PAGE));
        headers.insert(X_WHEELGATE_CACHE, CacheStatus::Hit.header_value());
        Variant {
            body,
            etag,
            headers,
        }
    }
}

/// Why a page is refused whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The rules, as a refusal names them to the client.
    pub rules: String,
    /// The rules' names alone, for the `name` label of the denials metric.
    pub names: String,
}

impl Rendered {
    /// A page the rules refuse whole.
    pub fn denied(refusal: Refusal) -> Rendered {
        let content_type = HeaderValue::from_static("text/plain; charset=utf-8");
        Rendered {
            identity: Variant::new(
                Bytes::new(),
                HeaderValue::from_static("\"denied\""),
                &content_type,
                false,
            ),
            denied: Some(refusal),
            audited: None,
            gzip: OnceLock::new(),
            content_type,
        }
    }

    pub fn new(body: Bytes, content_type: &'static str) -> Rendered {
        let digest = Sha256::digest(&body);
        // 128 bits of the body's digest: collisions are not a concern for a cache validator.
        let etag = format!("\"{}\"", hex::encode(&digest[..16]));
        let etag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""));
        let content_type = HeaderValue::from_static(content_type);
        Rendered {
            identity: Variant::new(body, etag, &content_type, false),
            denied: None,
            audited: None,
            gzip: OnceLock::new(),
            content_type,
        }
    }

    /// The rendering of a page that audited rules would have changed: `audit` names them, in
    /// [`Rendered::audited`] and in the `X-Wheelgate-Audit` header of every variant.
    pub fn with_audit(mut self, audit: Refusal) -> Rendered {
        if let Ok(value) = HeaderValue::from_str(&audit.rules) {
            self.identity.headers.insert(X_WHEELGATE_AUDIT, value);
        }
        self.audited = Some(audit);
        self
    }

    /// The rendering as rendered.
    pub fn identity(&self) -> &Variant {
        &self.identity
    }

    /// The gzip-compressed rendering, computed once. It is its own representation, so its ETag
    /// is the identity's with `-gzip` appended.
    pub fn gzip(&self) -> &Variant {
        self.gzip.get_or_init(|| {
            let body = &self.identity.body;
            let Ok(compressed) = gzip(body) else {
                // Not expected with a Vec as output; identity is a valid answer to a client
                // that accepts gzip.
                let identity = &self.identity;
                return Variant::new(
                    identity.body.clone(),
                    identity.etag.clone(),
                    &self.content_type,
                    false,
                );
            };
            let tag = self
                .identity
                .etag
                .to_str()
                .unwrap_or("\"0\"")
                .trim_end_matches('"');
            let etag = HeaderValue::from_str(&format!("{tag}-gzip\""))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0-gzip\""));
            let mut variant = Variant::new(Bytes::from(compressed), etag, &self.content_type, true);
            if let Some(audit) = self.identity.headers.get(X_WHEELGATE_AUDIT) {
                variant.headers.insert(X_WHEELGATE_AUDIT, audit.clone());
            }
            variant
        })
    }
}

/// `body` as a gzip member (RFC 1952) at level 6.
///
/// The deflate state (about 300 KiB of tables) is kept per thread and reset between pages:
/// allocating and zeroing a fresh one for every page was 6-9% of wheelgate's CPU in a cold
/// install, more than compressing the page itself.
fn gzip(body: &[u8]) -> Result<Vec<u8>, flate2::CompressError> {
    thread_local! {
        static DEFLATE: RefCell<Option<Compress>> = const { RefCell::new(None) };
    }
    /// Magic, deflate, no flags, no mtime, no extra flags, OS unknown (as flate2 writes it).
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut out = Vec::with_capacity(body.len() / 4 + 64);
    out.extend_from_slice(&HEADER);
    DEFLATE.with_borrow_mut(|slot| {
        let deflate = slot.get_or_insert_with(|| Compress::new(Compression::new(6), false));
        deflate.reset();
        loop {
            let consumed =
                usize::try_from(deflate.total_in()).map_or(body.len(), |n| n.min(body.len()));
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity().max(4096));
            }
            match deflate.compress_vec(&body[consumed..], &mut out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => return Ok(()),
                Ok(Status::Ok | Status::BufError) => {}
                Err(error) => {
                    // A state in an unknown condition is not reused.
                    *slot = None;
                    return Err(error);
                }
            }
        }
    })?;
    let mut crc = Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length modulo 2^32.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    Ok(out)
}

/// Which rendering: the format, the repository the page is served from (file links name it and
/// its rules filter the files), how deep the page sits (relative links climb that many segments),
/// and, when a rule reads `now`, the minute the rules were applied in (so a cooldown ends on time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderKey<'a> {
    pub format: Format,
    pub repository: &'a str,
    pub depth: usize,
    pub minute: u64,
}

/// A rendering as kept: its key (owned) and the bytes.
struct Kept {
    format: Format,
    repository: Box<str>,
    depth: usize,
    minute: u64,
    rendered: Arc<Rendered>,
}

impl Kept {
    fn is(&self, key: &RenderKey<'_>) -> bool {
        self.format == key.format
            && self.depth == key.depth
            && self.minute == key.minute
            && &*self.repository == key.repository
    }
}

/// A parsed upstream page with what is known of its freshness, and its renderings.
pub struct Cached<T> {
    pub value: Arc<T>,
    /// When the upstream last confirmed this content (a 200 or a 304).
    pub fetched_at: SystemTime,
    /// How the entry was obtained when it was loaded.
    pub status: CacheStatus,
    /// About the bytes of memory this entry holds, parsed and rendered, for the cache's weigher.
    pub weight: u32,
    /// Rendering this page is heavy work ([`super::heavy`]): it is done off the async workers,
    /// one rendering at a time (`turn`), compressed at once.
    heavy: bool,
    turn: tokio::sync::Mutex<()>,
    /// The renderings for the usual keys (no minute, a page at depth 2 or 3), each set once and
    /// then read without a lock: every warm request for a busy page reads one, from every core
    /// at once, and a lock (or a reference count) there is a cache line the cores fight over.
    slots: [OnceLock<Slot>; SLOTS],
    /// Every other rendering: a handful at most (formats × the ways a page is addressed), so a
    /// list beats a map and a lookup allocates nothing.
    renders: Mutex<Vec<Kept>>,
}

/// Three formats × two depths.
const SLOTS: usize = 6;

/// A rendering in a slot, with the repository its links name.
struct Slot {
    repository: Box<str>,
    rendered: Rendered,
}

/// The slot for `key`, if it has one.
fn slot_of(key: &RenderKey<'_>) -> Option<usize> {
    let format = match key.format {
        Format::Json => 0,
        Format::HtmlV1 => 1,
        Format::Html => 2,
    };
    match (key.minute, key.depth) {
        (0, depth @ (2 | 3)) => Some(format * 2 + depth - 2),
        _ => None,
    }
}

/// A page as a request sees it: the shared entry and how this request obtained it.
pub struct PageView<T> {
    pub cached: Arc<Cached<T>>,
    pub status: CacheStatus,
    /// A group's page served without some members, which failed: their names.
    pub unavailable: Option<Arc<[RepoName]>>,
}

impl<T> PageView<T> {
    /// A whole page.
    pub fn new(cached: Arc<Cached<T>>, status: CacheStatus) -> PageView<T> {
        PageView {
            cached,
            status,
            unavailable: None,
        }
    }

    /// As [`PageView::render`], with a heavy page's rendering (and its gzip form) made off the
    /// async workers, one at a time: the other requests for it wait without holding a worker.
    /// A light page, or a heavy one already rendered for `key`, is served as `render` serves it.
    pub async fn render_off_workers(
        self,
        key: RenderKey<'_>,
        render: impl Fn(&T) -> Rendered,
    ) -> Page<T> {
        if !self.cached.heavy || self.cached.has_rendered(&key) {
            return self.render(key, render);
        }
        let cached = self.cached.clone();
        let _turn = cached.turn.lock().await;
        super::heavy::in_place(|| {
            let page = self.render(key, render);
            // A client that takes gzip would otherwise compress it on an async worker.
            page.rendered().gzip();
            page
        })
        .await
    }

    /// The rendering for `key` (made by `render` the first time), kept with the page it was
    /// rendered from so that it can leave the repository layer.
    pub fn render(self, key: RenderKey<'_>, render: impl Fn(&T) -> Rendered) -> Page<T> {
        let at = match self.cached.rendered(key, render) {
            RenderedRef::Slot(_) => slot_of(&key).map(At::Slot),
            RenderedRef::Kept(rendered) => Some(At::Kept(rendered)),
        };
        Page {
            // `rendered` answers from a slot only for keys that have one.
            at: at.unwrap_or(At::Slot(0)),
            cached: self.cached,
            status: self.status,
            unavailable: self.unavailable,
            audit: None,
        }
    }
}

/// One rendering of a page, owned: what a page request gets from the repository layer.
pub struct Page<T> {
    cached: Arc<Cached<T>>,
    at: At,
    pub status: CacheStatus,
    /// A group's page served without some members, which failed: their names.
    pub unavailable: Option<Arc<[RepoName]>>,
    /// A package group in audit mode would have left some of the page's files out: it, as a
    /// refusal would name it (sent in `X-Wheelgate-Audit` with the audited rules, if any).
    pub audit: Option<super::WouldDeny>,
}

enum At {
    Slot(usize),
    Kept(Arc<Rendered>),
}

impl<T> Page<T> {
    /// Whether the page was fetched from the upstream for this request (the bytes served came
    /// from it), rather than found in memory or read again from the store.
    pub fn from_upstream(&self) -> bool {
        self.status == CacheStatus::Miss && self.cached.status == CacheStatus::Miss
    }

    pub fn rendered(&self) -> &Rendered {
        match &self.at {
            At::Kept(rendered) => rendered,
            At::Slot(index) => match self.cached.slots[*index].get() {
                Some(slot) => &slot.rendered,
                // A slot is set before a `Page` pointing at it is made, and never unset.
                None => unreachable!("a page's rendering slot is set before the page is made"),
            },
        }
    }
}

/// A rendering lent by [`Cached::rendered`]: borrowed from a slot, or shared from the list.
pub enum RenderedRef<'a> {
    Slot(&'a Rendered),
    Kept(Arc<Rendered>),
}

impl std::ops::Deref for RenderedRef<'_> {
    type Target = Rendered;

    fn deref(&self) -> &Rendered {
        match self {
            RenderedRef::Slot(rendered) => rendered,
            RenderedRef::Kept(rendered) => rendered,
        }
    }
}

impl<T> Cached<T> {
    pub fn new(
        value: Arc<T>,
        fetched_at: SystemTime,
        status: CacheStatus,
        weight: usize,
    ) -> Cached<T> {
        Cached {
            value,
            fetched_at,
            status,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
            heavy: weight >= super::heavy::HEAVY_WEIGHT,
            turn: tokio::sync::Mutex::new(()),
            slots: Default::default(),
            renders: Mutex::new(Vec::new()),
        }
    }

    /// Whether the rendering for `key` is made and in its slot (only keys with a slot say so).
    fn has_rendered(&self, key: &RenderKey<'_>) -> bool {
        slot_of(key)
            .and_then(|index| self.slots[index].get())
            .is_some_and(|slot| &*slot.repository == key.repository)
    }

    /// The rendering for `key`, made by `render` the first time it is asked for.
    /// Renderings of an earlier minute (for rules that read `now`) are dropped as new ones come.
    pub fn rendered(&self, key: RenderKey<'_>, render: impl Fn(&T) -> Rendered) -> RenderedRef<'_> {
        if let Some(slot) = slot_of(&key).map(|index| &self.slots[index]) {
            let kept = slot.get_or_init(|| Slot {
                repository: key.repository.into(),
                rendered: render(&self.value),
            });
            if &*kept.repository == key.repository {
                return RenderedRef::Slot(&kept.rendered);
            }
            // The slot holds the page as another repository links it (a page served through
            // more than one name): this one goes to the list.
        }
        // A panic while rendering leaves nothing half-written in the list.
        let mut renders = crate::lock(&self.renders);
        if let Some(kept) = renders.iter().find(|kept| kept.is(&key)) {
            return RenderedRef::Kept(kept.rendered.clone());
        }
        renders.retain(|kept| kept.minute == key.minute);
        let rendered = Arc::new(render(&self.value));
        renders.push(Kept {
            format: key.format,
            repository: key.repository.into(),
            depth: key.depth,
            minute: key.minute,
            rendered: rendered.clone(),
        });
        RenderedRef::Kept(rendered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn gzip_reuses_its_state_and_every_member_decodes() {
        use std::io::Read as _;
        // Incompressible bytes make the output outgrow its first reservation.
        let mut noise = Vec::with_capacity(300_000);
        let mut x: u32 = 12345;
        for _ in 0..300_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            noise.push((x >> 24) as u8);
        }
        let bodies: [&[u8]; 4] = [
            b"<html>first page</html>",
            b"",
            &noise,
            b"<html>again</html>",
        ];
        for body in bodies {
            let compressed = gzip(body).unwrap();
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&compressed[..])
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, body, "{} bytes", body.len());
        }
    }

    #[test]
    fn renders_once_per_key() {
        let cached = Cached::new(Arc::new(5u32), SystemTime::now(), CacheStatus::Miss, 10);
        let key = RenderKey {
            format: Format::Json,
            repository: "pypi",
            depth: 2,
            minute: 0,
        };
        let calls = std::cell::Cell::new(0);
        let first = cached.rendered(key, |v| {
            calls.set(calls.get() + 1);
            Rendered::new(Bytes::from(v.to_string()), "text/html")
        });
        let second = cached.rendered(key, |_| unreachable!("rendered twice"));
        assert_eq!(calls.get(), 1);
        assert!(std::ptr::eq(&*first, &*second));
        assert!(
            matches!(first, RenderedRef::Slot(_)),
            "a usual key is kept in a slot"
        );
        // The same key through another repository's name: rendered once more, kept in the list.
        let elsewhere = cached.rendered(
            RenderKey {
                repository: "group",
                ..key
            },
            |v| {
                calls.set(calls.get() + 1);
                Rendered::new(Bytes::from(format!("group {v}")), "text/html")
            },
        );
        assert!(matches!(elsewhere, RenderedRef::Kept(_)));
        assert_eq!(elsewhere.identity().body, Bytes::from_static(b"group 5"));
        let again = cached.rendered(
            RenderKey {
                repository: "group",
                ..key
            },
            |_| unreachable!("rendered twice"),
        );
        assert!(std::ptr::eq(&*elsewhere, &*again));
        assert_eq!(calls.get(), 2);
        let other = cached.rendered(
            RenderKey {
                format: Format::Html,
                repository: "pypi",
                depth: 2,
                minute: 0,
            },
            |_| Rendered::new(Bytes::from_static(b"html"), "text/html"),
        );
        assert_eq!(other.identity().body, Bytes::from_static(b"html"));
        assert_ne!(other.identity().etag, first.identity().etag);
    }

    #[test]
    fn a_new_minute_replaces_the_old_renderings() {
        let cached = Cached::new(Arc::new(1u32), SystemTime::now(), CacheStatus::Miss, 10);
        let key = |minute| RenderKey {
            format: Format::Json,
            repository: "pypi",
            depth: 2,
            minute,
        };
        let first = cached.rendered(key(7), |_| {
            Rendered::new(Bytes::from_static(b"7"), "text/html")
        });
        let next = cached.rendered(key(8), |_| {
            Rendered::new(Bytes::from_static(b"8"), "text/html")
        });
        assert_eq!(next.identity().body, Bytes::from_static(b"8"));
        let again = cached.rendered(key(7), |_| {
            Rendered::new(Bytes::from_static(b"7 again"), "text/html")
        });
        assert!(
            !std::ptr::eq(&*first, &*again),
            "minute 7 must have been dropped when minute 8 came"
        );
        assert_eq!(cached.renders.lock().unwrap().len(), 1);
    }

    #[test]
    fn gzip_round_trips() {
        let rendered = Rendered::new(Bytes::from("hello ".repeat(100)), "text/html");
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&rendered.gzip().body[..])
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, "hello ".repeat(100));
        assert!(rendered.gzip().body.len() < rendered.identity().body.len());
        let headers = &rendered.gzip().headers;
        assert_eq!(
            headers[CONTENT_LENGTH],
            rendered.gzip().body.len().to_string().as_str()
        );
        assert_eq!(headers[CONTENT_ENCODING], "gzip");
        assert_eq!(headers[CONTENT_TYPE], "text/html");
        assert_eq!(headers[ETAG], rendered.gzip().etag);
        assert!(!rendered.identity().headers.contains_key(CONTENT_ENCODING));
        let identity = rendered
            .identity()
            .etag
            .to_str()
            .unwrap()
            .trim_end_matches('"');
        assert_eq!(rendered.gzip().etag, format!("{identity}-gzip\"").as_str());
    }
}
