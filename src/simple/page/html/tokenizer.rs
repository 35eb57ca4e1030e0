//! Just enough of the HTML5 tokenizer to read index pages: start tags with their attributes, end
//! tags and text, with comments, doctypes and the contents of raw-text elements skipped.
//!
//! The general-purpose parser in our dependencies (tl 0.7) misreads the attribute that follows a
//! valueless one (`data-yanked data-core-metadata="true"` loses the `d` of the second name) and cuts
//! unquoted values at `/`; both forms occur on real PEP 503/592 pages. This tokenizer follows the
//! HTML5 rules for those states, runs in linear time with no recursion, and cannot panic: every
//! slice goes through `str::get`, and it only stops on ASCII delimiters, which are always
//! character boundaries.

use std::borrow::Cow;

pub(super) enum Token<'a> {
    Start(StartTag<'a>),
    End(&'a str),
    Text(&'a str),
}

pub(super) struct StartTag<'a> {
    name: &'a str,
    /// In source order, duplicates removed (the first occurrence wins, as in HTML5).
    attributes: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> StartTag<'a> {
    pub(super) fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// An attribute looked up case-insensitively and entity-decoded. The outer `Option` says
    /// whether the attribute is present, the inner one whether it has a value.
    pub(super) fn attribute(&self, name: &str) -> Option<Option<Cow<'a, str>>> {
        self.attributes
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.map(html_escape::decode_html_entities))
    }
}

/// Attributes kept per tag; later ones are read past and ignored.
const MAX_ATTRIBUTES: usize = 32;

/// Elements whose content is not markup: a `<a` inside a script is not a link.
const RAW_TEXT: [&str; 4] = ["script", "style", "textarea", "title"];

pub(super) struct Tokenizer<'a> {
    src: &'a str,
    pos: usize,
    /// Set after the start tag of a raw-text element: skip to its end tag.
    raw_text_end: Option<&'static str>,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

impl<'a> Tokenizer<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Tokenizer {
            src,
            pos: 0,
            raw_text_end: None,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos + offset).copied()
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or_default()
    }

    /// Advances while `keep` holds. `keep` must reject only ASCII bytes, so the cursor always
    /// stops on a character boundary.
    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.pos += 1;
        }
        self.src.get(start..self.pos).unwrap_or_default()
    }

    fn skip_spaces(&mut self) {
        self.take_while(is_space);
    }

    /// Moves just past the next occurrence of `needle`, or to the end.
    fn skip_past(&mut self, needle: &str) {
        self.pos = match self.rest().find(needle) {
            Some(at) => self.pos + at + needle.len(),
            None => self.src.len(),
        };
    }

    fn skip_raw_text(&mut self, element: &str) {
        let mut search = self.pos;
        while let Some(at) = self.src.get(search..).and_then(|s| s.find("</")) {
            let name_start = search + at + 2;
            let candidate = self
                .src
                .as_bytes()
                .get(name_start..name_start + element.len());
            if candidate.is_some_and(|c| c.eq_ignore_ascii_case(element.as_bytes())) {
                self.pos = search + at;
                return;
            }
            search = name_start;
        }
        self.pos = self.src.len();
    }

    /// Reads a start tag; the cursor is just past `<`. Returns `None` when the page ends
    /// inside the tag, which HTML5 drops.
    fn start_tag(&mut self) -> Option<StartTag<'a>> {
        let name = self.take_while(|b| !(is_space(b) || b == b'/' || b == b'>'));
        let mut attributes: Vec<(&'a str, Option<&'a str>)> = Vec::new();
        loop {
            self.skip_spaces();
            match self.peek()? {
                b'>' => {
                    self.pos += 1;
                    return Some(StartTag { name, attributes });
                }
                b'/' => {
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            let start = self.pos;
            // A leading `=` belongs to the name (HTML5 "before attribute name" state).
            if self.peek() == Some(b'=') {
                self.pos += 1;
            }
            self.take_while(|b| !(is_space(b) || b == b'/' || b == b'>' || b == b'='));
            let key = self.src.get(start..self.pos).unwrap_or_default();
            self.skip_spaces();
            let mut value = None;
            if self.peek() == Some(b'=') {
                self.pos += 1;
                self.skip_spaces();
                value = Some(match self.peek()? {
                    quote @ (b'"' | b'\'') => {
                        self.pos += 1;
                        let rest = self.rest();
                        let end = rest.find(char::from(quote))?;
                        self.pos += end + 1;
                        rest.get(..end).unwrap_or_default()
                    }
                    b'>' => "",
                    _ => self.take_while(|b| !(is_space(b) || b == b'>')),
                });
            }
            // The bound keeps the duplicate check linear on a hostile tag with millions of
            // attributes; real links carry fewer than ten.
            if attributes.len() < MAX_ATTRIBUTES
                && !attributes.iter().any(|(k, _)| k.eq_ignore_ascii_case(key))
            {
                attributes.push((key, value));
            }
        }
    }
}

