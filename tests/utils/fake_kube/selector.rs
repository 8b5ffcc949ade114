//! Label and field selectors as `?labelSelector=` and `?fieldSelector=` spell them.

use serde_json::{Map, Value};

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A label selector: every requirement must hold; the empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, joined by commas.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        split_top_level(text)
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The selector of a `LabelSelector` object (`matchLabels` and `matchExpressions`), sorted by key
    /// as the API server formats it.
    pub(crate) fn from_object(selector: &Value) -> Self {
        let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let mut requirements: Vec<Requirement> = selector["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| Requirement::Equals(k.clone(), text(v)))
            .collect();
        for expression in selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let key = text(&expression["key"]);
            let values = expression["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            requirements.push(match expression["operator"].as_str() {
                Some("In") => Requirement::In(key, values),
                Some("NotIn") => Requirement::NotIn(key, values),
                Some("Exists") => Requirement::Exists(key),
                _ => Requirement::NotExists(key),
            });
        }
        requirements.sort_by(|a, b| a.key().cmp(b.key()));
        Self(requirements)
    }

    /// Whether an object with `labels` is selected.
    pub(crate) fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        })
    }

    /// The selector written as a query string would write it (`app=shop,track=stable`).
    pub(crate) fn to_query(&self) -> String {
        let terms: Vec<String> = self
            .0
            .iter()
            .map(|requirement| match requirement {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
            })
            .collect();
        terms.join(",")
    }
}

impl Requirement {
    fn key(&self) -> &str {
        match self {
            Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::NotExists(k) => k,
        }
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    let term = term.trim();
    let fail = || format!("unable to parse requirement: {term:?}");
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(
            label_key(key.trim()).ok_or_else(fail)?,
        ));
    }
    if let Some((key, rest)) = term.split_once(char::is_whitespace) {
        let rest = rest.trim_start();
        let (in_set, values) = if let Some(v) = rest.strip_prefix("notin") {
            (false, v)
        } else if let Some(v) = rest.strip_prefix("in") {
            (true, v)
        } else {
            return Err(fail());
        };
        let values = values
            .trim()
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .ok_or_else(fail)?;
        let values = values
            .split(',')
            .map(|v| label_value(v.trim()).ok_or_else(fail))
            .collect::<Result<Vec<_>, _>>()?;
        let key = label_key(key).ok_or_else(fail)?;
        return Ok(if in_set {
            Requirement::In(key, values)
        } else {
            Requirement::NotIn(key, values)
        });
    }
    let (key, value, equal) = if let Some((k, v)) = term.split_once("!=") {
        (k, v, false)
    } else if let Some((k, v)) = term.split_once("==") {
        (k, v, true)
    } else if let Some((k, v)) = term.split_once('=') {
        (k, v, true)
    } else {
        return Ok(Requirement::Exists(label_key(term).ok_or_else(fail)?));
    };
    let key = label_key(key.trim()).ok_or_else(fail)?;
    let value = label_value(value.trim()).ok_or_else(fail)?;
    Ok(if equal {
        Requirement::Equals(key, value)
    } else {
        Requirement::NotEquals(key, value)
    })
}

fn label_key(key: &str) -> Option<String> {
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    valid.then(|| key.to_owned())
}

fn label_value(value: &str) -> Option<String> {
    let valid = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    valid.then(|| value.to_owned())
}

/// A field selector over `metadata.name` and `metadata.namespace`, the fields every kind supports.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `field=value`, `field==value` and `field!=value`, joined by commas.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut terms = Vec::new();
        for term in text.split(',') {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!(
                    "invalid selector: {term:?}; can't understand {term:?}"
                ));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Whether `object` is selected.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let key = field.trim_start_matches("metadata.");
            let actual = object["metadata"][key].as_str().unwrap_or("");
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selects(selector: &str, labels: Value) -> bool {
        LabelSelector::parse(selector)
            .unwrap()
            .matches(labels.as_object())
    }

    #[test]
    fn label_selector_operators() {
        let labels = json!({"app": "shop", "track": "stable"});
        assert!(selects("", labels.clone()));
        assert!(selects("app=shop", labels.clone()));
        assert!(selects("app==shop,track", labels.clone()));
        assert!(!selects("app!=shop", labels.clone()));
        assert!(selects("tier!=web", labels.clone()));
        assert!(selects("!tier", labels.clone()));
        assert!(!selects("!app", labels.clone()));
        assert!(selects("track in (canary, stable)", labels.clone()));
        assert!(!selects("track notin (canary,stable)", labels.clone()));
        assert!(selects("tier notin (web)", labels.clone()));
        assert!(!selects("app=shop,tier", labels));
    }

    #[test]
    fn bad_label_selectors_are_refused() {
        assert!(
            LabelSelector::parse("app=").is_ok(),
            "an empty value is allowed"
        );
        for bad in ["=shop", "app in shop", "a b", "app=sh op", ","] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn selector_objects_format_sorted() {
        let selector = json!({
            "matchLabels": {"track": "stable", "app": "shop"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
        });
        assert_eq!(
            LabelSelector::from_object(&selector).to_query(),
            "app=shop,tier in (a,b),track=stable"
        );
    }

    #[test]
    fn field_selector_on_name_and_namespace() {
        let object = json!({"metadata": {"name": "a", "namespace": "prod"}});
        let selects = |s: &str| FieldSelector::parse(s).unwrap().matches(&object);
        assert!(selects("metadata.name=a"));
        assert!(selects("metadata.name==a,metadata.namespace=prod"));
        assert!(!selects("metadata.name!=a"));
        assert!(FieldSelector::parse("spec.nodeName=x").is_err());
    }
}
