//! JSON merge patches (RFC 7386) and JSON patches (RFC 6902).

use serde_json::Value;

/// Applies a merge patch: objects merge key by key, `null` removes a key, anything else replaces.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(fields) = target {
        for (key, change) in changes {
            if change.is_null() {
                fields.remove(key);
            } else {
                merge(fields.entry(key.clone()).or_insert(Value::Null), change);
            }
        }
    }
}

/// Applies a JSON patch: a list of `add`, `remove`, `replace`, `move`, `copy` and `test` operations.
pub(crate) fn json_patch(target: &mut Value, operations: &Value) -> Result<(), String> {
    let operations = operations
        .as_array()
        .ok_or("a JSON patch must be a list of operations")?;
    for operation in operations {
        let path = pointer(&operation["path"])?;
        let value = || {
            operation
                .get("value")
                .cloned()
                .ok_or_else(|| format!("{operation}: missing value"))
        };
        match operation["op"].as_str() {
            Some("add") => add(target, &path, value()?)?,
            Some("remove") => {
                remove(target, &path)?;
            }
            Some("replace") => {
                remove(target, &path)?;
                add(target, &path, value()?)?;
            }
            Some("move") => {
                let moved = remove(target, &pointer(&operation["from"])?)?;
                add(target, &path, moved)?;
            }
            Some("copy") => {
                let copied = get(target, &pointer(&operation["from"])?)?.clone();
                add(target, &path, copied)?;
            }
            Some("test") => {
                if *get(target, &path)? != value()? {
                    return Err(format!("test failed: {operation}"));
                }
            }
            _ => return Err(format!("unknown JSON patch operation: {operation}")),
        }
    }
    Ok(())
}

/// The reference tokens of a JSON pointer (`/a/b~1c` → `["a", "b/c"]`).
fn pointer(path: &Value) -> Result<Vec<String>, String> {
    let path = path.as_str().ok_or("a JSON patch path must be a string")?;
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn get<'a>(target: &'a Value, path: &[String]) -> Result<&'a Value, String> {
    path.iter().try_fold(target, |value, token| {
        match value {
            Value::Object(fields) => fields.get(token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path /{} does not exist", path.join("/")))
    })
}

fn parent<'a>(target: &'a mut Value, path: &[String]) -> Result<(&'a mut Value, String), String> {
    let (last, init) = path.split_last().ok_or("the root has no parent")?;
    let mut value = target;
    for token in init {
        value = match value {
            Value::Object(fields) => fields.get_mut(token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path /{} does not exist", path.join("/")))?;
    }
    Ok((value, last.clone()))
}

fn add(target: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, token) = parent(target, path)?;
    match parent {
        Value::Object(fields) => {
            fields.insert(token, value);
        }
        Value::Array(items) if token == "-" => items.push(value),
        Value::Array(items) => match token.parse::<usize>() {
            Ok(i) if i <= items.len() => items.insert(i, value),
            _ => return Err(format!("index {token} out of range")),
        },
        _ => return Err(format!("cannot add to /{}", path.join("/"))),
    }
    Ok(())
}

fn remove(target: &mut Value, path: &[String]) -> Result<Value, String> {
    if path.is_empty() {
        return Ok(std::mem::take(target));
    }
    let missing = || format!("path /{} does not exist", path.join("/"));
    let (parent, token) = parent(target, path)?;
    match parent {
        Value::Object(fields) => fields.remove(&token).ok_or_else(missing),
        Value::Array(items) => match token.parse::<usize>() {
            Ok(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge(
            &mut target,
            &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"m": 1}}),
        );
        assert_eq!(
            target,
            json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"m": 1}})
        );
    }

    #[test]
    fn json_patch_operations() {
        let mut target = json!({"spec": {"replicas": 1, "list": ["a", "c"]}, "x~/y": 1});
        let ops = json!([
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/list/1", "value": "b"},
            {"op": "add", "path": "/spec/list/-", "value": "d"},
            {"op": "remove", "path": "/x~0~1y"},
            {"op": "copy", "from": "/spec/replicas", "path": "/copied"},
            {"op": "move", "from": "/copied", "path": "/moved"},
            {"op": "test", "path": "/moved", "value": 3},
        ]);
        json_patch(&mut target, &ops).unwrap();
        assert_eq!(
            target,
            json!({"spec": {"replicas": 3, "list": ["a", "b", "c", "d"]}, "moved": 3})
        );
        let missing = json!([{"op": "replace", "path": "/nope", "value": 1}]);
        assert!(json_patch(&mut target, &missing).is_err());
        let failing = json!([{"op": "test", "path": "/moved", "value": 4}]);
        assert!(json_patch(&mut target, &failing).is_err());
    }
}