impl<'a> Iterator for Tokenizer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if let Some(element) = self.raw_text_end.take() {
            self.skip_raw_text(element);
        }
        loop {
            let rest = self.rest();
            if rest.is_empty() {
                return None;
            }
            if self.peek() != Some(b'<') {
                let end = rest.find('<').unwrap_or(rest.len());
                self.pos += end;
                return Some(Token::Text(rest.get(..end).unwrap_or_default()));
            }
            match (self.peek_at(1), self.peek_at(2)) {
                (Some(b'!'), _) if rest.starts_with("<!--") => {
                    // Searching from the second dash also ends `<!-->` and `<!--->`, as
                    // HTML5 does.
                    self.pos += 2;
                    self.skip_past("-->");
                }
                (Some(b'!' | b'?'), _) => self.skip_past(">"),
                (Some(b'/'), Some(b)) if b.is_ascii_alphabetic() => {
                    self.pos += 2;
                    let name = self.take_while(|b| !(is_space(b) || b == b'/' || b == b'>'));
                    self.skip_past(">");
                    return Some(Token::End(name));
                }
                (Some(b'/'), _) => self.skip_past(">"),
                (Some(b), _) if b.is_ascii_alphabetic() => {
                    self.pos += 1;
                    let Some(tag) = self.start_tag() else {
                        // The page ended inside the tag: HTML5 drops it, and nothing follows.
                        self.pos = self.src.len();
                        return None;
                    };
                    self.raw_text_end = RAW_TEXT.iter().find(|element| tag.is(element)).copied();
                    return Some(Token::Start(tag));
                }
                _ => {
                    // A `<` that starts no markup is text.
                    let end = rest
                        .get(1..)
                        .and_then(|r| r.find('<'))
                        .map_or(rest.len(), |i| i + 1);
                    self.pos += end;
                    return Some(Token::Text(rest.get(..end).unwrap_or_default()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type OwnedAttributes = Vec<(String, Option<String>)>;

    fn start_tags(src: &str) -> Vec<(String, OwnedAttributes)> {
        Tokenizer::new(src)
            .filter_map(|t| match t {
                Token::Start(tag) => Some((
                    tag.name.to_owned(),
                    tag.attributes
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                        .collect(),
                )),
                _ => None,
            })
            .collect()
    }

    fn attrs(pairs: &[(&str, Option<&str>)]) -> OwnedAttributes {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn valueless_attribute_before_another() {
        let tags = start_tags(r#"<a href="x" data-yanked data-core-metadata="true">t</a>"#);
        assert_eq!(
            tags,
            [(
                "a".to_owned(),
                attrs(&[
                    ("href", Some("x")),
                    ("data-yanked", None),
                    ("data-core-metadata", Some("true"))
                ])
            )]
        );
    }

    #[test]
    fn attribute_value_forms() {
        let tags = start_tags("<A HREF=/files/x.whl#sha256=ab data-x = 'q\"v' e= f=>");
        assert_eq!(
            tags,
            [(
                "A".to_owned(),
                attrs(&[
                    ("HREF", Some("/files/x.whl#sha256=ab")),
                    ("data-x", Some("q\"v")),
                    ("e", Some("f=")),
                ])
            )]
        );
        let tags = start_tags("<a href=x href=y/><br/>");
        assert_eq!(
            tags[0].1,
            attrs(&[("href", Some("x"))]),
            "first duplicate wins"
        );
        assert_eq!(tags[1].0, "br");
    }

    #[test]
    fn comments_doctype_and_raw_text_are_skipped() {
        let src = "<!DOCTYPE html><!-- <a href=no> --><!--><?xml x?><script>var s='<a href=no>';\
                   </SCRIPT><title><a href=no></title></ x><a href=yes>";
        let tags = start_tags(src);
        let names: Vec<&str> = tags.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["script", "title", "a"]);
        assert_eq!(tags[2].1, attrs(&[("href", Some("yes"))]));
    }

    #[test]
    fn truncated_input_ends_cleanly() {
        for src in [
            "<a href=\"x",
            "<a href=",
            "<a",
            "<",
            "<!--",
            "</a",
            "<script>",
            "a < b",
            "é<é",
        ] {
            let count = Tokenizer::new(src).count();
            assert!(count <= src.len(), "{src}");
        }
        assert!(
            start_tags("<a href=\"x").is_empty(),
            "a tag cut off by the end is dropped"
        );
    }

    /// Inputs built to make a naive tokenizer quadratic must still finish quickly.
    #[test]
    fn hostile_inputs_stay_linear() {
        let many_attributes = format!("<a {}>", "x ".repeat(500_000));
        assert_eq!(start_tags(&many_attributes)[0].1.len(), 1);
        let inputs = [
            "<title>".repeat(200_000),
            "<!".repeat(200_000),
            "</x".repeat(200_000),
            "<script></".repeat(100_000),
            "<".repeat(500_000),
        ];
        for src in &inputs {
            assert!(Tokenizer::new(src).count() <= src.len());
        }
    }
}
