//! Agent attributes, `rack:a;zone:eu;cores:8`: what placement constraints match against.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid attributes {input:?}: {reason}")]
pub struct ParseAttributesError {
    pub input: String,
    pub reason: String,
}

/// Attribute name to value, as text (numbers stay as written).
pub type Attributes = BTreeMap<String, String>;

pub fn parse(input: &str) -> Result<Attributes, ParseAttributesError> {
    let err = |reason: String| ParseAttributesError { input: input.to_string(), reason };
    let mut out = Attributes::new();
    for item in input.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item.split_once(':').ok_or_else(|| err(format!("{item:?} is not NAME:VALUE")))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
            return Err(err(format!("{k:?} is not an attribute name")));
        }
        if v.is_empty() || v.contains(char::is_whitespace) {
            return Err(err(format!("{k}: the value must be a word")));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(err(format!("{k} is given twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes() {
        let a = parse("rack:a; zone:eu;cores:8").unwrap();
        assert_eq!(a.get("zone").map(String::as_str), Some("eu"));
        assert_eq!(parse("rack").unwrap_err().reason, "\"rack\" is not NAME:VALUE");
        assert_eq!(parse("rack:a;rack:b").unwrap_err().reason, "rack is given twice");
        assert_eq!(parse("r ack:a").unwrap_err().reason, "\"r ack\" is not an attribute name");
    }
}
