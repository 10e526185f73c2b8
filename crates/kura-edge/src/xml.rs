//! A small XML writer for Query-protocol responses.
//!
//! AWS Query responses are plain element trees with text leaves; a writer that escapes
//! text and nests elements is all they need, and keeps the response shapes visible in the
//! service code that builds them.

/// Escapes `&`, `<`, `>`, `"` and `'` for use in XML text or attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all are replaced rather than emitted.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Builds an XML fragment element by element.
#[derive(Default, Debug)]
pub struct XmlWriter {
    out: String,
}

impl XmlWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// `<name>escaped text</name>`
    pub fn leaf(&mut self, name: &str, text: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        self.out.push_str(&escape(text));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// A leaf only when `text` is present; AWS omits absent members.
    pub fn optional_leaf(&mut self, name: &str, text: Option<&str>) -> &mut Self {
        if let Some(text) = text {
            self.leaf(name, text);
        }
        self
    }

    /// `<name>…children…</name>`
    pub fn element(&mut self, name: &str, children: impl FnOnce(&mut Self)) -> &mut Self {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
        children(self);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_escaped_elements() {
        let mut w = XmlWriter::new();
        w.element("User", |w| {
            w.leaf("UserName", "a&b").optional_leaf("Path", None);
        });
        assert_eq!(w.finish(), "<User><UserName>a&amp;b</UserName></User>");
        assert_eq!(escape("\u{1}x"), "\u{FFFD}x");
    }
}
