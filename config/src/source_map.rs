//! Where each node of a YAML document stands, so validation errors can name a line and column.
//!
//! serde gives locations only for the errors it finds itself (syntax, types, unknown fields).
//! Semantic problems (a duplicate route, a bad address) are found later, on the typed value; this
//! map lets them point back at the text by path, e.g. `services[1].routes[0].host`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A line and column in a policy file, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column number.
    pub column: usize,
}

/// Maps dotted node paths (`services[0].name`) to where their value starts in the text.
#[derive(Debug, Default)]
pub struct SourceMap {
    nodes: HashMap<String, Position>,
}

impl SourceMap {
    /// Builds the map from YAML text; a document that does not parse yields an empty map.
    pub fn build(text: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut walker, false).is_err() {
            return Self::default();
        }
        Self {
            nodes: walker.nodes,
        }
    }

    /// The position of `path`, or of its nearest ancestor that is in the map.
    pub fn locate(&self, path: &str) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(position) = self.nodes.get(path) {
                return Some(*position);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

/// One open collection while walking the event stream.
#[derive(Debug)]
enum Frame {
    /// A mapping; `key` is the key whose value comes next, if one was read.
    Mapping { path: String, key: Option<String> },
    /// A sequence and the index of its next item.
    Sequence { path: String, next: usize },
}

#[derive(Debug, Default)]
struct Walker {
    stack: Vec<Frame>,
    nodes: HashMap<String, Position>,
}

impl Walker {
    /// The path of the node that starts now, or `None` when it is a mapping key.
    fn next_node_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Sequence { path, next }) => {
                let child = format!("{path}[{next}]");
                *next += 1;
                Some(child)
            }
            Some(Frame::Mapping { path, key }) => key.take().map(|key| {
                if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                }
            }),
        }
    }

    fn at(mark: Marker) -> Position {
        Position {
            line: mark.line(),
            column: mark.col() + 1,
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => match self.next_node_path() {
                Some(path) => {
                    self.nodes.insert(path, Self::at(mark));
                }
                None => {
                    if let Some(Frame::Mapping { path, key }) = self.stack.last_mut() {
                        let full = if path.is_empty() {
                            value.clone()
                        } else {
                            format!("{path}.{value}")
                        };
                        // The key's own position stands until its value is seen.
                        self.nodes.entry(full).or_insert_with(|| Self::at(mark));
                        *key = Some(value);
                    }
                }
            },
            Event::MappingStart(..) => {
                let path = self.next_node_path().unwrap_or_default();
                self.nodes
                    .entry(path.clone())
                    .or_insert_with(|| Self::at(mark));
                self.stack.push(Frame::Mapping { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.next_node_path().unwrap_or_default();
                self.nodes
                    .entry(path.clone())
                    .or_insert_with(|| Self::at(mark));
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listeners:
  proxy: 127.0.0.1:8080
services:
  - name: a
    routes:
      - host: a.example
  - name: b
    routes:
      - path_prefix: /b
";

    #[test]
    fn locates_keys_and_sequence_items() {
        let map = SourceMap::build(DOC);
        assert_eq!(map.locate("listeners.proxy").map(|p| p.line), Some(2));
        assert_eq!(map.locate("services[0].name").map(|p| p.line), Some(4));
        assert_eq!(
            map.locate("services[1].routes[0].path_prefix")
                .map(|p| p.line),
            Some(9)
        );
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let map = SourceMap::build(DOC);
        let missing = map.locate("services[1].routes[0].header.name");
        assert_eq!(missing.map(|p| p.line), Some(9));
    }

    #[test]
    fn broken_text_gives_an_empty_map() {
        let map = SourceMap::build("a: [unclosed");
        assert_eq!(map.locate("a"), None);
    }
}
